"""``exit``: ends the enrollment (completed), recording its outcome if it names one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.steps._base import Handler
from models import EnrollmentStatus
from models.playbook import ExitStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _exit(wake: Wake, step: ExitStep) -> bool:
    wake.end(EnrollmentStatus.COMPLETED, step.outcome, f"exit step {step.id!r}", record_outcome=True)
    return False


HANDLER = Handler(ExitStep, _exit)
