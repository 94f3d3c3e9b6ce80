"""SQL that enroll, advance and the outbox share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, Select, Update, any_, cast, func, insert, select, update
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


def claim(s: Session, table: Any, due: Select[Any]) -> Update:
    """``UPDATE table … WHERE id`` is one of the rows ``due`` picks (an id select with ``FOR UPDATE
    SKIP LOCKED`` and a ``LIMIT``), picked once.

    On PostgreSQL the picked ids are gathered into one array (an InitPlan, run once) and the rows
    found by their primary key: written as ``id IN (due)`` or a join, stale statistics (a freshly
    filled outbox) made the planner take a nested loop that sorted and locked the whole queue
    again, or scanned every picked id, for every row of the table (minutes for 66,000 touches)."""
    if s.get_bind().dialect.name == "postgresql":
        picked = select(func.array_agg(due.subquery("due").c.id)).scalar_subquery()
        return update(table).where(table.c.id == any_(cast(picked, postgresql.ARRAY(Integer))))
    return update(table).where(table.c.id.in_(due.scalar_subquery()))
