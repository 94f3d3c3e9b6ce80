"""Retention metrics on a hand-computed book: the billing export in data/billing_export.csv, imported, and
every figure worked out by hand below (the comments show the arithmetic)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

import cli
from cli._app import console
from flows.analytics.metrics import (
    Retention,
    WaterfallRow,
    account_currencies,
    add_months,
    arr_cents,
    cohort_retention,
    expansion_metrics,
    lifetime_value,
    load_mrr,
    load_mrr_by_currency,
    load_product_mrr,
    load_segments,
    logo_metrics,
    main_currency,
    month_range,
    split_by_segment,
    total_mrr,
    waterfall,
)
from integrations.sources.billing import BillingColumns, Spread, import_revenue
from models import Account, RetainError, RevenueEntry
from tests._sqlite import migrated_sqlite

DATA = Path(__file__).parent / "data"
SEGMENT = {"acme": "enterprise", "fjord": "enterprise", "bolt": "smb", "cargo": "smb", "delta": "smb", "echo": "smb"}


def m(text: str) -> date:
    year, month = map(int, text.split("-"))
    return date(year, month, 1)


# --------------------------------------------------------------------------------------------
# the book, by hand (dollars; from data/billing_export.csv)
#
# month    acme        acme        bolt   cargo  delta  echo   fjord  | total
#          Platform    Analytics
# 2027-01  310 (31 d)      -        500    400    300    200     -    | 1710
# 2027-02  280 (28 d)      -        500    400    300    200     -    | 1680
# 2027-03  310             -        500    400    300     -    1000    | 2510
# 2027-04  300             -        500    250     -      -    1000    | 2050
# 2027-05  310             -        500    200*    -      -    1000    | 2010   * 250 - 50 credit for May
# 2027-06  300             -        900    250     -      -    1000    | 2450
# 2027-07  310            100       900    250     -     250   1000    | 2810
# 2027-08  310            100       900    250     -     250   1000    | 2810
# 2027-09  300            100       800*   250     -     250   1000    | 2700   * 900 - 100 credit dated in Sept.
# 2027-10  310            100       900    250     -     250   1000    | 2810
# 2027-11  300            100       900    250     -     250   1000    | 2800
# 2027-12  310            100       900    250     -     250   1000    | 2810
# 2028-01  310            100       900    250     -     250   1000    | 2810
# acme's Platform is 10.00 a day (3,650.00 / 365 days, then 3,660.00 / 366), so it follows the month's length;
# its 2028 renewal runs on to 2028-12 (290 in February 2028), after the other customers' last invoices.

PLATFORM = {"01": 310, "02": 280, "03": 310, "04": 300, "05": 310, "06": 300,
            "07": 310, "08": 310, "09": 300, "10": 310, "11": 300, "12": 310}  # fmt: skip
BOOK_DOLLARS: dict[tuple[str, str, str], int] = {
    **{("acme", "Platform", f"2027-{k}"): v for k, v in PLATFORM.items()},
    **{("acme", "Platform", f"2028-{k}"): (290 if k == "02" else v) for k, v in PLATFORM.items()},
    **{("acme", "Analytics", f"{d:%Y-%m}"): 100 for d in month_range(m("2027-07"), m("2028-01"))},
    **{("bolt", "Platform", f"{d:%Y-%m}"): (500 if d < m("2027-06") else 900) for d in month_range(m("2027-01"), m("2028-01"))},
    ("bolt", "Platform", "2027-09"): 800,
    **{("cargo", "Platform", f"{d:%Y-%m}"): (400 if d < m("2027-04") else 250) for d in month_range(m("2027-01"), m("2028-01"))},
    ("cargo", "Platform", "2027-05"): 200,
    **{("delta", "Platform", f"2027-0{i}"): 300 for i in (1, 2, 3)},
    **{("echo", "Platform", f"2027-0{i}"): 200 for i in (1, 2)},
    **{("echo", "Platform", f"{d:%Y-%m}"): 250 for d in month_range(m("2027-07"), m("2028-01"))},
    **{("fjord", "Platform", f"{d:%Y-%m}"): 1000 for d in month_range(m("2027-03"), m("2028-01"))},
}  # fmt: skip
PRODUCTS = {(a, p, m(month)): 100 * dollars for (a, p, month), dollars in BOOK_DOLLARS.items()}
MRR = total_mrr(PRODUCTS)
YEAR = month_range(m("2027-02"), m("2028-01"))  # the twelve months after the first month of the history


def row(month: str, start: int, new: int, exp: int, con: int, churn: int, react: int, end: int,
        accounts: tuple[int, int, int, int, int, int, int]) -> WaterfallRow:  # fmt: skip
    """A waterfall row in dollars; ``accounts`` = (start, new, expanded, contracted, churned, reactivated, end)."""
    s, n, e, c, ch, r, en = accounts
    return WaterfallRow(
        m(month), 100 * start, 100 * new, 100 * exp, 100 * con, 100 * churn, 100 * react, 100 * end,
        s, n, e, c, ch, r, en,
    )  # fmt: skip


# start + new + expansion - contraction - churn + reactivation = end, month by month:
WATERFALL = [
    # the first month of the history: everyone is new. 0 + 1710 = 1710
    row("2027-01", 0, 1710, 0, 0, 0, 0, 1710, (0, 5, 0, 0, 0, 0, 5)),
    # acme 310 -> 280 (February is shorter): 1710 - 30 = 1680
    row("2027-02", 1710, 0, 0, 30, 0, 0, 1680, (5, 0, 0, 1, 0, 0, 5)),
    # acme 280 -> 310, echo 200 -> 0 (churn), fjord new 1000: 1680 + 1000 + 30 - 200 = 2510
    row("2027-03", 1680, 1000, 30, 0, 200, 0, 2510, (5, 1, 1, 0, 1, 0, 5)),
    # acme 310 -> 300 and cargo 400 -> 250 (contraction 10 + 150), delta 300 -> 0: 2510 - 160 - 300 = 2050
    row("2027-04", 2510, 0, 0, 160, 300, 0, 2050, (5, 0, 0, 2, 1, 0, 4)),
    # acme 300 -> 310, cargo 250 -> 200 (the credit): 2050 + 10 - 50 = 2010
    row("2027-05", 2050, 0, 10, 50, 0, 0, 2010, (4, 0, 1, 1, 0, 0, 4)),
    # acme 310 -> 300, bolt 500 -> 900, cargo 200 -> 250: 2010 + (400 + 50) - 10 = 2450
    row("2027-06", 2010, 0, 450, 10, 0, 0, 2450, (4, 0, 2, 1, 0, 0, 4)),
    # acme 300 -> 410 (+10 Platform, +100 Analytics), echo back after four months at zero: 2450 + 110 + 250 = 2810
    row("2027-07", 2450, 0, 110, 0, 0, 250, 2810, (4, 0, 1, 0, 0, 1, 5)),
    # acme 410 -> 410 (July and August both have 31 days): no movement
    row("2027-08", 2810, 0, 0, 0, 0, 0, 2810, (5, 0, 0, 0, 0, 0, 5)),
    # acme 410 -> 400, bolt 900 -> 800: 2810 - 110 = 2700
    row("2027-09", 2810, 0, 0, 110, 0, 0, 2700, (5, 0, 0, 2, 0, 0, 5)),
    # acme 400 -> 410, bolt 800 -> 900: 2700 + 110 = 2810
    row("2027-10", 2700, 0, 110, 0, 0, 0, 2810, (5, 0, 2, 0, 0, 0, 5)),
    # acme 410 -> 400: 2810 - 10 = 2800
    row("2027-11", 2810, 0, 0, 10, 0, 0, 2800, (5, 0, 0, 1, 0, 0, 5)),
    # acme 400 -> 410: 2800 + 10 = 2810
    row("2027-12", 2800, 0, 10, 0, 0, 0, 2810, (5, 0, 1, 0, 0, 0, 5)),
    # acme 410 -> 410 (December 310 + 100, January 2028 310 + 100 from the renewal): no movement
    row("2028-01", 2810, 0, 0, 0, 0, 0, 2810, (5, 0, 0, 0, 0, 0, 5)),
]


# --------------------------------------------------------------------------------------------
# the import gives the book


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """The export imported once into a SQLite database, with the accounts' segments."""
    engine = migrated_sqlite(tmp_path_factory.mktemp("book") / "retain.db")
    with Session(engine) as s:
        for external_id, segment in SEGMENT.items():
            s.add(Account.model_validate({"external_id": external_id, "name": external_id, "segment": segment}))
        s.commit()
    columns = BillingColumns(
        customer="Customer", date="Invoice Date", amount="Amount", service_start="Service Start",
        service_end="Service End", product="Product", plan="Plan", currency="Currency",
    )  # fmt: skip
    # spread by day, and read through the end of its service periods: the figures below were worked
    # out so (the defaults spread by month and read no month after the export's last invoice)
    import_revenue(engine, DATA / "billing_export.csv", columns, spread=Spread.DAY, data_through=date(2028, 12, 31))
    yield engine
    engine.dispose()


def test_the_imported_export_is_the_book(book):
    with Session(book) as s:
        assert load_product_mrr(s) == PRODUCTS
        assert load_mrr(s) == MRR
        assert load_mrr(s, "enterprise") == {k: v for k, v in MRR.items() if SEGMENT[k[0]] == "enterprise"}
        assert load_segments(s) == SEGMENT


# --------------------------------------------------------------------------------------------
# the waterfall


def test_the_waterfall_is_the_hand_computed_one_and_balances_to_the_cent_every_month():
    rows = waterfall(MRR, month_range(m("2027-01"), m("2028-01")))
    assert rows == WATERFALL
    for r in rows:
        assert r.starting + r.new + r.expansion - r.contraction - r.churn + r.reactivation == r.ending
        assert r.balanced
    # each month starts where the one before ended
    assert all(a.ending == b.starting for a, b in itertools.pairwise(rows))


def test_the_waterfall_balances_on_the_spread_months_too():
    # after 2028-01 only acme's annual renewal is left: everyone else churns in 2028-02 (the export ends there)
    rows = waterfall(MRR, month_range(m("2028-02"), m("2029-01")))
    assert all(r.balanced for r in rows)
    # acme 410 -> 290 (Analytics stops, Platform 310 -> 290 days): a contraction of 120, not a churn;
    # bolt 900 + cargo 250 + echo 250 + fjord 1000 = 2400 churn: 2810 - 120 - 2400 = 290
    assert (rows[0].starting, rows[0].contraction, rows[0].churn, rows[0].ending) == (281_000, 12_000, 240_000, 29_000)
    assert rows[-1].churned_accounts == 1  # acme's renewal ends with 2028-12


def test_the_segments_waterfalls_add_up_to_the_whole():
    parts = split_by_segment(MRR, SEGMENT)
    assert sorted(parts, key=str) == ["enterprise", "smb"]
    by_segment = [waterfall(part, YEAR) for part in parts.values()]
    for whole, *pieces in zip(waterfall(MRR, YEAR), *by_segment, strict=True):
        for field in ("starting", "new", "expansion", "contraction", "churn", "reactivation", "ending"):
            assert getattr(whole, field) == sum(getattr(p, field) for p in pieces)


# --------------------------------------------------------------------------------------------
# GRR and NRR


def test_grr_and_nrr_of_the_starting_cohort_are_the_hand_computed_ones():
    retention = cohort_retention(MRR, m("2027-01"))
    # cohort = the accounts with MRR in 2027-01: acme 310, bolt 500, cargo 400, delta 300, echo 200 = 1710
    # (fjord, new in March, is not in it). In 2028-01:       acme 410, bolt 900, cargo 250, delta 0, echo 250
    # GRR: each capped at its start: min(410,310) + min(900,500) + 250 + 0 + min(250,200) = 310+500+250+0+200 = 1260
    # NRR: 410 + 900 + 250 + 0 + 250 = 1810
    assert retention == Retention(
        start_month=m("2027-01"), end_month=m("2028-01"), cohort_accounts=5, retained_accounts=4,
        starting_mrr=171_000, retained_mrr=126_000, ending_mrr=181_000,
        grr=1260 / 1710, nrr=1810 / 1710, logo_retention=4 / 5,
    )  # fmt: skip
    assert f"{retention.grr:.2%} {retention.nrr:.2%}" == "73.68% 105.85%"


def test_grr_and_nrr_per_segment():
    parts = split_by_segment(MRR, SEGMENT)
    enterprise = cohort_retention(parts["enterprise"], m("2027-01"))
    smb = cohort_retention(parts["smb"], m("2027-01"))
    # enterprise: acme only, 310 -> 410: GRR 310/310, NRR 410/310
    assert (enterprise.grr, enterprise.nrr, enterprise.cohort_accounts) == (1.0, 410 / 310, 1)
    # smb: bolt 500, cargo 400, delta 300, echo 200 = 1400 -> 900 + 250 + 0 + 250 = 1400;
    # capped: 500 + 250 + 0 + 200 = 950
    assert (smb.grr, smb.nrr, smb.logo_retention) == (950 / 1400, 1.0, 3 / 4)


def test_a_cohort_without_revenue_has_no_ratios():
    retention = cohort_retention(MRR, m("2026-01"))
    assert (retention.cohort_accounts, retention.grr, retention.nrr, retention.logo_retention) == (0, None, None, None)
    assert retention.end_month == m("2027-01")


# --------------------------------------------------------------------------------------------
# logos, expansion, lifetime value


def test_logo_churn_and_retention_over_the_year():
    logos = logo_metrics(MRR, YEAR)
    # accounts active at the start of each month, 2027-02..2028-01: 5 5 5 4 4 4 5 5 5 5 5 5 = 57 account-months;
    # lost: echo (March) and delta (April) = 2; churn 2/57 a month, retention 55/57
    assert (logos.account_months, logos.churned_accounts, logos.new_accounts, logos.reactivated_accounts) == (
        57,
        2,
        1,
        1,
    )
    assert (logos.churn_rate, logos.retention_rate) == (2 / 57, 55 / 57)
    assert (logos.starting_accounts, logos.ending_accounts) == (5, 5)


def test_expansion_upsell_and_cross_sell():
    # June and July 2027. Starting MRR 2010 + 2450 = 4460; expansion (account level) 450 + 110 = 560
    # upsell (more of a product already paid for, existing accounts): June bolt +400, cargo +50; July acme Platform +10
    # cross-sell (a new product for an existing account): July acme Analytics 100. echo's return is a reactivation.
    # accounts at the start of June (acme bolt cargo fjord) and July (the same): 8 account-months;
    # upsold: 2 in June + 1 in July = 3; cross-sold: 1
    metrics = expansion_metrics(MRR, [m("2027-06"), m("2027-07")], PRODUCTS)
    assert (metrics.starting_mrr, metrics.expansion, metrics.expansion_rate) == (446_000, 56_000, 560 / 4460)
    assert (metrics.upsell, metrics.upsell_accounts, metrics.upsell_rate) == (46_000, 3, 3 / 8)
    assert (metrics.cross_sell, metrics.cross_sell_accounts, metrics.cross_sell_rate) == (10_000, 1, 1 / 8)
    without_products = expansion_metrics(MRR, [m("2027-06"), m("2027-07")])
    assert (without_products.expansion, without_products.upsell, without_products.cross_sell_rate) == (
        56_000,
        None,
        None,
    )


def test_a_product_swap_is_a_cross_sell_but_not_an_expansion():
    products = {("a", "Basic", m("2027-01")): 10_000, ("a", "Pro", m("2027-02")): 10_000}
    metrics = expansion_metrics(total_mrr(products), [m("2027-02")], products)
    assert (metrics.expansion, metrics.cross_sell, metrics.upsell) == (0, 10_000, 0)


def test_lifetime_value_over_the_year():
    ltv = lifetime_value(MRR, YEAR)
    # ARPA = ending MRR summed over 2027-02..2028-01 / active accounts summed over those months
    #      = (1680+2510+2050+2010+2450+2810+2810+2700+2810+2800+2810+2810) / (5+5+4+4+4+5+5+5+5+5+5+5)
    #      = 30250 / 57 = 530.70 a month; churn 2/57 a month (above)
    # LTV = 30250/57 × 0.8 / (2/57) = 30250 × 0.4 = 12,100.00
    assert (ltv.arpa, ltv.churn_rate, ltv.value, ltv.note) == (53_070, 2 / 57, 1_210_000, None)
    assert lifetime_value(MRR, YEAR, gross_margin=0.5).value == 756_250  # 30250 × 0.5 / 2 = 7,562.50


def test_lifetime_value_says_when_nobody_churned():
    ltv = lifetime_value(MRR, month_range(m("2027-05"), m("2027-12")))  # no churn from May to December 2027
    assert (ltv.value, ltv.churn_rate) == (None, 0.0)
    assert ltv.note == (
        "no account churned in 2027-05..2027-12, so the churn rate is 0 and lifetime value has no finite value; "
        "measure it over a longer span"
    )
    empty = lifetime_value({}, [m("2027-05")])
    assert (empty.value, empty.arpa, empty.note) == (None, None, "no revenue in 2027-05..2027-05")
    with pytest.raises(ValueError, match="gross margin"):
        lifetime_value(MRR, YEAR, gross_margin=80)


# --------------------------------------------------------------------------------------------
# edge cases of the definitions


def test_new_reactivation_and_month_boundaries():
    mrr = {
        ("steady", m("2027-01")): 100, ("steady", m("2027-02")): 100,  # paid on Jan 31 and Feb 1: no gap, no churn
        ("gap", m("2027-01")): 100, ("gap", m("2027-03")): 100,  # one whole month at zero: churn, then reactivation
        ("late", m("2027-03")): 70,  # first MRR in March: new
    }  # fmt: skip
    february, march = waterfall(mrr, [m("2027-02"), m("2027-03")])
    assert (february.churn, february.churned_accounts, february.reactivation) == (100, 1, 0)
    assert (march.new, march.new_accounts, march.reactivation, march.reactivated_accounts) == (70, 1, 100, 1)
    assert (march.churn, march.ending) == (100, 170)  # steady stops after February
    assert all(r.balanced for r in (february, march))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="first day"):
        waterfall(MRR, [date(2027, 2, 15)])
    with pytest.raises(ValueError, match="negative"):
        waterfall({("a", m("2027-01")): -1}, [m("2027-01")])
    with pytest.raises(ValueError, match="no months"):
        logo_metrics(MRR, [])


def test_months_and_arr():
    assert add_months(m("2027-11"), 3) == m("2028-02")
    assert add_months(m("2027-01"), -1) == m("2026-12")
    assert month_range(m("2027-11"), m("2028-02")) == [m("2027-11"), m("2027-12"), m("2028-01"), m("2028-02")]
    assert arr_cents(281_000) == 3_372_000


def test_a_report_refuses_mixed_currencies(sqlite_engine):
    with Session(sqlite_engine) as s:
        a = Account.model_validate({"external_id": "a", "name": "A"})
        b = Account.model_validate({"external_id": "b", "name": "B"})
        s.add_all([a, b])
        s.flush()
        s.add(RevenueEntry.model_validate({"account_id": a.id, "period": m("2027-01"), "mrr_cents": 100}))
        s.add(
            RevenueEntry.model_validate(
                {"account_id": b.id, "period": m("2027-01"), "mrr_cents": 90, "currency": "EUR"}
            )
        )
        s.commit()
        with pytest.raises(RetainError) as raised:
            load_mrr(s)
        assert str(raised.value) == (
            "the revenue is in several currencies (EUR, USD): a report takes one; choose it (--currency)"
        )
        assert load_mrr(s, currency="eur") == {("b", m("2027-01")): 90}


# --------------------------------------------------------------------------------------------
# retain revenue summary


def test_the_summary_command(book, capsys, monkeypatch):
    monkeypatch.setattr(console, "width", 200)
    url = book.url.render_as_string(hide_password=False)
    capsys.readouterr()
    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2028-01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].strip() == "MRR waterfall in USD: 2027-02 to 2028-01"
    assert (
        "│ 2027-07 │ 2,450.00 │     0.00 │    110.00 │        0.00 │    0.00 │       250.00 │ 2,810.00 │ 33,720.00 │"
        in out
    )
    assert out[-4:] == [
        "GRR 73.7%, NRR 105.8%: the 5 accounts with MRR in 2027-01, in 2028-01 (starting MRR 1,710.00 USD, "
        "retained 1,260.00 USD, ending 1,810.00 USD); 4 still paying (80.0%)",
        "logo churn 3.5% a month (2 lost over 57 account-months); 1 new, 1 won back",
        "expansion 2.5% of starting MRR a month; upsell 620.00 USD (14.0% of accounts a month), cross-sell "
        "100.00 USD (1.8% of accounts a month)",
        "lifetime value 12,100.00 USD (ARPA 530.70 USD × 80% gross margin ÷ 3.5% monthly logo churn)",
    ]

    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2028-01", "--segment", "smb",
                     "--format", "json"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert (document["currency"], document["segment"], document["month"]) == ("USD", "smb", "2028-01")
    assert document["retention"]["retained_mrr"] == 95_000
    assert document["waterfall"][-1] == {
        "month": "2028-01", "starting": 140_000, "new": 0, "expansion": 0, "contraction": 0, "churn": 0,
        "reactivation": 0, "ending": 140_000, "starting_accounts": 3, "new_accounts": 0, "expanded_accounts": 0,
        "contracted_accounts": 0, "churned_accounts": 0, "reactivated_accounts": 0, "ending_accounts": 3,
        "ending_arr": 1_680_000,
    }  # fmt: skip

    assert cli.main(["--database-url", url, "revenue", "summary", "--segment", "mid-market"]) == 1
    assert "no account is in segment 'mid-market'; the segments are 'enterprise', 'smb'" in capsys.readouterr().err
    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2028-13"]) == 2
    capsys.readouterr()
    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2026-05"]) == 1
    assert "no revenue up to 2026-05: it starts in 2027-01" in capsys.readouterr().err
    # by default, the latest month with revenue that is not after this one (or the latest, when all is ahead)
    assert cli.main(["--database-url", url, "revenue", "summary"]) == 0
    assert "MRR waterfall in USD" in capsys.readouterr().out


def test_a_book_in_several_currencies(sqlite_engine, capsys, monkeypatch):
    """Two EUR accounts and one USD account: the main currency is the one most accounts pay in; each
    account's currency is that of its latest revenue; nothing is ever converted."""
    with Session(sqlite_engine) as s:
        accounts = [Account.model_validate({"external_id": x, "name": x.upper()}) for x in ("a", "b", "c", "d")]
        s.add_all(accounts)
        s.flush()
        a, b, c, d = (account.id for account in accounts)
        for account_id, currency, cents in ((a, "USD", 100_000), (b, "EUR", 90_000), (c, "EUR", 10_000)):
            for month in ("2027-01", "2027-02"):
                s.add(RevenueEntry.model_validate({"account_id": account_id, "period": m(month),
                                                   "mrr_cents": cents, "currency": currency}))  # fmt: skip
        s.add(RevenueEntry.model_validate({"account_id": c, "period": m("2026-12"), "mrr_cents": 1, "currency": "USD"}))
        s.commit()
        assert main_currency(s) == "EUR"  # two accounts pay in EUR (c also paid once in USD), one in USD only
        assert account_currencies(s) == {a: "USD", b: "EUR", c: "EUR", d: "USD"}  # d: its own field (no revenue)
        books = load_mrr_by_currency(s)
        assert sorted(books) == ["EUR", "USD"]
        assert books["EUR"] == {("b", m("2027-01")): 90_000, ("b", m("2027-02")): 90_000,
                                ("c", m("2027-01")): 10_000, ("c", m("2027-02")): 10_000}  # fmt: skip

    url = sqlite_engine.url.render_as_string(hide_password=False)
    monkeypatch.setattr(console, "width", 200)
    capsys.readouterr()
    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2027-02"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "the revenue is in 2 currencies (EUR, USD): this summary is in EUR, the one most accounts pay in "
        "(never converted). For another: --currency USD"
    )
    assert "MRR waterfall in EUR: 2027-01 to 2027-02" in out and "100,000.00" not in out
    assert "│ 2027-02 │ 1,000.00 │" in out
    assert cli.main(["--database-url", url, "revenue", "summary", "--month", "2027-02", "--currency", "usd",
                     "--format", "json"]) == 0  # fmt: skip
    document = json.loads(capsys.readouterr().out)
    assert (document["currency"], document["currencies"]) == ("USD", ["EUR", "USD"])
    assert document["waterfall"][-1]["ending"] == 100_000
