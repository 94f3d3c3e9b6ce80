"""``task``: a task for the CSM, written in this transaction, and mirrored in the CRM on request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from flows.engine.render import render_value
from flows.engine.steps._base import Handler, then_next
from models import CsmTask, Touch, table_of
from models.playbook import TaskStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]

CHANNEL = "crm"  # only with ``crm: true``


def _keeps_open(wake: Wake, step: TaskStep) -> bool:
    """The step's ``keep_open``; unset, a task that hands off stays open: the last step, or one
    followed by an ``exit`` step (the enrollment ends as soon as it is written)."""
    if step.keep_open is not None:
        return step.keep_open
    after = wake.next_of(step.id)
    return after is None or wake.pb.spec.steps[wake.pb.step_index(after)].kind == "exit"


def _task(wake: Wake, step: TaskStep, visit: int) -> None:
    variables = wake.variables(step.id)
    title = render_value(step.title, variables)
    body = render_value(step.body, variables) if step.body else None
    assignee = render_value(step.assignee, variables) if step.assignee else wake.account.csm_email
    due = wake.as_of + step.due_in
    task: dict[str, Any] = {
        "account_id": wake.account.id,
        "enrollment_id": wake.enrollment.id,
        "playbook": wake.pb.id,
        "step_id": step.id,
        "keep_open": _keeps_open(wake, step),
        "notes": [],
        "title": title,
        "body": body,
        "priority": step.priority,
        "assignee": assignee,
        "due_at": due,
        "status": "open",
        "created_at": wake.as_of,
    }
    record = f"{step.id}: task for {assignee or 'the CSM'}: {title} (due {due:%Y-%m-%d})"
    if not step.crm:
        wake.s.connection().execute(wake.writes.task, task)
        wake.record("task", record, step.id)
        return
    payload = {
        "kind": "crm_task",
        "company": wake.account.external_id,
        "title": title,
        "body": body,
        "priority": step.priority,
        "due_at": due.isoformat(),
        "assignee": assignee,
    }
    key = wake.touch(step.id, visit, CHANNEL, payload)
    wake.writes.flush_touches()  # the task's row reads the touch's id below
    # the task knows the touch that creates it in the CRM: its receipt is the CRM's id for the task
    touch = table_of(Touch)
    made_by = select(touch.c.id).where(touch.c.key == key).scalar_subquery()
    wake.s.connection().execute(insert(table_of(CsmTask)).values(touch_id=made_by), task)
    wake.record("task", record, step.id)


HANDLER = Handler(TaskStep, then_next(_task), channels=(CHANNEL,))
