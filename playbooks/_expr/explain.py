"""Why a condition held (or did not): its clauses and the values they read.

A condition's *clauses* are the parts of its top-level ``and`` (the whole condition when it is not
an ``and``). For each clause, the values it compares (``account.arr``,
``days_until(account.renewal_date)``) are its *operands*. Both are computed the same way in SQL (as
extra columns of one query over many accounts, see :func:`clause_columns`) and in Python (for one
account, :func:`explain`), so an enrollment's timeline and a refused play say the same thing.

:func:`clause_sql` goes one step further for many accounts at once: the lines (``Clause.line``) and
the JSON (``Clause.to_dict``) are made by the database itself, in SQLite's and PostgreSQL's own
functions, so that a tick writes a million enrollments' timeline lines in one ``INSERT … SELECT``
without a row passing through Python. It writes what the Python path writes, character for
character (``tests/playbooks/test_explain_sql.py`` holds both databases to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Float, Integer, Numeric, String, case, cast, func, literal, null
from sqlalchemy.sql.elements import ColumnElement

from playbooks._expr.check import BOOL, DATE, NUMBER, TEXT, TIMESTAMP
from playbooks._expr.pyeval import Env, evaluate
from playbooks._expr.sql import _Compiler, _is_constant
from playbooks._expr.syntax import BoolOp, Compare, Expr, ListLiteral, Not

__all__ = ["Clause", "clause_columns", "clause_sql", "clauses", "explain", "json_object", "operands"]

_SHOWN_TYPES = (BOOL, NUMBER, TEXT, DATE, TIMESTAMP)


@dataclass(frozen=True)
class Clause:
    """One clause of a condition for one account: its text, whether it held (None: unknown, as
    SQL's null), and the values it read, by their text."""

    text: str
    held: bool | None
    values: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """``{"clause", "held", "values"}`` (one dict per distinct clause: do not change it)."""
        return self._dict

    @cached_property
    def _dict(self) -> dict[str, Any]:
        return {"clause": self.text, "held": self.held, "values": self.values}

    def line(self) -> str:
        """``account.arr >= 5000 (account.arr = 1200)``."""
        return self._line

    @cached_property
    def _line(self) -> str:
        shown = ", ".join(f"{name} = {_show(value)}" for name, value in self.values.items())
        return f"{self.text} ({shown})" if shown and shown != self.text else self.text


def clauses(expr: Expr) -> list[Expr]:
    """The parts of ``expr``'s top-level ``and``, or ``[expr]``."""
    if isinstance(expr, BoolOp) and expr.op == "and":
        return list(expr.operands)
    return [expr]


def operands(clause: Expr) -> list[Expr]:
    """The values a clause compares, each once, in the order written (constants left out)."""
    found: dict[str, Expr] = {}

    def walk(node: Expr) -> None:
        match node:
            case BoolOp(operands=parts):
                for part in parts:
                    walk(part)
            case Not(operand=operand):
                walk(operand)
            case Compare(left=left, right=right):
                for side in (left, right):
                    if side is not None and not isinstance(side, ListLiteral):
                        keep(side)
            case _:
                keep(node)

    def keep(node: Expr) -> None:
        if node.type in _SHOWN_TYPES and not _is_constant(node):
            found.setdefault(node.src.strip(), node)

    walk(clause)
    return list(found.values())


def clause_columns(expr: Expr, *, now: datetime, today: date) -> list[tuple[str, ColumnElement[Any]]]:
    """Labelled SQL columns, for a query over accounts: each clause's truth (``c<i>``) and its
    operands' values (``c<i>_<j>``)."""
    compile_ = _Compiler(Env(now, today))
    columns: list[tuple[str, ColumnElement[Any]]] = []
    for i, clause in enumerate(clauses(expr)):
        columns.append((f"c{i}", compile_(clause)))
        columns += [(f"c{i}_{j}", compile_(operand)) for j, operand in enumerate(operands(clause))]
    return columns


def clause_sql(expr: Expr, columns: Any, dialect: str) -> tuple[ColumnElement[str], ColumnElement[Any]]:
    """Why ``expr`` held, made in SQL from the columns of :func:`clause_columns` as selected by a
    subquery (``columns``: its ``.c``, by the labels ``c<i>``, ``c<i>_<j>``): the clauses' lines
    joined by ``"; "`` (as :meth:`Clause.line`) and a JSON array of :meth:`Clause.to_dict`.
    ``dialect`` is ``"sqlite"`` or ``"postgresql"``."""
    lines: list[ColumnElement[str]] = []
    items: list[ColumnElement[Any]] = []
    for i, part in enumerate(clauses(expr)):
        text = part.src.strip()
        shown: list[ColumnElement[str]] = []
        values: dict[str, ColumnElement[Any]] = {}
        for j, operand in enumerate(operands(part)):
            src = operand.src.strip()
            value, said = _sql_value(columns[f"c{i}_{j}"], operand.type, dialect)
            values[src] = value
            shown.append(_concat(_text(f"{src} = "), said))
        line = _text(text)
        if shown:
            parts = [_text(f"{text} (")]
            for k, piece in enumerate(shown):
                parts += [_text(", "), piece] if k else [piece]
            line = _concat(*parts, _text(")"))
        lines.append(line)
        held = _sql_value(columns[f"c{i}"], BOOL, dialect)[0]
        items.append(
            json_object(dialect, {"clause": _text(text), "held": held, "values": json_object(dialect, values)})
        )
    joined = [lines[0]]
    for line in lines[1:]:
        joined += [_text("; "), line]
    array = func.json_array(*items) if dialect == "sqlite" else func.json_build_array(*items)
    return _concat(*joined), array


def json_object(dialect: str, pairs: dict[str, ColumnElement[Any]]) -> ColumnElement[Any]:
    """A JSON object made in SQL (``json_object`` in SQLite, ``json_build_object`` in PostgreSQL),
    its keys in the order given."""
    arguments: list[ColumnElement[Any]] = []
    for key, value in pairs.items():
        arguments += [_text(key), value]
    return func.json_object(*arguments) if dialect == "sqlite" else func.json_build_object(*arguments)


def json_bool(value: ColumnElement[Any], dialect: str) -> ColumnElement[Any]:
    """A SQL truth value as a JSON ``true``/``false``/``null`` (SQLite answers 0 and 1)."""
    return _sql_value(value, BOOL, dialect)[0]


def _text(value: str) -> ColumnElement[str]:
    return cast(literal(value, String()), String())


def _concat(*parts: ColumnElement[str]) -> ColumnElement[str]:
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.concat(part)
    return joined


def _sql_value(
    value: ColumnElement[Any], kind: str | None, dialect: str
) -> tuple[ColumnElement[Any], ColumnElement[str]]:
    """An operand's value as JSON keeps it (:func:`_plain`) and as a line shows it (:func:`_show`),
    both in SQL."""
    sqlite = dialect == "sqlite"
    if kind == BOOL:
        word = case((value.is_(None), null()), (value == (1 if sqlite else True), "true"), else_="false")
        kept = func.json(word) if sqlite else value
        return kept, func.coalesce(word, "none")
    if kind == NUMBER:  # 15 significant digits, whole numbers as integers (:func:`_plain`)
        if sqlite:
            kept = case(
                (value.is_(None), null()),
                (func.typeof(value) == "integer", value),
                (value == cast(value, Integer), cast(value, Integer)),
                else_=cast(func.printf("%.15g", value), Float()),
            )
        else:  # PostgreSQL turns a double into a numeric of 15 significant digits
            kept = cast(value, Numeric())
        return kept, func.coalesce(cast(kept, String()), "none")
    if kind == DATE:
        kept = value if sqlite else func.to_char(value, "YYYY-MM-DD")
    elif kind == TIMESTAMP:  # datetime.isoformat() of an aware UTC moment
        if sqlite:  # stored as naive UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'
            fraction = func.substr(value, 21)
            micro = case((fraction.in_(["", "000000"]), ""), else_=_concat(_text("."), fraction))
            kept = _concat(func.substr(value, 1, 10), _text("T"), func.substr(value, 12, 8), micro, _text("+00:00"))
        else:
            utc = func.timezone("UTC", value)
            micro = case((func.to_char(utc, "US") == "000000", ""), else_=_concat(_text("."), func.to_char(utc, "US")))
            kept = _concat(func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS'), micro, _text("+00:00"))
    else:  # text
        kept = value
    return kept, func.coalesce(_concat(_text('"'), cast(kept, String()), _text('"')), "none")


def explain(expr: Expr, env: Env) -> list[Clause]:
    """The clauses of ``expr`` for one account (``env``), evaluated in Python."""
    found: list[Clause] = []
    for clause in clauses(expr):
        held = evaluate(clause, env)
        values = {operand.src.strip(): _plain(evaluate(operand, env), operand.type) for operand in operands(clause)}
        found.append(Clause(clause.src.strip(), None if held is None else bool(held), values))
    return found


def _plain(value: Any, kind: str | None) -> Any:
    """A value as JSON keeps it: booleans as booleans (SQLite answers 0/1), times as ISO text,
    numbers to 15 significant digits (what both databases keep of a double when they show it: so a
    line made in SQL reads the same), whole numbers as integers. Beyond 10^15, or below 10^-4,
    each database writes a number in its own notation."""
    if value is None:
        return None
    if kind == BOOL:
        return bool(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if kind == NUMBER and isinstance(value, float):
        value = float(format(value, ".15g"))
        return int(value) if value.is_integer() else value
    return value


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
