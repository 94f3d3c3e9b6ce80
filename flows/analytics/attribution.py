"""Outcomes from revenue, attributed to the playbooks that were running, and each playbook's lift.

Three plain parts (the definitions, with their edge cases, are in ``docs/reports.md``):

1. :func:`revenue_events` reads monthly MRR (``flows.analytics.metrics``) and finds, per account, the months
   it *expanded*, *contracted*, *churned* or was *reactivated* (the waterfall's own movements, less
   the ones a month's length explains), and the renewal dates it *renewed* at (kept paying at least
   its prior MRR). A pure function of the MRR mapping and the renewal dates.
2. :func:`record_revenue_outcomes` keeps them as ``Outcome(source="revenue")`` rows, one per
   enrollment it is attributed to (:class:`AttributionWindow`), or one unattributed row. It
   reconciles: running it again adds nothing, a corrected billing import corrects.
3. :func:`playbook_impact` compares, per playbook, the enrolled accounts with the holdout: the share
   with each outcome within a window after enrollment, the difference (lift) with a Newcombe
   (Wilson score) 95% interval and a verdict in plain words, the ARR effect, and the step funnel.
"""

from __future__ import annotations

import bisect
import calendar
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from statistics import NormalDist, fmean, variance
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from flows.analytics.metrics import (
    account_currencies,
    add_months,
    load_mrr_by_currency,
    month_range,
    revenue_months,
    split_by_segment,
    waterfall,
)
from flows.reports.format import money
from integrations.sources import chunks
from models import Account, Enrollment, Outcome, PlaybookRevision, RetainError, TimelineEvent, table_of

__all__ = [
    "ARR_KINDS",
    "DEFAULT_LIFT_WINDOW",
    "MIN_GROUP",
    "REVENUE_KINDS",
    "STEP_EVENT_KINDS",
    "ArrEffect",
    "AttributionWindow",
    "FunnelStep",
    "Interval",
    "Lift",
    "PlaybookImpact",
    "RecordResult",
    "RevenueEvent",
    "arr_effect",
    "lift",
    "newcombe_interval",
    "playbook_impact",
    "record_revenue_outcomes",
    "revenue_events",
    "split_cents",
    "wilson_interval",
]

#: the outcomes read from revenue
REVENUE_KINDS = ("renewed", "expanded", "contracted", "churned", "reactivated")
#: the revenue outcomes that partition a change of MRR (renewed is a status: its change is also one of these)
ARR_KINDS = ("expanded", "contracted", "churned", "reactivated")
#: revenue outcome rows are marked so (``Outcome.recorded_by``); ``Outcome.key`` is what they are
#: reconciled by (unique per account and enrollment: ``revenue:<kind>:<YYYY-MM>``)
RECORDED_BY = "retain:revenue"
#: an outcome counted for an enrollment when it happens within this long after the enrollment started
DEFAULT_LIFT_WINDOW = timedelta(days=120)
#: fewer enrollments than this in either group: "too few to tell"
MIN_GROUP = 30
#: timeline events that show an enrollment reached a step (an exit step leaves none: it ends the enrollment)
STEP_EVENT_KINDS = ("touch", "suppressed", "skipped", "task", "branch", "wait", "wait_for", "update", "outcome")

_ACCOUNT: Table = table_of(Account)
_ENROLLMENT: Table = table_of(Enrollment)
_OUTCOME: Table = table_of(Outcome)
_TIMELINE: Table = table_of(TimelineEvent)
_REVISION: Table = table_of(PlaybookRevision)
#: enrollment and outcome ids per query
_CHUNK = 500


def _start_of(month: date) -> datetime:
    return datetime.combine(month, time(0), tzinfo=UTC)


def _days(month: date) -> int:
    return calendar.monthrange(month.year, month.month)[1]


# --------------------------------------------------------------------------------------------
# 1. revenue events


@dataclass(frozen=True)
class RevenueEvent:
    """One revenue outcome of one account.

    ``month`` is the first month at the new MRR (for ``renewed``: the first whole month of the new
    term); ``before_cents`` and ``after_cents`` the MRR of the month before and of ``month``
    (``renewed``: of the last month before the renewal date and of ``month``).
    """

    account: Hashable  # Retain uses the external id
    kind: str
    month: date
    occurred_at: datetime
    before_cents: int
    after_cents: int
    currency: str | None = None  # the account's currency: every amount here is in it

    @property
    def arr_delta_cents(self) -> int:
        return 12 * (self.after_cents - self.before_cents)

    @property
    def key(self) -> str:
        """Unique per account: ``revenue:<kind>:<YYYY-MM>``."""
        return f"revenue:{self.kind}:{self.month:%Y-%m}"

    def describe(self) -> str:
        code = f" {self.currency}" if self.currency else ""
        arr = f"ARR {'+' if self.arr_delta_cents >= 0 else ''}{money(self.arr_delta_cents)}{code}"
        if self.kind == "renewed":
            return (
                f"renewed on {self.occurred_at:%Y-%m-%d} at MRR {money(self.after_cents)}{code} "
                f"(was {money(self.before_cents)}; {arr})"
            )
        return (
            f"{self.kind} in {self.month:%Y-%m}: MRR {money(self.before_cents)} -> {money(self.after_cents)}{code} "
            f"({arr})"
        )


def _calendar_noise(before: int, after: int, before_month: date, after_month: date, tolerance: float) -> bool:
    """True when a change of MRR is within ``tolerance`` either per month or per day: what a month's
    length explains (an annual contract spread by day earns less in February than in March)."""
    per_month = abs(after - before) <= tolerance * before
    before_day, after_day = before / _days(before_month), after / _days(after_month)
    per_day = abs(after_day - before_day) <= tolerance * before_day
    return per_month or per_day


def _kept_paying(before: int, after: int, before_month: date, after_month: date, tolerance: float) -> bool:
    """``after`` at least ``before`` per month or per day, give or take ``tolerance``."""
    if after >= before * (1 - tolerance):
        return True
    return after / _days(after_month) >= before / _days(before_month) * (1 - tolerance)


def _renewal_months(renewal: date) -> tuple[date, date]:
    """(the last month wholly before the renewal date, the first month wholly on or after it)."""
    month = renewal.replace(day=1)
    return add_months(month, -1), month if renewal.day == 1 else add_months(month, 1)


def revenue_events(
    mrr: Mapping[tuple[Any, date], int],
    renewal_dates: Mapping[Any, date | None] | None = None,
    *,
    through: date,
    since: date | None = None,
    tolerance: float = 0.01,
    currency: str | None = None,
) -> list[RevenueEvent]:
    """The revenue outcomes in the months from ``since`` (default: the second month of the history)
    to ``through`` (a first day of a month; months after it are not judged), sorted by month.

    Per account and month, with ``b``/``e`` its MRR in the month before and in the month (exactly the
    movements of :func:`flows.analytics.metrics.waterfall`): *expanded* ``0 < b < e``, *contracted*
    ``0 < e < b``, *churned* ``b > 0 = e``, *reactivated* ``b = 0 < e`` after earlier MRR. An
    expansion or contraction within ``tolerance`` of ``b`` per month or per day is a month's length,
    not a move, and is left out.

    *renewed*: an account with a renewal date ``D`` whose first whole month on or after ``D`` is judged,
    with MRR ``e`` in that month at least its MRR ``b > 0`` in the last whole month before ``D``
    (per month or per day, give or take ``tolerance``); it occurred on ``D``.

    ``mrr`` is in one currency, ``currency`` (named on every event); for a book in several, call it
    once per currency (:func:`flows.analytics.metrics.load_mrr_by_currency`), as :func:`record_revenue_outcomes` does.
    """
    span = revenue_months(mrr)
    if span is None:
        return []
    first = add_months(span[0], 1) if since is None else max(since, add_months(span[0], 1))
    months = month_range(first, through) if first <= through else []
    events: list[RevenueEvent] = []
    per_account = split_by_segment(mrr, {account: account for account, _ in mrr})
    for account, history in per_account.items():
        if months:
            for row in waterfall(history, months):
                before, after = row.starting, row.ending
                if row.churned_accounts:
                    kind = "churned"
                elif row.reactivated_accounts:
                    kind = "reactivated"
                elif row.expanded_accounts or row.contracted_accounts:
                    if _calendar_noise(before, after, add_months(row.month, -1), row.month, tolerance):
                        continue
                    kind = "expanded" if row.expanded_accounts else "contracted"
                else:
                    continue  # unchanged, or new (a sale, not an outcome of customer success)
                events.append(RevenueEvent(account, kind, row.month, _start_of(row.month), before, after, currency))
        renewal = (renewal_dates or {}).get(account)
        if renewal is None:
            continue
        prior, after_month = _renewal_months(renewal)
        if after_month > through or (since is not None and after_month < since):
            continue
        before, after = history.get((account, prior), 0), history.get((account, after_month), 0)
        if before > 0 and after > 0 and _kept_paying(before, after, prior, after_month, tolerance):
            occurred = datetime.combine(renewal, time(0), tzinfo=UTC)
            events.append(RevenueEvent(account, "renewed", after_month, occurred, before, after, currency))
    return sorted(events, key=lambda e: (e.month, str(e.account), e.kind))


# --------------------------------------------------------------------------------------------
# 2. attribution, and keeping the outcomes


@dataclass(frozen=True)
class AttributionWindow:
    """An outcome at time ``t`` is attributed to every enrollment of its account that is not a holdout,
    started at or before ``t``, and was still active at ``t`` or ended at most ``after_end`` before it."""

    after_end: timedelta = timedelta(days=30)

    def covers(self, started_at: datetime, ended_at: datetime | None, at: datetime) -> bool:
        return started_at <= at and (ended_at is None or at <= ended_at + self.after_end)


@dataclass
class RecordResult:
    """What :func:`record_revenue_outcomes` did. ``events`` counts revenue outcomes, ``rows`` the
    outcome rows (one per attributed enrollment)."""

    as_of: str
    through: str | None  # the last month judged
    events: int = 0
    rows: int = 0
    attributed: int = 0  # events attributed to at least one enrollment
    added: int = 0
    updated: int = 0
    removed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if self.through is None:
            return "revenue outcomes: no revenue yet"
        kinds = ", ".join(f"{self.by_kind.get(k, 0)} {k}" for k in REVENUE_KINDS)
        return (
            f"revenue outcomes through {self.through}: {self.events} ({kinds}), {self.attributed} attributed to a "
            f"playbook; rows added {self.added}, updated {self.updated}, removed {self.removed}"
        )


def _lock(s: Session) -> None:
    """One writer of revenue outcomes at a time on PostgreSQL (SQLite serialises writers anyway)."""
    if s.get_bind().dialect.name == "postgresql":
        s.connection().execute(text("SELECT pg_advisory_xact_lock(724151)"))


_EnrollmentSpan = tuple[int, str, datetime, datetime | None]  # id, playbook, started, ended


@dataclass
class _Judged:
    """The revenue events of the judged months, and whose revenue was judged."""

    events: list[RevenueEvent]
    accounts: dict[Hashable, tuple[int, date | None]]  # external id -> (id, renewal date)
    judged: set[int]  # the accounts whose revenue was judged


def _judge_revenue(
    s: Session, as_of: datetime, result: RecordResult, *, tolerance: float, currency: str | None
) -> _Judged | None:
    """Every currency's revenue events up to the judged month (see :func:`record_revenue_outcomes`);
    None when the book has no revenue at all."""
    books = load_mrr_by_currency(s)
    this_month = as_of.date().replace(day=1)
    spans = {code: span for code, mrr in books.items() if (span := revenue_months(mrr)) is not None}
    if not spans:
        return None
    last = max(span[1] for span in spans.values())
    if currency is not None:
        spans = {code: span for code, span in spans.items() if code == currency.upper()}
    accounts = {
        external: (account_id, renewal)
        for account_id, external, renewal in s.connection().execute(
            select(_ACCOUNT.c.id, _ACCOUNT.c.external_id, _ACCOUNT.c.renewal_date)
        )
    }
    renewals = {external: renewal for external, (_, renewal) in accounts.items()}
    through = min(this_month, last)
    result.through = f"{through:%Y-%m}"
    events: list[RevenueEvent] = []
    judged: set[int] = set()
    for code in sorted(spans):
        events += revenue_events(books[code], renewals, through=through, tolerance=tolerance, currency=code)
        judged |= {accounts[external][0] for external, _ in books[code] if external in accounts}
    events.sort(key=lambda e: (e.month, str(e.account), e.kind))
    return _Judged(events, accounts, judged)


def split_cents(cents: int, parts: int) -> list[int]:
    """``cents`` shared among ``parts`` in whole cents that add up to it: equal shares, the cents
    left over one each to the first parts (a negative amount mirrors a positive one)."""
    base, left = divmod(abs(cents), parts)
    sign = -1 if cents < 0 else 1
    return [sign * (base + (i < left)) for i in range(parts)]


def _enrollment_spans(conn: Connection) -> dict[int, list[_EnrollmentSpan]]:
    """Every enrolled (not holdout) enrollment, by account, in id order."""
    enrollments: dict[int, list[_EnrollmentSpan]] = defaultdict(list)
    for enrollment_id, account_id, playbook, started, ended in conn.execute(
        select(
            _ENROLLMENT.c.id,
            _ENROLLMENT.c.account_id,
            _ENROLLMENT.c.playbook,
            _ENROLLMENT.c.started_at,
            _ENROLLMENT.c.ended_at,
        )
        .where(_ENROLLMENT.c.holdout.is_(False))
        .order_by(_ENROLLMENT.c.id)
    ):
        enrollments[account_id].append((enrollment_id, playbook, started, ended))
    return enrollments


def _wanted_outcomes(
    judged: _Judged,
    enrollments: dict[int, list[_EnrollmentSpan]],
    window: AttributionWindow,
    result: RecordResult,
) -> tuple[dict[tuple[int, str, int | None], dict[str, Any]], dict[tuple[int, str], str | None]]:
    """The outcome rows the events call for (one per attributed enrollment, or one without), by
    (account, key, enrollment); and each outcome's currency, by (account, key)."""
    wanted: dict[tuple[int, str, int | None], dict[str, Any]] = {}
    currency_of: dict[tuple[int, str], str | None] = {}
    kinds: Counter[str] = Counter()
    for event in judged.events:
        account_id = judged.accounts[event.account][0]
        kinds[event.kind] += 1
        chosen: list[tuple[int | None, str | None]] = [
            (e, p)
            for e, p, started, ended in enrollments.get(account_id, ())
            if window.covers(started, ended, event.occurred_at)
        ]
        result.attributed += bool(chosen)
        currency_of[(account_id, event.key)] = event.currency
        # the ARR change is shared among the enrollments it is attributed to: its rows add up to it once
        shares = split_cents(event.arr_delta_cents, len(chosen) or 1)
        for (enrollment_id, playbook), share in zip(chosen or [(None, None)], shares, strict=True):
            wanted[(account_id, event.key, enrollment_id)] = {
                "account_id": account_id,
                "enrollment_id": enrollment_id,
                "playbook": playbook,
                "kind": event.kind,
                "source": "revenue",
                "arr_delta_cents": share,  # in the account's currency, named in the note
                "key": event.key,
                "note": f"{event.key} {event.describe()}",
                "recorded_by": RECORDED_BY,
                "occurred_at": event.occurred_at,
            }
    result.events, result.rows, result.by_kind = len(judged.events), len(wanted), dict(kinds)
    return wanted, currency_of


def _reconcile_outcomes(
    conn: Connection,
    existing: Sequence[Any],
    wanted: dict[tuple[int, str, int | None], dict[str, Any]],
    result: RecordResult,
) -> list[int]:
    """Make the stored rows match ``wanted``: update the changed ones, delete those that no longer
    hold, insert the new ones (``wanted`` is left holding only those). Returns the deleted ids."""
    stale: list[int] = []
    for row in existing:
        identity = (row.account_id, row.key, row.enrollment_id)
        want = wanted.pop(identity, None)
        if want is None:
            if result.through is not None and (row.key or "").rsplit(":", 1)[-1] > result.through:
                continue  # a month this run does not judge (an earlier as_of): left as it is
            stale.append(row.id)
        elif (row.note, row.arr_delta_cents, row.occurred_at, row.playbook) != (
            want["note"],
            want["arr_delta_cents"],
            want["occurred_at"],
            want["playbook"],
        ):
            conn.execute(
                update(_OUTCOME)
                .where(_OUTCOME.c.id == row.id)
                .values(**{k: want[k] for k in ("note", "arr_delta_cents", "occurred_at", "playbook")})
            )
            result.updated += 1
    for chunk in chunks(stale, _CHUNK):
        conn.execute(delete(_OUTCOME).where(_OUTCOME.c.id.in_(chunk)))
    result.removed = len(stale)
    if wanted:
        conn.execute(insert(_OUTCOME), list(wanted.values()))
    result.added = len(wanted)
    return stale


def _retell_timeline(
    conn: Connection,
    existing: Sequence[Any],
    stale: list[int],
    added: dict[tuple[int, str, int | None], dict[str, Any]],
    currency_of: dict[tuple[int, str], str | None],
) -> None:
    """The account's story: one timeline line per outcome (not per attribution), kept in step."""
    had_keys = {(row.account_id, row.key) for row in existing}
    gone_ids = set(stale)
    now_keys = {(a, k) for (a, k, _) in added} | {
        (row.account_id, row.key) for row in existing if row.id not in gone_ids
    }
    for account_id, key in had_keys - now_keys:
        conn.execute(
            delete(_TIMELINE).where(
                _TIMELINE.c.account_id == account_id,
                _TIMELINE.c.kind == "outcome",
                _TIMELINE.c.detail["key"].as_string() == key,
            )
        )
    fresh = {(v["account_id"], v["key"]): v for v in added.values()}
    timeline = [
        {
            "account_id": account_id,
            "at": v["occurred_at"],
            "kind": "outcome",
            "playbook": None,
            "enrollment_id": None,
            "step_id": None,
            "summary": "revenue: " + v["note"].split(" ", 1)[1],
            "detail": {
                "key": key,
                "source": "revenue",
                "kind": v["kind"],
                "arr_delta_cents": v["arr_delta_cents"],
                "currency": currency_of.get((account_id, key)),
            },
        }
        for (account_id, key), v in fresh.items()
        if (account_id, key) not in had_keys
    ]
    if timeline:
        conn.execute(insert(_TIMELINE), timeline)


def record_revenue_outcomes(
    s: Session,
    as_of: datetime,
    *,
    window: AttributionWindow | None = None,
    tolerance: float = 0.01,
    currency: str | None = None,
) -> RecordResult:
    """Detect the revenue outcomes up to ``as_of`` and make the ``Outcome(source="revenue")`` rows
    match them: one row per attributed enrollment (``enrollment_id``, ``playbook``) or one without,
    ``key`` = the event's key (unique per account and enrollment), ``note`` = ``<key> <description>``,
    ``recorded_by`` = ``retain:revenue``. Rows that no longer hold
    (a corrected import) are removed; running it again changes nothing. A timeline event
    (``kind="outcome"``) tells the account's story once per outcome. The caller's session commits.

    Each account is judged in its own currency: the MRR is split by currency and every currency is
    judged on its own, so ``arr_delta_cents`` is in the account's currency (the note names it). With
    ``currency``, only the accounts paying in it are judged; the others' rows are left as they are.

    Months are judged up to the month of ``as_of``, and no later than the last month with any revenue
    in the book (in any currency): a billing export not yet imported must not look like everybody
    churning. (Not per currency: a currency whose last accounts all churned must still show it.)"""
    window = window or AttributionWindow()
    _lock(s)
    conn = s.connection()
    result = RecordResult(as_of.isoformat(), None)
    judged = _judge_revenue(s, as_of, result, tolerance=tolerance, currency=currency)
    if judged is None:
        return result
    wanted, currency_of = _wanted_outcomes(judged, _enrollment_spans(conn), window, result)
    existing: Sequence[Any] = conn.execute(
        select(
            _OUTCOME.c.id,
            _OUTCOME.c.account_id,
            _OUTCOME.c.enrollment_id,
            _OUTCOME.c.key,
            _OUTCOME.c.note,
            _OUTCOME.c.arr_delta_cents,
            _OUTCOME.c.occurred_at,
            _OUTCOME.c.playbook,
        ).where(_OUTCOME.c.source == "revenue", _OUTCOME.c.recorded_by == RECORDED_BY)
    ).all()
    if currency is not None:  # only the accounts of that currency were judged
        existing = [row for row in existing if row.account_id in judged.judged]
    stale = _reconcile_outcomes(conn, existing, wanted, result)
    _retell_timeline(conn, existing, stale, wanted, currency_of)
    return result


# --------------------------------------------------------------------------------------------
# 3. lift: intervals and verdicts


_Z = {0.95: NormalDist().inv_cdf(0.975)}


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    return _Z.get(confidence) or NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for a proportion ``successes / n`` (``n > 0``)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, not {successes}/{n}")
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> Interval:
    """Newcombe's hybrid score interval (his method 10, 1998) for ``x1/n1 - x2/n2``, built from the
    two Wilson intervals: ``d - sqrt((p1-l1)² + (u2-p2)²)`` to ``d + sqrt((u1-p1)² + (p2-l2)²)``."""
    p1, p2 = x1 / n1, x2 / n2
    one, two = wilson_interval(x1, n1, confidence), wilson_interval(x2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - one.low) ** 2 + (two.high - p2) ** 2)
    high = d + math.sqrt((one.high - p1) ** 2 + (p2 - two.low) ** 2)
    return Interval(max(-1.0, low), min(1.0, high))


def _points(ratio: float) -> str:
    return f"{ratio * 100:.1f}"


@dataclass(frozen=True)
class Lift:
    """One outcome of one playbook: enrolled (contacted) vs holdout.

    ``rate`` = enrollments with the outcome within the window / enrollments; ``lift`` = enrolled
    rate - holdout rate (a fraction: 0.05 is 5 points); ``interval`` its 95% Newcombe interval."""

    kind: str
    source: str  # revenue | goal
    enrolled: int
    holdout: int
    enrolled_with: int
    holdout_with: int
    enrolled_rate: float | None
    holdout_rate: float | None
    lift: float | None
    interval: Interval | None
    verdict: str
    comparable: bool = True

    @property
    def label(self) -> str:
        return self.kind if self.source == "revenue" else f"{self.kind} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["interval"] = None if self.interval is None else [self.interval.low, self.interval.high]
        data["label"] = self.label
        return data


def lift(
    kind: str,
    enrolled_with: int,
    enrolled: int,
    holdout_with: int,
    holdout: int,
    *,
    source: str = "revenue",
    min_group: int = MIN_GROUP,
    confidence: float = 0.95,
) -> Lift:
    """The lift of ``kind`` and its verdict:

    * either group smaller than ``min_group``: "too few holdout (enrolled) enrollments to tell (n=…)";
    * the interval contains 0: "no detectable effect on <kind> (…)";
    * else "lifts <kind> by X points (95% CI a to b)" or "lowers <kind> by X points (95% CI a to b)".
    """
    rate1 = enrolled_with / enrolled if enrolled else None
    rate2 = holdout_with / holdout if holdout else None
    difference = rate1 - rate2 if rate1 is not None and rate2 is not None else None
    interval = (
        newcombe_interval(enrolled_with, enrolled, holdout_with, holdout, confidence) if enrolled and holdout else None
    )
    level = f"{confidence:.0%}"
    if holdout < min_group:
        verdict = f"too few holdout enrollments to tell (n={holdout}; {min_group} needed)"
    elif enrolled < min_group:
        verdict = f"too few enrolled to tell (n={enrolled}; {min_group} needed)"
    else:
        assert interval is not None and difference is not None and rate1 is not None and rate2 is not None
        ci = f"{level} CI {_points(interval.low)} to {_points(interval.high)}"
        if interval.contains(0.0):
            verdict = (
                f"no detectable effect on {kind} ({_points(rate1)}% enrolled vs {_points(rate2)}% holdout; {ci} points)"
            )
        else:
            verb = "lifts" if difference > 0 else "lowers"
            verdict = f"{verb} {kind} by {_points(abs(difference))} points ({ci})"
    return Lift(
        kind, source, enrolled, holdout, enrolled_with, holdout_with, rate1, rate2, difference, interval, verdict
    )


@dataclass(frozen=True)
class ArrEffect:
    """ARR change per enrollment within the window (the sum of its revenue outcomes' ``arr_delta_cents``
    of kinds expanded, contracted, churned, reactivated; zero without any), enrolled vs holdout.
    ``interval`` (cents) is the normal approximation of the difference of two means (Welch)."""

    enrolled_mean_cents: int | None
    holdout_mean_cents: int | None
    difference_cents: int | None
    interval_cents: tuple[int, int] | None
    verdict: str
    currency: str | None = None  # every amount is in it: only enrollments of accounts paying in it count
    enrolled: int = 0  # enrollments compared
    holdout: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def arr_effect(
    enrolled: Sequence[int],
    holdout: Sequence[int],
    *,
    min_group: int = MIN_GROUP,
    confidence: float = 0.95,
    currency: str | None = None,
) -> ArrEffect:
    """Compare the ARR change per enrollment (cents, all in ``currency``) of the two groups."""
    mean1 = round(fmean(enrolled)) if enrolled else None
    mean2 = round(fmean(holdout)) if holdout else None
    code = f" {currency}" if currency else ""
    if mean1 is None or mean2 is None or len(enrolled) < 2 or len(holdout) < 2:
        difference = None if mean1 is None or mean2 is None else mean1 - mean2
        small, n = ("holdout enrollments", len(holdout)) if len(holdout) < 2 else ("enrolled", len(enrolled))
        verdict = f"too few {small} to tell (n={n}; {min_group} needed)"
        return ArrEffect(mean1, mean2, difference, None, verdict, currency, len(enrolled), len(holdout))
    diff = fmean(enrolled) - fmean(holdout)
    se = math.sqrt(variance(enrolled) / len(enrolled) + variance(holdout) / len(holdout))
    half = _z(confidence) * se
    interval = (round(diff - half), round(diff + half))
    if len(holdout) < min_group:
        verdict = f"too few holdout enrollments to tell (n={len(holdout)}; {min_group} needed)"
    elif len(enrolled) < min_group:
        verdict = f"too few enrolled to tell (n={len(enrolled)}; {min_group} needed)"
    elif interval[0] <= 0 <= interval[1]:
        verdict = (
            f"no detectable effect on ARR ({confidence:.0%} CI {money(interval[0])} to {money(interval[1])}{code})"
        )
    else:
        verb = "adds" if diff > 0 else "loses"
        verdict = (
            f"{verb} {money(abs(round(diff)))}{code} ARR per enrolled account ({confidence:.0%} CI "
            f"{money(interval[0])} to {money(interval[1])})"
        )
    return ArrEffect(mean1, mean2, round(diff), interval, verdict, currency, len(enrolled), len(holdout))


# --------------------------------------------------------------------------------------------
# 3b. per playbook, from the database


@dataclass(frozen=True)
class FunnelStep:
    """``reached`` enrolled (not holdout) enrollments reached this stage; ``share`` of those enrolled."""

    stage: str  # "enrolled", a step id, or "goal"
    kind: str  # "enrolled", the step's kind, or "goal"
    reached: int
    share: float | None


@dataclass
class PlaybookImpact:
    """One playbook: who was compared, each outcome's lift, the ARR effect and the funnel."""

    playbook: str
    window_days: int
    enrolled: int  # enrollments that were contacted (not holdout)
    holdout: int
    accounts: int  # distinct accounts among both groups
    open_windows: int  # enrollments whose window has not closed yet at as_of (counted with what is known)
    outcomes: list[Lift] = field(default_factory=list)
    arr: ArrEffect | None = None  # when the enrollments' accounts pay in one currency (or one was chosen)
    funnel: list[FunnelStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    arr_by_currency: list[ArrEffect] = field(default_factory=list)  # one per currency, by code

    def to_dict(self) -> dict[str, Any]:
        return {
            "playbook": self.playbook,
            "window_days": self.window_days,
            "enrolled": self.enrolled,
            "holdout": self.holdout,
            "accounts": self.accounts,
            "open_windows": self.open_windows,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "arr": None if self.arr is None else self.arr.to_dict(),
            "arr_by_currency": [a.to_dict() for a in self.arr_by_currency],
            "funnel": [asdict(f) for f in self.funnel],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Shape:
    steps: list[tuple[str, str]]  # (step id, kind) in the playbook's order, exit steps left out
    goal: str | None
    goal_watched_for_holdout: bool  # the goal has a window, so holdout enrollments are watched for it


def _shape(s: Session, playbook: str) -> _Shape | None:
    """The latest stored revision of a playbook, compiled; None when none is stored or it no longer compiles."""
    from playbooks import compile_source

    row = (
        s.connection()
        .execute(
            select(_REVISION.c.source, _REVISION.c.templates, _REVISION.c.revision)
            .where(_REVISION.c.playbook == playbook)
            .order_by(_REVISION.c.created_at.desc())
            .limit(1)
        )
        .first()
    )
    if row is None:
        return None
    try:
        spec = compile_source(row.source, f"{playbook}@{row.revision}", templates=row.templates).spec
    except RetainError:
        return None
    goal = spec.goal
    return _Shape(
        [(step.id, step.kind) for step in spec.steps if step.kind != "exit"],
        goal.outcome if goal else None,
        bool(goal and goal.within is not None),
    )


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def playbook_impact(
    s: Session,
    as_of: datetime,
    *,
    window: timedelta = DEFAULT_LIFT_WINDOW,
    since: datetime | None = None,
    segment: str | None = None,
    playbooks: Iterable[str] | None = None,
    min_group: int = MIN_GROUP,
    currency: str | None = None,
) -> list[PlaybookImpact]:
    """Per playbook, the enrollments started in ``[since, as_of]`` (all up to ``as_of`` by default), of
    accounts in ``segment``: enrolled vs holdout on every outcome seen within ``window`` after each
    enrollment's start (see ``docs/reports.md``), the ARR effect, and the funnel.

    Counted outcomes are *facts about the account*, recorded whichever group it is in: revenue
    outcomes (of every kind), and the playbook's own goal when holdout enrollments are watched for it
    (the goal has a ``within``). Step outcomes and goals without a window are only recorded for
    contacted enrollments and are not compared (the funnel shows them).

    Rates and lift are counts and mix currencies freely. The ARR effect adds money up, so it is per
    currency (the account's, :func:`flows.analytics.metrics.account_currencies`): one per currency in
    ``arr_by_currency``, or only ``currency``'s; ``arr`` is set when there is one."""
    conn = s.connection()
    money_of = account_currencies(s)
    wanted_currency = currency.upper() if currency else None
    query = select(
        _ENROLLMENT.c.id,
        _ENROLLMENT.c.playbook,
        _ENROLLMENT.c.account_id,
        _ENROLLMENT.c.holdout,
        _ENROLLMENT.c.started_at,
        _ENROLLMENT.c.outcome,
    ).where(_ENROLLMENT.c.started_at <= as_of)
    if since is not None:
        query = query.where(_ENROLLMENT.c.started_at >= since)
    if segment is not None:
        query = query.join(_ACCOUNT, _ACCOUNT.c.id == _ENROLLMENT.c.account_id).where(_ACCOUNT.c.segment == segment)
    chosen = set(playbooks) if playbooks is not None else None
    units: dict[str, list[tuple[int, int, bool, datetime]]] = defaultdict(list)
    # a holdout enrollment that reached the goal or missed its window shows holdouts are watched for it
    watched_seen: set[str] = set()
    for enrollment_id, playbook, account_id, holdout, started, ended_with in conn.execute(
        query.order_by(_ENROLLMENT.c.id)
    ):
        if chosen is None or playbook in chosen:
            units[playbook].append((enrollment_id, account_id, bool(holdout), _as_utc(started)))
            if holdout and ended_with not in (None, "exited", "error"):
                watched_seen.add(playbook)
    if not units:
        return []
    earliest = min(started for rows in units.values() for *_, started in rows)

    # facts, per account, sorted by time: (at, kind, source, playbook, arr delta)
    facts: dict[int, list[tuple[datetime, str, str, str | None, int]]] = defaultdict(list)
    seen: dict[tuple[int, str], int] = {}  # a revenue outcome -> its place in its account's facts
    for account_id, kind, source, playbook, at, delta, key in conn.execute(
        select(
            _OUTCOME.c.account_id,
            _OUTCOME.c.kind,
            _OUTCOME.c.source,
            _OUTCOME.c.playbook,
            _OUTCOME.c.occurred_at,
            _OUTCOME.c.arr_delta_cents,
            _OUTCOME.c.key,
        ).where(
            _OUTCOME.c.source.in_(("revenue", "goal")),
            _OUTCOME.c.occurred_at >= earliest,
            _OUTCOME.c.occurred_at <= as_of,
        )
    ):
        if source == "revenue":
            identity = (account_id, key or f"{kind}:{at.isoformat()}")
            if identity in seen:  # one revenue outcome, its ARR change shared among several enrollments' rows
                place = seen[identity]
                fact = facts[account_id][place]
                facts[account_id][place] = (*fact[:4], fact[4] + int(delta or 0))
                continue
            seen[identity] = len(facts[account_id])
        facts[account_id].append((_as_utc(at), kind, source, playbook, int(delta or 0)))
    for rows in facts.values():
        rows.sort(key=lambda f: f[0])

    impacts = []
    for playbook in sorted(units):
        impacts.append(
            _impact(
                s,
                playbook,
                units[playbook],
                facts,
                as_of=as_of,
                window=window,
                min_group=min_group,
                watched_seen=playbook in watched_seen,
                money_of=money_of,
                currency=wanted_currency,
            )
        )
    return impacts


def _impact(
    s: Session,
    playbook: str,
    units: list[tuple[int, int, bool, datetime]],
    facts: Mapping[int, list[_Fact]],
    *,
    as_of: datetime,
    window: timedelta,
    min_group: int,
    watched_seen: bool,
    money_of: Mapping[int, str] | None = None,
    currency: str | None = None,
) -> PlaybookImpact:
    shape = _shape(s, playbook)
    # the stored playbook says whether holdouts are watched for the goal; without it, the data does
    watched = shape.goal_watched_for_holdout if shape is not None else watched_seen
    groups = {False: [u for u in units if not u[2]], True: [u for u in units if u[2]]}
    impact = PlaybookImpact(
        playbook=playbook,
        window_days=window.days,
        enrolled=len(groups[False]),
        holdout=len(groups[True]),
        accounts=len({u[1] for u in units}),
        open_windows=sum(1 for u in units if u[3] + window > as_of),
    )
    counts: dict[tuple[str, str], Counter[bool]] = defaultdict(Counter)
    arr: dict[str, dict[bool, list[int]]] = defaultdict(lambda: {False: [], True: []})
    if currency is not None:
        arr[currency]  # shown even when no enrollment is in it
    unwatched = 0  # contacted enrollments that reached a goal holdouts are not watched for
    sharers = _sharers(s, {u[1] for u in units if u[1] in facts}, as_of)
    for holdout, members in groups.items():
        for enrollment_id, account_id, _, started in members:
            history = facts.get(account_id, [])
            start = bisect.bisect_left(history, started, key=lambda f: f[0])
            end = bisect.bisect_left(
                history, min(started + window, as_of + timedelta(microseconds=1)), key=lambda f: f[0]
            )
            share = _share_of(enrollment_id, sharers.get(account_id, []), window)
            had, delta, reached_unwatched = _in_window(history[start:end], playbook, watched=watched, share=share)
            unwatched += reached_unwatched and not holdout
            for key in had:
                counts[key][holdout] += 1
            code = (money_of or {}).get(account_id, "USD")
            if currency is None or code == currency:
                arr[code][holdout].append(delta)
    wanted = set(counts)
    if watched and shape is not None and shape.goal:
        wanted.add((shape.goal, "goal"))
    order = {kind: i for i, kind in enumerate(REVENUE_KINDS)}
    for kind, source in sorted(wanted, key=lambda k: (k[1] != "goal", order.get(k[0], 99), k[0])):
        c = counts[(kind, source)]
        impact.outcomes.append(
            lift(kind, c[False], impact.enrolled, c[True], impact.holdout, source=source, min_group=min_group)
        )
    impact.arr_by_currency = [
        arr_effect(arr[code][False], arr[code][True], min_group=min_group, currency=code) for code in sorted(arr)
    ]
    if len(impact.arr_by_currency) == 1:
        impact.arr = impact.arr_by_currency[0]
    _note_limits(impact, unwatched, window, as_of)
    impact.funnel = _funnel(s, playbook, shape, [u for u in units if not u[2]])
    return impact


#: an account's outcome: when, kind, source, the playbook whose goal it is, ARR change in cents
_Fact = tuple[datetime, str, str, str | None, int]


def _sharers(s: Session, accounts: Iterable[int], as_of: datetime) -> dict[int, list[tuple[int, datetime]]]:
    """Every enrollment (of any playbook, contacted or holdout) of these accounts started by ``as_of``:
    an ARR change is shared among those whose windows hold it, so that it counts once across them."""
    found: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    for ids in chunks(sorted(accounts), _CHUNK):
        for enrollment_id, account_id, started in s.connection().execute(
            select(_ENROLLMENT.c.id, _ENROLLMENT.c.account_id, _ENROLLMENT.c.started_at)
            .where(_ENROLLMENT.c.account_id.in_(ids), _ENROLLMENT.c.started_at <= as_of)
            .order_by(_ENROLLMENT.c.id)
        ):
            found[account_id].append((enrollment_id, _as_utc(started)))
    return found


def _share_of(
    enrollment_id: int, enrollments: Sequence[tuple[int, datetime]], window: timedelta
) -> Callable[[datetime, int], int]:
    """This enrollment's share of an ARR change at a time: the change split (:func:`split_cents`)
    among the account's enrollments, of every playbook and group, whose windows hold that time."""

    def share(at: datetime, cents: int) -> int:
        holding = [e for e, started in enrollments if started <= at < started + window]
        if enrollment_id not in holding:
            return cents
        return split_cents(cents, len(holding))[holding.index(enrollment_id)]

    return share


def _in_window(
    facts: Sequence[_Fact], playbook: str, *, watched: bool, share: Callable[[datetime, int], int] | None = None
) -> tuple[set[tuple[str, str]], int, bool]:
    """What one enrollment had in its window: the (kind, source) outcomes, its share of the ARR
    change, and whether it reached a goal that holdouts are not watched for."""
    had: set[tuple[str, str]] = set()
    delta = 0
    reached_unwatched = False
    for at, kind, source, owner, cents in facts:
        if source == "revenue":
            had.add((kind, "revenue"))
            if kind in ARR_KINDS:
                delta += share(at, cents) if share is not None else cents
        elif owner == playbook:  # the playbook's own goal
            if watched:
                had.add((kind, "goal"))
            else:
                reached_unwatched = True
    return had, delta, reached_unwatched


def _note_limits(impact: PlaybookImpact, unwatched: int, window: timedelta, as_of: datetime) -> None:
    if unwatched:
        impact.notes.append(
            "the goal is not compared: holdout enrollments end at once when the goal has no 'within', so they "
            f"are never watched for it ({unwatched} contacted enrollments reached it; see the funnel)"
        )
    if impact.open_windows:
        impact.notes.append(
            f"{impact.open_windows} enrollments started less than {window.days} days before {as_of:%Y-%m-%d}: "
            "counted with the outcomes seen so far"
        )


def _funnel(
    s: Session, playbook: str, shape: _Shape | None, enrolled: list[tuple[int, int, bool, datetime]]
) -> list[FunnelStep]:
    """enrolled -> every step, in the playbook's order -> goal, counting contacted enrollments."""
    total = len(enrolled)

    def share(n: int) -> float | None:
        return n / total if total else None

    stages = [FunnelStep("enrolled", "enrolled", total, share(total))]
    if not total:
        return stages
    ids = [u[0] for u in enrolled]
    reached: Counter[str] = Counter()
    first_seen: dict[str, datetime] = {}
    goals = 0
    conn = s.connection()
    for chunk in chunks(ids, _CHUNK):
        for step_id, n, at in conn.execute(
            select(_TIMELINE.c.step_id, func.count(func.distinct(_TIMELINE.c.enrollment_id)), func.min(_TIMELINE.c.at))
            .where(
                _TIMELINE.c.enrollment_id.in_(chunk),
                _TIMELINE.c.step_id.is_not(None),
                _TIMELINE.c.kind.in_(STEP_EVENT_KINDS),
            )
            .group_by(_TIMELINE.c.step_id)
        ):
            reached[step_id] += int(n)
            first_seen[step_id] = min(_as_utc(at), first_seen.get(step_id, _as_utc(at)))
        goal_filter = [_OUTCOME.c.enrollment_id.in_(chunk), _OUTCOME.c.source == "goal"]
        goals += conn.execute(
            select(func.count(func.distinct(_OUTCOME.c.enrollment_id))).where(*goal_filter)
        ).scalar_one()
    known = shape.steps if shape is not None else []
    known_ids = {step_id for step_id, _ in known}
    # steps the stored revision does not name (or no revision is stored): the most reached first
    extra = sorted(
        (step for step in reached if step not in known_ids), key=lambda step: (-reached[step], first_seen[step])
    )
    for step_id, kind in [*known, *((step, "step") for step in extra)]:
        stages.append(FunnelStep(step_id, kind, reached[step_id], share(reached[step_id])))
    goal_name = f"goal: {shape.goal}" if shape is not None and shape.goal else "goal"
    stages.append(FunnelStep(goal_name, "goal", goals, share(goals)))
    return stages
