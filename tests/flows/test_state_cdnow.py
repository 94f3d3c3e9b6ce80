"""Account state from revenue on a real public purchase history, imported only through the CLI.

The data is the CDNOW sample (tests/data/CDNOW_sample.txt, see tests/data/README.md): 2,357
customers' 6,919 purchases of CDs from January 1997 to June 1998. Each line is the customer's id in
the full data set, its id in the sample, the date (YYYYMMDD), the number of CDs and the dollar
value. The file is reshaped into a CSV (columns and date format only, every row kept) and imported
with ``retain revenue import``; nothing is written to the database but by the CLI.

The churn rule, computed here from the raw file without any of Retain's code: a customer is
*active* in a calendar month when it spent more than zero in it (purchases are revenue of the month
of their date); it *churned* on the first day of a month without spend that follows an active
month, and was *reactivated* on the first day of a month with spend that follows a month without,
after spending before. Only months that are over by the as-of date (and by the data's end,
1998-06-30) are read; the first month of the data (January 1997) has no month before it to compare.
"""

from __future__ import annotations

import csv
import functools
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

import cli
from models import BUNDLED_PLAYBOOKS_DIR, Account, Enrollment, TimelineEvent, make_engine, table_of

RAW = Path(__file__).parent.parent / "data" / "CDNOW_sample.txt"
#: the as-of of the win-back tick, and of the state it reads: inside the data, mid-month
AS_OF = datetime(1998, 4, 15, 12, 0, tzinfo=UTC)
DATA_END = date(1998, 6, 30)

WIN_BACK = """\
playbook: win_back
name: Win-back, churned 30 to 180 days ago
lifecycle: win_back
audience: >
  account.status == "churned"
  and days_since(account.churned_at) >= 30
  and days_since(account.churned_at) <= 180
  and (account.reactivated_at is none or account.reactivated_at < account.churned_at)
entry:
  reentry: never
steps:
  - id: give_them_time
    kind: wait
    for: 7 days
"""


def _month(day: date) -> date:
    return day.replace(day=1)


def _add(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


Rows = tuple[tuple[str, date, Decimal], ...]


@functools.cache
def read_raw() -> Rows:
    rows = []
    for line in RAW.read_text(encoding="ascii").splitlines():
        customer, _sample_id, day, _cds, dollars = line.split()
        rows.append((customer, date(int(day[:4]), int(day[4:6]), int(day[6:])), Decimal(dollars)))
    return tuple(rows)


def expected_state(rows: Rows, as_of: date) -> dict[str, dict[str, object]]:
    """Status, churn and reactivation month per customer, by the rule in the module's docstring."""
    cutoff = min(as_of, DATA_END)
    return _state_through(rows, _add(_month(cutoff + timedelta(days=1)), -1))  # the last month over by the cutoff


@functools.cache  # the state changes only when a month ends: the days of one month share it (read-only)
def _state_through(rows: Rows, last: date) -> dict[str, dict[str, object]]:
    spend: dict[str, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for customer, day, dollars in rows:
        spend[customer][_month(day)] += dollars
    first = min(_month(day) for _, day, dollars in rows if dollars > 0)
    state: dict[str, dict[str, object]] = {}
    for customer, months in spend.items():
        active = {m for m, dollars in months.items() if dollars > 0 and m <= last}
        if not active:
            state[customer] = {"status": None, "churned_at": None, "reactivated_at": None, "mrr": Decimal(0)}
            continue
        churned = reactivated = None
        month = _add(first, 1)
        while month <= last:
            before, now = _add(month, -1) in active, month in active
            if before and not now:
                churned = month
            elif now and not before and min(active) < month:
                reactivated = month
            month = _add(month, 1)
        state[customer] = {
            "status": "active" if last in active else "churned",
            "churned_at": churned,
            "reactivated_at": reactivated,
            "mrr": months.get(last, Decimal(0)) if last in active else Decimal(0),
        }
    return state


def days_since(month: date | None, now: datetime) -> int | None:
    if month is None:
        return None
    return (now - datetime(month.year, month.month, 1, tzinfo=UTC)) // timedelta(days=1)


def expected_win_back(state: dict[str, dict[str, object]], now: datetime) -> set[str]:
    chosen = set()
    for customer, s in state.items():
        days = days_since(s["churned_at"], now)  # type: ignore[arg-type]
        assert days not in (29, 30, 180, 181), "an as-of on a boundary would test rounding, not the rule"
        back = s["reactivated_at"]
        if (
            s["status"] == "churned"
            and days is not None
            and 30 <= days <= 180
            and (back is None or back < s["churned_at"])  # type: ignore[operator]
        ):
            chosen.add(customer)
    return chosen


@pytest.fixture
def book(tmp_path: Path) -> tuple[str, Path]:
    """A migrated SQLite database (by `retain init`) and the raw file reshaped into a CSV."""
    url = f"sqlite:///{tmp_path / 'cdnow.db'}"
    assert cli.main(["--database-url", url, "init"]) == 0
    path = tmp_path / "cdnow.csv"
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["customer", "date", "amount"])
        for customer, day, dollars in read_raw():
            writer.writerow([customer, day.isoformat(), f"{dollars:.2f}"])
    return url, path


def retain(url: str, *args: str) -> None:
    assert cli.main(["--database-url", url, *args]) == 0, args


def stored_state(url: str) -> dict[str, dict[str, object]]:
    engine = make_engine(url)
    account = table_of(Account)
    with engine.connect() as conn:
        rows = conn.execute(
            select(account.c.external_id, account.c.status, account.c.churned_at, account.c.reactivated_at,
                   account.c.mrr)
        ).all()  # fmt: skip
    engine.dispose()
    return {
        r.external_id: {
            "status": r.status,
            "churned_at": r.churned_at.date() if r.churned_at else None,
            "reactivated_at": r.reactivated_at.date() if r.reactivated_at else None,
            "mrr": Decimal(str(r.mrr)).quantize(Decimal("0.01")),
        }
        for r in rows
    }


def compare(found: dict[str, dict[str, object]], wanted: dict[str, dict[str, object]]) -> None:
    assert set(found) == set(wanted)
    for customer, want in wanted.items():
        got = found[customer]
        if want["status"] is None:  # no spend yet: revenue says nothing, the account stays as created
            assert (got["churned_at"], got["reactivated_at"], got["mrr"]) == (None, None, 0), customer
            continue
        assert got == {**want, "mrr": Decimal(want["mrr"]).quantize(Decimal("0.01"))}, customer  # type: ignore[arg-type]


def test_churn_and_reactivation_dates_equal_the_raw_files_and_win_back_selects_exactly_those_accounts(book):
    url, path = book
    rows = read_raw()
    assert (len(rows), len({c for c, _, _ in rows})) == (6919, 2357)

    # the state as of the win-back tick: nothing paid after it is read
    retain(url, "revenue", "import", str(path), "--currency", "USD", "--create-accounts", "--as-of", "1998-04-15")
    at_tick = expected_state(rows, AS_OF.date())
    compare(stored_state(url), at_tick)
    churned = sum(1 for s in at_tick.values() if s["status"] == "churned")
    reactivated = sum(1 for s in at_tick.values() if s["reactivated_at"] is not None)
    assert churned > 1000 and reactivated > 100  # the comparison is not between two empty sets

    folder = path.parent / "playbooks"
    folder.mkdir()
    (folder / "win_back.yaml").write_text(WIN_BACK, encoding="utf-8")
    retain(url, "--playbooks-dir", str(folder), "run", "win_back", "--as-of", AS_OF.isoformat(), "--no-prefect")
    engine = make_engine(url)
    with engine.connect() as conn:
        enrolled = set(
            conn.execute(
                select(table_of(Account).c.external_id)
                .join(table_of(Enrollment), table_of(Enrollment).c.account_id == table_of(Account).c.id)
                .where(table_of(Enrollment).c.playbook == "win_back")
            ).scalars()
        )
        state_events = [
            detail["field"]
            for detail in conn.execute(
                select(table_of(TimelineEvent).c.detail).where(table_of(TimelineEvent).c.kind == "state")
            ).scalars()
        ]
    engine.dispose()
    wanted = expected_win_back(at_tick, AS_OF)
    assert len(wanted) > 100
    assert enrolled == wanted
    # one timeline event per changed status or date (accounts are created active, without dates)
    told = {name: state_events.count(name) for name in ("status", "churned_at", "reactivated_at")}
    assert told == {
        "status": churned,
        "churned_at": sum(1 for s in at_tick.values() if s["churned_at"] is not None),
        "reactivated_at": reactivated,
    }

    # the state at the data's end, re-derived by importing the same file again: the dates move forward
    retain(url, "revenue", "import", str(path), "--currency", "USD", "--as-of", "1998-12-31")
    compare(stored_state(url), expected_state(rows, date(1998, 12, 31)))


def test_the_waterfall_of_every_month_equals_the_raw_files(book, capsys):
    url, path = book
    retain(url, "revenue", "import", str(path), "--currency", "USD", "--create-accounts")
    capsys.readouterr()
    retain(url, "report", "retention", "--as-of", "1999-01-01T00:00:00+00:00", "--months", "18", "--format", "json")
    months = {m["month"]: m for m in json.loads(capsys.readouterr().out)["months"]}
    spend: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for customer, day, dollars in read_raw():
        spend[customer][_month(day)] += int(dollars * 100)
    compared = 0
    for label, row in months.items():
        month = date.fromisoformat(f"{label}-01")
        before = _add(month, -1)
        counts = {"new": 0, "churn": 0, "reactivation": 0, "ending": 0}
        for history in spend.values():
            b, e = history.get(before, 0), history.get(month, 0)
            counts["ending"] += e
            if b == 0 < e:
                counts["reactivation" if min(m for m, c in history.items() if c > 0) < month else "new"] += 1
            elif e == 0 < b:
                counts["churn"] += 1
        found = {"new": row["new_accounts"], "churn": row["churned_accounts"],
                 "reactivation": row["reactivated_accounts"], "ending": row["ending"]}  # fmt: skip
        assert found == counts, label
        compared += 1
    assert compared == 18 and min(months) == "1997-01" and max(months) == "1998-06"


def qualifies_for_win_back(state: dict[str, object], day: date) -> bool:
    """The shipped win_back audience on a day, by the rule of the module's docstring: churned 30 to
    180 days before, not back since (these accounts have no product events: revenue stands for
    having been live)."""
    churned = state["churned_at"]
    if state["status"] != "churned" or not isinstance(churned, date):
        return False
    back = state["reactivated_at"]
    return 30 <= (day - churned).days <= 180 and (back is None or back < churned)  # type: ignore[operator]


def test_a_simulation_over_a_past_window_enrolls_on_each_day_exactly_the_accounts_that_qualified_then(
    book: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A backtest: the accounts hold their state at the data's end (dates far after the window),
    and `retain playbooks simulate` over a past window reads the revenue as of each tick."""
    url, path = book
    rows = read_raw()
    retain(url, "revenue", "import", str(path), "--currency", "USD", "--create-accounts", "--as-of", "1998-12-31")
    capsys.readouterr()
    # the shipped win_back's audience, schedule and entry, with one long wait for steps: who enters
    # is the question here, not how fast the engine walks hundreds of enrollments through three notes
    shipped = yaml.safe_load((BUNDLED_PLAYBOOKS_DIR / "win_back.yaml").read_text(encoding="utf-8"))
    lean = {key: shipped[key] for key in ("playbook", "name", "lifecycle", "schedule", "audience", "entry")}
    lean["entry"] = {k: v for k, v in lean["entry"].items() if k != "contacts"}
    lean["steps"] = [{"id": "hold", "kind": "wait", "for": "365 days"}]
    folder = path.parent / "playbooks"
    folder.mkdir()
    (folder / "win_back.yaml").write_text(yaml.safe_dump(lean), encoding="utf-8")

    def simulate(start: date, days: int) -> dict[str, date]:
        args = ["--playbooks-dir", str(folder), "playbooks", "simulate", "win_back"]
        retain(url, *args, "--as-of", start.isoformat(), "--days", str(days), "--format", "json")
        entered = json.loads(capsys.readouterr().out)["entered"]
        assert len(entered) == len({e["account"] for e in entered})  # reentry: never
        return {e["account"]: date.fromisoformat(e["on"]) for e in entered}

    # at single dates: who enters is exactly who qualifies then
    for day in (date(1997, 9, 20), date(1998, 2, 10), date(1998, 5, 3)):
        wanted = {c for c, s in expected_state(rows, day).items() if qualifies_for_win_back(s, day)}
        assert len(wanted) > 50, day
        assert set(simulate(day, 0)) == wanted, day

    # over a window across two month ends: each account enters on the first day it qualifies
    start, days = date(1998, 2, 15), 48
    found = simulate(start, days)
    wanted: dict[str, date] = {}
    day = start
    while day < start + timedelta(days=days):
        for customer, s in expected_state(rows, day).items():
            if customer not in wanted and qualifies_for_win_back(s, day):
                wanted[customer] = day
        day += timedelta(days=1)
    last = start + timedelta(days=days)
    found = {c: d for c, d in found.items() if d < last}  # the window's last moment has no whole day
    assert len(wanted) > 300 and len(set(wanted.values())) >= 3
    assert found == wanted
