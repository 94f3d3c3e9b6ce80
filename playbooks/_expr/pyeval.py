"""Evaluating a checked expression in Python, for one account, exactly as SQL would.

SQL's three-valued logic is kept: ``None`` is SQL's null. A comparison or arithmetic with null is
null, ``and``/``or``/``not`` are Kleene, ``x in [...]`` with a null ``x`` is null, ``is none`` is
never null, division by zero is null. A condition holds only when the result ``is True``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from models.tables import (
    CsmTask,
    ProductEvent,
    RevenueEntry,
    SupportTicket,
    SurveyResponse,
    TaskStatus,
    Touch,
    TouchStatus,
    UsageMetric,
)
from playbooks._expr.check import BOOL, DATE, NUMBER, TEXT
from playbooks._expr.syntax import Arith, BoolOp, Call, Compare, Expr, FieldRef, ListLiteral, Literal, Name, Neg, Not

__all__ = [
    "BOOL_TEXT",
    "NUMBER_TEXT",
    "NUMBER_TEXT_MAX",
    "Duration",
    "Env",
    "TaskSummary",
    "TouchSummary",
    "env_for",
    "epoch_seconds",
    "evaluate",
    "event_window",
    "floor_days",
    "json_field",
    "month_of",
    "read_as",
    "usage_windows",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
DAY_SECONDS = 86_400
#: what one unit of days(n), weeks(n), hours(n) is, in seconds and (for dates) in days
UNIT_SECONDS = {"days": DAY_SECONDS, "weeks": 7 * DAY_SECONDS, "hours": 3600}
UNIT_DAYS = {"days": 1, "weeks": 7}


def _no_lookup(*_args: object) -> Any:
    raise LookupError("this Env has no data lookups: build it with env_for(), or pass them in")


@dataclass(frozen=True)
class Env:
    """What an expression sees: the clock, the records (table rows or anything with those
    attributes) and the data lookups. ``env_for()`` builds one from a database session."""

    now: datetime  # aware
    today: date
    account: Any = None
    contact: Any = None
    enrollment: Any = None
    last_survey: Callable[[str], Any] = _no_lookup  # the latest response of a kind, or None
    usage: Callable[[str, int], float | None] = _no_lookup  # sum over (today - n, today]; None: no data
    open_tickets: Callable[[], int] = _no_lookup
    touches: Callable[[str], Any] = _no_lookup  # a TouchSummary of this enrollment's step
    event: Any = None  # the event of entry.on_event (a ProductEvent row)
    usage_trend: Callable[[str, int], float | None] = _no_lookup  # % change against the window before
    events: Callable[[str, int], int | None] = _no_lookup  # track events in (now - n days, now]
    last_event: Callable[[str], datetime | None] = _no_lookup
    mrr: Callable[[date], float | None] = _no_lookup  # MRR of the month of a day
    task: Callable[[str], Any] = _no_lookup  # a TaskSummary of this enrollment's task step


@dataclass(frozen=True)
class TouchSummary:
    """What ``touches(step_id)`` gives: the touches of this enrollment for one step."""

    count: int
    delivered: bool
    replied: bool
    opened: bool
    clicked: bool
    bounced: bool
    complained: bool
    last_at: datetime | None


@dataclass(frozen=True)
class TaskSummary:
    """What ``task(step_id)`` gives: the CSM tasks of this enrollment made by one task step."""

    count: int
    done: bool  # one of them is done
    open: bool  # one of them is still open
    due_at: datetime | None  # the latest due time
    completed_at: datetime | None  # the latest completion


@dataclass(frozen=True)
class Duration:
    """``days(n)``, ``weeks(n)`` or ``hours(n)``: whole seconds (for timestamps) or whole days (for
    dates), truncated toward zero, so that SQL can compute the very same integers."""

    amount: int | float
    unit: str

    def seconds(self) -> int | None:
        return _whole(self.amount * UNIT_SECONDS[self.unit])

    def days(self) -> int | None:
        return _whole(self.amount * UNIT_DAYS[self.unit])


def _whole(x: int | float) -> int | None:
    return math.trunc(x) if math.isfinite(x) else None


def epoch_seconds(t: datetime) -> int:
    """Seconds since 1970 in UTC, the microseconds dropped (floor)."""
    return (t - _EPOCH) // _SECOND


def floor_days(seconds: int) -> int:
    """Whole days in ``seconds``, rounded down (also for negative numbers)."""
    return seconds // DAY_SECONDS


def usage_windows(today: date, days: int) -> tuple[tuple[date, date], tuple[date, date]]:
    """The windows of ``usage``/``usage_trend``: (today - n, today] and the n days before it."""
    start = today - timedelta(days=days)
    return (start, today), (start - timedelta(days=days), start)


def event_window(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The window of ``events(name, n)``: (now - n days, now]."""
    return now - timedelta(days=days), now


def month_of(day: date) -> date:
    """The first day of the month of ``day`` (revenue rows are kept per month)."""
    return day.replace(day=1)


#: the text a field declared ``number`` reads as a number (an import keeps CSV cells as text):
#: digits with an optional leading minus and at most one decimal point, nothing else
NUMBER_TEXT = re.compile(r"^-?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")
#: longer text is not read as a number (no database overflows on it)
NUMBER_TEXT_MAX = 40
#: the text a field declared ``bool`` reads as true or false, in any case
BOOL_TEXT = {True: ("true", "yes"), False: ("false", "no")}


def json_field(data: Any, name: str, kind: str) -> Any:
    """A declared field of a JSON object: its value when its JSON type is ``kind``, else None (as SQL).

    Text is read by the declared type too: ``"12"`` or ``"-0.5"`` as a number (:data:`NUMBER_TEXT`),
    ``"true"``/``"yes"``/``"false"``/``"no"`` as a boolean; other text is none for those types."""
    value = data.get(name) if isinstance(data, dict) else None
    if kind == NUMBER:
        if isinstance(value, str):
            return float(value) if len(value) <= NUMBER_TEXT_MAX and NUMBER_TEXT.fullmatch(value) else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == TEXT:
        return value if isinstance(value, str) else None
    if kind == BOOL:
        if isinstance(value, str):
            word = value.lower()
            return True if word in BOOL_TEXT[True] else False if word in BOOL_TEXT[False] else None
        return value if isinstance(value, bool) else None
    raise AssertionError(f"unexpected declared type {kind}")


def read_as(value: Any, kind: str) -> Any:
    """A custom field's stored value as a field declared ``kind`` reads it (None: it does not read
    as one): what an import checks a cell against before it keeps it."""
    return json_field({"value": value}, "value", kind)


def evaluate(expr: Expr, env: Env) -> Any:
    """The value of a checked expression (from ``compile_expression``/``check``) for ``env``.

    ``None`` means SQL's null (unknown); a condition holds only when the result ``is True``."""
    if expr.type is None:
        raise ValueError("type-check the expression first (compile_expression or check)")
    return _eval(expr, env)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _eval(node: Expr, env: Env) -> Any:
    match node:
        case Literal(value=value):
            return value
        case ListLiteral(items=items):
            return [item.value for item in items]
        case Name(name=name):
            return getattr(env, name)
        case FieldRef(record=FieldRef(name="custom" | "properties") as holder, name=name):
            assert node.type is not None
            return json_field(_eval(holder, env), name, node.type)
        case FieldRef(record=record, name=name):
            row = _eval(record, env)
            return None if row is None else _aware(getattr(row, name))
        case Call():
            return _call(node, env)
        case Not(operand=operand):
            value = _eval(operand, env)
            return None if value is None else not value
        case Neg(operand=operand):
            value = _eval(operand, env)
            return None if value is None else -value
        case BoolOp(op=op, operands=operands):
            # Kleene logic; stopping at the deciding value gives the same result and saves lookups
            decisive = op == "or"
            unknown = False
            for operand in operands:
                value = _eval(operand, env)
                if value is decisive:
                    return decisive
                unknown = unknown or value is None
            return None if unknown else not decisive
        case Arith():
            return _arith(node, env)
        case Compare(op=op, left=left, right=right):
            a = _eval(left, env)
            if right is None:
                return (a is None) == (op == "is none")
            b = _eval(right, env)
            if a is None:
                return None
            if op in ("in", "not in"):
                return (a in b) == (op == "in")
            return None if b is None else _ORDER[op](a, b)
    raise AssertionError(f"unexpected node {node!r}")


def _aware(value: Any) -> Any:
    # rows built in Python (not read back) may hold naive datetimes: they mean UTC
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _call(node: Call, env: Env) -> Any:
    args = node.args
    match node.func:
        case "now":
            return env.now
        case "today":
            return env.today
        case "days" | "weeks" | "hours":
            amount = _eval(args[0], env)
            return None if amount is None else Duration(amount, node.func)
        case "days_since" | "days_until":
            value = _eval(args[0], env)
            if value is None:
                return None
            since = node.func == "days_since"
            if args[0].type == DATE:
                return (env.today - value).days if since else (value - env.today).days
            t, now = epoch_seconds(_aware(value)), epoch_seconds(env.now)
            return floor_days(now - t if since else t - now)
        case "last_survey":
            return env.last_survey(_text(args[0]))
        case "usage":
            return env.usage(_text(args[0]), args[1].value)  # type: ignore[attr-defined]
        case "usage_trend":
            return env.usage_trend(_text(args[0]), args[1].value)  # type: ignore[attr-defined]
        case "events":
            return env.events(_text(args[0]), args[1].value)  # type: ignore[attr-defined]
        case "last_event":
            return env.last_event(_text(args[0]))
        case "mrr":
            return env.mrr(env.today)
        case "mrr_change":
            current, before = env.mrr(env.today), env.mrr(env.today - timedelta(days=args[0].value))  # type: ignore[attr-defined]
            return None if current is None or before is None else current - before
        case "open_tickets":
            return env.open_tickets()
        case "touches":
            return env.touches(_text(args[0]))
        case "task":
            return env.task(_text(args[0]))
    raise AssertionError(f"unexpected function {node.func}")


def _text(node: Expr) -> str:
    assert isinstance(node, Literal) and isinstance(node.value, str)
    return node.value


def _arith(node: Arith, env: Env) -> Any:
    a, b = _eval(node.left, env), _eval(node.right, env)
    if a is None or b is None:
        return None
    if node.left.type == NUMBER:  # and so is the right side
        if node.op == "/":  # as SQL: CAST(a AS FLOAT) / NULLIF(b, 0)
            try:
                return None if b == 0 else float(a) / float(b)
            except OverflowError:
                return None
        return a + b if node.op == "+" else a - b if node.op == "-" else a * b
    if isinstance(b, Duration):
        sign = 1 if node.op == "+" else -1
        step = b.days() if node.left.type == DATE else b.seconds()
        if step is None:
            return None
        try:
            return a + timedelta(days=sign * step) if node.left.type == DATE else a + timedelta(seconds=sign * step)
        except OverflowError:  # beyond year 9999: SQLite gives null too
            return None
    return (a - b).days  # date - date


def env_for(
    session: Session,
    account: Any,
    *,
    now: datetime,
    today: date,
    contact: Any = None,
    enrollment: Any = None,
    event: Any = None,
) -> Env:
    """An :class:`Env` for one account (and contact or enrollment), its lookups answered from the
    database through ``session`` (each asked at most once)."""

    @cache
    def last_survey(kind: str) -> SurveyResponse | None:
        latest = (
            select(SurveyResponse)
            .where(
                SurveyResponse.account_id == account.id,
                SurveyResponse.kind == kind,
                col(SurveyResponse.responded_at) <= now,
            )
            .order_by(col(SurveyResponse.responded_at).desc(), col(SurveyResponse.id).desc())
            .limit(1)
        )
        return session.exec(latest).first()

    @cache
    def has_usage(metric: str) -> bool:
        known = select(UsageMetric.id).where(
            UsageMetric.account_id == account.id, UsageMetric.metric == metric, col(UsageMetric.day) <= today
        )
        return session.exec(known.limit(1)).first() is not None

    @cache
    def usage_between(metric: str, start: date, end: date) -> float | None:
        if not has_usage(metric):
            return None  # no data is not zero usage
        total = select(func.coalesce(func.sum(UsageMetric.value), 0.0)).where(
            UsageMetric.account_id == account.id,
            UsageMetric.metric == metric,
            col(UsageMetric.day) > start,
            col(UsageMetric.day) <= end,
        )
        return session.exec(total).one()

    def usage(metric: str, days: int) -> float | None:
        return usage_between(metric, *usage_windows(today, days)[0])

    def usage_trend(metric: str, days: int) -> float | None:
        current, previous = usage_windows(today, days)
        now_sum, before = usage_between(metric, *current), usage_between(metric, *previous)
        if now_sum is None or before is None or before == 0:
            return None
        return float((now_sum - before) * 100) / float(before)  # as SQL: CAST(x AS REAL) / NULLIF(y, 0)

    @cache
    def events(name: str, days: int) -> int | None:
        start, end = event_window(now, days)
        seen = select(ProductEvent.id).where(
            ProductEvent.account_id == account.id, col(ProductEvent.occurred_at) <= end
        )
        if session.exec(seen.limit(1)).first() is None:
            return None  # no events at all: not known, rather than none happened
        count = select(func.count()).where(
            ProductEvent.account_id == account.id,
            ProductEvent.type == "track",
            ProductEvent.name == name,
            col(ProductEvent.occurred_at) > start,
            col(ProductEvent.occurred_at) <= end,
        )
        return session.exec(count).one()

    @cache
    def last_event(name: str) -> datetime | None:
        latest = select(func.max(ProductEvent.occurred_at)).where(
            ProductEvent.account_id == account.id,
            ProductEvent.type == "track",
            ProductEvent.name == name,
            col(ProductEvent.occurred_at) <= now,
        )
        found: datetime | None = session.exec(latest).one()
        return None if found is None else found.replace(tzinfo=UTC) if found.tzinfo is None else found

    @cache
    def mrr(day: date) -> float | None:
        known = select(RevenueEntry.id).where(
            RevenueEntry.account_id == account.id, col(RevenueEntry.period) <= month_of(today)
        )
        if session.exec(known.limit(1)).first() is None:
            return None
        cents = select(func.coalesce(func.sum(RevenueEntry.mrr_cents), 0)).where(
            RevenueEntry.account_id == account.id, RevenueEntry.period == month_of(day)
        )
        return float(session.exec(cents).one()) / 100.0

    @cache
    def open_tickets() -> int:
        # open at now: opened by then, and not closed by then (a solved ticket without a date is closed)
        count = select(func.count()).where(
            SupportTicket.account_id == account.id,
            col(SupportTicket.opened_at) <= now,
            or_(
                col(SupportTicket.closed_at) > now,
                and_(col(SupportTicket.closed_at).is_(None), col(SupportTicket.status) != "solved"),
            ),
        )
        return session.exec(count).one()

    @cache
    def touches(step_id: str) -> TouchSummary:
        if enrollment is None:
            raise LookupError("touches() needs an enrollment")
        rows = session.exec(select(Touch).where(Touch.enrollment_id == enrollment.id, Touch.step_id == step_id)).all()
        sent = [_aware(t.sent_at) for t in rows if t.sent_at is not None]
        return TouchSummary(
            count=len(rows),
            delivered=any(t.status == TouchStatus.DELIVERED for t in rows),
            replied=any(t.replied_at is not None for t in rows),
            opened=any(t.opened_at is not None for t in rows),
            clicked=any(t.clicked_at is not None for t in rows),
            bounced=any(t.bounced_at is not None for t in rows),
            complained=any(t.complained_at is not None for t in rows),
            last_at=max(sent, default=None),
        )

    @cache
    def task(step_id: str) -> TaskSummary:
        if enrollment is None:
            raise LookupError("task() needs an enrollment")
        rows = session.exec(
            select(CsmTask).where(CsmTask.enrollment_id == enrollment.id, CsmTask.step_id == step_id)
        ).all()
        due = [_aware(t.due_at) for t in rows if t.due_at is not None]
        completed = [_aware(t.completed_at) for t in rows if t.completed_at is not None]
        return TaskSummary(
            count=len(rows),
            done=any(t.status == TaskStatus.DONE for t in rows),
            open=any(t.status == TaskStatus.OPEN for t in rows),
            due_at=max(due, default=None),
            completed_at=max(completed, default=None),
        )

    return Env(
        now,
        today,
        account,
        contact,
        enrollment,
        last_survey,
        usage,
        open_tickets,
        touches,
        event,
        usage_trend,
        events,
        last_event,
        mrr,
        task,
    )
