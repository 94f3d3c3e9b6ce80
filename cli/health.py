"""``retain health …``: score every account's health, show one account's, check health.yaml."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json

health_app = typer.Typer(
    help="Score account health (playbooks/health.yaml), show an account's health, check the definition.",
    no_args_is_help=True,
)
app.add_typer(health_app, name="health")

_BANDS = ("green", "yellow", "red")


@health_app.command("run")
def run(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Score as of this (simulated) time, ISO 8601. Default: now.")
    ] = None,
    prefect: Annotated[
        bool, typer.Option("--prefect/--no-prefect", help="Run as a Prefect flow run (the default) or in-process.")
    ] = True,
) -> None:
    """Score every account that is not churned: a history row each, account.health / health_score /
    health_trend updated, a timeline event where the band changed. Running the same --as-of twice
    changes nothing more."""
    from flows.analytics.health import HealthReport, run_health
    from flows.engine.tick import parse_as_of
    from playbooks import health_file

    st = state(ctx)
    engine = st.engine()
    moment = parse_as_of(as_of)
    definition = health_file(st.playbooks_dir)
    if prefect:
        from flows.orchestration.health import health
        from flows.orchestration.runtime import prefect_environment

        with prefect_environment(st.settings):
            report = HealthReport(**health(as_of=moment.isoformat()))
    else:
        report = run_health(engine, definition, moment)
    console.print(report.line(), markup=False, soft_wrap=True)
    for change, n in sorted(report.changes.items()):
        console.print(f"  {change}: {n}", markup=False)
    for measure, n in sorted(report.skipped.items()):
        console.print(f"  {measure} skipped for lack of data: {n} account{'s' * (n != 1)}", markup=False)


@health_app.command("validate")
def validate(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(help="The health definition. Default: health.yaml of the playbooks folder.", show_default=False),
    ] = None,
) -> None:
    """Check a health definition; every problem is listed at its file:line:col."""
    from playbooks import health_file, health_problems, load_health

    path = file or health_file(state(ctx).playbooks_dir)
    problems = health_problems(path)
    for problem in problems:
        err_console.print(problem.format(with_snippet=True), markup=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    spec = load_health(path)
    weights = ", ".join(f"{name} {m.weight:g}" for name, m in spec.measures.used().items())
    console.print(
        f"{path}: ok ({weights}; green from {spec.bands.green:g}, yellow from {spec.bands.yellow:g})",
        markup=False,
        soft_wrap=True,
    )


def _band(band: str | None, score: float | None = None) -> Text:
    label = band or "none"
    if score is not None:
        label += f" ({score:g})"
    return Text(label, style=band if band in _BANDS else "")


def _trend(value: float | None) -> str:
    return "" if value is None else f"{value:+g}"


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _components(components: dict[str, dict[str, Any]]) -> Table:
    from flows.analytics.health import describe_value

    table = Table(title="Components of the latest score", title_justify="left", title_style="bold")
    for column in ("measure", "value", "points", "weight", "share of score", "note"):
        table.add_column(column, justify="right" if column in ("points", "weight", "share of score") else "left")
    for name, c in components.items():
        skipped = c.get("skipped")
        table.add_row(
            name,
            describe_value(name, c.get("value")),
            "" if c.get("points") is None else f"{c['points']:g}",
            f"{c['weight']:g}",
            "" if c.get("share") is None else f"{c['share'] * 100:.0f}%",
            Text(f"skipped: {skipped}; the other weights scaled up" if skipped else "", style="yellow"),
        )
    return table


@health_app.command("show")
def show(
    ctx: typer.Context,
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The account's external id.", show_default=False)],
    history: Annotated[int, typer.Option("--history", min=1, help="How many past scores to show.", metavar="N")] = 12,
    fmt: TableOrJson = Format.table,
) -> None:
    """Show an account's health: band, score and trend, what the latest score is made of, and its history."""
    from flows.reports.accounts import health_history

    account, rows = health_history(state(ctx).engine(), external_id, scores=history)
    if fmt is Format.json:
        document = {
            "account": account.external_id,
            "health": account.health,
            "health_score": account.health_score,
            "health_trend": account.health_trend,
            "history": [
                {
                    "scored_at": r.scored_at.isoformat(),
                    "score": r.score,
                    "band": r.band,
                    "trend": r.trend,
                    "components": r.components,
                }
                for r in rows
            ],
        }
        echo_json(document)
        return
    heading = Text.assemble(
        (account.name, "bold"),
        " (",
        (account.external_id, "cyan"),
        ") · health ",
        _band(account.health, account.health_score),
    )
    if account.health_trend is not None:
        heading.append(f" · trend {_trend(account.health_trend)}")
    if not rows:
        console.print(Group(heading, Text("no health score yet (`retain health run`)")))
        return
    past = Table(title="History", title_justify="left", title_style="bold")
    for column in ("scored", "score", "band", "trend"):
        past.add_column(column)
    for r in rows:
        past.add_row(_when(r.scored_at), f"{r.score:g}", _band(r.band), _trend(r.trend))
    console.print(Group(heading, Text(), _components(rows[-1].components), past))
