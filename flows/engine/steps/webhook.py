"""``webhook``: a signed HTTP call to any endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.render import render_value
from flows.engine.steps._base import Handler, then_next
from models.playbook import WebhookStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]

CHANNEL = "webhook"


def _webhook(wake: Wake, step: WebhookStep, visit: int) -> None:
    variables = wake.variables(step.id)
    payload = {
        "kind": "webhook",
        "url": render_value(step.url, variables),
        "method": step.method,
        "json": render_value(step.payload, variables)
        if step.payload is not None
        else {"account": wake.account.external_id, "playbook": wake.pb.id, "step": step.id},
        "headers": render_value(step.headers, variables) if step.headers else {},
    }
    wake.touch(step.id, visit, CHANNEL, payload)


HANDLER = Handler(WebhookStep, then_next(_webhook), channels=(CHANNEL,))
