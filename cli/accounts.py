"""``retain accounts …`` and ``retain contacts …``: import from CSV, list accounts, show one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json
from ._who import AsCsm, csm_identity

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from flows.reports.accounts import AccountView
    from integrations.sources import ImportResult
    from models import Account

accounts_app = typer.Typer(help="Import accounts from CSV, list them, show one.", no_args_is_help=True)
contacts_app = typer.Typer(help="Import contacts from CSV.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(contacts_app, name="contacts")


#: the account statuses (``models.AccountStatus``) written out, so that building the CLI needs no
#: database code; tests/cli/test_startup.py holds the two equal
AccountStatusChoice = Literal["trial", "active", "paused", "cancelling", "churned"]

_FILE = typer.Argument(
    help="The CSV file (UTF-8, with or without a byte-order mark).",
    metavar="FILE.csv",
    exists=True,
    dir_okay=False,
    readable=True,
    show_default=False,
)
_SKIP_INVALID = typer.Option(
    "--skip-invalid", help="Import the good rows and list the bad ones, instead of importing nothing."
)
_DRY_RUN = typer.Option("--dry-run", help="Check the file and count what would change; write nothing.")


# --------------------------------------------------------------------------------------------
# import


def _run_import(
    importer: Callable[..., ImportResult], engine: Engine, file: Path, *, skip_invalid: bool, dry_run: bool
) -> None:
    from models import DataImportError, utcnow

    try:
        result = importer(engine, file, skip_invalid=skip_invalid, dry_run=dry_run, now=utcnow())
    except DataImportError as exc:
        for problem in exc.problems:
            err_console.print(problem.format(exc.file), markup=False, soft_wrap=True)
        bad_rows = len({p.row for p in exc.problems})
        message = f"error: nothing was written from {exc.file}"
        if any(p.column for p in exc.problems):  # problems in cells, not in the file's shape
            message += f" ({bad_rows} bad row{'s' * (bad_rows != 1)}; fix them"
            message += ")" if skip_invalid else ", or use --skip-invalid to import the good rows)"
        err_console.print(message, style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _report(result)


def _report(result: ImportResult) -> None:
    counts = (
        f"{result.inserted} to insert, {result.updated} to update, {result.unchanged} unchanged"
        if result.dry_run
        else f"{result.inserted} inserted, {result.updated} updated, {result.unchanged} unchanged"
    )
    where = f"{result.file} (dry run, nothing written)" if result.dry_run else result.file
    console.print(f"{where}: {counts}", markup=False, soft_wrap=True)
    if result.custom_columns:
        console.print(f"custom fields: {', '.join(result.custom_columns)}", markup=False, soft_wrap=True)
    if result.ignored_columns:
        ignored = ", ".join(repr(c) for c in result.ignored_columns)
        console.print(f"ignored columns: {ignored}", markup=False, soft_wrap=True)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    for problem in result.problems:
        err_console.print(problem.format(result.file), markup=False, soft_wrap=True)
    if result.problems:
        skipped = result.skipped
        err_console.print(
            f"{skipped} bad row{'s' * (skipped != 1)} skipped", style="yellow", markup=False, soft_wrap=True
        )


@accounts_app.command("import")
def import_accounts_command(
    ctx: typer.Context,
    file: Annotated[Path, _FILE],
    skip_invalid: Annotated[bool, _SKIP_INVALID] = False,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """Create or update accounts from a CSV file, matched by external_id.

    Columns (header names ignore case, spaces and punctuation): required external_id, name; optional plan, arr, currency, status (trial, active, paused, cancelling, churned), renewal_date and signup_date (YYYY-MM-DD), onboarded_at, renewed_at, cancelled_at, churned_at and reactivated_at (ISO 8601, stored as UTC), csm_email, csm_name, timezone (IANA, e.g. Europe/Berlin), country (ISO alpha-2, e.g. DE), segment, industry, lifecycle_stage, seats, health (green, yellow, red), health_score (0-100). Any other column is kept as a custom field of the account, as text.

    All or nothing: if any row is bad, nothing is written and every bad row is listed as FILE: row N, column 'x': message (the header is row 1). --skip-invalid writes the good rows instead.

    A blank cell, or a column the file lacks, leaves the stored value alone. arr takes 12000, 12,000.50 or $12000 ('.' for decimals).

    A custom field that a playbook of the playbooks folder declares number (custom_fields:) must hold a plain number (12, -0.5) and one declared bool true, false, yes or no: the playbooks read it by that type.
    """
    from functools import partial

    from flows.engine.tick import declared_custom_fields
    from integrations.sources import import_accounts

    st = state(ctx)
    importer = partial(import_accounts, declared=declared_custom_fields(st.playbooks_dir))
    _run_import(importer, st.engine(), file, skip_invalid=skip_invalid, dry_run=dry_run)


@contacts_app.command("import")
def import_contacts_command(
    ctx: typer.Context,
    file: Annotated[Path, _FILE],
    skip_invalid: Annotated[bool, _SKIP_INVALID] = False,
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """Create or update contacts from a CSV file, matched by account and email.

    Columns (header names ignore case, spaces and punctuation): required account_external_id (an account already in Retain), email; optional name, role, title, timezone (IANA), is_primary and unsubscribed (yes/no, true/false, 1/0). Other columns are ignored. Emails are stored in lower case.

    All or nothing: if any row is bad, nothing is written and every bad row is listed as FILE: row N, column 'x': message (the header is row 1). --skip-invalid writes the good rows instead.

    A blank cell, or a column the file lacks, leaves the stored value alone. unsubscribed=no resubscribes a contact a file or a person unsubscribed, never one that unsubscribed itself through the link in an email, bounced or complained.
    """
    from integrations.sources import import_contacts

    engine = state(ctx).engine()
    _run_import(import_contacts, engine, file, skip_invalid=skip_invalid, dry_run=dry_run)


class _Channel(StrEnum):
    all = "all"
    email = "email"
    survey = "survey"


@contacts_app.command("unsubscribe")
def unsubscribe_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address, in any account.")],
    channel: Annotated[
        _Channel, typer.Option("--channel", help="What to stop: everything, or one kind of message.")
    ] = "all",  # type: ignore[assignment]
    reason: Annotated[str | None, typer.Option("--reason", help="Why, for the timeline.")] = None,
) -> None:
    """Unsubscribe an address: every contact with it, in every account, now and when imported later.
    An unsubscribed contact is never contacted again; the touches Retain would have sent are
    recorded as suppressed, with the reason."""
    from integrations.sources import unsubscribe

    try:
        result = unsubscribe(state(ctx).engine(), email, channel=str(channel), reason=reason)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="EMAIL") from exc
    what = "everything" if channel == "all" else f"{channel} messages"
    console.print(f"{email.lower()}: unsubscribed from {what}; {result.contacts} contact(s) updated", markup=False)


@contacts_app.command("resubscribe")
def resubscribe_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The address, in any account.")],
    channel: Annotated[
        _Channel, typer.Option("--channel", help="What to allow again: everything, or one kind of message.")
    ] = "all",  # type: ignore[assignment]
    force: Annotated[
        bool, typer.Option("--force", help="Also lift a bounce or a spam complaint the email provider reported.")
    ] = False,
    by: AsCsm = None,
) -> None:
    """Resubscribe an address: every contact with it may be written to again (on that channel).
    Recorded on each account's timeline. A bounce or spam complaint reported by the email
    provider stays unless --force."""
    from integrations.sources import resubscribe

    try:
        result = resubscribe(state(ctx).engine(), email, channel=str(channel), by=csm_identity(by), force=force)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="EMAIL") from exc
    for why in result.kept:
        err_console.print(f"stays unsubscribed: {why} (--force lifts it)", markup=False, soft_wrap=True)
    what = "everything" if channel == "all" else f"{channel} messages"
    console.print(f"{email.lower()}: resubscribed to {what}; {result.contacts} contact(s) updated", markup=False)
    if result.kept:
        raise typer.Exit(1)


@contacts_app.command("suppress")
def suppress_command(
    ctx: typer.Context,
    file: Annotated[Path, _FILE],
    dry_run: Annotated[bool, _DRY_RUN] = False,
) -> None:
    """Import a suppression list (e.g. your email provider's unsubscribes and bounces).

    Columns: email (required); channel (all, email or survey; default all) and reason (optional).
    All or nothing: a bad row and nothing is written; every bad row is listed as FILE: row N,
    column 'x': message. Addresses are kept even when no contact has them yet."""
    from integrations.sources import import_suppression_list

    result = import_suppression_list(state(ctx).engine(), file, dry_run=dry_run)
    prefix = f"{file.name} (dry run, nothing written)" if dry_run else file.name
    console.print(
        f"{prefix}: {result.addresses} address(es) suppressed, {result.contacts} contact(s) unsubscribed", markup=False
    )


# --------------------------------------------------------------------------------------------
# list


def _arr(account: Account, *, code: bool = True) -> str:
    from flows.reports.format import amount

    return amount(account.arr, account.currency if code else None)


#: the narrowest a column of text that wraps (a name) is made before columns are left out
_MIN_TEXT = 12


@dataclass
class _Column:
    """A column of a table that fits the terminal: ``wraps`` (long text such as a name) may wrap
    down to _MIN_TEXT; the others never wrap. When the terminal is too narrow for all, the column
    with the highest ``drop`` is left out first (0: never)."""

    header: str
    cells: list[Text]
    wraps: bool = False
    justify: Literal["left", "right"] = "left"
    drop: int = 0

    def natural(self) -> int:
        return max([len(self.header), *(cell.cell_len for cell in self.cells)])

    def need(self) -> int:
        return min(self.natural(), max(_MIN_TEXT, len(self.header))) if self.wraps else self.natural()


def _table(title: str, columns: Sequence[_Column], *, boxed: bool = True) -> Table:
    """A table of ``columns``; without borders (two spaces between columns) where room is short."""
    table = Table(title=title, title_justify="left")
    if not boxed:
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in columns:
        table.add_column(
            c.header, justify=c.justify, no_wrap=not c.wraps, min_width=c.need() if c.wraps else None, overflow="fold"
        )
    for r in range(len(columns[0].cells) if columns else 0):
        table.add_row(*(c.cells[r] for c in columns))
    return table


def _health(account: Account) -> Text:
    label = account.health or ""
    if account.health_score is not None:
        label = f"{label} ({account.health_score:g})".strip()
    return Text(label, style=account.health if account.health in ("green", "yellow", "red") else "")


def _csm(account: Account) -> str:
    if account.csm_name and account.csm_email:
        return f"{account.csm_name} <{account.csm_email}>"
    return account.csm_name or account.csm_email or ""


def _iso(value: date | None) -> str:
    return value.isoformat() if value else ""


@accounts_app.command("list")
def list_accounts(
    ctx: typer.Context,
    status: Annotated[
        AccountStatusChoice | None,
        typer.Option("--status", help="Only accounts in this status.", case_sensitive=False),
    ] = None,
    csm: Annotated[
        str | None, typer.Option("--csm", help="Only the accounts of this CSM (email).", metavar="EMAIL")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=0, help="Show at most N accounts; 0 shows all.", metavar="N")
    ] = 50,
    fmt: TableOrJson = Format.table,
) -> None:
    """List accounts by name: external id, name, plan, ARR, status, renewal date, health, CSM."""
    from flows.reports.accounts import as_json, find_accounts

    accounts, total = find_accounts(state(ctx).engine(), status=status, csm=csm, limit=limit)
    if fmt is Format.json:
        echo_json([as_json(a, exclude=frozenset({"id"})) for a in accounts])
        return
    if not accounts:
        console.print("no accounts match" if status or csm else "no accounts yet (`retain accounts import FILE.csv`)")
        return
    columns = [
        _Column("external id", [Text(a.external_id) for a in accounts]),
        _Column("name", [Text(a.name) for a in accounts], wraps=True),
        _Column("plan", [Text(a.plan or "") for a in accounts], wraps=True, drop=5),
        _Column("ARR", [Text(_arr(a)) for a in accounts], justify="right"),
        _Column("status", [Text(a.status) for a in accounts], drop=1),
        _Column("renewal", [Text(_iso(a.renewal_date)) for a in accounts], drop=2),
        _Column("health", [_health(a) for a in accounts], drop=3),
        _Column("CSM", [Text(_csm(a)) for a in accounts], wraps=True, drop=4),
    ]
    if sum(c.natural() + 3 for c in columns) + 1 <= console.width:
        console.print(_table("Accounts", columns))
    else:  # narrow: the CSM by name, one currency said once, no borders; then the least needed left out
        currencies = {(a.currency or "").upper() for a in accounts if a.arr is not None}
        if len(currencies) == 1:
            (code,) = currencies
            columns[3] = _Column(f"ARR {code}", [Text(_arr(a, code=False)) for a in accounts], justify="right")
        columns[7] = _Column("CSM", [Text(a.csm_name or a.csm_email or "") for a in accounts], wraps=True, drop=4)
        shown = list(columns)
        while sum(c.need() + 3 for c in shown) - 3 > console.width and any(c.drop for c in shown):
            shown.remove(max(shown, key=lambda c: c.drop))
        console.print(_table("Accounts", shown, boxed=False))
        if hidden := [c.header for c in columns if c not in shown]:
            console.print(
                f"{', '.join(hidden)}: left out to fit {console.width} columns (`retain accounts show ID` and "
                "--format json show every field)",
                style="dim",
                soft_wrap=True,
            )
    if len(accounts) < total:
        console.print(f"{len(accounts)} of {total} accounts shown; --limit 0 shows all", style="dim")


# --------------------------------------------------------------------------------------------
# show


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else ""


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' * (count != 1 and unit == 'day')}"
    return "moments"


def _due(at: datetime | None, now: datetime) -> str:
    if at is None:
        return ""
    delta = (at - now).total_seconds()
    return f"{_when(at)} (in {_span(delta)})" if delta >= 0 else f"{_when(at)} (overdue by {_span(delta)})"


def _days_to(day: date | None, today: date) -> str:
    if day is None:
        return ""
    days = (day - today).days
    if days == 0:
        return f"{day.isoformat()} (today)"
    return f"{day.isoformat()} (in {days} days)" if days > 0 else f"{day.isoformat()} ({-days} days ago)"


def _section(title: str, headers: Sequence[str], rows: Sequence[Sequence[str | Text]], empty: str) -> Table | Text:
    if not rows:
        return Text.assemble((title, "bold"), f": {empty}")
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, header in enumerate(headers):
        # a column of short values (yes, a priority) keeps its header whole; the others wrap, and a
        # narrow terminal folds an address rather than cutting it to "…"
        short = all(len(row[i]) <= len(header) for row in rows)
        table.add_column(header, no_wrap=short, overflow="fold")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in row))
    return table


def render_account(view: AccountView, now: datetime) -> Group:
    """A readable layout of an account view, as of ``now``."""
    a = view.account
    heading = Text.assemble((a.name, "bold"), " (", (a.external_id, "cyan"), ") · ", (a.status, "bold"))

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    for label, value in [
        ("plan", Text(a.plan or "")),
        ("ARR", Text(_arr(a))),
        ("renewal", Text(_days_to(a.renewal_date, now.date()))),
        ("health", _health(a)),
        ("CSM", Text(_csm(a))),
        ("seats", Text("" if a.seats is None else str(a.seats))),
        ("segment", Text(a.segment or "")),
        ("industry", Text(a.industry or "")),
        ("lifecycle", Text(a.lifecycle_stage or "")),
        ("country", Text(a.country or "")),
        ("timezone", Text(a.timezone or "")),
        ("signed up", Text(_iso(a.signup_date))),
        *((key, Text(str(value))) for key, value in sorted(a.custom.items())),
    ]:
        if value.plain:
            facts.add_row(label, value)

    contacts = _section(
        "Contacts",
        ["email", "name", "role", "title", "primary", "unsubscribed"],
        [
            [
                c.email,
                c.name or "",
                c.role or "",
                c.title or "",
                "yes" if c.is_primary else "",
                "yes" if c.unsubscribed else "",
            ]
            for c in view.contacts
        ],
        "none",
    )
    enrollments = _section(
        "Active enrollments",
        ["playbook", "revision", "step", "next due", "holdout", "since"],
        [
            [
                e.playbook,
                e.revision[:8],
                e.step_id or "",
                _due(e.next_due_at, now),
                "yes" if e.holdout else "",
                _when(e.started_at),
            ]
            for e in view.enrollments
        ],
        "none",
    )
    tasks = _section(
        "Open CSM tasks",
        ["task", "priority", "assignee", "due"],
        [[t.title, t.priority, t.assignee or "", _due(t.due_at, now)] for t in view.tasks],
        "none",
    )
    outcomes = _section(
        "Recent outcomes",
        ["when", "outcome", "playbook", "ARR change", "note"],
        [
            [
                _when(o.occurred_at),
                o.kind,
                o.playbook or "",
                "" if o.arr_delta_cents is None else f"{o.arr_delta_cents / 100:+,.2f}",
                o.note or "",
            ]
            for o in view.outcomes
        ],
        "none",
    )
    timeline_title = "Timeline"
    if view.timeline_total > len(view.timeline):
        timeline_title += f" (the last {len(view.timeline)} of {view.timeline_total} events)"
    timeline = _section(
        timeline_title,
        ["when", "what", "playbook", "summary"],
        [[_when(t.at), t.kind, t.playbook or "", t.summary] for t in view.timeline],
        "nothing yet",
    )
    return Group(heading, facts, Text(), contacts, enrollments, tasks, outcomes, timeline)


@accounts_app.command("show")
def show_account(
    ctx: typer.Context,
    external_id: Annotated[str, typer.Argument(metavar="ID", help="The account's external id.", show_default=False)],
    fmt: TableOrJson = Format.table,
    events: Annotated[int, typer.Option("--events", min=1, help="How many timeline events to show.", metavar="N")] = 20,
) -> None:
    """Show an account: its fields, contacts, active enrollments (playbook, step, next due), open
    CSM tasks, recent outcomes and its timeline, newest last."""
    from flows.reports.accounts import load_account_view
    from models import utcnow

    view = load_account_view(state(ctx).engine(), external_id, events=events)
    if fmt is Format.json:
        echo_json(view.to_json())
    else:
        console.print(render_account(view, utcnow()))
