"""Import accounts and contacts from CSV files exported by a CRM or a billing system.

Two kinds of file, each upserted by its natural key:

* **accounts** (key ``external_id``, the CRM's or billing system's id, compared exactly, case
  included): required columns ``external_id, name``; optional ``plan, arr, currency, status,
  renewal_date, csm_email, csm_name, timezone, country, segment, industry, lifecycle_stage,
  signup_date, seats, health, health_score``. Every other column is a *custom field*: its values
  are kept as text in ``Account.custom`` under the column's normalised name (``Owner Region`` ->
  ``owner_region``), merged key by key with what the account already has.
* **contacts** (key: the account and the email, the email compared in lower case): required
  columns ``account_external_id, email``; optional ``name, role, title, timezone, is_primary,
  unsubscribed``. Other columns are ignored and named in :attr:`ImportResult.ignored_columns`.

How a file is read:

* UTF-8, with or without a byte-order mark; anything else is refused with the line of the first
  bad byte. The delimiter is the comma, or ``;`` or a tab when the header uses those instead.
* Header names are matched without regard to case, surrounding spaces or punctuation
  (``External ID``, ``external_id`` and ``EXTERNAL-ID`` are one column). Blank lines are skipped.
* Row numbers are physical lines of the file, the header being row 1 (a quoted value that spans
  several lines belongs to the row it starts on).

What a value means:

* A **blank cell means "not known here"**: it never overwrites what the database holds; on a new
  row the column takes its default (ARR 0, status ``active``, currency ``USD``). Likewise a column
  the file does not have is never touched (a file without ``arr`` does not zero anyone's ARR).
* ``arr``: digits with ``.`` for decimals; ``,``, spaces or ``'`` only between groups of three
  digits; a currency sign before or after is ignored: ``12000``, ``12,000.50``, ``$12000``,
  ``12 000 €``. ``12,50`` (a decimal comma) is refused rather than guessed. Never negative.
* dates (``renewal_date``, ``signup_date``): ``YYYY-MM-DD``; an ISO date-time such as
  ``2027-01-31T00:00:00Z`` gives its date as written. ``01/31/2027`` is refused: it is ambiguous.
* ``status``: one of :class:`models.AccountStatus`; ``health``: green, yellow or red;
  ``health_score``: 0 to 100; ``seats``: a whole number; ``currency``: a three-letter code.
* ``timezone``: an IANA zone (``Europe/Berlin``), any case; ``country``: ISO 3166 alpha-2 (``DE``).
* emails are checked for a sane shape and stored in lower case.
* ``is_primary``, ``unsubscribed``: true/false, yes/no, y/n, 1/0. An import can unsubscribe a
  contact but never re-subscribes one: opting back in is the contact's act, not a stale export's.

All or nothing: every row is validated before anything is written, and one bad row means nothing
is written; :class:`models.DataImportError` then lists every bad row at once. With
``skip_invalid=True`` the good rows are written and the bad ones returned in
:attr:`ImportResult.problems`. A key that appears twice in one file is a problem on the later
row (the first one stands). A contact whose account is not in the database is a problem.

Each inserted or changed account or contact adds one ``TimelineEvent(kind="import")`` to its
account, saying what changed (written in bulk, with the rows, in the same transaction).
Lookups are set-based: existing rows are read in chunks of :data:`CHUNK` keys, never one query
per row, and inserts and updates are sent as batches.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import zoneinfo
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from models import (
    Account,
    AccountStatus,
    ConfigError,
    Contact,
    DataImportError,
    RetainError,
    RowProblem,
    TimelineEvent,
    table_of,
    utcnow,
)

__all__ = [
    "ACCOUNT_COLUMNS",
    "CHUNK",
    "CONTACT_COLUMNS",
    "ImportResult",
    "import_accounts",
    "import_contacts",
]

#: how many keys one lookup query carries (well under SQLite's and PostgreSQL's parameter limits)
CHUNK = 1000

_ACCOUNT: Table = table_of(Account)
_CONTACT: Table = table_of(Contact)
_TIMELINE: Table = table_of(TimelineEvent)


@dataclass(frozen=True)
class ImportResult:
    """What an import did (or, with ``dry_run``, would do)."""

    file: str
    kind: Literal["accounts", "contacts"]
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    #: the bad rows that were skipped (only with ``skip_invalid``; otherwise they raise)
    problems: tuple[RowProblem, ...] = ()
    #: accounts: the columns stored as custom fields, by their normalised names
    custom_columns: tuple[str, ...] = ()
    #: contacts: the columns the importer does not know, as written in the header
    ignored_columns: tuple[str, ...] = ()
    #: things worth saying that are not errors
    notes: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def skipped(self) -> int:
        """How many rows were left out because they had problems."""
        return len({p.row for p in self.problems})


# --------------------------------------------------------------------------------------------
# values: each parser takes the stripped, non-blank text of a cell and returns the value to
# store, or raises ValueError with a message a person can act on


def _quote(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


def _max_length(table: Table, column: str) -> int:
    length = getattr(table.c[column].type, "length", None)
    assert isinstance(length, int), f"{table.name}.{column} has no length"
    return length


def _text(table: Table, column: str) -> Any:
    limit = _max_length(table, column)

    def parse(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; at most {limit} fit")
        return value

    return BeforeValidator(parse)


_AMOUNT_SIGNS = "$€£¥₹"
_PLAIN_AMOUNT = re.compile(r"\d+(?:\.\d+)?")
_GROUPED_AMOUNT = re.compile(r"\d{1,3}(?P<sep>[, '])\d{3}(?:(?P=sep)\d{3})*(?:\.\d+)?")


def _amount(value: str) -> float:
    digits = value.replace("\u00a0", " ").replace("\u202f", " ").strip(_AMOUNT_SIGNS + " ")
    if digits.startswith(("-", "(")) or digits.endswith(")"):
        raise ValueError(f"{_quote(value)} is negative; ARR cannot be")
    if not (_PLAIN_AMOUNT.fullmatch(digits) or _GROUPED_AMOUNT.fullmatch(digits)):
        raise ValueError(
            f"{_quote(value)} is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50"
        )
    try:
        return float(Decimal(re.sub(r"[, ']", "", digits)))
    except InvalidOperation as exc:  # pragma: no cover - the patterns above admit only digits
        raise ValueError(f"{_quote(value)} is not an amount") from exc


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).date()  # the date as written, whatever the offset
    except ValueError:
        raise ValueError(f"{_quote(value)} is not a date: write YYYY-MM-DD, e.g. 2027-01-31") from None


def _status(value: str) -> str:
    try:
        return AccountStatus(value.lower()).value
    except ValueError:
        allowed = ", ".join(s.value for s in AccountStatus)
        raise ValueError(f"{_quote(value)} is not a status: use one of {allowed}") from None


def _health(value: str) -> str:
    if value.lower() not in ("green", "yellow", "red"):
        raise ValueError(f"{_quote(value)} is not a health: use green, yellow or red")
    return value.lower()


def _health_score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise ValueError(f"{_quote(value)} is not a number from 0 to 100") from None
    if not 0 <= score <= 100:
        raise ValueError(f"{_quote(value)} is not a number from 0 to 100")
    return score


def _whole_number(value: str) -> int:
    digits = value.replace("\u00a0", " ").replace("\u202f", " ")
    if _GROUPED_AMOUNT.fullmatch(digits) or _PLAIN_AMOUNT.fullmatch(digits):
        number = Decimal(re.sub(r"[, ']", "", digits))
        if number == number.to_integral_value():
            return int(number)
    raise ValueError(f"{_quote(value)} is not a whole number of seats")


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError(f"{_quote(value)} is not a three-letter currency code such as USD or EUR")
    return value.upper()


@cache
def _zones() -> dict[str, str]:
    """Every IANA zone this machine knows, by its lower-case name."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}


@cache
def _timezone(value: str) -> str:
    zones = _zones()
    if value.lower() in zones:
        return zones[value.lower()]
    city = value.lower().replace(" ", "_")
    guesses = sorted(name for name in zones.values() if name.lower().rsplit("/", 1)[-1] == city)
    guesses = guesses or difflib.get_close_matches(value, zones.values(), n=1)
    hint = f"; did you mean {guesses[0]!r}?" if guesses else ""
    raise ValueError(f"{_quote(value)} is not an IANA time zone such as 'Europe/Berlin'{hint}")


# ISO 3166-1 alpha-2, as in the tz database's iso3166.tab, plus XK (Kosovo), which CRMs use
_COUNTRY_CODES = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK
"""
_COUNTRIES = frozenset(_COUNTRY_CODES.split())


def _country(value: str) -> str:
    code = value.upper()
    if code in _COUNTRIES:
        return code
    hint = {"UK": " (the United Kingdom is 'GB')", "EL": " (Greece is 'GR')"}.get(code, "")
    raise ValueError(f"{_quote(value)} is not an ISO 3166 two-letter country code such as 'DE'{hint}")


_EMAIL = re.compile(
    r"""(?P<local>[^@\s"(),:;<>\[\]\\]{1,64})@(?P<domain>(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_][\w-]{0,62})"""
)


def _email(value: str) -> str:
    found = _EMAIL.fullmatch(value)
    if not found or len(value) > 254 or ".." in value or found["local"].startswith(".") or found["local"].endswith("."):
        raise ValueError(f"{_quote(value)} is not an email address")
    return value.lower()


_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}


def _flag(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{_quote(value)} is not yes or no: write true/false, yes/no or 1/0")


# --------------------------------------------------------------------------------------------
# the row models: one per kind of file. Only the cells a row has are given (blank cells are
# left out), so ``model_fields_set`` is exactly what the row says.

_ROW = ConfigDict(extra="forbid", frozen=True)


class _AccountRow(BaseModel):
    model_config = _ROW

    external_id: Annotated[str, _text(_ACCOUNT, "external_id")]
    name: Annotated[str, _text(_ACCOUNT, "name")]
    plan: Annotated[str | None, _text(_ACCOUNT, "plan")] = None
    arr: Annotated[float | None, BeforeValidator(_amount)] = None
    currency: Annotated[str | None, BeforeValidator(_currency)] = None
    status: Annotated[str | None, BeforeValidator(_status)] = None
    renewal_date: Annotated[date | None, BeforeValidator(_date)] = None
    csm_email: Annotated[str | None, BeforeValidator(_email)] = None
    csm_name: Annotated[str | None, _text(_ACCOUNT, "csm_name")] = None
    timezone: Annotated[str | None, BeforeValidator(_timezone)] = None
    country: Annotated[str | None, BeforeValidator(_country)] = None
    segment: Annotated[str | None, _text(_ACCOUNT, "segment")] = None
    industry: Annotated[str | None, _text(_ACCOUNT, "industry")] = None
    lifecycle_stage: Annotated[str | None, _text(_ACCOUNT, "lifecycle_stage")] = None
    signup_date: Annotated[date | None, BeforeValidator(_date)] = None
    seats: Annotated[int | None, BeforeValidator(_whole_number)] = None
    health: Annotated[str | None, BeforeValidator(_health)] = None
    health_score: Annotated[float | None, BeforeValidator(_health_score)] = None


class _ContactRow(BaseModel):
    model_config = _ROW

    account_external_id: Annotated[str, _text(_ACCOUNT, "external_id")]
    email: Annotated[str, BeforeValidator(_email)]
    name: Annotated[str | None, _text(_CONTACT, "name")] = None
    role: Annotated[str | None, _text(_CONTACT, "role")] = None
    title: Annotated[str | None, _text(_CONTACT, "title")] = None
    timezone: Annotated[str | None, BeforeValidator(_timezone)] = None
    is_primary: Annotated[bool | None, BeforeValidator(_flag)] = None
    unsubscribed: Annotated[bool | None, BeforeValidator(_flag)] = None


def _required(model: type[BaseModel]) -> list[str]:
    return [name for name, info in model.model_fields.items() if info.is_required()]


#: the columns each kind of file knows, required ones first
ACCOUNT_COLUMNS: tuple[str, ...] = tuple(_AccountRow.model_fields)
CONTACT_COLUMNS: tuple[str, ...] = tuple(_ContactRow.model_fields)


# --------------------------------------------------------------------------------------------
# reading the file


def _column_key(header: str) -> str:
    """``" External ID "`` -> ``external_id``: case, spaces and punctuation do not matter."""
    return re.sub(r"\W+", "_", header.strip().casefold()).strip("_")


@dataclass
class _Record:
    line: int
    cells: dict[str, str]  # column key -> stripped, non-blank text


@dataclass
class _CsvFile:
    name: str  # as the user named it, for messages
    headers: dict[str, str]  # column key -> the header as written
    records: list[_Record]
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


def _read(path: str | Path, kind: str, required: Sequence[str]) -> _CsvFile:
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {kind} file {name}: {exc.strerror or exc}") from exc
    text = _decode(data, name)
    if not text.strip():
        raise DataImportError(name, [RowProblem(1, f"the file is empty; the header must name {', '.join(required)}")])

    delimiter = _delimiter(next(line for line in text.splitlines() if line.strip()))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    problems: list[RowProblem] = []
    rows: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(start, f"the quotes on this row do not pair up ({exc})"))
            if reader.line_num < start:  # the reader did not move on: nothing more can be read
                break
            continue
        if any(cell.strip() for cell in cells):
            rows.append((start, cells))
    if not rows:
        raise DataImportError(
            name, [*problems, RowProblem(1, f"the file has no header; it must name {', '.join(required)}")]
        )

    header_line, header = rows[0]
    headers: dict[str, str] = {}
    positions: dict[str, int] = {}
    unnamed: list[int] = []
    header_problems: list[RowProblem] = []
    for position, written in enumerate(header):
        key = _column_key(written)
        if not key:
            unnamed.append(position)
        elif key in positions:
            header_problems.append(
                RowProblem(
                    header_line,
                    f"columns {positions[key] + 1} ({headers[key]!r}) and {position + 1} ({written.strip()!r}) "
                    f"are the same column {key!r}",
                )
            )
        else:
            headers[key], positions[key] = written.strip(), position
    missing = [column for column in required if column not in headers]
    if missing:
        found = ", ".join(repr(h) for h in headers.values()) or "none"
        header_problems.append(
            RowProblem(
                header_line,
                f"missing required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)}; the header has {found}",
            )
        )
    if header_problems:
        raise DataImportError(name, [*problems, *header_problems])

    records: list[_Record] = []
    unnamed_used: set[int] = set()
    for line, cells in rows[1:]:
        extra = [cell for cell in cells[len(header) :] if cell.strip()]
        if extra:
            problems.append(
                RowProblem(
                    line,
                    f"the row has {len(cells)} values but the header has {len(header)} columns "
                    f"(a value with a {delimiter!r} in it needs double quotes)",
                )
            )
            continue
        if any("\x00" in cell for cell in cells):
            problems.append(RowProblem(line, "the row holds a NUL character; is this really a text file?"))
            continue
        unnamed_used.update(p for p in unnamed if p < len(cells) and cells[p].strip())
        values = {key: cells[p].strip() for key, p in positions.items() if p < len(cells) and cells[p].strip()}
        records.append(_Record(line, values))
    problems.extend(
        RowProblem(header_line, f"column {p + 1} has values but no name in the header; name it or delete it")
        for p in sorted(unnamed_used)
    )
    return _CsvFile(name, headers, records, problems)


# --------------------------------------------------------------------------------------------
# validating rows

_Row = TypeVar("_Row", bound=BaseModel)


def _validate(csv_file: _CsvFile, model: type[_Row]) -> list[tuple[_Record, _Row]]:
    """Every record that validates, with its row; the others become problems of ``csv_file``."""
    fields = model.model_fields
    good: list[tuple[_Record, _Row]] = []
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


def _duplicates(
    csv_file: _CsvFile, key: Callable[[_Record], Hashable | None], column: str, describe: Callable[[Any], str]
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


def _settle(csv_file: _CsvFile, skip_invalid: bool) -> tuple[RowProblem, ...]:
    """Raise with every problem unless bad rows are to be skipped; return them in file order."""
    order = {header: position for position, header in enumerate(csv_file.headers.values())}
    problems = tuple(sorted(csv_file.problems, key=lambda p: (p.row, order.get(p.column or "", -1))))
    if problems and not skip_invalid:
        raise DataImportError(csv_file.name, list(problems))
    return problems


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------------------------
# writing


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


def _json_safe(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    shown = [f"{column} {_show(old)} → {_show(new)}" for column, (old, new) in list(changes.items())[:3]]
    if len(changes) > 3:
        shown.append(f"and {len(changes) - 3} more")
    return ", ".join(shown)


def _event(account_id: int, now: datetime, summary: str, detail: dict[str, Any]) -> dict[str, Any]:
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


def _update_in_batches(
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


def _write(engine: Engine, name: str, work: Callable[[Connection], None]) -> None:
    try:
        with engine.begin() as conn:
            work(conn)
    except DBAPIError as exc:
        raise RetainError(
            f"{name}: the database refused the import, so nothing was written: {exc.orig}. "
            "If another import ran at the same time, run this one again."
        ) from exc


# --------------------------------------------------------------------------------------------
# accounts


def import_accounts(
    engine: Engine,
    path: str | Path,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ImportResult:
    """Upsert the accounts of a CSV file by ``external_id`` (see the module's documentation).

    Raises :class:`models.DataImportError` listing every bad row (nothing written) unless
    ``skip_invalid``; with ``dry_run`` nothing is written and the counts say what would be.
    ``now`` (aware) stamps ``updated_at`` and the timeline; by default the current time.
    """
    now = now or utcnow()
    csv_file = _read(path, "accounts", _required(_AccountRow))
    custom_columns = tuple(c for c in csv_file.headers if c not in _AccountRow.model_fields)
    rows = _validate(csv_file, _AccountRow)
    _duplicates(csv_file, lambda r: r.cells.get("external_id"), "external_id", lambda k: f"external_id {k!r}")
    problems = _settle(csv_file, skip_invalid)
    bad_lines = {p.row for p in problems}
    rows = [(record, row) for record, row in rows if record.line not in bad_lines]

    file_columns = sorted(c for c in csv_file.headers if c in _AccountRow.model_fields and c != "external_id")
    read_columns = [_ACCOUNT.c.id, _ACCOUNT.c.external_id, *(_ACCOUNT.c[c] for c in file_columns), _ACCOUNT.c.custom]
    label = Path(path).name
    inserts: list[dict[str, Any]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    events: list[dict[str, Any]] = []
    unchanged = 0

    def plan(conn: Connection) -> None:
        nonlocal unchanged
        existing: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(row.external_id for _, row in rows):
            for found in conn.execute(select(*read_columns).where(_ACCOUNT.c.external_id.in_(chunk))).mappings():
                existing[found["external_id"]] = dict(found)
        for record, row in rows:
            values = row.model_dump(include=row.model_fields_set)
            custom = {c: record.cells[c] for c in custom_columns if c in record.cells}
            old = existing.get(row.external_id)
            if old is None:
                inserts.append(
                    {
                        "plan": None, "arr": 0.0, "currency": "USD", "status": AccountStatus.ACTIVE.value,
                        "lifecycle_stage": None, "segment": None, "industry": None, "country": None,
                        "timezone": None, "csm_email": None, "csm_name": None, "signup_date": None,
                        "onboarded_at": None, "renewal_date": None, "renewed_at": None, "cancelled_at": None,
                        "churned_at": None, "reactivated_at": None, "health": None, "health_score": None,
                        "seats": None, **values, "custom": custom, "created_at": now, "updated_at": now,
                    }
                )  # fmt: skip
                continue
            changes = {c: (old[c], v) for c, v in values.items() if c != "external_id" and old[c] != v}
            new_values = {c: new for c, (_, new) in changes.items()}
            merged = {**old["custom"], **custom}
            if merged != old["custom"]:
                changes.update(
                    {f"custom.{c}": (old["custom"].get(c), v) for c, v in custom.items() if old["custom"].get(c) != v}
                )
                new_values["custom"] = merged
            if not changes:
                unchanged += 1
                continue
            updates.append((old["id"], new_values))
            events.append(
                _event(
                    old["id"], now, f"updated from {label}: {_describe(changes)}",
                    {"file": label, "changes": {c: [_json_safe(o), _json_safe(n)] for c, (o, n) in changes.items()}},
                )
            )  # fmt: skip

    def write(conn: Connection) -> None:
        plan(conn)
        if dry_run:
            return
        if inserts:
            # a plain batched insert, then the new ids read back: RETURNING makes PostgreSQL's
            # batches several times slower
            conn.execute(insert(_ACCOUNT), inserts)
            for chunk in _chunks(row["external_id"] for row in inserts):
                created = conn.execute(select(_ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk)))
                events.extend(_event(i, now, f"created from {label}", {"file": label}) for (i,) in created)
        if updates:
            _update_in_batches(conn, _ACCOUNT, updates, now)
        if events:
            conn.execute(insert(_TIMELINE), events)

    _write(engine, csv_file.name, write)
    return ImportResult(
        file=csv_file.name,
        kind="accounts",
        inserted=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        problems=problems,
        custom_columns=custom_columns,
        dry_run=dry_run,
    )


# --------------------------------------------------------------------------------------------
# contacts


def import_contacts(
    engine: Engine,
    path: str | Path,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
) -> ImportResult:
    """Upsert the contacts of a CSV file by (account, email) (see the module's documentation).

    The accounts must already be in the database; a row naming another is a problem
    ("unknown account 'acme-x'"). Errors, ``skip_invalid``, ``dry_run`` and ``now`` as for
    :func:`import_accounts`.
    """
    now = now or utcnow()
    csv_file = _read(path, "contacts", _required(_ContactRow))
    ignored = tuple(header for column, header in csv_file.headers.items() if column not in _ContactRow.model_fields)
    rows = _validate(csv_file, _ContactRow)

    def contact_key(record: _Record) -> tuple[str, str] | None:
        account, email = record.cells.get("account_external_id"), record.cells.get("email")
        return None if account is None or email is None else (account, email.lower())

    _duplicates(csv_file, contact_key, "email", lambda k: f"contact {k[1]!r} of account {k[0]!r}")

    file_columns = sorted(
        c for c in csv_file.headers if c in _ContactRow.model_fields and c not in ("account_external_id", "email")
    )
    read_columns = [_CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.email, *(_CONTACT.c[c] for c in file_columns)]
    label = Path(path).name
    inserts: list[dict[str, Any]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    events: list[dict[str, Any]] = []
    unchanged = 0
    kept_unsubscribed = 0
    problems: tuple[RowProblem, ...] = ()

    def plan(conn: Connection) -> None:
        nonlocal unchanged, kept_unsubscribed, problems, rows
        account_ids: dict[str, int] = {}
        for chunk in _chunks({row.account_external_id for _, row in rows}):
            query = select(_ACCOUNT.c.external_id, _ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk))
            account_ids.update((external_id, account_id) for external_id, account_id in conn.execute(query))
        for record, row in rows:
            if row.account_external_id not in account_ids:
                message = f"unknown account {row.account_external_id!r}"
                csv_file.problems.append(RowProblem(record.line, message, csv_file.header("account_external_id")))
        problems = _settle(csv_file, skip_invalid)
        bad_lines = {p.row for p in problems}
        rows = [(record, row) for record, row in rows if record.line not in bad_lines]

        existing: dict[tuple[int, str], dict[str, Any]] = {}
        for chunk in _chunks({account_ids[row.account_external_id] for _, row in rows}):
            for found in conn.execute(select(*read_columns).where(_CONTACT.c.account_id.in_(chunk))).mappings():
                existing[(found["account_id"], found["email"].lower())] = dict(found)

        for _, row in rows:
            account_id = account_ids[row.account_external_id]
            values = row.model_dump(include=row.model_fields_set - {"account_external_id"})
            old = existing.get((account_id, row.email))
            if old is None:
                unsubscribed = bool(values.get("unsubscribed", False))
                inserts.append(
                    {
                        "name": None, "role": None, "title": None, "timezone": None, "is_primary": False,
                        "unsubscribed_channels": [], "preferences": {}, "slack_user_id": None, **values,
                        "account_id": account_id, "unsubscribed": unsubscribed,
                        "unsubscribed_at": now if unsubscribed else None, "created_at": now,
                    }
                )  # fmt: skip
                events.append(
                    _event(
                        account_id,
                        now,
                        f"contact {row.email} added from {label}",
                        {"file": label, "contact": row.email},
                    )
                )
                continue
            values.pop("email")
            if old.get("unsubscribed") and values.get("unsubscribed") is False:
                kept_unsubscribed += 1  # re-subscribing is the contact's act, not an import's
                del values["unsubscribed"]
            changes = {c: (old[c], v) for c, v in values.items() if old[c] != v}
            if not changes:
                unchanged += 1
                continue
            new_values = {c: new for c, (_, new) in changes.items()}
            if new_values.get("unsubscribed"):
                new_values["unsubscribed_at"] = now
            updates.append((old["id"], new_values))
            events.append(
                _event(
                    account_id, now, f"contact {row.email} updated from {label}: {_describe(changes)}",
                    {"file": label, "contact": row.email, "changes": {c: [o, n] for c, (o, n) in changes.items()}},
                )
            )  # fmt: skip

    def write(conn: Connection) -> None:
        plan(conn)
        if dry_run:
            return
        if inserts:
            conn.execute(insert(_CONTACT), inserts)
        if updates:
            _update_in_batches(conn, _CONTACT, updates, None)
        if events:
            conn.execute(insert(_TIMELINE), events)
        if inserts:  # an address on the suppression list is unsubscribed the moment it arrives
            from integrations.sources.suppression import apply_suppressions

            apply_suppressions(conn, now, {row["email"].lower() for row in inserts})

    _write(engine, csv_file.name, write)
    notes: tuple[str, ...] = ()
    if kept_unsubscribed:
        notes = (
            f"{kept_unsubscribed} contact{' stays' if kept_unsubscribed == 1 else 's stay'} unsubscribed although the "
            "file says otherwise: an import never re-subscribes anyone",
        )
    return ImportResult(
        file=csv_file.name,
        kind="contacts",
        inserted=len(inserts),
        updated=len(updates),
        unchanged=unchanged,
        problems=problems,
        ignored_columns=ignored,
        notes=notes,
        dry_run=dry_run,
    )
