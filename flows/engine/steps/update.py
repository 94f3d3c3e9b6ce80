"""``update``: sets account fields; the timeline keeps the old and new values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flows.engine.steps._base import Handler, then_next
from models.playbook import UpdateStep

if TYPE_CHECKING:
    from flows.engine.wake import Wake

__all__ = ["HANDLER"]


def _update(wake: Wake, step: UpdateStep, visit: int) -> None:
    account = wake.account
    changes: dict[str, tuple[Any, Any]] = {}
    custom = dict(account.custom or {})
    for name, value in step.set.items():
        if name.startswith("custom."):
            key = name.removeprefix("custom.")
            changes[name] = (custom.get(key), value)
            custom[key] = value
        else:
            changes[name] = (getattr(account, name), value)
            setattr(account, name, value)
    account.custom = custom
    account.updated_at = wake.as_of
    wake.s.add(account)
    text = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    wake.record("update", f"{step.id}: {text}", step.id)


HANDLER = Handler(UpdateStep, then_next(_update))
