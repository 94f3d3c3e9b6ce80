"""A tick's cost follows what changed: with nothing new and nothing due, no statement of a tick
reads every account or every enrollment (checked by the databases' own query plans: SQLite's
``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN`` with sequential scans priced out, so that a
``Seq Scan`` there means no index can serve the statement). Accounts come in through the CSV
import, as a team's would; a changed account is still enrolled by the next tick.

Also: one delivery run claims more touches than PostgreSQL takes parameters in one statement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import DeliveryPolicy, _claim
from flows.engine.revisions import RevisionCache
from flows.engine.tick import tick
from integrations.channels import FileChannel
from integrations.sources.accounts import import_accounts
from models import Account, Enrollment, Touch, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 1, 12, tzinfo=UTC)  # a Monday noon

PLAYBOOK = compile_source(
    """\
playbook: plans
name: Plans
lifecycle: custom
audience: account.status == "active" and account.arr >= 1000
entry: {holdout: 10%}
steps:
  - id: hello
    kind: email
    subject: "Hello {{ account.name }}"
    body: "Hi {{ contact.first_name }}."
  - id: pause
    kind: wait
    for: 7 days
  - id: done
    kind: exit
""",
    "plans.yaml",
)

#: a read of accounts or enrollments (an alias too) in SQLite's plan, and the columns it is bounded by
SQLITE_READ = re.compile(r"\b(SCAN|SEARCH) ((account|enrollment)\w*)\b(.*)")
#: columns that bound no read: every account, every enrollment of the playbook
UNBOUNDED = {"playbook", "status"}


def write_accounts(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    lines = ["external_id,name,status,arr"] + [f"{x},{name},{status},{arr}" for x, name, status, arr in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every single-row-parameter statement the engine runs inside the block, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany and statement.lstrip().split(" ", 1)[0].upper() in (
            "SELECT",
            "UPDATE",
            "INSERT",
            "DELETE",
            "WITH",
        ):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def bounded_by(condition: str) -> set[str]:
    """The columns a plan's index condition compares: ``(playbook=? AND status=?)`` in SQLite,
    ``((playbook)::text = 'x'::text)`` in PostgreSQL."""
    return set(re.findall(r"\(?\b(\w+)\)?(?:::\w+)? ?(?:=|<|>|<=|>=)", condition)) - {"text"}


def full_scans(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The plan lines of ``statement`` that read every account, or every enrollment of a playbook:
    a scan, or an index read bounded by nothing but the playbook and the status."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            found = []
            for row in cursor.fetchall():
                read = SQLITE_READ.search(row[3])
                if read is None:
                    continue
                condition = read.group(4)
                if read.group(1) == "SCAN" or not (bounded_by(condition) - UNBOUNDED or "rowid" in condition):
                    if not condition.strip() and read.group(1) == "SEARCH":
                        continue  # min/max of the primary key: one step
                    found.append(row[3])
            return found
        # priced out: a plan that still reads a whole table has no index to read by
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            cursor.execute(
                f"SET LOCAL {setting} = off"
            )  # LOCAL: gone with the rollback, not left on the pooled connection
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        found = []

        def walk(node: dict[str, Any], parent: str = "") -> None:
            index = node.get("Index Name", "")
            relation = node.get("Relation Name") or next(
                (table for table in ("account", "enrollment") if re.match(rf"(ix_|uq_)?{table}_", index)), None
            )
            if relation in ("account", "enrollment"):
                kind = node["Node Type"]
                condition = node.get("Index Cond", "")
                if parent == "Limit":
                    pass  # the planner, by the statistics, expects the first rows to do (max(), LIMIT 1)
                elif kind == "Seq Scan" or ("Index" in kind and not bounded_by(condition) - UNBOUNDED):
                    found.append(f"{kind} on {relation} {node.get('Index Name', '')} {condition}".strip())
            for child in node.get("Plans", []):
                walk(child, node["Node Type"])

        walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
        return found
    finally:
        raw.rollback()
        raw.close()


def test_a_tick_with_nothing_new_or_due_reads_no_whole_table(engine: Engine, tmp_path: Path) -> None:
    books = [(f"acct-{i:04d}", f"Account {i}", "active", 5000.0) for i in range(300)]
    books.append(("acct-late", "Late", "churned", 3000.0))  # outside the audience, for now
    import_accounts(engine, write_accounts(tmp_path / "accounts.csv", books), now=T0 - timedelta(days=1))
    channels = {"email": FileChannel("email", tmp_path / "outbox")}
    cache = RevisionCache()
    first = tick(engine, PLAYBOOK, T0, channels=channels, cache=cache)  # type: ignore[arg-type]
    assert first.enrolled == 300 and first.advanced == 300 - first.holdout
    tick(engine, PLAYBOOK, T0 + timedelta(minutes=1), channels=channels, cache=cache)  # type: ignore[arg-type]

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # the statistics autovacuum keeps, for the planner
            conn.exec_driver_sql("ANALYZE")
    with statements(engine) as seen:
        quiet = tick(engine, PLAYBOOK, T0 + timedelta(hours=1), channels=channels, cache=cache)  # type: ignore[arg-type]
    assert (quiet.enrolled, quiet.advanced, sum(quiet.touches_written.values())) == (0, 0, 0)
    assert len(seen) > 5  # settle, enroll, advance and deliver all asked something
    scans = {statement: found for statement, parameters in seen if (found := full_scans(engine, statement, parameters))}
    assert scans == {}

    # what changed is still seen: an account that an import brings into the audience, and a new one
    changes = [("acct-late", "Late", "active", 3000.0), ("acct-new", "Newcomer", "active", 2000.0)]
    import_accounts(engine, write_accounts(tmp_path / "changes.csv", changes), now=T0 + timedelta(hours=1, minutes=30))
    later = tick(engine, PLAYBOOK, T0 + timedelta(hours=2), channels=channels, cache=cache)  # type: ignore[arg-type]
    assert later.enrolled == 2
    enr, acct = table_of(Enrollment), table_of(Account)
    with engine.connect() as conn:
        enrolled = conn.execute(select(acct.c.external_id).join(enr, enr.c.account_id == acct.c.id)).scalars().all()
    assert len(enrolled) == 302 and {"acct-late", "acct-new"} <= set(enrolled)


def test_one_delivery_run_claims_more_touches_than_a_statement_takes_parameters(pg_clean: Engine) -> None:
    """Each batch claims past the previous one by (priority, id): no list of the touches already
    claimed, which failed past 65,535 parameters on PostgreSQL."""
    engine = pg_clean
    with engine.begin() as conn:
        conn.execute(insert(table_of(Account)), [{"external_id": "a", "name": "A", "status": "active", "custom": {}}])
        account_id = conn.execute(select(table_of(Account).c.id)).scalar_one()
        conn.execute(
            insert(table_of(Touch)),
            [
                {
                    "key": f"k{i}",
                    "account_id": account_id,
                    "channel": "webhook",
                    "priority": 50 + i % 3,
                    "status": "pending",
                    "payload": {},
                    "created_at": T0,
                }
                for i in range(66_000)
            ],
        )
    policy = DeliveryPolicy(batch_size=22_000)
    claimed: list[int] = []
    after = None
    while batch := _claim(engine, T0, {}, policy, after=after):
        claimed += [row["id"] for row in batch]
        after = (batch[-1]["priority"], batch[-1]["id"])
    assert len(claimed) == len(set(claimed)) == 66_000
