"""``retain report …``: retention, playbooks (lift and funnel), surveys, health, the weekly digest,
and recording revenue outcomes. Definitions: docs/reports.md."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.attribution import MIN_GROUP, AttributionWindow, record_revenue_outcomes
from flows.reports import (
    Report,
    health_report,
    playbooks_report,
    post_digest,
    retention_report,
    surveys_report,
    weekly_digest,
)
from flows.tick import parse_as_of
from integrations.registry import build_channel
from models import session

from ._app import app, console, err_console, state

report_app = typer.Typer(
    help="Reports: retention, playbook lift and funnels, surveys, health, and the weekly digest.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class Post(StrEnum):
    slack = "slack"
    email = "email"
    file = "file"


def _print(text: str, *, err: bool = False, style: str | None = None) -> None:
    (err_console if err else console).print(text, markup=False, soft_wrap=True, style=style)


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format", case_sensitive=False, help="table for people, json for scripts, csv (the first table) for sheets."
    ),
]
ChartOption = Annotated[
    Path | None,
    typer.Option(
        "--chart",
        metavar="FILE.png|FILE.html",
        help="Also draw the report: a PNG, or an HTML page with the chart and the tables.",
        dir_okay=False,
    ),
]
MonthsOption = Annotated[int, typer.Option("--months", min=1, max=120, help="How many months back.")]
SegmentOption = Annotated[
    str | None, typer.Option("--segment", help="Only the accounts of this segment.", show_default="all")
]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Report as of this (simulated) time, ISO 8601. Default: now.")
]


def _emit(report: Report, fmt: Format, chart: Path | None) -> None:
    if chart is not None:
        _draw(report, chart)  # first: a chart that cannot be drawn is said before the report scrolls by
    if fmt is Format.json:
        typer.echo(report.json())
    elif fmt is Format.csv:
        typer.echo(report.csv(), nl=False)
    else:
        _print_tables(report)


def _draw(report: Report, path: Path) -> None:
    from flows.charts import NothingToChart, save

    try:
        save(report, path)
    except NothingToChart as exc:
        _print(f"no chart written: {exc}", err=True, style="yellow")
        return
    _print(f"chart written to {path}", err=True)


def _print_tables(report: Report) -> None:
    _print(f"{report.title} (as of {report.as_of})", style="bold")
    for t in report.tables:
        table = Table(title=t.title, title_justify="left")
        for column in t.columns:
            numeric = column.kind != "text"
            # numbers never wrap; text (a verdict) folds
            table.add_column(column.name, justify="right" if numeric else "left", no_wrap=numeric, overflow="fold")
        for row in t.shown():
            table.add_row(*(Text(cell) for cell in row))
        console.print(table)
    for note in report.notes:
        _print(f"note: {note}")


def _engine(ctx: typer.Context) -> Engine:
    return state(ctx).engine()


@report_app.command("retention")
def retention(
    ctx: typer.Context,
    fmt: FormatOption = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    currency: Annotated[
        str | None, typer.Option("--currency", metavar="CODE", help="The currency, when revenue is in several.")
    ] = None,
    as_of: AsOfOption = None,
) -> None:
    """The MRR waterfall month by month, GRR and NRR of 12-month cohorts, and logo churn."""
    moment = parse_as_of(as_of)
    with Session(_engine(ctx)) as s:
        report = retention_report(s, moment, months=months, segment=segment, currency=currency)
    _emit(report, fmt, chart)


@report_app.command("playbooks")
def playbooks(
    ctx: typer.Context,
    fmt: FormatOption = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    playbook: Annotated[
        list[str] | None, typer.Option("--playbook", "-p", help="Only this playbook (repeatable).")
    ] = None,
    window_days: Annotated[
        int, typer.Option("--window-days", min=1, max=730, help="Count outcomes this many days after enrollment.")
    ] = 120,
    min_group: Annotated[
        int, typer.Option("--min-group", min=1, help="Fewer enrollments than this in a group: too few to tell.")
    ] = MIN_GROUP,
    detect: Annotated[
        bool,
        typer.Option("--detect/--no-detect", help="Record revenue outcomes first (idempotent), or only read."),
    ] = True,
    as_of: AsOfOption = None,
) -> None:
    """Per playbook, enrollments of the last --months months: enrolled vs holdout on each outcome
    (rates, lift with its 95% interval, a verdict in plain words), the ARR effect, and the funnel."""
    moment = parse_as_of(as_of)
    engine = _engine(ctx)
    if detect:
        with session(engine) as s:
            _print(record_revenue_outcomes(s, moment).line(), err=True)
    with Session(engine) as s:
        report = playbooks_report(
            s,
            moment,
            months=months,
            window=timedelta(days=window_days),
            segment=segment,
            playbooks=playbook or None,
            min_group=min_group,
        )
    _emit(report, fmt, chart)


@report_app.command("surveys")
def surveys(
    ctx: typer.Context,
    fmt: FormatOption = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    as_of: AsOfOption = None,
) -> None:
    """NPS, CSAT and CES month by month, with the number of answers."""
    moment = parse_as_of(as_of)
    with Session(_engine(ctx)) as s:
        report = surveys_report(s, moment, months=months, segment=segment)
    _emit(report, fmt, chart)


@report_app.command("health")
def health(
    ctx: typer.Context,
    fmt: FormatOption = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    days: Annotated[int, typer.Option("--days", min=1, max=365, help="Movers: compare with this many days ago.")] = 30,
    as_of: AsOfOption = None,
) -> None:
    """Accounts by health band at the end of each month, and the movers of the last --days days."""
    moment = parse_as_of(as_of)
    with Session(_engine(ctx)) as s:
        report = health_report(s, moment, months=months, segment=segment, days=days)
    _emit(report, fmt, chart)


@report_app.command("outcomes")
def outcomes(
    ctx: typer.Context,
    attribution_days: Annotated[
        int,
        typer.Option(
            "--attribution-days", min=0, max=365, help="Credit enrollments that ended at most this many days before."
        ),
    ] = 30,
    as_of: AsOfOption = None,
) -> None:
    """Record revenue outcomes (renewed, expanded, contracted, churned, reactivated) from monthly MRR,
    attributed to the enrollments running then. Running it again changes nothing."""
    moment = parse_as_of(as_of)
    window = AttributionWindow(after_end=timedelta(days=attribution_days))
    with session(_engine(ctx)) as s:
        result = record_revenue_outcomes(s, moment, window=window)
    _print(result.line())


@report_app.command("weekly")
def weekly(
    ctx: typer.Context,
    post: Annotated[
        Post | None,
        typer.Option("--post", case_sensitive=False, help="Also post it (once per week and channel)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Where to post: a Slack #channel (default #customer-success) or email addresses."),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option("--detect/--no-detect", help="Record revenue outcomes first (idempotent), or only read."),
    ] = True,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE.md", help="Write the Markdown here instead of printing it.", dir_okay=False
        ),
    ] = None,
    as_of: AsOfOption = None,
) -> None:
    """The weekly customer-success digest (Markdown) of the last whole week (Monday to Sunday, UTC):
    what changed, who is at risk, what each playbook did. --post sends it once: a second run for the
    same week and channel does not post again."""
    st = state(ctx)
    moment = parse_as_of(as_of)
    if detect:
        with session(st.engine()) as s:
            record_revenue_outcomes(s, moment)
    with Session(st.engine()) as s:
        digest = weekly_digest(s, moment)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(digest.markdown, encoding="utf-8")
        _print(f"digest {digest.week} written to {output}", err=True)
    else:
        typer.echo(digest.markdown, nl=False)
    if post is not None:
        channel = build_channel(post.value, st.settings)
        result = post_digest(digest, channel, ledger=st.settings.outbox_dir / "digests.jsonl", to=to)
        _print(f"digest {result.key}: {result.status}", err=True)
