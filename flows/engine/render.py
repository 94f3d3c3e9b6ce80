"""What templates see when a touch is written, and the rendering of each step's message."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import cache, lru_cache
from operator import itemgetter
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from sqlmodel import SQLModel

from integrations.channels import SecretMarkers, seal
from models import Account, Contact, Enrollment, TemplateError, table_of
from playbooks import CompiledPlaybook, render

__all__ = ["markdown_to_html", "render_value", "template_variables"]

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})


def _row(obj: SQLModel | None) -> dict[str, Any]:
    if obj is None:
        return {}
    names, values = _columns_of(type(obj))
    try:
        return dict(zip(names, values(obj.__dict__), strict=True))  # the loaded values, without the ORM per column
    except KeyError:  # a column not loaded (expired): the ORM loads it
        return {name: getattr(obj, name) for name in names}


@cache
def _columns_of(model: type[SQLModel]) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """A table's column names, and what reads their values from a row's ``__dict__``."""
    names = tuple(c.name for c in table_of(model).columns)
    return names, itemgetter(*names)


def _first_name(name: str | None, email: str | None) -> str:
    if name:
        return name.split()[0]
    return (email or "").split("@")[0].split(".")[0].capitalize()


def template_variables(
    pb: CompiledPlaybook,
    account: Account,
    *,
    now: datetime,
    enrollment: Enrollment | None = None,
    contact: Contact | None = None,
    step_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables of a message: plain data, never ORM objects (the sandbox sees values only)."""
    contact_vars = _row(contact)
    if contact is not None:
        contact_vars["first_name"] = _first_name(contact.name, contact.email)
    csm_name = account.csm_name or (account.csm_email or "").split("@")[0].replace(".", " ").title() or None
    enrollment_vars = {k: v for k, v in _row(enrollment).items() if k not in ("state", "claimed_by", "claimed_until")}
    variables = {
        "account": _row(account),
        "contact": contact_vars,
        "csm": {"email": account.csm_email, "name": csm_name, "first_name": _first_name(csm_name, account.csm_email)},
        "enrollment": enrollment_vars,
        "playbook": {
            "id": pb.id,
            "name": pb.spec.name,
            "lifecycle": pb.spec.lifecycle,
            "revision": pb.revision,
            "description": pb.spec.description,
        },
        "secrets": SecretMarkers(),
        "now": now,
        "step": {"id": step_id},
        "unsubscribe_url": "",
        "survey_url": "",
    }
    variables.update(extra or {})
    return variables


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render a template string, or every string inside a mapping or list. Output that refers to
    a secret becomes sealed text (see ``integrations.channels.secrets``): only the author's
    ``{{ secrets.<name> }}`` can make one, never the customer data printed beside it."""
    if isinstance(value, str):
        text = render(value, variables)
        markers = variables.get("secrets")
        return seal(text, markers) if isinstance(markers, SecretMarkers) else text
    if isinstance(value, dict):
        return {k: render_value(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, variables) for v in value]
    return value


def markdown_to_html(text: str) -> str:
    """CommonMark to HTML, exactly as markdown-it renders the whole text, but cheaper: the text is
    cut at its blank lines into blocks when no block can reach past one (see :func:`_blocks`); a
    block of plain sentences is escaped and wrapped in ``<p>`` without the parser, any other is
    rendered once and remembered, so the parts of a message that are the same for every contact
    (most of a template) are parsed once per process, not once per email."""
    if not isinstance(text, str):  # sealed text: validation keeps secrets out of messages to people
        raise TemplateError("a message to a person cannot hold a secret")
    blocks = _blocks(text)
    if blocks is None:
        html: str = _markdown.render(text)
        return html
    return "".join(_block_html(block) for block in blocks)


#: a paragraph of plain sentences: each line starts with a letter (no block marker: list, heading,
#: quote, code, fence, rule) and ends with no space (no hard break, nothing stripped), and nothing
#: in it is Markdown inline syntax (escapes, code, emphasis, links and images, autolinks, entities)
_LINE = r"[^\W\d_](?:[^\x00-\x1f\x7f-\x9f\\`*_\[\]<&]*[^\s\x00-\x1f\x7f-\x9f\\`*_\[\]<&])?"
_PLAIN = re.compile(rf"{_LINE}(?:\n{_LINE})*\n?")
#: a line that may follow a blank line without belonging to the block before it (a list item or an
#: indented line could continue a list or a code block)
_STARTS_ALONE = re.compile(r"[^\s\-+*0-9]")
#: constructs that can reach across a blank line: fences, and link reference definitions (a
#: definition in one block is used by links in any other)
_SPANS_BLANK_LINES = ("```", "~~~", "]:", "\r", "\x00")
_CACHED_BLOCK_CHARS = 4_000  # longer blocks (rare) are rendered every time: the cache stays small


def _blocks(text: str) -> list[str] | None:
    """``text`` cut at its blank lines (``\\n\\n``) into blocks whose HTML, joined, is the HTML of
    the whole; None when a cut might not be (then the whole is rendered at once)."""
    if any(mark in text for mark in _SPANS_BLANK_LINES):
        return None
    blocks = text.split("\n\n")
    if not all(_STARTS_ALONE.match(block) for block in blocks[1:]):
        return None
    return blocks


def _block_html(block: str) -> str:
    if _PLAIN.fullmatch(block):
        return "<p>" + escapeHtml(block.removesuffix("\n")) + "</p>\n"
    if len(block) > _CACHED_BLOCK_CHARS:
        html: str = _markdown.render(block)
        return html
    return _rendered_block(block)


@lru_cache(maxsize=1_024)
def _rendered_block(block: str) -> str:
    html: str = _markdown.render(block)
    return html
