"""Where each source's sync stands, and what each run did: the ``sync_cursor`` and ``sync_run``
tables, written by every source that syncs (SQL sources, vendor connectors, a mailbox) and read by
``retain sync status``.

A source writes through four calls:

* :func:`start_run` when a run begins (its own short transaction, so the run shows at once);
* :func:`commit_batch` *inside the transaction that writes a batch*: the cursor moves and the
  run's ``rows_in`` grows only if the batch's rows are written too;
* :func:`finish_run` when the run ends: ``ok``, ``refused`` (bad rows: nothing of that batch was
  written, and the cursor stayed before it) or ``failed`` (an error, e.g. the source unreachable);
* :func:`read_cursor` to know where to go on from.

Cursors are kept as text with their type (``int``, ``float``, ``decimal``, ``datetime``, ``date``,
``text``), so a run binds the same kind of value the source's cursor column holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from models import ConfigError, SyncCursor, SyncRun, table_of

__all__ = [
    "MAX_STORED_PROBLEMS",
    "SourceStatus",
    "commit_batch",
    "decode_cursor",
    "encode_cursor",
    "finish_run",
    "forget_cursor",
    "read_cursor",
    "start_run",
    "sync_status",
]

_CURSOR: Table = table_of(SyncCursor)
_RUN: Table = table_of(SyncRun)

#: the refused rows' problems kept with a run (the first ones; the count says how many rows)
MAX_STORED_PROBLEMS = 100


def encode_cursor(value: Any) -> tuple[str | None, str]:
    """A cursor value as (text, type) for ``sync_cursor``; None stays None (from the start)."""
    if value is None:
        return None, "text"
    if isinstance(value, bool):
        return str(int(value)), "int"
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, float):
        return repr(value), "float"
    if isinstance(value, Decimal):
        return format(value, "f"), "decimal"
    if isinstance(value, datetime):
        # naive moments are kept naive: the warehouse compares them as it stores them
        return value.isoformat(), "datetime"
    if isinstance(value, date):
        return value.isoformat(), "date"
    return str(value), "text"


def decode_cursor(text: str | None, kind: str) -> Any:
    """The value :func:`encode_cursor` kept."""
    if text is None:
        return None
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "decimal":
        return Decimal(text)
    if kind == "datetime":
        return datetime.fromisoformat(text)
    if kind == "date":
        return date.fromisoformat(text)
    return text


def read_cursor(conn: Connection, source: str) -> Any:
    """The cursor of ``source``'s last committed batch, or None (never synced, or reset)."""
    row = conn.execute(select(_CURSOR.c.cursor, _CURSOR.c.cursor_type).where(_CURSOR.c.source == source)).first()
    return None if row is None else decode_cursor(row.cursor, row.cursor_type)


def forget_cursor(engine: Engine, source: str) -> None:
    """``source``'s next run reads from the start (its runs are kept)."""
    with engine.begin() as conn:
        conn.execute(delete(_CURSOR).where(_CURSOR.c.source == source))


def start_run(engine: Engine, source: str, kind: str, *, now: datetime) -> int:
    """A new ``running`` run of ``source``, committed at once; its id."""
    with engine.begin() as conn:
        before = conn.execute(select(_CURSOR.c.cursor).where(_CURSOR.c.source == source)).scalar_one_or_none()
        result = conn.execute(
            insert(_RUN).values(
                source=source, kind=kind, started_at=now, status="running", cursor_before=before,
                cursor_after=before, rows_in=0, rows_refused=0, problems=[],
            )
        )  # fmt: skip
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])


def commit_batch(
    conn: Connection, run_id: int, source: str, kind: str, cursor: Any, rows: int, *, now: datetime
) -> None:
    """In the batch's own transaction: ``source``'s cursor moves to ``cursor`` and the run counts
    ``rows`` more. Nothing moves unless the batch is written too."""
    text, cursor_type = encode_cursor(cursor)
    values = {"kind": kind, "cursor": text, "cursor_type": cursor_type, "updated_at": now}
    moved = conn.execute(update(_CURSOR).where(_CURSOR.c.source == source).values(**values)).rowcount
    if not moved:
        conn.execute(insert(_CURSOR).values(source=source, **values))
    conn.execute(update(_RUN).where(_RUN.c.id == run_id).values(rows_in=_RUN.c.rows_in + rows, cursor_after=text))


def finish_run(
    engine: Engine,
    run_id: int,
    status: str,
    *,
    now: datetime,
    refused: int = 0,
    message: str | None = None,
    problems: Sequence[str] = (),
) -> None:
    """End a run: ``ok``, ``refused`` (``refused`` rows, their ``problems`` as located lines) or
    ``failed`` (``message`` says why)."""
    if status not in ("ok", "refused", "failed"):
        raise ConfigError(f"a sync run ends ok, refused or failed, not {status!r}")
    with engine.begin() as conn:
        conn.execute(
            update(_RUN)
            .where(_RUN.c.id == run_id)
            .values(
                status=status, finished_at=now, rows_refused=refused, message=message,
                problems=list(problems)[:MAX_STORED_PROBLEMS],
            )
        )  # fmt: skip


@dataclass(frozen=True)
class SourceStatus:
    """One source as ``retain sync status`` shows it: its cursor and its latest run."""

    source: str
    kind: str
    cursor: str | None
    status: str | None = None  # of the latest run; None: never run
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows_in: int = 0
    rows_refused: int = 0
    message: str | None = None
    problems: tuple[str, ...] = ()
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "cursor": self.cursor,
            "last_run": self.status,
            "started_at": self.started_at.astimezone(UTC).isoformat() if self.started_at else None,
            "finished_at": self.finished_at.astimezone(UTC).isoformat() if self.finished_at else None,
            "rows_in": self.rows_in,
            "rows_refused": self.rows_refused,
            "message": self.message,
            "problems": list(self.problems),
            "runs": self.runs,
        }


def sync_status(conn: Connection, declared: Sequence[tuple[str, str]] = ()) -> list[SourceStatus]:
    """Every source that has a cursor or a run, and every ``declared`` (name, kind) even if it never
    ran, by name: its cursor and its latest run."""
    cursors = {row.source: row for row in conn.execute(select(_CURSOR))}
    counts: dict[str, int] = dict(conn.execute(select(_RUN.c.source, func.count()).group_by(_RUN.c.source)).all())
    latest_ids = select(func.max(_RUN.c.id)).group_by(_RUN.c.source)
    latest = {row.source: row for row in conn.execute(select(_RUN).where(_RUN.c.id.in_(latest_ids)))}
    kinds = dict(declared)
    names = sorted(set(cursors) | set(latest) | set(kinds))
    statuses: list[SourceStatus] = []
    for name in names:
        cursor, run = cursors.get(name), latest.get(name)
        kind = kinds.get(name) or (run.kind if run is not None else cursor.kind if cursor is not None else "")
        if run is None:
            statuses.append(SourceStatus(name, kind, cursor.cursor if cursor is not None else None))
            continue
        statuses.append(
            SourceStatus(
                name, kind, cursor.cursor if cursor is not None else None, run.status, run.started_at,
                run.finished_at, run.rows_in, run.rows_refused, run.message, tuple(run.problems or ()),
                int(counts.get(name, 0)),
            )
        )  # fmt: skip
    return statuses
