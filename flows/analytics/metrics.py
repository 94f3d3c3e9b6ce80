"""Revenue retention metrics over monthly MRR: the waterfall, GRR and NRR, logo churn, expansion
(upsell and cross-sell) and customer lifetime value.

Every metric is a plain function of a mapping ``{(account, month): mrr_cents}`` (``month`` the
first day of a calendar month, MRR in integer cents of one currency; a missing key is zero), so
it can be checked by hand on a small table. :func:`load_mrr` reads that mapping from
``revenue_entry`` (optionally for one segment); :func:`load_product_mrr` reads it per product,
for upsell and cross-sell. Both read no month after revenue's *data through* month
(:func:`data_through_month`). The definitions, with their edge cases, are in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from fractions import Fraction
from typing import Any, TypeAlias, cast

from sqlalchemy import func
from sqlmodel import Session, col, select

from models import Account, DataSource, RetainError, RevenueEntry

__all__ = [
    "MRR",
    "ExpansionMetrics",
    "LifetimeValue",
    "LogoMetrics",
    "ProductMRR",
    "Retention",
    "WaterfallRow",
    "account_currencies",
    "add_months",
    "arr_cents",
    "cohort_retention",
    "currencies",
    "data_through_month",
    "expansion_metrics",
    "last_revenue_month",
    "lifetime_value",
    "load_mrr",
    "load_mrr_by_currency",
    "load_product_mrr",
    "load_segments",
    "logo_metrics",
    "main_currency",
    "month_range",
    "revenue_months",
    "split_by_segment",
    "total_mrr",
    "waterfall",
]

#: MRR in cents by (account, month); the account is any hashable key (Retain uses the external id)
MRR: TypeAlias = Mapping[tuple[Any, date], int]
#: MRR in cents by (account, product, month)
ProductMRR: TypeAlias = Mapping[tuple[Any, str, date], int]


# --------------------------------------------------------------------------------------------
# months


def _check_month(month: date) -> date:
    if month.day != 1:
        raise ValueError(f"a month is given by its first day, not {month.isoformat()}")
    return month


def add_months(month: date, count: int) -> date:
    """The first day of the month ``count`` months after (or, negative, before) ``month``."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def month_range(first: date, last: date) -> list[date]:
    """The months from ``first`` to ``last``, both included (first days of months)."""
    months = []
    month = _check_month(first)
    while month <= last:
        months.append(month)
        month = add_months(month, 1)
    return months


def arr_cents(mrr_cents: int) -> int:
    """Annual recurring revenue: 12 × MRR."""
    return 12 * mrr_cents


def _ratio(numerator: int | Fraction, denominator: int | Fraction) -> float | None:
    return None if not denominator else float(Fraction(numerator) / Fraction(denominator))


def _by_account(mrr: MRR) -> dict[Hashable, dict[date, int]]:
    """Positive MRR by account then month; negative MRR is refused (a data error upstream)."""
    accounts: dict[Hashable, dict[date, int]] = defaultdict(dict)
    for (account, month), cents in mrr.items():
        if cents < 0:
            raise ValueError(f"MRR cannot be negative: {cents} cents for {account!r} in {month:%Y-%m}")
        if cents:
            accounts[account][_check_month(month)] = cents
    return accounts


def total_mrr(products: ProductMRR) -> dict[tuple[Any, date], int]:
    """Per-product MRR added up per account and month."""
    totals: dict[tuple[Any, date], int] = defaultdict(int)
    for (account, _, month), cents in products.items():
        totals[(account, month)] += cents
    return {key: cents for key, cents in totals.items() if cents}


def revenue_months(mrr: MRR) -> tuple[date, date] | None:
    """The first and last months with any MRR, or None when there is none."""
    months = [month for (_, month), cents in mrr.items() if cents]
    return (min(months), max(months)) if months else None


# --------------------------------------------------------------------------------------------
# the waterfall


@dataclass(frozen=True)
class WaterfallRow:
    """How MRR moved from the end of the previous month to the end of ``month``, in cents.

    ``starting + new + expansion - contraction - churn + reactivation == ending``, to the cent.
    The ``*_accounts`` fields count the accounts behind each movement.
    """

    month: date
    starting: int
    new: int
    expansion: int
    contraction: int
    churn: int
    reactivation: int
    ending: int
    starting_accounts: int
    new_accounts: int
    expanded_accounts: int
    contracted_accounts: int
    churned_accounts: int
    reactivated_accounts: int
    ending_accounts: int

    @property
    def balanced(self) -> bool:
        return self.starting + self.new + self.expansion - self.contraction - self.churn + self.reactivation == (
            self.ending
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "month": f"{self.month:%Y-%m}"}


def waterfall(mrr: MRR, months: Iterable[date]) -> list[WaterfallRow]:
    """One :class:`WaterfallRow` per month of ``months`` (first days of months, in the order given).

    Each month compares every account's MRR with its MRR in the calendar month before:
    zero to positive is *new*, or *reactivation* if the account had MRR in any earlier month;
    positive to zero is *churn* (the whole previous MRR); up is *expansion*, down *contraction*.
    """
    accounts = _by_account(mrr)
    first_month = {account: min(history) for account, history in accounts.items()}
    rows = []
    for month in months:
        previous = add_months(_check_month(month), -1)
        sums = dict.fromkeys(("new", "expansion", "contraction", "churn", "reactivation"), 0)
        counts = dict.fromkeys(sums, 0)
        starting = ending = starting_accounts = ending_accounts = 0
        for account, history in accounts.items():
            before, now = history.get(previous, 0), history.get(month, 0)
            starting += before
            ending += now
            starting_accounts += before > 0
            ending_accounts += now > 0
            if before == now:
                continue
            if not before:
                kind, amount = ("reactivation" if first_month[account] < month else "new"), now
            elif not now:
                kind, amount = "churn", before
            elif now > before:
                kind, amount = "expansion", now - before
            else:
                kind, amount = "contraction", before - now
            sums[kind] += amount
            counts[kind] += 1
        rows.append(
            WaterfallRow(
                month=month, starting=starting, **sums, ending=ending, starting_accounts=starting_accounts,
                new_accounts=counts["new"], expanded_accounts=counts["expansion"],
                contracted_accounts=counts["contraction"], churned_accounts=counts["churn"],
                reactivated_accounts=counts["reactivation"], ending_accounts=ending_accounts,
            )
        )  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------------
# GRR and NRR


@dataclass(frozen=True)
class Retention:
    """Gross and net revenue retention of the accounts with MRR in ``start_month``, at ``end_month``.

    ``grr = retained_mrr / starting_mrr`` (each account counted at most at its starting MRR);
    ``nrr = ending_mrr / starting_mrr`` (expansion included). Accounts that had no MRR in the start
    month (new logos) are left out of both. Ratios are None when the cohort is empty.
    """

    start_month: date
    end_month: date
    cohort_accounts: int
    retained_accounts: int  # cohort accounts with MRR in the end month (those who left and came back too)
    starting_mrr: int
    retained_mrr: int
    ending_mrr: int
    grr: float | None
    nrr: float | None
    logo_retention: float | None  # retained_accounts / cohort_accounts

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "start_month": f"{self.start_month:%Y-%m}", "end_month": f"{self.end_month:%Y-%m}"}


def cohort_retention(mrr: MRR, start_month: date, months: int = 12) -> Retention:
    """GRR, NRR and logo retention of the start month's accounts, ``months`` months later."""
    end_month = add_months(_check_month(start_month), months)
    starting = retained = ending = cohort = kept = 0
    for history in _by_account(mrr).values():
        start = history.get(start_month, 0)
        if not start:
            continue
        end = history.get(end_month, 0)
        cohort += 1
        kept += end > 0
        starting += start
        ending += end
        retained += min(start, end)
    return Retention(
        start_month=start_month,
        end_month=end_month,
        cohort_accounts=cohort,
        retained_accounts=kept,
        starting_mrr=starting,
        retained_mrr=retained,
        ending_mrr=ending,
        grr=_ratio(retained, starting),
        nrr=_ratio(ending, starting),
        logo_retention=_ratio(kept, cohort),
    )


# --------------------------------------------------------------------------------------------
# logos


@dataclass(frozen=True)
class LogoMetrics:
    """Accounts (logos) won, lost and won back over a span of months.

    ``churn_rate`` is the average monthly logo churn: accounts lost in the span divided by the sum,
    over its months, of the accounts active at the start of each month (``account_months``); for
    one month it is simply lost / active at the start. ``retention_rate = 1 - churn_rate``.
    """

    first_month: date
    last_month: date
    starting_accounts: int  # active in the month before the first
    ending_accounts: int  # active in the last month
    new_accounts: int
    reactivated_accounts: int
    churned_accounts: int
    account_months: int
    churn_rate: float | None
    retention_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "first_month": f"{self.first_month:%Y-%m}", "last_month": f"{self.last_month:%Y-%m}"}


def _span(months: Sequence[date]) -> Sequence[date]:
    if not months:
        raise ValueError("no months given")
    return months


def logo_metrics(mrr: MRR, months: Sequence[date]) -> LogoMetrics:
    """Logo churn and retention over ``months`` (consecutive months, oldest first)."""
    rows = waterfall(mrr, _span(months))
    churned = sum(r.churned_accounts for r in rows)
    account_months = sum(r.starting_accounts for r in rows)
    churn_rate = _ratio(churned, account_months)
    return LogoMetrics(
        first_month=rows[0].month,
        last_month=rows[-1].month,
        starting_accounts=rows[0].starting_accounts,
        ending_accounts=rows[-1].ending_accounts,
        new_accounts=sum(r.new_accounts for r in rows),
        reactivated_accounts=sum(r.reactivated_accounts for r in rows),
        churned_accounts=churned,
        account_months=account_months,
        churn_rate=churn_rate,
        retention_rate=None if churn_rate is None else _ratio(account_months - churned, account_months),
    )


# --------------------------------------------------------------------------------------------
# expansion, upsell, cross-sell


@dataclass(frozen=True)
class ExpansionMetrics:
    """Expansion over a span of months, and (when MRR per product is known) upsell and cross-sell.

    ``expansion_rate`` = expansion MRR / starting MRR, both summed over the months: the average
    monthly expansion rate. An *upsell* is more MRR on a product the account already paid for in
    the month before (a higher plan, more seats); a *cross-sell* is MRR on a product it did not pay
    for, while it paid for another (a new product for an existing account). ``upsell_rate`` and
    ``cross_sell_rate`` are the shares of accounts active at the start of a month that bought so in
    that month, averaged like the churn rate (per account-month). Upsell and cross-sell MRR are
    gross per product: a move from one product to another counts as a cross-sell even when the
    account's total does not grow. The product fields are None without product data.
    """

    first_month: date
    last_month: date
    starting_mrr: int  # summed over the months
    expansion: int
    expanded_accounts: int  # account-months
    expansion_rate: float | None
    account_months: int
    upsell: int | None = None
    upsell_accounts: int | None = None
    upsell_rate: float | None = None
    cross_sell: int | None = None
    cross_sell_accounts: int | None = None
    cross_sell_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "first_month": f"{self.first_month:%Y-%m}", "last_month": f"{self.last_month:%Y-%m}"}


def expansion_metrics(mrr: MRR, months: Sequence[date], products: ProductMRR | None = None) -> ExpansionMetrics:
    """Expansion rate over ``months``; upsell and cross-sell too when ``products`` (the same revenue,
    per product) is given."""
    rows = waterfall(mrr, _span(months))
    starting = sum(r.starting for r in rows)
    expansion = sum(r.expansion for r in rows)
    account_months = sum(r.starting_accounts for r in rows)
    result = ExpansionMetrics(
        first_month=rows[0].month,
        last_month=rows[-1].month,
        starting_mrr=starting,
        expansion=expansion,
        expanded_accounts=sum(r.expanded_accounts for r in rows),
        expansion_rate=_ratio(expansion, starting),
        account_months=account_months,
    )
    if products is None:
        return result

    by_product: dict[Hashable, dict[str, dict[date, int]]] = defaultdict(lambda: defaultdict(dict))
    for (account, product, month), cents in products.items():
        if cents:
            by_product[account][product][_check_month(month)] = cents
    upsell = cross_sell = upsell_accounts = cross_sell_accounts = 0
    for month in months:
        previous = add_months(month, -1)
        for lines in by_product.values():
            before = {product: history.get(previous, 0) for product, history in lines.items()}
            now = {product: history.get(month, 0) for product, history in lines.items()}
            if not (sum(before.values()) > 0 and sum(now.values()) > 0):
                continue  # an existing account: active in both months
            grew = [now[p] - before[p] for p in lines if 0 < before[p] < now[p]]
            added = [now[p] for p in lines if before[p] == 0 and now[p] > 0]
            upsell += sum(grew)
            cross_sell += sum(added)
            upsell_accounts += bool(grew)
            cross_sell_accounts += bool(added)
    return ExpansionMetrics(
        **{
            **asdict(result),
            "upsell": upsell,
            "upsell_accounts": upsell_accounts,
            "upsell_rate": _ratio(upsell_accounts, account_months),
            "cross_sell": cross_sell,
            "cross_sell_accounts": cross_sell_accounts,
            "cross_sell_rate": _ratio(cross_sell_accounts, account_months),
        }
    )


# --------------------------------------------------------------------------------------------
# lifetime value


@dataclass(frozen=True)
class LifetimeValue:
    """Customer lifetime value = ARPA × gross margin / monthly logo churn rate, in cents.

    ARPA is the average MRR per active account per month over the span. ``value`` is None, and
    ``note`` says why, when no account churned (the churn rate is 0 and the formula has no finite
    answer) or when there was no revenue.
    """

    first_month: date
    last_month: date
    arpa: int | None  # cents, rounded to the cent
    gross_margin: float
    churn_rate: float | None
    value: int | None  # cents, rounded to the cent
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "first_month": f"{self.first_month:%Y-%m}", "last_month": f"{self.last_month:%Y-%m}"}


def lifetime_value(mrr: MRR, months: Sequence[date], gross_margin: float = 0.8) -> LifetimeValue:
    """Lifetime value over ``months``; ``gross_margin`` is a fraction (0.8 for 80%)."""
    if not 0 < gross_margin <= 1:
        raise ValueError(f"gross margin must be above 0 and at most 1 (0.8 for 80%), not {gross_margin}")
    rows = waterfall(mrr, _span(months))
    revenue = sum(r.ending for r in rows)
    active = sum(r.ending_accounts for r in rows)
    churned = sum(r.churned_accounts for r in rows)
    account_months = sum(r.starting_accounts for r in rows)
    first, last = rows[0].month, rows[-1].month
    span = f"{first:%Y-%m}..{last:%Y-%m}"
    if not active:
        return LifetimeValue(first, last, None, gross_margin, None, None, note=f"no revenue in {span}")
    arpa = Fraction(revenue, active)
    if not churned:
        note = (
            f"no account churned in {span}, so the churn rate is 0 and lifetime value has no finite value; "
            "measure it over a longer span"
        )
        return LifetimeValue(first, last, round(arpa), gross_margin, _ratio(0, account_months), None, note=note)
    churn = Fraction(churned, account_months)
    value = arpa * Fraction(str(gross_margin)) / churn
    return LifetimeValue(first, last, round(arpa), gross_margin, float(churn), round(value))


# --------------------------------------------------------------------------------------------
# segments


def split_by_segment(mrr: MRR, segment_of: Mapping[Any, str | None]) -> dict[str | None, dict[Any, int]]:
    """The MRR of each segment (accounts missing from ``segment_of`` fall under None)."""
    parts: dict[str | None, dict[Any, int]] = defaultdict(dict)
    for (account, month), cents in mrr.items():
        parts[segment_of.get(account)][(account, month)] = cents
    return dict(parts)


# --------------------------------------------------------------------------------------------
# loading from the database


def currencies(session: Session, segment: str | None = None) -> list[str]:
    """The currencies of the stored revenue (of one segment's accounts), sorted."""
    query = select(RevenueEntry.currency).distinct()
    if segment is not None:
        query = query.join(Account, col(Account.id) == col(RevenueEntry.account_id)).where(Account.segment == segment)
    return sorted(session.exec(query).all())


def _accounts_per_currency(session: Session, segment: str | None = None) -> dict[str, int]:
    """How many accounts have revenue in each currency (of one segment's accounts)."""
    query = select(RevenueEntry.currency, func.count(func.distinct(col(RevenueEntry.account_id)))).group_by(
        RevenueEntry.currency
    )
    if segment is not None:
        query = query.join(Account, col(Account.id) == col(RevenueEntry.account_id)).where(Account.segment == segment)
    return {code: int(n) for code, n in session.exec(query)}


def main_currency(session: Session, segment: str | None = None) -> str | None:
    """The book's largest currency: the one the most accounts pay in (then the first by code), or None
    without revenue. Counting accounts needs no exchange rate; Retain never converts currencies."""
    counts = _accounts_per_currency(session, segment)
    return min(counts, key=lambda code: (-counts[code], code)) if counts else None


def account_currencies(session: Session) -> dict[int, str]:
    """Each account's currency, by account id: the currency of its latest revenue entry, else the
    account's own ``currency`` field (an account without revenue)."""
    # a stored account always has an id: SQLModel types it ``int | None`` for rows not yet inserted
    found = cast(dict[int, str], dict(session.exec(select(Account.id, Account.currency)).all()))
    latest = (
        select(col(RevenueEntry.account_id), func.max(col(RevenueEntry.period)).label("period"))
        .group_by(col(RevenueEntry.account_id))
        .subquery()
    )
    query = select(col(RevenueEntry.account_id), col(RevenueEntry.currency)).join(
        latest, (latest.c.account_id == col(RevenueEntry.account_id)) & (latest.c.period == col(RevenueEntry.period))
    )
    for account_id, code in session.exec(query):
        found[account_id] = code
    return {account_id: (code or "USD").upper() for account_id, code in found.items()}


def _currency_of(session: Session, segment: str | None, currency: str | None) -> str | None:
    found = currencies(session, segment)
    if currency is not None:
        return currency.upper()
    if len(found) > 1:
        raise RetainError(
            f"the revenue is in several currencies ({', '.join(found)}): a report takes one; choose it (--currency)"
        )
    return found[0] if found else None


def data_through_month(session: Session) -> date | None:
    """The last month revenue is read in: the last month wholly covered by revenue's *data through*
    date (recorded by ``retain revenue import``; see docs/metrics.md), None before any import. Later
    months hold only what was billed so far (and the tails of service periods that run past the
    export's end), so reading them would make every monthly customer look churned."""
    through: date | None = session.exec(
        select(col(DataSource.data_through)).where(DataSource.name == "revenue")
    ).first()
    return None if through is None else add_months((through + timedelta(days=1)).replace(day=1), -1)


def load_product_mrr(
    session: Session, segment: str | None = None, *, currency: str | None = None
) -> dict[tuple[str, str, date], int]:
    """``{(external_id, product, month): mrr_cents}`` from ``revenue_entry``, for the accounts of
    ``segment`` (all when None), in ``currency`` (required when the revenue is in several)."""
    chosen = _currency_of(session, segment, currency)
    if chosen is None:
        return {}
    query = (
        select(
            col(Account.external_id), col(RevenueEntry.product), col(RevenueEntry.period), col(RevenueEntry.mrr_cents)
        )
        .join(Account, col(Account.id) == col(RevenueEntry.account_id))
        .where(RevenueEntry.currency == chosen, col(RevenueEntry.mrr_cents) != 0)
    )
    if segment is not None:
        query = query.where(Account.segment == segment)
    if (through := data_through_month(session)) is not None:
        query = query.where(col(RevenueEntry.period) <= through)
    return {(account, product, period): int(cents) for account, product, period, cents in session.exec(query)}


def load_mrr(
    session: Session, segment: str | None = None, *, currency: str | None = None
) -> dict[tuple[str, date], int]:
    """``{(external_id, month): mrr_cents}`` (all products added up), as :func:`load_product_mrr`."""
    chosen = _currency_of(session, segment, currency)
    if chosen is None:
        return {}
    total = func.sum(col(RevenueEntry.mrr_cents))
    query = (
        select(col(Account.external_id), col(RevenueEntry.period), total)
        .join(Account, col(Account.id) == col(RevenueEntry.account_id))
        .where(RevenueEntry.currency == chosen)
        .group_by(col(Account.external_id), col(RevenueEntry.period))
    )
    if segment is not None:
        query = query.where(Account.segment == segment)
    if (through := data_through_month(session)) is not None:
        query = query.where(col(RevenueEntry.period) <= through)
    return {(account, period): int(cents) for account, period, cents in session.exec(query) if cents}


def last_revenue_month(session: Session, segment: str | None = None, *, until: date | None = None) -> date | None:
    """The last month with any revenue in the book, in any currency (not after ``until``): a report in
    one currency runs to it, so that a currency whose last accounts all left still shows them leaving."""
    query = select(func.max(col(RevenueEntry.period))).where(col(RevenueEntry.mrr_cents) != 0)
    through = data_through_month(session)
    if until is not None or through is not None:
        query = query.where(col(RevenueEntry.period) <= min(d for d in (until, through) if d is not None))
    if segment is not None:
        query = query.join(Account, col(Account.id) == col(RevenueEntry.account_id)).where(Account.segment == segment)
    return session.exec(query).one()


def load_mrr_by_currency(session: Session, segment: str | None = None) -> dict[str, dict[tuple[str, date], int]]:
    """The MRR of every currency, ``{currency: {(external_id, month): mrr_cents}}``: what judges each
    account in its own currency (revenue outcomes) without choosing one for the book."""
    return {code: load_mrr(session, segment, currency=code) for code in currencies(session, segment)}


def load_segments(session: Session) -> dict[str, str | None]:
    """Each account's segment, by external id."""
    return dict(session.exec(select(Account.external_id, Account.segment)).all())
