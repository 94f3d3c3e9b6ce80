"""Health scores: the definition and its located errors, scores worked out by hand on a small book
of business (SQLite and PostgreSQL), trend, band changes in the timeline, re-runs and backfills,
a statement count that does not grow with the accounts, and ``retain health``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import Engine

import cli
from cli._app import console
from flows.analytics.health import run_health, score_accounts
from models import (
    BUNDLED_PLAYBOOKS_DIR,
    Account,
    Contact,
    HealthScore,
    PlaybookError,
    SupportTicket,
    SurveyResponse,
    TimelineEvent,
    Touch,
    UsageMetric,
    session,
)
from models.health import points_for
from playbooks import health_file, load_health
from playbooks import health_problems as problems_of
from tests._sqlite import migrated_sqlite

T = datetime(2027, 3, 31, 12, 0, tzinfo=UTC)
TODAY = T.date()

# simple curves, so that every expected score below can be worked out by hand
DEFINITION = """\
description: test book
measures:
  usage_trend:
    weight: 30
    points: [[-50, 0], [0, 50], [50, 100]]
  active_users:
    weight: 20
    points: [[0, 0], [50, 100]]
  open_tickets:
    weight: 10
    points: [[0, 100], [4, 0]]
  nps:
    weight: 20
    points: [[0, 0], [10, 100]]
  days_since_last_touch:
    weight: 20
    points: [[0, 100], [100, 0]]
bands:
  green: 70
  yellow: 40
"""


@pytest.fixture
def definition(tmp_path: Path) -> Path:
    path = tmp_path / "health.yaml"
    path.write_text(DEFINITION, encoding="utf-8")
    return path


# --- the definition -------------------------------------------------------------------------------


def test_the_bundled_definition_validates() -> None:
    spec = load_health(BUNDLED_PLAYBOOKS_DIR / "health.yaml")
    assert list(spec.measures.used()) == ["usage_trend", "active_users", "open_tickets", "nps", "days_since_last_touch"]
    assert (spec.bands.green, spec.bands.yellow) == (70, 40)


def test_a_folder_without_a_definition_uses_the_bundled_one(tmp_path: Path, definition: Path) -> None:
    assert health_file(tmp_path / "elsewhere") == BUNDLED_PLAYBOOKS_DIR / "health.yaml"
    assert health_file(definition.parent) == definition


def test_points_follow_straight_lines_between_the_pairs_and_stay_flat_beyond() -> None:
    curve = ((-50.0, 0.0), (0.0, 50.0), (50.0, 100.0))
    assert [points_for(curve, raw) for raw in (-80, -50, -25, 0, 20, 50, 90)] == [0, 0, 25, 50, 70, 100, 100]
    assert points_for(((0.0, 100.0), (4.0, 0.0)), 3) == 25


BROKEN = """\
measures:
  usage_trnd:
    weight: 10
    points: [[0, 0], [10, 100]]
  nps:
    weight: -1
    wieght: 3
    points: [[0, 0], [10, 120]]
  open_tickets:
    weight: 10
    points: [[5, 100], [2, 0]]
  active_users:
    weight: "ten"
    window: 12 hours
    points: [[0, 0]]
bands:
  green: 40
  yellow: 70
trend_window: 1 month
"""


def test_every_problem_of_a_broken_definition_is_reported_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "health.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_health(path)
    f = str(path)
    assert [p.format() for p in caught.value.problems] == [
        f"{f}:2:3: measures: unknown measure 'usage_trnd' (did you mean 'usage_trend'?); "
        "measures are: usage_trend, active_users, open_tickets, nps, days_since_last_touch",
        f"{f}:6:13: measures.nps.weight: a weight cannot be negative (-1); 0 shows the measure without counting it",
        f"{f}:7:5: measures.nps: unknown key 'wieght' (did you mean 'weight'?); use: weight, points, description, within",
        f"{f}:8:27: measures.nps.points.1.1: points go from 0 to 100, not 120",
        f"{f}:11:13: measures.open_tickets.points: the raw values must increase from pair to pair: "
        "pair 2 has 2, not above 5 of the pair before",
        f"{f}:13:13: measures.active_users.weight: expected a number, got text",
        f"{f}:14:13: measures.active_users.window: usage is counted by the day: use a whole number of days, like '30 days'",
        f"{f}:15:13: measures.active_users.points: a curve needs at least two [raw, points] pairs, like [[0, 0], [10, 100]]",
        f"{f}:17:3: bands: yellow (70) must be below green (40)",
        f"{f}:19:15: trend_window: bad duration '1 month': use '3 days', '2 weeks', '12 hours', '30 minutes' "
        "or ISO 8601 like 'P3D' (months and years vary in length: use days or weeks)",
    ]
    assert problems_of(path) == caught.value.problems


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("measures: {nps: {weight: 0, points: [[0, 0], [10, 100]]}}\nbands: {green: 70, yellow: 40}\n",
         "health.yaml:1:11: measures: the weights of the measures add up to 0: give at least one measure a weight above 0"),
        ("measures: {}\nbands: {green: 70, yellow: 40}\n",
         "health.yaml:1:11: measures: name at least one measure: usage_trend, active_users, open_tickets, nps, days_since_last_touch"),
        ("measures: {nps: {weight: 1, points: [[0, 0], [10, 100]]}}\nband: {green: 70, yellow: 40}\n",
         "health.yaml:1:1: missing required key 'bands'"),
    ],
)  # fmt: skip
def test_weights_and_required_sections_are_checked(tmp_path: Path, source: str, message: str) -> None:
    path = tmp_path / "health.yaml"
    path.write_text(source, encoding="utf-8")
    problems = [p.format().removeprefix(str(tmp_path) + "/") for p in problems_of(path)]
    assert message in problems


# --- a small book of business ---------------------------------------------------------------------


def _days(first: int, last: int) -> list[date]:
    """The days ``first`` to ``last`` days before TODAY, both included."""
    return [TODAY - timedelta(days=n) for n in range(first, last + 1)]


def _usage(account_id: int, metric: str, days: list[date], value: float) -> list[dict[str, Any]]:
    return [{"account_id": account_id, "metric": metric, "day": d, "value": value} for d in days]


def _account(external_id: str, **values: Any) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "name": external_id.title(),
        "seats": None,
        "health": None,
        "health_score": None,
        "status": "active",
        "custom": {},
        **values,
    }


def _ticket(account_id: int, subject: str, status: str, opened: timedelta, closed: timedelta | None = None) -> dict:
    # every row of a batch insert names the same columns
    return {
        "account_id": account_id,
        "subject": subject,
        "status": status,
        "opened_at": T + opened,
        "closed_at": None if closed is None else T + closed,
    }


def _seed(engine: Engine) -> dict[str, int]:
    """Five accounts:

    * alpha (health yellow before): logins 12/day in the last 30 days against 10/day before (+20%
      -> 70 points), 4 active users a day on 10 seats (40% -> 80), 1 open ticket (-> 75), latest
      NPS 9 (-> 90), last touch delivered 10 days ago (-> 90):
      (30*70 + 20*80 + 10*75 + 20*90 + 20*90) / 100 = 80.5, green.
    * bravo (red before): logins 5/day against 10/day (-50% -> 0), 1 active user on 10 seats (10%
      -> 20), 3 tickets open at T (-> 25), NPS 4 (-> 40), never touched (skipped):
      (30*0 + 20*20 + 10*25 + 20*40) / 80 = 18.125 -> 18.1, red.
    * charlie (no health before): no usage (both usage measures skipped), no tickets (-> 100), NPS 7
      (-> 70), touched 50 days ago (-> 50): (10*100 + 20*70 + 20*50) / 50 = 68, yellow.
    * delta (green before): only "no tickets" and an NPS older than a year: 10% of the weight has
      data, under the 50% needed: not scored, left as it was.
    * echo: churned, not scored at all.
    """
    with engine.begin() as conn:
        conn.execute(
            insert(Account),
            [
                _account("alpha", seats=10, health="yellow"),
                _account("bravo", seats=10, health="red"),
                _account("charlie"),
                _account("delta", health="green", health_score=90.0),
                _account("echo", status="churned", seats=5),
            ],
        )
        ids = dict(conn.execute(select(Account.external_id, Account.id)).all())
        a, b, c, d, e = (ids[k] for k in ("alpha", "bravo", "charlie", "delta", "echo"))
        conn.execute(
            insert(Contact),
            [
                {"account_id": a, "email": "ana@alpha.test", "unsubscribed_channels": [], "preferences": {}},
                {"account_id": c, "email": "cy@charlie.test", "unsubscribed_channels": [], "preferences": {}},
            ],
        )
        contact = dict(conn.execute(select(Contact.account_id, Contact.id)).all())
        conn.execute(
            insert(UsageMetric),
            [
                *_usage(a, "logins", _days(0, 29), 12),
                *_usage(a, "logins", _days(30, 59), 10),
                *_usage(a, "logins", _days(60, 70), 1000),  # too old to count
                *_usage(a, "active_users", _days(0, 29), 4),
                *_usage(a, "active_users", _days(45, 45), 100),  # outside the 30 days
                *_usage(b, "logins", _days(0, 29), 5),
                *_usage(b, "logins", _days(30, 59), 10),
                *_usage(b, "active_users", _days(0, 29), 1),
                *_usage(e, "logins", _days(0, 59), 3),
            ],
        )
        day = timedelta(days=1)
        conn.execute(
            insert(SupportTicket),
            [
                _ticket(a, "open", "open", -3 * day),
                _ticket(a, "solved", "solved", -9 * day, -8 * day),
                _ticket(b, "open", "open", -20 * day),
                _ticket(b, "pending", "pending", -5 * day),
                _ticket(b, "solved after T", "solved", -5 * day, day),  # still open at T
                _ticket(b, "opened after T", "open", timedelta(hours=1)),
            ],
        )
        conn.execute(
            insert(SurveyResponse),
            [
                {"account_id": a, "kind": "nps", "score": 3, "responded_at": T - timedelta(days=100)},
                {"account_id": a, "kind": "nps", "score": 9, "responded_at": T - timedelta(days=5)},
                {"account_id": a, "kind": "nps", "score": 0, "responded_at": T + timedelta(days=1)},  # after T
                {"account_id": a, "kind": "csat", "score": 1, "responded_at": T - timedelta(days=1)},
                {"account_id": b, "kind": "nps", "score": 4, "responded_at": T - timedelta(days=30)},
                {"account_id": c, "kind": "nps", "score": 7, "responded_at": T - timedelta(days=20)},
                {"account_id": d, "kind": "nps", "score": 10, "responded_at": T - timedelta(days=400)},
            ],
        )

        def touch(key: str, account: int, contact_id: int | None, status: str, delivered: datetime | None) -> dict:
            return {"key": key, "account_id": account, "contact_id": contact_id, "channel": "email",
                    "status": status, "payload": {}, "created_at": T - timedelta(days=60), "delivered_at": delivered}  # fmt: skip

        conn.execute(
            insert(Touch),
            [
                touch("a1", a, contact[a], "delivered", T - timedelta(days=10, hours=3)),
                touch("a2", a, contact[a], "failed", None),
                touch("a3", a, None, "delivered", T - timedelta(days=1)),  # a Slack post: no contact
                touch("c1", c, contact[c], "delivered", T - timedelta(days=50)),
            ],
        )
        conn.execute(
            insert(HealthScore),
            [  # alpha's trend compares with the latest score at least 30 days before T
                {"account_id": a, "scored_at": T - timedelta(days=40), "score": 60.0, "band": "yellow", "components": {}},
                {"account_id": a, "scored_at": T - timedelta(days=31), "score": 70.5, "band": "yellow", "components": {}},
                {"account_id": a, "scored_at": T - timedelta(days=15), "score": 99.0, "band": "green", "components": {}},
            ],
        )  # fmt: skip
    return ids


def _state(engine: Engine) -> dict[str, tuple[str | None, float | None, float | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Account.external_id, Account.health, Account.health_score, Account.health_trend))
        return {external_id: (band, score, trend) for external_id, band, score, trend in rows}


def _health_events(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Account.external_id, TimelineEvent.summary)
            .join(Account, Account.id == TimelineEvent.account_id)
            .where(TimelineEvent.kind == "health")
            .order_by(Account.external_id, TimelineEvent.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_scores_bands_and_trend_as_worked_out_by_hand(engine: Engine, definition: Path) -> None:
    ids = _seed(engine)
    with session(engine) as s:
        results = {r.external_id: r for r in score_accounts(s, load_health(definition), T)}

    assert set(results) == {"alpha", "bravo", "charlie", "delta"}  # echo is churned
    assert {k: (r.score, r.band, r.trend) for k, r in results.items()} == {
        "alpha": (80.5, "green", 10.0),
        "bravo": (18.1, "red", None),
        "charlie": (68.0, "yellow", None),
        "delta": (None, None, None),
    }
    assert results["alpha"].components == {
        "usage_trend": {"value": 20.0, "points": 70.0, "weight": 30.0, "share": 0.3},
        "active_users": {"value": 40.0, "points": 80.0, "weight": 20.0, "share": 0.2},
        "open_tickets": {"value": 1.0, "points": 75.0, "weight": 10.0, "share": 0.1},
        "nps": {"value": 9.0, "points": 90.0, "weight": 20.0, "share": 0.2},
        "days_since_last_touch": {"value": 10.0, "points": 90.0, "weight": 20.0, "share": 0.2},
    }
    bravo = results["bravo"].components
    assert bravo["open_tickets"]["value"] == 3
    assert bravo["days_since_last_touch"] == {
        "value": None,
        "weight": 20.0,
        "skipped": "no touch delivered to a contact yet",
    }
    assert bravo["nps"]["share"] == 0.25  # 20 of the 80 weight that has data
    charlie = results["charlie"].components
    assert charlie["usage_trend"]["skipped"] == "no logins data in the last 60 days"
    assert charlie["active_users"]["skipped"] == "no active_users data in the last 30 days"
    assert results["delta"].unscored == (
        "not enough data: the measures with data carry 10% of the weight, at least 50% is needed"
    )
    assert results["delta"].components["nps"]["skipped"] == "no NPS answer in the last 365 days"

    assert _state(engine) == {
        "alpha": ("green", 80.5, 10.0),
        "bravo": ("red", 18.1, None),
        "charlie": ("yellow", 68.0, None),
        "delta": ("green", 90.0, None),  # not scored: left as it was
        "echo": (None, None, None),
    }
    with engine.connect() as conn:
        history = conn.execute(
            select(HealthScore.account_id, HealthScore.score, HealthScore.band, HealthScore.trend).where(
                HealthScore.scored_at == T
            )
        ).all()
    assert sorted(history) == sorted(
        [(ids["alpha"], 80.5, "green", 10.0), (ids["bravo"], 18.1, "red", None), (ids["charlie"], 68.0, "yellow", None)]
    )
    assert _health_events(engine) == [
        ("alpha", "health yellow → green (score 80.5, trend +10; weakest: +20% usage, 1 open ticket)"),
        ("charlie", "health first scored yellow (score 68; weakest: 50 days since the last touch, NPS 7)"),
    ]


def test_running_the_same_moment_again_replaces_its_scores_and_adds_no_events(engine: Engine, definition: Path) -> None:
    _seed(engine)
    spec = load_health(definition)
    for _ in range(2):
        with session(engine) as s:
            score_accounts(s, spec, T)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).where(HealthScore.scored_at == T)).scalar_one() == 3
    assert len(_health_events(engine)) == 2


def test_a_band_change_later_is_one_timeline_event(engine: Engine, definition: Path) -> None:
    ids = _seed(engine)
    spec = load_health(definition)
    with session(engine) as s:
        score_accounts(s, spec, T)
    later = T + timedelta(days=1)
    with engine.begin() as conn:  # bravo's users come back, its tickets are solved, it answers 10
        conn.execute(insert(UsageMetric), _usage(ids["bravo"], "active_users", [later.date()], 51))
        conn.execute(
            insert(SurveyResponse), [{"account_id": ids["bravo"], "kind": "nps", "score": 10, "responded_at": later}]
        )
    with session(engine) as s:
        results = {r.external_id: r for r in score_accounts(s, spec, later)}
    # a day later the windows move by a day: logins 29 x 5 = 145 against 29 x 10 + 5 = 295 (-51% -> 0);
    # active users (29 x 1 + 51) / 30 days with rows = 2.67 on 10 seats (26.7% -> 53.3); tickets open
    # at T + 1 day: open, pending and the one opened after T (3 -> 25); NPS 10 (-> 100); no touch:
    # (30*0 + 20*53.33 + 10*25 + 20*100) / 80 = 41.46 -> 41.5, yellow
    assert results["bravo"].score == 41.5
    assert results["bravo"].band == "yellow"
    assert results["bravo"].previous_band == "red"
    events = _health_events(engine)
    assert [e for e in events if e[0] == "bravo"] == [
        ("bravo", "health red → yellow (score 41.5; weakest: -51% usage, 3 open tickets)"),
    ]
    assert [e for e in events if e[0] == "charlie"] == [events[-1]]  # charlie's first, nothing since


def test_scoring_into_the_past_adds_history_but_leaves_the_accounts_alone(engine: Engine, definition: Path) -> None:
    ids = _seed(engine)
    spec = load_health(definition)
    with session(engine) as s:
        score_accounts(s, spec, T)
    before = _state(engine)
    earlier = T - timedelta(days=20)  # alpha has a newer score (T - 15 days) as well
    with session(engine) as s:
        results = {r.external_id: r for r in score_accounts(s, spec, earlier)}
    assert _state(engine) == before
    assert not results["alpha"].updates_account
    assert results["alpha"].previous_band == "yellow"  # the score before T - 20 days
    with engine.connect() as conn:
        scored = conn.execute(select(HealthScore.account_id).where(HealthScore.scored_at == earlier)).scalars().all()
    assert ids["alpha"] in scored


# --- statements do not grow with accounts ---------------------------------------------------------


@contextmanager
def _counting(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _book(engine: Engine, first: int, n: int) -> None:
    """Accounts ``first`` to ``first + n - 1``: green before, with usage, an NPS answer and an old score."""
    with engine.begin() as conn:
        conn.execute(
            insert(Account), [_account(f"acct-{i:04d}", seats=10, health="green") for i in range(first, first + n)]
        )
        ids = conn.execute(select(Account.id).where(Account.external_id >= f"acct-{first:04d}")).scalars().all()
        usage = [
            row
            for account_id in ids
            for row in (
                *_usage(account_id, "logins", _days(0, 59), float(account_id % 7)),
                *_usage(account_id, "active_users", _days(0, 2), float(account_id % 10)),
            )
        ]
        conn.execute(insert(UsageMetric), usage)
        conn.execute(
            insert(SurveyResponse),
            [{"account_id": a, "kind": "nps", "score": a % 11, "responded_at": T - timedelta(days=3)} for a in ids],
        )
        conn.execute(
            insert(HealthScore),
            [
                {
                    "account_id": a,
                    "scored_at": T - timedelta(days=35),
                    "score": 50.0,
                    "band": "yellow",
                    "components": {},
                }
                for a in ids
            ],
        )


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


def test_the_number_of_statements_does_not_grow_with_the_accounts(engine: Engine, definition: Path) -> None:
    spec = load_health(definition)
    counts = []
    for first, n, moment in ((0, 10, T), (10, 190, T + timedelta(hours=1))):
        _book(engine, first, n)
        with _counting(engine) as statements, session(engine) as s:
            results = score_accounts(s, spec, moment)
        assert len(results) == first + n
        assert any(r.band_changed for r in results)  # band changes are written too
        counts.append(len([st for st in statements if not st.lstrip().upper().startswith(_TRANSACTION_CONTROL)]))
    # accounts, 5 measures, the trend's base, newer scores; delete, insert scores, update accounts,
    # insert events: 12 for 10 accounts and for 200
    assert counts == [12, 12]


# --- retain health ------------------------------------------------------------------------------


@pytest.fixture
def retain(
    sqlite_url: str, definition: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Any:

    engine = migrated_sqlite(sqlite_url)
    _seed(engine)
    engine.dispose()
    monkeypatch.setattr(console, "width", 200)
    capsys.readouterr()

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["--database-url", sqlite_url, "--playbooks-dir", str(definition.parent), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_retain_health_run_and_show(retain: Any) -> None:
    code, out, _ = retain("health", "run", "--no-prefect", "--as-of", T.isoformat())
    assert code == 0
    assert "3 accounts scored (1 green, 1 yellow, 1 red), 2 changed band, 1 not scored (not enough data)" in out
    assert "days_since_last_touch skipped for lack of data: 1 account" in out

    code, out, _ = retain("health", "show", "alpha")
    assert code == 0
    assert "Alpha (alpha) · health green (80.5) · trend +10" in out
    assert "20% usage" in out and "40% of seats active" in out
    assert "2027-03-31 12:00 UTC │ 80.5  │ green  │ +10" in out

    code, out, _ = retain("health", "show", "bravo")
    assert "skipped: no touch delivered to a contact yet; the other weights scaled up" in out

    code, _, err = retain("health", "show", "alpah")
    assert code == 1
    assert "no account with external id 'alpah'; did you mean 'alpha'?" in err


def test_retain_health_validate_points_at_the_problems(retain: Any, definition: Path) -> None:
    code, out, _ = retain("health", "validate")
    assert code == 0 and "ok (usage_trend 30" in out
    definition.write_text(DEFINITION.replace("nps:", "npss:"), encoding="utf-8")
    code, _, err = retain("health", "validate")
    assert code == 1
    assert f"{definition}:12:3: measures: unknown measure 'npss' (did you mean 'nps'?)" in err
    code, _, err = retain("health", "run", "--no-prefect")
    assert code == 1 and "unknown measure 'npss'" in err and "Traceback" not in err


def test_run_health_reports_counts(sqlite_engine: Engine, definition: Path) -> None:
    _seed(sqlite_engine)
    report = run_health(sqlite_engine, definition, T)
    assert (report.scored, report.unscored, report.bands) == (3, 1, {"green": 1, "red": 1, "yellow": 1})
    assert report.changes == {"yellow → green": 1, "none → yellow": 1}
