"""SQL sources against a second real database standing in for the team's warehouse (a SQLite file,
and a PostgreSQL database of its own): sync, change rows there, sync again, and only the changed
rows are read, through the same checks as the file imports, with the accounts' state kept current."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

import cli
from models import Account, TimelineEvent, make_engine, table_of
from tests.conftest import PG_ADMIN_URL, _pg_admin_connect, pg_unavailable

SCHEMA = """
CREATE TABLE crm_accounts (id VARCHAR(20), company VARCHAR(50), plan VARCHAR(20), arr NUMERIC(12, 2),
                           onboarded_at TIMESTAMP, updated_at TIMESTAMP);
CREATE TABLE invoices (number VARCHAR(20), customer VARCHAR(20), invoice_date DATE, amount NUMERIC(12, 2),
                       changed_at TIMESTAMP)
"""
ACCOUNTS = [
    ("acme", "Acme", "pro", 12000, None, "2026-09-01 10:00:00"),
    ("globex", "Globex", "basic", 3000, None, "2026-09-01 10:00:00"),
    ("initech", "Initech", "pro", 5000, None, "2026-09-02 10:00:00"),
]
SOURCES = """\
sources:
  crm:
    kind: accounts
    url: {env: WAREHOUSE_URL}
    query: SELECT id, company, plan, onboarded_at, updated_at FROM crm_accounts
    columns: {external_id: id, name: company}
    cursor: updated_at
    batch_size: 2
  billing:
    kind: revenue
    url: {env: WAREHOUSE_URL}
    query: >-
      SELECT number AS invoice, customer, invoice_date AS date, amount, changed_at FROM invoices
    cursor: changed_at
    batch_size: 2
"""


def _invoices() -> list[tuple[Any, ...]]:
    rows = []
    for customer in ("acme", "globex", "initech"):
        for month in (7, 8, 9):
            rows.append(
                (f"{customer}-{month}", customer, f"2026-{month:02d}-01", 1000, f"2026-{month:02d}-01 12:00:00")
            )
    return rows


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The team's warehouse: a SQLite file, or a PostgreSQL database made for this test."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
        yield engine
        engine.dispose()
        return
    try:
        admin = _pg_admin_connect()
    except Exception as exc:
        pg_unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"retain_warehouse_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(database=name, drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with _pg_admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(engine: Engine, accounts: list[tuple[Any, ...]], invoices: list[tuple[Any, ...]]) -> None:
    with engine.begin() as conn:
        for statement in SCHEMA.split(";"):
            conn.execute(text(statement))
        insert_account = "INSERT INTO crm_accounts VALUES (:id, :company, :plan, :arr, :onboarded_at, :updated_at)"
        keys = ("id", "company", "plan", "arr", "onboarded_at", "updated_at")
        conn.execute(text(insert_account), [dict(zip(keys, row, strict=True)) for row in accounts])
        if invoices:
            add_invoices(conn, invoices)


def add_invoices(conn: Any, invoices: list[tuple[Any, ...]]) -> None:
    keys = ("number", "customer", "invoice_date", "amount", "changed_at")
    sql = "INSERT INTO invoices VALUES (:number, :customer, :invoice_date, :amount, :changed_at)"
    conn.execute(text(sql), [dict(zip(keys, row, strict=True)) for row in invoices])


def typed(engine: Engine, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """PostgreSQL wants dates and moments as such; SQLite keeps the text."""
    if engine.dialect.name == "sqlite":
        return rows
    return [tuple(_typed(v) for v in row) for row in rows]


def _typed(value: Any) -> Any:
    if isinstance(value, str) and len(value) == 19 and value[4] == "-" and value[10] == " ":
        return datetime.fromisoformat(value)
    if isinstance(value, str) and len(value) == 10 and value[4] == "-":
        return datetime.fromisoformat(value).date()
    return value


@pytest.fixture
def retain_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse: Engine) -> tuple[str, Path]:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    monkeypatch.setenv("WAREHOUSE_URL", warehouse.url.render_as_string(hide_password=False))
    assert cli.main(["--database-url", url, "init"]) == 0
    return url, folder


def retain(db: tuple[str, Path], *args: str, capsys: pytest.CaptureFixture[str], code: int = 0) -> str:
    capsys.readouterr()
    assert cli.main(["--database-url", db[0], "--playbooks-dir", str(db[1]), *args]) == code, capsys.readouterr()
    return capsys.readouterr().out


def accounts(db: tuple[str, Path]) -> dict[str, dict[str, Any]]:
    engine = make_engine(db[0])
    a = table_of(Account)
    with engine.connect() as conn:
        rows = {r.external_id: dict(r._mapping) for r in conn.execute(select(a))}
    engine.dispose()
    return rows


def timeline(db: tuple[str, Path], external_id: str) -> list[str]:
    engine = make_engine(db[0])
    a, t = table_of(Account), table_of(TimelineEvent)
    with engine.connect() as conn:
        query = select(t.c.summary).join(a, a.c.id == t.c.account_id).where(a.c.external_id == external_id)
        rows = list(conn.execute(query.order_by(t.c.id)).scalars())
    engine.dispose()
    return rows


def status(db: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    return {s["source"]: s for s in json.loads(retain(db, "sync", "status", "--format", "json", capsys=capsys))}


def test_sync_reads_only_the_changed_rows_and_keeps_account_state(
    warehouse: Engine, retain_db: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fill(warehouse, typed(warehouse, ACCOUNTS), typed(warehouse, _invoices()))
    out = retain(retain_db, "sync", capsys=capsys)
    assert "crm (accounts): 3 rows in, 2 batches" in out
    assert "billing (revenue): 9 rows in, 3 batches" in out  # three invoices share each changed_at
    first = accounts(retain_db)
    # revenue owns MRR and ARR (through August: September is not over by the latest invoice)
    assert {k: (v["plan"], v["arr"], v["mrr"], v["status"]) for k, v in first.items()} == {
        "acme": ("pro", 12000, 1000, "active"), "globex": ("basic", 12000, 1000, "active"),
        "initech": ("pro", 12000, 1000, "active"),
    }  # fmt: skip
    assert status(retain_db, capsys)["crm"]["cursor"].startswith("2026-09-02")

    # in the warehouse: acme changes (plan, onboarded), globex pays October and November, initech stops
    with warehouse.begin() as conn:
        conn.execute(
            text(
                "UPDATE crm_accounts SET plan = 'enterprise', onboarded_at = :at, updated_at = :now WHERE id = 'acme'"
            ),
            {"at": _typed("2026-09-15 08:30:00"), "now": _typed("2026-10-01 09:00:00")},
        )
        rows = [("globex-10", "globex", "2026-10-01", 1000, "2026-10-01 12:00:00"),
                ("globex-11", "globex", "2026-11-01", 1500, "2026-11-01 12:00:00")]  # fmt: skip
        add_invoices(conn, typed(warehouse, rows))

    out = retain(retain_db, "sync", capsys=capsys)
    assert "crm (accounts): 1 rows in, 1 batches" in out  # only acme was read
    assert "billing (revenue): 2 rows in, 1 batches" in out  # only globex's new invoices
    after = accounts(retain_db)
    acme, globex, initech = after["acme"], after["globex"], after["initech"]
    assert acme["plan"] == "enterprise" and acme["onboarded_at"] == datetime(2026, 9, 15, 8, 30, tzinfo=UTC)
    # revenue through November 1: October is judged, and acme and initech paid nothing in it
    assert (initech["status"], initech["churned_at"]) == ("churned", datetime(2026, 10, 1, tzinfo=UTC))
    assert (acme["status"], acme["churned_at"]) == ("churned", datetime(2026, 10, 1, tzinfo=UTC))
    assert (globex["status"], globex["churned_at"], globex["mrr"], globex["arr"]) == ("active", None, 1000, 12000)
    # initech's row did not change in the CRM: the accounts sync wrote nothing about it
    assert [line for line in timeline(retain_db, "initech") if "sync crm" in line] == ["created from sync crm"]
    assert "updated from sync crm: plan 'pro' → 'enterprise', onboarded_at (none) → 2026-09-15T08:30:00+00:00" in (
        timeline(retain_db, "acme")
    )

    # a third run finds nothing new and changes nothing
    out = retain(retain_db, "sync", capsys=capsys)
    assert "crm (accounts): 0 rows in" in out and "billing (revenue): 0 rows in" in out
    assert accounts(retain_db) == after
    report = status(retain_db, capsys)
    assert report["crm"]["runs"] == 3 and report["crm"]["last_run"] == "ok"
    assert report["billing"]["cursor"].startswith("2026-11-01")


def test_a_bad_row_refuses_its_batch_and_the_cursor_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "warehouse.db"
    with sqlite3.connect(wh) as conn:
        conn.execute("CREATE TABLE crm_accounts (id TEXT, company TEXT, plan TEXT, arr TEXT, updated_at TEXT)")
        conn.executemany(
            "INSERT INTO crm_accounts VALUES (?, ?, 'pro', ?, ?)",
            [("a1", "One", "100", "2026-01-01"), ("a2", "Two", "200", "2026-01-02"),
             ("a3", "Three", "lots", "2026-01-03"), ("a4", "Four", "400", "2026-01-04"),
             ("a5", "Five", "500", "2026-01-05")],
        )  # fmt: skip
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(
        "sources:\n  crm:\n    kind: accounts\n    url: {env: WAREHOUSE_URL}\n"
        "    query: SELECT id AS external_id, company AS name, plan, arr, updated_at FROM crm_accounts\n"
        "    cursor: updated_at\n    batch_size: 2\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{wh}")
    db = (f"sqlite:///{tmp_path / 'retain.db'}", folder)
    assert cli.main(["--database-url", db[0], "init"]) == 0

    capsys.readouterr()
    assert cli.main(["--database-url", db[0], "--playbooks-dir", str(folder), "sync", "crm"]) == 1
    out, err = capsys.readouterr()
    assert "crm (accounts): 2 rows in, 1 batches; stopped: 1 rows refused" in out
    assert "crm: row 3 (updated_at 2026-01-03), column 'arr': 'lots' is not an amount" in err
    assert sorted(accounts(db)) == ["a1", "a2"]  # the first batch stays; a3's batch (with a4) is not written
    report = status(db, capsys)["crm"]
    assert (report["last_run"], report["cursor"], report["rows_in"], report["rows_refused"]) == (
        "refused", "2026-01-02", 2, 1,
    )  # fmt: skip
    assert report["problems"] == ["crm: row 3 (updated_at 2026-01-03), column 'arr': 'lots' is not an amount: "
                                  "write digits with '.' for decimals, e.g. 12000.50 or 12,000.50"]  # fmt: skip

    with sqlite3.connect(wh) as conn:  # fixed in the source
        conn.execute("UPDATE crm_accounts SET arr = '300' WHERE id = 'a3'")
    out = retain(db, "sync", capsys=capsys)
    assert "crm (accounts): 3 rows in, 2 batches; cursor 2026-01-05" in out
    assert sorted(accounts(db)) == ["a1", "a2", "a3", "a4", "a5"]


def test_rows_sharing_a_cursor_value_are_never_split_between_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "warehouse.db"
    with sqlite3.connect(wh) as conn:
        conn.execute("CREATE TABLE t (external_id TEXT, name TEXT, version INTEGER)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [("a", "A", 1), ("b", "B", 2), ("c", "C", 2), ("d", "D", 2), ("e", "E", 3), ("x", "X", None)],
        )
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(
        "sources:\n  crm:\n    kind: accounts\n    url: sqlite:///" + str(wh) + "\n"
        "    query: SELECT * FROM t\n    cursor: version\n    batch_size: 2\n",
        encoding="utf-8",
    )
    db = (f"sqlite:///{tmp_path / 'retain.db'}", folder)
    assert cli.main(["--database-url", db[0], "init"]) == 0
    out = retain(db, "sync", capsys=capsys)
    # a, b, c, d: the batch of two (a, b) runs on to the end of version 2; then e
    assert "crm (accounts): 5 rows in, 2 batches; cursor 3" in out
    book = accounts(db)
    assert book["c"]["custom"] == {}  # the cursor column is not a custom field
    assert "x" not in book  # no cursor value: never read (it could not be placed after a cursor)


def test_a_missing_url_variable_fails_the_source_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(SOURCES, encoding="utf-8")
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    db = (f"sqlite:///{tmp_path / 'retain.db'}", folder)
    assert cli.main(["--database-url", db[0], "init"]) == 0
    capsys.readouterr()
    assert cli.main(["--database-url", db[0], "--playbooks-dir", str(folder), "sync", "crm"]) == 1
    assert "failed: source 'crm': $WAREHOUSE_URL is not set" in capsys.readouterr().out
    assert status(db, capsys)["crm"]["last_run"] == "failed"
    assert status(db, capsys)["billing"]["last_run"] is None  # declared, never run


def test_the_prefect_flow_runs_a_source_and_fails_with_the_reason(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.orchestration.runtime import prefect_environment
    from flows.orchestration.sync import sync_flow
    from models import Settings

    wh = tmp_path / "warehouse.db"
    with sqlite3.connect(wh) as conn:
        conn.execute("CREATE TABLE t (external_id TEXT, name TEXT, seats TEXT, version INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [("a", "A", "3", 1), ("b", "B", "4", 2)])
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(
        f"sources:\n  crm:\n    kind: accounts\n    url: sqlite:///{wh}\n    query: SELECT * FROM t\n"
        "    cursor: version\n    schedule: {cron: '*/15 * * * *'}\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    assert cli.main(["--database-url", url, "init"]) == 0
    settings = Settings(database_url=url, playbooks_dir=folder)
    with prefect_environment(settings):
        state = sync_flow(source="crm", return_state=True)
        assert state.is_completed(), state
        (result,) = state.result()
        assert (result["source"], result["rows_in"], result["cursor"]) == ("crm", 2, "2")
        with sqlite3.connect(wh) as conn:
            conn.execute("INSERT INTO t VALUES ('c', 'C', 'many', 3)")
        state = sync_flow(source="crm", return_state=True)
    assert state.is_failed()
    assert "crm (accounts): 0 rows in, 0 batches; stopped: 1 rows refused" in (state.message or "")


def test_every_kind_lands_through_its_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Contacts, usage, tickets and events from the warehouse, as their file imports land them:
    contacts matched by account and email, usage per day, tickets by id, events once per message id
    (the activation event onboards its account)."""
    wh = tmp_path / "warehouse.db"
    with sqlite3.connect(wh) as conn:
        conn.executescript(
            """
            CREATE TABLE accounts (id TEXT, name TEXT, changed INTEGER);
            INSERT INTO accounts VALUES ('acme', 'Acme', 1), ('globex', 'Globex', 1);
            CREATE TABLE people (account TEXT, email TEXT, name TEXT, role TEXT, changed INTEGER);
            INSERT INTO people VALUES ('acme', 'Ada@Acme.example', 'Ada', 'champion', 1),
                                      ('globex', 'gus@globex.example', 'Gus', 'admin', 2);
            CREATE TABLE daily (account TEXT, metric TEXT, day TEXT, value REAL, changed INTEGER);
            INSERT INTO daily VALUES ('acme', 'logins', '2026-11-01', 12, 1), ('acme', 'logins', '2026-11-02', 7, 1);
            CREATE TABLE tickets (id TEXT, account TEXT, opened TEXT, closed TEXT, priority TEXT, changed INTEGER);
            INSERT INTO tickets VALUES ('T-1', 'globex', '2026-11-03 09:00:00', NULL, 'high', 1);
            CREATE TABLE segment (message_id TEXT, type TEXT, user_id TEXT, event TEXT, group_id TEXT, ts TEXT, seq INTEGER);
            INSERT INTO segment VALUES ('m1', 'group', 'u1', NULL, 'globex', '2026-11-01 08:00:00', 1),
                                       ('m2', 'track', 'u1', 'Onboarding Completed', NULL, '2026-11-02 10:30:00', 2);
            """
        )
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(
        """\
activation_event: Onboarding Completed
sources:
  crm:
    {kind: accounts, url: {env: WAREHOUSE_URL}, query: SELECT * FROM accounts, columns: {external_id: id}, cursor: changed}
  people:
    kind: contacts
    url: {env: WAREHOUSE_URL}
    query: SELECT * FROM people
    columns: {account_external_id: account}
    cursor: changed
  product:
    kind: usage
    url: {env: WAREHOUSE_URL}
    query: SELECT account AS account_external_id, metric, day, value, changed FROM daily
    cursor: changed
  support:
    kind: tickets
    url: {env: WAREHOUSE_URL}
    query: SELECT * FROM tickets
    columns: {external_id: id, account_external_id: account, opened_at: opened, closed_at: closed}
    cursor: changed
  segment:
    kind: events
    url: {env: WAREHOUSE_URL}
    query: SELECT * FROM segment
    columns: {timestamp: ts, group_id: group_id}
    cursor: seq
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("WAREHOUSE_URL", f"sqlite:///{wh}")
    db = (f"sqlite:///{tmp_path / 'retain.db'}", folder)
    assert cli.main(["--database-url", db[0], "init"]) == 0
    out = retain(db, "sync", capsys=capsys)
    # accounts first, then what names them, whatever the file's order
    assert [line.split(" (")[0] for line in out.splitlines() if " rows in" in line] == [
        "crm", "people", "product", "support", "segment",
    ]  # fmt: skip
    engine = make_engine(db[0])
    with engine.connect() as conn:
        contacts = conn.execute(text("SELECT email, role FROM contact ORDER BY email")).all()
        usage = conn.execute(text("SELECT day, value FROM usage_metric ORDER BY day")).all()
        tickets = conn.execute(text("SELECT external_id, status, priority FROM support_ticket")).all()
        onboarded = conn.execute(text("SELECT onboarded_at FROM account WHERE external_id = 'globex'")).scalar_one()
    engine.dispose()
    assert [tuple(r) for r in contacts] == [("ada@acme.example", "champion"), ("gus@globex.example", "admin")]
    assert [(str(d), v) for d, v in usage] == [("2026-11-01", 12.0), ("2026-11-02", 7.0)]
    assert [tuple(r) for r in tickets] == [("T-1", "open", "high")]
    assert str(onboarded).startswith("2026-11-02 10:30:00")
    out = retain(db, "sync", capsys=capsys)
    assert out.count(": 0 rows in, 0 batches") == 5  # nothing changed: nothing read


def test_a_query_without_a_required_column_or_that_fails_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "warehouse.db"
    with sqlite3.connect(wh) as conn:
        conn.execute("CREATE TABLE t (id TEXT, title TEXT, version INTEGER)")
        conn.execute("INSERT INTO t VALUES ('a', 'A', 1)")
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "sources.yaml").write_text(
        f"sources:\n  crm:\n    kind: accounts\n    url: sqlite:///{wh}\n    query: SELECT * FROM t\n"
        "    columns: {external_id: id}\n    cursor: version\n"
        f"  broken:\n    kind: accounts\n    url: sqlite:///{wh}\n    query: SELECT * FROM missing_table\n"
        "    cursor: version\n",
        encoding="utf-8",
    )
    db = (f"sqlite:///{tmp_path / 'retain.db'}", folder)
    assert cli.main(["--database-url", db[0], "init"]) == 0
    out = retain(db, "sync", capsys=capsys, code=1)
    assert (
        "broken (accounts): 0 rows in, 0 batches; failed: source 'broken': the query failed: no such table: "
        "missing_table" in out
    )
    assert (
        "crm (accounts): 0 rows in, 0 batches; failed: source 'crm': the query gives no column for 'name' (name it "
        "so in the query, or map it: columns: {name: <query column>}); it gives ['id', 'title', 'version']" in out
    )
    assert accounts(db) == {}


def test_an_interrupted_run_is_recorded_failed_never_left_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.sync import sync_source
    from models.sources import SqlSource

    db = (f"sqlite:///{tmp_path / 'retain.db'}", tmp_path)
    assert cli.main(["--database-url", db[0], "init"]) == 0
    source = SqlSource.model_validate(
        {"kind": "accounts", "url": {"secret": "warehouse"}, "query": "SELECT 1", "cursor": "x"}
    )

    def ctrl_c(name: str) -> str:
        raise KeyboardInterrupt

    engine = make_engine(db[0])
    with pytest.raises(KeyboardInterrupt):
        sync_source(engine, "crm", source, now=datetime.now(UTC), lookup=ctrl_c)
    engine.dispose()
    report = status(db, capsys)["crm"]
    assert (report["last_run"], report["message"]) == ("failed", "interrupted")
