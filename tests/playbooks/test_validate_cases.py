"""Table-driven validator tests: each file in cases/ is a playbook; its ``# error: LINE:COL: message``
header lines are exactly the errors it must produce (none: it must be valid)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models import PlaybookError
from playbooks import compile_source

CASES = Path(__file__).parent / "cases"
_EXPECT = re.compile(r"^# error: (.*)$", re.MULTILINE)


def _cases() -> list[Path]:
    return sorted(CASES.glob("*.yaml"))


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_case(case: Path) -> None:
    source = case.read_text(encoding="utf-8")
    expected = sorted(_EXPECT.findall(source))
    try:
        compile_source(source, case.name, templates_dir=Path("templates"))
        found: list[str] = []
    except PlaybookError as exc:
        found = sorted(p.format().removeprefix(f"{case.name}:") for p in exc.problems)
    assert found == expected


def test_every_error_class_has_a_case() -> None:
    names = {p.stem for p in _cases()}
    required = {
        "yaml_syntax", "tabs", "unknown_key", "missing_field", "unknown_step_kind", "duplicate_id",
        "unknown_target", "expr_syntax", "expr_unknown_field", "expr_unknown_function", "expr_type_mismatch",
        "expr_disallowed_name", "template_syntax", "template_unknown_variable", "template_private_attribute",
        "bad_duration", "bad_cron", "bad_timezone", "bad_percentage", "bad_reentry", "empty_steps",
        "loop_without_wait", "unquoted_braces", "empty_file", "not_a_mapping", "valid", "many_errors_at_once",
    }  # fmt: skip
    assert required <= names, sorted(required - names)


def test_zero_byte_file_is_reported_as_empty() -> None:
    with pytest.raises(PlaybookError) as exc:
        compile_source("", "empty.yaml")
    assert [p.format() for p in exc.value.problems] == [
        "empty.yaml:1:1: the file is empty: a playbook is a mapping with 'playbook', 'name', 'audience' and 'steps'"
    ]
