"""SQL that enroll and advance share."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

__all__ = ["insert_ignore"]


def insert_ignore(s: Session, table: Any) -> Any:
    """INSERT that skips rows hitting a unique key (two workers enrolling the same account, a
    touch written again by a re-run)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)
