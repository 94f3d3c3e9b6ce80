"""SQL that enroll, advance and the outbox share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Update, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

__all__ = ["claim", "insert_ignore"]


def insert_ignore(s: Session, table: Any) -> Any:
    """INSERT that skips rows hitting a unique key (two workers enrolling the same account, a
    touch written again by a re-run)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


def claim(table: Any, due: Select[Any]) -> Update:
    """``UPDATE table … FROM (due) WHERE table.id = due.id``: the rows ``due`` picks (an id select
    with ``FOR UPDATE SKIP LOCKED`` and a ``LIMIT``), picked once. Written as ``id IN (due)``,
    PostgreSQL may plan a nested-loop semi-join that runs the whole sort-and-lock again for every
    row of the table when its statistics are stale (a freshly filled outbox: minutes for 66,000
    touches); a materialized CTE is run exactly once (PostgreSQL, and SQLite from 3.35)."""
    picked = due.cte("due").prefix_with("MATERIALIZED")
    return update(table).where(table.c.id == picked.c.id)
