"""``branch``: chooses the next step by a condition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.steps._base import Handler
from models.playbook import BranchStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _branch(wake: Wake, step: BranchStep) -> bool:
    taken = wake.holds(wake.pb.step_expression(step.id, "if"))
    target = (step.then if taken else step.else_) or wake.next_of(step.id)
    wake.record(
        "branch",
        f"{step.id}: {'yes' if taken else 'no'} -> {target or 'end'}",
        step.id,
        condition=step.if_,
        taken=taken,
    )
    wake.goto(target)
    return True


HANDLER = Handler(BranchStep, _branch)
