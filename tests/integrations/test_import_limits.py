"""Import files past the limits of the shared reader (issue 10): refused with the row and a clear
message, without reading what is past the limit (docs/security.md)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

import cli
from integrations.sources._csv import MAX_IMPORT_BYTES, MAX_IMPORT_ROWS, read_csv
from integrations.sources._records import read_records
from models import DataImportError


def problems(exc: pytest.ExceptionInfo[DataImportError]) -> list[tuple[int, str]]:
    return [(p.row, p.message) for p in exc.value.problems]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"accounts{suffix}"
    with path.open("wb") as f:
        f.write(b"external_id,name\n")
        f.truncate(MAX_IMPORT_BYTES + 2**20)  # a sparse file: 51 MB on paper, nothing on disk
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(DataImportError) as exc:
        read_records(path, "accounts", ["external_id", "name"])
    spent, (_, peak) = time.monotonic() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert problems(exc) == [(1, "the file is 51.0 MB; the limit is 50 MB: split it into smaller files")]
    assert peak < 2**20 and spent < 1  # before: 71 s and 1.5 GB for a 54 MB file


def test_the_cli_refuses_it_with_its_message(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--database-url", sqlite_url, "init"]) == 0
    path = tmp_path / "accounts.csv"
    with path.open("wb") as f:
        f.write(b"external_id,name\n")
        f.truncate(MAX_IMPORT_BYTES + 2**20)
    capsys.readouterr()
    assert cli.main(["--database-url", sqlite_url, "accounts", "import", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: row 1: the file is 51.0 MB; the limit is 50 MB: split it into smaller files" in err
    assert "Traceback" not in err


def test_too_many_rows_stops_at_the_row_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text("external_id,name\n" + "a,b\n" * 10 + "\n" * MAX_IMPORT_ROWS)  # blank rows count too
    with pytest.raises(DataImportError) as exc:
        read_csv(path, "accounts", ["external_id", "name"])
    assert problems(exc) == [(MAX_IMPORT_ROWS + 2, "the file has more than 500,000 rows (the limit); split it")]
    jsonl = tmp_path / "usage.jsonl"
    jsonl.write_text('{"a": 1}\n' * 10 + "x\n" * MAX_IMPORT_ROWS)  # bad lines count too
    with pytest.raises(DataImportError) as exc:
        read_records(jsonl, "usage", ["a"])
    assert problems(exc) == [(MAX_IMPORT_ROWS + 1, "the file has more than 500,000 rows (the limit); split it")]


def test_a_long_row_is_a_problem_of_that_row(tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(f'external_id,name\na,{"x" * 60_000}\n{"y" * 60_000},{"z" * 60_000}\nc,"{"w" * 200_000}"\nd,Fine\n')
    found = read_csv(path, "accounts", ["external_id", "name"])
    assert [(p.row, p.message) for p in found.problems] == [
        (3, "the row is 120,000 characters long (the limit is 100,000)"),
        (4, "a value on this row is longer than 131,072 characters (a row may have 100,000)"),
    ]
    assert [r.cells["external_id"] for r in found.records] == ["a", "d"]


def test_json_lines_long_or_deeply_nested(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    deep = "[" * 40_000 + "]" * 40_000
    path.write_text(
        json.dumps({"a": "x" * 200_000}) + "\n" + '{"a": ' + deep + "}\n" + '{"a": "fine"}\n', encoding="utf-8"
    )
    found = read_records(path, "usage", ["a"])
    assert [(p.row, p.message) for p in found.problems] == [
        (1, "the row is 200,009 characters long (the limit is 100,000)"),
        (2, "not a JSON object: nested too deeply"),
    ]
    assert [r.cells["a"] for r in found.records] == ["fine"]
