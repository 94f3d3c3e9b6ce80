"""Custom fields from an accounts CSV, read by the type a playbook declares: through the CLI only.

An import keeps extra columns as text; ``account.custom.licenses > 10`` must compare numbers, the
same in the audience (SQL) and in a branch (Python), and a cell that is not a number must be
refused at the import with its row, its column and the playbook that declares it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

import cli
from models import Account, Enrollment, make_engine

PLAYBOOK = """\
playbook: big_accounts
name: Big accounts
lifecycle: custom
custom_fields: {licenses: number, managed: bool}
audience: account.custom.licenses > 10 and not account.custom.managed
steps:
  - id: how_big
    kind: branch
    if: account.custom.licenses >= 100
    then: very_big
  - id: big
    kind: update
    set: {custom.size: big}
  - id: done
    kind: exit
  - id: very_big
    kind: update
    set: {custom.size: very_big}
"""

ACCOUNTS = """\
external_id,name,licenses,managed
a-12,Twelve,12,no
a-9,Nine,9,no
a-100,Hundred,100.0,FALSE
a-250,Managed,250,yes
a-blank,Blank,,no
a-frac,Fraction,10.5,false
"""


class Retain:
    """``retain --database-url <a new SQLite file> --playbooks-dir <the playbook above> ARGS…``."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = f"sqlite:///{tmp_path / 'retain.db'}"
        self.folder = tmp_path / "playbooks"
        self.folder.mkdir()
        (self.folder / "big_accounts.yaml").write_text(PLAYBOOK, encoding="utf-8")
        self.capsys = capsys

    def __call__(self, *args: str | Path) -> tuple[int, str, str]:
        code = cli.main(["--database-url", self.url, "--playbooks-dir", str(self.folder), *map(str, args)])
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def retain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Retain:
    run = Retain(tmp_path, capsys)
    assert run("init")[0] == 0
    return run


def test_a_declared_number_imported_as_text_is_compared_as_a_number_in_sql_and_python(
    retain: Retain, tmp_path: Path
) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(ACCOUNTS, encoding="utf-8")
    assert retain("accounts", "import", path)[0] == 0
    code, out, err = retain("run", "big_accounts", "--as-of", "2027-03-10T15:00:00Z", "--no-prefect")
    assert code == 0, (out, err)
    engine = make_engine(retain.url)
    with Session(engine) as s:
        accounts = {a.id: a for a in s.exec(select(Account)).all()}
        entered = {accounts[e.account_id].external_id for e in s.exec(select(Enrollment)).all()}
    engine.dispose()
    # as text, "9" > "10" and "100.0" < "12": numbers they are
    assert entered == {"a-12", "a-100", "a-frac"}
    sizes = {a.external_id: a.custom.get("size") for a in accounts.values() if a.external_id in entered}
    assert sizes == {"a-12": "big", "a-100": "very_big", "a-frac": "big"}  # the branch, in Python
    assert accounts[next(i for i, a in accounts.items() if a.external_id == "a-12")].custom["licenses"] == "12"


def test_a_cell_that_is_not_the_declared_type_is_refused_with_its_place(retain: Retain, tmp_path: Path) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(ACCOUNTS + 'a-bad,Bad,twelve,no\na-worse,Worse,"1,200",maybe\n', encoding="utf-8")
    code, _, err = retain("accounts", "import", path)
    assert code == 1
    assert (
        "accounts.csv: row 8, column 'licenses': 'twelve' is not a number: big_accounts.yaml declares custom "
        "field 'licenses' number (a plain number like 12 or -0.5)"
    ) in err
    assert "row 9, column 'licenses': '1,200' is not a number" in err
    assert "row 9, column 'managed': 'maybe' is not a bool" in err
    assert "nothing was written" in err
    engine = make_engine(retain.url)
    with Session(engine) as s:
        assert s.exec(select(Account)).all() == []
    engine.dispose()


def test_a_sql_source_is_held_to_the_same_declarations(
    retain: Retain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``retain sync`` lands an accounts source through the import's checks: a batch with a cell the
    declaration cannot read is refused whole, naming the row and column, and its cursor stays."""
    import sqlite3

    warehouse = tmp_path / "warehouse.db"
    with sqlite3.connect(warehouse) as db:
        db.execute("CREATE TABLE crm (id TEXT, company TEXT, licenses TEXT, managed TEXT, changed TEXT)")
        db.executemany(
            "INSERT INTO crm VALUES (?, ?, ?, ?, ?)",
            [("a-12", "Twelve", "12", "no", "2026-09-01"), ("a-bad", "Bad", "twelve", "no", "2026-09-02")],
        )
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{warehouse}")
    (retain.folder / "sources.yaml").write_text(
        "sources:\n"
        "  crm:\n"
        "    kind: accounts\n"
        "    url: {env: WAREHOUSE_URL}\n"
        "    query: SELECT id, company, licenses, managed, changed FROM crm\n"
        "    columns: {external_id: id, name: company}\n"
        "    cursor: changed\n",
        encoding="utf-8",
    )
    code, out, err = retain("sync")
    assert code == 1, (out, err)
    assert "column 'licenses': 'twelve' is not a number: big_accounts.yaml declares custom field 'licenses'" in err
    engine = make_engine(retain.url)
    with Session(engine) as s:
        assert s.exec(select(Account)).all() == []  # the batch was refused whole
    engine.dispose()

    with sqlite3.connect(warehouse) as db:
        db.execute("UPDATE crm SET licenses = '40' WHERE id = 'a-bad'")
    code, out, err = retain("sync")
    assert code == 0, (out, err)
    engine = make_engine(retain.url)
    with Session(engine) as s:
        assert {a.external_id: a.custom["licenses"] for a in s.exec(select(Account)).all()} == {
            "a-12": "12",
            "a-bad": "40",
        }
    engine.dispose()
