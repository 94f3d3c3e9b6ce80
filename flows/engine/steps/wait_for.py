"""``wait_for``: waits until a condition holds, checked every ``check_every``, at most ``timeout``;
then the next step (or ``on_timeout``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from flows.engine.steps._base import Handler
from models import format_duration
from models.playbook import WaitForStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _wait_for(wake: Wake, step: WaitForStep) -> bool:
    started_map = dict(wake.state.get("wait_for", {}))
    started = datetime.fromisoformat(started_map[step.id]) if step.id in started_map else wake.as_of
    if wake.holds(wake.pb.step_expression(step.id, "condition")):
        started_map.pop(step.id, None)
        wake.state["wait_for"] = started_map
        wake.record("wait_for", f"{step.id}: condition met: {step.condition}", step.id)
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
        wake.record("wait_for", f"{step.id}: waiting for {step.condition} (at most until {deadline:%Y-%m-%d})", step.id)
    wake.save()
    return False


HANDLER = Handler(WaitForStep, _wait_for)
