"""Types, records, functions and scopes of the expression language, and the type checker.

Types are plain strings: ``number``, ``text``, ``bool``, ``date``, ``timestamp``, ``duration``,
``none``, ``list of <type>``, and record names (``account``, ``contact``, ``enrollment``,
``survey``, ``touches``, ``event``). Record fields come from the table columns, so a new column is
usable in playbooks without touching this module.

Two records hold fields a playbook declares, because their values live in JSON:
``account.custom.<name>`` (declared under the playbook's ``custom_fields:``) and
``event.properties.<name>`` (declared under ``entry.on_event.properties:``), each ``text``,
``number`` or ``bool``. A value of another JSON type than declared reads as none, in SQL and in
Python alike.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from sqlalchemy import Boolean, Date, DateTime, Float, Integer, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine

from models import table_of
from models.errors import ExpressionError
from models.tables import Account, Contact, Enrollment, ProductEvent
from playbooks._expr.syntax import Arith, BoolOp, Call, Compare, Expr, FieldRef, ListLiteral, Literal, Name, Neg, Not

__all__ = [
    "AUDIENCE",
    "CONTACTS",
    "DATA_FUNCTIONS",
    "DECLARED_TYPES",
    "ENROLLMENT",
    "EVENT",
    "RECORDS",
    "SURVEY_KINDS",
    "Scope",
    "check",
    "expect",
    "fields_of",
]

NUMBER, TEXT, BOOL, DATE, TIMESTAMP, DURATION, NONE = "number", "text", "bool", "date", "timestamp", "duration", "none"
_SCALARS = (NUMBER, TEXT, BOOL, DATE, TIMESTAMP)
_ORDERED = (NUMBER, DATE, TIMESTAMP)
SURVEY_KINDS = ("nps", "csat", "ces")
USAGE_MAX_DAYS = 36_500
#: the types a custom field or an event property may be declared with
DECLARED_TYPES = (TEXT, NUMBER, BOOL)
#: the records whose fields are declared (their values are JSON): record -> (owner, declaration key)
JSON_RECORDS = {"custom": ("account", "custom_fields"), "properties": ("event", "entry.on_event.properties")}


def _column_type(sql_type: TypeEngine[object]) -> str | None:
    if isinstance(sql_type, TypeDecorator):  # UTCDateTime
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, DateTime):
        return TIMESTAMP
    if isinstance(sql_type, Date):
        return DATE
    if isinstance(sql_type, Boolean):
        return BOOL
    if isinstance(sql_type, Integer | Float | Numeric):
        return NUMBER
    if isinstance(sql_type, String):
        return TEXT
    return None  # JSON and anything else has no place in an expression


def _fields(model: type, *, skip: set[str]) -> dict[str, str]:
    """A record's fields: its table's columns, without keys and bookkeeping."""
    fields: dict[str, str] = {}
    for column in table_of(model).columns:
        kind = _column_type(column.type)
        if kind and column.name not in skip and not column.foreign_keys:
            fields[column.name] = kind
    return fields


#: record type -> field -> type
RECORDS: dict[str, dict[str, str]] = {
    "account": _fields(Account, skip={"id", "updated_at", "holdout_bucket"}),
    "contact": _fields(Contact, skip={"id"}),
    "enrollment": _fields(Enrollment, skip={"id", "revision", "next_due_at", "claimed_by", "claimed_until"}),
    "survey": {"score": NUMBER, "responded_at": TIMESTAMP, "comment": TEXT},  # last_survey(kind), or none
    "touches": {
        "count": NUMBER,
        "delivered": BOOL,
        "replied": BOOL,
        "opened": BOOL,
        "clicked": BOOL,
        "bounced": BOOL,
        "complained": BOOL,
        "last_at": TIMESTAMP,
    },
    # task(step_id): the CSM tasks this enrollment's task step made (a loop may make several)
    "task": {"count": NUMBER, "done": BOOL, "open": BOOL, "due_at": TIMESTAMP, "completed_at": TIMESTAMP},
    "event": {"name": TEXT, "user_id": TEXT, "occurred_at": TIMESTAMP},  # the event of entry.on_event
}
assert set(RECORDS["event"]) <= {c.name for c in table_of(ProductEvent).columns}
_RECORD_NAMES = ("account", "contact", "enrollment", "event")

#: function -> (parameters, for messages; result type)
_FUNCTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "days_since": (("date or timestamp",), NUMBER),
    "days_until": (("date or timestamp",), NUMBER),
    "days": (("number",), DURATION),
    "weeks": (("number",), DURATION),
    "hours": (("number",), DURATION),
    "now": ((), TIMESTAMP),
    "today": ((), DATE),
    "last_survey": (("kind",), "survey"),
    "usage": (("metric", "days"), NUMBER),
    "usage_trend": (("metric", "days"), NUMBER),
    "events": (("event name", "days"), NUMBER),
    "last_event": (("event name",), TIMESTAMP),
    "mrr": ((), NUMBER),
    "mrr_change": (("days",), NUMBER),
    "open_tickets": ((), NUMBER),
    "touches": (("step id",), "touches"),
    "task": (("step id",), "task"),
}
#: functions that read data beyond the records (never constant)
DATA_FUNCTIONS = frozenset(
    {
        "last_survey",
        "usage",
        "usage_trend",
        "events",
        "last_event",
        "mrr",
        "mrr_change",
        "open_tickets",
        "touches",
        "task",
    }
)
#: functions whose last argument is a written-out whole number of days
_DAYS_ARGUMENT = {"usage": 1, "usage_trend": 1, "events": 1, "mrr_change": 0}
#: functions whose first argument is a written-out name
_NAME_ARGUMENT = {"usage": "metric", "usage_trend": "metric", "events": "event", "last_event": "event"}


def fields_of(record: str) -> dict[str, str]:
    """The fields of a record and their types, e.g. ``fields_of("account")["arr"] == "number"``.

    Records: ``account``, ``contact``, ``enrollment``, ``survey`` (what ``last_survey(kind)``
    returns), ``touches`` (what ``touches(step_id)`` returns) and ``task`` (``task(step_id)``)."""
    if record == "last_survey":
        record = "survey"
    return dict(RECORDS[record])


@dataclass(frozen=True)
class Scope:
    """Which records and functions an expression may use. ``where`` names the place in messages;
    ``sql`` says whether it is compiled to SQL (``to_sql``) rather than only evaluated in Python."""

    where: str
    names: tuple[str, ...]
    functions: frozenset[str]
    sql: bool
    #: declared fields: ``custom`` (account.custom.<name>) and ``properties`` (event.properties.<name>)
    declared: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()

    def with_declared(self, record: str, fields: dict[str, str]) -> Scope:
        """This scope, with the declared fields of ``record`` (``custom`` or ``properties``)."""
        others = tuple((r, f) for r, f in self.declared if r != record)
        return replace(self, declared=(*others, (record, tuple(sorted(fields.items())))))

    def declared_fields(self, record: str) -> dict[str, str]:
        return next((dict(fields) for r, fields in self.declared if r == record), {})


_COMMON = frozenset(_FUNCTIONS) - {"touches", "task"}
AUDIENCE = Scope("an audience", ("account",), _COMMON, sql=True)
CONTACTS = Scope("entry.contacts", ("account", "contact"), _COMMON, sql=True)
ENROLLMENT = Scope("a step condition", ("account", "enrollment"), frozenset(_FUNCTIONS), sql=True)
#: entry.on_event.when and a wait_for's event condition: the event (and its account)
EVENT = Scope("an event condition", ("account", "event"), _COMMON, sql=True)


def check(expr: Expr, scope: Scope) -> str:
    """Type-check ``expr`` for ``scope`` and return its type (e.g. ``"bool"``).

    Raises :class:`ExpressionError` at the first problem, with the offset of the offending part.
    Annotates every node with its type, which ``evaluate`` and ``to_sql`` rely on."""
    return _Checker(scope).type_of(expr)


def expect(expr: Expr, scope: Scope, kind: str) -> None:
    """Check ``expr`` and that it yields what its place needs: ``"bool"`` (a condition) or
    ``"date"`` (a date or timestamp, for ``wait.until``)."""
    got = check(expr, scope)
    if kind == "bool" and got != BOOL:
        raise ExpressionError(f"expected a condition (true/false), got {got}", expr.offset)
    if kind == "date" and got not in (DATE, TIMESTAMP):
        raise ExpressionError(f"expected a date or timestamp, got {got}", expr.offset)
    if kind not in ("bool", "date"):
        raise ValueError(f"expect must be 'bool' or 'date', not {kind!r}")


def _suggest(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


class _Checker:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def type_of(self, node: Expr) -> str:
        node.type = self._infer(node)
        return node.type

    def _infer(self, node: Expr) -> str:
        match node:
            case Literal(value=value):
                if value is None:
                    return NONE
                return BOOL if isinstance(value, bool) else TEXT if isinstance(value, str) else NUMBER
            case ListLiteral(items=items):
                kinds = sorted({self.type_of(item) for item in items})
                if len(kinds) > 1:
                    raise ExpressionError(
                        f"list items must all have the same type, got {' and '.join(kinds)}: {node.src}", node.offset
                    )
                return f"list of {kinds[0]}"
            case Name():
                return self._name(node)
            case FieldRef():
                return self._field(node)
            case Call():
                return self._call(node)
            case Not(operand=operand):
                got = self.type_of(operand)
                if got != BOOL:
                    raise ExpressionError(
                        f"'not' needs a condition (true/false), got {got}: {operand.src}", operand.offset
                    )
                return BOOL
            case Neg(operand=operand):
                got = self.type_of(operand)
                if got != NUMBER:
                    raise ExpressionError(f"cannot negate {got}: {node.src}", node.offset)
                return NUMBER
            case BoolOp(op=op, operands=operands):
                for operand in operands:
                    got = self.type_of(operand)
                    if got != BOOL:
                        raise ExpressionError(
                            f"'{op}' needs conditions (true/false), got {got}: {operand.src}", operand.offset
                        )
                return BOOL
            case Arith():
                return self._arith(node)
            case Compare():
                return self._compare(node)
        raise AssertionError(f"unexpected node {node!r}")

    def _name(self, node: Name) -> str:
        name, scope = node.name, self.scope
        if name in _RECORD_NAMES:
            if name not in scope.names:
                raise ExpressionError(
                    f"'{name}' is not available here (available: {', '.join(scope.names)})", node.offset
                )
            return name
        if name in _FUNCTIONS:
            raise ExpressionError(f"'{name}' is a function: write {name}(...)", node.offset)
        hint = _suggest(name, [*scope.names, "true", "false", "none"]) or f" (available: {', '.join(scope.names)})"
        raise ExpressionError(f"unknown name '{name}'{hint}", node.offset)

    def _field(self, node: FieldRef) -> str:
        record = self.type_of(node.record)
        if (record, node.name) in (("account", "custom"), ("event", "properties")):
            return node.name  # a record of declared fields
        if record in JSON_RECORDS:
            declared = self.scope.declared_fields(record)
            if node.name not in declared:
                owner, key = JSON_RECORDS[record]
                hint = _suggest(node.name, list(declared), f"{owner}.{record}.") or (
                    f" (declared: {', '.join(sorted(declared))})" if declared else ""
                )
                raise ExpressionError(
                    f"undeclared field '{node.src}'{hint}: declare it under {key}: ({node.name}: text, number or bool)",
                    node.offset,
                )
            return declared[node.name]
        fields = RECORDS.get(record)
        if fields is None:
            raise ExpressionError(
                f"not allowed in an expression: attribute access on {record} ({node.src})", node.offset
            )
        if node.name not in fields:
            owner = node.record.src
            hint = _suggest(node.name, list(fields), f"{owner}.") or f" ({record} fields: {', '.join(sorted(fields))})"
            raise ExpressionError(f"unknown field '{owner}.{node.name}'{hint}", node.offset)
        return fields[node.name]

    def _call(self, node: Call) -> str:
        func, args = node.func, node.args
        if func not in _FUNCTIONS:
            hint = (
                " (it is a record: use its fields, e.g. account.arr)"
                if func in _RECORD_NAMES
                else _suggest(func, sorted(_FUNCTIONS))
            )
            raise ExpressionError(f"unknown function '{func}'{hint}", node.offset)
        if func not in self.scope.functions:
            raise ExpressionError(f"{func}() cannot be used in {self.scope.where}", node.offset)
        params, result = _FUNCTIONS[func]
        if len(args) != len(params):
            takes = "no arguments" if not params else f"{len(params)} argument{'s' if len(params) > 1 else ''}"
            raise ExpressionError(f"{func}() takes {takes} ({len(args)} given)", node.offset)
        kinds = [self.type_of(arg) for arg in args]
        if func in ("days_since", "days_until") and kinds[0] not in (DATE, TIMESTAMP):
            raise ExpressionError(f"{func}() needs a date or timestamp, got {kinds[0]}: {args[0].src}", args[0].offset)
        if func in ("days", "weeks", "hours") and kinds[0] != NUMBER:
            raise ExpressionError(f"{func}() needs a number, got {kinds[0]}: {args[0].src}", args[0].offset)
        if func == "last_survey" and _literal(args[0]) not in SURVEY_KINDS:
            kinds_text = ", ".join(f'"{k}"' for k in SURVEY_KINDS)
            raise ExpressionError(f"last_survey() needs one of {kinds_text}, got {args[0].src}", args[0].offset)
        if func in _NAME_ARGUMENT and not isinstance(_literal(args[0]), str):
            raise ExpressionError(
                f"{func}() needs the {_NAME_ARGUMENT[func]} name written as text, e.g. {_example(func)}: {args[0].src}",
                args[0].offset,
            )
        if func in _DAYS_ARGUMENT:
            arg = args[_DAYS_ARGUMENT[func]]
            days = _literal(arg)
            if not (isinstance(days, int) and not isinstance(days, bool) and 1 <= days <= USAGE_MAX_DAYS):
                raise ExpressionError(
                    f"{func}() needs a whole number of days from 1 to {USAGE_MAX_DAYS}, e.g. {_example(func)}: {arg.src}",
                    arg.offset,
                )
        if func in ("touches", "task") and not isinstance(_literal(args[0]), str):
            example = 'touches("first_note")' if func == "touches" else 'task("call")'
            raise ExpressionError(
                f"{func}() needs a step id written as text, e.g. {example}: {args[0].src}", args[0].offset
            )
        return result

    def _arith(self, node: Arith) -> str:
        left, right = self.type_of(node.left), self.type_of(node.right)
        if left == right == NUMBER:
            return NUMBER
        if node.op in "+-" and left in (DATE, TIMESTAMP) and right == DURATION:
            # a duration is always written as days(n), weeks(n) or hours(n)
            if left == DATE and isinstance(node.right, Call) and node.right.func == "hours":
                raise ExpressionError(
                    f"a date moves by whole days: use days() or weeks(), not hours(): {node.src}", node.offset
                )
            return left
        if node.op == "-" and left == right == DATE:
            return NUMBER
        raise ExpressionError(f"cannot apply '{node.op}' to {left} and {right}: {node.src}", node.offset)

    def _compare(self, node: Compare) -> str:
        left = self.type_of(node.left)
        if node.right is None:  # is none / is not none
            if (left in RECORDS or left in JSON_RECORDS) and left != "survey":
                raise ExpressionError(f"'{node.left.src}' is never none: test one of its fields", node.offset)
            return BOOL
        right = self.type_of(node.right)
        if NONE in (left, right):
            raise ExpressionError("use 'is none' to test for a missing value", node.offset)
        if node.op in ("in", "not in"):
            if left not in _SCALARS or right != f"list of {left}":
                raise ExpressionError(f"cannot compare {left} with {right}: {node.src}", node.offset)
            return BOOL
        if node.op in ("<", "<=", ">", ">=") and left == right == TEXT:
            raise ExpressionError(
                f"cannot order text: {node.src} (text sorts differently in SQLite and PostgreSQL; use == or in)",
                node.offset,
            )
        allowed = _ORDERED if node.op in ("<", "<=", ">", ">=") else _SCALARS
        if left != right or left not in allowed:
            raise ExpressionError(f"cannot compare {left} with {right}: {node.src}", node.offset)
        return BOOL


def _example(func: str) -> str:
    return {
        "usage": 'usage("logins", 30)',
        "usage_trend": 'usage_trend("logins", 30)',
        "events": 'events("Report Exported", 30)',
        "last_event": 'last_event("Login")',
        "mrr_change": "mrr_change(90)",
    }[func]


def _literal(node: Expr) -> object:
    """The value of a written-out literal, or a marker that is never a valid value."""
    return node.value if isinstance(node, Literal) else _NOT_LITERAL


_NOT_LITERAL = object()
