"""One run of SQL sources: read the changed rows in batches, land each batch through the import's
own function in one transaction with the cursor, and keep the accounts' state current.

**Batches are all or nothing.** A batch is written whole, with the source's cursor moved to its
last row, in one transaction; a batch with a bad row (or an unknown account) is written not at
all, the cursor stays where the last good batch left it, and the run stops there, recorded as
``refused`` with every bad row (by its number in the run and its cursor value). The rows after
it are not read: the cursor cannot move past a refused row, so the next run reads the refused
batch again, once the data is fixed in the source. A failure (the source unreachable, a query
error) stops the run as ``failed``; the batches committed before it stay, and the next run goes on
from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flows.analytics.state import derive_account_state
from integrations.channels.secrets import redact, resolve_secret
from integrations.sources import (
    BillingColumns,
    commit_batch,
    event_records,
    finish_run,
    land_accounts,
    land_contacts,
    land_events,
    land_revenue,
    land_tickets,
    land_usage,
    read_cursor,
    revenue_of,
    start_run,
    ticket_records,
    usage_days,
)
from integrations.sources.sql import Batch, SqlReader, batch_records, refused_lines, source_url
from models import DataImportError, RetainError
from models.sources import SqlSource

__all__ = ["SyncResult", "sync_source"]

logger = logging.getLogger(__name__)


@dataclass
class SyncResult:
    """What one source's run did."""

    source: str
    kind: str
    status: str = "ok"  # ok | refused | failed
    rows_in: int = 0  # rows of committed batches
    batches: int = 0
    rows_refused: int = 0
    cursor: str | None = None  # where the next run goes on from
    message: str | None = None
    problems: list[str] = field(default_factory=list)
    state: str | None = None  # revenue: what the accounts' derived state became

    def line(self) -> str:
        text = f"{self.source} ({self.kind}): {self.rows_in} rows in, {self.batches} batches"
        if self.status == "refused":
            text += f"; stopped: {self.rows_refused} rows refused, so that batch was not written"
        elif self.status == "failed":
            text += f"; failed: {self.message}"
        return text + f"; cursor {self.cursor if self.cursor is not None else '(none: from the start)'}"


def _revenue_columns(headers: dict[str, str]) -> BillingColumns:
    def given(column: str) -> str | None:
        return column if column in headers else None

    period = given("service_start") and given("service_end")
    return BillingColumns(
        service_start="service_start" if period else None,
        service_end="service_end" if period else None,
        product=given("product"),
        plan=given("plan"),
        currency=given("currency"),
        invoice=given("invoice"),
        credits=given("credits") if given("invoice") else None,
    )


def _land(
    conn: Connection,
    name: str,
    source: SqlSource,
    keys: list[str],
    batch: Batch,
    *,
    now: datetime,
    activation: str | None,
    declared: Mapping[str, Sequence[tuple[str, str]]] | None,
) -> None:
    """Write one batch through the kind's import function, in ``conn``'s transaction."""
    records = batch_records(name, source, keys, batch.history or batch.rows, batch.first)
    label = f"sync {name}"
    if source.kind == "accounts":
        land_accounts(conn, records, now=now, label=label, declared=declared)
    elif source.kind == "contacts":
        land_contacts(conn, records, now=now, label=label)
    elif source.kind == "usage":
        land_usage(conn, records.name, usage_days(records))
    elif source.kind == "tickets":
        land_tickets(conn, records.name, ticket_records(records))
    elif source.kind == "events":
        land_events(conn, records.name, event_records(records), now=now, activation=activation)
    else:
        revenue = revenue_of(records, _revenue_columns(records.headers))
        land_revenue(conn, revenue, now=now, label=label, create_accounts=source.create_accounts)


def _cursors(reader: SqlReader, batch: Batch) -> dict[int, Any]:
    """Each row's cursor value by its number (the rows the batch's records were made of)."""
    rows = batch.history or batch.rows
    column = next((k for k in reader.keys if k.lower() == reader.spec.cursor.lower()), reader.spec.cursor)
    return {batch.first + i: row.get(column) for i, row in enumerate(rows)}


def sync_source(
    engine: Engine,
    name: str,
    source: SqlSource,
    *,
    now: datetime,
    activation: str | None = None,
    lookup: Callable[[str], str] = resolve_secret,
    declared: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> SyncResult:
    """Run one SQL source from its stored cursor (see the module's documentation). Never raises
    for what the source or its rows do: the result (and ``sync_run``) says what happened."""
    result = SyncResult(name, source.kind)
    run = start_run(engine, name, source.kind, now=now)
    reader: SqlReader | None = None
    try:
        reader = SqlReader(name, source, source_url(name, source, lookup))
        with engine.connect() as conn:
            last = read_cursor(conn, name)
        result.cursor = None if last is None else str(last)
        for batch in reader.batches(last):
            try:
                with engine.begin() as conn:
                    _land(conn, name, source, reader.keys, batch, now=now, activation=activation, declared=declared)
                    commit_batch(conn, run, name, source.kind, batch.cursor, len(batch.rows), now=now)
            except DataImportError as exc:
                result.status, result.rows_refused = "refused", len({p.row for p in exc.problems})
                result.problems = refused_lines(name, source, exc.problems, _cursors(reader, batch))
                result.message = f"{result.rows_refused} rows refused; nothing of that batch was written"
                break
            result.rows_in += len(batch.rows)
            result.batches += 1
            result.cursor = str(batch.cursor)
        if source.kind == "revenue" and result.rows_in:
            with engine.begin() as conn:
                result.state = derive_account_state(conn, now, now=now).line()
    except (RetainError, SQLAlchemyError) as exc:
        result.status, result.message = "failed", redact(str(exc))
    except BaseException as exc:  # Ctrl-C, a cancelled flow run, a bug: the run never stays "running"
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
        finish_run(engine, run, "failed", now=now, message=redact(why))
        raise
    finally:
        if reader is not None:
            reader.close()
    finish_run(
        engine, run, result.status, now=now, refused=result.rows_refused, message=result.message,
        problems=result.problems,
    )  # fmt: skip
    logger.info("%s", result.line())
    return result
