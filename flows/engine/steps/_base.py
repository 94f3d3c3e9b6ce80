"""What a step handler is, and the shape most of them share (do something, then the next step)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from models.playbook import StepBase

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["Handler", "then_next"]

S = TypeVar("S", bound=StepBase)


@dataclass(frozen=True)
class Handler(Generic[S]):
    """How the engine runs one step kind.

    ``model``: the step's model (a member of ``models.playbook.Step``; its ``kind`` is the key).
    ``run``: True to go on with the next step in this wake-up, False when the enrollment now waits
    or ended. ``channels``: the channels its touches go to (each must be in the channel registry).
    """

    model: type[S]
    run: Callable[[Wake, S], bool]
    channels: tuple[str, ...] = ()


def then_next(act: Callable[[Wake, S, int], None]) -> Callable[[Wake, S], bool]:
    """A step that does something and goes on: the visit is counted (it is part of the keys of the
    touches ``act`` writes), then the enrollment moves to the next step."""

    def run(wake: Wake, step: S) -> bool:
        visit = wake.visit(step.id)
        act(wake, step, visit)
        wake.goto(wake.next_of(step.id))
        wake.save()
        return True

    return run
