"""``wait``: for a duration or until a date, optionally to a local time of day. Durable: a due time
on the enrollment, kept in its state so a later wake-up knows it was already waiting."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import TYPE_CHECKING

import pendulum

from flows.engine.steps._base import Handler
from models import format_duration
from models.playbook import WaitStep
from playbooks import evaluate

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["DEFAULT_AT", "HANDLER"]

DEFAULT_AT = time(9, 0)  # a wait until a date (not a timestamp) ends at this local time


def _wait(wake: Wake, step: WaitStep) -> bool:
    waiting = wake.state.get("waiting")
    if waiting and waiting.get("step") == step.id:
        until = datetime.fromisoformat(waiting["until"])
        if wake.as_of >= until:
            wake.state.pop("waiting")
            wake.goto(wake.next_of(step.id))
            wake.save()
            return True
        wake.sleep(until, "still waiting", step.id)
        return False
    if step.for_ is not None:
        until = _at_local(wake, wake.as_of + step.for_, step.at)
        why = f"{step.id}: wait {format_duration(step.for_)}" + (f" until {step.at} local" if step.at else "")
    else:
        value = evaluate(wake.pb.step_expression(step.id, "until"), wake.env())
        if value is None:
            wake.record("wait", f"{step.id}: no date to wait for ({step.until} is empty); going on", step.id)
            wake.goto(wake.next_of(step.id))
            return True
        if isinstance(value, datetime):
            until = value if step.at is None else _at_local(wake, value, step.at)
        else:
            until = _at_local_date(wake, value, step.at)
        why = f"{step.id}: wait until {step.until}"
    if until <= wake.as_of:
        wake.goto(wake.next_of(step.id))
        return True
    wake.state["waiting"] = {"step": step.id, "until": until.isoformat()}
    wake.sleep(until, why, step.id)
    return False


def _at_local(wake: Wake, moment: datetime, at: str | None) -> datetime:
    """The first ``at`` (local time of day) at or after ``moment``."""
    if at is None:
        return moment
    local = pendulum.instance(moment).in_timezone(wake.zone())
    hh, mm = (int(x) for x in at.split(":"))
    candidate = local.set(hour=hh, minute=mm, second=0, microsecond=0)
    if candidate < local:
        candidate = candidate.add(days=1)
    return candidate.in_timezone("UTC")


def _at_local_date(wake: Wake, day: date, at: str | None) -> datetime:
    hh, mm = (int(x) for x in at.split(":")) if at else (DEFAULT_AT.hour, DEFAULT_AT.minute)
    local = pendulum.datetime(day.year, day.month, day.day, hh, mm, tz=wake.zone())
    return local.in_timezone("UTC")


HANDLER = Handler(WaitStep, _wait)
