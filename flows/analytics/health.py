"""Health scores: every account's score, band and trend, from ``playbooks/health.yaml``.

How a run goes (``score_accounts``, or the ``health`` Prefect flow phase by phase):

1. *read*: every account that is not churned, then each measure with ONE query over all accounts
   (usage sums, ticket counts, the latest NPS answer, the latest delivered touch), then the score
   history the trend and the band change need. The number of statements does not grow with the
   number of accounts.
2. *score* (plain Python): each measure's raw value becomes points on its curve; the score is the
   weighted average of the measures the account has data for. A measure without data (no usage
   rows, no NPS answer, no seat count, no touch yet) is skipped and the other weights scaled up to
   fill the gap; its component says why. An account whose measures with data carry less than
   ``min_coverage`` of the weight is not scored (and left as it was).
3. *write*: one ``HealthScore`` row per scored account (the history), ``account.health``,
   ``health_score`` and ``health_trend``, and a ``TimelineEvent(kind="health")`` when the band
   differs from the one the account had. Running the same ``as_of`` again replaces that moment's
   rows and adds no timeline events. Scoring an ``as_of`` older than an account's latest score
   (a backfill) adds history but leaves the account's current fields alone.

Times: ``as_of`` is aware UTC; usage days are UTC days, the last ``window`` days ending on
``as_of``'s date included (like ``usage()`` in expressions).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from models import (
    Account,
    AccountStatus,
    HealthScore,
    SupportTicket,
    SurveyResponse,
    TimelineEvent,
    Touch,
    TouchStatus,
    UsageMetric,
    session,
    table_of,
)
from models.health import HealthSpec, Measure, Nps
from playbooks import load_health

__all__ = [
    "AccountReadings",
    "HealthReport",
    "HealthResult",
    "Reading",
    "describe_value",
    "read_accounts",
    "report_of",
    "score",
    "score_accounts",
    "write_scores",
]


_ACCOUNT: Table = table_of(Account)
_HEALTH: Table = table_of(HealthScore)
_USAGE: Table = table_of(UsageMetric)
_TICKET: Table = table_of(SupportTicket)
_SURVEY: Table = table_of(SurveyResponse)
_TOUCH: Table = table_of(Touch)
_TIMELINE: Table = table_of(TimelineEvent)


# --- the definition -------------------------------------------------------------------------------


# --- reading: one query per measure, over all accounts ------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One measure of one account: its raw value, or why there is none."""

    value: float | None
    missing: str | None = None


@dataclass(frozen=True)
class AccountReadings:
    """An account as the scorer sees it: its current health, its readings, its history."""

    id: int
    external_id: str
    health: str | None
    readings: dict[str, Reading]
    trend_base: float | None = None  # the latest score at least ``trend_window`` before as_of
    newer_score: bool = False  # a score later than as_of exists: a backfill, leave the account alone
    previous_band: str | None = None  # with newer_score: the band of the latest score before as_of


def _days(window: timedelta) -> int:
    return window.days


def _usage_trend(conn: Connection, measure: Any, as_of: datetime) -> dict[int, Reading]:
    days = _days(measure.window)
    today = as_of.date()
    split, start = today - timedelta(days=days), today - timedelta(days=2 * days)
    rows = conn.execute(
        select(
            _USAGE.c.account_id,
            func.sum(case((_USAGE.c.day > split, _USAGE.c.value), else_=0.0)),
            func.sum(case((_USAGE.c.day <= split, _USAGE.c.value), else_=0.0)),
        )
        .where(_USAGE.c.metric == measure.metric, _USAGE.c.day > start, _USAGE.c.day <= today)
        .group_by(_USAGE.c.account_id)
    )
    readings = {}
    for account_id, recent, before in rows:
        if not before:
            note = f"no {measure.metric} in the {days} days before the last {days}: nothing to compare with"
            readings[account_id] = Reading(None, note)
        else:
            readings[account_id] = Reading((float(recent) - float(before)) / float(before) * 100)
    return readings


def _active_users(conn: Connection, measure: Any, as_of: datetime, seats: dict[int, int | None]) -> dict[int, Reading]:
    today = as_of.date()
    rows = conn.execute(
        select(_USAGE.c.account_id, func.avg(_USAGE.c.value))
        .where(
            _USAGE.c.metric == measure.metric,
            _USAGE.c.day > today - timedelta(days=_days(measure.window)),
            _USAGE.c.day <= today,
        )
        .group_by(_USAGE.c.account_id)
    )
    readings = {}
    for account_id, average in rows:
        count = seats.get(account_id)
        if count:
            readings[account_id] = Reading(float(average) / count * 100)
        else:
            readings[account_id] = Reading(None, "the account's seat count is not known")
    return readings


def _open_tickets(conn: Connection, as_of: datetime) -> dict[int, Reading]:
    rows = conn.execute(
        select(_TICKET.c.account_id, func.count())
        .where(_TICKET.c.opened_at <= as_of, or_(_TICKET.c.status != "solved", _TICKET.c.closed_at > as_of))
        .group_by(_TICKET.c.account_id)
    )
    return {account_id: Reading(float(n)) for account_id, n in rows}


def _latest(partition: Any, order: Iterable[Any], column: Any, *where: Any) -> Any:
    """(partition, column) of the latest row per ``partition`` among those matching ``where``."""
    rank = func.row_number().over(partition_by=partition, order_by=list(order))
    ranked = (
        select(partition.label("owner_id"), column.label("latest_value"), rank.label("rn")).where(*where).subquery()
    )
    return select(ranked.c.owner_id, ranked.c.latest_value).where(ranked.c.rn == 1)


def _nps(conn: Connection, measure: Nps, as_of: datetime) -> dict[int, Reading]:
    where = [_SURVEY.c.kind == "nps", _SURVEY.c.responded_at <= as_of]
    if measure.within is not None:
        where.append(_SURVEY.c.responded_at > as_of - measure.within)
    query = _latest(_SURVEY.c.account_id, (_SURVEY.c.responded_at.desc(), _SURVEY.c.id.desc()), _SURVEY.c.score, *where)
    return {account_id: Reading(float(score)) for account_id, score in conn.execute(query)}


def _days_since_last_touch(conn: Connection, as_of: datetime) -> dict[int, Reading]:
    rows = conn.execute(
        select(_TOUCH.c.account_id, func.max(_TOUCH.c.delivered_at))
        .where(
            _TOUCH.c.contact_id.is_not(None),
            _TOUCH.c.status == TouchStatus.DELIVERED.value,
            _TOUCH.c.delivered_at <= as_of,
        )
        .group_by(_TOUCH.c.account_id)
    )
    return {account_id: Reading(float((as_of - last).days)) for account_id, last in rows if last is not None}


def _missing(name: str, measure: Any) -> Reading:
    """The reading of an account a measure's query found nothing for."""
    match name:
        case "usage_trend":
            return Reading(None, f"no {measure.metric} data in the last {2 * _days(measure.window)} days")
        case "active_users":
            return Reading(None, f"no {measure.metric} data in the last {_days(measure.window)} days")
        case "open_tickets":
            return Reading(0.0)  # no ticket is a real zero
        case "nps":
            within = f" in the last {measure.within.days} days" if measure.within else ""
            return Reading(None, f"no NPS answer{within}")
        case "days_since_last_touch":
            return Reading(None, "no touch delivered to a contact yet")
    raise AssertionError(name)


def read_accounts(conn: Connection, spec: HealthSpec, as_of: datetime) -> list[AccountReadings]:
    """Every account that is not churned, with a reading of every measure of ``spec`` and its
    score history: a fixed number of queries, whatever the number of accounts."""
    accounts = conn.execute(
        select(_ACCOUNT.c.id, _ACCOUNT.c.external_id, _ACCOUNT.c.health, _ACCOUNT.c.seats)
        .where(_ACCOUNT.c.status != AccountStatus.CHURNED.value)
        .order_by(_ACCOUNT.c.id)
    ).all()
    seats = {a.id: a.seats for a in accounts}
    found: dict[str, dict[int, Reading]] = {}
    for name, measure in spec.measures.used().items():
        match name:
            case "usage_trend":
                found[name] = _usage_trend(conn, measure, as_of)
            case "active_users":
                found[name] = _active_users(conn, measure, as_of, seats)
            case "open_tickets":
                found[name] = _open_tickets(conn, as_of)
            case "nps":
                found[name] = _nps(conn, cast(Nps, measure), as_of)  # the "nps" measure is an Nps
            case "days_since_last_touch":
                found[name] = _days_since_last_touch(conn, as_of)

    newest_first = (_HEALTH.c.scored_at.desc(), _HEALTH.c.id.desc())
    base_query = _latest(
        _HEALTH.c.account_id, newest_first, _HEALTH.c.score, _HEALTH.c.scored_at <= as_of - spec.trend_window
    )
    trend_base = dict(conn.execute(base_query).all())
    newer = set(conn.execute(select(_HEALTH.c.account_id).where(_HEALTH.c.scored_at > as_of).distinct()).scalars())
    previous: dict[int, str] = {}
    if newer:  # only a backfill needs the band of the score before as_of
        before = _latest(_HEALTH.c.account_id, newest_first, _HEALTH.c.band, _HEALTH.c.scored_at < as_of)
        previous = dict(conn.execute(before).all())

    used = spec.measures.used()
    return [
        AccountReadings(
            id=a.id,
            external_id=a.external_id,
            health=a.health,
            readings={name: found[name].get(a.id) or _missing(name, used[name]) for name in used},
            trend_base=trend_base.get(a.id),
            newer_score=a.id in newer,
            previous_band=previous.get(a.id),
        )
        for a in accounts
    ]


# --- scoring: plain Python ------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthResult:
    """One account's score. ``score`` and ``band`` are None when no measure had data."""

    account_id: int
    external_id: str
    score: float | None
    band: str | None
    trend: float | None
    previous_band: str | None  # what the account showed before (or the score before, in a backfill)
    components: dict[str, dict[str, Any]]
    updates_account: bool = True
    unscored: str | None = None  # why there is no score

    @property
    def band_changed(self) -> bool:
        return self.band is not None and self.band != self.previous_band


def describe_value(name: str, value: float | None) -> str:
    """A raw value in words: ``-45% logins``, ``35% of seats``, ``NPS 4``."""
    if value is None:
        return "no data"
    match name:
        case "usage_trend":
            return f"{value:+.0f}% usage"
        case "active_users":
            return f"{value:.0f}% of seats active"
        case "open_tickets":
            return f"{value:.0f} open ticket{'s' * (value != 1)}"
        case "nps":
            return f"NPS {value:.0f}"
        case "days_since_last_touch":
            return f"{value:.0f} day{'s' * (value != 1)} since the last touch"
    return f"{value:g}"


def _components(
    measures: dict[str, Measure], readings: dict[str, Reading]
) -> tuple[float | None, float, dict[str, Any]]:
    """(score, coverage, components): the weighted average over the measures with data (None
    when they weigh nothing), the share of the total weight they carry, and each measure's part."""
    present = {name: r.value for name, r in readings.items() if r.value is not None}
    total = sum(measures[name].weight for name in present)
    coverage = total / sum(m.weight for m in measures.values())
    components: dict[str, dict[str, Any]] = {}
    weighted = 0.0
    for name, measure in measures.items():
        value = present.get(name)
        if value is None:
            components[name] = {"value": None, "weight": measure.weight, "skipped": readings[name].missing}
            continue
        points = measure.points_for(value)
        share = measure.weight / total if total else 0.0
        weighted += points * share
        components[name] = {
            "value": round(value, 2),
            "points": round(points, 1),
            "weight": measure.weight,
            "share": round(share, 4),  # of the score, after re-normalising over the measures with data
        }
    return (round(weighted, 1) if total > 0 else None), coverage, components


def score(spec: HealthSpec, accounts: Iterable[AccountReadings]) -> list[HealthResult]:
    """The score, band and trend of every account (no database)."""
    measures = spec.measures.used()
    results = []
    for a in accounts:
        value, coverage, components = _components(measures, a.readings)
        unscored = None
        if value is None or coverage < spec.min_coverage:
            unscored = (
                f"not enough data: the measures with data carry {coverage:.0%} of the weight, "
                f"at least {spec.min_coverage:.0%} is needed"
            )
            value = None
        band = spec.bands.band(value) if value is not None else None
        trend = round(value - a.trend_base, 1) if value is not None and a.trend_base is not None else None
        results.append(
            HealthResult(
                account_id=a.id,
                external_id=a.external_id,
                score=value,
                band=band,
                trend=trend,
                previous_band=a.previous_band if a.newer_score else a.health,
                components=components,
                updates_account=not a.newer_score,
                unscored=unscored,
            )
        )
    return results


# --- writing --------------------------------------------------------------------------------------


def _weakest(components: dict[str, dict[str, Any]], n: int = 2) -> list[str]:
    scored = sorted((c["points"], name) for name, c in components.items() if c.get("points") is not None)
    return [name for _, name in scored[:n]]


def _band_event(r: HealthResult, as_of: datetime) -> dict[str, Any]:
    assert r.score is not None
    weakest = _weakest(r.components)
    lows = ", ".join(describe_value(name, r.components[name]["value"]) for name in weakest)
    moved = f"health {r.previous_band} → {r.band}" if r.previous_band else f"health first scored {r.band}"
    trend = f", trend {r.trend:+g}" if r.trend is not None else ""
    return {
        "account_id": r.account_id,
        "at": as_of,
        "kind": "health",
        "playbook": None,
        "enrollment_id": None,
        "step_id": None,
        "summary": f"{moved} (score {r.score:g}{trend}; weakest: {lows})" if lows else f"{moved} (score {r.score:g})",
        "detail": {"from": r.previous_band, "to": r.band, "score": r.score, "trend": r.trend, "weakest": weakest},
    }


def write_scores(conn: Connection, results: Iterable[HealthResult], as_of: datetime) -> None:
    """Keep the scores: history rows, the accounts' current health, timeline events on a band
    change. Batched statements; the same ``as_of`` written again replaces its history rows."""
    scored = [r for r in results if r.score is not None]
    conn.execute(delete(_HEALTH).where(_HEALTH.c.scored_at == as_of))
    if not scored:
        return
    conn.execute(
        insert(_HEALTH),
        [
            {
                "account_id": r.account_id,
                "scored_at": as_of,
                "score": r.score,
                "band": r.band,
                "trend": r.trend,
                "components": r.components,
            }
            for r in scored
        ],
    )
    current = [r for r in scored if r.updates_account]
    if current:
        conn.execute(
            update(_ACCOUNT)
            .where(_ACCOUNT.c.id == bindparam("account"))
            .values(
                health=bindparam("band"),
                health_score=bindparam("score"),
                health_trend=bindparam("trend"),
                updated_at=as_of,
            ),
            [{"account": r.account_id, "band": r.band, "score": r.score, "trend": r.trend} for r in current],
        )
    events = [_band_event(r, as_of) for r in scored if r.band_changed]
    if events:
        conn.execute(insert(_TIMELINE), events)


def score_accounts(s: Session, definition: HealthSpec, as_of: datetime) -> list[HealthResult]:
    """Score every account that is not churned at ``as_of`` and keep the results (see the module
    documentation). The caller's session commits."""
    conn = s.connection()
    results = score(definition, read_accounts(conn, definition, as_of))
    write_scores(conn, results, as_of)
    return results


# --- the report -----------------------------------------------------------------------------------


@dataclass
class HealthReport:
    """What a health run did: printed, logged and stored as a Prefect artifact."""

    as_of: str
    definition: str
    scored: int = 0
    unscored: int = 0  # not enough data to score
    backfilled: int = 0  # scored into the past: history only
    bands: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)  # "yellow → red": accounts
    skipped: dict[str, int] = field(default_factory=dict)  # measure: accounts without data for it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        bands = ", ".join(f"{self.bands.get(b, 0)} {b}" for b in ("green", "yellow", "red"))
        changed = sum(self.changes.values())
        text = f"health as of {self.as_of}: {self.scored} accounts scored ({bands}), {changed} changed band"
        if self.unscored:
            text += f", {self.unscored} not scored (not enough data)"
        if self.backfilled:
            text += f", {self.backfilled} into the past (history only)"
        return text


def report_of(results: Iterable[HealthResult], as_of: datetime, definition: Path | str) -> HealthReport:
    report = HealthReport(as_of.isoformat(), str(definition))
    bands: Counter[str] = Counter()
    changes: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for r in results:
        if r.band is None:
            report.unscored += 1
            continue
        report.scored += 1
        report.backfilled += not r.updates_account
        bands[r.band] += 1
        if r.band_changed:
            changes[f"{r.previous_band or 'none'} → {r.band}"] += 1
        skipped.update(name for name, c in r.components.items() if c.get("skipped"))
    report.bands, report.changes, report.skipped = dict(bands), dict(changes), dict(skipped)
    return report


def run_health(engine: Engine | Connection, definition: Path, as_of: datetime) -> HealthReport:
    """Load the definition and score every account at ``as_of`` (plain function, no Prefect)."""
    spec = load_health(definition)
    with session(engine) as s:
        results = score_accounts(s, spec, as_of)
    return report_of(results, as_of, definition)
