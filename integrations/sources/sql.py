"""SQL sources: a team's own query against any SQLAlchemy URL, read incrementally by its cursor
column, in batches, and landed through the same functions as the file imports.

How a run reads (``sources.yaml`` declares the source; see :mod:`models.sources`):

* The query is wrapped, never edited: ``SELECT * FROM (<query>) retain_source WHERE <cursor> IS
  NOT NULL AND <cursor> > :last ORDER BY <cursor>``, so the warehouse does the filtering and only
  rows changed since the last committed batch are read (the first run reads every row with a
  cursor value; a row without one is never read).
* The result is streamed (a server-side cursor on PostgreSQL, ``yield_per``): at most one batch of
  rows is held at a time, whatever the table's size.
* A batch is ``batch_size`` rows, extended to the end of its last cursor value, so rows sharing a
  cursor value are never split between two batches (the stored cursor can then skip none of them).
* Each row becomes a record of the kind's import columns (``columns:`` renames the query's
  columns; names match without regard to case); values are given as text, exactly as a file's
  cells, so a row is checked by the same rules and refused with the same messages. Rows are
  numbered from 1 in each run.

Revenue is special: a month's MRR is every invoice of the account in that month, so a batch names
the *customers* whose rows changed and their whole billing history is read again (in chunks) and
replaces theirs, by the revenue import's replacement rule.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from integrations.channels.secrets import redact, resolve_secret
from integrations.sources._batches import CHUNK, chunks
from integrations.sources._csv import CsvFile, CsvRecord, column_key
from models import ConfigError, IntegrationError, RowProblem
from models.sources import REQUIRED_COLUMNS, SOURCE_COLUMNS, SqlSource

__all__ = ["Batch", "SqlReader", "batch_records", "source_url"]

#: PostgreSQL URLs without a driver use psycopg 3, the one Retain installs
_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}


def source_url(name: str, spec: SqlSource, lookup: Callable[[str], str] = resolve_secret) -> str:
    """The source's database URL, from the file (no password there), the environment or a secret."""
    if isinstance(spec.url, str):
        return spec.url
    if spec.url.env is not None:
        value = os.environ.get(spec.url.env, "").strip()
        if not value:
            raise ConfigError(f"source {name!r}: ${spec.url.env} is not set; it holds the source's database URL")
        return value
    assert spec.url.secret is not None
    return lookup(spec.url.secret)


def _engine(name: str, url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"source {name!r}: its URL is not a SQLAlchemy URL") from None
    parsed = parsed.set(drivername=_DRIVERS.get(parsed.drivername, parsed.drivername))
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"source {name!r}: no database driver for {parsed.drivername!r} is installed here ({exc}); "
            "install the SQLAlchemy dialect for it"
        ) from None


def _cell(value: Any) -> str | None:
    """A database value as a file's cell would give it."""
    kind = type(value)
    if kind is str:
        return value.strip() or None
    if kind is int:
        return str(value)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", errors="replace").strip() or None
    return str(value).strip() or None


@dataclass
class Batch:
    """Rows read together and written together: all or nothing, then the cursor moves to ``cursor``."""

    rows: list[dict[str, Any]]  # the query's columns -> values
    first: int  # the first row's number in this run (1-based)
    cursor: Any  # the batch's last cursor value: where the next run goes on from
    #: revenue: every billing row of the batch's customers (their whole history)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Layout:
    """Which query column holds which import column (by the names the query gives)."""

    cursor: str
    columns: dict[str, str]  # import column -> query column as the result names it
    custom: list[str]  # accounts: the other query columns, kept as custom fields


def _layout(name: str, spec: SqlSource, keys: Sequence[str]) -> _Layout:
    by_key = {column_key(k): k for k in keys}
    cursor = by_key.get(column_key(spec.cursor))
    if cursor is None:
        raise ConfigError(f"source {name!r}: the query gives no cursor column {spec.cursor!r}; it gives {list(keys)}")
    columns = {
        column: by_key[column_key(spec.query_column(column))]
        for column in SOURCE_COLUMNS[spec.kind]
        if column_key(spec.query_column(column)) in by_key
    }
    missing = [c for c in REQUIRED_COLUMNS[spec.kind] if c not in columns]
    if missing:
        raise ConfigError(
            f"source {name!r}: the query gives no column for {', '.join(map(repr, missing))} "
            f"(name it so in the query, or map it: columns: {{{missing[0]}: <query column>}}); it gives {list(keys)}"
        )
    used = set(columns.values()) | {cursor}
    custom = [k for k in keys if k not in used] if spec.kind == "accounts" else []
    return _Layout(cursor, columns, custom)


def batch_records(
    name: str, spec: SqlSource, keys: Sequence[str], rows: Sequence[dict[str, Any]], first: int
) -> CsvFile:
    """Rows as the records of an import (numbered from ``first``), named ``source '<name>'``."""
    layout = _layout(name, spec, keys)
    headers = {column: written for column, written in layout.columns.items()}
    headers.update({column_key(c): c for c in layout.custom})
    records: list[CsvRecord] = []
    for number, row in enumerate(rows, start=first):
        cells = {column: _cell(row[written]) for column, written in layout.columns.items()}
        cells.update({column_key(c): _cell(row[c]) for c in layout.custom})
        records.append(CsvRecord(number, {k: v for k, v in cells.items() if v is not None}))
    return CsvFile(f"source {name!r}", headers, records)


class SqlReader:
    """Reads one SQL source: ``batches(last)`` streams the rows changed after cursor ``last``."""

    def __init__(self, name: str, spec: SqlSource, url: str) -> None:
        self.name = name
        self.spec = spec
        self.engine = _engine(name, url)
        self.keys: list[str] = []

    def close(self) -> None:
        self.engine.dispose()

    def _failed(self, exc: SQLAlchemyError) -> IntegrationError:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        return IntegrationError(f"source {self.name!r}: the query failed: {redact(str(reason).strip())}")

    def _statement(self, conn: Connection, last: Any) -> Any:
        quote = conn.dialect.identifier_preparer.quote
        cursor = quote(self.spec.cursor)
        # a row without a cursor value cannot be placed after the stored cursor: it is never read
        where = f" WHERE retain_source.{cursor} IS NOT NULL"
        where += "" if last is None else f" AND retain_source.{cursor} > :retain_last"
        sql = f"SELECT * FROM ({self.spec.query}) retain_source{where} ORDER BY retain_source.{cursor}"
        return text(sql)

    def batches(self, last: Any) -> Iterator[Batch]:
        """The changed rows in batches, oldest cursor first (see the module's documentation)."""
        size = self.spec.batch_size
        try:
            with self.engine.connect() as conn:
                streaming = conn.execution_options(stream_results=True, yield_per=size)
                params = {} if last is None else {"retain_last": last}
                result = streaming.execute(self._statement(conn, last), params).mappings()
                self.keys = list(result.keys())
                cursor = _layout(self.name, self.spec, self.keys).cursor
                yield from self._cut(result, cursor, size)
        except SQLAlchemyError as exc:
            raise self._failed(exc) from None

    def _cut(self, result: Any, cursor: str, size: int) -> Iterator[Batch]:
        rows: list[dict[str, Any]] = []
        number = 1
        for mapping in result:
            row = dict(mapping)
            if len(rows) >= size and row[cursor] != rows[-1][cursor]:
                yield self._batch(rows, number, cursor)
                number += len(rows)
                rows = []
            rows.append(row)
        if rows:
            yield self._batch(rows, number, cursor)

    def _batch(self, rows: list[dict[str, Any]], first: int, cursor: str) -> Batch:
        batch = Batch(rows, first, rows[-1][cursor])
        if self.spec.kind == "revenue":
            batch.history = self._history(rows)
        return batch

    def _history(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every billing row of the customers ``rows`` name (their whole history, in chunks)."""
        layout = _layout(self.name, self.spec, self.keys)
        customer = layout.columns["customer"]
        customers = sorted({row[customer] for row in rows if row[customer] is not None}, key=str)
        history: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            quote = conn.dialect.identifier_preparer.quote
            sql = text(
                f"SELECT * FROM ({self.spec.query}) retain_source WHERE retain_source.{quote(customer)} IN :customers "
                f"ORDER BY retain_source.{quote(layout.cursor)}"
            ).bindparams(bindparam("customers", expanding=True))
            for chunk in chunks(customers, CHUNK):
                history.extend(dict(m) for m in conn.execute(sql, {"customers": chunk}).mappings())
        return history


def refused_lines(name: str, spec: SqlSource, problems: Sequence[RowProblem], rows: dict[int, Any]) -> list[str]:
    """A refused batch's problems as lines a person can find the rows by: the row's number in the
    run and its cursor value."""
    lines: list[str] = []
    for problem in problems:
        at = f" ({spec.cursor} {_cell(rows[problem.row])})" if problem.row in rows else ""
        column = f", column {problem.column!r}" if problem.column else ""
        lines.append(f"{name}: row {problem.row}{at}{column}: {problem.message}")
    return lines
