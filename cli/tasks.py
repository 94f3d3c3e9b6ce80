"""``retain tasks …``: a CSM's task queue: list (mine by default), done, snooze, reassign, note,
and the CRM's copies kept in step (sync)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._app import app, console, state
from ._output import Format, TableOrJson, echo_json
from ._who import AsCsm, csm_identity

if TYPE_CHECKING:
    from flows.engine.tasks import TaskLine

tasks_app = typer.Typer(
    help="A CSM's tasks: list (yours by default), done, snooze, reassign, note; sync with the CRM.",
    no_args_is_help=True,
)
app.add_typer(tasks_app, name="tasks")

_ID = typer.Argument(metavar="ID", help="The task's id (retain tasks list shows it).", show_default=False)


def _moment(value: str | None, what: str) -> datetime:
    from flows.engine.tick import parse_as_of
    from models import ConfigError

    try:
        return parse_as_of(value)
    except ConfigError:
        raise ConfigError(f"{what} {value!r} is not an ISO 8601 date or time (like 2027-06-01T09:00:00Z)") from None


def _later(now: datetime, value: str, what: str) -> datetime:
    """``value`` as a moment: a duration from now (``2 days``) or an ISO 8601 date or time."""
    from models import ConfigError, parse_duration

    try:
        return now + parse_duration(value)
    except ValueError:
        pass
    try:
        return _moment(value, what)
    except ConfigError:
        raise ConfigError(f"{what} {value!r} is neither a duration (2 days, 12 hours) nor an ISO 8601 time") from None


def _due(task: TaskLine, now: datetime) -> Text:
    if task.due_at is None:
        return Text("-")
    days = (task.due_at.date() - now.date()).days
    if task.overdue(now):
        late = (now - task.due_at).days
        return Text(f"{late}d late" if late else "today", style="red")
    if days == 0:
        return Text("today", style="yellow")
    return Text(f"{task.due_at:%b %d}" if days > 6 else f"in {days}d")


@tasks_app.command("list")
def list_(
    ctx: typer.Context,
    csm: Annotated[
        str | None, typer.Option("--csm", help="Another CSM's tasks (by email). Default: yours (--as / RETAIN_CSM).")
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every CSM's tasks.")] = False,
    account: Annotated[str | None, typer.Option("--account", "-a", help="Only this account's (external id).")] = None,
    playbook: Annotated[str | None, typer.Option("--playbook", "-p", help="Only this playbook's.")] = None,
    priority: Annotated[str | None, typer.Option("--priority", help="low, normal or high.")] = None,
    due: Annotated[
        str | None,
        typer.Option("--due", help="Due within a duration (2 days) or by a date (ISO 8601).", show_default=False),
    ] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only the open tasks past their due time.")] = False,
    status: Annotated[str, typer.Option("--status", help="open, done, closed or any.")] = "open",
    snoozed: Annotated[bool, typer.Option("--snoozed", help="Include the snoozed ones.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most N.", metavar="N")] = 50,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="As of this time (ISO 8601), for due and overdue. Default: now.")
    ] = None,
    who: AsCsm = None,
    fmt: TableOrJson = Format.table,
) -> None:
    """Your open tasks, most urgent first (high priority, then the earliest due); filters narrow it."""
    from flows.engine.tasks import PRIORITIES, TaskFilter, list_tasks

    if priority is not None and priority not in PRIORITIES:
        raise typer.BadParameter(f"{priority!r}: use one of {', '.join(PRIORITIES)}", param_hint="--priority")
    if status not in ("open", "done", "closed", "any"):
        raise typer.BadParameter(f"{status!r}: use open, done, closed or any", param_hint="--status")
    now = _moment(as_of, "--as-of")
    assignee = None if everyone else (csm or csm_identity(who))
    filters = TaskFilter(
        assignee=assignee,
        account=account,
        playbook=playbook,
        priority=priority,
        due_before=None if due is None else _later(now, due, "--due"),
        overdue=overdue,
        status=None if status == "any" else status,
        snoozed=snoozed,
    )
    lines, total = list_tasks(state(ctx).engine(), filters, now=now, limit=limit)
    if fmt is Format.json:
        echo_json(
            {"csm": assignee, "total": total, "tasks": [t.to_dict() | {"overdue": t.overdue(now)} for t in lines]}
        )
        return
    whose = "every CSM" if assignee is None else assignee
    if not lines:
        console.print(f"no {'' if status == 'any' else status + ' '}tasks for {whose}", markup=False, emoji=False)
        if assignee is not None and csm is None and "@" not in assignee:
            console.print(
                "tasks are assigned to the CSM's email: set RETAIN_CSM or use --as EMAIL", markup=False, emoji=False
            )
        return
    table = Table(title=f"Tasks of {whose}", title_justify="left", pad_edge=False, expand=False)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("due", no_wrap=True)
    table.add_column("pri", no_wrap=True)
    table.add_column("account", no_wrap=True, max_width=14, overflow="ellipsis")
    if assignee is None:
        table.add_column("CSM", no_wrap=True, max_width=16, overflow="ellipsis")
    table.add_column("task", ratio=1, overflow="fold")
    for t in lines:
        pri = Text(t.priority[0].upper(), style="bold red" if t.priority == "high" else "")
        cells: list[str | Text] = [str(t.id), _due(t, now), pri, Text(t.account)]
        if assignee is None:
            cells.append(Text(t.assignee or "-"))
        title = (
            t.title + (f" [{len(t.notes)} notes]" if t.notes else "") + ("" if t.status == "open" else f" ({t.status})")
        )
        table.add_row(*cells, Text(title))
    console.print(table)
    if total > len(lines):
        console.print(f"{len(lines)} of {total} shown: --limit N for more", markup=False, emoji=False)


@tasks_app.command("done")
def done(
    ctx: typer.Context,
    task_id: Annotated[int, _ID],
    note: Annotated[str | None, typer.Option("--note", help="What was done, kept with the task.")] = None,
    who: AsCsm = None,
) -> None:
    """Mark a task done (closed in the CRM too, when it is there)."""
    from flows.engine.tasks import complete_task
    from models import utcnow

    line = complete_task(state(ctx).engine(), task_id, by=csm_identity(who), now=utcnow(), note=note)
    console.print(line, markup=False, emoji=False, soft_wrap=True)


@tasks_app.command("snooze")
def snooze(
    ctx: typer.Context,
    task_id: Annotated[int, _ID],
    until: Annotated[
        str, typer.Option("--until", help="A duration from now (2 days) or an ISO 8601 time.", show_default=False)
    ],
    who: AsCsm = None,
) -> None:
    """Keep a task out of your list until a later time (its due time moves there if earlier)."""
    from flows.engine.tasks import snooze_task
    from models import utcnow

    now = utcnow()
    line = snooze_task(state(ctx).engine(), task_id, until=_later(now, until, "--until"), by=csm_identity(who), now=now)
    console.print(line, markup=False, emoji=False, soft_wrap=True)


@tasks_app.command("reassign")
def reassign(
    ctx: typer.Context,
    task_id: Annotated[int, _ID],
    to: Annotated[str, typer.Option("--to", help="The CSM who takes it (email).", show_default=False)],
    who: AsCsm = None,
) -> None:
    """Give a task to another CSM."""
    from flows.engine.tasks import reassign_task
    from models import utcnow

    line = reassign_task(state(ctx).engine(), task_id, to=to.strip(), by=csm_identity(who), now=utcnow())
    console.print(line, markup=False, emoji=False, soft_wrap=True)


@tasks_app.command("note")
def note(
    ctx: typer.Context,
    task_id: Annotated[int, _ID],
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The note.", show_default=False)],
    who: AsCsm = None,
) -> None:
    """Add a note to a task (kept with it and on the account's timeline)."""
    from flows.engine.tasks import note_task
    from models import utcnow

    line = note_task(state(ctx).engine(), task_id, text=text, by=csm_identity(who), now=utcnow())
    console.print(line, markup=False, emoji=False, soft_wrap=True)


@tasks_app.command("sync")
def sync(ctx: typer.Context) -> None:
    """Complete in Retain the tasks completed in the CRM (tasks closed in Retain reach the CRM
    through the outbox)."""
    from flows.engine.tasks import pull_crm_tasks
    from integrations.channels import CrmTaskChannel, build_channel
    from models import ConfigError, utcnow

    st = state(ctx)
    crm = build_channel("crm", st.settings)
    if not isinstance(crm, CrmTaskChannel):
        raise ConfigError("the CRM is not configured: set RETAIN_CRM_TOKEN (and RETAIN_CRM_URL)")
    counts = pull_crm_tasks(st.engine(), crm, now=utcnow())
    console.print(
        f"CRM tasks: {counts['checked']} open checked, {counts['completed']} completed there and now here, "
        f"{counts['linked']} newly linked",
        markup=False,
        emoji=False,
    )
