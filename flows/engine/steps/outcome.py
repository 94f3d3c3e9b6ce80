"""``outcome``: records an outcome for the reports; the enrollment goes on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.render import render_value
from flows.engine.steps._base import Handler, then_next
from models import Outcome
from models.playbook import OutcomeStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _outcome(wake: Wake, step: OutcomeStep, visit: int) -> None:
    note = render_value(step.note, wake.variables(step.id)) if step.note else None
    wake.s.add(
        Outcome.model_validate(
            {
                "account_id": wake.account.id,
                "enrollment_id": wake.enrollment.id,
                "playbook": wake.pb.id,
                "kind": step.outcome,
                "source": "step",
                "note": note,
                "occurred_at": wake.as_of,
            }
        )
    )
    wake.record("outcome", f"{step.id}: outcome {step.outcome}" + (f" ({note})" if note else ""), step.id)


HANDLER = Handler(OutcomeStep, then_next(_outcome))
