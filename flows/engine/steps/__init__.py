"""The step handlers, one module per step kind, registered here and nowhere else.

A step kind is its model in ``models.playbook`` (a member of the ``Step`` union) plus its handler
here; ``tests/flows/test_registries.py`` holds the union, this registry and the channel registry
equal. See ``docs/contributing.md``.
"""

from __future__ import annotations

from typing import Any

from flows.engine.steps import (
    branch,
    email,
    exit,
    outcome,
    slack,
    survey,
    task,
    update,
    wait,
    wait_for,
    webhook,
)
from flows.engine.steps._base import Handler
from models.playbook import STEP_MODELS

__all__ = ["HANDLERS", "Handler"]


def _by_kind(*handlers: Handler[Any]) -> dict[str, Handler[Any]]:
    kinds = {model: kind for kind, model in STEP_MODELS.items()}
    registry: dict[str, Handler[Any]] = {}
    for handler in handlers:
        kind = kinds.get(handler.model)
        if kind is None:
            raise TypeError(f"{handler.model.__name__} has a handler but is not in models.playbook.Step")
        registry[kind] = handler
    return registry


#: step kind -> its handler
HANDLERS: dict[str, Handler[Any]] = _by_kind(
    email.HANDLER,
    slack.HANDLER,
    webhook.HANDLER,
    task.HANDLER,
    survey.HANDLER,
    wait.HANDLER,
    wait_for.HANDLER,
    branch.HANDLER,
    update.HANDLER,
    outcome.HANDLER,
    exit.HANDLER,
)
