"""``wait_for``: waits until a condition holds (or a product event of the account arrives after the
wait began), checked every ``check_every``, at most ``timeout``; then the next step (or ``on_timeout``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import col, select

from flows.engine.steps._base import Handler
from models import ProductEvent, format_duration
from models.playbook import WaitForStep
from playbooks import env_for, evaluate

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _wait_for(wake: Wake, step: WaitForStep) -> bool:
    started_map = dict(wake.state.get("wait_for", {}))
    started = datetime.fromisoformat(started_map[step.id]) if step.id in started_map else wake.as_of
    if _arrived(wake, step, started):
        started_map.pop(step.id, None)
        wake.state["wait_for"] = started_map
        met = step.condition if step.condition is not None else f"event {step.event.track!r}" if step.event else ""
        wake.record("wait_for", f"{step.id}: condition met: {met}", step.id)
        wake.goto(wake.next_of(step.id))
        wake.save()
        return True
    deadline = started + step.timeout
    if wake.as_of >= deadline:
        started_map.pop(step.id, None)
        wake.state["wait_for"] = started_map
        target = step.on_timeout or wake.next_of(step.id)
        wake.record(
            "wait_for", f"{step.id}: timed out after {format_duration(step.timeout)} -> {target or 'end'}", step.id
        )
        wake.goto(target)
        wake.save()
        return True
    started_map[step.id] = started.isoformat()
    wake.state["wait_for"] = started_map
    wake.enrollment.next_due_at = min(wake.as_of + step.check_every, deadline)
    # said once, when the wait begins (the stored state knows whether it already began)
    if step.id not in (wake.enrollment.state or {}).get("wait_for", {}):
        what = step.condition if step.condition is not None else f"event {step.event.track!r}" if step.event else ""
        wake.record("wait_for", f"{step.id}: waiting for {what} (at most until {deadline:%Y-%m-%d})", step.id)
    wake.save()
    return False


def _arrived(wake: Wake, step: WaitForStep, started: datetime) -> bool:
    """The condition holds, or an event of the account arrived after the wait began (and its ``when`` holds)."""
    if step.event is None:
        return wake.holds(wake.pb.step_expression(step.id, "condition"))
    found = wake.s.exec(
        select(ProductEvent)
        .where(
            ProductEvent.account_id == wake.account.id,
            ProductEvent.type == "track",
            ProductEvent.name == step.event.track,
            col(ProductEvent.occurred_at) > started,
            col(ProductEvent.occurred_at) <= wake.as_of,
        )
        .order_by(col(ProductEvent.occurred_at), col(ProductEvent.id))
    ).all()
    when = wake.pb.expressions.get(("steps", wake.pb.step_index(step.id), "event", "when"))
    if when is None:
        return bool(found)
    return any(
        evaluate(when, env_for(wake.s, wake.account, now=wake.as_of, today=wake.today, event=event)) is True
        for event in found
    )


HANDLER = Handler(WaitForStep, _wait_for)
