"""Drafts that wait for a person: a step with ``approve:`` writes its touches as ``draft`` (rendered,
checked against unsubscribes), which the outbox never delivers. A person approves (the draft
becomes ``pending`` and the outbox sends it under its own key, so an approval never sends twice),
edits (the first draft is kept with the touch, the change goes on the timeline) or rejects it. At
the step's deadline, :func:`settle_approvals` sends, skips or escalates what is still waiting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, exists, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.engine.render import markdown_to_html
from flows.engine.steps._message import with_unsubscribe_footer
from integrations.sources import (
    ANY_CSM,
    DraftLine,
    approve_draft,
    decided_line,
    draft_of,
    list_drafts,
    may_decide,
    recipient,
    record_decision,
    reject_draft,
    show_draft,
)
from models import (
    Account,
    CsmTask,
    Enrollment,
    EnrollmentStatus,
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
        touch = draft_of(s, key)
        if touch.status != TouchStatus.DRAFT:
            raise RetainError(decided_line(touch) + ": only a waiting draft can be edited")
        may_decide(touch, by)
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
        summary = f"{touch.step_id}: draft to {recipient(touch)} edited by {by}: {what}"
        if "subject" in changes:
            summary += f" ({changes['subject']['from']!r} -> {changes['subject']['to']!r})"
        record_decision(s, touch, now, "edited", summary, by=by, changes=changes)
    return f"{key} edited ({what})"


def _reject_drafts_of_ended(s: Session, now: datetime, playbook: str | None) -> int:
    """Drafts of enrollments that ended (goal reached, exit) are never sent: what they said is stale."""
    enr = table_of(Enrollment)
    # correlated to each draft (few), not a list of every ended enrollment (many): a tick's cost
    # follows what changed, not how many enrollments ever ended
    ended = select(enr.c.id).where(enr.c.id == _T.c.enrollment_id, enr.c.status != EnrollmentStatus.ACTIVE)
    if playbook is not None:
        ended = ended.where(enr.c.playbook == playbook)
    result = execute(
        s,
        update(_T)
        .where(_T.c.status == TouchStatus.DRAFT, exists(ended))
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
    # the write first: on SQLite a transaction that reads and then writes fails at once with
    # "database is locked" when another process wrote in between (its busy timeout does not apply
    # to upgrading a read snapshot); one that starts by writing waits for the lock instead
    ended = _reject_drafts_of_ended(s, now, playbook)
    rows = execute(
        s,
        select(_T.c.id, _T.c.key, _T.c.account_id, _T.c.enrollment_id, _T.c.playbook, _T.c.step_id, _T.c.channel)
        .add_columns(_T.c.payload, _T.c.approver, _T.c.on_deadline, _T.c.approve_by, _A.c.name)
        .select_from(_T.join(_A, _A.c.id == _T.c.account_id))
        .where(*where),
    ).all()
    counts = {"send": 0, "skip": 0, "escalate": 0, "ended": ended}
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
