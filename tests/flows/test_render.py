"""Rendering a message is cheaper than it was, and gives the very same output: Markdown cut into
blocks (plain paragraphs without the parser, the rest remembered) is markdown-it's HTML of the
whole text; a link signed with the keyed HMAC copied is the link signed from scratch; a calendar
day formatted once reads as it did."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, date, datetime
from urllib.parse import urlencode

import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from flows.engine.render import markdown_to_html, render_value
from integrations.channels import SecretMarkers
from integrations.links import LinkConfig, sign, verify

#: markdown-it as messages were rendered before: the whole text through the parser
WHOLE = MarkdownIt("commonmark", {"html": False, "linkify": False})

#: lines of the kinds that might reach across a blank line, or look plain and not be
LINES = [
    "Hi Pat, your team plan renews June 1, 2027.",
    'It\'s been a while: "quoted" & so on > that',
    "Thanks!",
    "Title",
    "word",
    "- a",
    "  - b",
    "* c",
    "+ d",
    "1. x",
    "2) y",
    "2027. Hi",
    "> quote",
    ">q",
    "    code",
    "\tcode",
    "  two",
    "   three",
    "```",
    "~~~",
    "[x]: /u",
    "[x]",
    "[l](u)",
    "![i](u)",
    "**b**",
    "_i_",
    "x_y_z",
    "`c`",
    "\\*",
    "a\\",
    "# h",
    "#h",
    "===",
    "---",
    "***",
    "___",
    "a  ",
    "a ",
    "&amp;",
    "&copy;",
    "& b",
    "<http://x.y>",
    "<b>",
    "é ü ß Ω",
    "a\u00a0",
    "\u00a0a",
    "a\u2028b",
    "Zz\u3000",
    "a|b {x} ~t~ %",
    "e-mail@x.com http://x.y/z?a=1&b=2",
    "a\r",
    "\x00",
    "\x85",
    "",
    " ",
]


@settings(max_examples=3_000, deadline=None)
@given(st.lists(st.sampled_from(LINES), min_size=1, max_size=9), st.sampled_from(["", "\n", "\n\n", " "]))
def test_markdown_in_blocks_is_the_html_of_the_whole_text(lines: list[str], end: str) -> None:
    text = "\n".join(lines) + end
    assert markdown_to_html(text) == WHOLE.render(text)


@settings(max_examples=3_000, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_any_text_renders_as_markdown_it_renders_it(text: str) -> None:
    assert markdown_to_html(text) == WHOLE.render(text)
    assert markdown_to_html("Hi " + text) == WHOLE.render("Hi " + text)
    assert markdown_to_html("Hi there,\n\n" + text) == WHOLE.render("Hi there,\n\n" + text)


@pytest.mark.parametrize(
    "text",
    [
        "[x]: /u\n\n[x]",  # a link reference defined in one block, used in another
        'See [x].\n\n[x]: /u "title"\n',
        "```\na\n\nb\n```",  # a fence holds blank lines
        "~~~\na\n\n- b\n~~~\n",
        "- a\n\n- b",  # one loose list, not two tight ones
        "1. a\n\n2. b\n\nend",
        "- a\n\n  still a\n\nafter",  # an indented block continues the item
        "    code\n\n    more code",
        "Hi Pat,\n\n\n\nBye",
        "> q\n\n> r",
        "Hi\r\n\r\nthere",
        "Hi Pat  \nthere\n\nplain  ",
    ],
)
def test_texts_whose_blocks_reach_across_blank_lines(text: str) -> None:
    assert markdown_to_html(text) == WHOLE.render(text)


def test_a_template_with_lists_and_links_renders_as_before() -> None:
    text = (
        "Hi Pierre,\n\nTwo quick questions:\n\n- What is working well?\n- Is anything **slower**?\n\n"
        "See [the guide](https://example.com/guide?a=1&b=2) or reply.\n\nMaya Okafor\n"
    )
    for _ in range(2):  # the second time from the remembered blocks
        assert markdown_to_html(text) == WHOLE.render(text)


def _signed_from_scratch(secret: str, purpose: str, subject: str, valid_through: date) -> str:
    day = f"{valid_through:%Y%m%d}"
    message = f"retain-{purpose}\n{subject}\n{day}".encode()
    mac = base64.urlsafe_b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).rstrip(b"=")
    encoded = base64.urlsafe_b64encode(subject.encode()).rstrip(b"=").decode()
    return f"{encoded}.{day}.{mac.decode()}"


@pytest.mark.parametrize("secret", ["retain-local-unsubscribe-secret", "another secret", "ü"])
def test_links_are_signed_as_from_scratch(secret: str) -> None:
    day = date(2027, 5, 30)
    for subject in ["email|contact:1000", "survey|email:dana@acme.com", "x" * 300]:
        token = sign(secret, "unsubscribe", subject, day)
        assert token == _signed_from_scratch(secret, "unsubscribe", subject, day)
        assert verify(secret, "unsubscribe", token, day) == (subject, day)
    links = LinkConfig(unsubscribe_secret=secret, unsubscribe_url="https://x.example/u?lang=en")
    link = links.unsubscribe_link("email", datetime(2027, 3, 1, tzinfo=UTC), contact_id=7)
    token = _signed_from_scratch(secret, "unsubscribe", "email|contact:7", date(2027, 5, 30))
    assert link == f"https://x.example/u?lang=en&{urlencode({'t': token})}"


@pytest.mark.parametrize("fmt", ["MMMM D, YYYY", "dddd Do MMM", "YYYY-MM-DD", "[week] W"])
def test_a_day_formatted_once_reads_the_same(fmt: str) -> None:
    day = date(2027, 6, 1)
    expected = pendulum.Date(2027, 6, 1).format(fmt)
    template = f"{{{{ day | date({fmt!r}) }}}}"
    for _ in range(2):
        assert render_value(template, {"day": day, "secrets": SecretMarkers()}) == expected
    english = render_value("{{ day | date }}", {"day": day})
    before = pendulum.get_locale()
    pendulum.set_locale("fr")  # the locale is part of what is remembered
    try:
        french = render_value("{{ day | date }}", {"day": day})
    finally:
        pendulum.set_locale(before)
    assert french == pendulum.Date(2027, 6, 1).format("MMMM D, YYYY", locale="fr") != english
