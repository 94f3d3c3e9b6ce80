"""``task``: a task for the CSM, written in this transaction, and mirrored in the CRM on request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.render import render_value
from flows.engine.steps._base import Handler, then_next
from models.playbook import TaskStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]

CHANNEL = "crm"  # only with ``crm: true``


def _task(wake: Wake, step: TaskStep, visit: int) -> None:
    variables = wake.variables(step.id)
    title = render_value(step.title, variables)
    body = render_value(step.body, variables) if step.body else None
    assignee = render_value(step.assignee, variables) if step.assignee else wake.account.csm_email
    due = wake.as_of + step.due_in
    task = {
        "account_id": wake.account.id,
        "enrollment_id": wake.enrollment.id,
        "title": title,
        "body": body,
        "priority": step.priority,
        "assignee": assignee,
        "due_at": due,
        "status": "open",
        "created_at": wake.as_of,
    }
    wake.s.connection().execute(wake.writes.task, task)
    wake.record("task", f"{step.id}: task for {assignee or 'the CSM'}: {title} (due {due:%Y-%m-%d})", step.id)
    if step.crm:
        payload = {
            "kind": "crm_task",
            "company": wake.account.external_id,
            "title": title,
            "body": body,
            "priority": step.priority,
            "due_at": due.isoformat(),
            "assignee": assignee,
        }
        wake.touch(step.id, visit, CHANNEL, payload)


HANDLER = Handler(TaskStep, then_next(_task), channels=(CHANNEL,))
