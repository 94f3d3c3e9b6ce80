"""The outbox: deliver pending touches exactly once where the receiver can help, never twice
where it cannot.

A touch goes ``pending -> sending -> delivered | failed``. ``sending`` is written and committed
before the request leaves, with a lease. A touch found ``sending`` after its lease expired was
interrupted by a crash: it is sent again only through a channel whose receiver drops a repeat of
the same key (``Idempotency-Key``); otherwise it becomes ``unknown`` and is shown to people,
never silently sent twice.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Engine

from integrations.base import Channel, Delivery
from integrations.secrets import resolve_secrets
from models import ConfigError, IntegrationError, RetryableError, TimelineEvent, Touch, TouchStatus, session, utcnow

__all__ = ["DeliveryPolicy", "deliver", "recover_interrupted"]


@dataclass(frozen=True)
class DeliveryPolicy:
    lease: timedelta = timedelta(minutes=5)
    batch_size: int = 200
    concurrency: int = 8  # in flight at once per channel
    attempts_now: int = 3  # tries within this delivery run (429/5xx/timeouts only)
    max_attempts: int = 8  # across runs, then the touch is failed
    backoff_base: float = 0.5  # seconds; doubled per try, with jitter
    backoff_cap: float = 30.0
    later: timedelta = timedelta(minutes=15)  # a still-failing touch is tried again this much later


def recover_interrupted(engine: Engine, channels: dict[str, Channel], *, now: datetime | None = None) -> Counter[str]:
    """Touches left ``sending`` by a dead process: back to ``pending`` where the channel dedupes by
    key, else ``unknown`` with the reason."""
    wall = now or utcnow()
    t = Touch.__table__  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    with session(engine) as s:
        stale = s.exec(
            select(t.c.id, t.c.channel, t.c.account_id, t.c.enrollment_id, t.c.playbook, t.c.step_id, t.c.key)
            .where(t.c.status == TouchStatus.SENDING, t.c.lease_until < wall)
            .with_for_update(skip_locked=True)
        ).all()
        for touch_id, channel, account_id, enrollment_id, playbook, step_id, key in stale:
            receiver = channels.get(channel)
            if receiver is not None and receiver.dedupes_by_key:
                s.exec(update(t).where(t.c.id == touch_id).values(status=TouchStatus.PENDING, lease_until=None))
                counts["resent"] += 1
            else:
                reason = f"interrupted while sending; not sent again because the {channel} channel cannot drop a repeat"
                s.exec(
                    update(t)
                    .where(t.c.id == touch_id)
                    .values(status=TouchStatus.UNKNOWN, reason=reason, lease_until=None)
                )
                s.add(
                    TimelineEvent.model_validate(
                        {
                            "account_id": account_id,
                            "enrollment_id": enrollment_id,
                            "playbook": playbook,
                            "step_id": step_id,
                            "at": wall,
                            "kind": "unknown",
                            "summary": f"{step_id}: {channel} touch {key}: {reason}",
                        }
                    )
                )
                counts["unknown"] += 1
    return counts


def deliver(
    engine: Engine,
    channels: dict[str, Channel],
    *,
    as_of: datetime,
    playbook: str | None = None,
    enrollment_id: int | None = None,
    policy: DeliveryPolicy | None = None,
) -> Counter[str]:
    """Deliver every pending touch due at ``as_of`` (of one playbook or enrollment, or all).
    Returns counts by resulting status."""
    scope = {"playbook": playbook, "enrollment_id": enrollment_id}
    return asyncio.run(_deliver(engine, channels, as_of=as_of, scope=scope, policy=policy or DeliveryPolicy()))


async def _deliver(
    engine: Engine, channels: dict[str, Channel], *, as_of: datetime, scope: dict[str, Any], policy: DeliveryPolicy
) -> Counter[str]:
    counts: Counter[str] = Counter()
    recover_interrupted(engine, channels)
    limits = {name: asyncio.Semaphore(policy.concurrency) for name in channels}
    seen: set[int] = set()
    try:
        while True:
            claimed = _claim(engine, as_of, scope, policy, exclude=seen)
            if not claimed:
                break
            seen.update(row["id"] for row in claimed)
            outcomes = await asyncio.gather(*(_send_one(row, channels, limits, policy) for row in claimed))
            _record(engine, claimed, outcomes, as_of, policy)
            counts.update(status for status, _ in outcomes)
    finally:
        for channel in channels.values():
            await channel.aclose()
    return counts


def _claim(
    engine: Engine, as_of: datetime, scope: dict[str, Any], policy: DeliveryPolicy, *, exclude: set[int]
) -> list[dict[str, Any]]:
    t = Touch.__table__  # type: ignore[attr-defined]
    conditions = [t.c.status == TouchStatus.PENDING, or_(t.c.not_before.is_(None), t.c.not_before <= as_of)]
    conditions += [t.c[name] == value for name, value in scope.items() if value is not None]
    if exclude:
        conditions.append(t.c.id.not_in(exclude))
    due = (
        select(t.c.id)
        .where(and_(*conditions))
        .order_by(t.c.id)
        .limit(policy.batch_size)
        .with_for_update(skip_locked=True)
    )
    wall = utcnow()
    with session(engine) as s:
        rows = s.exec(
            update(t)
            .where(t.c.id.in_(due.scalar_subquery()))
            .values(
                status=TouchStatus.SENDING, lease_until=wall + policy.lease, attempts=t.c.attempts + 1, sent_at=wall
            )
            .returning(t.c.id, t.c.key, t.c.channel, t.c.payload, t.c.attempts, t.c.account_id, t.c.contact_id)
        ).all()  # type: ignore[call-overload]
    return [dict(row._mapping) for row in rows]


async def _send_one(
    row: dict[str, Any], channels: dict[str, Channel], limits: dict[str, asyncio.Semaphore], policy: DeliveryPolicy
) -> tuple[str, str | None]:
    """(status, detail) for one touch: delivered, retry, or failed."""
    channel = channels.get(row["channel"])
    if channel is None:
        return TouchStatus.FAILED, f"no channel {row['channel']!r} is configured"
    try:
        payload = resolve_secrets(row["payload"])
    except ConfigError as exc:
        return TouchStatus.FAILED, str(exc)
    delivery = Delivery(
        row["key"],
        row["channel"],
        payload,
        attempt=row["attempts"],
        meta={"account_id": row["account_id"], "contact_id": row["contact_id"]},
    )
    async with limits[row["channel"]]:
        for attempt in range(1, policy.attempts_now + 1):
            try:
                receipt = await channel.send(delivery)
                return TouchStatus.DELIVERED, receipt.provider_id
            except RetryableError as exc:
                if attempt == policy.attempts_now:
                    return "retry", str(exc)
                delay = exc.retry_after if exc.retry_after is not None else policy.backoff_base * 2 ** (attempt - 1)
                await asyncio.sleep(min(policy.backoff_cap, delay) * (1 + random.random() * 0.25))
            except IntegrationError as exc:
                return TouchStatus.FAILED, str(exc)
    return "retry", "no attempt made"


def _record(
    engine: Engine,
    claimed: list[dict[str, Any]],
    outcomes: list[tuple[str, str | None]],
    as_of: datetime,
    policy: DeliveryPolicy,
) -> None:
    t = Touch.__table__  # type: ignore[attr-defined]
    wall = utcnow()
    with session(engine) as s:
        for row, (status, detail) in zip(claimed, outcomes, strict=True):
            values: dict[str, Any] = {"lease_until": None}
            if status == TouchStatus.DELIVERED:
                values.update(status=TouchStatus.DELIVERED, delivered_at=wall, provider_id=detail, reason=None)
            elif status == "retry" and row["attempts"] < policy.max_attempts:
                values.update(
                    status=TouchStatus.PENDING, not_before=as_of + policy.later, reason=f"will retry: {detail}"
                )
            else:
                values.update(status=TouchStatus.FAILED, reason=detail)
            s.exec(update(t).where(t.c.id == row["id"], t.c.status == TouchStatus.SENDING).values(**values))
