"""``retain report …``: retention, playbooks (lift and funnel), surveys, health, the weekly digest,
and recording revenue outcomes. Definitions: docs/reports.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ._app import app, console, err_console, state
from ._output import Format, MarkdownOrJson, TableJsonOrCsv, echo_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from flows.reports.reports import Report, ReportTable

report_app = typer.Typer(
    help="Reports: retention, playbook lift and funnels, surveys, health, and the weekly digest.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")

#: ``flows.analytics.attribution.MIN_GROUP``, written out so that building the CLI needs none of the
#: analytics; tests/cli/test_startup.py holds the two equal
MIN_GROUP = 30


class Post(StrEnum):
    slack = "slack"
    email = "email"
    file = "file"


def _print(text: str, *, err: bool = False, style: str | None = None) -> None:
    (err_console if err else console).print(text, markup=False, soft_wrap=True, style=style)


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
CurrencyOption = Annotated[
    str | None,
    typer.Option(
        "--currency",
        metavar="CODE",
        help="Add money up in this currency only (revenue is never converted).",
        show_default="several: the one most accounts pay in (retention); each in turn (ARR effect)",
    ),
]
AsOfOption = Annotated[
    str | None, typer.Option("--as-of", help="Report as of this (simulated) time, ISO 8601. Default: now.")
]


def _emit(report: Report, fmt: Format, chart: Path | None) -> None:
    if chart is not None:
        _draw(report, chart)  # first: a chart that cannot be drawn is said before the report scrolls by
    if fmt is Format.json:
        echo_text(report.json())
    elif fmt is Format.csv:
        echo_text(report.csv())
    else:
        _print_tables(report)


def _draw(report: Report, path: Path) -> None:
    from flows.reports.charts import NothingToChart, save

    try:
        save(report, path)
    except NothingToChart as exc:
        _print(f"no chart written: {exc}", err=True, style="yellow")
        return
    _print(f"chart written to {path}", err=True)


def _print_tables(report: Report) -> None:
    _print(f"{report.title} (as of {report.as_of})", style="bold")
    for t in report.tables:
        for part in table_renderables(t, console.width):
            console.print(part)
        console.print()
    for note in report.notes:
        _print(f"note: {note}")


#: a text column after the first is a key (never wraps, repeated in every part of a split table) when
#: its values are at most this long; longer text (a name, an email address) wraps instead
_KEY_TEXT = 20
#: the narrowest a wrapping text column is made before the table is split
_MIN_TEXT = 12


@dataclass
class _View:
    """A column as a terminal shows it (two report columns "X low" and "X high" become one "X")."""

    name: str
    short: str | None
    kind: str
    cells: list[str]
    detail: bool = False
    key: bool = False
    wraps_at: int = 0  # a cell that may break: its narrowest readable width

    def header(self, short: bool) -> str:
        return self.short if short and self.short else self.name

    def longest(self) -> int:
        return max((len(cell) for cell in self.cells), default=0)

    def need(self, short: bool, roomy: bool = False) -> int:
        """The narrowest this column can be and still read well (``roomy``: a range on one line)."""
        words = max((len(word) for word in self.header(short).split()), default=1)
        if self.key:
            return max(len(self.header(short)), self.longest())
        if self.wraps_at:
            return max(self.longest() if roomy else self.wraps_at, words)
        if self.kind == "text":
            return max(min(self.longest(), _MIN_TEXT), words, 1)
        return max(self.longest(), words, 1)


def _views(t: ReportTable) -> list[_View]:
    shown = t.shown()
    views: list[_View] = []
    columns = list(enumerate(t.columns))
    skip: set[int] = set()
    for i, c in columns:
        if i in skip:
            continue
        cells = [row[i] for row in shown]
        nxt = t.columns[i + 1] if i + 1 < len(t.columns) else None
        if c.name.endswith(" low") and nxt is not None and nxt.name == c.name[: -len("low")] + "high":
            highs = [row[i + 1] for row in shown]
            pairs = zip(cells, highs, strict=True)
            joined = [f"{lo} to {hi}" if (lo, hi) != ("n/a", "n/a") else "n/a" for lo, hi in pairs]
            wraps = max((len(f"{lo} to") for lo in cells), default=3)
            wraps = max([wraps, *(len(hi) for hi in highs)])
            views.append(
                _View(c.name[: -len(" low")], "CI" if "CI" in c.name else None, "range", joined, wraps_at=wraps)
            )
            skip.add(i + 1)
            continue
        views.append(_View(c.name, c.short, c.kind, cells, detail=c.detail))
    body = [v for v in views if not v.detail]
    for position, v in enumerate(body):
        if v.kind != "text" or (position > 0 and v.longest() > _KEY_TEXT):
            break
        v.key = True
    if body and not any(v.key for v in body):
        body[0].key = True
    return views


def table_renderables(t: ReportTable, width: int) -> list[RenderableType]:
    """A report table laid out for a terminal ``width`` columns wide, for people.

    Key columns (the first, and short text columns right after it: playbook, outcome, month) never
    wrap and are never squeezed; numbers never wrap; "X low" and "X high" show as one "X" column
    ("a to b"); headers wrap at spaces, then shorten (``Column.short``). Long text (``Column.detail``:
    a verdict) is listed under the table, one "key: text" line per row. A table still too wide is
    grouped by its first column (the values it shares within a group go to the group's heading), and
    then split into parts that repeat the keys.
    """
    if not t.rows:
        return [Text(f"{t.title}: none", style="italic")]
    views = _views(t)
    rows = len(t.rows)
    body = [v for v in views if not v.detail]
    detail = [v for v in views if v.detail]

    def fits(chosen: list[_View], short: bool, roomy: bool = False) -> bool:
        return sum(v.need(short, roomy) for v in chosen) + 3 * len(chosen) + 1 <= width

    def build(chosen: list[_View], indices: list[int], short: bool, title: str | None) -> Table:
        roomy = fits(chosen, short, roomy=True)
        # fixed widths, worked out here: each column gets what it needs, then what is left goes to
        # putting headers (and ranges) on one line, narrowest first
        widths = [v.need(short, roomy) for v in chosen]
        spare = width - (sum(widths) + 3 * len(chosen) + 1)
        natural = [max(len(v.header(short)), v.longest()) for v in chosen]
        for n in sorted(range(len(chosen)), key=lambda n: natural[n] - widths[n]):
            grow = min(max(natural[n] - widths[n], 0), spare)
            widths[n] += grow
            spare -= grow
        table = Table(title=title, title_justify="left")
        for v, w in zip(chosen, widths, strict=True):
            # numbers and ranges fit their width; only headers (at spaces) and long text wrap
            table.add_column(
                v.header(short),
                justify="right" if v.kind != "text" else "left",
                no_wrap=v.key,
                width=w,
                overflow="fold",
            )
        for r in indices:
            table.add_row(*(Text(v.cells[r]) for v in chosen))
        return table

    def laid_out(chosen: list[_View], indices: list[int], title: str | None) -> list[RenderableType]:
        for short in (False, True):
            if fits(chosen, short):
                return [build(chosen, indices, short, title)]
        keys = [v for v in chosen if v.key]
        others = [v for v in chosen if not v.key]

        def split(limit: int) -> list[list[_View]]:
            chunks: list[list[_View]] = [[]]
            for v in others:
                if chunks[-1] and sum(u.need(True) + 3 for u in [*keys, *chunks[-1], v]) + 1 > limit:
                    chunks.append([])
                chunks[-1].append(v)
            return chunks

        # as few parts as fit, and then as even as they can be
        fewest = len(split(width))
        chunks = next(chunks for limit in range(1, width + 1) if len(chunks := split(limit)) <= fewest)
        return [
            build(
                [v for v in chosen if v.key or v in chunk],
                indices,
                True,
                f"{title or ''} ({n}/{len(chunks)})".strip(),
            )
            for n, chunk in enumerate(chunks, start=1)
        ]

    def verdicts(keys: list[_View], indices: list[int]) -> list[RenderableType]:
        lines: list[Text] = []
        for v in detail:
            if len(detail) > 1:
                lines.append(Text(f"{v.name}:", style="bold"))
            for r in indices:
                line = Text("  " + " · ".join(k.cells[r] for k in keys) + ": ", style="bold")
                line.append(v.cells[r], style="")
                lines.append(line)
        return [Group(*lines)] if lines else []

    everything = list(range(rows))
    first = body[0] if body else None
    grouped = (
        first is not None
        and first.key
        and not fits(body, False)
        and len(set(first.cells)) < rows
        and len([v for v in body if v.key]) > 1
    )
    if not grouped or first is None:
        return [*laid_out(body, everything, t.title), *verdicts([v for v in body if v.key], everything)]
    # one small table per value of the first column; what is the same within every group is said once
    groups: dict[str, list[int]] = {}
    for r, value in enumerate(first.cells):
        groups.setdefault(value, []).append(r)
    shared = [
        v for v in body[1:] if not v.key and all(len({v.cells[r] for r in indices}) == 1 for indices in groups.values())
    ]
    rest = [v for v in body[1:] if v not in shared]
    keys = [v for v in rest if v.key]
    parts: list[RenderableType] = [Text(t.title, style="italic")]
    for value, indices in groups.items():
        said = ", ".join(f"{v.name} {v.cells[indices[0]]}" for v in shared)
        heading = Text(f"{first.name} {value}", style="bold")
        if said:
            heading.append(f": {said}", style="")
        parts += [heading, *laid_out(rest, indices, None), *verdicts(keys, indices), Text("")]
    return parts


def _engine(ctx: typer.Context) -> Engine:
    return state(ctx).engine()


@report_app.command("retention")
def retention(
    ctx: typer.Context,
    fmt: TableJsonOrCsv = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    currency: CurrencyOption = None,
    as_of: AsOfOption = None,
) -> None:
    """The MRR waterfall month by month, GRR and NRR of 12-month cohorts, and logo churn.

    Money is never converted: with revenue in several currencies and no --currency, the report is in
    the one most accounts pay in, and says so."""
    from sqlmodel import Session

    from flows.engine.tick import parse_as_of
    from flows.reports.reports import retention_report

    moment = parse_as_of(as_of)
    with Session(_engine(ctx)) as s:
        report = retention_report(s, moment, months=months, segment=segment, currency=currency)
    _emit(report, fmt, chart)


@report_app.command("playbooks")
def playbooks(
    ctx: typer.Context,
    fmt: TableJsonOrCsv = Format.table,
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
    currency: CurrencyOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Per playbook, enrollments of the last --months months: enrolled vs holdout on each outcome
    (rates, lift with its 95% interval, a verdict in plain words), the ARR effect, and the funnel.

    Rates and lift count enrollments, whatever the currency. The ARR effect adds money up: it is shown
    per currency (each over the accounts paying in it), or for --currency only."""
    from sqlmodel import Session

    from flows.analytics.attribution import record_revenue_outcomes
    from flows.engine.tick import parse_as_of
    from flows.reports.reports import playbooks_report
    from models import session

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
            currency=currency,
        )
    _emit(report, fmt, chart)


@report_app.command("surveys")
def surveys(
    ctx: typer.Context,
    fmt: TableJsonOrCsv = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    as_of: AsOfOption = None,
) -> None:
    """NPS, CSAT and CES month by month, with the number of answers."""
    from sqlmodel import Session

    from flows.engine.tick import parse_as_of
    from flows.reports.reports import surveys_report

    moment = parse_as_of(as_of)
    with Session(_engine(ctx)) as s:
        report = surveys_report(s, moment, months=months, segment=segment)
    _emit(report, fmt, chart)


@report_app.command("health")
def health(
    ctx: typer.Context,
    fmt: TableJsonOrCsv = Format.table,
    chart: ChartOption = None,
    months: MonthsOption = 12,
    segment: SegmentOption = None,
    days: Annotated[int, typer.Option("--days", min=1, max=365, help="Movers: compare with this many days ago.")] = 30,
    as_of: AsOfOption = None,
) -> None:
    """Accounts by health band at the end of each month, and the movers of the last --days days."""
    from sqlmodel import Session

    from flows.engine.tick import parse_as_of
    from flows.reports.reports import health_report

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
    from flows.analytics.attribution import AttributionWindow, record_revenue_outcomes
    from flows.engine.tick import parse_as_of
    from models import session

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
    fmt: MarkdownOrJson = Format.markdown,
    as_of: AsOfOption = None,
) -> None:
    """The weekly customer-success digest (Markdown) of the last whole week (Monday to Sunday, UTC):
    what changed, who is at risk, what each playbook did. --post sends it once: a second run for the
    same week and channel does not post again."""
    from sqlmodel import Session

    from flows.analytics.attribution import record_revenue_outcomes
    from flows.engine.tick import parse_as_of
    from flows.reports.reports import post_digest, weekly_digest
    from integrations.channels import build_channel
    from models import session

    st = state(ctx)
    moment = parse_as_of(as_of)
    if detect:
        with session(st.engine()) as s:
            record_revenue_outcomes(s, moment)
    with Session(st.engine()) as s:
        digest = weekly_digest(s, moment)
    text = digest.markdown if fmt is Format.markdown else json.dumps(digest.to_dict(), indent=2, default=str)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        _print(f"digest {digest.week} written to {output}", err=True)
    else:
        echo_text(text)
    if post is not None:
        channel = build_channel(post.value, st.settings)
        result = post_digest(
            digest, channel, engine=st.engine(), ledger=st.settings.outbox_dir / "digests.jsonl", to=to
        )
        _print(f"digest {result.key}: {result.status}", err=True)
