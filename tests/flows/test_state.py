"""Account state from revenue at a point in time, the data-through date, MRR normalized per month,
credit notes that name their invoice, and an outcome's ARR change shared among enrollments."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

import cli
from flows.analytics.attribution import playbook_impact, record_revenue_outcomes, split_cents
from flows.analytics.state import derive_account_state, judged_through
from integrations.sources.billing import BillingColumns, Spread, import_revenue
from models import Account, Enrollment, Outcome, RevenueEntry, TimelineEvent, table_of

EXPORT = Path(__file__).parent / "data" / "billing_export.csv"
EXPORT_OPTIONS = (
    "--customer", "Customer", "--date", "Invoice Date", "--amount", "Amount", "--service-start", "Service Start",
    "--service-end", "Service End", "--product", "Product", "--plan", "Plan", "--currency", "Currency",
    "--create-accounts",
)  # fmt: skip
NOW = datetime(2029, 6, 1, 9, 0, tzinfo=UTC)


def write(folder: Path, *rows: list[str]) -> Path:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    path = folder / "billing.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def retain(url: str, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli.main(["--database-url", url, *args]) == 0, args
    return capsys.readouterr().out


def mrr(engine: Engine, customer: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(table_of(RevenueEntry).c.period, table_of(RevenueEntry).c.mrr_cents)
            .join(table_of(Account))
            .where(table_of(Account).c.external_id == customer)
        ).all()
    return {f"{period:%Y-%m}": int(cents) for period, cents in sorted(rows)}


def account(engine: Engine, customer: str) -> dict[str, object]:
    a = table_of(Account)
    with engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.external_id == customer)).one()
    return dict(row._mapping)


def retention_months(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    out = retain(url, "report", "retention", "--as-of", NOW.isoformat(), "--format", "json", capsys=capsys)
    return {m["month"]: m for m in json.loads(out)["months"]}


# --------------------------------------------------------------------------------------------
# the sample billing export: NRR and GRR past the export's end


def test_the_last_twelve_months_no_longer_collapse_past_the_exports_end(sqlite_engine, tmp_path, capsys):
    url = sqlite_engine.url.render_as_string(hide_password=False)
    # read through the end of every service period (what every import did before the data-through
    # date): acme's annual invoice of January 2028 reaches December, and nobody else is billed after
    # January, so the months past the export's end look like everybody else churning
    retain(url, "revenue", "import", str(EXPORT), *EXPORT_OPTIONS, "--data-through", "2028-12-31", capsys=capsys)
    before = retention_months(url, capsys)
    assert max(before) == "2028-12"
    # the last 12 months' retention collapses: only acme's annual tail is left (305.00 a month)
    feb_cohort = 30417 + 500_00 + 400_00 + 300_00 + 200_00  # acme, bolt, cargo, delta, echo in 2027-02
    # 3,650.00 over twelve months: 304.17 in eight of them, 304.16 in the last four (to the cent);
    # in 2027-12 acme also pays 100.00 for Analytics, so its 305.00 is all retained
    dec_cohort = 30416 + 100_00 + 900_00 + 250_00 + 250_00 + 1000_00  # and fjord, less delta, in 2027-12
    assert (before["2028-02"]["grr"], before["2028-02"]["nrr"]) == (30417 / feb_cohort, 30500 / feb_cohort)
    assert (before["2028-12"]["grr"], before["2028-12"]["nrr"]) == (30500 / dec_cohort, 30500 / dec_cohort)
    assert (
        before["2028-02"]["churned_accounts"] == 4 and before["2028-02"]["ending_accounts"] == 1
    )  # bolt, cargo, echo, fjord
    # by default the export is read through its last invoice date, 2028-01-20: December 2027 is the
    # last month it covers to its end, so no month after it is reported
    out = retain(url, "revenue", "import", str(EXPORT), *EXPORT_OPTIONS, "--data-through", "2028-01-20", capsys=capsys)
    assert "data through 2028-01-20" in out
    assert max(retention_months(url, capsys)) == "2027-12"
    # the export holds January's whole billing run: said so, January is read and its 12-month
    # cohort (January 2027) keeps its revenue
    retain(url, "revenue", "import", str(EXPORT), *EXPORT_OPTIONS, "--data-through", "2028-01-31", capsys=capsys)
    after = retention_months(url, capsys)
    assert max(after) == "2028-01"
    january = after["2028-01"]["cohort"]
    # cohort of 2027-01, by month-normalized MRR: acme 304.17 (3,650.00 / 12), bolt 500, cargo 400,
    # delta 300, echo 200; in 2028-01: acme 305.00 + Analytics 100.00, bolt 900, cargo 250, echo 250
    assert (january["starting_mrr"], january["ending_mrr"]) == (170417, 180500)
    assert january["retained_mrr"] == 30417 + 500_00 + 250_00 + 0 + 200_00
    assert round(after["2028-01"]["grr"], 4) == round(125417 / 170417, 4)  # 73.6%
    assert round(after["2028-01"]["nrr"], 4) == round(180500 / 170417, 4)  # 105.9%
    assert after["2028-01"]["churned_accounts"] == 0


# --------------------------------------------------------------------------------------------
# MRR normalized per month; credit notes


def test_a_flat_annual_contract_is_flat_mrr_and_day_spreading_stays_an_option(sqlite_engine, tmp_path):
    path = write(
        tmp_path,
        ["customer", "date", "amount", "start", "end"],
        ["acme", "2027-01-01", "12000.00", "2027-01-01", "2027-12-31"],
    )
    columns = BillingColumns(service_start="start", service_end="end")
    import_revenue(sqlite_engine, path, columns, create_accounts=True, now=NOW)
    assert set(mrr(sqlite_engine, "acme").values()) == {1000_00}
    import_revenue(sqlite_engine, path, columns, spread=Spread.DAY, now=NOW)
    by_day = mrr(sqlite_engine, "acme")
    assert (by_day["2027-01"], by_day["2027-02"]) == (101918, 92054)  # 31 and 28 of 365 days


def test_a_credit_note_that_names_its_invoice_nets_against_that_invoices_months(sqlite_engine, tmp_path):
    header = ["customer", "date", "amount", "start", "end", "number", "credits"]
    path = write(
        tmp_path,
        header,
        ["acme", "2027-01-01", "12000.00", "2027-01-01", "2027-12-31", "INV-1", ""],
        ["acme", "2027-06-15", "-600.00", "", "", "CN-1", "INV-1"],
        ["bolt", "2027-01-01", "500.00", "", "", "INV-2", ""],
        ["bolt", "2027-02-01", "500.00", "", "", "INV-3", ""],
        ["bolt", "2027-02-10", "-100.00", "", "", "CN-2", ""],  # names no invoice: its own month
    )
    columns = BillingColumns(service_start="start", service_end="end", invoice="number", credits="credits")
    import_revenue(sqlite_engine, path, columns, create_accounts=True, now=NOW)
    assert set(mrr(sqlite_engine, "acme").values()) == {950_00}  # 600.00 credited over twelve months
    assert mrr(sqlite_engine, "bolt") == {"2027-01": 500_00, "2027-02": 400_00}
    # without the numbers the same credit note is June's alone: a contraction, then an expansion
    import_revenue(sqlite_engine, path, BillingColumns(service_start="start", service_end="end"), now=NOW)
    acme = mrr(sqlite_engine, "acme")
    assert (acme["2027-05"], acme["2027-06"], acme["2027-07"]) == (1000_00, 400_00, 1000_00)


def test_a_credit_note_naming_an_unknown_invoice_is_refused(sqlite_engine, tmp_path, capsys):
    path = write(
        tmp_path,
        ["customer", "date", "amount", "number", "credits"],
        ["acme", "2027-01-01", "100.00", "INV-1", ""],
        ["acme", "2027-01-20", "-50.00", "CN-1", "INV-9"],
        ["acme", "2027-01-21", "50.00", "INV-2", "INV-1"],
    )
    url = sqlite_engine.url.render_as_string(hide_password=False)
    capsys.readouterr()
    code = cli.main(["--database-url", url, "revenue", "import", str(path), "--invoice", "number", "--credits",
                     "credits", "--create-accounts"])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err == [
        f"{path}: row 3, column 'credits': credits invoice 'INV-9', which is not an invoice of 'acme' in the file",
        f"{path}: row 4, column 'credits': names invoice 'INV-1', but the row is not a credit note (a negative amount)",
        f"error: nothing was written from {path} (2 problems)",
    ]


# --------------------------------------------------------------------------------------------
# the state at a point in time


def test_judged_months_are_those_over_by_the_earlier_of_as_of_and_data_through():
    assert judged_through(date(1998, 4, 15), date(1998, 6, 30)) == date(1998, 3, 1)
    assert judged_through(date(1998, 4, 30), date(1998, 6, 30)) == date(1998, 4, 1)
    assert judged_through(date(2029, 1, 1), date(2028, 1, 20)) == date(2027, 12, 1)
    assert judged_through(datetime(2028, 2, 29, 23, 0, tzinfo=UTC), None) == date(2028, 2, 1)


def test_the_state_is_what_revenue_says_as_of_a_date_and_nothing_after_leaks_in(engine, tmp_path):
    # bolt pays 100 a month January to March, nothing in April and May, 150 from June to August
    rows = [["bolt", f"2027-{m:02d}-10", "100.00"] for m in (1, 2, 3)]
    rows += [["bolt", f"2027-{m:02d}-10", "150.00"] for m in (6, 7, 8)]
    rows += [["fjord", f"2027-{m:02d}-01", "50.00"] for m in range(1, 9)]
    path = write(tmp_path, ["customer", "date", "amount"], *rows)
    import_revenue(engine, path, create_accounts=True, now=NOW)

    def state_as_of(day: date) -> dict[str, object]:
        with engine.begin() as conn:
            derive_account_state(conn, datetime(day.year, day.month, day.day, 12, tzinfo=UTC), now=NOW)
        a = account(engine, "bolt")
        return {k: a[k] for k in ("status", "churned_at", "reactivated_at", "mrr", "arr")}

    def at(month: int) -> datetime:
        return datetime(2027, month, 1, tzinfo=UTC)

    assert state_as_of(date(2027, 3, 31)) == {
        "status": "active", "churned_at": None, "reactivated_at": None, "mrr": 100.0, "arr": 1200.0,
    }  # fmt: skip
    # mid-June: June is not over, so bolt's June invoice is not read; it churned in April
    assert state_as_of(date(2027, 6, 15)) == {
        "status": "churned", "churned_at": at(4), "reactivated_at": None, "mrr": 0.0, "arr": 0.0,
    }  # fmt: skip
    assert state_as_of(date(2027, 6, 30)) == {
        "status": "active", "churned_at": at(4), "reactivated_at": at(6), "mrr": 150.0, "arr": 1800.0,
    }  # fmt: skip
    # the data runs through 2027-08-10: July is its last whole month, and no later month reads as churn
    assert state_as_of(date(2027, 12, 31)) == {
        "status": "active", "churned_at": at(4), "reactivated_at": at(6), "mrr": 150.0, "arr": 1800.0,
    }  # fmt: skip
    assert account(engine, "bolt")["expanded_at"] is None  # a reactivation at more is not an expansion
    # deriving again changes nothing and tells nothing new
    with engine.begin() as conn:
        again = derive_account_state(conn, datetime(2027, 12, 31, tzinfo=UTC), now=NOW)
    assert (again.changed, again.events) == (0, 0)
    # and back to an earlier date: the later dates are cleared, each change told once
    assert state_as_of(date(2027, 2, 28))["churned_at"] is None
    t = table_of(TimelineEvent)
    with engine.connect() as conn:
        told = conn.execute(
            select(t.c.at, t.c.summary).join(table_of(Account)).where(
                table_of(Account).c.external_id == "bolt", t.c.kind == "state"
            ).order_by(t.c.id)
        ).all()  # fmt: skip
    assert [summary for _, summary in told] == [
        "from revenue: status active -> churned",
        "from revenue: churned_at none -> 2027-04-01",
        "from revenue: status churned -> active",
        "from revenue: reactivated_at none -> 2027-06-01",
        "from revenue: churned_at 2027-04-01 -> none",
        "from revenue: reactivated_at 2027-06-01 -> none",
    ]
    assert told[0].at == at(4) and told[3].at == at(6)


def test_the_data_through_date_keeps_an_annual_tail_from_reading_as_churn(sqlite_engine, tmp_path):
    # cargo pays monthly through January 2028; acme's annual invoice runs to December 2028
    rows = [["cargo", f"{y}-{m:02d}-05", "", "", "200.00"] for y, m in [(2027, n) for n in range(1, 13)] + [(2028, 1)]]
    rows.append(["acme", "2028-01-01", "2028-01-01", "2028-12-31", "12000.00"])
    path = write(tmp_path, ["customer", "date", "start", "end", "amount"], *rows)
    result = import_revenue(
        sqlite_engine, path, BillingColumns(service_start="start", service_end="end"), create_accounts=True, now=NOW
    )
    assert result.data_through == date(2028, 1, 5)
    with sqlite_engine.begin() as conn:
        derive_account_state(conn, NOW, now=NOW)  # as of mid-2029, read through 2027-12 only
    assert (account(sqlite_engine, "cargo")["status"], account(sqlite_engine, "cargo")["churned_at"]) == (
        "active",
        None,
    )
    assert account(sqlite_engine, "acme")["status"] == "active" and account(sqlite_engine, "acme")["mrr"] == 0.0
    with sqlite_engine.begin() as conn:
        derive_account_state(conn, NOW, date(2028, 1, 31), now=NOW)
    assert account(sqlite_engine, "acme")["mrr"] == 1000.0 and account(sqlite_engine, "cargo")["mrr"] == 200.0


# --------------------------------------------------------------------------------------------
# an outcome's ARR change, shared


def test_cents_are_split_into_shares_that_add_up():
    assert split_cents(120000, 7) == [17143, 17143, 17143, 17143, 17143, 17143, 17142]
    assert sum(split_cents(-100, 3)) == -100 and split_cents(-100, 3) == [-34, -33, -33]


def test_an_expansion_is_shared_among_the_enrollments_running_then(sqlite_engine, tmp_path):
    rows = [["acme", f"2027-{m:02d}-01", "100.00" if m < 4 else "200.00"] for m in range(1, 7)]
    import_revenue(sqlite_engine, write(tmp_path, ["customer", "date", "amount"], *rows), create_accounts=True, now=NOW)
    acme_id = account(sqlite_engine, "acme")["id"]
    started = datetime(2027, 2, 1, tzinfo=UTC)
    with sqlite_engine.begin() as conn:
        conn.execute(
            insert(table_of(Enrollment)),
            [
                {"playbook": f"p{i}", "revision": "r", "account_id": acme_id, "status": "active",
                 "started_at": started, "holdout": False, "source": "schedule", "state": {}}
                for i in range(7)
            ],
        )  # fmt: skip
    with Session(sqlite_engine) as s:
        record_revenue_outcomes(s, datetime(2027, 6, 30, tzinfo=UTC))
        s.commit()
    o = table_of(Outcome)
    with sqlite_engine.connect() as conn:
        shares = conn.execute(select(o.c.arr_delta_cents).where(o.c.kind == "expanded").order_by(o.c.id)).scalars()
        shares = list(shares)
    assert len(shares) == 7 and sum(shares) == 12 * 100_00  # once in all, not seven times
    assert shares == split_cents(12 * 100_00, 7)
    # the playbooks report credits each playbook's enrollment with its share, so the seven add up to it once
    with Session(sqlite_engine) as s:
        impacts = playbook_impact(s, datetime(2027, 6, 30, tzinfo=UTC))
    credited = {impact.playbook: impact.arr.enrolled_mean_cents for impact in impacts if impact.arr}
    assert credited == {f"p{i}": share for i, share in enumerate(split_cents(12 * 100_00, 7))}
