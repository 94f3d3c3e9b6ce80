"""``retain today``: a CSM's morning in one screen, and the daily digest posted once per day and CSM."""

from __future__ import annotations

import zoneinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json
from ._who import AsCsm, csm_identity

if TYPE_CHECKING:
    from datetime import datetime

    from flows.reports.today import Today


class Post(StrEnum):
    slack = "slack"
    email = "email"
    file = "file"


def _section(title: str, shown: int, total: int) -> Text:
    more = f" ({shown} of {total})" if total > shown else f" ({total})"
    return Text.assemble("\n", (title, "bold"), more)


def _grid() -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(no_wrap=True, max_width=14, overflow="ellipsis")
    table.add_column(ratio=1, overflow="fold")
    return table


def render_today(today: Today, now: datetime) -> list[Table | Text]:
    """The screen: four short sections that fit 80 columns."""
    parts: list[Table | Text] = [Text(today.title, style="bold")]
    parts.append(_section("Tasks due today or late", len(today.tasks), today.tasks_total))
    tasks = _grid()
    for t in today.tasks:
        late = t.overdue(now)
        when = Text("late" if late else "today", style="red" if late else "yellow")
        tasks.add_row(when, Text(t.account), Text(f"[{t.priority[0].upper()}] {t.title} (task {t.id})"))
    parts.append(tasks if today.tasks else Text("  none"))
    parts.append(_section("Waiting for your approval", len(today.drafts), today.drafts_total))
    drafts = _grid()
    for d in today.drafts:
        drafts.add_row(Text("draft"), Text(d.account), Text(f"{d.subject or d.channel} ({d.key})"))
    parts.append(drafts if today.drafts else Text("  none"))
    parts.append(_section("Turned red", len(today.red), len(today.red)))
    red = _grid()
    for r in today.red:
        was = f", was {r.was}" if r.was else ""
        red.add_row(Text("red", style="red"), Text(r.account), Text(f"{r.name}: health {r.score:.0f}{was}"))
    parts.append(red if today.red else Text("  none"))
    parts.append(_section("Replies", len(today.replies), len(today.replies)))
    replies = _grid()
    for reply in today.replies:
        replies.add_row(
            Text(f"{reply.at:%H:%M}"),
            reply.account,
            Text(f"{reply.contact or 'a contact'} re {reply.subject or reply.playbook}"),
        )
    parts.append(replies if today.replies else Text("  none"))
    return parts


@app.command("today")
def today_command(
    ctx: typer.Context,
    who: AsCsm = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="As of this time, ISO 8601. Default: now.")] = None,
    since: Annotated[
        str, typer.Option("--since", help="How far back red health and replies count (a duration).")
    ] = "1 day",
    post: Annotated[
        Post | None,
        typer.Option("--post", case_sensitive=False, help="Post it as the daily digest (once per day and CSM)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Where to post: a Slack #channel, or an email address (default: the CSM's own)."),
    ] = None,
    every_csm: Annotated[
        bool, typer.Option("--every-csm", help="With --post: the digest of every CSM the accounts name, each once.")
    ] = False,
    fmt: TableOrJson = Format.table,
) -> None:
    """Your morning: tasks due today or late, drafts waiting for your approval, your accounts that
    turned red and the replies received, in one screen. --post sends it as the daily digest."""
    from flows.engine.tick import parse_as_of
    from flows.reports.today import csm_today, csms, post_today
    from integrations.channels import build_channel
    from models import ConfigError, parse_duration

    st = state(ctx)
    engine = st.engine()
    # the day is the CSMs' own (RETAIN_DIGEST_TIMEZONE), as for the scheduled digest: a digest
    # posted by hand and the scheduled one of the same day are the same digest, posted once
    now = parse_as_of(as_of).astimezone(zoneinfo.ZoneInfo(st.settings.digest_timezone))
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise ConfigError(f"--since {since!r}: {exc}") from None
    if every_csm and post is None:
        raise typer.BadParameter("--every-csm posts each CSM's digest: add --post", param_hint="--every-csm")
    people = csms(engine) if every_csm else [csm_identity(who)]
    for person in people:
        today = csm_today(engine, person, now=now, since=window)
        if post is not None:
            address = to or (person if post is Post.email else None)
            result = post_today(today, build_channel(post.value, st.settings), engine=engine, to=address, now=now)
            err_console.print(f"daily digest {result.key}: {result.status}", markup=False, emoji=False, soft_wrap=True)
            if every_csm:
                continue
        if fmt is Format.json:
            echo_json(today.to_dict())
        else:
            for part in render_today(today, now):
                console.print(part)
