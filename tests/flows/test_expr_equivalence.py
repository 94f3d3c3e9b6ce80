"""SQL and Python agree: for generated accounts (nulls, dates around today, timestamps a microsecond
either side of a day boundary, negative and fractional ARR, usage, surveys, product events,
revenue, custom fields of every JSON type and text that reads as a declared number or boolean, or
does not) and generated expressions, the accounts ``to_sql``
selects are exactly those ``evaluate`` finds true."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from models import (
    Account,
    AccountStatus,
    ProductEvent,
    RevenueEntry,
    SupportTicket,
    SurveyResponse,
    UsageMetric,
    table_of,
)
from playbooks import AUDIENCE, clause_columns, clause_sql, compile_expression, env_for, evaluate, explain, to_sql

# the custom fields the expressions read, declared as a playbook does (custom_fields:)
SCOPE = AUDIENCE.with_declared("custom", {"tier": "text", "score": "number", "vip": "bool"})

# --- accounts -------------------------------------------------------------------------------

NOWS = [
    datetime(2027, 3, 10, 12, 0, 0, 250_000, tzinfo=UTC),
    datetime(2027, 3, 10, 0, 0, 0, tzinfo=UTC),
    datetime(2027, 3, 10, 23, 59, 59, 999_999, tzinfo=UTC),
]

# timestamps relative to now: some right at whole days from it (give or take a second or a
# microsecond), some anywhere in the year around it
near = st.builds(
    lambda days, seconds, micros: timedelta(days=days, seconds=seconds, microseconds=micros),
    st.integers(-3, 3),
    st.sampled_from([0, 1, -1, 43_200]),
    st.sampled_from([0, 1, -1, 250_000, -250_000, 999_999]),
)
anywhere = st.builds(
    timedelta, days=st.integers(-400, 400), seconds=st.integers(0, 86_399), microseconds=st.integers(0, 999_999)
)
moments = st.one_of(st.none(), near, anywhere)
days_off = st.one_of(st.none(), st.integers(-3, 3), st.integers(-120, 120))  # dates relative to today
# money-like numbers: PostgreSQL raises on float underflow where Python and SQLite give 0
amounts = st.one_of(
    st.sampled_from([0.0, -0.0, 5000.0, 4999.99, -1.5, 0.1, 12000.5]),
    st.integers(-(10**7), 10**7).map(lambda c: c / 100),
)


@dataclass
class Generated:
    account: dict[str, Any]
    usage: list[tuple[str, int, float]] = field(default_factory=list)  # metric, days ago, value
    surveys: list[tuple[str, int, timedelta, str | None]] = field(default_factory=list)  # kind, score, when, comment
    tickets: list[tuple[str, timedelta, timedelta | None]] = field(default_factory=list)  # status, opened, closed
    events: list[tuple[str, timedelta]] = field(default_factory=list)  # name, when (relative to now)
    revenue: list[tuple[int, int]] = field(default_factory=list)  # months from this month, cents


# any JSON value under a declared name: the declared type, another type, or nothing
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 31, -2, 2.5, 100.25]),
    st.sampled_from(["gold", "silver", "", "true"]),
    # text as a CSV import keeps it: read as a number or a boolean where the field is declared so
    st.sampled_from(["31", "2.5", "-4", ".5", "1.", "-0", "0.1", "007", "-", ".", "1.2.3", "12abc", " 7", "1e3"]),
    st.sampled_from(["TRUE", "False", "yes", "No", "y", "1", "truth"]),
)
customs = st.dictionaries(st.sampled_from(["tier", "score", "vip"]), json_values, max_size=3)

accounts = st.builds(
    Generated,
    account=st.fixed_dictionaries(
        {
            "arr": amounts,
            "seats": st.one_of(st.none(), st.integers(-3, 50)),
            "health_score": st.one_of(st.none(), st.integers(0, 10_000).map(lambda c: c / 100)),
            "status": st.sampled_from(list(AccountStatus)),
            "plan": st.one_of(st.none(), st.sampled_from(["free", "trial", "pro", "Pro", "enterprise", ""])),
            "health": st.one_of(st.none(), st.sampled_from(["green", "yellow", "red"])),
            "signup_date": days_off,
            "renewal_date": days_off,
            "renewed_at": moments,
            "churned_at": moments,
            "onboarded_at": moments,
            "custom": customs,
        }
    ),
    usage=st.lists(
        st.tuples(
            st.sampled_from(["logins", "exports"]),
            st.integers(-2, 35),
            st.sampled_from([0.0, 1.0, 2.5, 3.0, 10.0, 100.0]),
        ),
        max_size=6,
        unique_by=lambda u: (u[0], u[1]),
    ),
    surveys=st.lists(
        st.tuples(
            st.sampled_from(["nps", "csat"]),
            st.integers(0, 10),
            st.sampled_from(
                [timedelta(days=-d) for d in (0, 1, 5, 40)] + [timedelta(microseconds=1), timedelta(days=2)]
            ),
            st.sampled_from([None, "ok", "slow"]),
        ),
        max_size=3,
    ),
    # opened and closed around now, before or after it: open_tickets() counts those open at now
    tickets=st.lists(
        st.tuples(
            st.sampled_from(["open", "pending", "solved"]), st.one_of(near, anywhere), st.one_of(st.none(), near)
        ),
        max_size=3,
    ),
    events=st.lists(
        st.tuples(
            st.sampled_from(["Login", "Report Exported"]), st.one_of(near, anywhere).map(lambda d: -abs(d) if d else d)
        ),
        max_size=4,
    ),
    revenue=st.lists(
        st.tuples(st.integers(-4, 1), st.sampled_from([0, 1, 99, 10_000, 123_456, -500])),
        max_size=3,
        unique_by=lambda r: r[0],
    ),
)

# --- expressions, typed: each strategy renders text of one type, fully parenthesised --------


def _join(template: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda p: template.format(*p))


ORDER = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
EQUAL = st.sampled_from(["==", "!="])
AMOUNT = st.sampled_from(["0", "1", "-1", "2", "0.5", "1.5", "-1.5", "30", "account.seats", "(account.seats / 3)"])
LOOKUPS = [
    'usage("logins", 30)',
    'usage("logins", 1)',
    'usage("exports", 7)',
    "open_tickets()",
    'last_survey("nps").score',
    'last_survey("csat").score',
    'usage_trend("logins", 7)',
    'usage_trend("exports", 1)',
    'events("Login", 30)',
    'events("Report Exported", 1)',
    "mrr()",
    "mrr_change(31)",
    "mrr_change(90)",
    "account.custom.score",
]


@cache
def numbers(depth: int) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        st.sampled_from(["0", "1", "-1", "2", "0.5", "-2.5", "7", "14", "90", "5000", "0.1"]),
        st.sampled_from(["account.arr", "account.seats", "account.health_score", *LOOKUPS]),
    )
    if depth == 0:
        return leaves
    sub = numbers(depth - 1)
    days_of = st.one_of(dates(depth - 1), timestamps(depth - 1))
    return st.one_of(
        leaves,
        _join("days_since({})", days_of),
        _join("days_until({})", days_of),
        _join("({} - {})", dates(depth - 1), dates(depth - 1)),
        _join("({} {} {})", sub, st.sampled_from(["+", "-", "*", "/"]), sub),
        _join("(-{})", sub),
    )


@cache
def dates(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["account.signup_date", "account.renewal_date", "today()"])
    if depth == 0:
        return leaves
    return st.one_of(
        leaves,
        _join("({} {} {}({}))", dates(depth - 1), st.sampled_from("+-"), st.sampled_from(["days", "weeks"]), AMOUNT),
    )


@cache
def timestamps(depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(
        [
            "account.renewed_at",
            "account.churned_at",
            "account.onboarded_at",
            'last_survey("nps").responded_at',
            "now()",
            'last_event("Login")',
        ]
    )
    if depth == 0:
        return leaves
    shifted = _join(
        "({} {} {}({}))",
        timestamps(depth - 1),
        st.sampled_from("+-"),
        st.sampled_from(["days", "weeks", "hours"]),
        AMOUNT,
    )
    return st.one_of(leaves, shifted)


texts = st.sampled_from(
    [
        "account.status",
        "account.plan",
        "account.health",
        'last_survey("nps").comment',
        "account.custom.tier",
        '"active"',
        '"pro"',
        '"red"',
        '""',
    ]
)


@cache
def conditions(depth: int) -> st.SearchStrategy[str]:
    d = 2
    leaves = st.one_of(
        _join("({} {} {})", numbers(d), ORDER, numbers(d)),
        _join("({} {} {})", dates(d), ORDER, dates(d)),
        _join("({} {} {})", timestamps(d), ORDER, timestamps(d)),
        _join("({} {} {})", texts, EQUAL, texts),
        _join('({} {} ["pro", "free", "active", "red"])', texts, st.sampled_from(["in", "not in"])),
        _join("({} {} [0, 1, 2.5, 40])", numbers(1), st.sampled_from(["in", "not in"])),
        _join(
            "({} {})",
            st.one_of(numbers(1), dates(1), timestamps(1), texts),
            st.sampled_from(["is none", "is not none"]),
        ),
        st.sampled_from(
            [
                "true",
                "false",
                'last_survey("nps") is none',
                'last_survey("csat") is not none',
                "account.custom.vip",
                "(account.custom.vip == false)",
                "(account.custom.vip is none)",
            ]
        ),
    )
    if depth == 0:
        return leaves
    sub = conditions(depth - 1)
    return st.one_of(leaves, _join("({} and {})", sub, sub), _join("({} or {})", sub, sub), _join("(not {})", sub))


# --- the property -----------------------------------------------------------------------------


def _insert(s: Session, population: list[Generated], now: datetime) -> list[Account]:
    today = now.date()
    rows: list[Account] = []
    for i, generated in enumerate(population):
        values = dict(generated.account)
        for name in ("signup_date", "renewal_date"):
            values[name] = None if values[name] is None else today + timedelta(days=values[name])
        for name in ("renewed_at", "churned_at", "onboarded_at"):
            values[name] = None if values[name] is None else now + values[name]
        rows.append(Account.model_validate({**values, "external_id": f"gen-{i}", "name": f"Generated {i}"}))
    s.add_all(rows)
    s.flush()
    for account, generated in zip(rows, population, strict=True):
        for metric, days_ago, value in generated.usage:
            day = today - timedelta(days=days_ago)
            s.add(UsageMetric.model_validate({"account_id": account.id, "metric": metric, "day": day, "value": value}))
        for kind, score, when, comment in generated.surveys:
            survey = {
                "account_id": account.id,
                "kind": kind,
                "score": score,
                "responded_at": now + when,
                "comment": comment,
            }
            s.add(SurveyResponse.model_validate(survey))
        for status, opened, closed in generated.tickets:
            ticket = {"account_id": account.id, "subject": "help", "status": status, "opened_at": now + opened}
            ticket["closed_at"] = None if closed is None else now + opened + abs(closed)
            s.add(SupportTicket.model_validate(ticket))
        for j, (name, when) in enumerate(generated.events):
            s.add(
                ProductEvent.model_validate(
                    {"message_id": f"{account.id}-{j}", "type": "track", "name": name, "user_id": "u",
                     "account_id": account.id, "occurred_at": now + when, "properties": {}}
                )
            )  # fmt: skip
        for months, cents in generated.revenue:
            index = today.year * 12 + today.month - 1 + months
            period = today.replace(year=index // 12, month=index % 12 + 1, day=1)
            s.add(RevenueEntry.model_validate({"account_id": account.id, "period": period, "mrr_cents": cents}))
    s.flush()
    return rows


def _sql_and_python_agree(engine: Engine, population: list[Generated], now: datetime, texts: list[str]) -> None:
    today = now.date()
    with Session(engine) as s:
        rows = _insert(s, population, now)
        envs = {a.id: env_for(s, a, now=now, today=today) for a in rows}
        for text in texts:
            expr = compile_expression(text, SCOPE)
            in_sql = set(s.exec(select(Account.id).where(to_sql(expr, SCOPE, now=now, today=today))).all())
            in_python = {a.id for a in rows if evaluate(expr, envs[a.id]) is True}
            if in_sql != in_python:
                for a in rows:
                    if a.id in in_sql ^ in_python:
                        note(f"account {a.id}: {a.model_dump()} -> python {evaluate(expr, envs[a.id])!r}")
            assert in_sql == in_python, f"{text}: only SQL {in_sql - in_python}, only Python {in_python - in_sql}"
            _why_agrees(s, expr, envs, now)
        s.rollback()


def _why_agrees(s: Session, expr: Any, envs: dict[int | None, Any], now: datetime) -> None:
    """Why it held, made in SQL (``clause_sql``: what an enrollment's timeline line says), is
    Python's ``explain``: each clause's truth and values (numbers beyond 15 significant digits'
    reach, which each database writes in its own notation, to 14 digits)."""
    acct = table_of(Account)
    columns = clause_columns(expr, now=now, today=now.date())
    sub = select(acct.c.id, *(column.label(name) for name, column in columns)).subquery()
    lines, array = clause_sql(expr, sub.c, s.get_bind().dialect.name)
    for account_id, line, made in s.execute(select(sub.c.id, lines, array)):
        said = explain(expr, envs[account_id])
        made = json.loads(made) if isinstance(made, str) else made
        assert len(made) == len(said)
        for in_sql, in_python in zip(made, said, strict=True):
            assert in_sql["clause"] == in_python.text and in_sql["held"] == in_python.held, (in_sql, in_python)
            assert in_sql["values"].keys() == in_python.values.keys()
            for name, value in in_python.values.items():
                got = in_sql["values"][name]
                if isinstance(value, int | float) and not isinstance(value, bool) and got is not None:
                    assert math.isclose(got, value, rel_tol=1e-14, abs_tol=1e-300), (name, got, value)
                else:
                    assert got == value, (name, got, value)
        if all(isinstance(v, str | bool | int | None) for c in said for v in c.values.values()):
            assert line == "; ".join(c.line() for c in said)


EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
populations = st.lists(accounts, min_size=1, max_size=25)
expression_lists = st.lists(conditions(2), min_size=1, max_size=4)


@EXAMPLES
@given(population=populations, now=st.sampled_from(NOWS), texts=expression_lists)
def test_sql_and_python_agree_on_sqlite(
    sqlite_engine: Engine, population: list[Generated], now: datetime, texts: list[str]
) -> None:
    _sql_and_python_agree(sqlite_engine, population, now, texts)


@EXAMPLES
@given(population=populations, now=st.sampled_from(NOWS), texts=expression_lists)
def test_sql_and_python_agree_on_postgresql(
    pg_clean: Engine, population: list[Generated], now: datetime, texts: list[str]
) -> None:
    _sql_and_python_agree(pg_clean, population, now, texts)
