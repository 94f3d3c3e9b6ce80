"""Why an account entered, made by the database, reads exactly as Python's explanation: every
clause's line and JSON (``clause_sql``) equal ``explain()`` for the same account, on SQLite and on
PostgreSQL, for values of every kind (nulls, whole and fractional numbers, a third, dates,
timestamps with and without microseconds, booleans, text with quotes, declared custom fields of
either type); and the timeline line each new enrollment gets (one ``INSERT … SELECT``) is what a
CSM's play of the same account would say. Accounts come in through the CSV import."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.engine.enroll import enroll
from integrations.sources.accounts import import_accounts
from models import Account, TimelineEvent, table_of
from playbooks import clause_columns, clause_sql, compile_source, env_for, explain
from tests._sqlite import migrated_sqlite

NOW = datetime(2027, 3, 10, 12, 0, 0, 250_000, tzinfo=UTC)

ACCOUNTS = """\
external_id,name,status,arr,plan,health_score,seats,renewal_date,renewed_at,churned_at,tier,vip
a1,Acme,active,12000,pro,72.5,40,2027-05-09,2027-03-07T12:00:00.250000Z,,gold,true
a2,Globex,active,4999.99,"the ""big"" one",,3,2027-04-01,2026-12-31T23:59:59Z,,silver,false
a3,Initech,active,1000.5,,0.1,,,,2027-01-02T03:04:05.000001Z,,
a4,Umbrella,churned,0,free,100,7,2026-01-01,,2026-11-30T00:00:00Z,bronze,yes
a5,Stark,active,250000,enterprise,99.99,1,2027-03-10,2027-03-10T12:00:00Z,,gold,TRUE
"""

PLAYBOOK = """\
playbook: why
name: Why "it" entered
lifecycle: custom
custom_fields: {{tier: text, vip: bool}}
audience: {audience}
entry: {{holdout: 60%}}
steps:
  - id: done
    kind: exit
"""

#: clauses of every kind; as a condition (not all hold for every account) and as an audience
CLAUSES = [
    'account.status == "active"',
    "account.arr >= 1000",
    "account.health_score < 99.995 or account.plan is none",
    "days_until(account.renewal_date) <= 90",
    "account.renewed_at < now() or account.churned_at is not none",
    "account.seats / 3 > 0 or account.seats is none",
    'account.custom.tier != "bronze"',
    "account.custom.vip or account.custom.vip is none",
    'account.plan in ["pro", "free", "enterprise"] or not (account.plan is not none)',
]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "retain.db")
    return request.getfixturevalue("pg_clean")  # type: ignore[no-any-return]


def _imported(engine: Engine, tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    declared = {"tier": [("text", "why")], "vip": [("bool", "why")]}
    import_accounts(engine, tmp_path / "accounts.csv", now=NOW, declared=declared)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # SQLite answers text


def test_the_lines_made_in_sql_are_pythons(engine: Engine, tmp_path: Path) -> None:
    _imported(engine, tmp_path)
    pb = compile_source(PLAYBOOK.format(audience=" and ".join(f"({c})" for c in CLAUSES)), "why.yaml")
    expr = pb.expression("audience")
    acct = table_of(Account)
    why = select(acct.c.id, *(column.label(name) for name, column in clause_columns(expr, now=NOW, today=NOW.date())))
    sub = why.subquery()
    lines, array = clause_sql(expr, sub.c, engine.dialect.name)
    with Session(engine) as s:
        in_sql = {row[0]: (row[1], _json(row[2])) for row in s.execute(select(sub.c.id, lines, array))}
        assert len(in_sql) == 5
        for account in s.exec(select(Account)).all():  # type: ignore[call-overload]
            account = account[0] if not isinstance(account, Account) else account
            said = explain(expr, env_for(s, account, now=NOW, today=NOW.date()))
            assert in_sql[account.id] == ("; ".join(c.line() for c in said), [c.to_dict() for c in said]), (
                account.external_id
            )
    held = {i: [c["held"] for c in clauses] for i, (_, clauses) in in_sql.items()}
    assert {h for each in held.values() for h in each} == {True, False, None}  # every outcome was seen


def test_each_new_enrollment_says_why_it_entered_as_a_play_would(engine: Engine, tmp_path: Path) -> None:
    _imported(engine, tmp_path)
    audience = 'account.status == "active" and account.arr >= 1000 and days_until(account.renewal_date) <= 90'
    pb = compile_source(PLAYBOOK.format(audience=audience), "why.yaml")
    with Session(engine) as s:
        enrolled, holdout = enroll(s, pb, NOW)
        s.commit()
    assert (enrolled, holdout) == (3, 1)
    tl = table_of(TimelineEvent)
    with Session(engine) as s:
        lines = s.execute(select(tl).where(tl.c.kind == "enrolled").order_by(tl.c.account_id)).all()
        assert len(lines) == 3
        for line in lines:
            account = s.get(Account, line.account_id)
            assert account is not None
            said = explain(pb.expression("audience"), env_for(s, account, now=NOW, today=NOW.date()))
            holdout_said = " (holdout: never contacted)" if line.detail["holdout"] else ""
            assert line.summary == f'enrolled in Why "it" entered{holdout_said}: ' + "; ".join(c.line() for c in said)
            assert line.detail == {
                "revision": pb.revision,
                "holdout": line.detail["holdout"],
                "source": "schedule",
                "audience": [c.to_dict() for c in said],
            }
            assert line.playbook == "why" and line.at == NOW and line.enrollment_id is not None
        assert sum(1 for line in lines if line.detail["holdout"]) == 1
    with Session(engine) as s:  # a second tick at the same moment writes no second line
        assert enroll(s, pb, NOW) == (0, 0)
        s.commit()
        assert len(s.execute(select(tl.c.id).where(tl.c.kind == "enrolled")).all()) == 3
