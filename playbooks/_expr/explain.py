"""Why a condition held (or did not): its clauses and the values they read.

A condition's *clauses* are the parts of its top-level ``and`` (the whole condition when it is not
an ``and``). For each clause, the values it compares (``account.arr``,
``days_until(account.renewal_date)``) are its *operands*. Both are computed the same way in SQL (as
extra columns of one query over many accounts, see :func:`clause_columns`) and in Python (for one
account, :func:`explain`), so an enrollment's timeline and a refused play say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
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
        return {"clause": self.text, "held": self.held, "values": self.values}

    def line(self) -> str:
        """``account.arr >= 5000 (account.arr = 1200)``."""
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


def read_clauses(expr: Expr, row: Any) -> list[Clause]:
    """The clauses of one row of a query with :func:`clause_columns` (``row._mapping``)."""
    found: list[Clause] = []
    for i, (text, shown) in enumerate(_shape(expr)):
        held = row[f"c{i}"]
        values = {name: _plain(row[f"c{i}_{j}"], kind) for j, (name, kind) in enumerate(shown)}
        found.append(Clause(text, None if held is None else bool(held), values))
    return found


@lru_cache(maxsize=256)
def _shape(expr: Expr) -> tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...]:
    """Each clause's text and its operands' texts and types: the same for every row (enroll reads
    a million rows with one expression), so worked out once per expression (by identity)."""
    return tuple(
        (clause.src.strip(), tuple((operand.src.strip(), operand.type) for operand in operands(clause)))
        for clause in clauses(expr)
    )


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
