"""``retain approvals …``: drafted messages waiting for a person (steps with ``approve:``): list,
show, approve, edit, reject. Every decision records who made it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json
from ._who import AsCsm, csm_identity

approvals_app = typer.Typer(
    help="Drafted messages waiting for approval (steps with approve:): list, show, approve, edit, reject.",
    no_args_is_help=True,
)
app.add_typer(approvals_app, name="approvals")

_KEY = typer.Argument(metavar="KEY", help="The draft's key (retain approvals list shows it).", show_default=False)


def _now() -> datetime:
    from models import utcnow

    return utcnow()


def _waits(approve_by: datetime | None, now: datetime) -> Text:
    if approve_by is None:
        return Text("-")
    hours = int((approve_by - now).total_seconds() // 3600)
    if hours < 0:
        return Text("overdue", style="red")
    return Text(f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h")


@approvals_app.command("list")
def list_(
    ctx: typer.Context,
    everyone: Annotated[bool, typer.Option("--all", help="Every approver's drafts, not only yours.")] = False,
    account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account's.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most N.", metavar="N")] = 50,
    who: AsCsm = None,
    fmt: TableOrJson = Format.table,
) -> None:
    """The drafts waiting for your approval (and those any CSM may approve), oldest first."""
    from flows.engine.approvals import list_drafts

    approver = None if everyone else csm_identity(who)
    lines, total = list_drafts(state(ctx).engine(), approver=approver, account=account, limit=limit)
    now = _now()
    if fmt is Format.json:
        echo_json({"approver": approver, "total": total, "drafts": [d.to_dict() for d in lines]})
        return
    if not lines:
        console.print(f"no drafts wait for {approver or 'anyone'}", markup=False, emoji=False)
        return
    table = Table(title=f"Drafts waiting for {approver or 'approval'}", title_justify="left", pad_edge=False)
    table.add_column("key", no_wrap=True, overflow="fold", max_width=24)
    table.add_column("account", no_wrap=True, max_width=12, overflow="ellipsis")
    table.add_column("left", no_wrap=True)
    table.add_column("to / subject", ratio=1, overflow="fold")
    for d in lines:
        what = f"{d.to or d.channel}\n{d.subject or ''}" + (" (edited)" if d.edited else "")
        table.add_row(Text(d.key), Text(d.account), _waits(d.approve_by, now), Text(what))
    console.print(table)
    if total > len(lines):
        console.print(f"{len(lines)} of {total} shown: --limit N for more", markup=False, emoji=False)


@approvals_app.command("show")
def show(ctx: typer.Context, key: Annotated[str, _KEY], fmt: TableOrJson = Format.table) -> None:
    """A draft as it would be sent (the rendered message), and the first draft if it was edited."""
    from flows.engine.approvals import show_draft

    line, payload, first = show_draft(state(ctx).engine(), key)
    if fmt is Format.json:
        echo_json({**line.to_dict(), "message": payload, "first_draft": first})
        return
    deadline = f" by {line.approve_by:%Y-%m-%d %H:%M} UTC (then: {line.on_deadline})" if line.approve_by else ""
    facts = [
        ("draft", line.key),
        ("status", line.status),
        ("account", f"{line.account_name} ({line.account})"),
        ("playbook", f"{line.playbook} / {line.step_id}"),
        ("approver", f"{line.approver}{deadline}"),
        ("to", str(payload.get("to") or "")),
        ("subject", str(payload.get("subject") or "")),
    ]
    for label, value in facts:
        console.print(f"{label:>9}: {value}", markup=False, emoji=False, soft_wrap=True)
    console.print("", markup=False, emoji=False)
    console.print(str(payload.get("text") or ""), markup=False, emoji=False, soft_wrap=True)
    if first is not None:
        console.print(f"(edited; the first draft's subject was {first.get('subject')!r})", markup=False, emoji=False)


@approvals_app.command("approve")
def approve(
    ctx: typer.Context,
    keys: Annotated[list[str], typer.Argument(metavar="KEY…", help="The drafts' keys.", show_default=False)],
    send: Annotated[
        bool,
        typer.Option(
            "--send/--no-send", help="Send now through the outbox (the default), or let the outbox run do it."
        ),
    ] = True,
    who: AsCsm = None,
) -> None:
    """Approve drafts: each goes out once, through the outbox, under its own key (a second approval,
    or the outbox running at the same time, never sends it twice)."""
    from flows.engine.approvals import approve_draft
    from flows.engine.outbox import deliver
    from flows.engine.tick import delivery_policy, valid_playbooks
    from integrations.channels import build_channels
    from playbooks import load_policy

    st = state(ctx)
    engine = st.engine()
    by, now = csm_identity(who), _now()
    approved = 0
    for key in keys:
        done, line = approve_draft(engine, key, by=by, now=now)
        approved += done
        console.print(line, markup=False, emoji=False, soft_wrap=True)
    if send and approved:
        playbooks, problems = valid_playbooks(st.playbooks_dir)
        for problem in problems:
            err_console.print(f"warning: {problem.format()}", markup=False, emoji=False, soft_wrap=True)
        policy = delivery_policy(playbooks.values(), load_policy(st.playbooks_dir))
        counts = deliver(engine, build_channels(st.settings), as_of=now, policy=policy)
        console.print(
            "outbox: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due"), markup=False
        )


@approvals_app.command("edit")
def edit(
    ctx: typer.Context,
    key: Annotated[str, _KEY],
    subject: Annotated[str | None, typer.Option("--subject", help="The new subject.")] = None,
    body_file: Annotated[
        Path | None,
        typer.Option(
            "--body-file", help="A file with the new text (Markdown); - reads standard input.", allow_dash=True
        ),
    ] = None,
    who: AsCsm = None,
) -> None:
    """Change a draft's subject or text before approving it; the first draft is kept with the touch
    and the change goes on the account's timeline."""
    import sys

    from flows.engine.approvals import edit_draft
    from models import ConfigError

    text = None
    if body_file is not None:
        try:
            text = sys.stdin.read() if str(body_file) == "-" else body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--body-file {body_file}: {exc}") from None
    line = edit_draft(state(ctx).engine(), key, by=csm_identity(who), now=_now(), subject=subject, text=text)
    console.print(line, markup=False, emoji=False, soft_wrap=True)


@approvals_app.command("reject")
def reject(
    ctx: typer.Context,
    key: Annotated[str, _KEY],
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the timeline.")] = None,
    who: AsCsm = None,
) -> None:
    """Reject a draft: it is never sent."""
    from flows.engine.approvals import reject_draft

    line = reject_draft(state(ctx).engine(), key, by=csm_identity(who), now=_now(), reason=reason)
    console.print(line, markup=False, emoji=False, soft_wrap=True)
