"""``slack``: a post to a channel, or to the account's CSM."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.engine.render import render_value
from flows.engine.steps._base import Handler, then_next
from models.playbook import SlackStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]

CHANNEL = "slack"


def _slack(wake: Wake, step: SlackStep, visit: int) -> None:
    variables = wake.variables(step.id)
    channel = render_value(step.channel, variables) if step.channel else None
    payload = {
        "kind": "slack",
        "channel": channel or f"@{wake.account.csm_email}",
        "text": render_value(step.text, variables),
    }
    wake.touch(step.id, visit, CHANNEL, payload)


HANDLER = Handler(SlackStep, then_next(_slack), channels=(CHANNEL,))
