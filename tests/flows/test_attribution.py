"""Revenue outcomes, their attribution, and the lift math, checked against hand-computed values.

Intervals: Newcombe, "Interval estimation for the difference between independent proportions",
Statistics in Medicine 17 (1998) 873-890 — Table II, method 10 (the Wilson-score hybrid), and his
companion paper on single proportions (Wilson score, Table I). Every other figure is worked out in
the comments.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.analytics.attribution import (
    AttributionWindow,
    arr_effect,
    lift,
    newcombe_interval,
    playbook_impact,
    record_revenue_outcomes,
    revenue_events,
    wilson_interval,
)
from flows.engine.revisions import sync_revision
from models import Account, Enrollment, Outcome, RevenueEntry, TimelineEvent, session, table_of
from playbooks import compile_source


def m(text: str) -> date:
    year, month = map(int, text.split("-"))
    return date(year, month, 1)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# intervals


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, n)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
    ],
)
def test_newcombe_interval_matches_his_table(x1: int, n1: int, x2: int, n2: int, low: float, high: float) -> None:
    interval = newcombe_interval(x1, n1, x2, n2)
    assert (round(interval.low, 4), round(interval.high, 4)) == (low, high)


def test_newcombe_by_hand() -> None:
    # z = 1.959964, z² = 3.841459
    # Wilson(56/70): (0.8 + z²/140) / (1 + z²/70) = 0.827439 / 1.054878 = 0.784393;
    #   half = z / 1.054878 × sqrt(0.16/70 + z²/19600) = 1.857995 × 0.049817 = 0.092560 -> 0.6918..0.8770
    # Wilson(48/80): 0.624009 / 1.048018 = 0.595418; half = 1.870151 × 0.056125 = 0.104963 -> 0.4905..0.7004
    # d = 0.8 - 0.6 = 0.2; low = 0.2 - sqrt(0.1082² + 0.1004²) = 0.2 - 0.1476 = 0.0524
    # high = 0.2 + sqrt(0.0770² + 0.1095²) = 0.2 + 0.1339 = 0.3339
    one, two = wilson_interval(56, 70), wilson_interval(48, 80)
    assert (round(one.low, 4), round(one.high, 4)) == (0.6918, 0.8770)
    assert (round(two.low, 4), round(two.high, 4)) == (0.4905, 0.7004)
    both = newcombe_interval(56, 70, 48, 80)
    assert (round(both.low, 4), round(both.high, 4)) == (0.0524, 0.3339)


# --------------------------------------------------------------------------------------------
# verdicts


def test_a_clear_lift_is_said_with_its_interval() -> None:
    result = lift("renewed", 56, 70, 48, 80)
    assert result.enrolled_rate == 0.8 and result.holdout_rate == 0.6
    assert result.lift == pytest.approx(0.2)
    assert result.verdict == "lifts renewed by 20.0 points (95% CI 5.2 to 33.4)"


def test_a_lower_rate_is_said_as_lowering() -> None:
    # 3/70 churned vs 12/80: d = 0.042857 - 0.15 = -0.107143 (10.7 points lower); the interval is
    # minus Newcombe(12/80, 3/70)
    result = lift("churned", 3, 70, 12, 80)
    flipped = newcombe_interval(12, 80, 3, 70)
    assert result.interval is not None
    assert result.interval.low == pytest.approx(-flipped.high) and result.interval.high == pytest.approx(-flipped.low)
    assert result.verdict == (
        f"lowers churned by 10.7 points (95% CI {result.interval.low * 100:.1f} to {result.interval.high * 100:.1f})"
    )
    assert result.interval.high < 0


def test_an_interval_across_zero_is_no_detectable_effect() -> None:
    result = lift("expanded", 5, 56, 0, 29, min_group=20)
    assert (
        result.verdict == "no detectable effect on expanded (8.9% enrolled vs 0.0% holdout; 95% CI -3.8 to 19.3 points)"
    )


@pytest.mark.parametrize(
    ("enrolled", "holdout", "verdict"),
    [
        (200, 29, "too few holdout enrollments to tell (n=29; 30 needed)"),
        (200, 0, "too few holdout enrollments to tell (n=0; 30 needed)"),
        (12, 40, "too few enrolled to tell (n=12; 30 needed)"),
    ],
)
def test_small_groups_are_too_few_to_tell(enrolled: int, holdout: int, verdict: str) -> None:
    result = lift("renewed", enrolled // 2, enrolled, 0, holdout)
    assert result.verdict == verdict


def test_arr_effect_by_hand() -> None:
    # enrolled: 2 of 4 expanded by 1,200.00 ARR -> mean 600.00; holdout: 1 of 4 churned -1,200.00 -> -300.00
    # difference 900.00; variances (cents²): enrolled 4.8e9 (sample), holdout 3.6e9
    # se = sqrt(4.8e9/4 + 3.6e9/4) = 45,825.76 cents; 1.959964 × se = 89,816.85 -> 0.18 to 1,798.17
    result = arr_effect([120_000, 120_000, 0, 0], [0, 0, 0, -120_000], min_group=4)
    assert (result.enrolled_mean_cents, result.holdout_mean_cents, result.difference_cents) == (60_000, -30_000, 90_000)
    assert result.interval_cents == (183, 179_817)
    assert result.verdict == "adds 900.00 ARR per enrolled account (95% CI 1.83 to 1,798.17)"


# --------------------------------------------------------------------------------------------
# revenue outcomes, as a pure function


def test_revenue_events_by_hand() -> None:
    mrr = {
        # up from 100 to 150 in March: expanded, ARR +600.00
        **{
            ("up", m(x)): v
            for x, v in [("2027-01", 100_00), ("2027-02", 100_00), ("2027-03", 150_00), ("2027-04", 150_00)]
        },
        # down in February, gone in April: contracted then churned
        **{("down", m(x)): v for x, v in [("2027-01", 200_00), ("2027-02", 150_00), ("2027-03", 150_00)]},
        # gone in February, back in April: churned, reactivated
        **{("back", m(x)): v for x, v in [("2027-01", 50_00), ("2027-04", 60_00)]},
        # an annual contract spread by day: 10.00 a day is 310.00 in January, 280.00 in February: no move
        **{
            ("steady", m(x)): v
            for x, v in [("2027-01", 310_00), ("2027-02", 280_00), ("2027-03", 310_00), ("2027-04", 300_00)]
        },
    }
    events = revenue_events(mrr, through=m("2027-04"))
    found = {(e.account, e.kind, f"{e.month:%Y-%m}", e.arr_delta_cents) for e in events}
    assert found == {
        ("up", "expanded", "2027-03", 600_00),
        ("down", "contracted", "2027-02", -600_00),
        ("down", "churned", "2027-04", -1_800_00),
        ("back", "churned", "2027-02", -600_00),
        ("back", "reactivated", "2027-04", 720_00),
    }
    churn = next(e for e in events if e.account == "down" and e.kind == "churned")
    assert churn.occurred_at == at("2027-04-01T00:00:00")
    assert churn.key == "revenue:churned:2027-04"
    # a month after `through` is not judged: March is the last one here
    assert {e.kind for e in revenue_events(mrr, through=m("2027-03")) if e.account == "down"} == {"contracted"}


def test_renewal_kept_paying_at_least_the_prior_mrr() -> None:
    mrr = {
        **{("kept", m(x)): 100_00 for x in ("2027-04", "2027-05", "2027-06", "2027-07")},
        **{("raised", m(x)): v for x, v in [("2027-05", 100_00), ("2027-06", 100_00), ("2027-07", 110_00)]},
        **{("cut", m(x)): v for x, v in [("2027-05", 100_00), ("2027-06", 100_00), ("2027-07", 80_00)]},
        **{("left", m(x)): 100_00 for x in ("2027-05", "2027-06")},
    }
    renewals = {
        "kept": date(2027, 6, 1),  # prior month May, first month of the new term June
        "raised": date(2027, 6, 15),  # mid-month: prior May, first whole month July
        "cut": date(2027, 6, 15),
        "left": date(2027, 6, 15),
        "later": date(2027, 9, 1),  # not judged yet
    }
    events = [e for e in revenue_events(mrr, renewals, through=m("2027-07")) if e.kind == "renewed"]
    assert {(e.account, f"{e.month:%Y-%m}", e.before_cents, e.after_cents) for e in events} == {
        ("kept", "2027-06", 100_00, 100_00),
        ("raised", "2027-07", 100_00, 110_00),
    }
    raised = next(e for e in events if e.account == "raised")
    assert raised.occurred_at == at("2027-06-15T00:00:00") and raised.arr_delta_cents == 120_00


@pytest.mark.parametrize(
    ("ended", "outcome_at", "covered"),
    [
        (None, "2027-03-01", True),  # still active
        ("2027-03-01", "2027-03-01", True),  # active at the moment
        ("2027-01-30", "2027-03-01", True),  # ended 30 days before: inside
        ("2027-01-29", "2027-03-01", False),  # 31 days before: outside
        (None, "2027-01-09", False),  # before the enrollment started
    ],
)
def test_attribution_window(ended: str | None, outcome_at: str, covered: bool) -> None:
    window = AttributionWindow(after_end=timedelta(days=30))
    assert (
        window.covers(
            at("2027-01-10T00:00:00"), at(ended + "T00:00:00") if ended else None, at(outcome_at + "T00:00:00")
        )
        is covered
    )


# --------------------------------------------------------------------------------------------
# the book in the database

PLAYBOOK = """\
playbook: nudge
name: Nudge
lifecycle: custom
audience: account.status == "active"
entry:
  holdout: 50%
goal:
  when: account.renewed_at is not none
  within: 120 days
  outcome: renewed
steps:
  - id: hello
    kind: email
    subject: Hello
    body: Hello there.
  - id: pause
    kind: wait
    for: 7 days
  - id: call
    kind: task
    title: Call them
  - id: done
    kind: exit
"""

START = at("2027-01-10T14:00:00")
AS_OF = at("2027-07-15T12:00:00")


def build_book(engine: Engine, per_group: int = 40) -> dict[str, dict[int, int]]:
    """``per_group`` contacted and ``per_group`` holdout enrollments of "nudge", started 2027-01-10, with
    MRR of 1,000.00 from 2026-12 to 2027-06, and, by group (contacted / holdout):

    * churned (no MRR from 2027-03):        4 / 12
    * expanded to 1,200.00 from 2027-04:   10 / 0
    * goal "renewed" reached 2027-02-15:   20 / 8
    * funnel: step hello 40, call 30 (contacted only)
    Returns the enrollment ids by group and account id."""
    with session(engine) as s:
        sync_revision(s, compile_source(PLAYBOOK, "nudge.yaml"))
        conn = s.connection()
        accounts = [
            {"external_id": f"a{i:03d}", "name": f"Account {i}", "segment": "smb" if i % 2 else "mid", "custom": {}}
            for i in range(2 * per_group)
        ]
        conn.execute(insert(table_of(Account)), accounts)
        ids = dict(conn.execute(select(Account.external_id, Account.id)).all())
        groups: dict[str, dict[int, int]] = {"contacted": {}, "holdout": {}}
        revenue, outcomes, timeline = [], [], []
        for i in range(2 * per_group):
            account_id = ids[f"a{i:03d}"]
            holdout = i >= per_group
            rank = i - per_group if holdout else i
            enrollment = Enrollment.model_validate(
                {
                    "playbook": "nudge",
                    "revision": "r",
                    "account_id": account_id,
                    "holdout": holdout,
                    "started_at": START,
                }
            )
            s.add(enrollment)
            s.flush()
            assert enrollment.id is not None
            groups["holdout" if holdout else "contacted"][account_id] = enrollment.id
            churns = rank < (12 if holdout else 4)
            expands = not holdout and 4 <= rank < 14
            for month in ("2026-12", "2027-01", "2027-02", "2027-03", "2027-04", "2027-05", "2027-06"):
                if churns and month >= "2027-03":
                    continue
                cents = 1_200_00 if expands and month >= "2027-04" else 1_000_00
                revenue.append({"account_id": account_id, "period": m(month), "product": "", "mrr_cents": cents})
            if rank < (8 if holdout else 20):
                outcomes.append(
                    {"account_id": account_id, "enrollment_id": enrollment.id, "playbook": "nudge", "kind": "renewed",
                     "source": "goal", "occurred_at": at("2027-02-15T14:00:00")}
                )  # fmt: skip
            if not holdout:
                for step, reached in (("hello", True), ("pause", True), ("call", rank < 30)):
                    if reached:
                        timeline.append(
                            {"account_id": account_id, "enrollment_id": enrollment.id, "playbook": "nudge",
                             "step_id": step, "kind": "touch" if step == "hello" else "wait" if step == "pause" else "task",
                             "at": START, "summary": step, "detail": {}}
                        )  # fmt: skip
        conn.execute(insert(table_of(RevenueEntry)), revenue)
        conn.execute(insert(table_of(Outcome)), outcomes)
        conn.execute(insert(table_of(TimelineEvent)), timeline)
    return groups


def _revenue_rows(engine: Engine) -> list[tuple[int, int | None, str, int]]:
    with Session(engine) as s:
        return sorted(
            s.exec(
                select(Outcome.account_id, Outcome.enrollment_id, Outcome.kind, Outcome.arr_delta_cents).where(
                    Outcome.source == "revenue"
                )
            ).all()
        )


def test_revenue_outcomes_are_recorded_attributed_and_idempotent(engine: Engine) -> None:
    groups = build_book(engine, per_group=5)  # 5 + 5: churned 4 / 5, expanded 1 / 0
    with session(engine) as s:
        first = record_revenue_outcomes(s, AS_OF)
    # judged through 2027-06 (the book's last month), though as_of is in July: nobody "churns" in July
    assert first.through == "2027-06"
    assert first.by_kind == {"churned": 9, "expanded": 1}
    assert (first.events, first.attributed, first.added) == (10, 5, 10)
    rows = _revenue_rows(engine)
    contacted, holdout = groups["contacted"], groups["holdout"]
    # contacted accounts: attributed to their enrollment; holdout accounts: no enrollment (they got nothing)
    assert {(a, e) for a, e, _, _ in rows if a in contacted} == {(a, contacted[a]) for a in contacted}
    assert {e for a, e, _, _ in rows if a in holdout} == {None}
    assert {(k, d) for _, _, k, d in rows} == {("churned", -12_000_00), ("expanded", 2_400_00)}

    with session(engine) as s:
        again = record_revenue_outcomes(s, AS_OF)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    assert _revenue_rows(engine) == rows
    with Session(engine) as s:
        stories = s.exec(
            select(func.count()).select_from(TimelineEvent).where(TimelineEvent.kind == "outcome")
        ).scalar_one()
    assert stories == 10

    # a corrected import: one churned account paid in March after all -> its churn moves to April
    churned = next(iter(contacted))
    with session(engine) as s:
        s.add(RevenueEntry.model_validate({"account_id": churned, "period": m("2027-03"), "mrr_cents": 1_000_00}))
    with session(engine) as s:
        fixed = record_revenue_outcomes(s, AS_OF)
    assert (fixed.added, fixed.removed) == (1, 1)
    with Session(engine) as s:
        notes = s.exec(select(Outcome.note).where(Outcome.account_id == churned, Outcome.source == "revenue")).scalars()
    assert [note.split(" ", 1)[0] for note in notes if note] == ["revenue:churned:2027-04"]

    # a run as of an earlier day judges fewer months and leaves the later ones alone
    with session(engine) as s:
        earlier = record_revenue_outcomes(s, at("2027-03-20T00:00:00"))
    assert (earlier.through, earlier.removed) == ("2027-03", 0)


def test_attribution_after_the_enrollment_ended(sqlite_engine: Engine) -> None:
    groups = build_book(sqlite_engine, per_group=5)
    contacted = groups["contacted"]
    first, second = list(contacted)[:2]
    with session(sqlite_engine) as s:
        # both churn on 2027-03-01; one enrollment ended 2027-02-01 (28 days before), one 2027-01-20 (40 days)
        for account_id, ended in ((first, "2027-02-01"), (second, "2027-01-20")):
            enrollment = s.get(Enrollment, contacted[account_id])
            assert enrollment is not None
            enrollment.status, enrollment.ended_at = "completed", at(ended + "T00:00:00")
            s.add(enrollment)
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    rows = {(a, e) for a, e, k, _ in _revenue_rows(sqlite_engine) if k == "churned"}
    assert (first, contacted[first]) in rows
    assert (second, None) in rows and (second, contacted[second]) not in rows


def test_playbook_impact_on_the_book(sqlite_engine: Engine) -> None:
    build_book(sqlite_engine)
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    with Session(sqlite_engine) as s:
        [impact] = playbook_impact(s, AS_OF)
    assert (impact.playbook, impact.enrolled, impact.holdout, impact.accounts, impact.open_windows) == (
        "nudge", 40, 40, 80, 0,
    )  # fmt: skip
    by_label = {o.label: o for o in impact.outcomes}
    assert list(by_label) == ["renewed (goal)", "expanded", "churned"]
    # renewed (goal): 20/40 vs 8/40 = 0.5 - 0.2 = +30 points
    renewed = by_label["renewed (goal)"]
    assert (renewed.enrolled_with, renewed.holdout_with, renewed.lift) == (20, 8, pytest.approx(0.3))
    assert renewed.interval == newcombe_interval(20, 40, 8, 40)
    # churned: 4/40 vs 12/40 = 0.1 - 0.3 = -20 points
    churned = by_label["churned"]
    assert (churned.enrolled_rate, churned.holdout_rate) == (0.1, 0.3)
    assert churned.verdict.startswith("lowers churned by 20.0 points (95% CI ")
    assert by_label["expanded"].enrolled_with == 10 and by_label["expanded"].holdout_with == 0
    # ARR per enrollment: contacted (10 × 2,400.00 - 4 × 12,000.00) / 40 = -600.00; holdout 12 × -12,000.00 / 40 = -3,600.00
    assert impact.arr is not None
    assert (impact.arr.enrolled_mean_cents, impact.arr.holdout_mean_cents, impact.arr.difference_cents) == (
        -600_00, -3_600_00, 3_000_00,
    )  # fmt: skip
    assert [(f.stage, f.reached) for f in impact.funnel] == [
        ("enrolled", 40), ("hello", 40), ("pause", 40), ("call", 30), ("goal: renewed", 20),
    ]  # fmt: skip


def test_lift_counts_only_outcomes_inside_the_window(sqlite_engine: Engine) -> None:
    build_book(sqlite_engine)
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    with Session(sqlite_engine) as s:
        # 30 days: the goal (day 36) and the revenue moves (March, April) all fall outside
        [short] = playbook_impact(s, AS_OF, window=timedelta(days=30))
        [segment] = playbook_impact(s, AS_OF, segment="smb")
    assert [o.label for o in short.outcomes] == ["renewed (goal)"]
    assert short.outcomes[0].enrolled_with == 0
    assert (segment.enrolled, segment.holdout) == (20, 20)
    assert segment.outcomes[0].verdict == "too few holdout enrollments to tell (n=20; 30 needed)"


def test_a_goal_without_a_window_is_not_compared(sqlite_engine: Engine) -> None:
    build_book(sqlite_engine)
    with session(sqlite_engine) as s:
        # a newer revision whose goal has no 'within': holdout enrollments end at once, never watched
        sync_revision(s, compile_source(PLAYBOOK.replace("  within: 120 days\n", ""), "nudge.yaml"))
    with Session(sqlite_engine) as s:
        [impact] = playbook_impact(s, AS_OF)
    assert "renewed (goal)" not in [o.label for o in impact.outcomes]
    assert impact.notes == [
        "the goal is not compared: holdout enrollments end at once when the goal has no 'within', so they are "
        "never watched for it (20 contacted enrollments reached it; see the funnel)"
    ]
    assert impact.funnel[-1] == impact.funnel[-1].__class__("goal: renewed", "goal", 20, 0.5)


# --------------------------------------------------------------------------------------------
# a book in several currencies


def _in_euros(engine: Engine, *, through: str | None = None) -> set[int]:
    """Move the odd-numbered accounts' revenue to EUR (same cents); with ``through``, the EUR billing export
    is imported only up to that month (later EUR months removed). Returns the EUR account ids."""
    with session(engine) as s:
        conn = s.connection()
        ids = dict(conn.execute(select(Account.external_id, Account.id)).all())
        euros = {account_id for external, account_id in ids.items() if int(external[1:]) % 2}
        table = table_of(RevenueEntry)
        conn.execute(table.update().where(table.c.account_id.in_(euros)).values(currency="EUR"))
        if through is not None:
            conn.execute(table.delete().where(table.c.account_id.in_(euros), table.c.period > m(through)))
    return euros


def test_revenue_outcomes_are_judged_in_each_accounts_currency(sqlite_engine: Engine) -> None:
    groups = build_book(sqlite_engine, per_group=5)
    with session(sqlite_engine) as s:
        single = record_revenue_outcomes(s, AS_OF)
    before = _revenue_rows(sqlite_engine)
    euros = _in_euros(sqlite_engine)
    with session(sqlite_engine) as s:
        mixed = record_revenue_outcomes(s, AS_OF)  # no currency needed: each account in its own
    # the same outcomes, the same ARR deltas (in each account's currency); only the notes now name it
    assert _revenue_rows(sqlite_engine) == before
    assert (mixed.events, mixed.by_kind, mixed.added, mixed.removed) == (single.events, single.by_kind, 0, 0)
    assert mixed.updated == sum(1 for a, *_ in before if a in euros)
    with Session(sqlite_engine) as s:
        notes = dict(s.exec(select(Outcome.account_id, Outcome.note).where(Outcome.source == "revenue")).all())
        details = s.exec(select(TimelineEvent.detail).where(TimelineEvent.kind == "outcome")).scalars().all()
    churned_eur = next(a for a in groups["holdout"] if a in euros)
    assert notes[churned_eur] == (
        "revenue:churned:2027-03 churned in 2027-03: MRR 1,000.00 -> 0.00 EUR (ARR -12,000.00 EUR)"
    )
    assert {d["currency"] for d in details} <= {"EUR", "USD"}


def test_judging_one_currency_leaves_the_others_alone(sqlite_engine: Engine) -> None:
    build_book(sqlite_engine, per_group=5)
    euros = _in_euros(sqlite_engine)
    with session(sqlite_engine) as s:
        everything = record_revenue_outcomes(s, AS_OF)
    rows = _revenue_rows(sqlite_engine)
    assert [k for a, _, k, _ in rows if a not in euros].count("expanded") == 1
    with session(sqlite_engine) as s:  # a corrected USD import: the expansion was a mistake
        table = table_of(RevenueEntry)
        s.connection().execute(
            table.update().where(table.c.currency == "USD", table.c.mrr_cents > 1_000_00).values(mrr_cents=1_000_00)
        )
        eur = record_revenue_outcomes(s, AS_OF, currency="eur")
    # every EUR account churned by 2027-03; judged on its own, EUR still knows the book runs to 2027-06
    assert (everything.through, eur.through) == ("2027-06", "2027-06")
    assert (eur.added, eur.updated, eur.removed) == (0, 0, 0)
    assert _revenue_rows(sqlite_engine) == rows  # the USD accounts were not judged: their rows stay
    with session(sqlite_engine) as s:
        usd = record_revenue_outcomes(s, AS_OF, currency="USD")
    assert usd.removed == 1 and "expanded" not in usd.by_kind


def test_playbook_impact_counts_every_currency_and_adds_money_per_currency(sqlite_engine: Engine) -> None:
    build_book(sqlite_engine)
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    with Session(sqlite_engine) as s:
        [single] = playbook_impact(s, AS_OF)
    euros = _in_euros(sqlite_engine)
    with session(sqlite_engine) as s:
        record_revenue_outcomes(s, AS_OF)
    with Session(sqlite_engine) as s:
        [mixed] = playbook_impact(s, AS_OF)
        [eur] = playbook_impact(s, AS_OF, currency="eur")
    # rates and lift are counts: the same whatever the currencies
    assert [o.to_dict() for o in mixed.outcomes] == [o.to_dict() for o in single.outcomes]
    # money is never added across currencies
    assert mixed.arr is None
    assert [(a.currency, a.enrolled, a.holdout) for a in mixed.arr_by_currency] == [("EUR", 20, 20), ("USD", 20, 20)]
    assert single.arr is not None and single.arr.currency == "USD"
    assert eur.arr is not None and eur.arr == mixed.arr_by_currency[0] and len(euros) == 40
    assert eur.arr.verdict.startswith("too few holdout enrollments to tell (n=20")
    document = mixed.to_dict()
    assert document["arr"] is None and [a["currency"] for a in document["arr_by_currency"]] == ["EUR", "USD"]


def test_revenue_outcomes_are_reconciled_by_their_key_not_by_the_note(engine: Engine) -> None:
    """A person may edit an outcome's note: the outcome is still the same one (``Outcome.key``),
    its note is put back, and it is neither removed nor recorded a second time."""
    build_book(engine, per_group=5)
    with session(engine) as s:
        record_revenue_outcomes(s, AS_OF)
    rows = _revenue_rows(engine)
    outcomes = table_of(Outcome)
    with engine.begin() as conn:
        conn.execute(outcomes.update().where(outcomes.c.source == "revenue").values(note="called them: all good"))
        keys = conn.execute(select(outcomes.c.key).where(outcomes.c.source == "revenue")).scalars().all()
    assert len(keys) == 10 and all(key and key.startswith("revenue:") for key in keys)
    with session(engine) as s:
        again = record_revenue_outcomes(s, AS_OF)
    assert (again.added, again.updated, again.removed) == (0, 10, 0)
    assert _revenue_rows(engine) == rows
    with engine.connect() as conn:
        notes = conn.execute(select(outcomes.c.key, outcomes.c.note).where(outcomes.c.source == "revenue")).all()
        stories = conn.execute(
            select(func.count()).select_from(table_of(TimelineEvent)).where(table_of(TimelineEvent).c.kind == "outcome")
        ).scalar_one()
    assert all(note.startswith(f"{key} ") for key, note in notes)
    assert stories == 10  # the account's story is not told twice
