"""Drafts that wait for a person: a step with ``approve:`` writes its touches as ``draft`` (rendered,
checked against unsubscribes), which the outbox never delivers. A person approves (the draft
becomes ``pending`` and the outbox sends it under its own key, so an approval never sends twice),
edits (the first draft is kept with the touch, the change goes on the timeline) or rejects it. At
the step's deadline, :func:`settle_approvals` sends, skips or escalates what is still waiting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session
from sqlmodel import select as sqlmodel_select

from flows.engine.render import markdown_to_html
from flows.engine.steps._message import with_unsubscribe_footer
from models import (
    Account,
    CsmTask,
    Enrollment,
    EnrollmentStatus,
    NotFoundError,
    RetainError,
    TaskStatus,
    TimelineEvent,
    Touch,
    TouchStatus,
    execute,
    session,
    table_of,
)

__all__ = [
    "DraftLine",
    "approve_draft",
    "edit_draft",
    "list_drafts",
    "reject_draft",
    "settle_approvals",
    "show_draft",
]

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


def _draft(s: Session, key: str) -> Touch:
    touch: Touch | None = s.exec(sqlmodel_select(Touch).where(Touch.key == key)).first()
    if touch is None or touch.approver is None:
        raise NotFoundError(f"no draft with key {key!r} (retain approvals list shows them)")
    return touch


def _may_decide(touch: Touch, by: str) -> None:
    if touch.approver not in (None, ANY_CSM) and touch.approver.lower() != by.lower():
        raise RetainError(f"only {touch.approver} may decide on {touch.key} (you are {by}: --as or RETAIN_CSM)")


def _decided(touch: Touch) -> str:
    when = f" at {touch.decided_at:%Y-%m-%d %H:%M} UTC" if touch.decided_at else ""
    who = f" by {touch.decided_by}" if touch.decided_by else ""
    if touch.status == TouchStatus.REJECTED:
        return f"{touch.key} was rejected{who}{when}"
    return f"{touch.key} was approved{who}{when} ({touch.status})"


def _record(s: Session, touch: Touch, now: datetime, kind: str, summary: str, **detail: Any) -> None:
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


def _to(touch: Touch) -> str:
    return str(touch.payload.get("to") or touch.channel)


def approve_draft(engine: Engine, key: str, *, by: str, now: datetime) -> tuple[bool, str]:
    """Approve a draft: it becomes pending and the outbox sends it, once, under its key. The change
    is one conditional update, so two approvals (or an approval racing the deadline) send it once.
    Returns whether this call approved it, and what happened."""
    with session(engine) as s:
        touch = _draft(s, key)
        if touch.status != TouchStatus.DRAFT:
            if touch.status == TouchStatus.REJECTED:
                raise RetainError(_decided(touch) + ": it cannot be approved now")
            return False, _decided(touch) + ": nothing to do"
        _may_decide(touch, by)
        changed = execute(
            s,
            update(_T)
            .where(_T.c.id == touch.id, _T.c.status == TouchStatus.DRAFT)
            .values(status=TouchStatus.PENDING, decided_by=by, decided_at=now, not_before=None),
        ).rowcount
        if not changed:  # someone decided between the read and the update
            s.rollback()
            return False, f"{key} was decided meanwhile: nothing to do"
        _record(s, touch, now, "approved", f"{touch.step_id}: {touch.channel} to {_to(touch)} approved by {by}", by=by)
    return True, f"{key} approved: the outbox sends it"


def reject_draft(engine: Engine, key: str, *, by: str, now: datetime, reason: str | None = None) -> str:
    """Reject a draft: it is never sent."""
    with session(engine) as s:
        touch = _draft(s, key)
        if touch.status != TouchStatus.DRAFT:
            raise RetainError(_decided(touch) + ": it cannot be rejected now")
        _may_decide(touch, by)
        why = f"rejected by {by}" + (f": {reason}" if reason else "")
        changed = execute(
            s,
            update(_T)
            .where(_T.c.id == touch.id, _T.c.status == TouchStatus.DRAFT)
            .values(status=TouchStatus.REJECTED, decided_by=by, decided_at=now, reason=why),
        ).rowcount
        if not changed:
            raise RetainError(f"{key} was decided meanwhile")
        _record(
            s, touch, now, "rejected", f"{touch.step_id}: {touch.channel} to {_to(touch)} {why}", by=by, reason=reason
        )
    return f"{key} rejected: it will not be sent"


def edit_draft(
    engine: Engine, key: str, *, by: str, now: datetime, subject: str | None = None, text: str | None = None
) -> str:
    """Change a draft's subject and/or text (Markdown: the HTML is made again, with the unsubscribe
    footer). The first draft is kept with the touch; the timeline says who changed what."""
    if subject is None and text is None:
        raise RetainError("say what to change: --subject and/or --body-file")
    if subject is not None and not subject.strip():
        raise RetainError("the subject would be empty")
    if text is not None and not text.strip():
        raise RetainError("the text would be empty")
    with session(engine) as s:
        touch = _draft(s, key)
        if touch.status != TouchStatus.DRAFT:
            raise RetainError(_decided(touch) + ": only a waiting draft can be edited")
        _may_decide(touch, by)
        payload = dict(touch.payload)
        changes: dict[str, Any] = {}
        if subject is not None and subject != payload.get("subject"):
            changes["subject"] = {"from": payload.get("subject"), "to": subject}
            payload["subject"] = subject
        if text is not None:
            link = payload.get("unsubscribe_url")
            stripped = {k: v for k, v in payload.items() if k not in ("text", "html")}
            rebuilt = {**stripped, "text": text, "html": markdown_to_html(text)}
            rebuilt = with_unsubscribe_footer(rebuilt, link) if isinstance(link, str) else rebuilt
            if rebuilt.get("text") != payload.get("text"):
                changes["text"] = {"from": payload.get("text"), "to": rebuilt["text"]}
            payload = rebuilt
        if not changes:
            return f"{key}: nothing changed"
        values: dict[str, Any] = {"payload": payload}
        if touch.draft is None:
            values["draft"] = touch.payload  # the first draft, as rendered
        execute(s, update(_T).where(_T.c.id == touch.id, _T.c.status == TouchStatus.DRAFT).values(**values))
        what = " and ".join("the subject" if k == "subject" else "the text" for k in changes)
        summary = f"{touch.step_id}: draft to {_to(touch)} edited by {by}: {what}"
        if "subject" in changes:
            summary += f" ({changes['subject']['from']!r} -> {changes['subject']['to']!r})"
        _record(s, touch, now, "edited", summary, by=by, changes=changes)
    return f"{key} edited ({what})"


def _reject_drafts_of_ended(s: Session, now: datetime, playbook: str | None) -> int:
    """Drafts of enrollments that ended (goal reached, exit) are never sent: what they said is stale."""
    enr = table_of(Enrollment)
    ended = select(enr.c.id).where(enr.c.status != EnrollmentStatus.ACTIVE)
    if playbook is not None:
        ended = ended.where(enr.c.playbook == playbook)
    result = execute(
        s,
        update(_T)
        .where(_T.c.status == TouchStatus.DRAFT, _T.c.enrollment_id.in_(ended))
        .values(
            status=TouchStatus.REJECTED,
            decided_by="retain",
            decided_at=now,
            reason="its enrollment ended before approval",
        ),
    )
    return int(result.rowcount or 0)


def settle_approvals(s: Session, now: datetime, *, playbook: str | None = None) -> dict[str, int]:
    """Drafts past their deadline: ``send`` makes them pending (the outbox sends them), ``skip``
    rejects them, ``escalate`` gives the approver a high-priority task (once) while they wait.
    One query finds them, batched statements act. Returns counts by what happened."""
    where = [
        _T.c.status == TouchStatus.DRAFT,
        _T.c.approve_by <= now,
        _T.c.on_deadline.in_(("send", "skip", "escalate")),
    ]
    if playbook is not None:
        where.append(_T.c.playbook == playbook)
    rows = execute(
        s,
        select(_T.c.id, _T.c.key, _T.c.account_id, _T.c.enrollment_id, _T.c.playbook, _T.c.step_id, _T.c.channel)
        .add_columns(_T.c.payload, _T.c.approver, _T.c.on_deadline, _T.c.approve_by, _A.c.name)
        .select_from(_T.join(_A, _A.c.id == _T.c.account_id))
        .where(*where),
    ).all()
    counts = {"send": 0, "skip": 0, "escalate": 0}
    counts["ended"] = _reject_drafts_of_ended(s, now, playbook)
    if not rows:
        return counts
    outcome = {"send": TouchStatus.PENDING, "skip": TouchStatus.REJECTED, "escalate": TouchStatus.DRAFT}
    s.connection().execute(
        update(_T)
        .where(_T.c.id == bindparam("tid"), _T.c.status == TouchStatus.DRAFT)
        .values(
            status=bindparam("new_status"),
            decided_by=bindparam("decider"),
            decided_at=bindparam("decided"),
            reason=bindparam("why"),
            on_deadline=bindparam("then"),
        ),
        [
            {
                "tid": r.id,
                "new_status": outcome[r.on_deadline],
                "decider": None if r.on_deadline == "escalate" else "deadline",
                "decided": None if r.on_deadline == "escalate" else now,
                "why": {
                    "send": "approval deadline passed: sent as drafted",
                    "skip": "approval deadline passed: not sent",
                    "escalate": "approval deadline passed: escalated to the approver",
                }[r.on_deadline],
                "then": "escalated" if r.on_deadline == "escalate" else r.on_deadline,
            }
            for r in rows
        ],
    )
    said = {"send": "sent as drafted", "skip": "skipped (not sent)", "escalate": "escalated to {approver}"}
    s.connection().execute(
        insert(_TL),
        [
            {
                "account_id": r.account_id,
                "enrollment_id": r.enrollment_id,
                "playbook": r.playbook,
                "step_id": r.step_id,
                "at": now,
                "kind": "deadline",
                "summary": f"{r.step_id}: {r.channel} to {(r.payload or {}).get('to') or r.channel} not approved by "
                f"{r.approve_by:%Y-%m-%d %H:%M} UTC: " + said[r.on_deadline].format(approver=r.approver),
                "detail": {"key": r.key, "then": r.on_deadline},
            }
            for r in rows
        ],
    )
    escalated = [r for r in rows if r.on_deadline == "escalate"]
    if escalated:
        s.connection().execute(
            insert(table_of(CsmTask)),
            [
                {
                    "account_id": r.account_id,
                    "enrollment_id": r.enrollment_id,
                    "playbook": r.playbook,
                    "step_id": r.step_id,
                    "title": f"Approve or reject the {r.channel} to {(r.payload or {}).get('to') or r.name}: "
                    f"retain approvals show {r.key}",
                    "priority": "high",
                    "assignee": None if r.approver == ANY_CSM else r.approver,
                    "status": TaskStatus.OPEN,
                    "due_at": now,
                    "keep_open": False,
                    "notes": [],
                    "created_at": now,
                }
                for r in escalated
            ],
        )
    for r in rows:
        counts[r.on_deadline] += 1
    return counts
