"""``retain run``, ``retain play`` and ``retain status``: ticks, ad-hoc plays, and what happened."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._app import app, console, state
from ._output import Format, TableOrJson, echo_json
from ._who import AsCsm, csm_identity
from .playbooks import find_playbook


@app.command("run")
def run(
    ctx: typer.Context,
    playbook: Annotated[str, typer.Argument(help="The playbook id.")],
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Run at this (simulated) time, ISO 8601. Default: now.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what the tick would do; keep nothing, send nothing.")
    ] = False,
    prefect: Annotated[
        bool, typer.Option("--prefect/--no-prefect", help="Run as a Prefect flow run (the default) or in-process.")
    ] = True,
) -> None:
    """Run one tick of a playbook: what the scheduler runs. Running the same tick twice adds nothing."""
    from flows.engine.tick import parse_as_of, tick
    from integrations.channels import build_channels

    st = state(ctx)
    pb = find_playbook(ctx, playbook)
    engine = st.engine()
    moment = parse_as_of(as_of)
    if prefect:
        from flows.orchestration.runtime import run_flow_in_process

        report = run_flow_in_process(st.settings, pb.id, moment.isoformat(), dry_run)
        line = report["line"]
    else:
        from integrations.channels import PREFECT_BLOCKS

        PREFECT_BLOCKS.set(False)  # nothing in this run touches Prefect, not even a secret lookup
        result = tick(engine, pb, moment, dry_run=dry_run, channels=None if dry_run else build_channels(st.settings))
        report, line = result.to_dict(), result.line()
    console.print(line, markup=False)
    for error in report.get("errors", [])[:10]:
        console.print(f"[yellow]error:[/yellow] {error}", soft_wrap=True)


@app.command("play")
def play(
    ctx: typer.Context,
    playbook: Annotated[str, typer.Argument(help="The playbook id.")],
    account: Annotated[str, typer.Option("--account", "-a", help="The account's external id.")],
    force: Annotated[bool, typer.Option("--force", help="Enroll even if the account is outside the audience.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would happen; keep nothing, send nothing.")
    ] = False,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Send now even during the contact's quiet hours (every other rule of the contact policy still "
            "holds); the timeline records who overrode them.",
        ),
    ] = False,
    by: AsCsm = None,
) -> None:
    """Run a playbook for one account now (a CSM's ad-hoc play) and print what happened.

    The contact policy applies as it does to scheduled ticks: a touch that may not go now (quiet
    hours in the contact's time zone, business days, holidays, caps, survey fatigue) is deferred
    and the outbox sends it later."""
    from flows.engine.play import run_play
    from integrations.channels import build_channels

    st = state(ctx)
    pb = find_playbook(ctx, playbook)
    result = run_play(
        st.engine(),
        pb,
        account,
        force=force,
        dry_run=dry_run,
        channels=build_channels(st.settings),
        override_quiet_hours=now,
        by=csm_identity(by),
    )
    for line in result:
        console.print(line, markup=False, soft_wrap=True)


@app.command("status")
def status(ctx: typer.Context, fmt: TableOrJson = Format.table) -> None:
    """Per playbook: enrolled, active, holdout, the revisions the active enrollments run, completed by
    outcome, and touches by channel and state."""
    from flows.reports.status import playbook_status

    data = playbook_status(state(ctx).engine())
    if fmt is Format.json:
        echo_json({"playbooks": {playbook: row.to_dict() for playbook, row in data.items()}})
        return
    table = Table(title="Playbooks")
    table.add_column("playbook", no_wrap=True)
    for column in ("enrolled", "active", "holdout"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("revision", no_wrap=True)  # of the active enrollments, with how many run it
    table.add_column("ended, by outcome")
    table.add_column("touches, by channel", ratio=1)  # the widest: what room is left is its
    for playbook, row in sorted(data.items()):
        ended = ", ".join(f"{k} {v}" for k, v in sorted(row.ended.items()))
        touches = "\n".join(  # a line per channel
            f"{channel}: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
            for channel, states in sorted(row.touches.items())
        )
        revisions = "\n".join(f"{revision[:8]} {n}" for revision, n in sorted(row.revisions.items()))
        table.add_row(
            playbook,
            str(row.enrolled),
            str(row.active),
            str(row.holdout),
            revisions or "-",
            ended or "-",
            touches or "-",
        )
    console.print(table)
    if not data:
        console.print("nothing has run yet: try `retain demo` or `retain run PLAYBOOK`")
