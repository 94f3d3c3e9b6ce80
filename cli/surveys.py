"""``retain surveys …``: record an answer, import answers from CSV, summarize NPS, CSAT and CES."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ._app import app, console, state
from ._output import Format, TableOrJson, echo_json, refuse_import

surveys_app = typer.Typer(
    help="Record survey answers (NPS, CSAT, CES), import them from CSV, summarize them.", no_args_is_help=True
)
app.add_typer(surveys_app, name="surveys")

_NAMES = {"nps": "NPS", "csat": "CSAT", "ces": "CES"}


class Kind(StrEnum):
    nps = "nps"
    csat = "csat"
    ces = "ces"


@surveys_app.command("record")
def record(
    ctx: typer.Context,
    score: Annotated[int, typer.Option("--score", help="The answer: NPS 0-10, CSAT 1-5, CES 1-7.", show_default=False)],
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="The account's external id.", metavar="ID")
    ] = None,
    kind: Annotated[Kind | None, typer.Option("--kind", help="The survey.", case_sensitive=False)] = None,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Who answered (a contact of the account).", metavar="EMAIL")
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="What they wrote.")] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="When they answered, ISO 8601 (UTC unless a zone is given). Default: now."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="The token of a survey link (t=…): account, contact and kind come from it."),
    ] = None,
) -> None:
    """Record one survey answer, by --account and --kind, or by the --token of the survey link it came through.

    The answer goes into the account's timeline and into last_survey("nps") for playbooks."""
    from flows.analytics.surveys import nps_group, record_answer
    from models import session, utcnow

    engine = state(ctx).engine()
    with session(engine) as s:
        response = record_answer(
            s,
            score=score,
            kind=kind.value if kind else None,
            account=account,
            contact_email=contact,
            token=token,
            comment=comment,
            responded_at=at,
            now=utcnow(),
        )
    label = f"{_NAMES[response.kind]} {response.score}"
    if response.kind == "nps":
        label += f" ({nps_group(response.score)})"
    linked = " (linked to its survey email)" if response.touch_id else ""
    console.print(f"recorded {label} at {response.responded_at:%Y-%m-%d %H:%M} UTC{linked}", markup=False)


@surveys_app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="The CSV file (UTF-8).", metavar="FILE.csv", exists=True, dir_okay=False, show_default=False
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file and count; write nothing.")] = False,
) -> None:
    """Record the survey answers of a CSV file.

    Columns (header names ignore case, spaces and punctuation): token (from the survey link) OR account_external_id and kind (nps, csat, ces); score (NPS 0-10, CSAT 1-5, CES 1-7); optional comment, responded_at (ISO 8601, UTC unless a zone is given; default now), contact_email.

    All or nothing: if any row is bad, nothing is written and every bad row is listed as FILE: row N, column 'x': message (the header is row 1). An answer already recorded exactly so is left alone, so the same export can be imported twice.
    """
    from flows.analytics.surveys import import_answers
    from models import DataImportError, utcnow

    engine = state(ctx).engine()
    try:
        result = import_answers(engine, file, dry_run=dry_run, now=utcnow())
    except DataImportError as exc:
        refuse_import(exc)
    verb = ("to insert", "to replace") if result.dry_run else ("inserted", "replaced")
    where = f"{result.file} (dry run, nothing written)" if result.dry_run else result.file
    console.print(
        f"{where}: {result.inserted} {verb[0]}, {result.updated} {verb[1]}, {result.unchanged} unchanged",
        markup=False,
        soft_wrap=True,
    )
    if result.ignored_columns:
        console.print(f"ignored columns: {', '.join(map(repr, result.ignored_columns))}", markup=False, soft_wrap=True)


def _score(summary: dict[str, Any]) -> str:
    value = summary["score"]
    if value is None:
        return "-"
    if summary["kind"] == "nps":
        return f"{value:+g}"
    if summary["kind"] == "csat":
        return f"{value:g}% satisfied"
    return f"{value:g} average"


def _breakdown(summary: dict[str, Any]) -> str:
    if not summary["responses"]:
        return ""
    return " · ".join(f"{group} {n} ({summary['shares'][group]:g}%)" for group, n in summary["groups"].items())


@surveys_app.command("summary")
def summary(
    ctx: typer.Context,
    kind: Annotated[
        Kind | None, typer.Option("--kind", help="One survey; default: all three.", case_sensitive=False)
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Answers from this date or time on (ISO 8601).", metavar="DATE")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Answers before this date or time (ISO 8601).", metavar="DATE")
    ] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Only accounts of this segment.")] = None,
    fmt: TableOrJson = Format.table,
) -> None:
    """NPS (% promoters - % detractors), CSAT (% satisfied, 4-5) and CES (average, 1-7) of the answers recorded."""
    from flows.analytics.surveys import KINDS, survey_summary
    from flows.engine.tick import parse_as_of
    from models import session

    engine = state(ctx).engine()
    start = parse_as_of(since) if since else None
    end = parse_as_of(until) if until else None
    kinds = [kind.value] if kind else list(KINDS)
    with session(engine) as s:
        summaries = [survey_summary(s, k, start, segment, until=end) for k in kinds]
    if fmt is Format.json:
        echo_json(summaries)
        return
    title = "Surveys"
    if segment:
        title += f", segment {segment}"
    if start or end:
        title += f", {start:%Y-%m-%d} on" if start and not end else ""
        title += f", before {end:%Y-%m-%d}" if end and not start else ""
        title += f", {start:%Y-%m-%d} to {end:%Y-%m-%d}" if start and end else ""
    table = Table(title=title, title_justify="left")
    for column in ("survey", "answers", "accounts", "score", "breakdown"):
        table.add_column(column, justify="right" if column in ("answers", "accounts") else "left")
    for item in summaries:
        table.add_row(
            _NAMES[item["kind"]],
            str(item["responses"]),
            str(item["accounts"]),
            _score(item),
            Text(_breakdown(item)),
        )
    console.print(table)
    if kind:
        spread = "  ".join(f"{score}: {n}" for score, n in summaries[0]["distribution"].items())
        console.print(f"answers by score: {spread}", markup=False, soft_wrap=True)
