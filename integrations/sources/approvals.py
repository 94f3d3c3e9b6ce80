"""A person's decision on a drafted message (a step with ``approve:``), from the CLI or from the
approvals page of ``retain web``: the drafts waiting for a CSM, one draft, approve, reject.

Approving is one conditional update (``draft`` -> ``pending``): the outbox then sends the touch
under its own key, so a second approval, or one racing the outbox or the deadline, never sends it
twice. Editing a draft and the deadlines are the engine's (``flows.engine.approvals``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from sqlmodel import select as sqlmodel_select

from integrations.links import LinkConfig, last_valid_day, sign, verify, with_token
from models import (
    Account,
    NotFoundError,
    RetainError,
    TimelineEvent,
    Touch,
    TouchStatus,
    execute,
    session,
    table_of,
)

__all__ = [
    "ANY_CSM",
    "APPROVALS_LINK_DAYS",
    "DraftLine",
    "approvals_link",
    "approve_draft",
    "csm_of_approvals_token",
    "decided_line",
    "draft_of",
    "list_drafts",
    "may_decide",
    "recipient",
    "record_decision",
    "reject_draft",
    "show_draft",
]

#: how long a CSM's link to the approvals page holds (it comes with each daily digest)
APPROVALS_LINK_DAYS = 2
_PURPOSE = "approvals"


def approvals_link(config: LinkConfig, csm: str, now: datetime) -> str:
    """The link to ``csm``'s approvals page of ``retain web``: signed (with the survey secret, for
    this purpose only) and valid for :data:`APPROVALS_LINK_DAYS` days. Send it to that CSM only."""
    token = sign(config.survey_key, _PURPOSE, csm.strip().lower(), last_valid_day(now, APPROVALS_LINK_DAYS))
    return with_token(f"{config.public_url.rstrip('/')}/approvals", token)


def csm_of_approvals_token(config: LinkConfig, token: str, now: datetime) -> str:
    """The CSM an approvals link was made for (raises ``InvalidLink`` / ``ExpiredLink``)."""
    csm, _ = verify(config.survey_key, _PURPOSE, token, now.date())
    return csm


_T, _A, _TL = table_of(Touch), table_of(Account), table_of(TimelineEvent)
#: the approver of a draft of an account without a CSM: any CSM may decide
ANY_CSM = "csm"


@dataclass(frozen=True)
class DraftLine:
    """A draft as the approver sees it."""

    key: str
    account: str
    account_name: str
    playbook: str | None
    step_id: str | None
    channel: str
    to: str | None
    subject: str | None
    approver: str | None
    approve_by: datetime | None
    on_deadline: str | None
    status: str
    created_at: datetime
    edited: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _line(row: Any) -> DraftLine:
    payload = row["payload"] or {}
    return DraftLine(
        key=row["key"],
        account=row["account"],
        account_name=row["account_name"],
        playbook=row["playbook"],
        step_id=row["step_id"],
        channel=row["channel"],
        to=payload.get("to"),
        subject=payload.get("subject"),
        approver=row["approver"],
        approve_by=row["approve_by"],
        on_deadline=row["on_deadline"],
        status=row["status"],
        created_at=row["created_at"],
        edited=row["draft"] is not None,
    )


def _query() -> Any:
    return select(_T, _A.c.external_id.label("account"), _A.c.name.label("account_name")).select_from(
        _T.join(_A, _A.c.id == _T.c.account_id)
    )


def list_drafts(
    engine: Engine, *, approver: str | None = None, account: str | None = None, limit: int | None = None
) -> tuple[list[DraftLine], int]:
    """The drafts waiting for approval (``approver``'s and those any CSM may approve; None: all),
    the oldest first, and how many wait in all."""
    where: list[Any] = [_T.c.status == TouchStatus.DRAFT]
    if approver is not None:
        where.append(func.lower(_T.c.approver).in_([approver.lower(), ANY_CSM]))
    if account is not None:
        where.append(_A.c.external_id == account)
    with engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(_T.join(_A, _A.c.id == _T.c.account_id)).where(*where)
        ).scalar_one()
        rows = conn.execute(_query().where(*where).order_by(_T.c.created_at, _T.c.id).limit(limit)).all()
    return [_line(r._mapping) for r in rows], total


def show_draft(engine: Engine, key: str) -> tuple[DraftLine, dict[str, Any], dict[str, Any] | None]:
    """A draft (or a decided one): its line, the message as it stands, and the first draft when edited."""
    with engine.connect() as conn:
        row = conn.execute(_query().where(_T.c.key == key)).first()
    if row is None or row._mapping["approver"] is None:
        raise NotFoundError(f"no draft with key {key!r} (retain approvals list shows them)")
    return _line(row._mapping), dict(row._mapping["payload"] or {}), row._mapping["draft"]


def draft_of(s: Session, key: str) -> Touch:
    touch: Touch | None = s.exec(sqlmodel_select(Touch).where(Touch.key == key)).first()
    if touch is None or touch.approver is None:
        raise NotFoundError(f"no draft with key {key!r} (retain approvals list shows them)")
    return touch


def may_decide(touch: Touch, by: str) -> None:
    if touch.approver not in (None, ANY_CSM) and touch.approver.lower() != by.lower():
        raise RetainError(f"only {touch.approver} may decide on {touch.key} (you are {by}: --as or RETAIN_CSM)")


def decided_line(touch: Touch) -> str:
    when = f" at {touch.decided_at:%Y-%m-%d %H:%M} UTC" if touch.decided_at else ""
    who = f" by {touch.decided_by}" if touch.decided_by else ""
    if touch.status == TouchStatus.REJECTED:
        return f"{touch.key} was rejected{who}{when}"
    return f"{touch.key} was approved{who}{when} ({touch.status})"


def record_decision(s: Session, touch: Touch, now: datetime, kind: str, summary: str, **detail: Any) -> None:
    s.add(
        TimelineEvent.model_validate(
            {
                "account_id": touch.account_id,
                "enrollment_id": touch.enrollment_id,
                "playbook": touch.playbook,
                "step_id": touch.step_id,
                "at": now,
                "kind": kind,
                "summary": summary,
                "detail": {"key": touch.key, **detail},
            }
        )
    )


def recipient(touch: Touch) -> str:
    return str(touch.payload.get("to") or touch.channel)


def approve_draft(engine: Engine, key: str, *, by: str, now: datetime) -> tuple[bool, str]:
    """Approve a draft: it becomes pending and the outbox sends it, once, under its key. The change
    is one conditional update, so two approvals (or an approval racing the deadline) send it once.
    Returns whether this call approved it, and what happened.

    The update opens its own transaction: on SQLite a transaction that reads and then writes fails
    at once ("database is locked") when another process wrote in between, as the busy timeout does
    not cover upgrading a read snapshot; one that starts by writing waits for the lock."""
    with session(engine) as s:
        touch = draft_of(s, key)
    if touch.status != TouchStatus.DRAFT:
        if touch.status == TouchStatus.REJECTED:
            raise RetainError(decided_line(touch) + ": it cannot be approved now")
        return False, decided_line(touch) + ": nothing to do"
    may_decide(touch, by)
    with session(engine) as s:  # a transaction of its own that starts by writing (see above)
        changed = execute(
            s,
            update(_T)
            .where(_T.c.id == touch.id, _T.c.status == TouchStatus.DRAFT)
            .values(status=TouchStatus.PENDING, decided_by=by, decided_at=now, not_before=None),
        ).rowcount
        if not changed:  # someone decided between the read and the update
            s.rollback()
            return False, f"{key} was decided meanwhile: nothing to do"
        record_decision(
            s, touch, now, "approved", f"{touch.step_id}: {touch.channel} to {recipient(touch)} approved by {by}", by=by
        )
    return True, f"{key} approved: the outbox sends it"


def reject_draft(engine: Engine, key: str, *, by: str, now: datetime, reason: str | None = None) -> str:
    """Reject a draft: it is never sent."""
    with session(engine) as s:
        touch = draft_of(s, key)
    if touch.status != TouchStatus.DRAFT:
        raise RetainError(decided_line(touch) + ": it cannot be rejected now")
    may_decide(touch, by)
    why = f"rejected by {by}" + (f": {reason}" if reason else "")
    with session(engine) as s:  # a transaction of its own that starts by writing (see approve_draft)
        changed = execute(
            s,
            update(_T)
            .where(_T.c.id == touch.id, _T.c.status == TouchStatus.DRAFT)
            .values(status=TouchStatus.REJECTED, decided_by=by, decided_at=now, reason=why),
        ).rowcount
        if not changed:
            raise RetainError(f"{key} was decided meanwhile")
        record_decision(
            s,
            touch,
            now,
            "rejected",
            f"{touch.step_id}: {touch.channel} to {recipient(touch)} {why}",
            by=by,
            reason=reason,
        )
    return f"{key} rejected: it will not be sent"
