"""Machine output (JSON, CSV, Markdown, the JSON Schema, Mermaid) is never wrapped: the same bytes
whatever the terminal's width, and still valid when stdout is a pipe (where Rich would wrap at 80)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from models.playbook import json_schema


def _python(script: str, cwd: Path, columns: int) -> str:
    """The stdout of ``script`` in a new interpreter started with ``COLUMNS``; it must succeed."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**os.environ, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _retain(args: list[str], cwd: Path, columns: int) -> str:
    return _python(f"import sys, cli; sys.exit(cli.main({args!r}))", cwd, columns)


MACHINE_COMMANDS = [
    ["playbooks", "schema"],
    ["playbooks", "validate", "--format", "json"],
    ["playbooks", "show", "renewal", "--graph"],
]


def _retain_each(commands: list[list[str]], cwd: Path, columns: int) -> list[str]:
    """Each command's stdout, all run by one interpreter started with ``COLUMNS`` (one start-up, not
    one per command: Rich reads the width when ``cli`` is imported, as a new process does)."""
    script = (
        "import contextlib, io, json, cli\n"
        f"for args in {commands!r}:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        code = cli.main(args)\n"
        "    print(json.dumps({'code': code, 'out': out.getvalue()}), flush=True)\n"
    )
    answers = [json.loads(line) for line in _python(script, cwd, columns).splitlines()]
    assert [a["code"] for a in answers] == [0] * len(commands), answers
    return [a["out"] for a in answers]


def test_machine_output_is_the_same_at_any_width(tmp_path: Path) -> None:
    narrow, wide = _retain_each(MACHINE_COMMANDS, tmp_path, 30), _retain_each(MACHINE_COMMANDS, tmp_path, 500)
    for args, at_30, at_500 in zip(MACHINE_COMMANDS, narrow, wide, strict=True):
        assert at_30 == at_500, args
        assert max(len(line) for line in at_30.splitlines()) > 30, args  # long lines stayed whole


def test_the_schema_printed_to_a_pipe_is_valid_json(tmp_path: Path) -> None:
    assert json.loads(_retain(["playbooks", "schema"], tmp_path, 60)) == json_schema()
    piped = subprocess.run(
        f'{sys.executable} -c \'import sys, cli; sys.exit(cli.main(["playbooks", "schema"]))\' '
        f"| {sys.executable} -m json.tool",
        shell=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "60"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == json_schema()


def test_schema_written_to_a_file_is_the_shipped_one(tmp_path: Path) -> None:
    from importlib import resources

    _retain(["playbooks", "schema", "-o", str(tmp_path / "s.json")], tmp_path, 40)
    shipped = resources.files("playbooks").joinpath("playbook.schema.json").read_text(encoding="utf-8")
    assert (tmp_path / "s.json").read_text(encoding="utf-8") == shipped


def test_a_busy_database_is_a_message_not_a_traceback() -> None:
    """SQLite's "database is locked" past the busy wait (another process holding the write lock) is
    said plainly, with what to do; other database failures name their cause."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from cli import _database_trouble

    locked = OperationalError("UPDATE touch SET status=?", {}, sqlite3.OperationalError("database is locked"))
    assert _database_trouble(locked) == (
        "the database is busy: another Retain process kept it locked past the wait; nothing of "
        "this command was written, run it again"
    )
    full = OperationalError("INSERT INTO touch", {}, sqlite3.OperationalError("database or disk is full"))
    assert (
        _database_trouble(full)
        == "the database failed the command (database or disk is full); nothing of it was written"
    )
    assert _database_trouble(ValueError("a bug")) is None  # a bug still shows its traceback
