"""The one CSV reader every import shares: one set of rules for every file Retain reads.

* UTF-8, with or without a byte-order mark; anything else is refused with the line of the first
  bad byte. The delimiter is the comma, or ``;`` or a tab when the header uses those instead.
* Header names are matched without regard to case, surrounding spaces or punctuation
  (``External ID``, ``external_id`` and ``EXTERNAL-ID`` are one column). Blank lines are skipped.
* Row numbers are physical lines of the file, the header being row 1 (a quoted value that spans
  several lines belongs to the row it starts on).
* Problems are collected, never raised one at a time: :func:`settle_problems` raises
  :class:`models.DataImportError` with every bad row at once (or returns them to be skipped).
* Limits (also of JSON Lines files): a file of more than :data:`MAX_IMPORT_BYTES` is refused before
  it is read, one of more than :data:`MAX_IMPORT_ROWS` rows as soon as the row past the limit is
  met, and a row longer than :data:`MAX_ROW_CHARS` is a problem of that row (its text is dropped).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from models import ConfigError, DataImportError, RowProblem

__all__ = [
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_ROWS",
    "MAX_ROW_CHARS",
    "CsvFile",
    "CsvRecord",
    "column_key",
    "flag_duplicates",
    "parse_date",
    "parse_email",
    "parse_timestamp",
    "quote_cell",
    "read_bounded",
    "read_csv",
    "settle_problems",
    "validate_rows",
]

logger = logging.getLogger(__name__)  # rows read and refused, for the run's log

#: an imported file's size: bigger files are refused before they are read (split them)
MAX_IMPORT_BYTES = 50 * 1024 * 1024
#: rows (or JSON lines) of one file
MAX_IMPORT_ROWS = 500_000
#: characters of one row (all its cells) or JSON line
MAX_ROW_CHARS = 100_000


class _TooManyRows(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def too_many_rows(name: str, line: int) -> DataImportError:
    """The error of a file with more than :data:`MAX_IMPORT_ROWS` rows, at the first row past it."""
    message = f"the file has more than {MAX_IMPORT_ROWS:,} rows (the limit); split it"
    return DataImportError(name, [RowProblem(line, message)])


def long_row(length: int) -> str:
    return f"the row is {length:,} characters long (the limit is {MAX_ROW_CHARS:,})"


def read_bounded(path: str | Path, kind: str) -> bytes:
    """A file's bytes, refused (without reading it) when it is larger than :data:`MAX_IMPORT_BYTES`.
    A file that cannot be read is a :class:`models.ConfigError`."""
    name = str(path)
    try:
        with Path(path).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = b"" if size > MAX_IMPORT_BYTES else f.read(MAX_IMPORT_BYTES + 1)  # +1: a file that grew
    except OSError as exc:
        raise ConfigError(f"cannot read the {kind} file {name}: {exc.strerror or exc}") from exc
    if size > MAX_IMPORT_BYTES or len(data) > MAX_IMPORT_BYTES:
        shown = f"{size / 2**20:,.1f} MB" if size > MAX_IMPORT_BYTES else "larger than that"
        message = f"the file is {shown}; the limit is {MAX_IMPORT_BYTES // 2**20} MB: split it into smaller files"
        raise DataImportError(name, [RowProblem(1, message)])
    return data


# --------------------------------------------------------------------------------------------
# cell values: each parser takes the stripped, non-blank text of a cell and returns the value to
# store, or raises ValueError with a message a person can act on


def quote_cell(value: str) -> str:
    """A cell's text for a message: quoted, and cut short when long."""
    return repr(value if len(value) <= 60 else value[:57] + "...")


def parse_date(value: str) -> date:
    """``YYYY-MM-DD``, or the date as written of an ISO date-time; ``01/31/2027`` is ambiguous, so refused."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).date()  # the date as written, whatever the offset
    except ValueError:
        raise ValueError(f"{quote_cell(value)} is not a date: write YYYY-MM-DD, e.g. 2027-01-31") from None


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 moment, as aware UTC: ``2027-01-31T09:30:00Z``, ``2027-01-31 09:30+01:00``; a
    moment without an offset, or a bare date (its midnight), is read as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{quote_cell(value)} is not a date or time: write ISO 8601, e.g. 2027-01-31 or 2027-01-31T09:30:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_EMAIL_ADDRESS = re.compile(
    r"""(?P<local>[^@\s"(),:;<>\[\]\\]{1,64})@(?P<domain>(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{0,62})"""
)


def parse_email(value: str) -> str:
    """An email address of a sane shape, in lower case."""
    found = _EMAIL_ADDRESS.fullmatch(value)
    if not found or len(value) > 254 or ".." in value or found["local"].startswith(".") or found["local"].endswith("."):
        raise ValueError(f"{quote_cell(value)} is not an email address")
    return value.lower()


# --------------------------------------------------------------------------------------------
# reading the file


def column_key(header: str) -> str:
    """``" External ID "`` -> ``external_id``: case, spaces and punctuation do not matter."""
    return re.sub(r"\W+", "_", header.strip().casefold()).strip("_")


@dataclass
class CsvRecord:
    line: int
    cells: dict[str, str]  # column key -> stripped, non-blank text


@dataclass
class CsvFile:
    name: str  # as the user named it, for messages
    headers: dict[str, str]  # column key -> the header as written
    records: list[CsvRecord]
    problems: list[RowProblem] = field(default_factory=list)

    def header(self, column: str | None) -> str | None:
        return None if column is None else self.headers.get(column, column)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            message = "the file is UTF-16 text; save it as UTF-8 ('CSV UTF-8' in Excel)"
            raise DataImportError(name, [RowProblem(1, message)]) from exc
        line = data.count(b"\n", 0, exc.start) + 1
        message = (
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} on this line); "
            "save it as UTF-8 ('CSV UTF-8' in Excel)"
        )
        raise DataImportError(name, [RowProblem(line, message)]) from exc


def _delimiter(header_line: str) -> str:
    counts = {sep: header_line.count(sep) for sep in (",", ";", "\t")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] > counts[","] else ","


def _physical_rows(text: str, delimiter: str, problems: list[RowProblem]) -> Iterator[tuple[int, list[str]]]:
    """The rows that are not blank, each with the line it starts on; unpaired quotes are problems.
    One at a time: the rows of a big file are never all held at once besides their records."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    read = 0  # good, bad and blank rows alike: each costs memory or time
    while True:
        start = reader.line_num + 1
        read += 1
        if read > MAX_IMPORT_ROWS + 1:  # the header is one of them
            raise _TooManyRows(start)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                limit = csv.field_size_limit()
                message = f"a value on this row is longer than {limit:,} characters (a row may have {MAX_ROW_CHARS:,})"
                problems.append(RowProblem(start, message))
            else:
                problems.append(RowProblem(start, f"the quotes on this row do not pair up ({exc})"))
            if reader.line_num < start:  # the reader did not move on: nothing more can be read
                break
            continue
        length = sum(map(len, cells))
        if length > MAX_ROW_CHARS:
            problems.append(RowProblem(start, long_row(length)))
            continue
        if any(cell.strip() for cell in cells):
            yield start, cells


@dataclass
class _Header:
    line: int
    written: list[str]  # the cells as written
    headers: dict[str, str] = field(default_factory=dict)  # column key -> the header as written
    positions: dict[str, int] = field(default_factory=dict)  # column key -> its position
    unnamed: list[int] = field(default_factory=list)  # positions without a name
    problems: list[RowProblem] = field(default_factory=list)


def _header(line: int, written: list[str], required: Sequence[str]) -> _Header:
    """The header's columns by key; two cells with one key, or a required column missing, are problems."""
    header = _Header(line, written)
    headers, positions = header.headers, header.positions
    for position, cell in enumerate(written):
        key = column_key(cell)
        if not key:
            header.unnamed.append(position)
        elif key in positions:
            header.problems.append(
                RowProblem(
                    line,
                    f"columns {positions[key] + 1} ({headers[key]!r}) and {position + 1} ({cell.strip()!r}) "
                    f"are the same column {key!r}",
                )
            )
        else:
            headers[key], positions[key] = cell.strip(), position
    missing = [column for column in required if column not in headers]
    if missing:
        found = ", ".join(repr(h) for h in headers.values()) or "none"
        header.problems.append(
            RowProblem(
                line,
                f"missing required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)}; the header has {found}",
            )
        )
    return header


def _records(
    header: _Header, rows: Iterable[tuple[int, list[str]]], delimiter: str, problems: list[RowProblem]
) -> list[CsvRecord]:
    """The data rows as records (stripped, non-blank cells by column key); bad rows are problems."""
    records: list[CsvRecord] = []
    unnamed_used: set[int] = set()
    width = len(header.written)
    for line, cells in rows:
        extra = [cell for cell in cells[width:] if cell.strip()]
        if extra:
            problems.append(
                RowProblem(
                    line,
                    f"the row has {len(cells)} values but the header has {width} columns "
                    f"(a value with a {delimiter!r} in it needs double quotes)",
                )
            )
            continue
        if any("\x00" in cell for cell in cells):
            problems.append(RowProblem(line, "the row holds a NUL character; is this really a text file?"))
            continue
        unnamed_used.update(p for p in header.unnamed if p < len(cells) and cells[p].strip())
        values = {key: cells[p].strip() for key, p in header.positions.items() if p < len(cells) and cells[p].strip()}
        records.append(CsvRecord(line, values))
    problems.extend(
        RowProblem(header.line, f"column {p + 1} has values but no name in the header; name it or delete it")
        for p in sorted(unnamed_used)
    )
    return records


def read_csv(path: str | Path, kind: str, required: Sequence[str]) -> CsvFile:
    """Read a CSV file by the rules above. The ``required`` columns must be in the header.

    A file that cannot be read is a :class:`models.ConfigError`; one that is not text, empty, or
    whose header is unusable is a :class:`models.DataImportError`. Bad rows are not raised: they
    are the returned file's ``problems`` (see :func:`settle_problems`)."""
    name = str(path)
    data = read_bounded(path, kind)
    text = _decode(data, name)
    del data  # memory: the text is all that is needed from here
    if not text.strip():
        raise DataImportError(name, [RowProblem(1, f"the file is empty; the header must name {', '.join(required)}")])

    delimiter = _delimiter(next(line for line in io.StringIO(text) if line.strip()))
    problems: list[RowProblem] = []
    rows = _physical_rows(text, delimiter, problems)
    try:
        first = next(rows, None)
        if first is None:
            raise DataImportError(
                name, [*problems, RowProblem(1, f"the file has no header; it must name {', '.join(required)}")]
            )
        header = _header(*first, required)
        if header.problems:
            for _ in rows:  # the other rows' problems are reported with the header's, as they always were
                pass
            raise DataImportError(name, [*problems, *header.problems])
        records = _records(header, rows, delimiter, problems)
    except _TooManyRows as exc:
        raise too_many_rows(name, exc.line) from None
    logger.info("%s: %d rows read, %d columns (delimiter %r)", name, len(records), len(header.headers), delimiter)
    return CsvFile(name, header.headers, records, problems)


# --------------------------------------------------------------------------------------------
# validating rows

_Row = TypeVar("_Row", bound=BaseModel)


def validate_rows(csv_file: CsvFile, model: type[_Row]) -> list[tuple[CsvRecord, _Row]]:
    """Every record that validates, with its row; the others become problems of ``csv_file``."""
    fields = model.model_fields
    good: list[tuple[CsvRecord, _Row]] = []
    for record in csv_file.records:
        given = {column: value for column, value in record.cells.items() if column in fields}
        try:
            good.append((record, model.model_validate(given)))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                column = str(error["loc"][0]) if error["loc"] else None
                if error["type"] == "missing":
                    message = "a value is required"
                elif error["type"] == "value_error":
                    message = str(error["ctx"]["error"])
                else:
                    message = error["msg"]
                csv_file.problems.append(RowProblem(record.line, message, csv_file.header(column)))
    return good


def flag_duplicates(
    csv_file: CsvFile, key: Callable[[CsvRecord], Hashable | None], column: str, describe: Callable[[Any], str]
) -> None:
    """A key seen again is a problem on the later row, naming the row that has it first."""
    first: dict[Hashable, int] = {}
    for record in csv_file.records:
        value = key(record)
        if value is None:
            continue
        if value in first:
            message = f"duplicate: {describe(value)} is already on row {first[value]}"
            csv_file.problems.append(RowProblem(record.line, message, csv_file.header(column)))
        else:
            first[value] = record.line


def settle_problems(csv_file: CsvFile, skip_invalid: bool) -> tuple[RowProblem, ...]:
    """Raise with every problem unless bad rows are to be skipped; return them in file order."""
    order = {header: position for position, header in enumerate(csv_file.headers.values())}
    problems = tuple(sorted(csv_file.problems, key=lambda p: (p.row, order.get(p.column or "", -1))))
    bad_rows = len({p.row for p in problems})
    if problems and not skip_invalid:
        logger.warning("%s: %d rows refused, so nothing is written", csv_file.name, bad_rows)
        raise DataImportError(csv_file.name, list(problems))
    if problems:
        logger.warning("%s: %d rows refused and skipped", csv_file.name, bad_rows)
    return problems
