"""``retain outbox …``: the touches waiting, in doubt or failed, and what a person does about them.

Heavy modules (the engine, the channels) are imported inside the commands: the CLI starts fast.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from ._app import app, console, err_console, state
from ._who import AsCsm, csm_identity

if TYPE_CHECKING:
    from flows.engine.outbox_review import TouchLine

outbox_app = typer.Typer(
    help="The outbox: list touches, deliver now, resolve the unknown ones, retry the failed ones.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")

STATES = ("pending", "sending", "delivered", "failed", "suppressed", "unknown", "dropped", "draft", "rejected")


class Format(StrEnum):
    table = "table"
    json = "json"


def _age(delta: timedelta) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: short enough for a narrow column."""
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _now() -> datetime:
    from models import utcnow

    return utcnow()


@outbox_app.command("list")
def list_(
    ctx: typer.Context,
    states: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            "-s",
            help="Only touches in this state (repeatable; 'all' for every state). "
            "Default: pending, sending, unknown, failed.",
        ),
    ] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel (email, slack, ...).")] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", help="Only this playbook's touches.")] = None,
    account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account (external id).")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Only touches written at least this long ago ('2 hours').")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many, oldest first.")] = 200,
    fmt: Annotated[Format, typer.Option("--format", help="table for people, json for scripts.")] = Format.table,
) -> None:
    """List touches waiting, being sent, in doubt (unknown) or failed.

    Filter by state, channel, playbook, account and age; oldest first."""
    from flows.engine.outbox_review import ATTENTION, TouchFilter, list_touches
    from models import parse_duration

    chosen: tuple[str, ...] = tuple(ATTENTION)
    if states:
        wanted = [s.strip().lower() for given in states for s in given.split(",") if s.strip()]
        if "all" in wanted:
            chosen = STATES
        else:
            if bad := [s for s in wanted if s not in STATES]:
                raise typer.BadParameter(
                    f"unknown state {bad[0]!r} (states: {', '.join(STATES)}, or all)", param_hint="--state"
                )
            chosen = tuple(wanted)
    age = None
    if older_than:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--older-than") from None
    now = _now()
    where = TouchFilter(states=chosen, channel=channel, playbook=playbook, account=account, older_than=age, limit=limit)
    lines, total = list_touches(state(ctx).engine(), where, now=now)
    if fmt is Format.json:
        document = {"as_of": now.isoformat(), "total": total, "touches": [line.to_dict(now) for line in lines]}
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    _print_table(lines, total, now)


def _print_table(lines: list[TouchLine], total: int, now: datetime) -> None:
    from rich.table import Table

    if not lines:
        console.print("no touches match")
        return
    # readable at 80 columns: the key and reason fold, the rest are short
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("key", overflow="fold", ratio=3)
    table.add_column("state", no_wrap=True)
    table.add_column("chan", no_wrap=True)
    table.add_column("account", overflow="fold", ratio=1)
    table.add_column("age", no_wrap=True, justify="right")
    table.add_column("try", no_wrap=True, justify="right")
    table.add_column("why", overflow="fold", ratio=4)
    for line in lines:
        why = line.reason or ""
        if line.state == "pending" and line.not_before and line.not_before > now:
            why = f"not before {line.not_before:%Y-%m-%d %H:%M}Z" + (f"; {why}" if why else "")
        table.add_row(
            line.key, line.state, line.channel, line.account, _age(line.age(now)), str(line.attempts), why or "-"
        )
    console.print(table)
    shown = f"{len(lines)} of {total}" if total > len(lines) else str(total)
    console.print(f"{shown} touch{'es' if total != 1 else ''}", markup=False)
    if any(line.state == "unknown" for line in lines):
        console.print("unknown: decide with `retain outbox resolve KEY --delivered | --resend | --drop`", markup=False)
    if any(line.state == "failed" for line in lines):
        console.print("failed: try again with `retain outbox retry KEY` (or --all)", markup=False)


@outbox_app.command("deliver")
def deliver_(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Deliver as of this time, ISO 8601. Default: now.")
    ] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", help="Only this playbook's touches.")] = None,
) -> None:
    """Run the outbox now: settle drafts past their approval deadline, then send every due touch
    under the contact policy.

    What the scheduled `outbox` deployment does every five minutes."""
    from flows.engine.approvals import settle_approvals
    from flows.engine.outbox import deliver
    from flows.engine.tick import delivery_policy, parse_as_of, valid_playbooks
    from integrations.channels import build_channels
    from models import session
    from playbooks import load_policy

    st = state(ctx)
    moment = parse_as_of(as_of)
    # a playbook that does not compile holds up no touches: its own follow the global policy
    playbooks, problems = valid_playbooks(st.playbooks_dir)
    for problem in problems:
        err_console.print(f"warning: {problem.format()}", markup=False, soft_wrap=True)
    policy = delivery_policy(playbooks.values(), load_policy(st.playbooks_dir))
    with session(st.engine()) as s:
        deadlines = settle_approvals(s, moment, playbook=playbook)
    counts = deliver(st.engine(), build_channels(st.settings), as_of=moment, playbook=playbook, policy=policy)
    counts.update({f"deadline {k}": v for k, v in deadlines.items() if v})
    done = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due"
    console.print(f"outbox as of {moment.isoformat()}: {done}", markup=False)
    if counts.get("unknown") or counts.get("failed"):
        console.print("some touches need a person: `retain outbox list --state unknown,failed`", markup=False)


@outbox_app.command("resolve")
def resolve(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The touch's key (or #id), as `retain outbox list` shows it.")],
    delivered: Annotated[
        bool, typer.Option("--delivered", help="It did arrive (you checked): mark it delivered.")
    ] = False,
    resend: Annotated[
        bool, typer.Option("--resend", help="It did not arrive: send it again with the next outbox run.")
    ] = False,
    drop: Annotated[bool, typer.Option("--drop", help="Never send it.")] = False,
    by: AsCsm = None,
    note: Annotated[str | None, typer.Option("--note", help="Why, for the timeline.")] = None,
) -> None:
    """Decide an unknown touch: delivered, send again, or drop.

    A touch is `unknown` when it may have arrived (a crash or a lost answer during its send) and its
    channel cannot drop a repeat. The account's timeline records who decided what."""
    from flows.engine.outbox_review import Decision, resolve_touch

    flags: list[tuple[Decision, bool]] = [("delivered", delivered), ("resend", resend), ("drop", drop)]
    chosen = [decision for decision, given in flags if given]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --delivered, --resend, --drop", param_hint="KEY")
    who = csm_identity(by)
    done = resolve_touch(state(ctx).engine(), key, chosen[0], by=who, now=_now(), note=note)
    console.print(done, markup=False)


@outbox_app.command("retry")
def retry(
    ctx: typer.Context,
    keys: Annotated[list[str] | None, typer.Argument(help="Keys (or #ids) of failed touches.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every failed touch (of --channel, --playbook).")] = False,
    channel: Annotated[str | None, typer.Option("--channel", help="With --all: only this channel.")] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", help="With --all: only this playbook.")] = None,
    by: AsCsm = None,
) -> None:
    """Send failed touches again, once what made them fail is fixed.

    They become pending, with their attempts counted afresh, and go out with the next outbox run."""
    from flows.engine.outbox_review import retry_failed

    if bool(keys) == all_:
        raise typer.BadParameter("name the touches to retry, or give --all", param_hint="KEYS")
    if (channel or playbook) and not all_:
        raise typer.BadParameter("--channel and --playbook go with --all", param_hint="--all")
    who = csm_identity(by)
    retried = retry_failed(state(ctx).engine(), keys or [], by=who, now=_now(), channel=channel, playbook=playbook)
    if not retried:
        console.print("no failed touches to retry", markup=False)
        return
    for key in retried:
        console.print(f"{key}: pending again", markup=False)
    console.print(f"{len(retried)} touch{'es' if len(retried) != 1 else ''} will go out with the next outbox run")
