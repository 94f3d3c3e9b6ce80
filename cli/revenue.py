"""``retain revenue …``: import MRR from a billing export, and a short retention summary."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json
from .report import table_renderables

if TYPE_CHECKING:
    from flows.reports.summary import RevenueSummary
    from integrations.sources import RevenueImportResult

revenue_app = typer.Typer(
    help="Import revenue (MRR) from a billing export; GRR, NRR and the MRR waterfall.", no_args_is_help=True
)
app.add_typer(revenue_app, name="revenue")

#: ``integrations.sources.billing.Spread`` written out, so that building the CLI needs none of the
#: importers; tests/cli/test_startup.py holds the two equal
SpreadChoice = Literal["day", "month"]

_COLUMN = "COLUMN"


def _print(text: str, *, style: str | None = None, err: bool = False) -> None:
    (err_console if err else console).print(text, style=style, markup=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------
# import


def _report_import(result: RevenueImportResult) -> None:
    where = f"{result.file} (dry run, nothing written)" if result.dry_run else result.file
    credit = f", {result.credit_notes} credit note{'s' * (result.credit_notes != 1)}" if result.credit_notes else ""
    _print(
        f"{where}: {result.rows} row{'s' * (result.rows != 1)}{credit}, "
        f"{result.accounts} account{'s' * (result.accounts != 1)}, in {result.currency}"
    )
    if result.first_month is not None and result.last_month is not None:
        verbs = ("to add", "to change", "unchanged", "to remove") if result.dry_run else (
            "added", "changed", "unchanged", "removed"
        )  # fmt: skip
        counts = (result.added, result.changed, result.unchanged, result.removed)
        _print(
            f"months {result.first_month:%Y-%m} to {result.last_month:%Y-%m} of these accounts replaced: "
            + ", ".join(f"{n} {verb}" for n, verb in zip(counts, verbs, strict=True))
            + " (monthly revenue entries)"
        )
    if result.data_through is not None and not result.dry_run:
        _print(f"data through {result.data_through}: no month after it is read as churn (--data-through)")
    if result.created_accounts:
        created = "to create" if result.dry_run else "created"
        _print(f"accounts {created}: {result.created_accounts}")
    if result.plans_updated:
        _print(f"plans {'to update' if result.dry_run else 'updated'}: {result.plans_updated}")
    for note in result.notes:
        _print(f"note: {note}")
    for warning in result.warnings:
        _print(f"warning: {warning}", style="yellow", err=True)


@revenue_app.command("import")
def import_revenue_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="The billing export (CSV, UTF-8).",
            metavar="FILE.csv",
            exists=True,
            dir_okay=False,
            readable=True,
            show_default=False,
        ),
    ],
    customer: Annotated[
        str, typer.Option("--customer", metavar=_COLUMN, help="The column with the account's external id.")
    ] = "customer",
    date_column: Annotated[
        str, typer.Option("--date", metavar=_COLUMN, help="The invoice (or credit note) date, YYYY-MM-DD.")
    ] = "date",
    amount: Annotated[
        str,
        typer.Option(
            "--amount", metavar=_COLUMN, help="The amount: 1,200.50 or $1200.50; negative, or (1,200.50), for a credit."
        ),
    ] = "amount",
    service_start: Annotated[
        str | None,
        typer.Option(
            "--service-start", metavar=_COLUMN, help="The first day the invoice pays for (with --service-end)."
        ),
    ] = None,
    service_end: Annotated[
        str | None,
        typer.Option("--service-end", metavar=_COLUMN, help="The last day the invoice pays for (included)."),
    ] = None,
    service_end_exclusive: Annotated[
        bool,
        typer.Option(
            "--service-end-exclusive", help="The service end is the day after the period (as Stripe writes it)."
        ),
    ] = False,
    spread: Annotated[
        SpreadChoice,
        typer.Option(
            "--spread",
            case_sensitive=False,
            help="Share a service period among months with a whole month as one, so a flat contract is flat MRR "
            "(month), or by its days in each (day).",
        ),
    ] = "month",
    product: Annotated[
        str | None, typer.Option("--product", metavar=_COLUMN, help="The product line (MRR is kept per product).")
    ] = None,
    plan: Annotated[
        str | None,
        typer.Option("--plan", metavar=_COLUMN, help="The plan; the latest invoice's becomes the account's plan."),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option(
            "--currency",
            metavar="COLUMN|CODE",
            help="The currency column, or one code for the whole file (e.g. EUR).",
            show_default="a 'currency' column, else USD",
        ),
    ] = None,
    invoice: Annotated[
        str | None, typer.Option("--invoice", metavar=_COLUMN, help="The invoice (or credit note) number.")
    ] = None,
    credits: Annotated[
        str | None,
        typer.Option(
            "--credits",
            metavar=_COLUMN,
            help="On a credit note, the number of the invoice it credits: without a service period it nets "
            "against that invoice's months (with --invoice).",
        ),
    ] = None,
    data_through: Annotated[
        str | None,
        typer.Option(
            "--data-through",
            metavar="YYYY-MM-DD",
            help="The date the export's data runs through: no month after it is read as churn.",
            show_default="the latest invoice date (or the one recorded before, if later)",
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="YYYY-MM-DD",
            help="Derive the accounts' state (status, churn and other dates, MRR/ARR) as of this date.",
            show_default="now",
        ),
    ] = None,
    create_accounts: Annotated[
        bool,
        typer.Option("--create-accounts", help="Create the customers that are not accounts yet (named after the id)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the file and count what would change; write nothing.")
    ] = False,
) -> None:
    """Replace the MRR of the accounts in a billing export, month by month, per product.

    Each row is an invoice or a credit note (a negative amount). Without a service period an amount is revenue of the month of its date; with one (--service-start and --service-end, both days included) it is spread over the months of the period, to the cent. Invoices and credits are netted per account, product and month.

    For every account in the file, every month from the file's first to its last month is replaced by what the file says (accounts not in the file are left alone), so re-importing a file changes nothing.

    All or nothing: missing columns, bad dates or amounts, a service end before its start, mixed currencies, unknown customers and credits larger than their month's invoices are all listed at once and nothing is written. A month with no billing at all inside the file's dates is a warning.
    """
    from flows.analytics.state import derive_account_state
    from integrations.sources import BillingColumns, Spread, import_revenue
    from models import DataImportError, utcnow

    through = _day_option(data_through, "--data-through")
    state_day = _day_option(as_of, "--as-of")
    if credits is not None and invoice is None:
        raise typer.BadParameter("--credits needs --invoice (the numbers it names)", param_hint="--credits")
    if (service_start is None) != (service_end is None):
        raise typer.BadParameter(
            "give both --service-start and --service-end, or neither", param_hint="--service-start/--service-end"
        )
    columns = BillingColumns(
        customer=customer,
        date=date_column,
        amount=amount,
        service_start=service_start,
        service_end=service_end,
        product=product,
        plan=plan,
        currency=currency,
        invoice=invoice,
        credits=credits,
    )
    engine = state(ctx).engine()
    now = utcnow()
    try:
        result = import_revenue(
            engine,
            file,
            columns,
            spread=Spread(spread),
            service_end_exclusive=service_end_exclusive,
            create_accounts=create_accounts,
            dry_run=dry_run,
            data_through=through,
            now=now,
        )
    except DataImportError as exc:
        for problem in exc.problems:
            _print(problem.format(exc.file), err=True)
        count = len(exc.problems)
        _print(
            f"error: nothing was written from {exc.file} ({count} problem{'s' * (count != 1)})", style="red", err=True
        )
        raise typer.Exit(1) from None
    _report_import(result)
    if not dry_run:
        moment = now if state_day is None else datetime.combine(state_day, time(23, 59, 59), tzinfo=UTC)
        with engine.begin() as conn:
            derived = derive_account_state(conn, moment, now=now)
        _print(derived.line())


# --------------------------------------------------------------------------------------------
# summary


def _day_option(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date: write YYYY-MM-DD, e.g. 2027-03-31", param_hint=name
        ) from None


def _month_option(value: str | None) -> date | None:
    if value is None:
        return None
    found = re.fullmatch(r"(\d{4})-(\d{1,2})", value.strip())
    if not found or not 1 <= int(found[2]) <= 12:
        raise typer.BadParameter(f"{value!r} is not a month: write YYYY-MM, e.g. 2027-03")
    return date(int(found[1]), int(found[2]), 1)


@revenue_app.command("summary")
def summary(
    ctx: typer.Context,
    month: Annotated[
        str | None,
        typer.Option(
            "--month",
            metavar="YYYY-MM",
            help="The last month reported; the waterfall shows the 12 months up to it and GRR/NRR compare it "
            "with 12 months before.",
            show_default="the latest month with revenue, not after this one",
        ),
    ] = None,
    segment: Annotated[
        str | None, typer.Option("--segment", help="Only the accounts of this segment.", show_default="all")
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option("--currency", metavar="CODE", help="The currency to report, when revenue is in several."),
    ] = None,
    gross_margin: Annotated[
        float,
        typer.Option(
            "--gross-margin", min=0.1, max=100, metavar="PERCENT", help="Gross margin for lifetime value, in percent."
        ),
    ] = 80.0,
    fmt: TableOrJson = Format.table,
) -> None:
    """The MRR waterfall of the last 12 months, GRR and NRR, logo churn, expansion and lifetime value.

    Definitions: docs/metrics.md. Money is in the revenue's currency; ARR is 12 × MRR.
    """
    from sqlmodel import Session

    from flows.reports.summary import revenue_summary
    from models import utcnow

    last = _month_option(month)
    with Session(state(ctx).engine()) as s:
        result = revenue_summary(
            s, month=last, today=utcnow().date(), segment=segment, currency=currency, gross_margin=gross_margin / 100
        )
    if fmt is Format.json:
        echo_json(result.to_dict())
    elif result.month is None:
        if result.currencies:
            _print(f"no revenue in {result.currency}; the revenue is in {', '.join(result.currencies)} (--currency)")
        else:
            where = f" in segment {segment!r}" if segment else ""
            _print(f"no revenue{where} yet (`retain revenue import FILE.csv`)")
    else:
        _print_summary(result, asked=currency)


def _print_summary(result: RevenueSummary, *, asked: str | None) -> None:
    from flows.reports.format import money, percent

    assert result.month and result.retention and result.logos and result.expansion and result.lifetime_value
    others = result.other_currencies
    if others and asked is None:
        _print(
            f"the revenue is in {len(result.currencies)} currencies ({', '.join(result.currencies)}): this summary "
            f"is in {result.currency}, the one most accounts pay in (never converted). For another: --currency "
            f"{others[0]}",
            style="yellow",
        )
    for part in table_renderables(result.waterfall_table(), console.width):
        console.print(part)

    def cash(cents: int | None) -> str:
        return money(cents, result.currency)

    retention, logos, expansion, ltv = result.retention, result.logos, result.expansion, result.lifetime_value
    if retention.cohort_accounts:
        _print(
            f"GRR {percent(retention.grr)}, NRR {percent(retention.nrr)}: the {retention.cohort_accounts} "
            f"account{'s' * (retention.cohort_accounts != 1)} with MRR in {retention.start_month:%Y-%m}, "
            f"in {retention.end_month:%Y-%m} (starting MRR {cash(retention.starting_mrr)}, retained "
            f"{cash(retention.retained_mrr)}, ending {cash(retention.ending_mrr)}); "
            f"{retention.retained_accounts} still paying ({percent(retention.logo_retention)})"
        )
    else:
        _print(f"GRR, NRR: n/a (no revenue in {retention.start_month:%Y-%m}, 12 months before {result.month:%Y-%m})")
    _print(
        f"logo churn {percent(logos.churn_rate)} a month ({logos.churned_accounts} lost over "
        f"{logos.account_months} account-months); {logos.new_accounts} new, {logos.reactivated_accounts} won back"
    )
    line = f"expansion {percent(expansion.expansion_rate)} of starting MRR a month"
    if expansion.upsell is not None:
        line += (
            f"; upsell {cash(expansion.upsell)} ({percent(expansion.upsell_rate)} of accounts a month), "
            f"cross-sell {cash(expansion.cross_sell)} ({percent(expansion.cross_sell_rate)} of accounts a month)"
        )
    _print(line)
    if ltv.value is not None:
        _print(
            f"lifetime value {cash(ltv.value)} (ARPA {cash(ltv.arpa)} × {result.gross_margin * 100:g}% gross "
            f"margin ÷ {percent(ltv.churn_rate)} monthly logo churn)"
        )
    else:
        _print(f"lifetime value: n/a ({ltv.note})")
