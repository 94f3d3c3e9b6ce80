"""The outbox honours what each channel says about itself: how many requests at once, and what
to do when an answer is lost or the receiver asks for a long pause."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import DeliveryPolicy, _Limits, deliver
from flows.engine.tick import tick
from integrations.channels.base import Delivery, Receipt
from models import Account, Contact, MaybeDeliveredError, RetryableError, Touch, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
HOOK = compile_source(
    textwrap.dedent(
        """
        playbook: hook
        name: Hook
        lifecycle: custom
        audience: account.status == "active"
        steps:
          - id: notify
            kind: webhook
            url: "http://127.0.0.1:9/hook"
        """
    ),
    "hook.yaml",
)


def _accounts(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {
                    "external_id": f"a{i}",
                    "name": f"A{i}",
                    "arr": 1.0,
                    "currency": "USD",
                    "status": "active",
                    "custom": {},
                }
                for i in range(n)
            ],
        )


def _touches(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(table_of(Touch))).all())


class Webhookish:
    """A receiver stand-in with a scripted behaviour per attempt."""

    name = "webhook"

    def __init__(self, *, dedupes: bool, script: list[BaseException | None], max_in_flight: int | None = None) -> None:
        self.dedupes_by_key = dedupes
        self.script = script
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        if max_in_flight is not None:
            self.max_in_flight = max_in_flight

    async def send(self, delivery: Delivery) -> Receipt:
        self.calls.append(delivery.key)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            outcome = self.script.pop(0) if self.script else None
            if outcome is not None:
                raise outcome
            return Receipt(provider_id="ok")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


FAST = DeliveryPolicy(backoff_base=0.01, backoff_cap=0.05)


def test_a_lost_answer_is_unknown_where_the_receiver_cannot_drop_repeats(sqlite_engine: Engine) -> None:
    _accounts(sqlite_engine, 1)
    channel = Webhookish(dedupes=False, script=[MaybeDeliveredError("webhook: ReadTimeout")])
    tick(sqlite_engine, HOOK, T0, channels={"webhook": channel}, delivery=FAST)  # type: ignore[dict-item]
    (touch,) = _touches(sqlite_engine)
    assert touch.status == "unknown" and "may have been delivered" in touch.reason
    assert len(channel.calls) == 1  # never a second copy
    assert deliver(sqlite_engine, {"webhook": channel}, as_of=T0 + timedelta(hours=1), policy=FAST) == {}  # type: ignore[dict-item]


def test_a_lost_answer_is_retried_with_the_same_key_where_the_receiver_drops_repeats(sqlite_engine: Engine) -> None:
    _accounts(sqlite_engine, 1)
    channel = Webhookish(dedupes=True, script=[MaybeDeliveredError("webhook: ReadTimeout")])
    tick(sqlite_engine, HOOK, T0, channels={"webhook": channel}, delivery=FAST)  # type: ignore[dict-item]
    (touch,) = _touches(sqlite_engine)
    assert touch.status == "delivered"
    assert channel.calls == [touch.key, touch.key]


def test_a_long_retry_after_reschedules_instead_of_sleeping(sqlite_engine: Engine) -> None:
    _accounts(sqlite_engine, 1)
    channel = Webhookish(dedupes=True, script=[RetryableError("webhook: HTTP 429", status_code=429, retry_after=600)])
    tick(sqlite_engine, HOOK, T0, channels={"webhook": channel}, delivery=FAST)  # type: ignore[dict-item]
    (touch,) = _touches(sqlite_engine)
    assert touch.status == "pending" and touch.not_before.replace(tzinfo=UTC) == T0 + timedelta(seconds=600)
    assert len(channel.calls) == 1
    assert deliver(sqlite_engine, {"webhook": channel}, as_of=T0 + timedelta(seconds=599), policy=FAST) == {}  # type: ignore[dict-item]
    assert deliver(sqlite_engine, {"webhook": channel}, as_of=T0 + timedelta(seconds=600), policy=FAST) == {
        "delivered": 1
    }  # type: ignore[dict-item]


def test_a_channel_is_never_pushed_past_its_own_limit(sqlite_engine: Engine) -> None:
    _accounts(sqlite_engine, 12)
    channel = Webhookish(dedupes=True, script=[], max_in_flight=2)
    report = tick(sqlite_engine, HOOK, T0, channels={"webhook": channel})  # type: ignore[dict-item]
    assert report.delivered == {"delivered": 12}
    assert channel.most_in_flight == 2


def test_providers_rate_limits_become_limiters() -> None:
    class Slow:
        name, dedupes_by_key, max_per_second = "slack", False, 1.0

    limits = _Limits.of(Slow(), DeliveryPolicy())  # type: ignore[arg-type]
    assert limits.rate is not None and limits.rate.max_rate == 1.0
    assert _Limits.of(Webhookish(dedupes=True, script=[]), DeliveryPolicy()).rate is None  # type: ignore[arg-type]


def test_contacts_table_is_untouched_by_webhooks(sqlite_engine: Engine) -> None:
    """Webhooks are not contact touches: the contact policy does not hold them back."""
    _accounts(sqlite_engine, 1)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(table_of(Contact))).all() == []
    channel = Webhookish(dedupes=True, script=[])
    tick(sqlite_engine, HOOK, datetime(2027, 3, 6, 23, 0, tzinfo=UTC), channels={"webhook": channel})  # type: ignore[dict-item]
    assert len(channel.calls) == 1  # a Saturday night, delivered all the same
