"""Fuzzing the parts of Retain that read what people write (issue 10): the YAML loader, the
playbook compiler, the expression parser and the template checker and renderer. For any input:
no exception but our own error types, no hang (a deadline per example), bounded memory (the peak of
each example is measured). A small budget, so that it runs in CI on every push; raise
``RETAIN_FUZZ_EXAMPLES`` to search longer."""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import ExpressionError, PlaybookError, TemplateError
from playbooks import AUDIENCE, CONTACTS, compile_expression, compile_source, render
from playbooks._templates import check_template
from playbooks._yaml import load_document

EXAMPLES = int(os.environ.get("RETAIN_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=3000,  # ms per example: a hang fails the test instead of stalling CI
    database=None,
    derandomize=True,  # the same inputs on every CI run; RETAIN_FUZZ_EXAMPLES widens the search
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_PEAK_MB = 64


@contextmanager
def bounded_memory() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
        assert peak < MAX_PEAK_MB * 1e6, f"peak {peak / 1e6:.0f} MB"
    finally:
        tracemalloc.stop()


def only(errors: tuple[type[Exception], ...], fn: Callable[[], Any]) -> None:
    """Run ``fn``: success or one of ``errors``; anything else (a traceback) fails the test."""
    with suppress(errors):
        fn()


def pieces(*tokens: str) -> st.SearchStrategy[str]:
    """Text made of meaningful tokens and arbitrary characters: closer to an attack than noise."""
    return st.lists(st.one_of(st.sampled_from(tokens), st.text(max_size=6)), max_size=40).map("".join)


EXPRESSION_TOKENS = (
    "not ", " and ", " or ", "(", ")", "[", "]", " == ", " <= ", " in ", " is none", " + ", " * ", " - ", " / ",
    "account.arr", "account.name", "contact.role", "enrollment.started_at", "days_until(", "touches(", "now()",
    '"x"', "'\\0'", '"\\ud800"', "1", "10**9", "9e999", "-", "_private", "__class__", "lambda: 0", "\n", "#", ",",
)  # fmt: skip
TEMPLATE_TOKENS = (
    "{{ ", " }}", "{% ", " %}", "for i in range(100000)", "endfor", "if ", "endif", "macro m()", "endmacro",
    "m()", "'x' * 10**9", "9 ** (9 ** 9)", "|center(10**9)", "lipsum(10**6)", "cycler", "self", "~", "account.name",
    "secrets.key", "contact.email", "|upper", "|format(", "'%0999999d' % 1", "'{:>99999999}'.format(1)", "loop",
    "namespace(s='x')", "set ns.s = ns.s ~ ns.s", "__class__", "|join", "|replace('a', 'b' * 99999)", "'", '"',
    "(", ")", "[", "]", ",", "\n", "{#", "#}", "raw", "endraw", "|pprint", "|string", ".__mro__",
)  # fmt: skip
YAML_TOKENS = (
    "playbook: p\n", "name: n\n", "lifecycle: custom\n", 'audience: account.status == "active"\n', "steps:\n",
    "  - id: s\n", "    kind: slack\n", "    kind: email\n", "    text: ", "    subject: ", "    body: |\n      ",
    "{{ account.name }}", "&a ", "*a", "[*a, *a, *a]", "<<: *a\n", "!!python/object:os.system ", "? ", ": ", "- ",
    "  ", "\t", "'", '"', "{", "}", "[", "]", "---\n", "...\n", "%YAML 1.1\n", "\\0", "\n", "yes", "on", "1:30",
)  # fmt: skip


@FUZZ
@given(pieces(*YAML_TOKENS))
def test_yaml_loader_and_compiler(source: str) -> None:
    with bounded_memory():
        doc, problems = load_document(source, "fuzz.yaml")
        assert (doc is None) == bool(problems) or doc is not None
        only((PlaybookError,), lambda: compile_source(source, "fuzz.yaml"))


@FUZZ
@given(pieces(*EXPRESSION_TOKENS), st.sampled_from([AUDIENCE, CONTACTS]))
def test_expression_parser(text: str, scope: Any) -> None:
    with bounded_memory():
        only((ExpressionError,), lambda: compile_expression(text, scope))


@FUZZ
@given(pieces(*TEMPLATE_TOKENS))
def test_template_checker_and_renderer(source: str) -> None:
    variables = {
        "account": {"name": "Acme ⟦secret:x⟧", "arr": 12000},
        "contact": {"email": "dana@acme.example"},
        "now": datetime(2027, 3, 2, tzinfo=UTC),
        "secrets": {},
    }
    with bounded_memory():
        problems = check_template(source)
        assert all(isinstance(line, int) and isinstance(message, str) for line, message in problems)
        if not problems:
            only((TemplateError,), lambda: render(source, variables))
