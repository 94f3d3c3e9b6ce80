"""What an email provider reports about the messages Retain sent: delivered, opened, clicked,
bounced, complained (marked as spam) and replied, each kept once by the provider's event id.

An event finds its touch by the touch key, or by the ``Message-ID`` the email carried (kept on the
touch as ``provider_id``). It is recorded on the touch, the first of each kind: ``delivered_at``,
``opened_at``, ``clicked_at`` (a click is an open too), ``bounced_at``, ``complained_at`` and
``replied_at``, which ``touches("<step>")`` reads in ``branch`` and ``wait_for`` conditions. An
``unsubscribed`` event (the provider's own unsubscribe link) unsubscribes the address from emails,
as Retain's link does. A hard bounce or a complaint suppresses the address (every contact with it, on every account; only
``retain contacts resubscribe --force`` lifts it); bounces, complaints and replies are on the
account's timeline. An event repeated (a provider retrying its webhook) changes nothing; an event
about no Retain touch is kept (and a hard bounce or complaint still suppresses its address).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import chunks, write_all_or_nothing
from integrations.sources.replies import set_replied
from integrations.sources.suppression import apply_suppressions, suppress_address
from models import ProviderEvent, TimelineEvent, Touch, table_of

__all__ = ["EVENT_KINDS", "ProviderEventRecord", "ProviderEventsResult", "land_provider_events"]

logger = logging.getLogger(__name__)

#: what an event can report
EVENT_KINDS = ("delivered", "opened", "clicked", "bounced", "complained", "replied", "unsubscribed")
#: the touch's column each kind sets (the first time)
_COLUMN = {
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "bounced": "bounced_at",
    "complained": "complained_at",
}

_TOUCH: Table = table_of(Touch)
_EVENT: Table = table_of(ProviderEvent)
_TIMELINE: Table = table_of(TimelineEvent)


@dataclass(frozen=True)
class ProviderEventRecord:
    """One event, in Retain's words, whatever the provider's shape."""

    provider: str  # generic | sendgrid
    event_id: str
    kind: str  # one of EVENT_KINDS
    occurred_at: datetime
    message_id: str | None = None  # the Message-ID of the email it is about, ``<…@…>``
    touch_key: str | None = None
    email: str | None = None
    bounce: str | None = None  # hard | soft (bounced only)
    detail: dict[str, Any] = field(default_factory=dict)  # reason, url, the provider's own kind


@dataclass
class ProviderEventsResult:
    received: int = 0
    recorded: int = 0
    repeated: int = 0  # kept before (a webhook retried): nothing changed
    unmatched: int = 0  # about no Retain touch: kept, nothing else
    suppressed: list[str] = field(default_factory=list)  # addresses suppressed (hard bounce, complaint)

    def counts(self) -> dict[str, Any]:
        return {"received": self.received, "recorded": self.recorded, "repeated": self.repeated,
                "unmatched": self.unmatched, "suppressed": self.suppressed}  # fmt: skip


def _touches(conn: Connection, events: Sequence[ProviderEventRecord]) -> dict[str, Any]:
    """``key:<touch key>`` and ``id:<Message-ID>`` -> the touch row."""
    columns = [_TOUCH.c.id, _TOUCH.c.key, _TOUCH.c.provider_id, _TOUCH.c.account_id, _TOUCH.c.playbook,
               _TOUCH.c.step_id, _TOUCH.c.enrollment_id, _TOUCH.c.sent_at]  # fmt: skip
    found: dict[str, Any] = {}
    for chunk in chunks({e.touch_key for e in events if e.touch_key}):
        for row in conn.execute(select(*columns).where(_TOUCH.c.key.in_(chunk))):
            found[f"key:{row.key}"] = row
    for chunk in chunks({e.message_id for e in events if e.message_id}):
        for row in conn.execute(select(*columns).where(_TOUCH.c.provider_id.in_(chunk))):
            found[f"id:{row.provider_id}"] = row
    return found


def _seen(conn: Connection, events: Sequence[ProviderEventRecord]) -> set[tuple[str, str]]:
    """The (provider, event id) pairs already kept: one indexed lookup per provider and chunk."""
    seen: set[tuple[str, str]] = set()
    for provider in sorted({e.provider for e in events}):
        ids = {e.event_id for e in events if e.provider == provider}
        for chunk in chunks(ids):
            found = conn.execute(
                select(_EVENT.c.event_id).where(_EVENT.c.provider == provider, _EVENT.c.event_id.in_(chunk))
            ).scalars()
            seen.update((provider, event_id) for event_id in found)
    return seen


def _summary(event: ProviderEventRecord, touch: Any) -> str | None:
    step = touch.step_id or "a touch"
    who = event.email or "the recipient"
    reason = f": {event.detail['reason']}" if event.detail.get("reason") else ""
    if event.kind == "bounced":
        return f"{step} to {who} bounced ({event.bounce or 'unknown'}){reason} ({event.provider})"
    if event.kind == "complained":
        return f"{who} marked {step} as spam ({event.provider})"
    if event.kind == "replied":
        return f"reply to {step} from {who} ({event.provider})"
    return None


@dataclass
class _Writes:
    """What a batch of events writes, collected first, then written set-based."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    firsts: dict[str, dict[int, datetime]] = field(default_factory=lambda: {c: {} for c in _COLUMN.values()})
    replied: dict[int, datetime] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    suppress: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # address -> (channel, source, reason)

    def on_touch(self, event: ProviderEventRecord, touch: Any, at: datetime) -> None:
        if event.kind == "replied":
            self.replied.setdefault(touch.id, at)
        elif event.kind in _COLUMN:
            self.firsts[_COLUMN[event.kind]].setdefault(touch.id, at)
            if event.kind == "clicked":
                self.firsts["opened_at"].setdefault(touch.id, at)
        if summary := _summary(event, touch):
            self.timeline.append({"account_id": touch.account_id, "at": at, "kind": event.kind,
                                  "playbook": touch.playbook, "enrollment_id": touch.enrollment_id,
                                  "step_id": touch.step_id, "summary": summary,
                                  "detail": {"touch": touch.key, "provider": event.provider, "event": event.event_id,
                                             "email": event.email, **event.detail}})  # fmt: skip

    def write(self, conn: Connection, now: datetime, result: ProviderEventsResult) -> None:
        if self.rows:
            conn.execute(insert(_EVENT), self.rows)
        for column, first in self.firsts.items():
            if first:
                conn.execute(
                    update(_TOUCH)
                    .where(_TOUCH.c.id == bindparam("b_touch"), _TOUCH.c[column].is_(None))
                    .values({column: bindparam("b_at")}),
                    [{"b_touch": touch_id, "b_at": at} for touch_id, at in first.items()],
                )
        set_replied(conn, self.replied)
        if self.timeline:
            conn.execute(insert(_TIMELINE), self.timeline)
        for email, (channel, source, reason) in sorted(self.suppress.items()):
            if suppress_address(conn, email, channel, reason, source, now):
                result.suppressed.append(email)
        if self.suppress:
            apply_suppressions(conn, now, set(self.suppress))


def _suppression(event: ProviderEventRecord) -> tuple[str, str, str] | None:
    """(channel, source, reason) of the suppression an event asks for, if any."""
    reason = str(event.detail.get("reason") or "")
    if event.kind == "complained":
        return "all", "complaint", "marked as spam" + (f": {reason}" if reason else "")
    if event.kind == "bounced" and event.bounce == "hard":
        return "all", "bounce", "hard bounce" + (f": {reason}" if reason else "")
    if event.kind == "unsubscribed":  # the contact's own act, through the provider's link
        return "email", "link", "through the email provider's unsubscribe link"
    return None


def _record(
    conn: Connection, events: Sequence[ProviderEventRecord], now: datetime, result: ProviderEventsResult
) -> None:
    touches = _touches(conn, events)
    seen = _seen(conn, events)
    writes = _Writes()
    for event in sorted(events, key=lambda e: e.occurred_at):
        if (event.provider, event.event_id) in seen:
            result.repeated += 1
            continue
        seen.add((event.provider, event.event_id))
        touch = touches.get(f"key:{event.touch_key}") or touches.get(f"id:{event.message_id}")
        at = min(event.occurred_at, now)  # clocks differ: never in the future
        if touch is not None and touch.sent_at is not None:
            at = max(at, touch.sent_at)  # nor before the message left
        writes.rows.append({"provider": event.provider, "event_id": event.event_id, "kind": event.kind,
                            "touch_id": touch.id if touch is not None else None, "email": event.email,
                            "occurred_at": at, "received_at": now,
                            "detail": {**event.detail, **({"bounce": event.bounce} if event.bounce else {}),
                                       **({"message_id": event.message_id} if event.message_id else {})}})  # fmt: skip
        result.recorded += 1
        if event.email and (suppression := _suppression(event)):
            writes.suppress.setdefault(event.email.lower(), suppression)
        if touch is None:
            result.unmatched += 1
        else:
            writes.on_touch(event, touch, at)
    writes.write(conn, now, result)


def land_provider_events(
    engine: Engine, events: Sequence[ProviderEventRecord], *, now: datetime
) -> ProviderEventsResult:
    """Record the events in one transaction (see the module's documentation)."""
    result = ProviderEventsResult(received=len(events))
    write_all_or_nothing(engine, "provider events", lambda conn: _record(conn, events, now, result))
    logger.info("provider events: %s", result.counts())
    return result
