"""Revenue import from a billing export: money, spreading to the cent, netting, the replacement rule,
every pre-flight problem with its exact message, and the `retain revenue import` command."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

import cli
from cli._app import console
from integrations.sources.billing import BillingColumns, Spread, import_revenue, parse_money, spread_cents
from models import Account, DataImportError, RevenueEntry, RowProblem, TimelineEvent

DATA = Path(__file__).parent.parent / "flows" / "data"
EXPORT = DATA / "billing_export.csv"
NOW = datetime(2028, 2, 3, 9, 0, tzinfo=UTC)
#: how billing_export.csv names its columns
EXPORT_COLUMNS = BillingColumns(
    customer="Customer",
    date="Invoice Date",
    amount="Amount",
    service_start="Service Start",
    service_end="Service End",
    product="Product",
    plan="Plan",
    currency="Currency",
)
SEGMENTS = {"acme": "enterprise", "bolt": "smb", "cargo": "smb", "delta": "smb", "echo": "smb", "fjord": "enterprise"}


def add_accounts(engine: Engine, segments: dict[str, str | None] = SEGMENTS, plan: str | None = None) -> None:
    with Session(engine) as s:
        for external_id, segment in segments.items():
            s.add(
                Account.model_validate(
                    {"external_id": external_id, "name": external_id.title(), "segment": segment, "plan": plan}
                )
            )
        s.commit()


def write(folder: Path, *rows: list[str], name: str = "billing.csv") -> Path:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = folder / name
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def stored(engine: Engine) -> dict[tuple[str, str, str], int]:
    """Revenue entries as {(customer, product, 'YYYY-MM'): cents}."""
    with Session(engine) as s:
        rows = s.exec(
            select(Account.external_id, RevenueEntry.product, RevenueEntry.period, RevenueEntry.mrr_cents).join(Account)
        )
        return {(c, p, f"{m:%Y-%m}"): int(cents) for c, p, m, cents in rows}


def currencies(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return set(s.exec(select(RevenueEntry.currency).distinct()))


def count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def months(first: str, last: str, dollars: float | dict[str, float]) -> dict[str, int]:
    """{'YYYY-MM': cents} for every month from first to last; ``dollars`` a flat amount or per month."""
    out = {}
    year, month = map(int, first.split("-"))
    while f"{year}-{month:02d}" <= last:
        key = f"{year}-{month:02d}"
        out[key] = round(100 * (dollars[key] if isinstance(dollars, dict) else dollars))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def entries(customer: str, product: str, by_month: dict[str, int]) -> dict[tuple[str, str, str], int]:
    return {(customer, product, month): cents for month, cents in by_month.items()}


# what billing_export.csv holds, worked out by hand from its rows
DAYS_2027 = {"01": 31, "02": 28, "03": 31, "04": 30, "05": 31, "06": 30,
             "07": 31, "08": 31, "09": 30, "10": 31, "11": 30, "12": 31}  # fmt: skip
EXPECTED = {
    # acme: 3,650.00 for 2027-01-01..2027-12-31 = 365 days, exactly 10.00 a day; renewed with 3,660.00 for
    # 2028-01-01..2028-12-31 = 366 days (leap year), again 10.00 a day: each month is 10.00 × its days
    **entries("acme", "Platform", months("2027-01", "2027-12", {f"2027-{m}": 10 * d for m, d in DAYS_2027.items()})),
    **entries(
        "acme", "Platform",
        months("2028-01", "2028-12", {f"2028-{m}": 10 * (29 if m == "02" else d) for m, d in DAYS_2027.items()}),
    ),
    # acme's second product from July: 100.00 a month, no service period (the month of the date)
    **entries("acme", "Analytics", months("2027-07", "2028-01", 100)),
    # bolt: 500.00 a month, 900.00 from June; the credit note (100.00) dated 2027-09-15 nets into September
    **entries("bolt", "Platform", {**months("2027-01", "2027-05", 500), **months("2027-06", "2028-01", 900),
                                   "2027-09": 900_00 - 100_00}),
    # cargo: 400.00, 250.00 from April; the credit note of 50.00 dated 2027-06-03 refunds May (its service
    # period), so May is 250.00 - 50.00 = 200.00
    **entries("cargo", "Platform", {**months("2027-01", "2027-03", 400), **months("2027-04", "2028-01", 250),
                                    "2027-05": 250_00 - 50_00}),
    # delta: 300.00 for three months, then nothing (churned in April)
    **entries("delta", "Platform", months("2027-01", "2027-03", 300)),
    # echo: 200.00 for two months, nothing March to June, back at 250.00 from July
    **entries("echo", "Platform", {**months("2027-01", "2027-02", 200), **months("2027-07", "2028-01", 250)}),
    # fjord: a new logo from March at 1,000.00
    **entries("fjord", "Platform", months("2027-03", "2028-01", 1000)),
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# spreading and money


def test_an_annual_invoice_spread_by_day_is_exact_to_the_cent():
    shares = spread_cents(1_200_000, date(2027, 3, 15), date(2028, 3, 14))
    # 366 days (29 in February 2028). Exact share of a month = 1,200,000 × days / 366:
    #   17 days (March 2027) 55,737.70 | 30 days 98,360.66 | 31 days 101,639.34 | 29 days 95,081.97 | 14 days 45,901.64
    # whole cents: 55,737 + 4 × 98,360 + 6 × 101,639 + 95,081 + 45,901 = 1,199,993, so 7 cents are left; they go
    # to the largest fractions: Feb 2028 (.97), Mar 2027 (.70), the four 30-day months (.66), Mar 2028 (.64)
    assert shares == {
        date(2027, 3, 1): 55_738, date(2027, 4, 1): 98_361, date(2027, 5, 1): 101_639, date(2027, 6, 1): 98_361,
        date(2027, 7, 1): 101_639, date(2027, 8, 1): 101_639, date(2027, 9, 1): 98_361, date(2027, 10, 1): 101_639,
        date(2027, 11, 1): 98_361, date(2027, 12, 1): 101_639, date(2028, 1, 1): 101_639, date(2028, 2, 1): 95_082,
        date(2028, 3, 1): 45_902,
    }  # fmt: skip
    assert sum(shares.values()) == 1_200_000


def test_spread_by_month_counts_a_whole_month_as_one_whatever_its_length():
    shares = spread_cents(1_200_000, date(2027, 3, 15), date(2028, 3, 14), by=Spread.MONTH)
    # weights: March 2027 17/31, eleven whole months 1 each, March 2028 14/31: 12 months in all, 100,000 a month;
    # March 2027 100,000 × 17/31 = 54,838.71, March 2028 100,000 × 14/31 = 45,161.29: one cent left, to .71
    assert shares == {date(2027, 3, 1): 54_839, date(2028, 3, 1): 45_161} | {
        date(2027 + (m > 12), (m - 1) % 12 + 1, 1): 100_000 for m in range(4, 15)
    }
    assert sum(shares.values()) == 1_200_000


@pytest.mark.parametrize("cents", [1, 2, 99, 100_001, 365_000, 999_999_999])
@pytest.mark.parametrize("by", list(Spread))
def test_shares_always_add_up_and_a_credit_mirrors_its_invoice(cents, by):
    start, end = date(2027, 1, 31), date(2029, 2, 1)
    invoice = spread_cents(cents, start, end, by=by)
    assert sum(invoice.values()) == cents
    assert spread_cents(-cents, start, end, by=by) == {month: -share for month, share in invoice.items()}


def test_a_period_inside_one_month_stays_in_it_and_a_backwards_period_is_refused():
    assert spread_cents(5_000, date(2027, 2, 10), date(2027, 2, 10)) == {date(2027, 2, 1): 5_000}
    with pytest.raises(ValueError, match="ends"):
        spread_cents(5_000, date(2027, 2, 10), date(2027, 2, 9))


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1200", (120_000, None)),
        ("1,200.50", (120_050, None)),
        ("$1,200.50", (120_050, None)),
        ("1 200.50 €", (120_050, "EUR")),
        ("1'200.50", (120_050, None)),
        ("EUR 1200.50", (120_050, "EUR")),
        ("1200.50 usd", (120_050, "USD")),
        ("£12", (1_200, "GBP")),
        ("-1,200.50", (-120_050, None)),
        ("\u22121200.50", (-120_050, None)),  # a typographic minus
        ("-$1,200.50", (-120_050, None)),
        ("$-1,200.50", (-120_050, None)),
        ("(1,200.50)", (-120_050, None)),
        ("($1,200.50)", (-120_050, None)),
        ("12.500", (1_250, None)),  # trailing zeros are still cents
        ("0", (0, None)),
    ],
)
def test_amounts(text, parsed):
    assert parse_money(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("twelve", "'twelve' is not an amount: write digits with '.' for decimals, e.g. 1200.50, $1,200.50, or "
                   "-1,200.50 or (1,200.50) for a credit note"),
        ("12,50", "'12,50' has a decimal comma: write '.' for decimals (a comma may only separate thousands)"),
        ("12.345", "'12.345' has more than two decimals: amounts are kept to the cent"),
        ("1,20,000", "'1,20,000' is not an amount: write digits with '.' for decimals, e.g. 1200.50, $1,200.50, or "
                     "-1,200.50 or (1,200.50) for a credit note"),
        ("--5", "'--5' is not an amount: write digits with '.' for decimals, e.g. 1200.50, $1,200.50, or "
                "-1,200.50 or (1,200.50) for a credit note"),
        ("EUR £5", "'EUR £5' names two currencies, GBP and EUR"),
    ],
)  # fmt: skip
def test_amounts_that_are_refused(text, message):
    with pytest.raises(ValueError) as raised:
        parse_money(text)
    assert str(raised.value) == message


# --------------------------------------------------------------------------------------------
# importing the export


def test_the_export_becomes_mrr_per_account_product_and_month_on_both_databases(engine):
    add_accounts(engine, plan="Trial")
    result = import_revenue(engine, EXPORT, EXPORT_COLUMNS, now=NOW, spread=Spread.DAY)

    assert stored(engine) == EXPECTED
    assert currencies(engine) == {"USD"}
    # 60 rows, two of them credit notes; acme's renewal reaches the months to 2028-12
    assert (result.rows, result.credit_notes, result.accounts, result.currency) == (60, 2, 6, "USD")
    assert (result.first_month, result.last_month) == (date(2027, 1, 1), date(2028, 12, 1))
    assert (result.added, result.changed, result.unchanged, result.removed) == (len(EXPECTED), 0, 0, 0)
    assert (result.warnings, result.notes, result.created_accounts) == ((), (), 0)
    # the plan of each account's latest invoice; bolt's credit note names none
    with Session(engine) as s:
        plans = dict(s.exec(select(Account.external_id, Account.plan)).all())
        events = s.exec(select(TimelineEvent.summary).join(Account).where(Account.external_id == "bolt")).all()
    assert plans == {"acme": "Annual", "bolt": "Growth", "cargo": "Team", "delta": "Team", "echo": "Team",
                     "fjord": "Enterprise"}  # fmt: skip
    assert result.plans_updated == 6
    assert events == ["updated from billing_export.csv: plan 'Trial' → 'Growth'"]

    # the same file again: nothing changes
    again = import_revenue(engine, EXPORT, EXPORT_COLUMNS, now=NOW, spread=Spread.DAY)
    assert (again.added, again.changed, again.unchanged, again.removed, again.plans_updated) == (
        0, 0, len(EXPECTED), 0, 0
    )  # fmt: skip
    assert stored(engine) == EXPECTED


def test_an_import_replaces_the_files_months_for_its_accounts_only(sqlite_engine, tmp_path):
    add_accounts(sqlite_engine)
    import_revenue(sqlite_engine, EXPORT, EXPORT_COLUMNS, now=NOW, spread=Spread.DAY)
    # a corrected export of 2027-06..2027-07 for bolt and cargo: bolt's June is 950.00, bolt has nothing in July
    # any more, cargo adds a product in July
    correction = write(
        tmp_path,
        ["Customer", "Invoice Date", "Amount", "Product"],
        ["bolt", "2027-06-05", "950.00", "Platform"],
        ["cargo", "2027-06-01", "250.00", "Platform"],
        ["cargo", "2027-07-01", "250.00", "Platform"],
        ["cargo", "2027-07-01", "40.00", "Add-on"],
    )
    columns = BillingColumns(customer="Customer", date="Invoice Date", amount="Amount", product="Product")
    result = import_revenue(sqlite_engine, correction, columns, now=NOW, spread=Spread.DAY)

    assert (result.first_month, result.last_month) == (date(2027, 6, 1), date(2027, 7, 1))
    # bolt June changed, bolt July removed, cargo June and July unchanged, cargo's add-on added
    assert (result.added, result.changed, result.unchanged, result.removed) == (1, 1, 2, 1)
    expected = dict(EXPECTED)
    expected[("bolt", "Platform", "2027-06")] = 95_000
    del expected[("bolt", "Platform", "2027-07")]
    expected[("cargo", "Add-on", "2027-07")] = 4_000
    assert stored(sqlite_engine) == expected  # acme, echo, fjord and every other month untouched


def test_a_dry_run_checks_and_counts_but_writes_nothing(sqlite_engine):
    add_accounts(sqlite_engine, {"acme": None})
    result = import_revenue(
        sqlite_engine, EXPORT, EXPORT_COLUMNS, create_accounts=True, dry_run=True, now=NOW, spread=Spread.DAY
    )
    assert (result.dry_run, result.created_accounts, result.added, result.plans_updated) == (True, 5, 80, 1)
    assert count(sqlite_engine, RevenueEntry) == 0
    assert count(sqlite_engine, Account) == 1
    assert count(sqlite_engine, TimelineEvent) == 0


def test_create_accounts_makes_the_unknown_customers(engine, tmp_path):
    add_accounts(engine, {"acme": "enterprise"})
    path = write(
        tmp_path,
        ["Customer", "Date", "Total", "Plan"],
        ["acme", "2027-01-01", "100", "Pro"],
        ["Zeta Labs", "2027-01-03", "€50.00", "Starter"],
    )
    columns = BillingColumns(customer="Customer", amount="Total", plan="Plan", currency="EUR")
    result = import_revenue(engine, path, columns, create_accounts=True, now=NOW, spread=Spread.DAY)

    assert (result.created_accounts, result.currency) == (1, "EUR")
    with Session(engine) as s:
        zeta = s.exec(select(Account).where(Account.external_id == "Zeta Labs")).one()
        events = s.exec(select(TimelineEvent.summary).where(TimelineEvent.account_id == zeta.id)).all()
    assert (zeta.name, zeta.plan, zeta.currency, zeta.status, zeta.created_at) == (
        "Zeta Labs", "Starter", "EUR", "active", NOW
    )  # fmt: skip
    assert events == ["created from billing.csv"]
    assert stored(engine) == {("acme", "", "2027-01"): 10_000, ("Zeta Labs", "", "2027-01"): 5_000}
    assert currencies(engine) == {"EUR"}


def test_without_a_currency_the_file_is_taken_as_usd_and_the_result_says_so(sqlite_engine, tmp_path):
    add_accounts(sqlite_engine, {"acme": None})
    result = import_revenue(
        sqlite_engine, write(tmp_path, ["customer", "date", "amount"], ["acme", "2027-01-01", "5"]), spread=Spread.DAY
    )
    assert result.currency == "USD"
    assert result.notes == ("the file names no currency: its amounts are taken as USD (give the currency to be sure)",)


def test_an_exclusive_service_end_is_the_day_after_the_period(sqlite_engine, tmp_path):
    add_accounts(sqlite_engine, {"acme": None})
    # Stripe writes 2027-01-01..2028-01-01 for the year 2027: 365 days, 10.00 a day, nothing in January 2028
    path = write(tmp_path, ["customer", "date", "amount", "from", "to"],
                 ["acme", "2027-01-01", "3650", "2027-01-01", "2028-01-01"])  # fmt: skip
    columns = BillingColumns(service_start="from", service_end="to")
    import_revenue(sqlite_engine, path, columns, service_end_exclusive=True, now=NOW, spread=Spread.DAY)
    assert stored(sqlite_engine) == entries(
        "acme", "", months("2027-01", "2027-12", {f"2027-{m}": 10 * d for m, d in DAYS_2027.items()})
    )


# --------------------------------------------------------------------------------------------
# pre-flight checks


def test_every_problem_of_a_file_is_reported_at_once_and_nothing_is_written(sqlite_engine):
    add_accounts(sqlite_engine)
    columns = BillingColumns(
        customer="Customer", date="Invoice Date", amount="Amount", service_start="Service Start",
        service_end="Service End", currency="Currency",
    )  # fmt: skip
    with pytest.raises(DataImportError) as raised:
        import_revenue(sqlite_engine, DATA / "billing_problems.csv", columns, now=NOW, spread=Spread.DAY)

    assert raised.value.problems == [
        RowProblem(3, "'2027-13-01' is not a date: write YYYY-MM-DD, e.g. 2027-01-31", "Invoice Date"),
        RowProblem(4, "'twelve' is not an amount: write digits with '.' for decimals, e.g. 1200.50, $1,200.50, "
                      "or -1,200.50 or (1,200.50) for a credit note", "Amount"),
        RowProblem(5, "'12,50' has a decimal comma: write '.' for decimals (a comma may only separate thousands)",
                   "Amount"),
        RowProblem(6, "service end 2027-02-01 is before service start 2027-03-01", "Service End"),
        RowProblem(7, "a service end is needed: the row has a service start", "Service End"),
        RowProblem(8, "a value is required", "Invoice Date"),
        RowProblem(9, "'€100.00' is in EUR, but the row's currency is USD", "Amount"),
        RowProblem(10, "unknown account 'zeta' (and on 1 more row): import it first, or let this import create "
                       "it (--create-accounts)", "Customer"),
        # the good rows in USD are 2, 10, 11 and 13
        RowProblem(12, "the file mixes currencies: EUR here (1 row in all) but USD from row 2 (4 rows); one import "
                       "takes one currency: split the export", "Currency"),
        RowProblem(13, "credit notes exceed invoices for 'acme' in 2027-03 (net -500.00): give each credit note the "
                       "service period (and product) it refunds", "Amount"),
        RowProblem(14, "'US' is not a three-letter currency code such as USD or EUR", "Currency"),
    ]  # fmt: skip
    name = str(DATA / "billing_problems.csv")
    assert str(raised.value).splitlines()[0] == f"{name}: row 3, column 'Invoice Date': '2027-13-01' is not a date: " \
        "write YYYY-MM-DD, e.g. 2027-01-31"  # fmt: skip
    assert count(sqlite_engine, RevenueEntry) == 0


def test_missing_columns_are_named_with_the_columns_the_file_has(sqlite_engine, tmp_path):
    path = write(tmp_path, ["Customer", "Date", "Total"], ["acme", "2027-01-01", "5"])
    columns = BillingColumns(customer="Customer", date="Invoice Date", amount="Amount", service_start="From",
                             service_end="To")  # fmt: skip
    with pytest.raises(DataImportError) as raised:
        import_revenue(sqlite_engine, path, columns, now=NOW, spread=Spread.DAY)
    assert raised.value.problems == [
        RowProblem(1, "missing required columns 'invoice_date', 'amount', 'from', 'to'; "
                      "the header has 'Customer', 'Date', 'Total'")
    ]  # fmt: skip


def test_a_currency_that_is_neither_a_column_nor_a_code_is_refused(sqlite_engine, tmp_path):
    path = write(tmp_path, ["customer", "date", "amount"], ["acme", "2027-01-01", "5"])
    with pytest.raises(DataImportError) as raised:
        import_revenue(sqlite_engine, path, BillingColumns(currency="Währung"), now=NOW, spread=Spread.DAY)
    assert raised.value.problems[0] == RowProblem(
        1, "currency 'Währung' is neither a column of the file nor a three-letter code such as USD; "
           "the header has 'customer', 'date', 'amount'"
    )  # fmt: skip


def test_one_sided_service_periods_and_an_empty_exclusive_period_are_refused(sqlite_engine, tmp_path):
    add_accounts(sqlite_engine, {"acme": None})
    path = write(
        tmp_path,
        ["customer", "date", "amount", "start", "end"],
        ["acme", "2027-01-01", "5", "", "2027-01-31"],
        ["acme", "2027-01-01", "5", "2027-01-01", "2027-01-01"],
    )
    columns = BillingColumns(service_start="start", service_end="end")
    with pytest.raises(DataImportError) as raised:
        import_revenue(sqlite_engine, path, columns, service_end_exclusive=True, now=NOW, spread=Spread.DAY)
    assert raised.value.problems == [
        RowProblem(2, "a service start is needed: the row has a service end", "start"),
        RowProblem(3, "service end 2027-01-01 is not after service start 2027-01-01 (the end is the day after the "
                      "period)", "end"),
    ]  # fmt: skip


def test_a_month_without_any_billing_is_a_warning_naming_it(sqlite_engine, tmp_path):
    add_accounts(sqlite_engine, {"acme": None})
    path = write(
        tmp_path,
        ["customer", "date", "amount"],
        *(["acme", day, "100"] for day in ("2027-01-03", "2027-02-03", "2027-05-03", "2027-06-03", "2027-08-01")),
    )
    result = import_revenue(sqlite_engine, path, now=NOW, spread=Spread.DAY)
    assert result.warnings == (
        "no billing at all in 2027-03, 2027-04, 2027-07, although the file runs from 2027-01 to 2027-08: is the "
        "export truncated? Imported anyway; such a month has only what longer service periods spread into it",
    )
    assert count(sqlite_engine, RevenueEntry) == 5


# --------------------------------------------------------------------------------------------
# the command


@pytest.fixture
def retain(sqlite_engine, sqlite_url, capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 200)

    def run(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(["--database-url", sqlite_url, *map(str, args)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


EXPORT_OPTIONS = (
    "--customer", "Customer", "--date", "Invoice Date", "--amount", "Amount", "--service-start", "Service Start",
    "--service-end", "Service End", "--product", "Product", "--plan", "Plan", "--currency", "Currency",
    "--spread", "day",  # the figures above are spread by day (the default spreads by month)
)  # fmt: skip


def test_the_import_command_reports_what_it_replaced(retain, sqlite_engine):
    add_accounts(sqlite_engine)
    code, out, err = retain("revenue", "import", EXPORT, *EXPORT_OPTIONS, "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{EXPORT} (dry run, nothing written): 60 rows, 2 credit notes, 6 accounts, in USD",
        "months 2027-01 to 2028-12 of these accounts replaced: 80 to add, 0 to change, 0 unchanged, 0 to remove "
        "(monthly revenue entries)",
        "plans to update: 6",
    ]
    code, out, err = retain("revenue", "import", EXPORT, *EXPORT_OPTIONS)
    assert (code, err, out.splitlines()[1]) == (
        0, "", "months 2027-01 to 2028-12 of these accounts replaced: 80 added, 0 changed, 0 unchanged, 0 removed "
               "(monthly revenue entries)"
    )  # fmt: skip
    assert stored(sqlite_engine) == EXPECTED


def test_the_import_command_lists_every_problem_and_exits_1(retain, sqlite_engine, tmp_path):
    path = write(tmp_path, ["customer", "date", "amount"], ["ghost", "2027-01-01", "x"], ["ghost", "2027-02-30", "5"])
    code, out, err = retain("revenue", "import", path)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{path}: row 2, column 'amount': 'x' is not an amount: write digits with '.' for decimals, e.g. 1200.50, "
        "$1,200.50, or -1,200.50 or (1,200.50) for a credit note",
        f"{path}: row 3, column 'date': '2027-02-30' is not a date: write YYYY-MM-DD, e.g. 2027-01-31",
        f"error: nothing was written from {path} (2 problems)",
    ]


def test_a_service_start_without_an_end_is_a_usage_error(retain):
    code, _, err = retain("revenue", "import", EXPORT, "--service-start", "Service Start")
    assert code == 2
    assert "give both --service-start and --service-end, or neither" in err
