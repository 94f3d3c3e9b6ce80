"""``retain run``, ``retain play`` and ``retain status``: ticks, ad-hoc plays, and what happened."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from flows.engine.tick import parse_as_of, tick
from integrations.channels.registry import build_channels
from models import Enrollment, EnrollmentStatus, Touch
from models.tables import holdout_bucket  # noqa: F401  (re-exported for scripts)

from ._app import app, console, state
from .playbooks import find_playbook


class Format(StrEnum):
    table = "table"
    json = "json"


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
    st = state(ctx)
    pb = find_playbook(ctx, playbook)
    engine = st.engine()
    moment = parse_as_of(as_of)
    if prefect:
        from flows.orchestration.runtime import run_flow_in_process

        report = run_flow_in_process(st.settings, pb.id, moment.isoformat(), dry_run)
        line = report["line"]
    else:
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
    by: Annotated[
        str | None,
        typer.Option(
            "--by", envvar="RETAIN_CSM", help="Who runs this play, for the timeline. Default: RETAIN_CSM, else $USER."
        ),
    ] = None,
) -> None:
    """Run a playbook for one account now (a CSM's ad-hoc play) and print what happened.

    The contact policy applies as it does to scheduled ticks: a touch that may not go now (quiet
    hours in the contact's time zone, business days, holidays, caps, survey fatigue) is deferred
    and the outbox sends it later."""
    from flows.engine.play import run_play

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
        by=by or os.environ.get("USER") or None,
    )
    for line in result:
        console.print(line, markup=False, soft_wrap=True)


@app.command("status")
def status(
    ctx: typer.Context,
    fmt: Annotated[Format, typer.Option("--format", help="table for people, json for scripts.")] = Format.table,
) -> None:
    """Per playbook: enrolled, active, holdout, completed by outcome, and touches by channel and state."""
    engine = state(ctx).engine()
    e = Enrollment.__table__  # type: ignore[attr-defined]
    t = Touch.__table__  # type: ignore[attr-defined]
    data: dict[str, dict[str, object]] = {}
    with engine.connect() as conn:
        for pb, status_, holdout, outcome, n in conn.execute(
            select(e.c.playbook, e.c.status, e.c.holdout, e.c.outcome, func.count()).group_by(
                e.c.playbook, e.c.status, e.c.holdout, e.c.outcome
            )
        ):
            row = data.setdefault(pb, {"enrolled": 0, "active": 0, "holdout": 0, "ended": {}, "touches": {}})
            row["enrolled"] += n  # type: ignore[operator]
            if holdout:
                row["holdout"] += n  # type: ignore[operator]
            if status_ == EnrollmentStatus.ACTIVE:
                row["active"] += n  # type: ignore[operator]
            else:
                key = outcome or status_
                row["ended"][key] = row["ended"].get(key, 0) + n  # type: ignore[index,union-attr,attr-defined]
        for pb, channel, status_, n in conn.execute(
            select(t.c.playbook, t.c.channel, t.c.status, func.count()).group_by(t.c.playbook, t.c.channel, t.c.status)
        ):
            row = data.setdefault(
                pb or "(manual)", {"enrolled": 0, "active": 0, "holdout": 0, "ended": {}, "touches": {}}
            )
            row["touches"].setdefault(channel, {})[status_] = n  # type: ignore[union-attr,attr-defined]
    if fmt is Format.json:
        console.print_json(json.dumps({"playbooks": data}))
        return
    table = Table(title="Playbooks")
    for column in ("playbook", "enrolled", "active", "holdout", "ended (by outcome)", "touches (by channel: state)"):
        table.add_column(column)
    for pb, row in sorted(data.items()):
        ended = ", ".join(f"{k} {v}" for k, v in sorted(row["ended"].items()))  # type: ignore[attr-defined]
        touches = "; ".join(
            f"{ch}: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
            for ch, states in sorted(row["touches"].items())  # type: ignore[attr-defined]
        )
        table.add_row(pb, str(row["enrolled"]), str(row["active"]), str(row["holdout"]), ended or "-", touches or "-")
    console.print(table)
    if not data:
        console.print("nothing has run yet: try `retain demo` or `retain run PLAYBOOK`")
