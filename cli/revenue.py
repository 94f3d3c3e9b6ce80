"""``retain revenue …``: import MRR from a billing export, and a short retention summary."""

from __future__ import annotations

import json
import re
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import Session, col, select

from flows.analytics.metrics import (
    add_months,
    arr_cents,
    cohort_retention,
    currencies,
    expansion_metrics,
    last_revenue_month,
    lifetime_value,
    load_product_mrr,
    logo_metrics,
    main_currency,
    month_range,
    revenue_months,
    total_mrr,
    waterfall,
)
from flows.reports.reports import Column, ReportTable
from integrations.sources.billing import BillingColumns, RevenueImportResult, Spread, import_revenue
from models import Account, DataImportError, NotFoundError, utcnow

from ._app import app, console, err_console, state
from .report import table_renderables

revenue_app = typer.Typer(
    help="Import revenue (MRR) from a billing export; GRR, NRR and the MRR waterfall.", no_args_is_help=True
)
app.add_typer(revenue_app, name="revenue")


class Format(StrEnum):
    table = "table"
    json = "json"


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
        Spread,
        typer.Option(
            "--spread",
            case_sensitive=False,
            help="Share a service period among months by its days in each (day), or a whole month as one (month).",
        ),
    ] = Spread.DAY,
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
    )
    engine = state(ctx).engine()
    try:
        result = import_revenue(
            engine,
            file,
            columns,
            spread=spread,
            service_end_exclusive=service_end_exclusive,
            create_accounts=create_accounts,
            dry_run=dry_run,
            now=utcnow(),
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


# --------------------------------------------------------------------------------------------
# summary


def _month_option(value: str | None) -> date | None:
    if value is None:
        return None
    found = re.fullmatch(r"(\d{4})-(\d{1,2})", value.strip())
    if not found or not 1 <= int(found[2]) <= 12:
        raise typer.BadParameter(f"{value!r} is not a month: write YYYY-MM, e.g. 2027-03")
    return date(int(found[1]), int(found[2]), 1)


def _money(cents: int | None) -> str:
    if cents is None:
        return "n/a"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def _percent(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def _check_segment(session: Session, segment: str) -> None:
    known = sorted({s for s in session.exec(select(Account.segment).where(col(Account.segment).is_not(None))) if s})
    if segment not in known:
        listed = ", ".join(repr(s) for s in known) if known else "none: no account has a segment"
        raise NotFoundError(f"no account is in segment {segment!r}; the segments are {listed}")


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
    fmt: Annotated[
        Format, typer.Option("--format", help="table for people, json for scripts.", case_sensitive=False)
    ] = Format.table,
) -> None:
    """The MRR waterfall of the last 12 months, GRR and NRR, logo churn, expansion and lifetime value.

    Definitions: docs/metrics.md. Money is in the revenue's currency; ARR is 12 × MRR.
    """
    last = _month_option(month)
    engine = state(ctx).engine()
    with Session(engine) as s:
        if segment is not None:
            _check_segment(s, segment)
        found = currencies(s, segment)
        # several currencies and none chosen: the one most accounts pay in, said (never converted)
        chosen = currency.upper() if currency else main_currency(s, segment)
        products = load_product_mrr(s, segment, currency=chosen) if chosen else {}
    others = [code for code in found if code != chosen]
    mrr = total_mrr(products)
    span = revenue_months(mrr)
    if span is None:
        if fmt is Format.json:
            empty = {"currency": chosen, "currencies": found, "segment": segment, "month": None}
            typer.echo(json.dumps(empty, indent=2))
        elif found:
            _print(f"no revenue in {chosen}; the revenue is in {', '.join(found)} (--currency)")
        else:
            where = f" in segment {segment!r}" if segment else ""
            _print(f"no revenue{where} yet (`retain revenue import FILE.csv`)")
        return
    if last is None:  # the book's latest month (in any currency) that is not after this one
        this_month = utcnow().date().replace(day=1)
        with Session(engine) as s:
            last = last_revenue_month(s, segment, until=this_month) or last_revenue_month(s, segment) or span[1]
    if last < span[0]:
        raise NotFoundError(f"no revenue up to {last:%Y-%m}: it starts in {span[0]:%Y-%m}")
    months = month_range(max(add_months(last, -11), span[0]), last)
    rows = waterfall(mrr, months)
    retention = cohort_retention(mrr, add_months(last, -12))
    logos = logo_metrics(mrr, months)
    named_products = products if any(product for (_, product, _) in products) else None
    expansion = expansion_metrics(mrr, months, named_products)
    ltv = lifetime_value(mrr, months, gross_margin / 100)

    if fmt is Format.json:
        document: dict[str, Any] = {
            "currency": chosen,
            "currencies": found,
            "segment": segment,
            "month": f"{last:%Y-%m}",
            "waterfall": [{**row.to_dict(), "ending_arr": arr_cents(row.ending)} for row in rows],
            "retention": retention.to_dict(),
            "logos": logos.to_dict(),
            "expansion": expansion.to_dict(),
            "lifetime_value": ltv.to_dict(),
        }
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return

    of = f", segment {segment}" if segment else ""
    if others and currency is None:
        _print(
            f"the revenue is in {len(found)} currencies ({', '.join(found)}): this summary is in {chosen}, the one "
            f"most accounts pay in (never converted). For another: --currency {others[0]}",
            style="yellow",
        )
    table = ReportTable(
        "waterfall",
        f"MRR waterfall in {chosen}{of}: {months[0]:%Y-%m} to {months[-1]:%Y-%m}",
        [
            Column("month"), Column("starting", "money"), Column("new", "money"), Column("expansion", "money"),
            Column("contraction", "money", short="contr."), Column("churn", "money"),
            Column("reactivation", "money", short="react."), Column("ending", "money"), Column("ARR", "money"),
        ],
    )  # fmt: skip
    for row in rows:
        table.rows.append([
            f"{row.month:%Y-%m}", row.starting, row.new, row.expansion, -row.contraction, -row.churn,
            row.reactivation, row.ending, arr_cents(row.ending),
        ])  # fmt: skip
    for part in table_renderables(table, console.width):
        console.print(part)

    def _cash(cents: int | None) -> str:
        return f"{_money(cents)} {chosen}" if cents is not None else _money(cents)

    if retention.cohort_accounts:
        _print(
            f"GRR {_percent(retention.grr)}, NRR {_percent(retention.nrr)}: the {retention.cohort_accounts} "
            f"account{'s' * (retention.cohort_accounts != 1)} with MRR in {retention.start_month:%Y-%m}, "
            f"in {retention.end_month:%Y-%m} (starting MRR {_cash(retention.starting_mrr)}, retained "
            f"{_cash(retention.retained_mrr)}, ending {_cash(retention.ending_mrr)}); "
            f"{retention.retained_accounts} still paying ({_percent(retention.logo_retention)})"
        )
    else:
        _print(f"GRR, NRR: n/a (no revenue in {retention.start_month:%Y-%m}, 12 months before {last:%Y-%m})")
    _print(
        f"logo churn {_percent(logos.churn_rate)} a month ({logos.churned_accounts} lost over "
        f"{logos.account_months} account-months); {logos.new_accounts} new, {logos.reactivated_accounts} won back"
    )
    line = f"expansion {_percent(expansion.expansion_rate)} of starting MRR a month"
    if expansion.upsell is not None:
        line += (
            f"; upsell {_cash(expansion.upsell)} ({_percent(expansion.upsell_rate)} of accounts a month), "
            f"cross-sell {_cash(expansion.cross_sell)} ({_percent(expansion.cross_sell_rate)} of accounts a month)"
        )
    _print(line)
    if ltv.value is not None:
        _print(
            f"lifetime value {_cash(ltv.value)} (ARPA {_cash(ltv.arpa)} × {gross_margin:g}% gross margin ÷ "
            f"{_percent(ltv.churn_rate)} monthly logo churn)"
        )
    else:
        _print(f"lifetime value: n/a ({ltv.note})")
