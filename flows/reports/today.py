"""A CSM's morning (``retain today``): the tasks due today or late, the drafts waiting for their
approval, their accounts whose health turned red, and the replies received, in one screen; and
the same as a daily digest, posted once per day and CSM (a ``digest_post`` row per key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Engine

from flows.engine.approvals import DraftLine, list_drafts
from flows.engine.tasks import TaskFilter, TaskLine, list_tasks
from integrations.channels import Channel
from integrations.links import LinkConfig
from integrations.sources import approvals_link
from models import Account, Contact, HealthScore, Touch, table_of

from .reports import Digest, PostResult, post_once

__all__ = ["RedAccount", "Reply", "Today", "csm_today", "csms", "post_today"]

_A, _H, _T, _C = table_of(Account), table_of(HealthScore), table_of(Touch), table_of(Contact)


@dataclass(frozen=True)
class RedAccount:
    """An account of the CSM whose health turned red since the last look."""

    account: str
    name: str
    score: float
    was: str | None  # the band before (None: first scored red)
    at: datetime


@dataclass(frozen=True)
class Reply:
    """A reply received to a touch (a message the playbooks sent to one of the CSM's accounts)."""

    account: str
    name: str
    contact: str | None
    subject: str | None
    playbook: str | None
    at: datetime


@dataclass
class Today:
    csm: str
    as_of: datetime
    since: datetime
    tasks: list[TaskLine] = field(default_factory=list)
    tasks_total: int = 0
    drafts: list[DraftLine] = field(default_factory=list)
    drafts_total: int = 0
    red: list[RedAccount] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    #: the CSM's approvals page of ``retain web`` (a signed link), when drafts wait
    approvals_url: str | None = None

    @property
    def title(self) -> str:
        return f"Today for {self.csm}, {self.as_of:%a %d %b %Y}"

    def empty(self) -> bool:
        return not (self.tasks or self.drafts or self.red or self.replies)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tasks"] = [t.to_dict() | {"overdue": t.overdue(self.as_of)} for t in self.tasks]
        return data

    @property
    def markdown(self) -> str:
        """The digest's text: short lines, as a chat message or a plain email reads it."""
        lines = [f"# {self.title}", ""]
        lines.append(f"## Tasks due ({self.tasks_total})")
        lines += [
            f"- {'LATE ' if t.overdue(self.as_of) else ''}[{t.priority}] {t.account}: {t.title} (task {t.id})"
            for t in self.tasks
        ] or ["- none"]
        lines += ["", f"## Waiting for your approval ({self.drafts_total})"]
        lines += [f"- {d.account}: {d.subject or d.channel} to {d.to} ({d.key})" for d in self.drafts] or ["- none"]
        if self.approvals_url and self.drafts:
            lines.append(f"- review them: {self.approvals_url}")
        lines += ["", f"## Turned red ({len(self.red)})"]
        lines += [
            f"- {r.name} ({r.account}): health {r.score:.0f}" + (f", was {r.was}" if r.was else "") for r in self.red
        ] or ["- none"]
        lines += ["", f"## Replies ({len(self.replies)})"]
        lines += [f"- {r.name}: {r.contact or 'a contact'} re {r.subject or r.playbook}" for r in self.replies] or [
            "- none"
        ]
        return "\n".join(lines) + "\n"


def csms(engine: Engine) -> list[str]:
    """Every CSM an account names (``csm_email``)."""
    with engine.connect() as conn:
        rows = conn.execute(select(_A.c.csm_email).where(_A.c.csm_email.is_not(None)).distinct())
        return sorted({r[0] for r in rows if r[0]})


def csm_today(engine: Engine, csm: str, *, now: datetime, since: timedelta = timedelta(days=1)) -> Today:
    """What ``csm`` has to see at ``now``: tasks due by the end of the day (UTC) or late, drafts
    waiting for them, their accounts that turned red and the replies received in the last ``since``."""
    start = now - since
    end_of_day = now.replace(hour=23, minute=59, second=59, microsecond=0)
    today = Today(csm=csm, as_of=now, since=start)
    today.tasks, today.tasks_total = list_tasks(
        engine, TaskFilter(assignee=csm, due_before=end_of_day), now=now, limit=10
    )
    today.drafts, today.drafts_total = list_drafts(engine, approver=csm, limit=10)
    if today.drafts:
        today.approvals_url = approvals_link(LinkConfig.from_environment(), csm, now)
    today.red = _turned_red(engine, csm, start, now)
    today.replies = _replies(engine, csm, start, now)
    return today


def _turned_red(engine: Engine, csm: str, start: datetime, now: datetime) -> list[RedAccount]:
    """The CSM's accounts whose latest score (scored in the window) is red and the one before it was not."""
    ranked = (
        select(
            _H.c.account_id,
            _H.c.band,
            _H.c.score,
            _H.c.scored_at,
            func.row_number()
            .over(partition_by=_H.c.account_id, order_by=(_H.c.scored_at.desc(), _H.c.id.desc()))
            .label("n"),
        )
        .where(_H.c.scored_at <= now)
        .subquery()
    )
    latest, before = ranked.alias("latest"), ranked.alias("before")
    query = (
        select(_A.c.external_id, _A.c.name, latest.c.score, before.c.band, latest.c.scored_at)
        .select_from(
            _A.join(latest, and_(latest.c.account_id == _A.c.id, latest.c.n == 1)).outerjoin(
                before, and_(before.c.account_id == _A.c.id, before.c.n == 2)
            )
        )
        .where(
            func.lower(_A.c.csm_email) == csm.lower(),
            latest.c.band == "red",
            latest.c.scored_at > start,
            (before.c.band.is_(None)) | (before.c.band != "red"),
        )
        .order_by(latest.c.score, _A.c.external_id)
    )
    with engine.connect() as conn:
        return [RedAccount(r[0], r[1], float(r[2]), r[3], r[4]) for r in conn.execute(query)]


def _replies(engine: Engine, csm: str, start: datetime, now: datetime) -> list[Reply]:
    query = (
        select(_A.c.external_id, _A.c.name, _C.c.email, _T.c.payload, _T.c.playbook, _T.c.replied_at)
        .select_from(_T.join(_A, _A.c.id == _T.c.account_id).outerjoin(_C, _C.c.id == _T.c.contact_id))
        .where(func.lower(_A.c.csm_email) == csm.lower(), _T.c.replied_at > start, _T.c.replied_at <= now)
        .order_by(_T.c.replied_at.desc())
        .limit(20)
    )
    with engine.connect() as conn:
        return [Reply(r[0], r[1], r[2], (r[3] or {}).get("subject"), r[4], r[5]) for r in conn.execute(query)]


def post_today(
    today: Today, channel: Channel, *, engine: Engine, to: str | None = None, now: datetime | None = None
) -> PostResult:
    """Post a CSM's day once: the key ``today:<YYYY-MM-DD>:<csm>:<channel>[:<to>]`` is posted at most
    once, whoever runs it and however often."""
    key = f"today:{today.as_of:%Y-%m-%d}:{today.csm.lower()}:{channel.name}" + (f":{to}" if to else "")
    return post_once(key, Digest(today.title, today.markdown), channel, engine=engine, to=to, now=now)
