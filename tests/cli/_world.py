"""A small book brought in through Retain's own commands (``accounts import``, ``contacts import``)
and a playbooks folder, for the CSM commands' tests (tasks, approvals, today, who and why)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import cli
from cli._app import console

ACCOUNTS = """\
external_id,name,plan,arr,status,renewal_date,csm_email,csm_name,country,timezone
acme,Acme,pro,12000,active,2027-04-15,sam@csm.example,Sam,US,America/New_York
globex,Globex,starter,2400,active,2027-05-01,sam@csm.example,Sam,US,America/New_York
initech,Initech,pro,30000,active,2027-06-01,kim@csm.example,Kim,GB,Europe/London
"""

CONTACTS = """\
account_external_id,email,name,role,is_primary
acme,ana@acme.example,Ana,champion,yes
globex,gus@globex.example,Gus,champion,yes
initech,ian@initech.example,Ian,admin,yes
"""

CARE = """\
playbook: care
name: Care
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: call
    kind: task
    title: "Call {{ account.name }}"
    due_in: 2 days
    priority: high
  - id: pause
    kind: wait
    for: 30 days
  - id: bye
    kind: exit
"""


@dataclass
class Run:
    code: int
    out: str
    err: str


Retain = Callable[..., Run]


def write_world(folder: Path, playbooks: dict[str, str]) -> Path:
    """The CSV files and a playbooks folder holding ``playbooks`` (id -> YAML)."""
    (folder / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (folder / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    books = folder / "playbooks"
    books.mkdir(exist_ok=True)
    for name, source in playbooks.items():
        (books / f"{name}.yaml").write_text(textwrap.dedent(source), encoding="utf-8")
    return books


def make_retain(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    playbooks: dict[str, str],
    *,
    width: int = 200,
    url: str | None = None,
) -> Retain:
    """``retain`` over a fresh SQLite file (or the empty database at ``url``) with the small book
    imported; ``RETAIN_CSM`` unset and the outbox in ``tmp_path/outbox``."""
    books = write_world(tmp_path, playbooks)
    url = url or f"sqlite:///{tmp_path / 'retain.db'}"
    monkeypatch.delenv("RETAIN_CSM", raising=False)
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setattr(console, "width", width)

    def run(*args: str | Path) -> Run:
        capsys.readouterr()
        code = cli.main(["--database-url", url, "--playbooks-dir", str(books), *map(str, args)])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    for args in (
        ("init",),
        ("accounts", "import", tmp_path / "accounts.csv"),
        ("contacts", "import", tmp_path / "contacts.csv"),
    ):
        result = run(*args)
        assert result.code == 0, result
    return run
