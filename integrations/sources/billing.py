"""Import recurring revenue from a billing or subscription export: MRR per account, month and product.

Each import also records the date its data runs through (``data_through``; by default the latest
invoice date, see docs/metrics.md): no month that is not over by then is read as churn.

The file is a CSV export of invoices and credit notes (Stripe, Chargebee, Recurly, an ERP…) with
its own column names, mapped by :class:`BillingColumns`:

* ``customer`` (required): the account's ``external_id``, compared exactly, case included. A
  customer that is not an account is a problem, unless ``create_accounts`` creates it (named after
  the customer, in the file's currency).
* ``date`` (required): the invoice or credit note date (``YYYY-MM-DD``, or an ISO date-time whose
  date is taken as written).
* ``amount`` (required): money, ``.`` for decimals, ``,``/space/``'`` between groups of three
  digits, a currency sign (``$ € £ ¥ ₹``) or a three-letter code before or after: ``1200``,
  ``$1,200.50``, ``EUR 1 200.50``. Negative amounts (``-1,200.50``, ``(1,200.50)``) are credit
  notes. At most two decimals: amounts are kept in integer cents. A decimal comma is refused.
* ``service_start`` and ``service_end`` (optional, both or neither): the period an invoice pays
  for, both days included (``service_end_exclusive`` when the export writes the day after, as
  Stripe does). The amount is spread over the months of the period by
  :func:`spread_cents`. A row whose two cells are blank, or a file without these columns, is
  revenue of the month of its date.
* ``product`` (optional): the product line; MRR is kept per product, so the metrics can tell a
  cross-sell (a new product) from an upsell (more of the same). Blank means no product (``""``).
* ``plan`` (optional): the plan on each account's latest invoice (by date) becomes the
  account's ``plan``.
* ``currency`` (optional): a column of three-letter codes, or one code for the whole file
  (``currency="EUR"``: a name that is not a column of the file is taken as a code). Without it a
  column named ``currency`` is used if the file has one, else USD (and the result says so).

* ``invoice`` and ``credits`` (optional): the invoice's number, and on a credit note the number of
  the invoice it credits: a credit note without a service period is then spread over that
  invoice's months (else it is revenue of the month of its date).

How money becomes MRR: every row is spread into months (normalized per month by default, so a
flat annual contract is flat MRR; by day with ``spread=Spread.DAY``); invoices and credit notes are netted per account, product and month;
months that net to zero hold no entry. ``revenue_entry`` then holds MRR in integer cents; ARR is
12 × MRR.

**The replacement rule.** The file covers the months from its earliest to its latest month (its
dates and every month a service period reaches). For each account in the file, every revenue
entry in those months, of every product, is deleted and replaced by what the file says; months
outside the range, and accounts that are not in the file, are left alone. So a file is the whole
truth for its accounts over its months: re-importing it changes nothing, a corrected export
corrects, and an account whose invoices stop has no MRR after them (it churned). Export the full
history where you can: an invoice dated before the file's first month whose service period reaches
into it is not in the file, and the months it paid for are replaced without it.

Checks before anything is written, all reported at once (:class:`models.DataImportError`):
missing columns (naming those the file has), unreadable dates or amounts (row, column, value),
a service period that ends before it starts or has only one end, a currency code that is not
three letters, an amount whose currency is not the row's, several currencies in one file,
customers that are not accounts, and credit notes that exceed the invoices of the month they
cover. All or nothing: one problem and nothing is written (there is no "skip invalid rows": a
missing invoice misstates revenue silently). A month inside the file's dates with no invoice or
credit note at all is reported as a warning (a truncated export?), not refused.

The reader is the one every import shares (:func:`integrations.sources.read_csv`): UTF-8 with or without a
byte-order mark, ``,``/``;``/tab delimiters, header names compared without case, spaces or
punctuation (``"Invoice Date"`` is ``invoice_date``), row numbers counted from the header (row 1).
"""

from __future__ import annotations

import calendar
import logging
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine

# the shared reader and write helpers: one set of rules for every CSV file Retain reads
from integrations.sources._batches import (
    chunks,
    describe_changes,
    import_event,
    update_in_batches,
    write_all_or_nothing,
)
from integrations.sources._csv import CsvFile, CsvRecord, column_key, parse_date, quote_cell, read_csv, settle_problems
from models import Account, AccountStatus, DataSource, RevenueEntry, RowProblem, TimelineEvent, table_of, utcnow

__all__ = [
    "BillingColumns",
    "RevenueImportResult",
    "Spread",
    "import_revenue",
    "land_revenue",
    "parse_money",
    "revenue_of",
    "spread_cents",
]

logger = logging.getLogger(__name__)  # what each import did, for the run's log

_ACCOUNT: Table = table_of(Account)
_REVENUE: Table = table_of(RevenueEntry)
_TIMELINE: Table = table_of(TimelineEvent)
_SOURCE: Table = table_of(DataSource)
#: the name of revenue's row in ``data_source`` (flows.analytics.state reads it)
REVENUE_SOURCE = "revenue"

_MAX_CUSTOMER = 200  # account.external_id
_MAX_PRODUCT = 100  # revenue_entry.product
_MAX_PLAN = 100  # account.plan
_MAX_NAME = 300  # account.name


class Spread(StrEnum):
    """How an invoice's amount is shared among the months of its service period."""

    #: in proportion to the days of the period in each month (revenue as it is earned)
    DAY = "day"
    #: a whole month counts as one month whatever its length; a part month by its share of days
    MONTH = "month"


@dataclass(frozen=True)
class BillingColumns:
    """Which column of the export holds what (header names as written; case and punctuation do
    not matter). ``currency`` is a column name, or one three-letter code for the whole file."""

    customer: str = "customer"
    date: str = "date"
    amount: str = "amount"
    service_start: str | None = None
    service_end: str | None = None
    product: str | None = None
    plan: str | None = None
    currency: str | None = None
    #: the invoice's number, and (on a credit note) the number of the invoice it credits
    invoice: str | None = None
    credits: str | None = None


@dataclass(frozen=True)
class RevenueImportResult:
    """What a revenue import did (or, with ``dry_run``, would do)."""

    file: str
    currency: str
    rows: int  # invoices and credit notes read
    credit_notes: int
    accounts: int  # accounts in the file
    created_accounts: int
    #: the months replaced for the accounts in the file (first days of months), None for a file without rows
    first_month: date | None
    last_month: date | None
    #: revenue entries (account, month, product) compared with what the database held in those months
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    plans_updated: int = 0
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    dry_run: bool = False
    #: the date the revenue's data runs through after this import (see ``data_through``)
    data_through: date | None = None


# --------------------------------------------------------------------------------------------
# months and money


def _month(day: date) -> date:
    return day.replace(day=1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _days_in_month(month: date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


def spread_cents(cents: int, start: date, end: date, *, by: Spread = Spread.DAY) -> dict[date, int]:
    """Share ``cents`` among the months from ``start`` to ``end`` (both days included).

    ``Spread.DAY``: each month's share is proportional to its days in the period.
    ``Spread.MONTH``: a whole month weighs 1 and a part month its fraction of its own days.
    Shares are whole cents by the largest-remainder method: every month gets the whole cents of
    its exact share, and the cents left over go one each to the months with the largest
    fractions (the earlier month first on a tie), so the shares add up to ``cents`` exactly. A
    credit note (negative ``cents``) is shared as the mirror image of the same invoice, so the two
    cancel in every month. Keys are first days of months.
    """
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    weights: dict[date, Fraction] = {}
    month = _month(start)
    while month <= end:
        month_end = date(month.year, month.month, _days_in_month(month))
        days = (min(end, month_end) - max(start, month)).days + 1
        weights[month] = Fraction(days) if by is Spread.DAY else Fraction(days, _days_in_month(month))
        month = _next_month(month)
    total = sum(weights.values())
    exact = {month: abs(cents) * weight / total for month, weight in weights.items()}
    shares = {month: math.floor(quota) for month, quota in exact.items()}
    left = abs(cents) - sum(shares.values())
    for month in sorted(exact, key=lambda m: (shares[m] - exact[m], m))[:left]:
        shares[month] += 1
    sign = -1 if cents < 0 else 1
    return {month: sign * share for month, share in shares.items()}


_SIGNS = "$€£¥₹"
_SIGN_CURRENCY = {"€": "EUR", "£": "GBP", "₹": "INR"}  # $ and ¥ name several currencies
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\d{1,3}(?P<sep>[, '])\d{3}(?:(?P=sep)\d{3})*(?:\.\d+)?")
_CODE_BEFORE = re.compile(r"(?P<code>[A-Za-z]{3})(?![A-Za-z])\s*(?P<rest>.*)")
_CODE_AFTER = re.compile(r"(?P<rest>.*?)\s*(?<![A-Za-z])(?P<code>[A-Za-z]{3})")


def parse_money(value: str) -> tuple[int, str | None]:
    """An amount as written in a billing export -> (integer cents, the currency it names or None).

    ``1200``, ``1,200.50``, ``$1,200.50``, ``1 200.50 €``, ``EUR 1200.50``; a credit note as
    ``-1,200.50``, ``−1200.50``, ``-$1,200.50``, ``$-1,200.50`` or ``(1,200.50)``. Raises
    ValueError with a message a person can act on.
    """
    text = value.replace("\u00a0", " ").replace("\u202f", " ").replace("\u2212", "-").strip()
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1].strip()
    code: str | None = None
    if found := _CODE_BEFORE.fullmatch(text) or _CODE_AFTER.fullmatch(text):
        code, text = found["code"].upper(), found["rest"].strip()
    sign_currency: str | None = None
    while text and (text[0] in _SIGNS or text[0] == "-"):
        if text[0] == "-":
            if negative:
                break  # two minus signs: not an amount
            negative = True
        else:
            sign_currency = _SIGN_CURRENCY.get(text[0])
        text = text[1:].lstrip()
    if text and text[-1] in _SIGNS:
        sign_currency, text = _SIGN_CURRENCY.get(text[-1]), text[:-1].rstrip()
    if not _NUMBER.fullmatch(text):
        if re.fullmatch(r"-?\d+,\d{1,2}", text):
            raise ValueError(
                f"{quote_cell(value)} has a decimal comma: write '.' for decimals (a comma may only separate thousands)"
            )
        raise ValueError(
            f"{quote_cell(value)} is not an amount: write digits with '.' for decimals, "
            "e.g. 1200.50, $1,200.50, or -1,200.50 or (1,200.50) for a credit note"
        )
    hundredths = Decimal(re.sub(r"[, ']", "", text)) * 100
    if hundredths != hundredths.to_integral_value():
        raise ValueError(f"{quote_cell(value)} has more than two decimals: amounts are kept to the cent")
    if code and sign_currency and code != sign_currency:
        raise ValueError(f"{quote_cell(value)} names two currencies, {sign_currency} and {code}")
    cents = int(hundredths)
    return (-cents if negative else cents), code or sign_currency


def _currency_code(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", value):
        raise ValueError(f"{quote_cell(value)} is not a three-letter currency code such as USD or EUR")
    return value.upper()


# --------------------------------------------------------------------------------------------
# reading rows


@dataclass(frozen=True)
class _Line:
    """One invoice or credit note of the file, parsed."""

    line: int
    customer: str
    day: date
    cents: int
    start: date | None  # the service period, both days included
    end: date | None
    product: str
    plan: str | None
    currency: str
    invoice: str | None = None  # its number
    credits: str | None = None  # a credit note's: the number of the invoice it credits


@dataclass
class _Layout:
    """The file's columns, by their normalised keys."""

    customer: str
    date: str
    amount: str
    service_start: str | None
    service_end: str | None
    product: str | None
    plan: str | None
    currency_column: str | None
    fixed_currency: str | None  # one code for every row
    invoice: str | None = None
    credits: str | None = None
    notes: list[str] = field(default_factory=list)


def _layout(columns: BillingColumns, csv_file: CsvFile) -> _Layout:
    key = column_key
    currency_column: str | None = None
    fixed: str | None = None
    notes: list[str] = []
    if columns.currency is not None:
        if key(columns.currency) in csv_file.headers:
            currency_column = key(columns.currency)
        else:
            fixed = columns.currency.strip().upper()  # checked by the caller, a code or a problem
    elif "currency" in csv_file.headers:
        currency_column = "currency"
    else:
        fixed = "USD"
        notes.append("the file names no currency: its amounts are taken as USD (give the currency to be sure)")
    return _Layout(
        customer=key(columns.customer),
        date=key(columns.date),
        amount=key(columns.amount),
        service_start=key(columns.service_start) if columns.service_start else None,
        service_end=key(columns.service_end) if columns.service_end else None,
        product=key(columns.product) if columns.product else None,
        plan=key(columns.plan) if columns.plan else None,
        currency_column=currency_column,
        fixed_currency=fixed,
        invoice=key(columns.invoice) if columns.invoice else None,
        credits=key(columns.credits) if columns.credits else None,
        notes=notes,
    )


def _required_columns(columns: BillingColumns) -> list[str]:
    named = [columns.customer, columns.date, columns.amount]
    named += [
        c
        for c in (
            columns.service_start,
            columns.service_end,
            columns.product,
            columns.plan,
            columns.invoice,
            columns.credits,
        )
        if c
    ]
    return list(dict.fromkeys(column_key(c) for c in named))


_T = TypeVar("_T")


@dataclass
class _RowReader:
    """Reads the cells of one row, noting a problem for each bad one."""

    csv_file: CsvFile
    record: CsvRecord

    def problem(self, column: str | None, message: str) -> None:
        self.csv_file.problems.append(RowProblem(self.record.line, message, self.csv_file.header(column)))

    def cell(self, column: str | None, *, required: bool) -> str | None:
        if column is None or (value := self.record.cells.get(column)) is None:
            if required:
                self.problem(column, "a value is required")
            return None
        return value

    def text(self, column: str | None, limit: int, *, required: bool) -> str | None:
        value = self.cell(column, required=required)
        if value is not None and len(value) > limit:
            self.problem(column, f"is {len(value)} characters long; at most {limit} fit")
            return None
        return value

    def day(self, column: str | None, *, required: bool) -> date | None:
        value = self.cell(column, required=required)
        if value is None:
            return None
        try:
            return parse_date(value)
        except ValueError as exc:
            self.problem(column, str(exc))
            return None

    def parsed(self, column: str | None, parse: Callable[[str], _T]) -> _T | None:
        value = self.cell(column, required=True)
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.problem(column, str(exc))
            return None

    def service_period(self, layout: _Layout, *, end_exclusive: bool) -> tuple[date | None, date | None]:
        """The service period, both days included (an exclusive end is moved back a day)."""
        start = self.day(layout.service_start, required=False)
        end = self.day(layout.service_end, required=False)
        start_given = layout.service_start is not None and layout.service_start in self.record.cells
        end_given = layout.service_end is not None and layout.service_end in self.record.cells
        if start_given and not end_given:
            self.problem(layout.service_end, "a service end is needed: the row has a service start")
        elif end_given and not start_given:
            self.problem(layout.service_start, "a service start is needed: the row has a service end")
        elif start is not None and end is not None:
            if end_exclusive:
                if end <= start:
                    self.problem(
                        layout.service_end,
                        f"service end {end} is not after service start {start} (the end is the day after the period)",
                    )
                end -= timedelta(days=1)
            elif end < start:
                self.problem(layout.service_end, f"service end {end} is before service start {start}")
        return start, end


def _parse_row(csv_file: CsvFile, record: CsvRecord, layout: _Layout, end_exclusive: bool) -> _Line | None:
    """One row, parsed; None with a problem for each bad cell (several when it has several)."""
    problems_before = len(csv_file.problems)
    row = _RowReader(csv_file, record)
    customer = row.text(layout.customer, _MAX_CUSTOMER, required=True)
    invoice_day = row.day(layout.date, required=True)
    money = row.parsed(layout.amount, parse_money)
    cents, named_currency = money if money is not None else (None, None)
    start, end = row.service_period(layout, end_exclusive=end_exclusive)
    product = row.text(layout.product, _MAX_PRODUCT, required=False) or ""
    plan = row.text(layout.plan, _MAX_PLAN, required=False)
    invoice = row.text(layout.invoice, _MAX_CUSTOMER, required=False)
    credits = row.text(layout.credits, _MAX_CUSTOMER, required=False)
    currency = layout.fixed_currency
    if layout.currency_column is not None:
        currency = row.parsed(layout.currency_column, _currency_code)
    if named_currency and currency and named_currency != currency:
        amount = record.cells.get(layout.amount)
        row.problem(
            layout.amount, f"{quote_cell(amount or '')} is in {named_currency}, but the row's currency is {currency}"
        )

    if len(csv_file.problems) > problems_before:
        return None
    assert customer is not None and invoice_day is not None and cents is not None and currency is not None
    if credits is not None and cents >= 0:
        row.problem(layout.credits, f"names invoice {credits!r}, but the row is not a credit note (a negative amount)")
        return None
    return _Line(record.line, customer, invoice_day, cents, start, end, product, plan, currency, invoice, credits)


def _rows(count: int) -> str:
    return f"{count} row{'s' * (count != 1)}"


def _one_currency(csv_file: CsvFile, lines: list[_Line], layout: _Layout) -> str:
    """The file's currency; a problem at the first row of each further currency."""
    first_row: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)
    for line in lines:
        first_row.setdefault(line.currency, line.line)
        counts[line.currency] += 1
    if not first_row:
        return layout.fixed_currency or "USD"
    currencies = list(first_row)
    main = currencies[0]
    for other in currencies[1:]:
        csv_file.problems.append(
            RowProblem(
                first_row[other],
                f"the file mixes currencies: {other} here ({_rows(counts[other])} in all) but {main} from row "
                f"{first_row[main]} ({_rows(counts[main])}); one import takes one currency: split the export",
                csv_file.header(layout.currency_column),
            )
        )
    return main


# --------------------------------------------------------------------------------------------
# from rows to months


_Key = tuple[str, str, date]  # customer, product, month


def _credited(csv_file: CsvFile, lines: list[_Line], layout: _Layout) -> dict[int, _Line]:
    """Each credit note without a service period that names the invoice it credits -> that invoice
    (the customer's row with that number); a problem for a number the file does not hold."""
    invoices = {(line.customer, line.invoice): line for line in lines if line.invoice is not None and line.cents > 0}
    found: dict[int, _Line] = {}
    for line in lines:
        if line.credits is None or line.start is not None:
            continue  # a service period says which months it refunds
        invoice = invoices.get((line.customer, line.credits))
        if invoice is None:
            message = f"credits invoice {line.credits!r}, which is not an invoice of {line.customer!r} in the file"
            csv_file.problems.append(RowProblem(line.line, message, csv_file.header(layout.credits)))
        else:
            found[line.line] = invoice
    return found


def _monthly(
    lines: list[_Line], by: Spread, credited: dict[int, _Line] | None = None
) -> tuple[dict[_Key, int], dict[_Key, list[int]]]:
    """Net cents per (customer, product, month), and the credit notes' rows in each.

    A credit note without a service period that names the invoice it credits is shared among that
    invoice's months as the invoice is (its mirror image when it credits it all); otherwise it is
    revenue of the month of its date."""
    cents: dict[_Key, int] = defaultdict(int)
    credit_rows: dict[_Key, list[int]] = defaultdict(list)
    for line in lines:
        invoice = (credited or {}).get(line.line)
        if line.start is not None and line.end is not None:
            shares = spread_cents(line.cents, line.start, line.end, by=by)
        elif invoice is not None and invoice.start is not None and invoice.end is not None:
            shares = spread_cents(line.cents, invoice.start, invoice.end, by=by)
        elif invoice is not None:
            shares = {_month(invoice.day): line.cents}
        else:
            shares = {_month(line.day): line.cents}
        for month, share in shares.items():
            key = (line.customer, line.product, month)
            cents[key] += share
            if line.cents < 0:
                credit_rows[key].append(line.line)
    return cents, credit_rows


def _money_text(cents: int) -> str:
    return f"{'-' if cents < 0 else ''}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _check_credits(csv_file: CsvFile, cents: dict[_Key, int], credit_rows: dict[_Key, list[int]], amount: str) -> None:
    for (customer, product, month), net in sorted(cents.items()):
        if net >= 0:
            continue
        rows = credit_rows[(customer, product, month)]
        of_product = f", product {product!r}," if product else ""
        csv_file.problems.append(
            RowProblem(
                rows[0],
                f"credit notes exceed invoices for {customer!r}{of_product} in {month:%Y-%m} (net "
                f"{_money_text(net)}): give each credit note the service period (and product) it refunds",
                csv_file.header(amount),
            )
        )


def _gaps(lines: list[_Line]) -> list[str]:
    """A warning naming the months, inside the file's dates, that have no row at all."""
    months = {_month(line.day) for line in lines}
    if not months:
        return []
    first, last = min(months), max(months)
    missing: list[date] = []
    month = first
    while month < last:
        if month not in months:
            missing.append(month)
        month = _next_month(month)
    if not missing:
        return []
    named = ", ".join(f"{m:%Y-%m}" for m in missing)
    return [
        f"no billing at all in {named}, although the file runs from {first:%Y-%m} to {last:%Y-%m}: "
        "is the export truncated? Imported anyway; such a month has only what longer service periods spread into it"
    ]


def _latest_plans(lines: list[_Line]) -> dict[str, str]:
    """Each customer's plan on its latest invoice (by date, then by row) that names one."""
    latest: dict[str, tuple[date, int, str]] = {}
    for line in lines:
        if line.plan is None or line.cents <= 0:
            continue
        seen = latest.get(line.customer)
        if seen is None or (line.day, line.line) > seen[:2]:
            latest[line.customer] = (line.day, line.line, line.plan)
    return {customer: plan for customer, (_, _, plan) in latest.items()}


# --------------------------------------------------------------------------------------------
# the import


@dataclass
class _RevenueFile:
    """A billing file read and checked on its own: its lines, currency and monthly entries."""

    csv_file: CsvFile
    layout: _Layout
    lines: list[_Line]
    currency: str
    entries: dict[_Key, int]  # (customer, product, month) -> cents, zeros left out
    plans: dict[str, str]  # customer -> the plan of their latest invoice
    warnings: list[str]
    months: tuple[date, date] | None  # the first and last month the file covers
    latest_day: date | None = None  # the latest invoice or credit note date

    @property
    def customers(self) -> list[str]:
        return sorted({line.customer for line in self.lines})


def _read_revenue(
    path: str | Path, columns: BillingColumns, *, spread: Spread, service_end_exclusive: bool
) -> _RevenueFile:
    csv_file = read_csv(path, "billing", _required_columns(columns))
    return revenue_of(csv_file, columns, spread=spread, service_end_exclusive=service_end_exclusive)


def revenue_of(
    csv_file: CsvFile, columns: BillingColumns, *, spread: Spread = Spread.MONTH, service_end_exclusive: bool = False
) -> _RevenueFile:
    """The invoices and credit notes of ``csv_file``'s records (a file, or a SQL source's batch),
    read and checked on their own: lines, currency, monthly entries; problems are kept in
    ``csv_file`` (raised by :func:`land_revenue`)."""
    layout = _layout(columns, csv_file)
    if layout.fixed_currency is not None:
        try:
            _currency_code(layout.fixed_currency)
        except ValueError:
            found = ", ".join(repr(h) for h in csv_file.headers.values())
            message = (
                f"currency {columns.currency!r} is neither a column of the file nor a three-letter code "
                f"such as USD; the header has {found}"
            )
            csv_file.problems.append(RowProblem(1, message))
    parsed = (_parse_row(csv_file, record, layout, service_end_exclusive) for record in csv_file.records)
    lines = [line for line in parsed if line is not None]
    currency = _one_currency(csv_file, lines, layout)
    cents, credit_rows = _monthly(lines, spread, _credited(csv_file, lines, layout))
    _check_credits(csv_file, cents, credit_rows, layout.amount)
    warnings = _gaps(lines)
    plans = _latest_plans(lines) if layout.plan else {}
    months = {month for (_, _, month) in cents} | {_month(line.day) for line in lines}
    entries = {key: value for key, value in cents.items() if value != 0}
    span = (min(months), max(months)) if months else None
    latest = max((line.day for line in lines), default=None)
    return _RevenueFile(csv_file, layout, lines, currency, entries, plans, warnings, span, latest)


def _known_accounts(conn: Connection, customers: list[str]) -> dict[str, tuple[int, str | None]]:
    """The file's customers that are accounts already: external id -> (id, plan)."""
    known: dict[str, tuple[int, str | None]] = {}
    for chunk in chunks(customers):
        query = select(_ACCOUNT.c.external_id, _ACCOUNT.c.id, _ACCOUNT.c.plan).where(_ACCOUNT.c.external_id.in_(chunk))
        known.update((external_id, (account_id, plan)) for external_id, account_id, plan in conn.execute(query))
    return known


def _refuse_unknown(revenue: _RevenueFile, unknown: list[str]) -> None:
    """A problem on the first row of each customer that is not an account (with the count of the others)."""
    csv_file = revenue.csv_file
    rows_of: dict[str, list[int]] = defaultdict(list)
    for line in revenue.lines:
        rows_of[line.customer].append(line.line)
    for customer in unknown:
        others = len(rows_of[customer]) - 1
        also = f" (and on {_rows(others).replace('row', 'more row')})" if others else ""
        csv_file.problems.append(
            RowProblem(
                rows_of[customer][0],
                f"unknown account {customer!r}{also}: import it first, or let this import create it "
                "(--create-accounts)",
                csv_file.header(revenue.layout.customer),
            )
        )


def _existing_revenue(
    conn: Connection, account_ids: Iterable[int], months: tuple[date, date]
) -> dict[tuple[int, str, date], tuple[int, str]]:
    """What the database holds in the file's months for these accounts: (cents, currency)."""
    existing: dict[tuple[int, str, date], tuple[int, str]] = {}
    first_month, last_month = months
    for ids in chunks(account_ids):
        query = select(
            _REVENUE.c.account_id, _REVENUE.c.product, _REVENUE.c.period, _REVENUE.c.mrr_cents, _REVENUE.c.currency,
        ).where(
            _REVENUE.c.account_id.in_(ids), _REVENUE.c.period >= first_month, _REVENUE.c.period <= last_month,
        )  # fmt: skip
        # (SQLAlchemy 2.1's stubs type these rows as Never)
        for account_id, product, period, mrr, entry_currency in cast(Any, conn.execute(query)):
            existing[(account_id, product, period)] = (int(mrr), entry_currency)
    return existing


def _count_changes(
    revenue: _RevenueFile,
    existing: dict[tuple[int, str, date], tuple[int, str]],
    id_of: dict[str, int],
    counts: dict[str, int],
) -> None:
    """Added, changed, unchanged and removed entries, compared with what the database held."""
    seen: set[tuple[int, str, date]] = set()
    for (customer, product, month), value in revenue.entries.items():
        if customer not in id_of:
            counts["added"] += 1
            continue
        key = (id_of[customer], product, month)
        seen.add(key)
        if key not in existing:
            counts["added"] += 1
        elif existing[key] == (value, revenue.currency):
            counts["unchanged"] += 1
        else:
            counts["changed"] += 1
    counts["removed"] = len(set(existing) - seen)


def _create_accounts(
    conn: Connection, revenue: _RevenueFile, unknown: list[str], now: datetime, id_of: dict[str, int], label: str
) -> list[dict[str, Any]]:
    """Insert the unknown customers as accounts (their ids into ``id_of``); their timeline events."""
    blank = Account.model_validate({"external_id": "-", "name": "-"}).model_dump(
        exclude={"id", "holdout_bucket", "external_id", "name"}
    )
    conn.execute(
        insert(_ACCOUNT),
        [
            {
                **blank, "external_id": customer, "name": customer[:_MAX_NAME], "plan": revenue.plans.get(customer),
                "currency": revenue.currency, "status": AccountStatus.ACTIVE.value, "created_at": now,
                "updated_at": now,
            }
            for customer in unknown
        ],
    )  # fmt: skip
    events: list[dict[str, Any]] = []
    for chunk in chunks(unknown):
        query = select(_ACCOUNT.c.external_id, _ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk))
        for external_id, account_id in cast(Any, conn.execute(query)):
            id_of[external_id] = account_id
            events.append(import_event(account_id, now, f"created from {label}", {"file": label}))
    return events


def _replace_revenue(conn: Connection, revenue: _RevenueFile, id_of: dict[str, int]) -> None:
    """The accounts' revenue in the file's months: deleted, then the file's entries inserted."""
    if revenue.months is not None:
        first_month, last_month = revenue.months
        for account_ids in chunks(id_of.values()):
            conn.execute(
                delete(_REVENUE).where(
                    _REVENUE.c.account_id.in_(account_ids),
                    _REVENUE.c.period >= first_month,
                    _REVENUE.c.period <= last_month,
                )
            )
    if revenue.entries:
        conn.execute(
            insert(_REVENUE),
            [
                {"account_id": id_of[customer], "period": month, "product": product, "mrr_cents": value,
                 "currency": revenue.currency}
                for (customer, product, month), value in sorted(revenue.entries.items())
            ],
        )  # fmt: skip


def _update_plans(
    conn: Connection,
    plan_updates: list[tuple[int, dict[str, Any]]],
    old_plan: dict[int, str | None],
    now: datetime,
    label: str,
) -> list[dict[str, Any]]:
    """Write the accounts' new plans; their timeline events."""
    update_in_batches(conn, _ACCOUNT, plan_updates, now)
    events: list[dict[str, Any]] = []
    for account_id, values in plan_updates:
        change = {"plan": (old_plan[account_id], values["plan"])}
        events.append(
            import_event(
                account_id, now, f"updated from {label}: {describe_changes(change)}",
                {"file": label, "changes": {"plan": list(change["plan"])}},
            )
        )  # fmt: skip
    return events


def _record_data_through(conn: Connection, day: date, now: datetime, *, given: bool) -> date:
    """Keep the date revenue's data runs through: ``day`` when given, else the later of the recorded
    one and ``day`` (an old month re-imported does not move it back)."""
    recorded = conn.execute(select(_SOURCE.c.data_through).where(_SOURCE.c.name == REVENUE_SOURCE)).scalar_one_or_none()
    through = day if given or recorded is None else max(recorded, day)
    if recorded is None:
        conn.execute(insert(_SOURCE).values(name=REVENUE_SOURCE, data_through=through, updated_at=now))
    elif recorded != through:
        conn.execute(
            update(_SOURCE).where(_SOURCE.c.name == REVENUE_SOURCE).values(data_through=through, updated_at=now)
        )
    return through


def import_revenue(
    engine: Engine,
    path: str | Path,
    columns: BillingColumns = BillingColumns(),
    *,
    spread: Spread = Spread.MONTH,
    service_end_exclusive: bool = False,
    create_accounts: bool = False,
    dry_run: bool = False,
    data_through: date | None = None,
    now: datetime | None = None,
) -> RevenueImportResult:
    """Replace the revenue of the file's accounts over the file's months (see the module's documentation).

    ``data_through``: the date the export's data runs through (by default its latest invoice or
    credit note date, or the one recorded before if later); months after it are never read as churn.

    Raises :class:`models.DataImportError` listing every problem at once (nothing written). With
    ``dry_run`` nothing is written and the counts say what would change. ``now`` (aware) stamps
    created accounts and timeline events; by default the current time.
    """
    moment = now or utcnow()
    revenue = _read_revenue(path, columns, spread=spread, service_end_exclusive=service_end_exclusive)
    results: list[RevenueImportResult] = []

    def write(conn: Connection) -> None:
        results.append(
            land_revenue(
                conn, revenue, now=moment, label=Path(path).name, create_accounts=create_accounts, dry_run=dry_run,
                data_through=data_through,
            )
        )  # fmt: skip

    write_all_or_nothing(engine, revenue.csv_file.name, write)
    result = results[0]
    logger.info(
        "%s: revenue %d rows, %d accounts (%d created), entries %d added, %d changed, %d removed%s",
        result.file,
        result.rows,
        result.accounts,
        result.created_accounts,
        result.added,
        result.changed,
        result.removed,
        " (dry run: nothing written)" if dry_run else "",
    )
    return result


def land_revenue(
    conn: Connection,
    revenue: _RevenueFile,
    *,
    now: datetime,
    label: str,
    create_accounts: bool = False,
    dry_run: bool = False,
    data_through: date | None = None,
) -> RevenueImportResult:
    """Replace the revenue of ``revenue``'s accounts over its months, in the caller's transaction
    (see :func:`import_revenue`); ``label`` names where it came from on the timeline."""
    csv_file, customers = revenue.csv_file, revenue.customers
    counts: dict[str, int] = defaultdict(int)
    through: list[date] = []
    known = _known_accounts(conn, customers)
    unknown = [c for c in customers if c not in known]
    if unknown and not create_accounts:
        _refuse_unknown(revenue, unknown)
    settle_problems(csv_file, skip_invalid=False)
    counts["created"] = len(unknown)
    existing = {}
    if revenue.months is not None:
        existing = _existing_revenue(conn, (account_id for account_id, _ in known.values()), revenue.months)
    id_of = {customer: account_id for customer, (account_id, _) in known.items()}
    _count_changes(revenue, existing, id_of, counts)
    plan_updates = [
        (known[customer][0], {"plan": plan})
        for customer, plan in revenue.plans.items()
        if customer in known and known[customer][1] != plan
    ]
    counts["plans"] = len(plan_updates)
    if not dry_run:
        events = _create_accounts(conn, revenue, unknown, now, id_of, label) if unknown else []
        _replace_revenue(conn, revenue, id_of)
        if plan_updates:
            old_plan = {account_id: plan for account_id, plan in known.values()}
            events += _update_plans(conn, plan_updates, old_plan, now, label)
        if events:
            conn.execute(insert(_TIMELINE), events)
        day = data_through or revenue.latest_day
        if day is not None:
            through.append(_record_data_through(conn, day, now, given=data_through is not None))
    first_month, last_month = revenue.months or (None, None)
    return RevenueImportResult(
        file=csv_file.name,
        currency=revenue.currency,
        rows=len(revenue.lines),
        credit_notes=sum(1 for line in revenue.lines if line.cents < 0),
        accounts=len(customers),
        created_accounts=counts["created"],
        first_month=first_month,
        last_month=last_month,
        added=counts["added"],
        changed=counts["changed"],
        unchanged=counts["unchanged"],
        removed=counts["removed"],
        plans_updated=counts["plans"],
        warnings=tuple(revenue.warnings),
        notes=tuple(revenue.layout.notes),
        dry_run=dry_run,
        data_through=through[0] if through else (data_through or revenue.latest_day),
    )
