"""Import accounts and contacts from CSV files exported by a CRM or a billing system.

Two kinds of file, each upserted by its natural key:

* **accounts** (key ``external_id``, the CRM's or billing system's id, compared exactly, case
  included): required columns ``external_id, name``; optional ``plan, arr, currency, status,
  renewal_date, csm_email, csm_name, timezone, country, segment, industry, lifecycle_stage,
  signup_date, onboarded_at, renewed_at, cancelled_at, churned_at, reactivated_at, seats, health,
  health_score``. Every other column is a *custom field*: its values
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
* moments (``onboarded_at``, ``renewed_at``, ``cancelled_at``, ``churned_at``, ``reactivated_at``):
  ISO 8601, stored as UTC; ``2027-01-31T09:30:00+01:00``, or a bare date (its midnight UTC); no
  offset means UTC.
* ``status``: one of :class:`models.AccountStatus`; ``health``: green, yellow or red;
  ``health_score``: 0 to 100; ``seats``: a whole number; ``currency``: a three-letter code.
* ``timezone``: an IANA zone (``Europe/Berlin``), any case; ``country``: ISO 3166 alpha-2 (``DE``).
* emails are checked for a sane shape and stored in lower case.
* ``is_primary``, ``unsubscribed``: true/false, yes/no, y/n, 1/0. ``unsubscribed=false``
  resubscribes a contact that a file or a person unsubscribed (on the timeline), never one that
  unsubscribed itself through the link in an email, bounced or complained: a stale export
  cannot undo the contact's own act (the result's notes name them).

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

import difflib
import logging
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict
from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import (
    CHUNK,
    chunks,
    describe_changes,
    import_event,
    json_safe,
    update_in_batches,
    write_all_or_nothing,
)
from integrations.sources._csv import (
    CsvFile,
    CsvRecord,
    flag_duplicates,
    parse_date,
    parse_email,
    parse_timestamp,
    quote_cell,
    read_csv,
    settle_problems,
    validate_rows,
)
from integrations.sources.suppression import (
    PROVIDER_SOURCES,
    ResubscribeResult,
    apply_suppressions,
    resubscribe_addresses,
)
from models import (
    Account,
    AccountStatus,
    Contact,
    RowProblem,
    TimelineEvent,
    table_of,
    utcnow,
)
from playbooks import read_as

__all__ = [
    "ACCOUNT_COLUMNS",
    "CHUNK",
    "CONTACT_COLUMNS",
    "ImportResult",
    "import_accounts",
    "import_contacts",
    "land_accounts",
    "land_contacts",
]

logger = logging.getLogger(__name__)  # what each import did, for the run's log

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
        raise ValueError(f"{quote_cell(value)} is negative; ARR cannot be")
    if not (_PLAIN_AMOUNT.fullmatch(digits) or _GROUPED_AMOUNT.fullmatch(digits)):
        raise ValueError(
            f"{quote_cell(value)} is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50"
        )
    try:
        return float(Decimal(re.sub(r"[, ']", "", digits)))
    except InvalidOperation as exc:  # pragma: no cover - the patterns above admit only digits
        raise ValueError(f"{quote_cell(value)} is not an amount") from exc


def _status(value: str) -> str:
    try:
        return AccountStatus(value.lower()).value
    except ValueError:
        allowed = ", ".join(s.value for s in AccountStatus)
        raise ValueError(f"{quote_cell(value)} is not a status: use one of {allowed}") from None


def _health(value: str) -> str:
    if value.lower() not in ("green", "yellow", "red"):
        raise ValueError(f"{quote_cell(value)} is not a health: use green, yellow or red")
    return value.lower()


def _health_score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise ValueError(f"{quote_cell(value)} is not a number from 0 to 100") from None
    if not 0 <= score <= 100:
        raise ValueError(f"{quote_cell(value)} is not a number from 0 to 100")
    return score


def _whole_number(value: str) -> int:
    digits = value.replace("\u00a0", " ").replace("\u202f", " ")
    if _GROUPED_AMOUNT.fullmatch(digits) or _PLAIN_AMOUNT.fullmatch(digits):
        number = Decimal(re.sub(r"[, ']", "", digits))
        if number == number.to_integral_value():
            return int(number)
    raise ValueError(f"{quote_cell(value)} is not a whole number of seats")


def _currency(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError(f"{quote_cell(value)} is not a three-letter currency code such as USD or EUR")
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
    raise ValueError(f"{quote_cell(value)} is not an IANA time zone such as 'Europe/Berlin'{hint}")


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
    raise ValueError(f"{quote_cell(value)} is not an ISO 3166 two-letter country code such as 'DE'{hint}")


_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}


def _flag(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{quote_cell(value)} is not yes or no: write true/false, yes/no or 1/0")


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
    renewal_date: Annotated[date | None, BeforeValidator(parse_date)] = None
    csm_email: Annotated[str | None, BeforeValidator(parse_email)] = None
    csm_name: Annotated[str | None, _text(_ACCOUNT, "csm_name")] = None
    timezone: Annotated[str | None, BeforeValidator(_timezone)] = None
    country: Annotated[str | None, BeforeValidator(_country)] = None
    segment: Annotated[str | None, _text(_ACCOUNT, "segment")] = None
    industry: Annotated[str | None, _text(_ACCOUNT, "industry")] = None
    lifecycle_stage: Annotated[str | None, _text(_ACCOUNT, "lifecycle_stage")] = None
    signup_date: Annotated[date | None, BeforeValidator(parse_date)] = None
    # the lifecycle moments the audiences read: real columns, never custom fields
    onboarded_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    renewed_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    cancelled_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    churned_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    reactivated_at: Annotated[datetime | None, BeforeValidator(parse_timestamp)] = None
    seats: Annotated[int | None, BeforeValidator(_whole_number)] = None
    health: Annotated[str | None, BeforeValidator(_health)] = None
    health_score: Annotated[float | None, BeforeValidator(_health_score)] = None


class _ContactRow(BaseModel):
    model_config = _ROW

    account_external_id: Annotated[str, _text(_ACCOUNT, "external_id")]
    email: Annotated[str, BeforeValidator(parse_email)]
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


def _logged(result: ImportResult) -> ImportResult:
    """Say in the log what an import did (an import run by a flow shows it in the run's log)."""
    logger.info(
        "%s: %s %d inserted, %d updated, %d unchanged, %d rows skipped%s",
        result.file,
        result.kind,
        result.inserted,
        result.updated,
        result.unchanged,
        result.skipped,
        " (dry run: nothing written)" if result.dry_run else "",
    )
    return result


# --------------------------------------------------------------------------------------------
# accounts


def _check_declared(
    csv_file: CsvFile, columns: Sequence[str], declared: Mapping[str, Sequence[tuple[str, str]]]
) -> None:
    """A custom field's cell that does not read as the type a playbook declares for it is a problem
    of its row: ``account.custom.seats > 10`` would silently skip the account otherwise."""
    checked = [(c, kind, where) for c in columns for kind, where in declared.get(c, ()) if kind != "text"]
    for record in csv_file.records:
        for column, kind, where in checked:
            value = record.cells.get(column)
            if value is not None and read_as(value, kind) is None:
                how = "a plain number like 12 or -0.5" if kind == "number" else "true, false, yes or no"
                message = (
                    f"{quote_cell(value)} is not a {kind}: {where} declares custom field {column!r} {kind} ({how})"
                )
                csv_file.problems.append(RowProblem(record.line, message, csv_file.header(column)))


def import_accounts(
    engine: Engine,
    path: str | Path,
    *,
    skip_invalid: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    declared: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> ImportResult:
    """Upsert the accounts of a CSV file by ``external_id`` (see the module's documentation).

    Raises :class:`models.DataImportError` listing every bad row (nothing written) unless
    ``skip_invalid``; with ``dry_run`` nothing is written and the counts say what would be.
    ``now`` (aware) stamps ``updated_at`` and the timeline; by default the current time.
    ``declared``: the custom fields playbooks declare, ``{name: [(type, playbook), ...]}``: a cell
    of such a column that does not read as its declared ``number`` or ``bool`` is a bad row.
    """
    moment = now or utcnow()
    csv_file = read_csv(path, "accounts", _required(_AccountRow))
    results: list[ImportResult] = []

    def write(conn: Connection) -> None:
        results.append(
            land_accounts(
                conn,
                csv_file,
                now=moment,
                label=Path(path).name,
                skip_invalid=skip_invalid,
                dry_run=dry_run,
                declared=declared,
            )
        )

    write_all_or_nothing(engine, csv_file.name, write)
    return _logged(results[0])


def land_accounts(
    conn: Connection,
    csv_file: CsvFile,
    *,
    now: datetime,
    label: str,
    skip_invalid: bool = False,
    dry_run: bool = False,
    declared: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> ImportResult:
    """Upsert the accounts of ``csv_file``'s records (from a file, or a SQL source's batch) in the
    caller's transaction; ``label`` names where they came from on the timeline. Errors,
    ``skip_invalid``, ``dry_run`` and ``declared`` as for :func:`import_accounts`."""
    custom_columns = tuple(c for c in csv_file.headers if c not in _AccountRow.model_fields)
    rows = validate_rows(csv_file, _AccountRow)
    _check_declared(csv_file, custom_columns, declared or {})
    flag_duplicates(csv_file, lambda r: r.cells.get("external_id"), "external_id", lambda k: f"external_id {k!r}")
    problems = settle_problems(csv_file, skip_invalid)
    bad_lines = {p.row for p in problems}
    rows = [(record, row) for record, row in rows if record.line not in bad_lines]

    file_columns = sorted(c for c in csv_file.headers if c in _AccountRow.model_fields and c != "external_id")
    read_columns = [_ACCOUNT.c.id, _ACCOUNT.c.external_id, *(_ACCOUNT.c[c] for c in file_columns), _ACCOUNT.c.custom]
    inserts: list[dict[str, Any]] = []
    updates: list[tuple[int, dict[str, Any]]] = []
    events: list[dict[str, Any]] = []
    unchanged = 0

    existing: dict[str, dict[str, Any]] = {}
    for chunk in chunks((row.external_id for _, row in rows), CHUNK):
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
            import_event(
                old["id"], now, f"updated from {label}: {describe_changes(changes)}",
                {"file": label, "changes": {c: [json_safe(o), json_safe(n)] for c, (o, n) in changes.items()}},
            )
        )  # fmt: skip

    if not dry_run:
        if inserts:
            # a plain batched insert, then the new ids read back: RETURNING makes PostgreSQL's
            # batches several times slower
            conn.execute(insert(_ACCOUNT), inserts)
            for chunk in chunks((row["external_id"] for row in inserts), CHUNK):
                created = conn.execute(select(_ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk)))
                events.extend(import_event(i, now, f"created from {label}", {"file": label}) for (i,) in created)
        if updates:
            update_in_batches(conn, _ACCOUNT, updates, now)
        if events:
            conn.execute(insert(_TIMELINE), events)
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


def _account_ids(conn: Connection, external_ids: set[str]) -> dict[str, int]:
    """The ids of the accounts the file names, by external id (the unknown ones left out)."""
    found: dict[str, int] = {}
    for chunk in chunks(external_ids, CHUNK):
        query = select(_ACCOUNT.c.external_id, _ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk))
        found.update((external_id, account_id) for external_id, account_id in conn.execute(query))
    return found


@dataclass
class _ContactChanges:
    """What a contacts file asks for: rows to insert and update, and their timeline events."""

    label: str  # the file's name, for the timeline
    now: datetime
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    resubscribe: set[str] = field(default_factory=set)  # addresses the file resubscribes
    resubscribed_only: set[str] = field(default_factory=set)  # rows whose only change is that
    resubscribed: ResubscribeResult = field(default_factory=lambda: ResubscribeResult(0))

    def lift_suppressions(self, conn: Connection) -> None:
        """Resubscribe the addresses the file resubscribes. A file never undoes what the contact
        asked for (through the link in an email) or what the provider reported."""
        if self.resubscribe:
            self.resubscribed = resubscribe_addresses(
                conn, self.resubscribe, self.now, by=f"import of {self.label}", keep=("link", *PROVIDER_SOURCES)
            )

    def add(self, account_id: int, row: _ContactRow, old: dict[str, Any] | None) -> None:
        """One valid row, against the contact the database holds (``old``), if any."""
        now, label = self.now, self.label
        values = row.model_dump(include=row.model_fields_set - {"account_external_id"})
        if old is None:
            unsubscribed = bool(values.get("unsubscribed", False))
            self.inserts.append(
                {
                    "name": None, "role": None, "title": None, "timezone": None, "is_primary": False,
                    "unsubscribed_channels": [], "preferences": {}, "slack_user_id": None, **values,
                    "account_id": account_id, "unsubscribed": unsubscribed,
                    "unsubscribed_at": now if unsubscribed else None, "created_at": now,
                }
            )  # fmt: skip
            self.events.append(
                import_event(
                    account_id,
                    now,
                    f"contact {row.email} added from {label}",
                    {"file": label, "contact": row.email},
                )
            )
            return
        values.pop("email")
        if old.get("unsubscribed") and values.get("unsubscribed") is False:
            # the file says this contact may be written to again: lifted with its address's
            # suppression, on the timeline (a bounce or a complaint stays; see ``write``)
            self.resubscribe.add(row.email.lower())
            del values["unsubscribed"]
        changes = {c: (old[c], v) for c, v in values.items() if old[c] != v}
        if not changes:
            if row.email.lower() in self.resubscribe:
                self.resubscribed_only.add(row.email.lower())
            else:
                self.unchanged += 1
            return
        new_values = {c: new for c, (_, new) in changes.items()}
        if new_values.get("unsubscribed"):
            new_values["unsubscribed_at"] = now
        self.updates.append((old["id"], new_values))
        self.events.append(
            import_event(
                account_id, now, f"contact {row.email} updated from {label}: {describe_changes(changes)}",
                {"file": label, "contact": row.email, "changes": {c: [o, n] for c, (o, n) in changes.items()}},
            )
        )  # fmt: skip


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
    moment = now or utcnow()
    csv_file = read_csv(path, "contacts", _required(_ContactRow))
    results: list[ImportResult] = []

    def write(conn: Connection) -> None:
        results.append(
            land_contacts(conn, csv_file, now=moment, label=Path(path).name, skip_invalid=skip_invalid, dry_run=dry_run)
        )

    write_all_or_nothing(engine, csv_file.name, write)
    return _logged(results[0])


def land_contacts(
    conn: Connection,
    csv_file: CsvFile,
    *,
    now: datetime,
    label: str,
    skip_invalid: bool = False,
    dry_run: bool = False,
) -> ImportResult:
    """Upsert the contacts of ``csv_file``'s records (from a file, or a SQL source's batch) in the
    caller's transaction; as :func:`import_contacts` does."""
    ignored = tuple(header for column, header in csv_file.headers.items() if column not in _ContactRow.model_fields)
    rows = validate_rows(csv_file, _ContactRow)

    def contact_key(record: CsvRecord) -> tuple[str, str] | None:
        account, email = record.cells.get("account_external_id"), record.cells.get("email")
        return None if account is None or email is None else (account, email.lower())

    flag_duplicates(csv_file, contact_key, "email", lambda k: f"contact {k[1]!r} of account {k[0]!r}")

    file_columns = sorted(
        c for c in csv_file.headers if c in _ContactRow.model_fields and c not in ("account_external_id", "email")
    )
    read_columns = [_CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.email, *(_CONTACT.c[c] for c in file_columns)]
    changes = _ContactChanges(label, now)

    account_ids = _account_ids(conn, {row.account_external_id for _, row in rows})
    for record, row in rows:
        if row.account_external_id not in account_ids:
            message = f"unknown account {row.account_external_id!r}"
            csv_file.problems.append(RowProblem(record.line, message, csv_file.header("account_external_id")))
    problems = settle_problems(csv_file, skip_invalid)
    bad_lines = {p.row for p in problems}
    rows = [(record, row) for record, row in rows if record.line not in bad_lines]

    existing: dict[tuple[int, str], dict[str, Any]] = {}
    for ids in chunks({account_ids[row.account_external_id] for _, row in rows}, CHUNK):
        for found in conn.execute(select(*read_columns).where(_CONTACT.c.account_id.in_(ids))).mappings():
            existing[(found["account_id"], found["email"].lower())] = dict(found)
    for _, row in rows:
        account_id = account_ids[row.account_external_id]
        changes.add(account_id, row, existing.get((account_id, row.email)))

    if not dry_run:
        if changes.inserts:
            conn.execute(insert(_CONTACT), changes.inserts)
        if changes.updates:
            update_in_batches(conn, _CONTACT, changes.updates, None)
        if changes.events:
            conn.execute(insert(_TIMELINE), changes.events)
        changes.lift_suppressions(conn)
        if changes.inserts:  # an address on the suppression list is unsubscribed the moment it arrives
            apply_suppressions(conn, now, {row["email"].lower() for row in changes.inserts})
    notes: tuple[str, ...] = ()
    resubscribed = changes.resubscribed
    if resubscribed.contacts:
        notes += (f"{resubscribed.contacts} contact(s) resubscribed (the file says unsubscribed=false)",)
    notes += tuple(f"stays unsubscribed: {why}" for why in resubscribed.kept)
    return ImportResult(
        file=csv_file.name,
        kind="contacts",
        inserted=len(changes.inserts),
        updated=len(changes.updates) + len(changes.resubscribed_only - resubscribed.kept_addresses),
        unchanged=changes.unchanged + len(changes.resubscribed_only & resubscribed.kept_addresses),
        problems=problems,
        ignored_columns=ignored,
        notes=notes,
        dry_run=dry_run,
    )
