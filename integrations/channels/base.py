"""The one protocol every outreach channel implements, and what passes through it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["Channel", "Delivery", "Receipt"]


@dataclass(frozen=True)
class Delivery:
    """One touch on its way out. ``key`` is the touch's unique key: channels pass it to the
    receiver (``Idempotency-Key`` header, email ``Message-ID``) so a repeat can be recognised."""

    key: str
    channel: str
    payload: dict[str, Any]  # the rendered message, secrets already resolved: never store or log it
    attempt: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # account / contact ids, for receivers that want them


@dataclass(frozen=True)
class Receipt:
    """What the receiver answered to an accepted delivery."""

    provider_id: str | None = None
    detail: str | None = None


@runtime_checkable
class Channel(Protocol):
    """A way to reach people or systems.

    ``send`` raises :class:`models.RetryableError` for what another attempt may fix (429, 5xx,
    timeouts) and :class:`models.IntegrationError` for permanent failures, with the receiver's answer.
    ``dedupes_by_key``: the receiver drops a second delivery with the same key, so a touch whose
    send was interrupted by a crash can safely be sent again. Otherwise it is marked ``unknown``.

    A channel may also say how hard it may be pushed (the outbox honours both when present):
    ``max_in_flight`` (requests at once) and ``max_per_second`` (the provider's rate limit).
    """

    name: str
    dedupes_by_key: bool

    async def send(self, delivery: Delivery) -> Receipt: ...

    async def aclose(self) -> None: ...
