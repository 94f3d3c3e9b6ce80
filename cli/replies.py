"""``retain replies poll``: replies read from a mailbox over IMAP."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app, console, state
from ._output import Format, TextOrJson, echo_json

replies_app = typer.Typer(
    help="Replies from a mailbox: read it over IMAP and mark the touches that were answered replied.",
    no_args_is_help=True,
)
app.add_typer(replies_app, name="replies")


@replies_app.command("poll")
def poll_command(
    ctx: typer.Context,
    mailbox: Annotated[
        str | None,
        typer.Option(
            "--mailbox",
            help="imaps://user@host:993/INBOX (default: RETAIN_MAILBOX_URL). The password is the secret "
            "RETAIN_SECRET_MAILBOX_PASSWORD (or the Prefect Secret block retain-mailbox-password), never the URL.",
            show_default=False,
        ),
    ] = None,
    fmt: TextOrJson = Format.text,
) -> None:
    """Read the mailbox's new messages; a reply to a Retain email marks its touch replied (what
    touches("<step>").replied reads in branch and wait_for).

    Out-of-office and other automatic replies go on the timeline, not counted as replies; neither are messages in the thread from the account's CSM or from RETAIN_EMAIL_FROM.

    Messages that answer no Retain email are counted and left alone: the mailbox is opened read-only. Each message is processed once, however often this runs.

    Each poll is a sync run of the source mailbox:USER@HOST:PORT/FOLDER: retain sync status shows its cursor and its last run."""
    from integrations.sources import configured_mailbox, poll_mailbox, team_addresses
    from models import utcnow

    st = state(ctx)
    target = configured_mailbox(mailbox, st.settings.mailbox_url)
    team = team_addresses(st.settings.email_from)
    result = poll_mailbox(st.engine(), target, now=utcnow(), team=team)
    if fmt is Format.json:
        echo_json({"mailbox": result.mailbox, "source": target.source, **result.counts(), "touches": result.touches})
        return
    console.print(result.line(), markup=False, soft_wrap=True)
