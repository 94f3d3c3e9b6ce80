"""The expression language, table-driven from expr_cases.yaml: values in Python and SQL, and the
exact message and offset of every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from models import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    ExpressionError,
    ProductEvent,
    RevenueEntry,
    SupportTicket,
    SurveyResponse,
    Touch,
    UsageMetric,
)
from playbooks import (
    AUDIENCE,
    CONTACTS,
    ENROLLMENT,
    Env,
    check,
    compile_expression,
    env_for,
    evaluate,
    fields_of,
    parse,
    to_sql,
)
from tests._sqlite import migrated_sqlite

CASES = yaml.safe_load((Path(__file__).parent / "expr_cases.yaml").read_text(encoding="utf-8"))
NOW: datetime = CASES["now"]
TODAY: date = CASES["today"]
# the custom fields the cases declare, as a playbook does under custom_fields:
SCOPES = {
    name: scope.with_declared("custom", CASES["custom_fields"])
    for name, scope in {"audience": AUDIENCE, "contacts": CONTACTS, "enrollment": ENROLLMENT}.items()
}


@dataclass
class World:
    engine: Engine
    account: Account
    contact: Contact  # the one the contacts cases are about
    enrollment: Enrollment


def _insert_fixture(engine: Engine) -> World:
    data = CASES["fixture"]
    with Session(engine, expire_on_commit=False) as s:
        account = Account.model_validate(data["account"])
        s.add_all([account, Account.model_validate(data["other_account"])])
        s.flush()
        contacts = [Contact.model_validate({**c, "account_id": account.id}) for c in data["contacts"]]
        enrollment = Enrollment.model_validate({**data["enrollment"], "account_id": account.id})
        s.add_all([*contacts, enrollment])
        s.flush()
        for survey in data["surveys"]:
            s.add(SurveyResponse.model_validate({**survey, "account_id": account.id}))
        for metric, days_ago, value in data["usage"]:
            day = TODAY - timedelta(days=days_ago)
            s.add(UsageMetric.model_validate({"account_id": account.id, "metric": metric, "day": day, "value": value}))
        for status in data["tickets"]:
            s.add(SupportTicket.model_validate({"account_id": account.id, "subject": status, "status": status}))
        for touch in data["touches"]:
            s.add(Touch.model_validate({**touch, "account_id": account.id, "enrollment_id": enrollment.id}))
        for task in data["tasks"]:
            s.add(CsmTask.model_validate({**task, "account_id": account.id, "enrollment_id": enrollment.id}))
        for i, (name, hours_ago) in enumerate(data["events"]):
            at = NOW - timedelta(hours=hours_ago)
            s.add(
                ProductEvent.model_validate(
                    {"message_id": f"m{i}", "type": "track", "name": name, "user_id": "u1",
                     "account_id": account.id, "occurred_at": at, "properties": {}}
                )
            )  # fmt: skip
        for period, cents in data["revenue"]:
            s.add(RevenueEntry.model_validate({"account_id": account.id, "period": period, "mrr_cents": cents}))
        s.commit()
    return World(engine, account, contacts[0], enrollment)


def _truncate(engine: Engine) -> None:
    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The fixture account of expr_cases.yaml, once per module and database."""
    if request.param == "sqlite":
        engine = migrated_sqlite(tmp_path_factory.mktemp("expr") / "retain.db")
        yield _insert_fixture(engine)
        engine.dispose()
    else:
        engine = request.getfixturevalue("pg_engine")
        _truncate(engine)
        yield _insert_fixture(engine)
        _truncate(engine)


def _case_id(case: dict[str, Any]) -> str:
    return " ".join(case["expr"].split()) or "<empty>"


@pytest.mark.parametrize("case", CASES["valid"], ids=_case_id)
def test_value_in_python_and_sql(world: World, case: dict[str, Any]) -> None:
    scope = SCOPES[case.get("scope", "audience")]
    expr = parse(case["expr"])
    kind = check(expr, scope)
    if "expect" in case:
        compile_expression(case["expr"], scope, expect=case["expect"])
    contact = world.contact if scope.where == CONTACTS.where else None
    enrollment = world.enrollment if scope.where == ENROLLMENT.where else None
    with Session(world.engine) as s:
        env = env_for(s, world.account, now=NOW, today=TODAY, contact=contact, enrollment=enrollment)
        value = evaluate(expr, env)
        if case["value"] is None or isinstance(case["value"], bool):
            assert value is case["value"]  # null stays null, true is exactly True
        else:
            assert value == case["value"] and not isinstance(value, bool)
        if not scope.sql or kind != "bool":
            return
        condition = to_sql(compile_expression(case["expr"], scope), scope, now=NOW, today=TODAY)
        if scope.where == CONTACTS.where:
            query = select(Contact.id).join(Account, Contact.account_id == Account.id).where(condition)  # type: ignore[arg-type]
            selected = world.contact.id in s.exec(query).all()
        elif scope.where == ENROLLMENT.where:
            query = select(Enrollment.id).join(Account, Enrollment.account_id == Account.id).where(condition)  # type: ignore[arg-type]
            selected = world.enrollment.id in s.exec(query).all()
        else:
            selected = world.account.id in s.exec(select(Account.id).where(condition)).all()
    assert selected == (case["value"] is True)


@pytest.mark.parametrize("case", CASES["invalid"], ids=_case_id)
def test_refused_with_message_and_offset(case: dict[str, Any]) -> None:
    scope = SCOPES[case.get("scope", "audience")]
    with pytest.raises(ExpressionError) as info:
        compile_expression(case["expr"], scope, expect=case.get("expect", "bool"))
    assert (info.value.message, info.value.offset) == (case["error"], case["offset"])


def test_record_fields_come_from_the_table_columns() -> None:
    account = fields_of("account")
    assert account["arr"] == "number"
    assert account["renewal_date"] == "date"
    assert account["renewed_at"] == "timestamp"
    assert account["status"] == "text"
    assert "custom" not in account  # JSON
    assert fields_of("contact")["is_primary"] == "bool"
    assert set(fields_of("enrollment")) == {
        "started_at",
        "ended_at",
        "status",
        "step_id",
        "holdout",
        "outcome",
        "source",
        "playbook",
    }
    assert fields_of("last_survey") == {"score": "number", "responded_at": "timestamp", "comment": "text"}


def test_a_new_column_is_usable_without_code() -> None:
    # every column the checker knows is accepted; here the one that tells the timezone
    expr = compile_expression('account.timezone == "Europe/Berlin"', AUDIENCE)
    assert (
        evaluate(
            expr,
            Env(
                NOW,
                TODAY,
                account=Account.model_validate({"external_id": "x", "name": "X", "timezone": "Europe/Berlin"}),
            ),
        )
        is True
    )


def test_constant_parts_are_bound_as_parameters() -> None:
    expr = compile_expression("account.renewal_date <= today() + days(90)", AUDIENCE)
    compiled = select(Account.id).where(to_sql(expr, AUDIENCE, now=NOW, today=TODAY)).compile()
    assert date(2027, 6, 8) in compiled.params.values()
    assert "today" not in str(compiled)


def test_evaluate_needs_a_checked_expression_and_data_lookups() -> None:
    with pytest.raises(ValueError, match="type-check"):
        evaluate(parse("true"), Env(NOW, TODAY))
    with pytest.raises(LookupError, match="env_for"):
        evaluate(compile_expression("open_tickets() > 1", AUDIENCE), Env(NOW, TODAY, account=object()))


def test_goal_conditions_compile_to_sql_with_touches_as_subqueries(world: World) -> None:
    """Goals and exits are settled set-based each tick: touches(step) must give in SQL what it gives in Python."""
    for text_ in (
        'touches("welcome").count >= 0',
        'not touches("welcome").replied',
        'touches("welcome").last_at is none',
    ):
        expr = compile_expression(text_, ENROLLMENT)
        with Session(world.engine) as s:
            python = (
                evaluate(expr, env_for(s, world.account, now=NOW, today=TODAY, enrollment=world.enrollment)) is True
            )
            query = (
                select(Enrollment.id)
                .join(Account, Enrollment.account_id == Account.id)
                .where(
                    to_sql(expr, ENROLLMENT, now=NOW, today=TODAY)  # type: ignore[arg-type]
                )
            )
            assert (world.enrollment.id in s.exec(query).all()) == python, text_
