"""Reports: retention, playbooks (lift and funnel), surveys, health, and the weekly digest.

Each report is a :class:`Report`: a JSON document (``data``), tables for people (the first one is the
report's CSV), and notes. The builders are plain functions of a session and an ``as_of``; the
:func:`report_flow` Prefect flow records revenue outcomes, builds every report and publishes them
as Prefect artifacts (:func:`artifacts_of`, published by ``flows.orchestration``). Charts are in ``flows.reports.charts``. Definitions:
``docs/reports.md``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, and_, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from flows.analytics.attribution import ARR_KINDS, DEFAULT_LIFT_WINDOW, MIN_GROUP, STEP_EVENT_KINDS, playbook_impact
from flows.analytics.metrics import (
    account_currencies,
    add_months,
    arr_cents,
    cohort_retention,
    currencies,
    last_revenue_month,
    load_mrr,
    logo_metrics,
    main_currency,
    month_range,
    revenue_months,
    waterfall,
)
from flows.engine.render import markdown_to_html
from flows.reports.format import money, percent, points
from integrations.channels import Channel, Delivery
from models import (
    Account,
    AccountStatus,
    Enrollment,
    HealthScore,
    IntegrationError,
    NotFoundError,
    Outcome,
    RetainError,
    RetryableError,
    SurveyResponse,
    TimelineEvent,
    Touch,
    TouchStatus,
    table_of,
)
from models.tables import DigestPost

__all__ = [
    "Column",
    "Digest",
    "PostResult",
    "Report",
    "ReportTable",
    "WeeklyDigest",
    "digest_week",
    "health_report",
    "playbooks_report",
    "post_digest",
    "post_once",
    "retention_report",
    "surveys_report",
    "weekly_digest",
]

_ACCOUNT: Table = table_of(Account)
_ENROLLMENT: Table = table_of(Enrollment)
_HEALTH: Table = table_of(HealthScore)
_OUTCOME: Table = table_of(Outcome)
_SURVEY: Table = table_of(SurveyResponse)
_TIMELINE: Table = table_of(TimelineEvent)
_TOUCH: Table = table_of(Touch)

#: a health score older than this at a moment does not count as the account's health then
HEALTH_STALE = timedelta(days=90)
BANDS = ("green", "yellow", "red")


# --------------------------------------------------------------------------------------------
# the report shape, and its formats


@dataclass(frozen=True)
class Column:
    """A table column. ``kind``: text, int, money (cents), percent (a ratio), points (a ratio shown
    as percentage points), number."""

    name: str
    kind: str = "text"
    #: long text (a verdict): a terminal lists it under the table, "key: text", instead of in a column
    detail: bool = False
    #: the header when space is short (a terminal): "enr. rate" for "enrolled rate"
    short: str | None = None


def _show(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "money":
        return money(int(value))
    if kind == "percent":
        return percent(value)
    if kind == "points":
        return points(value)
    if kind == "number":
        return f"{value:g}"
    return str(value)


def _csv_value(value: Any, kind: str) -> Any:
    if value is None:
        return ""
    if kind == "money":
        cents = int(value)
        return f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}"
    if kind in ("percent", "points"):
        return round(float(value), 6)
    return value


@dataclass
class ReportTable:
    name: str  # a short id: "retention", "lift", "funnel", ...
    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)

    def shown(self) -> list[list[str]]:
        """The rows as people read them (money with separators, ratios in percent)."""
        return [[_show(v, c.kind) for v, c in zip(row, self.columns, strict=True)] for row in self.rows]

    def to_dicts(self) -> list[dict[str, str]]:
        return [dict(zip((c.name for c in self.columns), row, strict=True)) for row in self.shown()]

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        head = "| " + " | ".join(cell(c.name) for c in self.columns) + " |"
        rule = "|" + "|".join("---" if c.kind == "text" else "---:" for c in self.columns) + "|"
        body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.shown()]
        return (
            "\n".join([head, rule, *body])
            if body
            else head + "\n" + rule + "\n| " + " | ".join("" for _ in self.columns) + " |"
        )

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.name for c in self.columns])
        for row in self.rows:
            writer.writerow([_csv_value(v, c.kind) for v, c in zip(row, self.columns, strict=True)])
        return out.getvalue()


@dataclass
class Report:
    """A report: ``data`` is the JSON document; ``tables[0]`` is the one CSV gives."""

    kind: str  # retention | playbooks | surveys | health
    title: str
    as_of: str
    data: dict[str, Any]
    tables: list[ReportTable]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"report": self.kind, "title": self.title, "as_of": self.as_of, **self.data, "notes": self.notes}

    def json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)

    def csv(self) -> str:
        return self.tables[0].csv()

    def markdown(self) -> str:
        parts = [f"# {self.title}", f"As of {self.as_of}."]
        for table in self.tables:
            parts += [f"## {table.title}", table.markdown()]
        if self.notes:
            parts += ["## Notes", "\n".join(f"- {note}" for note in self.notes)]
        return "\n\n".join(parts) + "\n"


def _month_of(moment: datetime) -> date:
    return moment.date().replace(day=1)


def _start(month: date) -> datetime:
    return datetime.combine(month, time(0), tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def check_segment(s: Session, segment: str | None) -> None:
    """A NotFoundError naming the segments when no account is in ``segment``."""
    if segment is None:
        return
    known = sorted({v for (v,) in s.connection().execute(select(_ACCOUNT.c.segment).distinct()) if v})
    if segment not in known:
        listed = ", ".join(repr(v) for v in known) if known else "none: no account has a segment"
        raise NotFoundError(f"no account is in segment {segment!r}; the segments are {listed}")


def _of(segment: str | None) -> str:
    return f", segment {segment}" if segment else ""


def _currency_notes(found: Sequence[str], chosen: str | None, asked: str | None) -> list[str]:
    """Say which currency a report that adds money up is in, when the book has several (no conversion)."""
    others = [code for code in found if code != chosen]
    if asked is not None and chosen not in found:
        return [f"no revenue in {chosen}; the revenue is in {', '.join(found) or 'no currency yet'}"]
    if not others:
        return []
    if asked is None:
        return [
            f"the revenue is in {len(found)} currencies ({', '.join(found)}); this report is in {chosen}, the one "
            f"most accounts pay in (never converted). For another: --currency {others[0]}"
        ]
    return [f"only the accounts paying in {chosen}; the others pay in {', '.join(others)} (never converted)"]


# --------------------------------------------------------------------------------------------
# retention


def retention_report(
    s: Session, as_of: datetime, *, months: int = 12, segment: str | None = None, currency: str | None = None
) -> Report:
    """The MRR waterfall of the last ``months`` months up to the month of ``as_of`` (and no later than
    the last month with revenue), with each month's GRR and NRR (the cohort of 12 months before)
    and logo churn; money in cents of one currency (``flows.analytics.metrics``)."""
    check_segment(s, segment)
    found = currencies(s, segment)
    chosen = currency.upper() if currency else main_currency(s, segment)
    mrr = load_mrr(s, segment, currency=chosen) if chosen else {}
    columns = [
        Column("month"), Column("start MRR", "money"), Column("new", "money"), Column("expansion", "money"),
        Column("contraction", "money", short="contr."), Column("churn", "money"),
        Column("reactivation", "money", short="react."), Column("end MRR", "money"), Column("ARR", "money"),
        Column("GRR", "percent"), Column("NRR", "percent"), Column("logo churn", "percent"),
        Column("logos lost", "int"), Column("logos", "int"),
    ]  # fmt: skip
    table = ReportTable("retention", "MRR waterfall, GRR and NRR (12-month cohorts), logo churn", columns)
    span = revenue_months(mrr)
    title = f"Retention in {chosen or 'no currency'}{_of(segment)}"
    if span is None:
        data: dict[str, Any] = {
            "currency": chosen,
            "currencies": found,
            "segment": segment,
            "months": [],
            "logos": None,
        }
        empty = ["no revenue yet: `retain revenue import`"] if not found else _currency_notes(found, chosen, currency)
        return Report("retention", title, as_of.isoformat(), data, [table], empty)
    # up to the book's last month in any currency: a currency whose accounts all left shows it
    last = min(_month_of(as_of), max(span[1], last_revenue_month(s, segment) or span[1]))
    if last < span[0]:
        raise NotFoundError(f"no revenue up to {last:%Y-%m}: it starts in {span[0]:%Y-%m}")
    chosen_months = month_range(max(add_months(last, -(months - 1)), span[0]), last)
    rows = []
    for row in waterfall(mrr, chosen_months):
        cohort = cohort_retention(mrr, add_months(row.month, -12), 12)
        logos = logo_metrics(mrr, [row.month])
        rows.append({
            **row.to_dict(), "ending_arr": arr_cents(row.ending), "grr": cohort.grr, "nrr": cohort.nrr,
            "cohort": cohort.to_dict(), "logo_churn_rate": logos.churn_rate,
        })  # fmt: skip
        table.rows.append([
            f"{row.month:%Y-%m}", row.starting, row.new, row.expansion, -row.contraction, -row.churn,
            row.reactivation, row.ending, arr_cents(row.ending), cohort.grr, cohort.nrr, logos.churn_rate,
            row.churned_accounts, row.ending_accounts,
        ])  # fmt: skip
    overall = logo_metrics(mrr, chosen_months)
    notes = _currency_notes(found, chosen, currency)
    if span[0] > add_months(chosen_months[0], -12):
        notes.append(
            f"GRR and NRR need revenue 12 months before each month; the history starts in {span[0]:%Y-%m}, "
            "so earlier months show n/a"
        )
    if chosen_months[0] == span[0]:
        notes.append(f"{span[0]:%Y-%m} is the first month of the history: every account in it counts as new")
    document: dict[str, Any] = {
        "currency": chosen,
        "currencies": found,
        "segment": segment,
        "months": rows,
        "logos": overall.to_dict(),
    }
    return Report("retention", title, as_of.isoformat(), document, [table], notes)


# --------------------------------------------------------------------------------------------
# playbooks


def playbooks_report(
    s: Session,
    as_of: datetime,
    *,
    months: int | None = 12,
    window: timedelta = DEFAULT_LIFT_WINDOW,
    segment: str | None = None,
    playbooks: Iterable[str] | None = None,
    min_group: int = MIN_GROUP,
    currency: str | None = None,
) -> Report:
    """Per playbook, of the enrollments started in the last ``months`` months (all with None):
    enrolled and holdout, each outcome's rates and lift with its 95% interval and verdict, the ARR
    effect, and the funnel (``flows.analytics.attribution.playbook_impact``).

    Rates and lift are counts: every enrollment counts, whatever its currency. The ARR effect adds
    money up, so it is per currency (one row per playbook and currency), or only ``currency``'s."""
    check_segment(s, segment)
    since = _start(add_months(_month_of(as_of), -months)) if months else None
    impacts = playbook_impact(
        s,
        as_of,
        window=window,
        since=since,
        segment=segment,
        playbooks=playbooks,
        min_group=min_group,
        currency=currency,
    )
    lift_table = ReportTable(
        "lift",
        f"Enrolled vs holdout: outcomes within {window.days} days of enrollment",
        [
            Column("playbook"), Column("outcome"), Column("enrolled", "int", short="enr."),
            Column("holdout", "int", short="hold."), Column("enrolled rate", "percent", short="enr. %"),
            Column("holdout rate", "percent", short="hold. %"), Column("lift (points)", "points", short="lift pts"),
            Column("95% CI low", "points", short="CI low"), Column("95% CI high", "points", short="CI high"),
            Column("verdict", detail=True),
        ],
    )  # fmt: skip
    arr_table = ReportTable(
        "arr",
        "ARR change per enrollment within the window (in the accounts' own currency)",
        [
            Column("playbook"), Column("currency", short="cur."), Column("enrolled n", "int", short="enr. n"),
            Column("holdout n", "int", short="hold. n"), Column("enrolled", "money", short="enr. ARR"),
            Column("holdout", "money", short="hold. ARR"), Column("difference", "money", short="diff."),
            Column("95% CI low", "money", short="CI low"), Column("95% CI high", "money", short="CI high"),
            Column("verdict", detail=True),
        ],
    )  # fmt: skip
    funnel_table = ReportTable(
        "funnel",
        "Funnel of the enrolled (contacted) enrollments",
        [Column("playbook"), Column("stage"), Column("kind"), Column("reached", "int"), Column("share", "percent")],
    )
    notes = []
    for impact in impacts:
        for o in impact.outcomes:
            low, high = (o.interval.low, o.interval.high) if o.interval else (None, None)
            lift_table.rows.append([
                impact.playbook, o.label, o.enrolled, o.holdout, o.enrolled_rate, o.holdout_rate, o.lift, low, high,
                o.verdict,
            ])  # fmt: skip
        if not impact.outcomes:
            lift_table.rows.append([
                impact.playbook, "(none seen)", impact.enrolled, impact.holdout, None, None, None, None, None,
                "no outcome within the window yet",
            ])  # fmt: skip
        for a in impact.arr_by_currency:
            low_c, high_c = a.interval_cents if a.interval_cents else (None, None)
            arr_table.rows.append([
                impact.playbook, a.currency, a.enrolled, a.holdout, a.enrolled_mean_cents, a.holdout_mean_cents,
                a.difference_cents, low_c, high_c, a.verdict,
            ])  # fmt: skip
        for stage in impact.funnel:
            funnel_table.rows.append([impact.playbook, stage.stage, stage.kind, stage.reached, stage.share])
        notes += [f"{impact.playbook}: {note}" for note in impact.notes]
    if not impacts:
        notes.append("no enrollment yet in this period")
    shown = sorted({a.currency for impact in impacts for a in impact.arr_by_currency if a.currency})
    if currency is not None:
        notes.append(f"the ARR effect counts only the accounts paying in {currency.upper()} (rates and lift count all)")
    elif len(shown) > 1:
        notes.append(
            f"the ARR effect is per currency ({', '.join(shown)}; never converted), each over the accounts paying "
            "in it: one currency's groups are smaller than the playbook's. --currency CODE for one"
        )
    data = {
        "window_days": window.days,
        "currency": currency.upper() if currency else None,
        "currencies": shown,
        "since": since.isoformat() if since else None,
        "segment": segment,
        "min_group": min_group,
        "playbooks": [impact.to_dict() for impact in impacts],
    }
    title = f"Playbooks: enrolled vs holdout{_of(segment)}"
    return Report("playbooks", title, as_of.isoformat(), data, [lift_table, arr_table, funnel_table], notes)


# --------------------------------------------------------------------------------------------
# surveys


def surveys_report(s: Session, as_of: datetime, *, months: int = 12, segment: str | None = None) -> Report:
    """NPS, CSAT and CES per calendar month, the last ``months`` months up to ``as_of``
    (``flows.analytics.surveys.survey_summary``: NPS = % promoters - % detractors, CSAT = % satisfied,
    CES = the average)."""
    from flows.analytics.surveys import survey_summary

    check_segment(s, segment)
    last = _month_of(as_of)
    chosen = month_range(add_months(last, -(months - 1)), last)
    table = ReportTable(
        "surveys",
        "NPS, CSAT and CES by month",
        [
            Column("month"), Column("NPS", "number"), Column("NPS answers", "int"), Column("CSAT %", "number"),
            Column("CSAT answers", "int"), Column("CES", "number"), Column("CES answers", "int"),
        ],
    )  # fmt: skip
    rows = []
    for month in chosen:
        until = min(_start(add_months(month, 1)), as_of + timedelta(microseconds=1))
        summaries = {k: survey_summary(s, k, _start(month), segment, until=until) for k in ("nps", "csat", "ces")}
        rows.append({"month": f"{month:%Y-%m}", **summaries})
        table.rows.append([f"{month:%Y-%m}"] + [v for k in ("nps", "csat", "ces") for v in (
            summaries[k]["score"], summaries[k]["responses"])])  # fmt: skip
    since = _start(chosen[0])
    until = as_of + timedelta(microseconds=1)
    overall = {k: survey_summary(s, k, since, segment, until=until) for k in ("nps", "csat", "ces")}
    title = f"Surveys{_of(segment)}: {chosen[0]:%Y-%m} to {chosen[-1]:%Y-%m}"
    data = {"segment": segment, "months": rows, "overall": overall}
    notes = [] if any(o["responses"] for o in overall.values()) else ["no survey answers in this period"]
    return Report("surveys", title, as_of.isoformat(), data, [table], notes)


# --------------------------------------------------------------------------------------------
# health


def _health_at(s: Session, moment: datetime, segment: str | None) -> dict[int, tuple[float, str, datetime]]:
    """Each account's latest score at ``moment`` (no older than HEALTH_STALE): account -> (score, band, at)."""
    latest = (
        select(_HEALTH.c.account_id, func.max(_HEALTH.c.scored_at).label("at"))
        .where(_HEALTH.c.scored_at <= moment, _HEALTH.c.scored_at > moment - HEALTH_STALE)
        .group_by(_HEALTH.c.account_id)
        .subquery()
    )
    query = select(_HEALTH.c.account_id, _HEALTH.c.score, _HEALTH.c.band, _HEALTH.c.scored_at).join(
        latest, and_(latest.c.account_id == _HEALTH.c.account_id, latest.c.at == _HEALTH.c.scored_at)
    )
    if segment is not None:
        query = query.join(_ACCOUNT, _ACCOUNT.c.id == _HEALTH.c.account_id).where(_ACCOUNT.c.segment == segment)
    return {a: (float(score), band, at) for a, score, band, at in s.connection().execute(query)}


def health_report(
    s: Session, as_of: datetime, *, months: int = 12, segment: str | None = None, days: int = 30, movers: int = 10
) -> Report:
    """Health bands at the end of each of the last ``months`` months (and at ``as_of``), and the
    movers: accounts whose band changed, or whose score moved most, over the last ``days`` days."""
    check_segment(s, segment)
    last = _month_of(as_of)
    chosen = month_range(add_months(last, -(months - 1)), last)
    bands_table = ReportTable(
        "health",
        "Accounts by health band",
        [Column("at"), *(Column(b, "int") for b in BANDS), Column("scored", "int"), Column("red share", "percent")],
    )
    snapshots = []
    moments = [min(_start(add_months(m, 1)) - timedelta(microseconds=1), as_of) for m in chosen]
    for month, moment in zip(chosen, moments, strict=True):
        counts = Counter(band for _, band, _ in _health_at(s, moment, segment).values())
        scored = sum(counts.values())
        label = f"{month:%Y-%m}" if moment < as_of else f"{as_of:%Y-%m-%d} (as of)"
        snapshots.append({"at": label, "moment": moment.isoformat(), **{b: counts.get(b, 0) for b in BANDS}})
        bands_table.rows.append(
            [label, *(counts.get(b, 0) for b in BANDS), scored, counts.get("red", 0) / scored if scored else None]
        )
    now = _health_at(s, as_of, segment)
    then = _health_at(s, as_of - timedelta(days=days), segment)
    names = {
        a: (external, name, csm)
        for a, external, name, csm in s.connection().execute(
            select(_ACCOUNT.c.id, _ACCOUNT.c.external_id, _ACCOUNT.c.name, _ACCOUNT.c.csm_email)
        )
    }
    moves = []
    for account_id, (score, band, _) in now.items():
        before = then.get(account_id)
        previous_score, previous_band = (before[0], before[1]) if before else (None, None)
        change = round(score - previous_score, 1) if previous_score is not None else None
        moves.append((account_id, previous_band, band, previous_score, score, change))
    changed = [m for m in moves if m[1] is not None and m[1] != m[2]]
    by_change = sorted((m for m in moves if m[5] is not None), key=lambda m: m[5] or 0.0)
    picked = {m[0]: m for m in changed}
    for m in by_change[:movers] + by_change[::-1][:movers]:
        if m[5] and len(picked) < len(changed) + 2 * movers:
            picked.setdefault(m[0], m)
    rank = {BANDS[i]: i for i in range(len(BANDS))}
    movers_table = ReportTable(
        "movers",
        f"Movers over the last {days} days (band changes, then the largest score changes)",
        [
            Column("account"), Column("name"), Column("band then"), Column("band now"),
            Column("score then", "number"), Column("score now", "number"), Column("change", "number"), Column("CSM"),
        ],
    )  # fmt: skip
    ordered = sorted(
        picked.values(),
        key=lambda m: (m[1] == m[2], -(rank.get(m[2], 0) - rank.get(m[1] or m[2], 0)), m[5] if m[5] is not None else 0),
    )
    for account_id, band_then, band_now, score_then, score_now, change in ordered:
        external, name, csm = names.get(account_id, (str(account_id), "", None))
        movers_table.rows.append([external, name, band_then, band_now, score_then, score_now, change, csm or ""])
    current = Counter(band for _, band, _ in now.values())
    data = {
        "segment": segment,
        "days": days,
        "bands": {b: current.get(b, 0) for b in BANDS},
        "over_time": snapshots,
        "movers": movers_table.to_dicts(),
    }
    notes = [] if now else ["no health scores yet: `retain health run`"]
    title = f"Health{_of(segment)}"
    return Report("health", title, as_of.isoformat(), data, [bands_table, movers_table], notes)


# --------------------------------------------------------------------------------------------
# the weekly digest


def digest_week(as_of: datetime) -> tuple[str, datetime, datetime]:
    """The week a digest at ``as_of`` covers: the last whole ISO week (Monday 00:00 UTC to the next
    Monday) before the week of ``as_of``. Returns (``YYYY-Www``, start, end)."""
    day = as_of.astimezone(UTC).date()
    this_monday = day - timedelta(days=day.weekday())
    start = this_monday - timedelta(days=7)
    year, week, _ = start.isocalendar()
    return f"{year}-W{week:02d}", _start(start), _start(this_monday)


@dataclass
class WeeklyDigest:
    week: str
    start: datetime
    end: datetime
    as_of: datetime
    data: dict[str, Any]
    markdown: str

    @property
    def title(self) -> str:
        last = self.end - timedelta(days=1)
        return f"Customer success weekly {self.week} ({self.start:%a %d %b} to {last:%a %d %b %Y})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "week": self.week,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "as_of": self.as_of.isoformat(),
            **self.data,
            "markdown": self.markdown,
        }


def _listed(lines: Sequence[str], limit: int) -> str:
    if not lines:
        return "- none"
    shown = [f"- {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"- … and {len(lines) - limit} more")
    return "\n".join(shown)


def _counts(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"


@dataclass
class _WeekChanges:
    """What changed in the digest's week, counted from the tables."""

    enrolled: dict[str, Counter[str]]  # playbook -> enrolled / holdout
    delivered: dict[str, Counter[str]]  # playbook (or "(manual)") -> channel -> touches
    not_sent: Counter[str]  # touch status -> touches
    outcomes: Counter[str]  # "kind (source)" -> outcomes
    moves: dict[tuple[int, str], dict[str, Any]]  # revenue moves by (account, kind)
    goals: Counter[str]  # playbook -> goals reached

    @property
    def net_by_currency(self) -> dict[str, int]:
        """Money is added up per currency (each account's own; never converted)."""
        net: dict[str, int] = defaultdict(int)
        for m in self.moves.values():
            if m["kind"] in ARR_KINDS:
                net[m["currency"] or ""] += m["arr"]
        return net

    def by_channel(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for c in self.delivered.values():
            total.update(c)
        return total

    def sorted_moves(self) -> list[dict[str, Any]]:
        return sorted(self.moves.values(), key=lambda m: -abs(m["arr"]))


@dataclass
class _AtRisk:
    """Who is at risk at the digest's ``as_of``."""

    red: list[Any]
    falling: list[Any]
    detractors: list[Any]
    renewals: list[Any]


def _week_changes(conn: Connection, start: datetime, end: datetime, money_of: dict[int, str]) -> _WeekChanges:
    enrolled: dict[str, Counter[str]] = defaultdict(Counter)
    for playbook, holdout, n in conn.execute(
        select(_ENROLLMENT.c.playbook, _ENROLLMENT.c.holdout, func.count())
        .where(_ENROLLMENT.c.started_at >= start, _ENROLLMENT.c.started_at < end)
        .group_by(_ENROLLMENT.c.playbook, _ENROLLMENT.c.holdout)
    ):
        enrolled[playbook]["holdout" if holdout else "enrolled"] += n
    delivered: dict[str, Counter[str]] = defaultdict(Counter)
    for playbook, channel, n in conn.execute(
        select(_TOUCH.c.playbook, _TOUCH.c.channel, func.count())
        .where(_TOUCH.c.status == TouchStatus.DELIVERED, _TOUCH.c.delivered_at >= start, _TOUCH.c.delivered_at < end)
        .group_by(_TOUCH.c.playbook, _TOUCH.c.channel)
    ):
        delivered[playbook or "(manual)"][channel] += n
    not_sent: Counter[str] = Counter()
    for status, n in conn.execute(
        select(_TOUCH.c.status, func.count())
        .where(
            _TOUCH.c.status.in_([TouchStatus.SUPPRESSED, TouchStatus.FAILED, TouchStatus.UNKNOWN]),
            _TOUCH.c.created_at >= start,
            _TOUCH.c.created_at < end,
        )
        .group_by(_TOUCH.c.status)
    ):
        not_sent[status] += n
    changes = _WeekChanges(enrolled, delivered, not_sent, Counter(), {}, Counter())
    _count_outcomes(conn, start, end, money_of, changes)
    return changes


def _count_outcomes(
    conn: Connection, start: datetime, end: datetime, money_of: dict[int, str], changes: _WeekChanges
) -> None:
    """The week's outcomes; revenue outcomes are grouped into moves (one per account and kind)."""
    for account_id, kind, source, playbook, delta, note in conn.execute(
        select(
            _OUTCOME.c.account_id, _OUTCOME.c.kind, _OUTCOME.c.source, _OUTCOME.c.playbook,
            _OUTCOME.c.arr_delta_cents, _OUTCOME.c.note,
        ).where(_OUTCOME.c.occurred_at >= start, _OUTCOME.c.occurred_at < end)
    ):  # fmt: skip
        if source == "revenue":
            key = (account_id, (note or kind).split(" ", 1)[0])
            move = changes.moves.setdefault(
                key,
                {
                    "account_id": account_id,
                    "kind": kind,
                    "arr": 0,
                    "currency": money_of.get(account_id),
                    "playbooks": [],
                },
            )
            move["arr"] += delta or 0  # an outcome's rows share its ARR change: together they are it
            if playbook:
                move["playbooks"].append(playbook)
            continue
        changes.outcomes[f"{kind} ({source})"] += 1
        if source == "goal" and playbook:
            changes.goals[playbook] += 1
    for move in changes.moves.values():
        changes.outcomes[f"{move['kind']} (revenue)"] += 1


def _at_risk(
    conn: Connection,
    accounts: dict[int, Any],
    as_of: datetime,
    week: tuple[datetime, datetime],
    *,
    renewal_days: int,
    quiet_days: int,
    falling: float,
) -> _AtRisk:
    start, end = week
    live = [a for a in accounts.values() if a.status != AccountStatus.CHURNED]
    red = sorted((a for a in live if a.health == "red"), key=lambda a: (a.health_score or 0, a.external_id))
    falling_accounts = sorted(
        (a for a in live if a.health_trend is not None and a.health_trend <= -falling), key=lambda a: a.health_trend
    )
    detractors = conn.execute(
        select(_SURVEY.c.account_id, _SURVEY.c.score, _SURVEY.c.comment)
        .where(
            _SURVEY.c.kind == "nps", _SURVEY.c.score <= 6, _SURVEY.c.responded_at >= start, _SURVEY.c.responded_at < end
        )
        .order_by(_SURVEY.c.score, _SURVEY.c.responded_at)
    ).all()
    today = as_of.date()
    touched = {
        a
        for (a,) in conn.execute(
            select(_TOUCH.c.account_id)
            .where(
                _TOUCH.c.status == TouchStatus.DELIVERED,
                _TOUCH.c.delivered_at > as_of - timedelta(days=quiet_days),
                _TOUCH.c.delivered_at <= as_of,
            )
            .distinct()
        )
    }
    renewals = sorted(
        (
            a
            for a in live
            if a.renewal_date is not None
            and today <= a.renewal_date <= today + timedelta(days=renewal_days)
            and a.id not in touched
        ),
        key=lambda a: (a.renewal_date, a.external_id),
    )
    return _AtRisk(red, falling_accounts, list(detractors), renewals)


def _per_playbook(conn: Connection, start: datetime, end: datetime, changes: _WeekChanges) -> list[dict[str, Any]]:
    """What each playbook did in the week: enrollments, steps run, touches, goals, endings."""
    steps: Counter[str] = Counter()
    for playbook, n in conn.execute(
        select(_TIMELINE.c.playbook, func.count())
        .where(
            _TIMELINE.c.at >= start,
            _TIMELINE.c.at < end,
            _TIMELINE.c.step_id.is_not(None),
            _TIMELINE.c.kind.in_(STEP_EVENT_KINDS),
        )
        .group_by(_TIMELINE.c.playbook)
    ):
        steps[playbook] += n
    ended: dict[str, Counter[str]] = defaultdict(Counter)
    for playbook, status, outcome, n in conn.execute(
        select(_ENROLLMENT.c.playbook, _ENROLLMENT.c.status, _ENROLLMENT.c.outcome, func.count())
        .where(_ENROLLMENT.c.ended_at >= start, _ENROLLMENT.c.ended_at < end)
        .group_by(_ENROLLMENT.c.playbook, _ENROLLMENT.c.status, _ENROLLMENT.c.outcome)
    ):
        ended[playbook][outcome or status] += n
    enrolled, delivered, goals = changes.enrolled, changes.delivered, changes.goals
    playbooks = sorted(set(enrolled) | set(steps) | set(ended) | set(goals) | {p for p in delivered if p != "(manual)"})
    return [
        {
            "playbook": p,
            "enrolled": enrolled[p]["enrolled"],
            "holdout": enrolled[p]["holdout"],
            "steps_run": steps[p],
            "touches_delivered": sum(delivered[p].values()),
            "goals": goals[p],
            "ended": dict(ended[p]),
        }
        for p in playbooks
    ]


def _digest_data(
    changes: _WeekChanges, risk: _AtRisk, per_playbook: list[dict[str, Any]], accounts: dict[int, Any]
) -> dict[str, Any]:
    net_by_currency = changes.net_by_currency
    net_arr = sum(net_by_currency.values()) if len(net_by_currency) <= 1 else None
    return {
        "changed": {
            "enrollments": {p: dict(c) for p, c in sorted(changes.enrolled.items())},
            "touches_delivered": dict(changes.by_channel()),
            "touches_not_sent": dict(changes.not_sent),
            "outcomes": dict(changes.outcomes),
            "revenue_moves": [
                {**m, "account": accounts[m["account_id"]].external_id if m["account_id"] in accounts else None}
                for m in changes.sorted_moves()
            ],
            "net_arr_delta_cents": net_arr,  # None when the moves are in several currencies
            "net_arr_delta_cents_by_currency": dict(sorted(net_by_currency.items())),
        },
        "at_risk": {
            "red_health": [a.external_id for a in risk.red],
            "falling_health": [a.external_id for a in risk.falling],
            "detractors": [{"account_id": d.account_id, "score": d.score} for d in risk.detractors],
            "renewals_without_touch": [a.external_id for a in risk.renewals],
        },
        "playbooks": per_playbook,
    }


def _changes_markdown(changes: _WeekChanges, who: Callable[[int], str], limit: int) -> list[str]:
    enrolled, not_sent, outcomes, moves = changes.enrolled, changes.not_sent, changes.outcomes, changes.moves
    by_channel = changes.by_channel()
    total_enrolled = sum(sum(c.values()) for c in enrolled.values())
    total_holdout = sum(c["holdout"] for c in enrolled.values())
    net_text = (
        ", ".join(
            f"{'+' if cents >= 0 else ''}{money(cents)}{' ' + code if code else ''}"
            for code, cents in sorted(changes.net_by_currency.items())
        )
        or "+0.00"
    )
    lines = [
        "## What changed this week",
        "\n".join(
            [
                f"- **{total_enrolled}** new enrollments ({total_holdout} holdout): "
                + _counts({p: sum(c.values()) for p, c in enrolled.items()}),
                f"- **{sum(by_channel.values())}** touches delivered: {_counts(by_channel)}"
                + (f"; not sent: {_counts(not_sent)}" if not_sent else ""),
                f"- **{sum(outcomes.values())}** outcomes: {_counts(outcomes)}",
                f"- revenue moves: **{len(moves)}**, net ARR {net_text}"
                + " (monthly moves are dated the 1st of their month)",
            ]
        ),
    ]
    if moves:
        rows = "\n".join(
            f"| {who(m['account_id'])} | {m['kind']} | {'+' if m['arr'] >= 0 else ''}{money(m['arr'])}"
            f"{' ' + m['currency'] if m['currency'] else ''} | "
            f"{', '.join(sorted(set(m['playbooks']))) or '-'} |"
            for m in changes.sorted_moves()[:limit]
        )
        extra = f"\n\n… and {len(moves) - limit} more" if len(moves) > limit else ""
        lines.append(
            f"### Revenue moves\n\n| account | outcome | ARR change | playbooks |\n|---|---|---:|---|\n{rows}{extra}"
        )
    return lines


def _risk_markdown(
    risk: _AtRisk, who: Callable[[int], str], limit: int, *, renewal_days: int, quiet_days: int, falling: float
) -> list[str]:
    red, falling_accounts, detractors, renewals = risk.red, risk.falling, risk.detractors, risk.renewals
    return [
        "## Who is at risk",
        f"### Red health ({len(red)})\n\n"
        + _listed(
            [f"{who(a.id)}: score {a.health_score:.0f}" if a.health_score is not None else who(a.id) for a in red],
            limit,
        ),
        f"### Health falling {falling:g}+ points in 30 days ({len(falling_accounts)})\n\n"
        + _listed(
            [f"{who(a.id)}: {a.health_trend:+.0f} to {a.health_score or 0:.0f} ({a.health})" for a in falling_accounts],
            limit,
        ),
        f"### Detractors this week ({len(detractors)})\n\n"
        + _listed(
            [f"{who(d.account_id)}: NPS {d.score}" + (f' ("{d.comment}")' if d.comment else "") for d in detractors],
            limit,
        ),
        f"### Renewals in the next {renewal_days} days with no touch in {quiet_days} days ({len(renewals)})\n\n"
        + _listed([f"{who(a.id)}: renews {a.renewal_date:%Y-%m-%d}" for a in renewals], limit),
    ]


def _playbooks_markdown(per_playbook: list[dict[str, Any]]) -> list[str]:
    if not per_playbook:
        return ["## What each playbook did", "No playbook ran this week."]
    rows = "\n".join(
        f"| {p['playbook']} | {p['enrolled']} | {p['holdout']} | {p['steps_run']} | {p['touches_delivered']} | "
        f"{p['goals']} | {_counts(p['ended']) if p['ended'] else '-'} |"
        for p in per_playbook
    )
    return [
        "## What each playbook did",
        "| playbook | enrolled | holdout | steps run | touches delivered | goals reached | ended |\n"
        "|---|---:|---:|---:|---:|---:|---|\n" + rows,
    ]


def weekly_digest(
    s: Session, as_of: datetime, *, renewal_days: int = 60, quiet_days: int = 30, falling: float = 10.0, limit: int = 10
) -> WeeklyDigest:
    """The weekly customer-success digest in Markdown: what changed in the last whole week (new
    enrollments, touches, outcomes, revenue moves), who is at risk at ``as_of`` (red health, health
    falling by ``falling`` points or more, detractors of the week, renewals within ``renewal_days``
    with no touch delivered in ``quiet_days``), and what each playbook did."""
    week, start, end = digest_week(as_of)
    conn = s.connection()
    accounts = {
        row.id: row
        for row in conn.execute(
            select(
                _ACCOUNT.c.id, _ACCOUNT.c.external_id, _ACCOUNT.c.name, _ACCOUNT.c.csm_email, _ACCOUNT.c.status,
                _ACCOUNT.c.health, _ACCOUNT.c.health_score, _ACCOUNT.c.health_trend, _ACCOUNT.c.renewal_date,
            )
        )
    }  # fmt: skip

    def who(account_id: int) -> str:
        a = accounts.get(account_id)
        if a is None:
            return f"account {account_id}"
        return f"{a.name} ({a.external_id})" + (f", CSM {a.csm_email}" if a.csm_email else "")

    changes = _week_changes(conn, start, end, account_currencies(s))
    risk = _at_risk(
        conn, accounts, as_of, (start, end), renewal_days=renewal_days, quiet_days=quiet_days, falling=falling
    )
    per_playbook = _per_playbook(conn, start, end, changes)
    data = _digest_data(changes, risk, per_playbook, accounts)

    last_day = end - timedelta(days=1)
    lines = [
        f"# Customer success weekly: {week}",
        f"{start:%a %d %b} to {last_day:%a %d %b %Y} (UTC). At-risk lists as of {as_of:%Y-%m-%d %H:%M} UTC.",
        *_changes_markdown(changes, who, limit),
        *_risk_markdown(risk, who, limit, renewal_days=renewal_days, quiet_days=quiet_days, falling=falling),
        *_playbooks_markdown(per_playbook),
    ]
    return WeeklyDigest(week, start, end, as_of, data, "\n\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# posting the digest once


@dataclass(frozen=True)
class PostResult:
    key: str
    channel: str
    status: str  # posted | already posted
    detail: str | None = None


def _payload(digest: WeeklyDigest | Digest, channel: str, to: str | None) -> dict[str, Any]:
    if channel == "slack":
        return {"kind": "slack", "channel": to or "#customer-success", "text": digest.markdown}
    if channel == "email":
        if not to:
            raise RetainError("posting the digest by email needs --to (one or more addresses, comma-separated)")
        return {
            "kind": "email",
            "to": to,
            "subject": digest.title,
            "text": digest.markdown,
            "html": markdown_to_html(digest.markdown),
        }
    if channel == "file":
        return {"kind": "digest", "title": digest.title, "to": to, "text": digest.markdown}
    raise RetainError(f"the digest can be posted to slack, email or file, not {channel!r}")


def _ledger(path: Path) -> dict[str, dict[str, Any]]:
    """Marks of the JSON-lines ledger that kept posted digests before they were rows (migration
    0005): read only, so a week posted before the upgrade is not posted again."""
    marks: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        if line.strip():
            mark = json.loads(line)
            marks[mark["key"]] = mark
    return marks


def post_digest(
    digest: WeeklyDigest,
    channel: Channel,
    *,
    engine: Engine,
    to: str | None = None,
    now: datetime | None = None,
    ledger: Path | None = None,
) -> PostResult:
    """Post the digest through ``channel`` once: under the key ``weekly:<YYYY-Www>:<channel>[:<to>]``,
    a ``digest_post`` row marked ``sending`` then ``posted``. The key is the row's primary key, so
    of several posters (on any machine) one posts and the others find it taken. A key already
    posted is not posted again. A key left ``sending`` (a crash mid-post, or another poster right
    now) is posted again only through a channel that drops repeats of a key; otherwise it is an
    error to look into, because it may have gone out. ``ledger``: the file of older versions."""
    key = f"weekly:{digest.week}:{channel.name}" + (f":{to}" if to else "")
    return post_once(key, digest, channel, engine=engine, to=to, now=now, ledger=ledger)


@dataclass(frozen=True)
class Digest:
    """Any digest to post once: a title (the email's subject) and its Markdown."""

    title: str
    markdown: str


def post_once(
    key: str,
    digest: WeeklyDigest | Digest,
    channel: Channel,
    *,
    engine: Engine,
    to: str | None = None,
    now: datetime | None = None,
    ledger: Path | None = None,
) -> PostResult:
    """Post a digest through ``channel`` once under ``key`` (a ``digest_post`` row: see
    :func:`post_digest`); the daily ``retain today`` digest of each CSM uses it too."""
    payload = _payload(digest, channel.name, to)
    moment = now or datetime.now(UTC)
    posts = table_of(DigestPost)
    legacy = _ledger(ledger).get(key) if ledger is not None else None
    with engine.begin() as conn:
        previous = conn.execute(select(posts.c.status, posts.c.started_at).where(posts.c.key == key)).first()
        if previous is None and legacy is not None:  # carried over from the old ledger file, once
            at = datetime.fromisoformat(legacy["at"])
            legacy_row = {
                "key": key,
                "channel": channel.name,
                "status": legacy["status"],
                "detail": legacy.get("detail"),
            }
            conn.execute(insert(posts), {**legacy_row, "started_at": at if at.tzinfo else at.replace(tzinfo=UTC)})
            previous = conn.execute(select(posts.c.status, posts.c.started_at).where(posts.c.key == key)).first()
    if previous is not None and previous.status == "posted":
        return PostResult(key, channel.name, "already posted", f"posted at {previous.started_at.isoformat()}")
    if previous is not None and previous.status == "sending" and not channel.dedupes_by_key:
        raise IntegrationError(
            f"the digest {key} was being posted at {previous.started_at.isoformat()} when that run stopped (or "
            f"another run is posting it now): it may have gone out. Check {channel.name}; to post it anyway, "
            f"delete the row of key {key!r} from the digest_post table"
        )
    if not _claim_digest(engine, key, channel.name, moment, previous.status if previous else None):
        return PostResult(key, channel.name, "already posted", "another run is posting it at this moment")

    def mark(status: str, detail: str | None = None, provider_id: str | None = None) -> None:
        with engine.begin() as conn:
            conn.execute(
                update(posts)
                .where(posts.c.key == key)
                .values(status=status, detail=detail, provider_id=provider_id, finished_at=datetime.now(UTC))
            )

    try:
        receipt = asyncio.run(_send(channel, Delivery(key, channel.name, payload)))
    except RetryableError as exc:
        mark("failed", str(exc))
        raise IntegrationError(f"the digest was not posted ({exc}); try again later") from exc
    except IntegrationError as exc:
        mark("failed", str(exc))
        raise
    mark("posted", provider_id=receipt.provider_id)
    return PostResult(key, channel.name, "posted", receipt.provider_id)


def _claim_digest(engine: Engine, key: str, channel: str, at: datetime, seen: str | None) -> bool:
    """Mark the key ``sending`` for this run: a new row, or the row in the state just seen.
    False when another run changed it in between (it is theirs)."""
    posts = table_of(DigestPost)
    try:
        with engine.begin() as conn:
            if seen is None:
                conn.execute(insert(posts), {"key": key, "channel": channel, "status": "sending", "started_at": at})
                return True
            taken = conn.execute(
                update(posts)
                .where(posts.c.key == key, posts.c.status == seen)
                .values(status="sending", started_at=at, finished_at=None, detail=None)
            )
            return bool(taken.rowcount)
    except IntegrityError:  # another poster inserted the same key first
        return False


async def _send(channel: Channel, delivery: Delivery) -> Any:
    try:
        return await channel.send(delivery)
    finally:
        await channel.aclose()


# --------------------------------------------------------------------------------------------
# Prefect: artifacts and the report flow


def _artifact_key(*parts: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    text = "-".join(parts).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-")


def artifacts_of(report: Report) -> list[dict[str, Any]]:
    """What :func:`publish_artifacts` creates: one table artifact per table, one markdown artifact."""
    made: list[dict[str, Any]] = [
        {
            "type": "table",
            "key": _artifact_key("report", report.kind, table.name),
            "table": table.to_dicts(),
            "description": f"{report.title}: {table.title} (as of {report.as_of})",
        }
        for table in report.tables
        if table.rows
    ]
    made.append(
        {
            "type": "markdown",
            "key": _artifact_key("report", report.kind),
            "markdown": report.markdown(),
            "description": f"{report.title} (as of {report.as_of})",
        }
    )
    return made
