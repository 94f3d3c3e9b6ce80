"""Why a condition held (or did not): its clauses and the values they read.

A condition's *clauses* are the parts of its top-level ``and`` (the whole condition when it is not
an ``and``). For each clause, the values it compares (``account.arr``,
``days_until(account.renewal_date)``) are its *operands*. Both are computed the same way in SQL (as
extra columns of one query over many accounts, see :func:`clause_columns`) and in Python (for one
account, :func:`explain`), so an enrollment's timeline and a refused play say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cached_property
from typing import Any

from sqlalchemy.sql.elements import ColumnElement

from playbooks._expr.check import BOOL, DATE, NUMBER, TEXT, TIMESTAMP
from playbooks._expr.pyeval import Env, evaluate
from playbooks._expr.sql import _Compiler, _is_constant
from playbooks._expr.syntax import BoolOp, Compare, Expr, ListLiteral, Not

__all__ = ["Clause", "clause_columns", "clauses", "explain", "operands", "read_clauses"]

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
    operands' values (``c<i>_<j>``). Read them back with :func:`read_clauses`."""
    compile_ = _Compiler(Env(now, today))
    columns: list[tuple[str, ColumnElement[Any]]] = []
    for i, clause in enumerate(clauses(expr)):
        columns.append((f"c{i}", compile_(clause)))
        columns += [(f"c{i}_{j}", compile_(operand)) for j, operand in enumerate(operands(clause))]
    return columns


def read_clauses(expr: Expr, rows: Sequence[Sequence[Any]], *, start: int = 0) -> list[list[Clause]]:
    """The clauses of each row of a query with :func:`clause_columns`, whose columns begin at
    position ``start`` of each row, in their order. The expression's shape is read once; rows with
    the same values share their :class:`Clause` (so its line is made once)."""
    shape: list[tuple[int, str, list[tuple[int, str, str | None]]]] = []
    position = start
    for part in clauses(expr):
        held_at, position = position, position + 1
        columns: list[tuple[int, str, str | None]] = []
        for operand in operands(part):
            columns.append((position, operand.src.strip(), operand.type))
            position += 1
        shape.append((held_at, part.src.strip(), columns))
    seen: dict[tuple[Any, ...], Clause] = {}
    found: list[list[Clause]] = []
    for row in rows:
        mine: list[Clause] = []
        for i, (held_at, text, values) in enumerate(shape):
            key = (i, row[held_at], *(row[at] for at, _, _ in values))
            clause = seen.get(key)
            if clause is None:
                held = row[held_at]
                read = {src: _plain(row[at], kind) for at, src, kind in values}
                clause = seen[key] = Clause(text, None if held is None else bool(held), read)
            mine.append(clause)
        found.append(mine)
    return found


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
    whole numbers as integers."""
    if value is None:
        return None
    if kind == BOOL:
        return bool(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if kind == NUMBER and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
