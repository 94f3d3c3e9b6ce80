"""``retain usage import``, ``retain tickets import``, ``retain events import`` and
``retain touches reply``: a team's own product and support data in, and replies logged by hand."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import app, console, err_console, state
from ._output import refuse_import
from ._who import AsCsm, csm_identity

usage_app = typer.Typer(help="Import product usage (per account, metric and day, or raw events).", no_args_is_help=True)
tickets_app = typer.Typer(help="Import support tickets.", no_args_is_help=True)
events_app = typer.Typer(
    help="Import product events in the Segment spec (identify, group, track, page, screen, alias).",
    no_args_is_help=True,
)
touches_app = typer.Typer(help="Log what happened to a touch (a reply).", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
app.add_typer(tickets_app, name="tickets")
app.add_typer(events_app, name="events")
app.add_typer(touches_app, name="touches")

_FILE = typer.Argument(
    help="The file: CSV, or JSON Lines when it ends in .jsonl or .ndjson.",
    metavar="FILE",
    exists=True,
    dir_okay=False,
    readable=True,
    show_default=False,
)
_DRY_RUN = typer.Option("--dry-run", help="Check the file and count what would change; write nothing.")


def _run(load: Callable[[], Any]) -> None:
    from models import DataImportError

    try:
        result = load()
    except DataImportError as exc:
        refuse_import(exc)
    console.print(result.line(), markup=False, soft_wrap=True)


@usage_app.command("import")
def import_usage_command(
    ctx: typer.Context, file: Annotated[Path, _FILE], dry_run: Annotated[bool, _DRY_RUN] = False
) -> None:
    """Import usage: daily values (account_external_id, metric, day, value) or raw events
    (account_external_id, metric, timestamp[, value]) summed per UTC day.

    A day's stored value is replaced by the file's, so importing again changes nothing. All or
    nothing: any bad row (or unknown account) and nothing is written; every bad row is listed.
    """
    from integrations.sources import import_usage

    engine = state(ctx).engine()
    _run(lambda: import_usage(engine, file, dry_run=dry_run))


@tickets_app.command("import")
def import_tickets_command(
    ctx: typer.Context, file: Annotated[Path, _FILE], dry_run: Annotated[bool, _DRY_RUN] = False
) -> None:
    """Import support tickets, matched by external_id: external_id, account_external_id, opened_at;
    optional subject, status (open, pending, solved), priority (low, normal, high, urgent),
    closed_at, satisfaction (1-5).

    All or nothing: any bad row (or unknown account) and nothing is written; every bad row is listed.
    """
    from integrations.sources import import_tickets

    engine = state(ctx).engine()
    _run(lambda: import_tickets(engine, file, dry_run=dry_run))


@events_app.command("import")
def import_events_command(
    ctx: typer.Context,
    file: Annotated[Path, _FILE],
    activation: Annotated[
        str | None,
        typer.Option(
            "--activation-event",
            help="The event that means onboarded (default: activation_event in the playbooks folder's sources.yaml).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """Import product events in the Segment spec: type (track, identify, group, page, screen,
    alias), userId or anonymousId, timestamp, messageId; event and properties (track), groupId
    (group: the account's external_id), traits, name (page, screen), previousId (alias).

    Each event is kept once by its messageId. The accounts' last_seen_at follows their users'
    events; onboarded_at is set by the first activation event declared in the playbooks folder's
    sources.yaml (activation_event: ...). All or nothing, every bad line listed.
    """
    from integrations.sources import import_events
    from models import utcnow
    from playbooks import load_sources

    st = state(ctx)
    engine = st.engine()
    activation = activation or load_sources(st.playbooks_dir).activation_event
    _run(lambda: import_events(engine, file, now=utcnow(), activation=activation, dry_run=dry_run))


@touches_app.command("reply")
def reply_command(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Argument(help="The touch's key (retain status and the timeline show it).")] = None,
    account: Annotated[str | None, typer.Option("--account", "-a", help="The account's external id.")] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", "-p", help="The playbook id.")] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="When the reply came, ISO 8601 (default: now).", show_default=False)
    ] = None,
    by: AsCsm = None,
) -> None:
    """Mark a touch replied: by its KEY, or the latest message a playbook sent to an account
    (--account ID --playbook P). branch and wait_for see it as touches("<step>").replied."""
    from integrations.sources import mark_replied, parse_timestamp
    from models import ConfigError, utcnow

    if (key is None) == (account is None and playbook is None) or (key is None and (not account or not playbook)):
        err_console.print(
            "error: name the touch by its KEY, or by --account and --playbook (not both)", style="red", markup=False
        )
        raise typer.Exit(2)
    try:
        moment = utcnow() if at is None else parse_timestamp(at)
    except ValueError as exc:
        raise ConfigError(f"--at: {exc}") from None
    who = csm_identity(by)
    result = mark_replied(state(ctx).engine(), now=moment, key=key, account=account, playbook=playbook, by=who)
    console.print(result.line(), markup=False, soft_wrap=True)
