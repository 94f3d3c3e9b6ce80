"""The revenue summary (``retain revenue summary``): the MRR waterfall of the 12 months up to one
month, GRR and NRR of that month's 12-month cohort, logo churn, expansion and lifetime value, in one
currency. Built from the same metrics as the retention report (``flows.analytics.metrics``), with its
segment check and currency choice. Definitions: docs/metrics.md."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlmodel import Session

from flows.analytics.metrics import (
    ExpansionMetrics,
    LifetimeValue,
    LogoMetrics,
    Retention,
    WaterfallRow,
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
from flows.reports.reports import Column, ReportTable, check_segment
from models import NotFoundError

__all__ = ["RevenueSummary", "revenue_summary"]


@dataclass(frozen=True)
class RevenueSummary:
    """The summary, in cents of ``currency``. ``month`` is None when there is no revenue in it
    (and then the figures are None too)."""

    currency: str | None
    currencies: list[str]
    segment: str | None
    month: date | None
    gross_margin: float = 0.8
    waterfall: list[WaterfallRow] | None = None
    retention: Retention | None = None
    logos: LogoMetrics | None = None
    expansion: ExpansionMetrics | None = None
    lifetime_value: LifetimeValue | None = None

    @property
    def other_currencies(self) -> list[str]:
        return [code for code in self.currencies if code != self.currency]

    def to_dict(self) -> dict[str, Any]:
        head: dict[str, Any] = {"currency": self.currency, "currencies": self.currencies, "segment": self.segment}
        if self.month is None or self.waterfall is None:
            return {**head, "month": None}
        assert self.retention and self.logos and self.expansion and self.lifetime_value
        return {
            **head,
            "month": f"{self.month:%Y-%m}",
            "waterfall": [{**row.to_dict(), "ending_arr": arr_cents(row.ending)} for row in self.waterfall],
            "retention": self.retention.to_dict(),
            "logos": self.logos.to_dict(),
            "expansion": self.expansion.to_dict(),
            "lifetime_value": self.lifetime_value.to_dict(),
        }

    def waterfall_table(self) -> ReportTable:
        """The waterfall as a report table (money in cents; contraction and churn negative)."""
        rows = self.waterfall or []
        of = f", segment {self.segment}" if self.segment else ""
        span = f": {rows[0].month:%Y-%m} to {rows[-1].month:%Y-%m}" if rows else ""
        table = ReportTable(
            "waterfall",
            f"MRR waterfall in {self.currency}{of}{span}",
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
        return table


def revenue_summary(
    s: Session,
    *,
    month: date | None,
    today: date,
    segment: str | None = None,
    currency: str | None = None,
    gross_margin: float = 0.8,
) -> RevenueSummary:
    """The summary up to ``month`` (default: the book's latest month with revenue, in any currency,
    not after the month of ``today``; or the latest at all when all of it is later). With revenue in
    several currencies and no ``currency``, the one most accounts pay in (never converted).
    NotFoundError for an unknown segment or a month before the revenue starts."""
    check_segment(s, segment)
    found = currencies(s, segment)
    chosen = currency.upper() if currency else main_currency(s, segment)
    products = load_product_mrr(s, segment, currency=chosen) if chosen else {}
    mrr = total_mrr(products)
    span = revenue_months(mrr)
    if span is None:
        return RevenueSummary(chosen, found, segment, None, gross_margin)
    last = month
    if last is None:
        this_month = today.replace(day=1)
        last = last_revenue_month(s, segment, until=this_month) or last_revenue_month(s, segment) or span[1]
    if last < span[0]:
        raise NotFoundError(f"no revenue up to {last:%Y-%m}: it starts in {span[0]:%Y-%m}")
    months = month_range(max(add_months(last, -11), span[0]), last)
    named_products = products if any(product for (_, product, _) in products) else None
    return RevenueSummary(
        currency=chosen,
        currencies=found,
        segment=segment,
        month=last,
        gross_margin=gross_margin,
        waterfall=waterfall(mrr, months),
        retention=cohort_retention(mrr, add_months(last, -12)),
        logos=logo_metrics(mrr, months),
        expansion=expansion_metrics(mrr, months, named_products),
        lifetime_value=lifetime_value(mrr, months, gross_margin),
    )
