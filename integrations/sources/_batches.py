"""Writing what an import read: set-based lookups in chunks, batched updates, one transaction,
and a timeline event per changed account."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from models import RetainError

__all__ = [
    "CHUNK",
    "chunks",
    "describe_changes",
    "import_event",
    "json_safe",
    "update_in_batches",
    "write_all_or_nothing",
]

#: how many keys one lookup query carries (well under SQLite's and PostgreSQL's parameter limits)
CHUNK = 1000


_T = TypeVar("_T")


def chunks(values: Iterable[_T], size: int = CHUNK) -> Iterator[list[_T]]:
    """``values`` in lists of at most ``size``: one lookup query each, never one per row."""
    chunk: list[_T] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def json_safe(value: Any) -> Any:
    """A value as the timeline's JSON detail can hold it (dates as ISO text)."""
    return value.isoformat() if isinstance(value, date) else value


def describe_changes(changes: dict[str, tuple[Any, Any]]) -> str:
    """``arr 100 → 200, plan 'a' → 'b'``: the first three changes, for a timeline line."""
    shown = [f"{column} {_show(old)} → {_show(new)}" for column, (old, new) in list(changes.items())[:3]]
    if len(changes) > 3:
        shown.append(f"and {len(changes) - 3} more")
    return ", ".join(shown)


def import_event(account_id: int, now: datetime, summary: str, detail: dict[str, Any]) -> dict[str, Any]:
    """A ``TimelineEvent(kind="import")`` row, for a bulk insert."""
    return {
        "account_id": account_id,
        "at": now,
        "kind": "import",
        "playbook": None,
        "enrollment_id": None,
        "step_id": None,
        "summary": summary,
        "detail": detail,
    }


def update_in_batches(
    conn: Connection, table: Table, updates: list[tuple[int, dict[str, Any]]], now: datetime | None
) -> None:
    """One executemany per set of changed columns (a batch must bind the same columns)."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row_id, values in updates:
        columns = tuple(sorted(values))
        by_columns[columns].append({"row_id": row_id, **{f"new_{c}": values[c] for c in columns}})
    for columns, params in by_columns.items():
        assignments: dict[str, Any] = {c: bindparam(f"new_{c}") for c in columns}
        if now is not None:
            assignments["updated_at"] = now
        conn.execute(update(table).where(table.c.id == bindparam("row_id")).values(assignments), params)


def write_all_or_nothing(engine: Engine, name: str, work: Callable[[Connection], None]) -> None:
    """Run ``work`` in one transaction; a database refusal becomes a :class:`RetainError` naming ``name``."""
    try:
        with engine.begin() as conn:
            work(conn)
    except DBAPIError as exc:
        raise RetainError(
            f"{name}: the database refused the import, so nothing was written: {exc.orig}. "
            "If another import ran at the same time, run this one again."
        ) from exc
