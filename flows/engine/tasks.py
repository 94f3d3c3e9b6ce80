"""A CSM's tasks: the list, and what a person does to one (done, snooze, reassign, note); tasks of
ended enrollments closed with the reason; the CRM's copies kept in step both ways.

Every change records who made it and lands on the account's timeline. A task mirrored in the CRM
(a task step with ``crm: true``) learns its CRM id from the receipt of the touch that created it;
a task closed in Retain is closed in the CRM through the outbox (a ``crm_task_update`` touch), and
a task completed in the CRM is completed in Retain by :func:`pull_crm_tasks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, bindparam, case, false, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from flows.engine._sql import insert_ignore
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
    "PRIORITIES",
    "CrmTasks",
    "TaskFilter",
    "TaskLine",
    "close_tasks_of_ended",
    "complete_task",
    "complete_tasks",
    "list_tasks",
    "note_task",
    "pull_crm_tasks",
    "reassign_task",
    "snooze_task",
]

PRIORITIES = ("low", "normal", "high")
_RANK = {"high": 0, "normal": 1, "low": 2}
CRM_CHANNEL = "crm"

_T, _A, _E = table_of(CsmTask), table_of(Account), table_of(Enrollment)
_TL, _TOUCH = table_of(TimelineEvent), table_of(Touch)


@dataclass(frozen=True)
class TaskLine:
    """One task as a CSM sees it."""

    id: int
    account: str  # external id
    account_name: str
    playbook: str | None
    step_id: str | None
    title: str
    priority: str
    assignee: str | None
    status: str
    due_at: datetime | None
    snoozed_until: datetime | None
    created_at: datetime
    external_id: str | None
    notes: list[dict[str, Any]]
    closed_reason: str | None

    def overdue(self, now: datetime) -> bool:
        return self.status == TaskStatus.OPEN and self.due_at is not None and self.due_at < now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks to list: ``assignee`` None is everybody's, ``status`` None any status; snoozed
    tasks only with ``snoozed``."""

    assignee: str | None = None
    account: str | None = None
    playbook: str | None = None
    priority: str | None = None
    due_before: datetime | None = None
    overdue: bool = False
    status: str | None = TaskStatus.OPEN
    snoozed: bool = False


def list_tasks(
    engine: Engine, filters: TaskFilter, *, now: datetime, limit: int | None = None
) -> tuple[list[TaskLine], int]:
    """Tasks by ``filters``, high priority and earliest due first. Returns the lines and how many
    matched in all (``limit`` cuts the lines only)."""
    f = filters
    where: list[Any] = []
    if f.assignee is not None:
        where.append(func.lower(_T.c.assignee) == f.assignee.lower())
    if f.account is not None:
        where.append(_A.c.external_id == f.account)
    if f.playbook is not None:
        where.append(_T.c.playbook == f.playbook)
    if f.priority is not None:
        where.append(_T.c.priority == f.priority)
    if f.status is not None:
        where.append(_T.c.status == f.status)
    if f.due_before is not None:
        where.append(_T.c.due_at <= f.due_before)
    if f.overdue:
        where.append(and_(_T.c.status == TaskStatus.OPEN, _T.c.due_at < now))
    if not f.snoozed:
        where.append(or_(_T.c.snoozed_until.is_(None), _T.c.snoozed_until <= now, _T.c.status != TaskStatus.OPEN))
    joined = _T.join(_A, _A.c.id == _T.c.account_id)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(joined).where(*where)).scalar_one()
        rows = conn.execute(
            select(_T, _A.c.external_id.label("account"), _A.c.name.label("account_name"))
            .select_from(joined)
            .where(*where)
            .order_by(case(*((_T.c.priority == p, r) for p, r in _RANK.items()), else_=1), _T.c.due_at.is_(None))
            .order_by(_T.c.due_at, _T.c.id)
            .limit(limit)
        ).all()
    return [_line(row._mapping) for row in rows], total


def _line(row: Any) -> TaskLine:
    return TaskLine(
        id=row["id"],
        account=row["account"],
        account_name=row["account_name"],
        playbook=row["playbook"],
        step_id=row["step_id"],
        title=row["title"],
        priority=row["priority"],
        assignee=row["assignee"],
        status=row["status"],
        due_at=row["due_at"],
        snoozed_until=row["snoozed_until"],
        created_at=row["created_at"],
        external_id=row["external_id"],
        notes=list(row["notes"] or []),
        closed_reason=row["closed_reason"],
    )


def _task(s: Session, task_id: int) -> CsmTask:
    task = s.get(CsmTask, task_id)
    if task is None:
        raise NotFoundError(f"no task {task_id} (retain tasks list shows their ids)")
    return task


def _open(task: CsmTask) -> None:
    if task.status != TaskStatus.OPEN:
        how = f" ({task.closed_reason})" if task.closed_reason else ""
        raise RetainError(f"task {task.id} is {task.status} already{how}")


def _timeline(s: Session, task: CsmTask, now: datetime, kind: str, summary: str, **detail: Any) -> None:
    s.add(
        TimelineEvent.model_validate(
            {
                "account_id": task.account_id,
                "enrollment_id": task.enrollment_id,
                "playbook": task.playbook,
                "step_id": task.step_id,
                "at": now,
                "kind": kind,
                "summary": summary,
                "detail": {"task_id": task.id, **detail},
            }
        )
    )


def complete_task(engine: Engine, task_id: int, *, by: str, now: datetime, note: str | None = None) -> str:
    """Mark a task done (and, when it is in the CRM, close it there through the outbox)."""
    with session(engine) as s:
        task = _task(s, task_id)
        _open(task)
        task.status, task.completed_at, task.closed_by, task.updated_at = TaskStatus.DONE, now, by, now
        if note:
            task.notes = [*task.notes, {"at": now.isoformat(), "by": by, "text": note}]
        s.add(task)
        _timeline(s, task, now, "task_done", f"task done by {by}: {task.title}", by=by, note=note)
        s.flush()
        pushed, dropped = _push_close(s, [task_id], now)
    crm = " (closed in the CRM too)" if pushed else " (its CRM task will not be created)" if dropped else ""
    return f"task {task_id} done: {task.title}{crm}"


def complete_tasks(s: Session, done: Sequence[tuple[int, str]], *, now: datetime) -> int:
    """Mark many open tasks done at once (``(task id, who)`` pairs): one batched update, their
    timeline lines, and their CRM copies closed through the outbox. Returns how many were open."""
    if not done:
        return 0
    by = dict(done)
    rows = execute(
        s,
        select(_T.c.id, _T.c.account_id, _T.c.enrollment_id, _T.c.playbook, _T.c.step_id, _T.c.title).where(
            _T.c.id.in_(list(by)), _T.c.status == TaskStatus.OPEN
        ),
    ).all()
    if not rows:
        return 0
    s.connection().execute(
        update(_T)
        .where(_T.c.id == bindparam("tid"), _T.c.status == TaskStatus.OPEN)
        .values(status=TaskStatus.DONE, completed_at=now, updated_at=now, closed_by=bindparam("who")),
        [{"tid": r.id, "who": by[r.id]} for r in rows],
    )
    s.connection().execute(
        insert(_TL),
        [
            {
                "account_id": r.account_id,
                "enrollment_id": r.enrollment_id,
                "playbook": r.playbook,
                "step_id": r.step_id,
                "at": now,
                "kind": "task_done",
                "summary": f"task done by {by[r.id]}: {r.title}",
                "detail": {"task_id": r.id, "by": by[r.id]},
            }
            for r in rows
        ],
    )
    _push_close(s, [r.id for r in rows], now)
    return len(rows)


def snooze_task(engine: Engine, task_id: int, *, until: datetime, by: str, now: datetime) -> str:
    """Keep a task out of the CSM's list until ``until`` (its due time moves there if earlier)."""
    if until <= now:
        raise RetainError(f"snooze until a later time than now ({now:%Y-%m-%d %H:%M} UTC)")
    with session(engine) as s:
        task = _task(s, task_id)
        _open(task)
        task.snoozed_until, task.updated_at = until, now
        if task.due_at is None or task.due_at < until:
            task.due_at = until
        s.add(task)
        _timeline(
            s, task, now, "task_snoozed", f"task snoozed by {by} until {until:%Y-%m-%d %H:%M} UTC: {task.title}", by=by
        )
    return f"task {task_id} snoozed until {until:%Y-%m-%d %H:%M} UTC"


def reassign_task(engine: Engine, task_id: int, *, to: str, by: str, now: datetime) -> str:
    """Give a task to another CSM."""
    with session(engine) as s:
        task = _task(s, task_id)
        _open(task)
        before = task.assignee
        task.assignee, task.updated_at = to, now
        s.add(task)
        _timeline(
            s, task, now, "task_reassigned", f"task reassigned by {by} from {before or 'nobody'} to {to}: {task.title}",
            by=by, previous=before, to=to,
        )  # fmt: skip
    return f"task {task_id} reassigned to {to}"


def note_task(engine: Engine, task_id: int, *, text: str, by: str, now: datetime) -> str:
    """Add a note to a task (kept on the task and on the timeline)."""
    if not text.strip():
        raise RetainError("the note is empty")
    with session(engine) as s:
        task = _task(s, task_id)
        task.notes, task.updated_at = [*task.notes, {"at": now.isoformat(), "by": by, "text": text}], now
        s.add(task)
        _timeline(s, task, now, "task_note", f"note by {by} on task {task.title!r}: {text}", by=by)
    return f"note added to task {task_id}"


def close_tasks_of_ended(s: Session, now: datetime, *, playbook: str | None = None) -> int:
    """Close the open tasks of enrollments that ended, with the reason (unless their step said
    ``keep_open``); those in the CRM are closed there through the outbox. One query finds them, one
    batched update closes them. Returns how many."""
    where = [_T.c.status == TaskStatus.OPEN, _T.c.keep_open == false(), _E.c.status != EnrollmentStatus.ACTIVE]
    if playbook is not None:
        where.append(_E.c.playbook == playbook)
    rows = execute(
        s,
        select(_T.c.id, _T.c.account_id, _T.c.enrollment_id, _T.c.playbook, _T.c.step_id, _T.c.title)
        .add_columns(
            _T.c.external_id, _T.c.touch_id, _E.c.status.label("ended"), _E.c.outcome, _E.c.playbook.label("pb")
        )
        .select_from(_T.join(_E, _E.c.id == _T.c.enrollment_id))
        .where(*where),
    ).all()
    if not rows:
        return 0
    closing = [
        {"tid": r.id, "reason": f"its enrollment in {r.pb} ended: {r.ended}" + (f" ({r.outcome})" if r.outcome else "")}
        for r in rows
    ]
    s.connection().execute(
        update(_T)
        .where(_T.c.id == bindparam("tid"), _T.c.status == TaskStatus.OPEN)
        .values(status=TaskStatus.CLOSED, closed_reason=bindparam("reason"), closed_by="retain", updated_at=now),
        closing,
    )
    s.connection().execute(
        insert(_TL),
        [
            {
                "account_id": r.account_id,
                "enrollment_id": r.enrollment_id,
                "playbook": r.pb,
                "step_id": r.step_id,
                "at": now,
                "kind": "task_closed",
                "summary": f"task closed: {r.title} ({c['reason']})",
                "detail": {"task_id": r.id, "reason": c["reason"]},
            }
            for r, c in zip(rows, closing, strict=True)
        ],
    )
    _push_close(s, [r.id for r in rows if r.external_id is not None or r.touch_id is not None], now)
    return len(rows)


def _push_close(s: Session, task_ids: Sequence[int], now: datetime) -> tuple[int, int]:
    """Close these tasks in the CRM too: a ``crm_task_update`` touch for each one the CRM has (the
    outbox delivers it); a create still waiting in the outbox is dropped instead. Returns how many
    are closed in the CRM, and how many creates were dropped."""
    if not task_ids:
        return 0, 0
    learn_crm_ids(s)
    closed = dropped = 0
    for start in range(0, len(task_ids), _CLOSE_BATCH):  # bounded parameters (PostgreSQL: 65,535)
        c, d = _push_close_batch(s, task_ids[start : start + _CLOSE_BATCH], now)
        closed, dropped = closed + c, dropped + d
    return closed, dropped


#: tasks closed in the CRM per statement
_CLOSE_BATCH = 5_000


def _push_close_batch(s: Session, task_ids: Sequence[int], now: datetime) -> tuple[int, int]:
    not_yet = select(_T.c.touch_id).where(_T.c.id.in_(task_ids), _T.c.external_id.is_(None), _T.c.touch_id.is_not(None))
    dropped = execute(
        s,
        update(_TOUCH)
        .where(_TOUCH.c.id.in_(not_yet), _TOUCH.c.status == TouchStatus.PENDING)
        .values(status=TouchStatus.DROPPED, reason="its task was closed in Retain before it reached the CRM"),
    )
    mirrored = execute(
        s,
        select(_T.c.id, _T.c.enrollment_id, _T.c.account_id, _T.c.playbook, _T.c.step_id, _T.c.external_id).where(
            _T.c.id.in_(task_ids), _T.c.external_id.is_not(None)
        ),
    ).all()
    if mirrored:
        s.connection().execute(
            insert_ignore(s, _TOUCH),
            [
                {
                    "key": f"task:{t.id}:close",
                    "enrollment_id": t.enrollment_id,
                    "account_id": t.account_id,
                    "playbook": t.playbook,
                    "step_id": t.step_id,
                    "channel": CRM_CHANNEL,
                    "status": TouchStatus.PENDING,
                    "payload": {"kind": "crm_task_update", "task": t.external_id, "status": "COMPLETED"},
                    "created_at": now,
                }
                for t in mirrored
            ],
        )
    return len(mirrored), int(dropped.rowcount or 0)


class CrmTasks(Protocol):
    """What the CRM channel offers for keeping tasks in step: the state of tasks by CRM id."""

    async def task_states(self, ids: Sequence[str]) -> dict[str, str]: ...


def learn_crm_ids(s: Session) -> int:
    """Give each CRM-mirrored task the CRM id from the receipt of the touch that created it."""
    made = (
        select(_TOUCH.c.provider_id)
        .where(_TOUCH.c.id == _T.c.touch_id, _TOUCH.c.status == TouchStatus.DELIVERED)
        .scalar_subquery()
    )
    result = execute(
        s,
        update(_T)
        .where(_T.c.external_id.is_(None), _T.c.touch_id.is_not(None), made.is_not(None))
        .values(external_id=made),
    )
    return int(result.rowcount or 0)


def pull_crm_tasks(engine: Engine, crm: CrmTasks, *, now: datetime) -> dict[str, int]:
    """Complete in Retain the open tasks that were completed in the CRM. Returns counts: ``linked``
    (tasks that learned their CRM id), ``checked``, ``completed``."""
    with session(engine) as s:
        linked = learn_crm_ids(s)
        open_ids: dict[str, int] = dict(
            execute(
                s,
                select(_T.c.external_id, _T.c.id).where(_T.c.status == TaskStatus.OPEN, _T.c.external_id.is_not(None)),
            ).all()
        )
    states = asyncio.run(crm.task_states(sorted(open_ids))) if open_ids else {}
    done = [open_ids[crm_id] for crm_id, state in states.items() if state == "COMPLETED" and crm_id in open_ids]
    with session(engine) as s:
        for task_id in done:
            task = _task(s, task_id)
            if task.status != TaskStatus.OPEN:
                continue  # closed in Retain meanwhile
            task.status, task.completed_at, task.closed_by, task.updated_at = TaskStatus.DONE, now, "crm", now
            s.add(task)
            _timeline(s, task, now, "task_done", f"task completed in the CRM: {task.title}", by="crm")
    return {"linked": linked, "checked": len(open_ids), "completed": len(done)}
