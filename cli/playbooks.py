"""``retain playbooks …``: validate, list, show and the JSON Schema."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ._app import app, console, state
from ._output import Format, TextOrJson, echo_json, echo_text

if TYPE_CHECKING:
    from models import Problem
    from playbooks import CompiledPlaybook

playbooks_app = typer.Typer(help="Write, check and read playbooks.", no_args_is_help=True)
app.add_typer(playbooks_app, name="playbooks")

#: the JSON Schema for editors, shipped inside the ``playbooks`` package (the repository's root holds
#: a copy for the playbooks' modelines; a test keeps both equal to the models)
SCHEMA_FILE = "playbook.schema.json"
#: the JSON Schema of sources.yaml, shipped beside it
SOURCES_SCHEMA_FILE = "sources.schema.json"


@playbooks_app.command("validate")
def validate(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Playbook files or folders. Default: the playbooks folder.")
    ] = None,
    fmt: TextOrJson = Format.text,
) -> None:
    """Check playbooks and report every error at once as FILE:LINE:COL: message. Exit 1 on any error."""
    from playbooks import validate_paths

    targets = paths or [state(ctx).playbooks_dir]
    for target in targets:
        if not target.exists():
            raise typer.BadParameter(f"no such file or folder: {target}", param_hint="PATHS")
    from playbooks import sources_problems

    named_sources = [t for t in targets if t.is_file() and t.name in ("sources.yaml", "sources.yml")]
    compiled, problems = validate_paths([t for t in targets if t not in named_sources])
    problems += _folder_files_problems(targets)
    for path in named_sources:
        problems += sources_problems(path)
    if fmt is Format.json:
        echo_json(
            {
                "valid": not problems,
                "playbooks": [{"playbook": pb.id, "file": pb.file, "revision": pb.revision} for pb in compiled],
                "errors": [p.to_dict() for p in problems],
            }
        )
    else:
        for problem in problems:
            console.print(problem.format(with_snippet=True), markup=False, soft_wrap=True)
        files = len({p.file for p in problems})
        if problems:
            console.print(
                f"{len(problems)} error{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}",
                style="red",
                soft_wrap=True,
            )
        else:
            names = ", ".join(pb.id for pb in compiled) or "none found"
            console.print(
                f"{len(compiled)} playbook{'s' * (len(compiled) != 1)} valid: {names}", style="green", soft_wrap=True
            )
    if problems:
        raise typer.Exit(1)


def _folder_files_problems(targets: list[Path]) -> list[Problem]:
    """A playbooks folder's contact policy, health model and sources are checked with its playbooks."""
    from playbooks import health_problems, policy_problems, sources_file, sources_problems

    problems: list[Problem] = []
    for folder in (t for t in targets if t.is_dir()):
        if (folder / "policy.yaml").exists():
            problems += policy_problems(folder / "policy.yaml")
        if (folder / "health.yaml").exists():
            problems += health_problems(folder / "health.yaml")
        if (sources := sources_file(folder)) is not None:
            problems += sources_problems(sources)
    return problems


@playbooks_app.command("list")
def list_playbooks(ctx: typer.Context) -> None:
    """List the playbooks of the playbooks folder, with their schedule and revision."""
    from playbooks import validate_paths

    folder = state(ctx).playbooks_dir
    compiled, problems = validate_paths([folder])
    table = Table(title=f"Playbooks in {folder}")
    for column in ("playbook", "name", "lifecycle", "schedule", "steps", "holdout", "revision"):
        table.add_column(column)
    for pb in sorted(compiled, key=lambda p: p.id):
        spec = pb.spec
        when = f"{spec.schedule.cron} ({spec.schedule.timezone})" if spec.schedule else "by hand"
        table.add_row(
            spec.playbook,
            spec.name,
            spec.lifecycle,
            when,
            str(len(spec.steps)),
            f"{spec.entry.holdout:.0%}",
            pb.revision,
        )
    console.print(table)
    if problems:
        bad = sorted({p.file for p in problems})
        console.print(
            f"[red]{len(bad)} file(s) do not validate:[/red] {', '.join(bad)} (run `retain playbooks validate`)",
            soft_wrap=True,
        )
        raise typer.Exit(1)


def find_playbook(ctx: typer.Context, name: str) -> CompiledPlaybook:
    """A playbook of the playbooks folder by id (or file name); its own file's problems are
    reported, and the other files are not validated (a broken sibling cannot stop it)."""
    from playbooks import load_playbook

    return load_playbook(state(ctx).playbooks_dir, name)


@playbooks_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The playbook id.")],
    graph: Annotated[bool, typer.Option("--graph", help="Print a Mermaid flowchart instead of the outline.")] = False,
) -> None:
    """Show a playbook as a readable outline (or a Mermaid flowchart with --graph)."""
    from models import format_duration
    from playbooks import mermaid, step_summary

    pb = find_playbook(ctx, name)
    spec = pb.spec
    if graph:
        echo_text(mermaid(spec))
        return
    out = [f"[bold]{spec.name}[/bold]  ({spec.playbook}, {spec.lifecycle}, revision {pb.revision})"]
    if spec.description:
        out.append(spec.description.strip())
    if spec.schedule:
        out.append(f"[bold]schedule[/bold]  {spec.schedule.cron} in {spec.schedule.timezone}")
    out.append(f"[bold]audience[/bold]  {spec.audience.strip()}")
    entry = spec.entry
    out.append(
        f"[bold]entry[/bold]     re-entry {entry.reentry}; holdout {entry.holdout:.0%}; contacts: {entry.contacts or 'the primary contact'}"
    )
    if spec.goal:
        within = f" within {format_duration(spec.goal.within)}" if spec.goal.within else ""
        out.append(f"[bold]goal[/bold]      {spec.goal.when}{within} -> {spec.goal.outcome}")
    if spec.exit_when:
        out.append(f"[bold]exit when[/bold] {spec.exit_when}")
    out.append("[bold]steps[/bold]")
    for i, step in enumerate(spec.steps, 1):
        out.append(f"  {i:>2}. [cyan]{step.id}[/cyan] ({step.kind}) {step_summary(step)}")
    console.print("\n".join(out), soft_wrap=True)


@playbooks_app.command("simulate")
def simulate_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The playbook id.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Start of the simulation, ISO 8601; in the past, a backtest: each tick reads the data as it stood "
            "then. Default: now.",
        ),
    ] = None,
    days: Annotated[
        int,
        typer.Option(
            "--days",
            min=0,
            max=730,
            help="How many days to simulate: ticks on the playbook's schedule (at most one per 6 hours), or daily without one.",
        ),
    ] = 30,
    fmt: TextOrJson = Format.text,
) -> None:
    """Preview a playbook over the whole book: who would enter, which steps they would reach, the
    touches by channel, and what the contact policy would defer or suppress and why. Nothing is
    kept and nothing is sent: it runs on a scratch copy with recording channels.

    Each tick reads the book as it stood at its moment (revenue state, lifecycle dates, events, usage, tickets, survey answers), so a window in the past replays what the playbook would have done then: a backtest.
    """
    from flows.engine.simulate import simulate
    from flows.engine.tick import delivery_policy, parse_as_of
    from playbooks import load_policy

    st = state(ctx)
    pb = find_playbook(ctx, name)
    delivery = delivery_policy([pb], load_policy(st.playbooks_dir))
    result = simulate(st.engine(), pb, parse_as_of(as_of), days, delivery)
    if fmt is Format.json:
        echo_json(result.to_dict())
        return
    console.print(
        f"[bold]{pb.spec.name}[/bold] ({pb.id}@{pb.revision}): {days} days from {result.start}, nothing kept, nothing sent",
        soft_wrap=True,
    )
    console.print(f"{len(result.entered)} accounts would enter ({result.holdout} in the holdout)", soft_wrap=True)
    entered = Table(title="Who would enter (first 20)")
    for column in ("account", "name", "on", "holdout"):
        entered.add_column(column)
    for row in result.entered[:20]:
        entered.add_row(row["account"], row["name"], row["on"], "yes" if row["holdout"] else "")
    if result.entered:
        console.print(entered)
    steps = Table(title="Steps reached (enrollments)")
    steps.add_column("step")
    steps.add_column("enrollments", justify="right")
    for step_id, n in result.steps.items():
        steps.add_row(step_id, str(n))
    console.print(steps)
    touches = Table(title="Touches by channel")
    touches.add_column("channel")
    touches.add_column("states")
    for channel, states in result.touches.items():
        touches.add_row(channel, ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    console.print(touches)
    if result.held_back:
        held = Table(title="Held back by the contact policy (first 30)")
        for column in ("account", "step", "state", "why"):
            held.add_column(column)
        for row in result.held_back[:30]:
            held.add_row(row["account"] or "", row["step"] or "", row["state"], row["why"] or "")
        console.print(held)
    if result.outcomes:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        console.print(f"outcomes: {outcomes}", markup=False, soft_wrap=True)
    for error in result.errors[:10]:
        console.print(f"[yellow]error:[/yellow] {error}", soft_wrap=True)


@playbooks_app.command("schema")
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of printing.")
    ] = None,
    sources: Annotated[
        bool, typer.Option("--sources", help="The schema of sources.yaml (the SQL sources) instead of playbooks'.")
    ] = False,
) -> None:
    """Print (or write) the JSON Schema that editors use to check playbooks (or, with --sources,
    sources.yaml) as you type."""
    text = schema_text(SOURCES_SCHEMA_FILE if sources else SCHEMA_FILE)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", markup=False, soft_wrap=True)
    else:
        echo_text(text)


def schema_text(name: str = SCHEMA_FILE) -> str:
    """A JSON Schema shipped with Retain (inside the installed ``playbooks`` package)."""
    return resources.files("playbooks").joinpath(name).read_text(encoding="utf-8")
