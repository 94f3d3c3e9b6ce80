"""Compiling a checked expression to one SQLAlchemy Core condition, for SQLite and PostgreSQL.

Every construct computes what :mod:`.pyeval` computes, including nulls: day counts are integer
arithmetic on whole seconds, durations are whole seconds or whole days, division is true division
with a null for zero. Subexpressions without fields (``today() + days(90)``) are computed in
Python by the evaluator itself and bound as parameters, so they cannot differ.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    Integer,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from models import UTCDateTime, table_of
from models.tables import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    ProductEvent,
    RevenueEntry,
    SupportTicket,
    SurveyResponse,
    TaskStatus,
    Touch,
    TouchStatus,
    UsageMetric,
)
from playbooks._expr.check import BOOL, DATA_FUNCTIONS, DATE, NUMBER, TEXT, TIMESTAMP, Scope, expect
from playbooks._expr.pyeval import (
    BOOL_TEXT,
    NUMBER_TEXT,
    NUMBER_TEXT_MAX,
    UNIT_DAYS,
    UNIT_SECONDS,
    Duration,
    Env,
    epoch_seconds,
    evaluate,
    event_window,
    month_of,
    usage_windows,
)
from playbooks._expr.syntax import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Expr,
    FieldRef,
    ListLiteral,
    Literal,
    Name,
    Neg,
    Not,
    children,
)

__all__ = ["to_sql"]

_TABLES: dict[str, Table] = {
    "account": table_of(Account),
    "contact": table_of(Contact),
    "enrollment": table_of(Enrollment),
    "event": table_of(ProductEvent),
}
_ENROLLMENT_ID = table_of(Enrollment).c.id
_ACCOUNT_ID = table_of(Account).c.id


def to_sql(expr: Expr, scope: Scope, *, now: datetime, today: date) -> ColumnElement[bool]:
    """The condition ``expr`` as SQL, over ``Account.__table__`` (and ``Contact.__table__`` for
    ``CONTACTS``, ``Enrollment.__table__`` for ``ENROLLMENT``: the caller's query joins
    ``contact.account_id = account.id`` or ``enrollment.account_id = account.id``).

    ``ENROLLMENT`` conditions (goals, exits) compile too, so that a tick settles every enrollment
    whose goal holds in one query; ``touches(step)`` becomes a subquery on that enrollment's touches.

    A row is selected only where the condition is true (not null), as Python's ``evaluate(...) is True``."""
    if not scope.sql:
        raise ValueError(f"expressions in {scope.where} are evaluated in Python, not compiled to SQL")
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime (UTC)")
    if expr.type is None:
        expect(expr, scope, "bool")
    elif expr.type != BOOL:  # checked already (with the playbook's declared fields): only its type matters
        raise ValueError(f"expected a condition (true/false), got {expr.type}")
    return _Compiler(Env(now, today))(expr)


# --- dialect-specific SQL: each construct renders the same integers and texts in both databases ---


def _construct(name: str, type_: TypeEngine[Any], *, sqlite: str, postgresql: str) -> type[FunctionElement[Any]]:
    """A SQL function of its arguments ``{0}, {1}``, written once per database."""
    cls: type[FunctionElement[Any]] = type(
        name, (FunctionElement,), {"type": type_, "inherit_cache": True, "name": name}
    )

    def render(template: str) -> Any:
        def compile_(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
            # parenthesised: SQLAlchemy treats a function as atomic when it applies operators
            return "(" + template.format(*(compiler.process(arg, **kw) for arg in element.clauses)) + ")"

        return compile_

    def unsupported(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
        raise CompileError(f"expressions compile for SQLite and PostgreSQL only, not {compiler.dialect.name}")

    compiles(cls, "sqlite")(render(sqlite))
    compiles(cls, "postgresql")(render(postgresql))
    compiles(cls)(unsupported)
    return cls


# x truncated toward zero, as an integer
_Trunc = _construct(
    "expr_trunc",
    BigInteger(),
    sqlite="CAST({0} AS INTEGER)",
    postgresql="CAST(trunc(CAST({0} AS DOUBLE PRECISION)) AS BIGINT)",
)
# true division, null when dividing by zero
_Divide = _construct(
    "expr_divide",
    Float(),
    sqlite="(CAST({0} AS REAL) / NULLIF({1}, 0))",
    postgresql="(CAST({0} AS DOUBLE PRECISION) / NULLIF({1}, 0))",
)
# date + k days (SQLite keeps dates as 'YYYY-MM-DD' text)
_DateAddDays = _construct(
    "expr_date_add_days",
    Date(),
    sqlite="date({0}, CAST({1} AS TEXT) || ' days')",
    postgresql="({0} + CAST({1} AS INTEGER))",
)
# timestamp + k seconds; SQLite's date functions keep only milliseconds, so the whole seconds are
# shifted and the stored '.ffffff' is carried over as it is
_TimestampAddSeconds = _construct(
    "expr_timestamp_add_seconds",
    UTCDateTime(),
    sqlite="(strftime('%Y-%m-%d %H:%M:%S', substr({0}, 1, 19), CAST({1} AS TEXT) || ' seconds') || substr({0}, 20))",
    postgresql="({0} + make_interval(secs => {1}))",
)
# a - b in days, for two dates
_DaysBetween = _construct(
    "expr_days_between",
    BigInteger(),
    sqlite="CAST(julianday({0}) - julianday({1}) AS INTEGER)",
    postgresql="({0} - {1})",
)
# seconds since 1970, microseconds dropped (floor)
_EpochSeconds = _construct(
    "expr_epoch_seconds",
    BigInteger(),
    sqlite="CAST(strftime('%s', substr({0}, 1, 19)) AS INTEGER)",
    postgresql="CAST(floor(extract(epoch FROM {0})) AS BIGINT)",
)
# a declared JSON field (account.custom.x, event.properties.x): its value when its JSON type is the
# declared one, else null; {1} is the field's name (an identifier, so a safe JSON path). A field
# declared number or bool also reads a JSON string written as one (imports keep CSV cells as
# text), by the rules of pyeval.json_field: NUMBER_TEXT for numbers, BOOL_TEXT for booleans.
_JSON_PATH = "'$.' || {1}"
_SQLITE_VALUE = f"json_extract({{0}}, {_JSON_PATH})"
# SQLite has no regular expressions: NUMBER_TEXT as globs on the text without its leading minus
_SQLITE_UNSIGNED = (
    f"(CASE WHEN substr({_SQLITE_VALUE}, 1, 1) = '-' THEN substr({_SQLITE_VALUE}, 2) ELSE {_SQLITE_VALUE} END)"
)
_SQLITE_IS_NUMBER = (
    f"(length({_SQLITE_VALUE}) <= {NUMBER_TEXT_MAX} AND {_SQLITE_UNSIGNED} GLOB '*[0-9]*' "
    f"AND {_SQLITE_UNSIGNED} NOT GLOB '*[^0-9.]*' "
    f"AND length({_SQLITE_UNSIGNED}) - length(replace({_SQLITE_UNSIGNED}, '.', '')) <= 1)"
)
_PG_VALUE = "({0} ->> CAST({1} AS TEXT))"
_PG_TYPE = "json_typeof({0} -> CAST({1} AS TEXT))"
_PG_IS_NUMBER = f"(length({_PG_VALUE}) <= {NUMBER_TEXT_MAX} AND {_PG_VALUE} ~ '{NUMBER_TEXT.pattern}')"
_JsonNumber = _construct(
    "expr_json_number",
    Float(),
    sqlite=f"CASE json_type({{0}}, {_JSON_PATH}) WHEN 'integer' THEN {_SQLITE_VALUE} WHEN 'real' THEN {_SQLITE_VALUE} "
    f"WHEN 'text' THEN (CASE WHEN {_SQLITE_IS_NUMBER} THEN CAST({_SQLITE_VALUE} AS REAL) END) END",
    postgresql=f"CASE {_PG_TYPE} WHEN 'number' THEN CAST({_PG_VALUE} AS DOUBLE PRECISION) "
    f"WHEN 'string' THEN (CASE WHEN {_PG_IS_NUMBER} THEN CAST({_PG_VALUE} AS DOUBLE PRECISION) END) END",
)
_JsonText = _construct(
    "expr_json_text",
    String(),
    sqlite=f"CASE WHEN json_type({{0}}, {_JSON_PATH}) = 'text' THEN json_extract({{0}}, {_JSON_PATH}) END",
    postgresql="CASE WHEN json_typeof({0} -> CAST({1} AS TEXT)) = 'string' THEN {0} ->> CAST({1} AS TEXT) END",
)


def _text_is(value: str, words: tuple[str, ...]) -> str:
    return f"lower({value}) IN ({', '.join(repr(w) for w in words)})"


_JsonBool = _construct(
    "expr_json_bool",
    Boolean(),
    sqlite=f"CASE json_type({{0}}, {_JSON_PATH}) WHEN 'true' THEN 1 WHEN 'false' THEN 0 "
    f"WHEN 'text' THEN (CASE WHEN {_text_is(_SQLITE_VALUE, BOOL_TEXT[True])} THEN 1 "
    f"WHEN {_text_is(_SQLITE_VALUE, BOOL_TEXT[False])} THEN 0 END) END",
    postgresql=f"CASE {_PG_TYPE} WHEN 'boolean' THEN CAST({_PG_VALUE} AS BOOLEAN) "
    f"WHEN 'string' THEN (CASE WHEN {_text_is(_PG_VALUE, BOOL_TEXT[True])} THEN TRUE "
    f"WHEN {_text_is(_PG_VALUE, BOOL_TEXT[False])} THEN FALSE END) END",
)
_JSON_FIELDS = {NUMBER: _JsonNumber, TEXT: _JsonText, BOOL: _JsonBool}

# floor(seconds / 86400) with integer division only: both databases truncate toward zero, so the
# value is first shifted to be positive (by 10^8 days, far beyond any real timestamp)
_FLOOR_DAYS = "(({0}) + 8640000000000) / 86400 - 100000000"
_FloorDays = _construct("expr_floor_days", BigInteger(), sqlite=_FLOOR_DAYS, postgresql=_FLOOR_DAYS)


def _bind(value: Any, kind: str) -> ColumnElement[Any]:
    """A typed parameter, so that PostgreSQL never guesses (an int stays an int, 1.5 a float)."""
    if kind == NUMBER:
        return literal(value, BigInteger() if isinstance(value, int) else Float())
    types: dict[str, TypeEngine[Any]] = {TEXT: String(), BOOL: Boolean(), DATE: Date(), TIMESTAMP: UTCDateTime()}
    return literal(value, types[kind])


def _is_constant(node: Expr) -> bool:
    if isinstance(node, Name) or (isinstance(node, Call) and node.func in DATA_FUNCTIONS):
        return False
    return all(_is_constant(child) for child in children(node))


class _Compiler:
    def __init__(self, env: Env) -> None:
        self.env = env

    def __call__(self, node: Expr) -> ColumnElement[Any]:
        assert node.type is not None
        if _is_constant(node):
            return _bind(evaluate(node, self.env), node.type)
        match node:
            case FieldRef(record=Name(name=record), name=name):
                return _TABLES[record].c[name]
            case FieldRef(record=Call(func="last_survey", args=[Literal(value=str(kind))]), name=name):
                survey, where = _latest_survey(kind, self.env.now)
                return (
                    select(survey.c[name])
                    .where(*where)
                    .order_by(survey.c.responded_at.desc(), survey.c.id.desc())
                    .limit(1)
                    .scalar_subquery()
                )
            case FieldRef(record=Call(func="touches", args=[Literal(value=str(step_id))]), name=name):
                return _touches(step_id, name)
            case FieldRef(record=Call(func="task", args=[Literal(value=str(step_id))]), name=name):
                return _task(step_id, name)
            case FieldRef(record=FieldRef(name="custom" | "properties") as holder, name=name):
                assert node.type is not None
                return _JSON_FIELDS[node.type](self(holder), literal(name, String()))
            case Call(func="days_since" | "days_until"):
                return self._days(node)
            case Call(func="usage", args=[Literal(value=str(metric)), Literal(value=int(days))]):
                current, _ = usage_windows(self.env.today, days)
                return _usage(metric, *current, self.env.today)
            case Call(func="usage_trend", args=[Literal(value=str(metric)), Literal(value=int(days))]):
                current, previous = usage_windows(self.env.today, days)
                now_sum = _usage(metric, *current, self.env.today)
                before = _usage(metric, *previous, self.env.today)
                return _Divide((now_sum - before) * literal(100, BigInteger()), before)
            case Call(func="events", args=[Literal(value=str(name)), Literal(value=int(days))]):
                start, end = event_window(self.env.now, days)
                ev = table_of(ProductEvent).alias()
                counted = (
                    select(func.count())
                    .where(
                        *_tracked(ev, name),
                        ev.c.occurred_at > _bind(start, TIMESTAMP),
                        ev.c.occurred_at <= _bind(end, TIMESTAMP),
                    )
                    .scalar_subquery()
                )
                seen = table_of(ProductEvent).alias()
                any_event = exists().where(
                    seen.c.account_id == _ACCOUNT_ID, seen.c.occurred_at <= _bind(end, TIMESTAMP)
                )
                return case((any_event, counted), else_=None)
            case Call(func="last_event", args=[Literal(value=str(name))]):
                ev = table_of(ProductEvent).alias()
                return (
                    select(func.max(ev.c.occurred_at))
                    .where(*_tracked(ev, name), ev.c.occurred_at <= _bind(self.env.now, TIMESTAMP))
                    .scalar_subquery()
                )
            case Call(func="mrr"):
                return _mrr(self.env.today, self.env.today)
            case Call(func="mrr_change", args=[Literal(value=int(days))]):
                return _mrr(self.env.today, self.env.today) - _mrr(
                    self.env.today - timedelta(days=days), self.env.today
                )
            case Call(func="open_tickets"):
                tickets = table_of(SupportTicket).alias()
                now = _bind(self.env.now, TIMESTAMP)
                return (
                    select(func.count())
                    .where(
                        tickets.c.account_id == _ACCOUNT_ID,
                        tickets.c.opened_at <= now,
                        or_(
                            tickets.c.closed_at > now,
                            and_(tickets.c.closed_at.is_(None), tickets.c.status != literal("solved", String())),
                        ),
                    )
                    .scalar_subquery()
                )
            case Not(operand=operand):
                return not_(self(operand))
            case Neg(operand=operand):
                return -self._number(operand)
            case BoolOp(op=op, operands=operands):
                return (and_ if op == "and" else or_)(*(self(o) for o in operands))
            case Arith():
                return self._arith(node)
            case Compare():
                return self._compare(node)
        raise AssertionError(f"cannot compile {node!r}")  # check() let through something new

    def _number(self, node: Expr) -> ColumnElement[Any]:
        value = self(node)
        # PostgreSQL's integer overflows at 2^31 where Python does not
        if isinstance(value.type, Integer) and not isinstance(value.type, BigInteger):
            return value.cast(BigInteger())
        return value

    def _days(self, node: Call) -> ColumnElement[Any]:
        arg = node.args[0]
        since = node.func == "days_since"
        value = self(arg)
        if arg.type == DATE:
            today = _bind(self.env.today, DATE)
            return _DaysBetween(today, value) if since else _DaysBetween(value, today)
        now = _bind(epoch_seconds(self.env.now), NUMBER)
        seconds = _EpochSeconds(value)
        return _FloorDays(now - seconds if since else seconds - now)

    def _arith(self, node: Arith) -> ColumnElement[Any]:
        left, right = node.left, node.right
        if left.type == NUMBER:
            a, b = self._number(left), self._number(right)
            if node.op == "/":
                return _Divide(a, b)
            return a + b if node.op == "+" else a - b if node.op == "-" else a * b
        if left.type == right.type == DATE:
            return _DaysBetween(self(left), self(right))
        assert isinstance(right, Call)
        step = self._duration(right, days=left.type == DATE)
        if node.op == "-":
            step = -step
        return _DateAddDays(self(left), step) if left.type == DATE else _TimestampAddSeconds(self(left), step)

    def _duration(self, node: Call, *, days: bool) -> ColumnElement[Any]:
        """The whole days (dates) or seconds (timestamps) of ``days(n)``/``weeks(n)``/``hours(n)``."""
        if _is_constant(node):
            duration: Duration | None = evaluate(node, self.env)
            if duration is None:
                return _bind(None, NUMBER)
            return _bind(duration.days() if days else duration.seconds(), NUMBER)
        unit = (UNIT_DAYS if days else UNIT_SECONDS)[node.func]
        return _Trunc(self._number(node.args[0]) * literal(unit, BigInteger()))

    def _compare(self, node: Compare) -> ColumnElement[Any]:
        left, right, op = node.left, node.right, node.op
        if right is None:
            if isinstance(left, Call) and left.func == "last_survey":  # is there a response at all?
                _, where = _latest_survey(str(_literal(left.args[0])), self.env.now)
                found = exists().where(*where)
                return ~found if op == "is none" else found
            value = self(left)
            return value.is_(None) if op == "is none" else value.is_not(None)
        if isinstance(right, ListLiteral):
            assert left.type is not None
            items = [_bind(item.value, left.type) for item in right.items]
            return self(left).in_(items) if op == "in" else self(left).not_in(items)
        a, b = self(left), self(right)
        match op:
            case "==":
                return a == b
            case "!=":
                return a != b
            case "<":
                return a < b
            case "<=":
                return a <= b
            case ">":
                return a > b
        return a >= b


def _touches(step_id: str, name: str) -> ColumnElement[Any]:
    """``touches(step_id).<name>`` for the enrollment of the row, as Python's TouchSummary computes it."""
    touch = table_of(Touch).alias()
    mine = [touch.c.enrollment_id == _ENROLLMENT_ID, touch.c.step_id == literal(step_id, String())]
    if name == "count":
        return select(func.count()).where(*mine).scalar_subquery()
    if name == "last_at":
        return select(func.max(touch.c.sent_at)).where(*mine).scalar_subquery()
    condition = {
        "delivered": touch.c.status == literal(TouchStatus.DELIVERED.value, String()),
        "replied": touch.c.replied_at.is_not(None),
        "opened": touch.c.opened_at.is_not(None),
        "clicked": touch.c.clicked_at.is_not(None),
        "bounced": touch.c.bounced_at.is_not(None),
        "complained": touch.c.complained_at.is_not(None),
    }[name]
    return exists().where(*mine, condition)


def _task(step_id: str, name: str) -> ColumnElement[Any]:
    """``task(step_id).<name>`` for the enrollment of the row, as Python's TaskSummary computes it."""
    task = table_of(CsmTask).alias()
    mine = [task.c.enrollment_id == _ENROLLMENT_ID, task.c.step_id == literal(step_id, String())]
    if name == "count":
        return select(func.count()).where(*mine).scalar_subquery()
    if name in ("due_at", "completed_at"):
        return select(func.max(task.c[name])).where(*mine).scalar_subquery()
    status = TaskStatus.DONE if name == "done" else TaskStatus.OPEN
    return exists().where(*mine, task.c.status == literal(status.value, String()))


def _usage(metric: str, start: date, end: date, today: date) -> ColumnElement[Any]:
    """The sum of a metric over (start, end]; null when the account has no row of the metric up to today."""
    rows = table_of(UsageMetric).alias()
    mine = [rows.c.account_id == _ACCOUNT_ID, rows.c.metric == literal(metric, String())]
    total = (
        select(func.coalesce(func.sum(rows.c.value), literal(0.0, Float())))
        .where(*mine, rows.c.day > literal(start, Date()), rows.c.day <= literal(end, Date()))
        .scalar_subquery()
    )
    known = table_of(UsageMetric).alias()
    has_data = exists().where(
        known.c.account_id == _ACCOUNT_ID,
        known.c.metric == literal(metric, String()),
        known.c.day <= literal(today, Date()),
    )
    return case((has_data, total), else_=None)


def _tracked(ev: Any, name: str) -> list[ColumnElement[bool]]:
    return [
        ev.c.account_id == _ACCOUNT_ID,
        ev.c.type == literal("track", String()),
        ev.c.name == literal(name, String()),
    ]


def _mrr(day: date, today: date) -> ColumnElement[Any]:
    """The account's MRR (in currency units) of the month of ``day``; null without revenue up to today's month."""
    rows = table_of(RevenueEntry).alias()
    cents = (
        select(func.coalesce(func.sum(rows.c.mrr_cents), literal(0, BigInteger())))
        .where(rows.c.account_id == _ACCOUNT_ID, rows.c.period == literal(month_of(day), Date()))
        .scalar_subquery()
    )
    known = table_of(RevenueEntry).alias()
    has_data = exists().where(known.c.account_id == _ACCOUNT_ID, known.c.period <= literal(month_of(today), Date()))
    return case((has_data, _Divide(cents, literal(100, BigInteger()))), else_=None)


def _latest_survey(kind: str, now: datetime) -> tuple[Any, list[ColumnElement[bool]]]:
    """An alias of survey_response and the conditions for this account's responses of ``kind``
    given by ``now``."""
    survey = table_of(SurveyResponse).alias()
    return survey, [
        survey.c.account_id == _ACCOUNT_ID,
        survey.c.kind == literal(kind, String()),
        survey.c.responded_at <= _bind(now, TIMESTAMP),
    ]


def _literal(node: Expr) -> Any:
    assert isinstance(node, Literal)
    return node.value
