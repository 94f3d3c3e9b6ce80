"""``retain report …`` through the real CLI, on a real SQLite file holding a small book."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

import cli
from cli._app import console
from cli.report import table_renderables
from flows.analytics.attribution import newcombe_interval
from flows.reports.reports import Column, ReportTable
from models import Account, Enrollment, Outcome, RevenueEntry, make_engine, session


@dataclass
class Run:
    code: int
    out: str
    err: str


Retain = Callable[..., Run]
AS_OF = "2027-07-15T12:00:00Z"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("init") / "retain.db"
    assert cli.main(["--database-url", f"sqlite:///{path}", "init"]) == 0
    return path


def _book(url: str) -> None:
    """Playbook "nudge": 40 contacted and 40 holdout enrollments started 2027-01-10, MRR 1,000.00 a month
    from 2026-12 to 2027-06; churned from 2027-03: 4 contacted, 12 holdout; goal "renewed": 20 / 8.
    Playbook "tiny": 3 contacted (one churned from 2027-03), 2 holdout: too few to tell."""
    engine = make_engine(url)
    with session(engine) as s:
        conn = s.connection()
        conn.execute(
            insert(Account.__table__),  # type: ignore[attr-defined]
            [{"external_id": f"a{i:03d}", "name": f"Account {i}", "custom": {}} for i in range(85)],
        )
        ids = conn.execute(select(Account.id).order_by(Account.id)).scalars().all()
        revenue = []
        for i, account_id in enumerate(ids):
            if i < 80:
                holdout, rank, playbook = i >= 40, i % 40, "nudge"
                renews, churns = rank < (8 if holdout else 20), rank < (12 if holdout else 4)
            else:  # tiny: one contacted account churns
                holdout, playbook, renews, churns = i >= 83, "tiny", False, i == 80
            e = Enrollment.model_validate(
                {"playbook": playbook, "revision": "r", "account_id": account_id, "holdout": holdout,
                 "started_at": at("2027-01-10T14:00:00"), "outcome": "renewed" if renews else None}
            )  # fmt: skip
            s.add(e)
            s.flush()
            if renews:
                s.add(Outcome.model_validate({"account_id": account_id, "enrollment_id": e.id, "playbook": playbook,
                                              "kind": "renewed", "source": "goal", "occurred_at": at("2027-02-15T14:00:00")}))  # fmt: skip
            for month in range(12, 19):  # 2026-12 .. 2027-06
                period = date(2026 + month // 13, (month - 1) % 12 + 1, 1)
                if not (churns and period >= date(2027, 3, 1)):
                    revenue.append({"account_id": account_id, "period": period, "product": "", "mrr_cents": 100_000})
        conn.execute(insert(RevenueEntry.__table__), revenue)  # type: ignore[attr-defined]
    engine.dispose()


@pytest.fixture
def retain(
    initialised: Path,
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Retain:
    with (
        closing(sqlite3.connect(initialised)) as source,
        closing(sqlite3.connect(make_url(sqlite_url).database or "")) as copy,
    ):
        source.backup(copy)
    _book(sqlite_url)
    monkeypatch.setattr(console, "width", 200)
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    capsys.readouterr()

    def run(*args: str | Path) -> Run:
        code = cli.main(["--database-url", sqlite_url, *map(str, args)])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def test_report_playbooks_json(retain: Retain) -> None:
    result = retain("report", "playbooks", "--format", "json", "--as-of", AS_OF)
    assert result.code == 0, result.err
    assert "revenue outcomes through 2027-06: 17 (0 renewed, 0 expanded, 0 contracted, 17 churned" in result.err
    document = json.loads(result.out)
    assert document["report"] == "playbooks" and document["window_days"] == 120
    nudge, tiny = document["playbooks"]
    assert (nudge["playbook"], nudge["enrolled"], nudge["holdout"]) == ("nudge", 40, 40)
    outcomes = {o["label"]: o for o in nudge["outcomes"]}
    churned = outcomes["churned"]
    # 4/40 vs 12/40: 10% vs 30%, lift -20 points
    assert (churned["enrolled_rate"], churned["holdout_rate"]) == (0.1, 0.3)
    assert churned["lift"] == pytest.approx(-0.2)
    interval = newcombe_interval(4, 40, 12, 40)
    assert churned["interval"] == [pytest.approx(interval.low), pytest.approx(interval.high)]
    assert churned["verdict"] == (
        f"lowers churned by 20.0 points (95% CI {interval.low * 100:.1f} to {interval.high * 100:.1f})"
    )
    renewed = outcomes["renewed (goal)"]
    assert (renewed["enrolled_with"], renewed["holdout_with"], renewed["lift"]) == (20, 8, pytest.approx(0.3))
    assert (tiny["enrolled"], tiny["holdout"]) == (3, 2)
    assert {o["verdict"] for o in tiny["outcomes"]} == {"too few holdout enrollments to tell (n=2; 30 needed)"}


def test_report_playbooks_table_csv_and_chart(retain: Retain, tmp_path: Path) -> None:
    table = retain("report", "playbooks", "--as-of", AS_OF, "--no-detect")
    assert table.code == 0, table.err
    assert "revenue outcomes" not in table.err
    assert "Enrolled vs holdout: outcomes within 120 days of enrollment" in table.out
    assert "lifts renewed by 30.0 points" in table.out
    chart = tmp_path / "playbooks.png"
    csv = retain("report", "playbooks", "--as-of", AS_OF, "--format", "csv", "--chart", chart, "-p", "nudge")
    assert csv.code == 0, csv.err
    lines = csv.out.splitlines()
    assert lines[0] == (
        "playbook,outcome,enrolled,holdout,enrolled rate,holdout rate,lift (points),95% CI low,95% CI high,verdict"
    )
    assert lines[1].startswith("nudge,renewed (goal),40,40,0.5,0.2,0.3,")
    assert f"chart written to {chart}" in csv.err
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_outcomes_twice_adds_nothing(retain: Retain) -> None:
    first = retain("report", "outcomes", "--as-of", AS_OF)
    second = retain("report", "outcomes", "--as-of", AS_OF)
    assert first.code == second.code == 0
    assert "rows added 17, updated 0, removed 0" in first.out
    assert "rows added 0, updated 0, removed 0" in second.out


def test_report_retention_formats(retain: Retain, tmp_path: Path) -> None:
    page = tmp_path / "retention.html"
    result = retain("report", "retention", "--as-of", AS_OF, "--months", "3", "--chart", page)
    assert result.code == 0, result.err
    assert "Retention in USD" in result.out and "2027-06" in result.out
    assert page.read_text(encoding="utf-8").count("data:image/png;base64,") == 1
    csv = retain("report", "retention", "--as-of", AS_OF, "--months", "3", "--format", "csv")
    # 2027-04..06: 85 accounts at 1,000.00 less the 17 that churned in March
    assert csv.out.splitlines()[-1].startswith("2027-06,68000.00,0.00,0.00,0.00,0.00,0.00,68000.00,816000.00,")


def test_report_surveys_and_health_without_data(retain: Retain, tmp_path: Path) -> None:
    surveys = retain("report", "surveys", "--as-of", AS_OF, "--chart", tmp_path / "s.png")
    assert surveys.code == 0
    assert "no chart written: nothing to chart: no survey answers in this period" in surveys.err
    health = retain("report", "health", "--as-of", AS_OF, "--format", "json")
    assert json.loads(health.out)["notes"] == ["no health scores yet: `retain health run`"]


def test_report_unknown_segment(retain: Retain) -> None:
    result = retain("report", "retention", "--segment", "nope")
    assert result.code == 1
    assert "no account is in segment 'nope'" in result.err and "Traceback" not in result.err


def test_report_weekly_posts_once(retain: Retain, tmp_path: Path) -> None:
    written = tmp_path / "weekly.md"
    first = retain("report", "weekly", "--as-of", "2027-03-03", "--post", "file", "--output", written)
    second = retain("report", "weekly", "--as-of", "2027-03-04", "--post", "file")
    assert first.code == second.code == 0, first.err + second.err
    assert written.read_text(encoding="utf-8").startswith("# Customer success weekly: 2027-W08")
    assert "digest weekly:2027-W08:file: posted" in first.err
    assert "digest weekly:2027-W08:file: already posted" in second.err
    assert second.out.startswith("# Customer success weekly: 2027-W08")
    lines = (tmp_path / "outbox" / "file.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["key"] == "weekly:2027-W08:file"
    # the March churn of 17 accounts is dated 2027-03-01, in week 2027-W09 (recorded before the digest)
    week9 = retain("report", "weekly", "--as-of", "2027-03-10")
    assert "- revenue moves: **17**, net ARR -204,000.00" in week9.out


def test_report_weekly_by_email_needs_an_address(retain: Retain) -> None:
    result = retain("report", "weekly", "--as-of", "2027-03-10", "--post", "email")
    assert result.code == 1
    assert "needs --to" in result.err


# --------------------------------------------------------------------------------------------
# several currencies


def _half_in_euros(url: str) -> None:
    """The odd-numbered accounts pay in EUR (same cents): the book is in two currencies."""
    engine = make_engine(url)
    with session(engine) as s:
        table = RevenueEntry.__table__  # type: ignore[attr-defined]
        s.connection().execute(table.update().where(table.c.account_id % 2 == 1).values(currency="EUR"))
    engine.dispose()


def test_report_playbooks_in_several_currencies(retain: Retain, sqlite_url: str) -> None:
    _half_in_euros(sqlite_url)
    result = retain("report", "playbooks", "--format", "json", "--as-of", AS_OF)
    assert result.code == 0, result.err  # detecting outcomes needs no currency: each account in its own
    assert "revenue outcomes through 2027-06: 17 (0 renewed, 0 expanded, 0 contracted, 17 churned" in result.err
    document = json.loads(result.out)
    nudge = document["playbooks"][0]
    # the counts are those of the one-currency book
    churned = {o["label"]: o for o in nudge["outcomes"]}["churned"]
    assert (churned["enrolled_with"], churned["enrolled"], churned["holdout_with"], churned["holdout"]) == (
        4,
        40,
        12,
        40,
    )
    assert nudge["arr"] is None
    assert [(a["currency"], a["enrolled"] + a["holdout"]) for a in nudge["arr_by_currency"]] == [
        ("EUR", 40),
        ("USD", 40),
    ]
    assert document["currencies"] == ["EUR", "USD"]
    one = retain("report", "playbooks", "--format", "json", "--as-of", AS_OF, "--currency", "eur", "--no-detect")
    assert one.code == 0, one.err
    [eur] = [a for a in json.loads(one.out)["playbooks"][0]["arr_by_currency"]]
    assert eur["currency"] == "EUR"
    table = retain("report", "playbooks", "--as-of", AS_OF, "--no-detect")
    assert "note: the ARR effect is per currency (EUR, USD; never converted)" in table.out
    retention = retain("report", "retention", "--as-of", AS_OF, "--months", "3")
    assert retention.code == 0, retention.err
    assert "Retention in EUR" in retention.out  # 43 accounts pay in EUR, 42 in USD
    assert "this report is in EUR, the one most accounts pay in (never converted). For another: --currency USD" in (
        " ".join(retention.out.split())
    )


# --------------------------------------------------------------------------------------------
# an 80-column terminal


def test_report_tables_read_well_in_80_columns(retain: Retain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 80)
    result = retain("report", "playbooks", "--as-of", AS_OF)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert max(len(line) for line in lines if not line.startswith("note: ")) <= 80  # notes wrap softly
    # the keys whole, the numbers whole, the verdicts as sentences under their table
    assert "playbook nudge: enrolled 40, holdout 40" in lines
    assert "playbook tiny: enrolled 3, holdout 2" in lines
    assert any(line.startswith("│ renewed (goal) ") for line in lines)
    assert any(line.startswith("│ churned ") and "10.0%" in line and "30.0%" in line for line in lines)
    interval = newcombe_interval(4, 40, 12, 40)
    assert (
        f"  churned: lowers churned by 20.0 points (95% CI {interval.low * 100:.1f} to {interval.high * 100:.1f})"
        in lines
    )
    for command in ("retention", "surveys", "health"):
        other = retain("report", command, "--as-of", AS_OF)
        assert other.code == 0, other.err
        tables = [line for line in other.out.splitlines() if line[:1] in "┏┃┡│└"]
        assert tables and max(len(line) for line in tables) <= 80, command


def _render(table: ReportTable, width: int) -> str:
    out = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    for part in table_renderables(table, width):
        out.print(part)
    return out.file.getvalue()  # type: ignore[attr-defined]


LIFT = ReportTable(
    "lift",
    "Enrolled vs holdout",
    [
        Column("playbook"), Column("outcome"), Column("enrolled", "int"), Column("holdout", "int"),
        Column("enrolled rate", "percent"), Column("holdout rate", "percent"), Column("lift (points)", "points"),
        Column("95% CI low", "points"), Column("95% CI high", "points"), Column("verdict", detail=True),
    ],
    [
        ["renewal_enterprise_q4", "renewed (goal)", 1234, 310, 0.5, 0.4, 0.1, 0.02, 0.18,
         "lifts renewed by 10.0 points (95% CI 2.0 to 18.0)"],
        ["renewal_enterprise_q4", "contracted", 1234, 310, 0.05, 0.06, -0.01, -0.04, 0.02,
         "no detectable effect on contracted (5.0% enrolled vs 6.0% holdout; 95% CI -4.0 to 2.0 points)"],
        ["onboarding", "onboarded (goal)", 40, 3, 0.9, 0.33, 0.57, None, None,
         "too few holdout enrollments to tell (n=3; 30 needed)"],
    ],
)  # fmt: skip


@pytest.mark.parametrize("width", [80, 120])
def test_a_lift_table_keeps_its_names_whole(width: int) -> None:
    text = _render(LIFT, width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for name in ("renewal_enterprise_q4", "onboarding", "renewed (goal)", "contracted", "onboarded (goal)"):
        assert name in text, name
    # numbers never break; an interval reads "low to high"
    assert "+2.0 to +18.0" in text and "1234" in text and "90.0%" in text
    # verdicts are sentences, not a column one word wide
    assert any(line.strip().endswith("lifts renewed by 10.0 points (95% CI 2.0 to 18.0)") for line in lines)
    assert not any(line.strip("│ ") in ("lifts", "renewed", "by") for line in lines)


def test_a_wide_table_is_split_in_parts_that_repeat_the_key() -> None:
    columns = [Column("month"), *(Column(f"column {i}", "money") for i in range(10))]
    table = ReportTable("wide", "Wide", columns, [["2027-01", *(123_456_789 for _ in range(10))]])
    text = _render(table, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("2027-01") >= 2 and "Wide (1/" in text
    assert text.count("1,234,567.89") == 10  # every figure, whole
