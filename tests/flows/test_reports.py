"""The reports, their charts, their Prefect artifacts and the weekly digest, on a small book whose
figures are worked out by hand below."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.analytics.attribution import record_revenue_outcomes
from flows.reports.charts import NothingToChart, chart, readability_problems, save
from flows.reports.reports import (
    artifacts_of,
    digest_week,
    health_report,
    playbooks_report,
    post_digest,
    retention_report,
    surveys_report,
    weekly_digest,
)
from integrations.channels.file import FileChannel
from integrations.channels.slack import SlackChannel
from models import (
    Account,
    Enrollment,
    HealthScore,
    IntegrationError,
    Outcome,
    RevenueEntry,
    SurveyResponse,
    TimelineEvent,
    Touch,
    session,
    table_of,
)

AS_OF = datetime(2027, 3, 10, 9, 0, tzinfo=UTC)  # a Wednesday: the digest covers Mon 1 - Sun 7 March 2027


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def months(first: str, last: str) -> list[date]:
    y, m = map(int, first.split("-"))
    out = []
    while f"{y:04d}-{m:02d}" <= last:
        out.append(date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# The book (MRR in dollars):
#   acme   1,000 from 2026-01, 1,500 in 2027-03 (expansion +500)       health yellow 60 -> red 30
#   bolt     500 from 2026-01 to 2027-02, nothing in 2027-03 (churn)    health green 80 -> yellow 65
#   cargo    300 from 2026-06 (new then)                                 health yellow 50 -> yellow 52
#   delta    no revenue; renews 2027-04-15 and was emailed on 2027-03-05
#   echo     churned, red: left out of "at risk"
# 2027-03: starting 1,800 + expansion 500 - churn 500 = ending 1,800
# GRR/NRR of 2027-03 (cohort 2026-03: acme 1,000, bolt 500): retained min(1,000, 1,500) + 0 = 1,000 of 1,500
#   -> GRR 66.7%; ending 1,500 of 1,500 -> NRR 100%. Of 2027-02 (cohort 2026-02): 1,500 of 1,500 both.
@pytest.fixture
def book(sqlite_engine: Engine) -> Engine:
    with session(sqlite_engine) as s:
        conn = s.connection()
        rows = [
            {"external_id": "acme", "name": "Acme", "csm_email": "dana@cs.example", "health": "red",
             "health_score": 30.0, "health_trend": -30.0, "segment": "enterprise"},
            {"external_id": "bolt", "name": "Bolt", "health": "yellow", "health_score": 65.0, "health_trend": -15.0,
             "segment": "smb"},
            {"external_id": "cargo", "name": "Cargo", "health": "yellow", "health_score": 52.0, "health_trend": 2.0,
             "renewal_date": date(2027, 4, 1), "segment": "smb"},
            {"external_id": "delta", "name": "Delta", "renewal_date": date(2027, 4, 15), "segment": "smb"},
            {"external_id": "echo", "name": "Echo", "status": "churned", "health": "red", "segment": "smb"},
        ]  # fmt: skip
        blank = {"custom": {}, "csm_email": None, "health": None, "health_score": None, "health_trend": None,
                 "renewal_date": None, "status": "active"}  # fmt: skip
        conn.execute(insert(table_of(Account)), [{**blank, **r} for r in rows])
        ids = dict(conn.execute(select(Account.external_id, Account.id)).all())
        revenue = (
            [(ids["acme"], p, 150_000 if p == date(2027, 3, 1) else 100_000) for p in months("2026-01", "2027-03")]
            + [(ids["bolt"], p, 50_000) for p in months("2026-01", "2027-02")]
            + [(ids["cargo"], p, 30_000) for p in months("2026-06", "2027-03")]
        )
        conn.execute(
            insert(table_of(RevenueEntry)),
            [{"account_id": a, "period": p, "product": "", "mrr_cents": c} for a, p, c in revenue],
        )
        surveys = [
            ("acme", "nps", 10, "2027-02-03"), ("acme", "nps", 9, "2027-02-04"), ("cargo", "nps", 3, "2027-02-05"),
            ("bolt", "nps", 2, "2027-03-03"), ("cargo", "nps", 9, "2027-03-04"),
            ("acme", "csat", 4, "2027-03-02"), ("acme", "csat", 5, "2027-03-02"), ("bolt", "csat", 2, "2027-03-02"),
            ("cargo", "ces", 6, "2027-02-10"),
        ]  # fmt: skip
        conn.execute(
            insert(table_of(SurveyResponse)),
            [
                {"account_id": ids[a], "kind": k, "score": v, "responded_at": at(d + "T10:00:00")}
                for a, k, v, d in surveys
            ],
        )
        scores = [
            ("acme", "2027-02-01", 60, "yellow"), ("bolt", "2027-02-01", 80, "green"), ("cargo", "2027-02-01", 50, "yellow"),
            ("acme", "2027-03-09", 30, "red"), ("bolt", "2027-03-09", 65, "yellow"), ("cargo", "2027-03-09", 52, "yellow"),
        ]  # fmt: skip
        conn.execute(
            insert(table_of(HealthScore)),
            [{"account_id": ids[a], "scored_at": at(d + "T06:00:00"), "score": v, "band": b, "components": {}}
             for a, d, v, b in scores],
        )  # fmt: skip
        enrollments = {}
        for name, holdout in (("acme", False), ("bolt", True)):
            e = Enrollment.model_validate(
                {"playbook": "nudge", "revision": "r", "account_id": ids[name], "holdout": holdout,
                 "started_at": at("2027-03-02T14:00:00")}
            )  # fmt: skip
            s.add(e)
            s.flush()
            enrollments[name] = e.id
        conn.execute(
            insert(table_of(Touch)),
            [
                {"key": "nudge:1:hello:1", "enrollment_id": enrollments["acme"], "account_id": ids["acme"],
                 "playbook": "nudge", "step_id": "hello", "channel": "email", "status": "delivered", "payload": {},
                 "created_at": at("2027-03-02T14:00:00"), "delivered_at": at("2027-03-02T14:01:00")},
                {"key": "manual:delta", "enrollment_id": None, "account_id": ids["delta"], "playbook": None,
                 "step_id": None, "channel": "email", "status": "delivered",
                 "payload": {}, "created_at": at("2027-03-05T10:00:00"), "delivered_at": at("2027-03-05T10:00:00")},
            ],
        )  # fmt: skip
        conn.execute(
            insert(table_of(TimelineEvent)),
            [{"account_id": ids["acme"], "enrollment_id": enrollments["acme"], "playbook": "nudge", "step_id": "hello",
              "kind": "touch", "at": at("2027-03-02T14:00:00"), "summary": "hello: email queued", "detail": {}}],
        )  # fmt: skip
        s.add(
            Outcome.model_validate(
                {"account_id": ids["acme"], "enrollment_id": enrollments["acme"], "playbook": "nudge",
                 "kind": "renewed", "source": "goal", "occurred_at": at("2027-03-04T14:00:00")}
            )
        )  # fmt: skip
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    return sqlite_engine


# --------------------------------------------------------------------------------------------
# the reports


def test_retention_report_by_hand(book: Engine) -> None:
    with Session(book) as s:
        report = retention_report(s, AS_OF, months=3)
    assert [row["month"] for row in report.data["months"]] == ["2027-01", "2027-02", "2027-03"]
    march = report.data["months"][-1]
    assert (march["starting"], march["expansion"], march["churn"], march["ending"]) == (
        180_000,
        50_000,
        50_000,
        180_000,
    )
    assert march["grr"] == pytest.approx(2 / 3) and march["nrr"] == 1.0
    assert report.data["months"][1]["grr"] == 1.0
    assert march["logo_churn_rate"] == pytest.approx(1 / 3)  # bolt, of 3 active in February
    assert report.tables[0].shown()[-1][:9] == [
        "2027-03", "1,800.00", "0.00", "500.00", "0.00", "-500.00", "0.00", "1,800.00", "21,600.00",
    ]  # fmt: skip
    assert report.csv().splitlines()[0].startswith("month,start MRR,new,expansion")
    assert report.csv().splitlines()[-1].startswith("2027-03,1800.00,0.00,500.00,0.00,-500.00,0.00,1800.00,21600.00,")


def test_surveys_report_by_hand(book: Engine) -> None:
    with Session(book) as s:
        report = surveys_report(s, AS_OF, months=2)
    february, march = report.data["months"]
    # February NPS: 10, 9, 3 -> (2 - 1) / 3 = 33.3; March: 2, 9 -> (1 - 1) / 2 = 0
    assert (february["nps"]["score"], february["nps"]["responses"]) == (33.3, 3)
    assert march["nps"]["score"] == 0.0
    assert march["csat"]["score"] == 66.7  # 4, 5, 2: two of three satisfied
    assert february["ces"]["score"] == 6.0
    assert report.tables[0].rows[0] == ["2027-02", 33.3, 3, None, 0, 6.0, 1]


def test_health_report_bands_and_movers(book: Engine) -> None:
    with Session(book) as s:
        report = health_report(s, AS_OF, months=2)
    assert report.data["bands"] == {"green": 0, "yellow": 2, "red": 1}
    assert [(x["at"], x["green"], x["yellow"], x["red"]) for x in report.data["over_time"]] == [
        ("2027-02", 1, 2, 0),
        ("2027-03-10 (as of)", 0, 2, 1),
    ]
    movers = [(m["account"], m["band then"], m["band now"], m["change"]) for m in report.data["movers"]]
    assert movers == [
        ("acme", "yellow", "red", "-30"),
        ("bolt", "green", "yellow", "-15"),
        ("cargo", "yellow", "yellow", "2"),
    ]


def test_playbooks_report_shape(book: Engine) -> None:
    with Session(book) as s:
        report = playbooks_report(s, AS_OF, min_group=1)
    [nudge] = report.data["playbooks"]
    assert (nudge["enrolled"], nudge["holdout"]) == (1, 1)
    # enrolled 2027-03-02: the March moves (dated 2027-03-01) come before it; no outcome but none of this playbook's goal
    assert [o["label"] for o in nudge["outcomes"]] == []
    assert report.tables[0].rows[0][1] == "(none seen)"
    assert [f["stage"] for f in nudge["funnel"]] == ["enrolled", "hello", "goal"]
    assert "1 enrollments started less than 120 days" in report.notes[0] or any(
        "started less" in n for n in report.notes
    )


def _bolt_in_pounds(book: Engine) -> None:
    """Bolt (churned in March, ARR -6,000.00) pays in GBP; Acme (+6,000.00 in March) and Cargo in USD."""
    with session(book) as s:
        conn = s.connection()
        bolt = conn.execute(select(Account.id).where(Account.external_id == "bolt")).scalar_one()
        table = table_of(RevenueEntry)
        conn.execute(table.update().where(table.c.account_id == bolt).values(currency="GBP"))
    with session(book) as s:
        record_revenue_outcomes(s, AS_OF)  # no currency to choose: each account in its own


def test_reports_of_a_book_in_several_currencies(book: Engine) -> None:
    _bolt_in_pounds(book)
    with Session(book) as s:
        retention = retention_report(s, AS_OF, months=3)
        pounds = retention_report(s, AS_OF, months=3, currency="gbp")
        playbooks = playbooks_report(s, AS_OF, min_group=1)
        only_usd = playbooks_report(s, AS_OF, min_group=1, currency="usd")
        digest = weekly_digest(s, AS_OF)
    # retention adds money up: the currency most accounts pay in, and it says so
    assert retention.title == "Retention in USD" and retention.data["currencies"] == ["GBP", "USD"]
    assert retention.notes[0] == (
        "the revenue is in 2 currencies (GBP, USD); this report is in USD, the one most accounts pay in "
        "(never converted). For another: --currency GBP"
    )
    assert [row[0] for row in retention.tables[0].rows] == ["2027-01", "2027-02", "2027-03"]
    assert pounds.title == "Retention in GBP" and pounds.tables[0].rows[-1][5] == -50_000  # Bolt's churn
    assert pounds.notes[0] == "only the accounts paying in GBP; the others pay in USD (never converted)"
    # the ARR effect: one row per playbook and currency, never a sum across them
    arr = playbooks.tables[1]
    assert [c.name for c in arr.columns][:4] == ["playbook", "currency", "enrolled n", "holdout n"]
    assert [row[:4] for row in arr.rows] == [["nudge", "GBP", 0, 1], ["nudge", "USD", 1, 0]]
    assert playbooks.data["currencies"] == ["GBP", "USD"] and playbooks.data["playbooks"][0]["arr"] is None
    assert any(
        note.startswith("the ARR effect is per currency (GBP, USD; never converted)") for note in playbooks.notes
    )
    assert [row[:4] for row in only_usd.tables[1].rows] == [["nudge", "USD", 1, 0]]
    # rates and lift are counts: the currency changes nothing
    assert playbooks.tables[0].rows == only_usd.tables[0].rows
    # the digest nets ARR per currency
    assert "- revenue moves: **2**, net ARR -6,000.00 GBP, +6,000.00 USD" in digest.markdown
    assert "| Bolt (bolt) | churned | -6,000.00 GBP | - |" in digest.markdown
    changed = digest.data["changed"]
    assert changed["net_arr_delta_cents"] is None
    assert changed["net_arr_delta_cents_by_currency"] == {"GBP": -600_000, "USD": 600_000}


# --------------------------------------------------------------------------------------------
# charts


def test_retention_chart_is_a_readable_png(book: Engine, tmp_path: Path) -> None:
    import matplotlib.image

    with Session(book) as s:
        report = retention_report(s, AS_OF, months=12)
    figure = chart(report)
    assert readability_problems(figure) == []
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["MRR waterfall: what moved each month", "GRR and NRR of the accounts paying 12 months before"]
    assert figure.axes[0].get_ylabel() == "MRR change (USD)"
    assert [t.get_text() for t in figure.axes[1].get_legend().get_texts()][:2] == [
        "NRR (net revenue retention)",
        "GRR (gross revenue retention)",
    ]
    path = save(report, tmp_path / "retention.png", figure)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000


def test_playbooks_chart_has_lift_bars_and_funnels(tmp_path: Path, sqlite_engine: Engine) -> None:
    from sqlalchemy import insert

    with session(sqlite_engine) as s:
        conn = s.connection()
        conn.execute(
            insert(table_of(Account)),
            [{"external_id": f"a{i}", "name": f"A{i}", "custom": {}} for i in range(20)],
        )
        ids = conn.execute(select(Account.id).order_by(Account.id)).scalars().all()
        for i, account_id in enumerate(ids):
            e = Enrollment.model_validate(
                {"playbook": "nudge", "revision": "r", "account_id": account_id, "holdout": i >= 10,
                 "started_at": at("2027-01-04T14:00:00"), "outcome": "onboarded" if i < 8 or 10 <= i < 12 else None}
            )  # fmt: skip
            s.add(e)
            s.flush()
            if i < 8 or 10 <= i < 12:  # 8/10 vs 2/10 reached the goal
                s.add(Outcome.model_validate({"account_id": account_id, "enrollment_id": e.id, "playbook": "nudge",
                                              "kind": "onboarded", "source": "goal", "occurred_at": at("2027-01-20T00:00:00")}))  # fmt: skip
            if i < 10:
                s.add(TimelineEvent.model_validate({"account_id": account_id, "enrollment_id": e.id, "playbook": "nudge",
                                                    "step_id": "welcome", "kind": "touch", "at": at("2027-01-04T14:00:00"),
                                                    "summary": "welcome"}))  # fmt: skip
    with Session(sqlite_engine) as s:
        report = playbooks_report(s, at("2027-06-01T00:00:00"), min_group=5)
    [nudge] = report.data["playbooks"]
    # no revision is stored: that two holdouts reached the goal shows holdouts are watched for it
    assert [(o["label"], o["enrolled_with"], o["holdout_with"]) for o in nudge["outcomes"]] == [
        ("onboarded (goal)", 8, 2)
    ]
    figure = chart(report)
    assert readability_problems(figure) == []
    assert figure.axes[0].get_xlabel().startswith("Lift (percentage points)")
    assert figure.axes[1].get_title() == "Funnel: nudge (10 enrolled)"
    path = save(report, tmp_path / "playbooks.html", figure)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "data:image/png;base64,iVBORw0KGgo" in page
    assert "<th>verdict</th>" in page and "welcome" in page


def test_an_empty_report_has_nothing_to_chart(sqlite_engine: Engine) -> None:
    with Session(sqlite_engine) as s:
        report = surveys_report(s, AS_OF)
    with pytest.raises(NothingToChart, match="no survey answers"):
        chart(report)


def test_an_unreadable_figure_is_not_saved(book: Engine, tmp_path: Path) -> None:
    with Session(book) as s:
        report = health_report(s, AS_OF)
    figure = chart(report)
    figure.axes[0].get_legend().remove()
    with pytest.raises(Exception, match="no legend"):
        save(report, tmp_path / "health.png", figure)
    assert not (tmp_path / "health.png").exists()


def test_artifacts_of_a_report(book: Engine) -> None:
    with Session(book) as s:
        report = retention_report(s, AS_OF, months=2)
    table, page = artifacts_of(report)
    assert table["key"] == "report-retention-retention" and table["type"] == "table"
    assert table["table"][-1]["month"] == "2027-03" and table["table"][-1]["GRR"] == "66.7%"
    assert page["key"] == "report-retention" and page["markdown"].startswith("# Retention in USD")
    assert "| 2027-03 | 1,800.00 |" in page["markdown"]


# --------------------------------------------------------------------------------------------
# the weekly digest


def test_digest_week() -> None:
    assert digest_week(AS_OF) == ("2027-W09", at("2027-03-01T00:00:00"), at("2027-03-08T00:00:00"))
    # on a Monday the week just ended is reported
    assert digest_week(at("2027-03-08T09:00:00"))[0] == "2027-W09"
    # the first days of January belong to the ISO week of the year before
    assert digest_week(at("2027-01-05T09:00:00"))[0] == "2026-W53"


def test_weekly_digest_content(book: Engine) -> None:
    with Session(book) as s:
        digest = weekly_digest(s, AS_OF)
    text = digest.markdown
    assert text.startswith("# Customer success weekly: 2027-W09\n\nMon 01 Mar to Sun 07 Mar 2027 (UTC).")
    assert "- **2** new enrollments (1 holdout): nudge 2" in text
    assert "- **2** touches delivered: email 2" in text
    assert "- **3** outcomes: churned (revenue) 1, expanded (revenue) 1, renewed (goal) 1" in text
    assert "- revenue moves: **2**, net ARR +0.00" in text
    assert "| Acme (acme), CSM dana@cs.example | expanded | +6,000.00 USD | - |" in text
    assert "| Bolt (bolt) | churned | -6,000.00 USD | - |" in text
    assert "### Red health (1)\n\n- Acme (acme), CSM dana@cs.example: score 30" in text
    assert (
        "### Health falling 10+ points in 30 days (2)\n\n- Acme (acme), CSM dana@cs.example: -30 to 30 (red)\n- Bolt (bolt): -15 to 65 (yellow)"
        in text
    )
    assert "### Detractors this week (1)\n\n- Bolt (bolt): NPS 2" in text
    # delta renews too, but was emailed on 2027-03-05
    assert "with no touch in 30 days (1)\n\n- Cargo (cargo): renews 2027-04-01" in text
    assert "| nudge | 1 | 1 | 1 | 1 | 1 | - |" in text
    assert "Echo" not in text  # churned accounts are not at risk any more
    assert digest.data["at_risk"]["renewals_without_touch"] == ["cargo"]


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, object]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def slack_webhook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_posting_twice_posts_once(book: Engine, tmp_path: Path, slack_webhook: ThreadingHTTPServer) -> None:
    with Session(book) as s:
        digest = weekly_digest(s, AS_OF)
    url = f"http://127.0.0.1:{slack_webhook.server_address[1]}/hooks/T000"
    ledger = tmp_path / "outbox" / "digests.jsonl"
    first = post_digest(digest, SlackChannel(webhook_url=url), engine=book, ledger=ledger, to="#cs")
    second = post_digest(digest, SlackChannel(webhook_url=url), engine=book, ledger=ledger, to="#cs")
    assert (first.status, second.status) == ("posted", "already posted")
    assert first.key == "weekly:2027-W09:slack:#cs"
    assert len(slack_webhook.received) == 1  # type: ignore[attr-defined]
    assert slack_webhook.received[0]["text"] == digest.markdown  # type: ignore[attr-defined]
    # another week is another post
    with Session(book) as s:
        later = weekly_digest(s, AS_OF + timedelta(days=7))
    assert post_digest(later, SlackChannel(webhook_url=url), engine=book, ledger=ledger, to="#cs").status == "posted"
    assert len(slack_webhook.received) == 2  # type: ignore[attr-defined]


def test_an_interrupted_post_is_not_repeated_blindly(
    book: Engine, tmp_path: Path, slack_webhook: ThreadingHTTPServer
) -> None:
    with Session(book) as s:
        digest = weekly_digest(s, AS_OF)
    ledger = tmp_path / "digests.jsonl"
    # a run that stopped between "sending" and "posted"
    ledger.write_text(
        json.dumps({"key": "weekly:2027-W09:slack", "status": "sending", "at": "2027-03-08T09:00:00"}) + "\n"
    )
    url = f"http://127.0.0.1:{slack_webhook.server_address[1]}/hooks/T000"
    with pytest.raises(IntegrationError, match="may have gone out"):
        post_digest(digest, SlackChannel(webhook_url=url), engine=book, ledger=ledger)
    assert slack_webhook.received == []  # type: ignore[attr-defined]
    # the file channel drops repeats of a key itself, so it may safely try again
    (tmp_path / "file").mkdir()
    ledger.write_text(
        json.dumps({"key": "weekly:2027-W09:file", "status": "sending", "at": "2027-03-08T09:00:00"}) + "\n"
    )
    assert post_digest(digest, FileChannel("file", tmp_path / "file"), engine=book, ledger=ledger).status == "posted"
    written = (tmp_path / "file" / "file.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(written) == 1 and json.loads(written[0])["payload"]["title"] == digest.title
