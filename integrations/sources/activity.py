"""Usage and support tickets in: from CSV or JSON Lines files, and the one landing function per
kind that every source (files now, SQL sources and connectors later) writes through.

**Usage** (``retain usage import``), one of two shapes per row:

* a daily value: ``account_external_id, metric, day, value`` (``day`` is ``YYYY-MM-DD``); a file
  names each account, metric and day once;
* a raw event: ``account_external_id, metric, timestamp[, value]`` (``value`` defaults to 1);
  raw events are summed per account, metric and UTC day.

What lands replaces the stored value of that account, metric and day, so importing a file again
changes nothing, and a corrected export corrects the days it covers (and only those).

**Tickets** (``retain tickets import``): ``external_id, account_external_id, opened_at`` and
optionally ``subject, status`` (open, pending, solved; default solved when ``closed_at`` is given,
else open), ``priority`` (low, normal, high, urgent), ``closed_at``, ``satisfaction`` (1 to 5).
Upserted by ``external_id``: a blank cell never overwrites what is stored.

Both are all or nothing: every row is checked first (cells, unknown accounts) and one bad row
means nothing is written; the error lists every bad row by its line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import CHUNK, chunks, update_in_batches, write_all_or_nothing
from integrations.sources._csv import CsvFile, flag_duplicates, parse_date, parse_timestamp, quote_cell, settle_problems
from integrations.sources._csv import validate_rows as _validate_rows
from integrations.sources._records import read_records
from models import Account, DataImportError, RowProblem, SupportTicket, UsageMetric, table_of

__all__ = [
    "LandResult",
    "TicketRecord",
    "UsageDay",
    "account_ids",
    "import_tickets",
    "import_usage",
    "land_tickets",
    "land_usage",
    "ticket_records",
    "usage_days",
]

logger = logging.getLogger(__name__)

_ACCOUNT: Table = table_of(Account)
_USAGE: Table = table_of(UsageMetric)
_TICKET: Table = table_of(SupportTicket)


@dataclass(frozen=True)
class LandResult:
    """What an import wrote (or, with ``dry_run``, would write)."""

    file: str
    kind: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    notes: tuple[str, ...] = ()
    dry_run: bool = False

    def line(self) -> str:
        verb = "would be" if self.dry_run else "were"
        return f"{self.file}: {self.kind}: {self.inserted} new, {self.updated} changed, {self.unchanged} unchanged" + (
            f" (nothing written: {verb} written without --dry-run)" if self.dry_run else ""
        )


def account_ids(conn: Connection, source: str, wanted: Sequence[tuple[int, str]], column: str) -> dict[str, int]:
    """The ids of the accounts ``wanted`` names as (line, external id); an unknown one is a
    problem on each line that names it, raised as :class:`DataImportError` (nothing written)."""
    found: dict[str, int] = {}
    for chunk in chunks(sorted({key for _, key in wanted}), CHUNK):
        query = select(_ACCOUNT.c.external_id, _ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk))
        found.update((key, account_id) for key, account_id in conn.execute(query))
    problems = [
        RowProblem(line, f"unknown account {quote_cell(key)}: import it first (retain accounts import)", column)
        for line, key in wanted
        if key not in found
    ]
    if problems:
        raise DataImportError(source, problems)
    return found


# --------------------------------------------------------------------------------------------
# usage

_ROW = ConfigDict(extra="forbid", frozen=True)


def _value(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{quote_cell(value)} is not a number") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"{quote_cell(value)} is not a number of 0 or more")
    return number


def _text(limit: int) -> Any:
    def parse(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; at most {limit} fit")
        return value

    return BeforeValidator(parse)


class _UsageRow(BaseModel):
    model_config = _ROW

    account_external_id: Annotated[str, _text(200)]
    metric: Annotated[str, _text(60)]
    day: Annotated[date | None, BeforeValidator(parse_date)] = None
    timestamp: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    value: Annotated[float | None, BeforeValidator(_value)] = None

    @model_validator(mode="after")
    def _one_moment(self) -> _UsageRow:
        if (self.day is None) == (self.timestamp is None):
            raise ValueError("give either 'day' (a daily value) or 'timestamp' (one raw event), not both or neither")
        if self.day is not None and self.value is None:
            raise ValueError("a daily value needs 'value'")
        return self


@dataclass(frozen=True)
class UsageDay:
    """One account's value of one metric on one day, as a source gives it (``line``: where, for errors)."""

    line: int
    account_external_id: str
    metric: str
    day: date
    value: float


def land_usage(conn: Connection, source: str, days: Sequence[UsageDay], *, write: bool = True) -> LandResult:
    """Store daily usage values, replacing what is stored for the same account, metric and day."""
    ids = account_ids(conn, source, [(d.line, d.account_external_id) for d in days], "account_external_id")
    wanted = {(ids[d.account_external_id], d.metric, d.day): d.value for d in days}
    stored: dict[tuple[int, str, date], tuple[int, float]] = {}
    # only the days landing now are read (their accounts, between their first and last day), never
    # an account's whole history: a sync's small batch costs what it carries, not what is stored
    first, last = min((d for _, _, d in wanted), default=None), max((d for _, _, d in wanted), default=None)
    for chunk in chunks(sorted({a for a, _, _ in wanted}), CHUNK):
        query = select(_USAGE.c.id, _USAGE.c.account_id, _USAGE.c.metric, _USAGE.c.day, _USAGE.c.value).where(
            _USAGE.c.account_id.in_(chunk), _USAGE.c.day >= first, _USAGE.c.day <= last
        )
        for row_id, account_id, metric, day, value in conn.execute(query):
            stored[(account_id, metric, day)] = (row_id, value)
    inserts, updates, unchanged = [], [], 0
    for (account_id, metric, day), value in wanted.items():
        old = stored.get((account_id, metric, day))
        if old is None:
            inserts.append({"account_id": account_id, "metric": metric, "day": day, "value": value})
        elif old[1] != value:
            updates.append((old[0], {"value": value}))
        else:
            unchanged += 1
    if write:
        _write_changes(conn, _USAGE, inserts, updates)
    return LandResult(source, "usage", len(inserts), len(updates), unchanged, dry_run=not write)


def _write_changes(conn: Connection, table: Table, inserts: list[dict[str, Any]], updates: list[Any]) -> None:
    """New rows in one statement, changed ones in batches."""
    if inserts:
        conn.execute(insert(table), inserts)
    if updates:
        update_in_batches(conn, table, updates, None)


def import_usage(engine: Engine, path: str | Path, *, dry_run: bool = False) -> LandResult:
    """Import a usage file (CSV or JSON Lines; see the module's documentation), all or nothing."""
    records = read_records(path, "usage", ["account_external_id", "metric"])
    days = usage_days(records)
    result = LandResult(records.name, "usage")

    def work(conn: Connection) -> None:
        nonlocal result
        result = land_usage(conn, records.name, days, write=not dry_run)

    write_all_or_nothing(engine, records.name, work)
    logger.info("%s", result.line())
    return result


def usage_days(records: CsvFile) -> list[UsageDay]:
    """The daily values of usage records (raw events summed per UTC day); every bad record a
    problem, raised at once as :class:`DataImportError`."""
    rows = _validate_rows(records, _UsageRow)
    flag_duplicates(
        records,
        lambda r: (
            (r.cells.get("account_external_id"), r.cells.get("metric"), r.cells.get("day"))
            if "day" in r.cells
            else None
        ),
        "day",
        lambda k: f"account {k[0]!r}, metric {k[1]!r} on {k[2]}",
    )
    daily: dict[tuple[str, str, date], UsageDay] = {}
    raw: dict[tuple[str, str, date], UsageDay] = {}
    for record, row in rows:
        if row.day is not None:
            key = (row.account_external_id, row.metric, row.day)
            daily.setdefault(key, UsageDay(record.line, *key, row.value or 0.0))
            continue
        assert row.timestamp is not None
        key = (row.account_external_id, row.metric, row.timestamp.astimezone(UTC).date())
        before = raw.get(key)
        amount = 1.0 if row.value is None else row.value
        raw[key] = UsageDay(before.line if before else record.line, *key, (before.value if before else 0.0) + amount)
    for key in daily.keys() & raw.keys():
        records.problems.append(
            RowProblem(raw[key].line, f"{key[2]} of {key[1]!r} has a daily value on row {daily[key].line} too")
        )
    settle_problems(records, skip_invalid=False)
    return [*daily.values(), *raw.values()]


# --------------------------------------------------------------------------------------------
# tickets

TICKET_STATUSES = ("open", "pending", "solved")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")


def _choice(allowed: tuple[str, ...], what: str) -> Any:
    def parse(value: str) -> str:
        if value.lower() not in allowed:
            raise ValueError(f"{quote_cell(value)} is not a {what}: use one of {', '.join(allowed)}")
        return value.lower()

    return BeforeValidator(parse)


def _satisfaction(value: str) -> int:
    if value not in ("1", "2", "3", "4", "5"):
        raise ValueError(f"{quote_cell(value)} is not a satisfaction rating: use a whole number from 1 to 5")
    return int(value)


class _TicketRow(BaseModel):
    model_config = _ROW

    external_id: Annotated[str, _text(200)]
    account_external_id: Annotated[str, _text(200)]
    opened_at: Annotated[datetime, BeforeValidator(parse_timestamp)]
    subject: Annotated[str | None, _text(500)] = None
    status: Annotated[Literal["open", "pending", "solved"] | None, _choice(TICKET_STATUSES, "ticket status")] = None
    priority: Annotated[str | None, _choice(TICKET_PRIORITIES, "priority")] = None
    closed_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    satisfaction: Annotated[int | None, BeforeValidator(_satisfaction)] = None

    @model_validator(mode="after")
    def _closed_after_opened(self) -> _TicketRow:
        if self.closed_at is not None and self.closed_at < self.opened_at:
            raise ValueError("closed_at is before opened_at")
        return self


@dataclass(frozen=True)
class TicketRecord:
    """One ticket as a source gives it: ``values`` holds only what the source says (``line``: where)."""

    line: int
    external_id: str
    account_external_id: str
    values: dict[str, Any]


def land_tickets(conn: Connection, source: str, tickets: Sequence[TicketRecord], *, write: bool = True) -> LandResult:
    """Upsert tickets by their external id; what a record does not say is left as stored."""
    ids = account_ids(conn, source, [(t.line, t.account_external_id) for t in tickets], "account_external_id")
    stored: dict[str, dict[str, Any]] = {}
    for chunk in chunks(sorted({t.external_id for t in tickets}), CHUNK):
        for found in conn.execute(select(_TICKET).where(_TICKET.c.external_id.in_(chunk))).mappings():
            stored[found["external_id"]] = dict(found)
    inserts: list[dict[str, Any]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    unchanged = 0
    for ticket in tickets:
        values = {"account_id": ids[ticket.account_external_id], **ticket.values}
        old = stored.get(ticket.external_id)
        if old is None:
            status = values.get("status") or ("solved" if values.get("closed_at") else "open")
            inserts.append(
                {"subject": "(no subject)", "priority": "normal", "closed_at": None, "satisfaction": None,
                 **values, "status": status, "external_id": ticket.external_id}
            )  # fmt: skip
            continue
        changes = {c: v for c, v in values.items() if old[c] != v}
        if changes:
            updates.append((old["id"], changes))
        else:
            unchanged += 1
    if write:
        _write_changes(conn, _TICKET, inserts, updates)
    return LandResult(source, "tickets", len(inserts), len(updates), unchanged, dry_run=not write)


def import_tickets(engine: Engine, path: str | Path, *, dry_run: bool = False) -> LandResult:
    """Import a tickets file (CSV or JSON Lines; see the module's documentation), all or nothing."""
    records = read_records(path, "tickets", ["external_id", "account_external_id", "opened_at"])
    tickets = ticket_records(records)
    result = LandResult(records.name, "tickets")

    def work(conn: Connection) -> None:
        nonlocal result
        result = land_tickets(conn, records.name, tickets, write=not dry_run)

    write_all_or_nothing(engine, records.name, work)
    logger.info("%s", result.line())
    return result


def ticket_records(records: CsvFile) -> list[TicketRecord]:
    """The tickets of ``records``; every bad record a problem, raised at once as :class:`DataImportError`."""
    rows = _validate_rows(records, _TicketRow)
    flag_duplicates(records, lambda r: r.cells.get("external_id"), "external_id", lambda k: f"ticket {k!r}")
    problems = settle_problems(records, skip_invalid=False)
    assert not problems
    return [
        TicketRecord(
            record.line,
            row.external_id,
            row.account_external_id,
            row.model_dump(include=row.model_fields_set - {"external_id", "account_external_id"}),
        )
        for record, row in rows
    ]
