"""The outbox: deliver pending touches exactly once where the receiver can help, never twice
where it cannot, and only when the contact policy allows.

A touch goes ``pending -> sending -> delivered | failed``, or ``suppressed`` by the policy, or
stays ``pending`` with a later ``not_before`` when deferred. A batch is first *claimed* (a lease on
pending rows, signed by the claiming process: a crash leaves them pending, to be claimed again once
the lease expires, or at once when the claimer is known to be gone, see :mod:`flows.engine.claims`); per
channel, a wave of touches as wide as the channel's in-flight limit is marked ``sending`` and
committed just before their requests leave together, and their results are recorded together as
the wave ends (at most that many touches are ever in doubt at once per channel, as before). A touch found ``sending`` after its lease expired was interrupted by a crash:
it is sent again only through a channel whose receiver drops a repeat of the same key
(``Idempotency-Key``); otherwise it becomes ``unknown`` and is shown to people, never silently
sent twice.

A wait between two tries (a short ``Retry-After``, a back-off) is recorded on the touch before it
is waited out (``Touch.retry_not_before``, wall clock; the touch is ``pending`` meanwhile, since
nothing is in flight): a run killed while waiting leaves it behind, and no claim takes the touch
before then.

Business times (``sent_at``, ``delivered_at``, policy decisions) follow the tick's ``as_of``, so a
simulated run behaves as a real one; leases follow the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from aiolimiter import AsyncLimiter
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from flows.engine._sql import claim
from flows.engine.claims import RunsOver, claimer, default_lease, gone_holders
from flows.engine.policy import ContactPolicy, decide, unsubscribe_reason
from integrations.channels import Channel, Delivery, redact, resolve_secrets
from models import (
    Account,
    ConfigError,
    Contact,
    IntegrationError,
    MaybeDeliveredError,
    RetryableError,
    SurveyResponse,
    TimelineEvent,
    Touch,
    TouchStatus,
    execute,
    session,
    table_of,
    utcnow,
)

__all__ = ["CUSTOMER_CHANNELS", "DeliveryPolicy", "deliver", "recover_interrupted"]

_log = logging.getLogger(__name__)  # retries, back-offs and give-ups, so they show in the run's log

#: channels that reach customers: the contact policy applies to them (not to CSM tasks, team Slack)
CUSTOMER_CHANNELS = frozenset({"email"})


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the outbox delivers. ``contact_policies`` by playbook id (``None`` key: the default)."""

    lease: timedelta = field(default_factory=default_lease)  # RETAIN_LEASE_SECONDS, 5 minutes by default
    batch_size: int = 200
    concurrency: int = 8  # in flight at once per channel
    attempts_now: int = 3  # tries within this delivery run (429/5xx/timeouts only)
    max_attempts: int = 8  # across runs, then the touch is failed
    backoff_base: float = 0.5  # seconds; doubled per try, with jitter
    backoff_cap: float = 30.0
    later: timedelta = timedelta(minutes=15)  # a still-failing touch is tried again this much later
    contact_policies: dict[str | None, ContactPolicy] = field(default_factory=dict)
    resolve_secrets: bool = True  # a simulation hands channels the payload with its secret markers
    #: which Prefect flow runs holding claims have ended (handed in by the Prefect layer), see
    #: :func:`flows.engine.claims.gone_holders`
    runs_over: RunsOver | None = None

    def contact_policy(self, playbook: str | None) -> ContactPolicy | None:
        return self.contact_policies.get(playbook, self.contact_policies.get(None))


def recover_interrupted(
    engine: Engine,
    channels: dict[str, Channel],
    *,
    now: datetime | None = None,
    max_attempts: int = 8,
    runs_over: RunsOver | None = None,
) -> Counter[str]:
    """Touches left ``sending`` by a dead process: back to ``pending`` where the channel dedupes by
    key (``failed`` once ``max_attempts`` sends were cut short: a touch whose send kills the
    process must not kill every run after it), else ``unknown`` with the reason. Claims a dead
    process held on pending touches end too.

    A claim is dead once its lease has run out, or at once when its claimer is known to be gone
    (a process of this host that no longer runs, or, asked through ``runs_over``, a Prefect flow
    run that has ended: :func:`flows.engine.claims.gone_holders`)."""
    wall = now or utcnow()
    t = table_of(Touch)
    counts: Counter[str] = Counter()
    with session(engine) as s:  # (a session: a simulation's scratch copy on PostgreSQL is a Connection)
        holders = (
            s.connection()
            .execute(
                select(t.c.claimed_by)
                .where(
                    t.c.status.in_([TouchStatus.PENDING, TouchStatus.SENDING]),
                    t.c.lease_until >= wall,
                    t.c.claimed_by.is_not(None),
                )
                .distinct()
            )
            .scalars()
            .all()
        )
        held = [holder for holder in holders if holder]
    gone = gone_holders(held, runs_over)  # (outside any transaction: it may ask Prefect)
    with session(engine) as s:
        dead = or_(t.c.lease_until < wall, t.c.claimed_by.in_(gone)) if gone else t.c.lease_until < wall
        s.exec(update(t).where(t.c.status == TouchStatus.PENDING, dead).values(lease_until=None, claimed_by=None))
        stale = execute(
            s,
            select(
                t.c.id, t.c.channel, t.c.account_id, t.c.enrollment_id, t.c.playbook, t.c.step_id, t.c.key, t.c.attempts
            )
            .where(t.c.status == TouchStatus.SENDING, dead)
            .with_for_update(skip_locked=True),
        ).all()
        for touch_id, channel, account_id, enrollment_id, playbook, step_id, key, attempts in stale:
            receiver = channels.get(channel)
            if receiver is not None and receiver.dedupes_by_key and attempts < max_attempts:
                s.exec(
                    update(t)
                    .where(t.c.id == touch_id)
                    .values(status=TouchStatus.PENDING, lease_until=None, claimed_by=None)
                )
                counts["resent"] += 1
                continue
            if receiver is not None and receiver.dedupes_by_key:
                status = TouchStatus.FAILED
                reason = (
                    f"interrupted while sending {attempts} times (the sending process died each time): not sent again"
                )
            else:
                status = TouchStatus.UNKNOWN
                reason = f"interrupted while sending; not sent again because the {channel} channel cannot drop a repeat"
            s.exec(
                update(t)
                .where(t.c.id == touch_id)
                .values(status=status, reason=reason, lease_until=None, claimed_by=None)
            )
            s.add(
                _event(
                    account_id,
                    enrollment_id,
                    playbook,
                    step_id,
                    wall,
                    str(status),
                    f"{step_id}: {channel} touch {key}: {reason}",
                )
            )
            counts[str(status)] += 1
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
    """Deliver every pending touch due at ``as_of`` (of one playbook or enrollment, or all), after
    the contact policy. Returns counts by what happened (delivered, deferred, suppressed, ...)."""
    scope = {"playbook": playbook, "enrollment_id": enrollment_id}
    return asyncio.run(_deliver(engine, channels, as_of=as_of, scope=scope, policy=policy or DeliveryPolicy()))


async def _deliver(
    engine: Engine, channels: dict[str, Channel], *, as_of: datetime, scope: dict[str, Any], policy: DeliveryPolicy
) -> Counter[str]:
    counts: Counter[str] = Counter()
    # a dead run's sends: "resent", "unknown", or "failed" when cut short too often
    counts.update(recover_interrupted(engine, channels, max_attempts=policy.max_attempts, runs_over=policy.runs_over))
    limits = {name: _Limits.of(channel, policy) for name, channel in channels.items()}
    after: tuple[int, int] | None = None  # the last claimed (priority, id): each batch claims past it
    try:
        while True:
            claimed = _claim(engine, as_of, scope, policy, after=after)
            if not claimed:
                break
            after = (claimed[-1]["priority"], claimed[-1]["id"])
            ready = _apply_contact_policy(engine, claimed, as_of, policy, counts)
            by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for row in ready:  # in priority order, kept within each channel
                by_channel[row["channel"]].append(row)
            for done in await asyncio.gather(
                *(
                    _send_channel(engine, name, rows, channels, limits, as_of, policy)
                    for name, rows in by_channel.items()
                )
            ):
                counts.update(done)
    finally:
        for channel in channels.values():
            await channel.aclose()
    return counts


def _claim(
    engine: Engine, as_of: datetime, scope: dict[str, Any], policy: DeliveryPolicy, *, after: tuple[int, int] | None
) -> list[dict[str, Any]]:
    """Lease a batch of due pending touches, higher playbook priority first, each batch of a run
    past the previous one in that order (``after``: its last priority and id). A touch a batch
    deferred or will retry is thereby never claimed again in the same run, by a condition of fixed
    size: a growing list of ids would break past 65,535 parameters on PostgreSQL."""
    t = table_of(Touch)
    wall = utcnow()
    conditions = [
        t.c.status == TouchStatus.PENDING,
        or_(t.c.not_before.is_(None), t.c.not_before <= as_of),
        or_(t.c.lease_until.is_(None), t.c.lease_until < wall),
        or_(t.c.retry_not_before.is_(None), t.c.retry_not_before <= wall),  # Retry-After, on the wall clock
    ]
    conditions += [t.c[name] == value for name, value in scope.items() if value is not None]
    if after is not None:
        priority, last = after
        conditions.append(or_(t.c.priority < priority, and_(t.c.priority == priority, t.c.id > last)))
    due = (
        select(t.c.id)
        .where(and_(*conditions))
        # a touch whose earlier sends were cut short goes after the untried ones of its priority: a
        # crash loop spreads over the queue instead of hitting the same first touches every time
        .order_by(t.c.priority.desc(), t.c.attempts, t.c.id)
        .limit(policy.batch_size)
        .with_for_update(skip_locked=True)
    )
    with session(engine) as s:
        rows = s.exec(
            claim(s, t, due)
            .values(lease_until=wall + policy.lease, claimed_by=claimer())
            .returning(
                t.c.id,
                t.c.key,
                t.c.channel,
                t.c.payload,
                t.c.attempts,
                t.c.account_id,
                t.c.contact_id,
                t.c.enrollment_id,
                t.c.playbook,
                t.c.step_id,
                t.c.priority,
                t.c.created_at,
            )
        ).all()
    return sorted((dict(row._mapping) for row in rows), key=_queue_order)


def _queue_order(row: dict[str, Any]) -> tuple[int, int, int]:
    """Higher playbook priority first; then fewer attempts so far; then the oldest."""
    return (-row["priority"], row["attempts"], row["id"])


def _apply_contact_policy(
    engine: Engine, claimed: list[dict[str, Any]], as_of: datetime, policy: DeliveryPolicy, counts: Counter[str]
) -> list[dict[str, Any]]:
    """Decide for every customer touch of the batch; defer or suppress what may not go now.

    Lookups are per batch (contacts, accounts, recent touches, surveys), not per touch. Touches
    decided "send" count against the cap of later ones in the same batch."""
    customer = [r for r in claimed if r["channel"] in CUSTOMER_CHANNELS and r["contact_id"] is not None]
    if not customer:
        return claimed
    contact_ids = {r["contact_id"] for r in customer}
    horizon = as_of - timedelta(days=400)
    t = table_of(Touch)
    with session(engine) as s:
        contacts = {c.id: c for c in execute(s, select(Contact).where(col(Contact.id).in_(contact_ids))).scalars()}
        account_ids = {c.account_id for c in contacts.values()}
        accounts = {a.id: a for a in execute(s, select(Account).where(col(Account.id).in_(account_ids))).scalars()}
        recent: dict[int, list[datetime]] = defaultdict(list)
        last_survey: dict[int, datetime] = {}
        for contact_id, delivered_at, kind in execute(
            s,
            select(t.c.contact_id, t.c.delivered_at, t.c.payload["kind"].as_string()).where(
                t.c.contact_id.in_(contact_ids),
                t.c.status == TouchStatus.DELIVERED,
                t.c.delivered_at > horizon,
                t.c.delivered_at <= as_of,  # a simulation over a past window: no later touch counts
            ),
        ).all():
            recent[contact_id].append(delivered_at)
            if kind == "survey":
                last_survey[contact_id] = max(delivered_at, last_survey.get(contact_id, delivered_at))
        for contact_id, answered in execute(
            s,
            select(col(SurveyResponse.contact_id), func.max(col(SurveyResponse.responded_at)))
            .where(col(SurveyResponse.contact_id).in_(contact_ids), col(SurveyResponse.responded_at) <= as_of)
            .group_by(col(SurveyResponse.contact_id)),
        ).all():
            if answered is not None:
                last_survey[contact_id] = max(answered, last_survey.get(contact_id, answered))

        # touches of higher-priority playbooks waiting for the same contacts keep their place in the cap
        batch_ids = {r["id"] for r in claimed}
        waiting: dict[int, list[int]] = defaultdict(list)
        for contact_id, touch_id, priority in execute(
            s,
            select(t.c.contact_id, t.c.id, t.c.priority).where(
                t.c.contact_id.in_(contact_ids),
                t.c.status == TouchStatus.PENDING,
                t.c.channel.in_(CUSTOMER_CHANNELS),
                or_(t.c.not_before.is_(None), t.c.not_before <= as_of),
            ),
        ).all():
            if touch_id not in batch_ids:
                waiting[contact_id].append(priority)

        ready = [r for r in claimed if r not in customer]
        for row in customer:
            contact = contacts.get(row["contact_id"])
            rules = policy.contact_policy(row["playbook"])
            if contact is None or rules is None:
                ready.append(row)
                continue
            account = accounts.get(contact.account_id)
            kind = (row["payload"] or {}).get("kind", "email")
            blocked = unsubscribe_reason(contact, kind)
            zone = contact.timezone or (account.timezone if account else None) or "UTC"
            decision = decide(
                as_of=as_of,
                created_at=row["created_at"],
                policy=rules,
                zone=zone,
                country=account.country if account else None,
                kind=kind,
                unsubscribed=blocked,
                recent=recent[contact.id] + [as_of for p in waiting[contact.id] if p > row["priority"]],
                last_survey_at=last_survey.get(contact.id),
            )
            if decision.action == "send":
                ready.append(row)
                recent[contact.id].append(as_of)
                if kind == "survey":
                    last_survey[contact.id] = as_of
                continue
            values: dict[str, Any] = {"lease_until": None, "claimed_by": None, "reason": decision.reason}
            if decision.action == "defer":
                values["not_before"] = decision.until
            else:
                values["status"] = TouchStatus.SUPPRESSED
            s.exec(update(t).where(t.c.id == row["id"]).values(**values))
            what = "deferred" if decision.action == "defer" else "suppressed"
            s.add(
                _event(
                    row["account_id"],
                    row["enrollment_id"],
                    row["playbook"],
                    row["step_id"],
                    as_of,
                    what,
                    f"{row['step_id']}: {kind} to {contact.email} {what}: {decision.reason}",
                )
            )
            counts[what] += 1
    return sorted(ready, key=_queue_order)


async def _send_channel(
    engine: Engine,
    name: str,
    rows: list[dict[str, Any]],
    channels: dict[str, Channel],
    limits: dict[str, _Limits],
    as_of: datetime,
    policy: DeliveryPolicy,
) -> Counter[str]:
    """Send one channel's touches of a batch in waves as wide as the channel's in-flight limit:
    each wave is marked sending (committed) just before its requests leave together; as it ends,
    its results are recorded and the next wave is marked sending in one transaction (one commit a
    wave, and never more than one wave in doubt after a crash). The database work runs off the
    event loop, so the other channels' requests go on meanwhile."""
    counts: Counter[str] = Counter()
    channel = channels.get(name)
    if channel is None:
        unsent = [(row, TouchStatus.FAILED, f"no channel {name!r} is configured", None) for row in rows]
        await asyncio.to_thread(_finish_many, engine, unsent, as_of, policy)
        counts[TouchStatus.FAILED] += len(rows)
        return counts
    limit = limits[name]
    waves = [rows[start : start + limit.width] for start in range(0, len(rows), limit.width)]
    marked = await asyncio.to_thread(_mark_sending, engine, waves[0], as_of, policy) if waves else []
    for i, wave in enumerate(waves):
        if len(marked) < len(wave):
            counts["skipped"] += len(wave) - len(marked)  # another worker took them after their lease ran out
        outcomes = await asyncio.gather(*(_send_one(engine, row, channel, policy, limit) for row in marked))
        counts.update(status for status, _, _ in outcomes)
        finished = [(row, *outcome) for row, outcome in zip(marked, outcomes, strict=True) if outcome[0] != "skipped"]
        following = waves[i + 1] if i + 1 < len(waves) else None
        marked = await asyncio.to_thread(_finish_many, engine, finished, as_of, policy, following)
    return counts


@dataclass
class _Limits:
    """How hard one channel may be pushed: requests in flight, and requests per second."""

    width: int  # requests in flight at once: the width of a wave
    rate: AsyncLimiter | None

    @classmethod
    def of(cls, channel: Channel, policy: DeliveryPolicy) -> _Limits:
        in_flight = min(policy.concurrency, int(getattr(channel, "max_in_flight", policy.concurrency)))
        per_second = getattr(channel, "max_per_second", None)
        return cls(max(1, in_flight), AsyncLimiter(per_second, 1) if per_second else None)


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """A short transaction on a connection (no ORM session: these are single-row updates)."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        with bind.begin_nested():
            yield bind


def _mark_sending(
    engine: Engine, wave: list[dict[str, Any]], as_of: datetime, policy: DeliveryPolicy
) -> list[dict[str, Any]]:
    """Mark a wave of touches ``sending`` in one committed statement; the rows this run still
    held (another worker may have taken one after its lease ran out), in the wave's order."""
    with _transaction(engine) as conn:
        return _mark(conn, wave, as_of, policy)


def _mark(
    conn: Connection, wave: list[dict[str, Any]], as_of: datetime, policy: DeliveryPolicy
) -> list[dict[str, Any]]:
    values = {"v_sent_at": as_of, "v_lease_until": utcnow() + policy.lease, "v_claimed_by": claimer()}
    marked = set(conn.execute(_mark_statement(), {"ids": [row["id"] for row in wave], **values}).scalars())
    for row in wave:
        row["attempts"] += 1
    return [row for row in wave if row["id"] in marked]


@lru_cache(maxsize=1)
def _mark_statement() -> Any:
    """``UPDATE touch SET status = 'sending' … WHERE id IN (:ids) AND status = 'pending' RETURNING
    id``, built once."""
    t = table_of(Touch)
    return (
        update(t)
        .where(t.c.id.in_(bindparam("ids", expanding=True)), t.c.status == TouchStatus.PENDING)
        .values(
            status=TouchStatus.SENDING,
            attempts=t.c.attempts + 1,
            sent_at=bindparam("v_sent_at"),
            lease_until=bindparam("v_lease_until"),
            claimed_by=bindparam("v_claimed_by"),
        )
        .returning(t.c.id)
    )


def _wait_recorded(engine: Engine, row: dict[str, Any], seconds: float, policy: DeliveryPolicy) -> None:
    """Before waiting between two tries: the touch is back to ``pending`` (nothing is in flight,
    so a crash now leaves nothing in doubt), still leased by this run, and the earliest moment the
    receiver may be asked again is recorded: a run that dies while waiting leaves it behind, and the
    next run's claim respects it (a Retry-After survives a crash)."""
    t = table_of(Touch)
    wall = utcnow()
    with _transaction(engine) as conn:
        conn.execute(
            update(t)
            .where(t.c.id == row["id"], t.c.status == TouchStatus.SENDING)
            .values(
                status=TouchStatus.PENDING,
                retry_not_before=wall + timedelta(seconds=seconds),
                lease_until=wall + timedelta(seconds=seconds) + policy.lease,
            )
        )


def _resume_sending(engine: Engine, row: dict[str, Any], policy: DeliveryPolicy) -> bool:
    """After the wait: ``sending`` again, if this run still holds the touch."""
    t = table_of(Touch)
    with _transaction(engine) as conn:
        done = conn.execute(
            update(t)
            .where(t.c.id == row["id"], t.c.status == TouchStatus.PENDING, t.c.claimed_by == claimer())
            .values(status=TouchStatus.SENDING, lease_until=utcnow() + policy.lease)
        )
    return bool(done.rowcount)


async def _send_one(
    engine: Engine, row: dict[str, Any], channel: Channel, policy: DeliveryPolicy, limit: _Limits
) -> tuple[str, str | None, float | None]:
    """(status, detail, retry in seconds) for one touch: delivered, retry, unknown or failed
    (or skipped: another run took it over while this one waited)."""
    try:
        payload = resolve_secrets(row["payload"]) if policy.resolve_secrets else row["payload"]
    except ConfigError as exc:
        return TouchStatus.FAILED, str(exc), None
    delivery = Delivery(
        row["key"],
        row["channel"],
        payload,
        attempt=row["attempts"],
        meta={"account_id": row["account_id"], "contact_id": row["contact_id"]},
    )
    for attempt in range(1, policy.attempts_now + 1):
        try:
            if limit.rate is not None:
                await limit.rate.acquire()
            receipt = await channel.send(delivery)
            return TouchStatus.DELIVERED, receipt.provider_id, None
        except MaybeDeliveredError as exc:
            if not channel.dedupes_by_key:
                _say(logging.WARNING, row, "may have been delivered, so marked unknown: %s", exc)
                return (
                    TouchStatus.UNKNOWN,
                    f"may have been delivered ({exc}); not sent again because the {row['channel']} channel cannot drop a repeat",
                    None,
                )
            if attempt == policy.attempts_now:
                _say(logging.WARNING, row, "try %d failed, retrying in a later run: %s", attempt, exc)
                return "retry", str(exc), None
            wait = _backoff(policy, attempt)
            _say(logging.INFO, row, "may have been delivered; resending in %.1f s (repeats are dropped): %s", wait, exc)
            if not await _wait_out(engine, row, wait, policy):
                return "skipped", None, None
        except RetryableError as exc:
            if exc.retry_after is not None and exc.retry_after > policy.backoff_cap:
                _say(logging.WARNING, row, "Retry-After %.0f s, retrying in a later run: %s", exc.retry_after, exc)
                return "retry", str(exc), exc.retry_after  # the receiver asked for a long pause: come back then
            if attempt == policy.attempts_now:
                _say(logging.WARNING, row, "try %d failed, retrying in a later run: %s", attempt, exc)
                return "retry", str(exc), None
            wait = exc.retry_after if exc.retry_after is not None else _backoff(policy, attempt)
            why = "back-off" if exc.retry_after is None else "Retry-After"
            _say(logging.WARNING, row, "try %d failed, retrying in %.1f s (%s): %s", attempt, wait, why, exc)
            if not await _wait_out(engine, row, wait, policy):
                return "skipped", None, None
        except IntegrationError as exc:
            _say(logging.ERROR, row, "failed for good: %s", exc)
            return TouchStatus.FAILED, str(exc), None
    return "retry", "no attempt made", None


async def _wait_out(engine: Engine, row: dict[str, Any], seconds: float, policy: DeliveryPolicy) -> bool:
    """Record the wait, wait, and take the touch up again; False when it is no longer this run's."""
    _wait_recorded(engine, row, seconds, policy)
    await asyncio.sleep(seconds)
    return _resume_sending(engine, row, policy)


def _say(level: int, row: dict[str, Any], what: str, *args: object) -> None:
    """One log line about a touch, by key and channel (never its payload: it may hold secrets)."""
    shown = [redact(str(arg)) if isinstance(arg, BaseException) else arg for arg in args]
    _log.log(level, "touch %s (%s): " + what, row["key"], row["channel"], *shown)


def _backoff(policy: DeliveryPolicy, attempt: int) -> float:
    """Exponential backoff with jitter, capped."""
    return min(policy.backoff_cap, policy.backoff_base * 2.0 ** (attempt - 1)) * (1 + random.random() * 0.25)


def _finish_many(
    engine: Engine,
    results: Sequence[tuple[dict[str, Any], str, str | None, float | None]],
    as_of: datetime,
    policy: DeliveryPolicy,
    then_mark: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Record the results of a wave, ``(touch, status, detail, retry in seconds)`` each, in one
    transaction: one executemany per kind of result, one for the timeline lines of failures; and,
    in the same transaction, mark the next wave (``then_mark``) sending. Returns the rows of the
    next wave this run still holds."""
    if not results and not then_mark:
        return []
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    lines = []
    for row, status, detail, retry_in in results:
        values = _finish_values(row, as_of, policy, status, detail, retry_in)
        updates[tuple(sorted(values))].append({"touch_id": row["id"], **{f"v_{k}": v for k, v in values.items()}})
        if values["status"] in (TouchStatus.FAILED, TouchStatus.UNKNOWN):
            what = f"{row['step_id']}: {row['channel']} touch {values['status']}: {values['reason']}"
            lines.append(
                _row(row["account_id"], row["enrollment_id"], row["playbook"], row["step_id"], as_of, "failed", what)
            )
    with _transaction(engine) as conn:
        for columns, params in updates.items():
            conn.execute(_record_statement(columns), params)
        if lines:
            conn.execute(insert(table_of(TimelineEvent)), lines)
        return _mark(conn, then_mark, as_of, policy) if then_mark else []


@lru_cache(maxsize=64)
def _record_statement(columns: tuple[str, ...]) -> Any:
    """The statement recording a result that sets ``columns``, built once (a wave's bookkeeping
    is on the delivery's critical path: building a statement cost more than running it)."""
    t = table_of(Touch)
    return (
        update(t)
        .where(
            t.c.id == bindparam("touch_id"),
            or_(t.c.status == TouchStatus.SENDING, t.c.status == TouchStatus.PENDING),  # no IN: executemany
        )
        .values({name: bindparam(f"v_{name}") for name in columns})
    )


def _finish_values(
    row: dict[str, Any],
    as_of: datetime,
    policy: DeliveryPolicy,
    status: str,
    detail: str | None,
    retry_in: float | None,
) -> dict[str, Any]:
    """The touch's new columns for a result of its send."""
    values: dict[str, Any] = {"lease_until": None, "claimed_by": None}
    if status != TouchStatus.DELIVERED and detail is not None:
        detail = redact(detail)  # the one redaction step for what is stored about a failure
    if status == TouchStatus.DELIVERED:
        values.update(
            status=TouchStatus.DELIVERED, delivered_at=as_of, provider_id=detail, reason=None, retry_not_before=None
        )
    elif status == "retry" and row["attempts"] < policy.max_attempts:
        later = timedelta(seconds=retry_in) if retry_in is not None else policy.later
        values.update(status=TouchStatus.PENDING, not_before=as_of + later, reason=f"will retry: {detail}")
    elif status == TouchStatus.UNKNOWN:
        values.update(status=TouchStatus.UNKNOWN, reason=detail)
    else:
        values.update(status=TouchStatus.FAILED, reason=detail)
    return values


def _row(
    account_id: int,
    enrollment_id: int | None,
    playbook: str | None,
    step_id: str | None,
    at: datetime,
    kind: str,
    summary: str,
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "enrollment_id": enrollment_id,
        "playbook": playbook,
        "step_id": step_id,
        "at": at,
        "kind": kind,
        "summary": summary,
        "detail": {},
    }


def _event(
    account_id: int,
    enrollment_id: int | None,
    playbook: str | None,
    step_id: str | None,
    at: datetime,
    kind: str,
    summary: str,
) -> TimelineEvent:
    return TimelineEvent.model_validate(_row(account_id, enrollment_id, playbook, step_id, at, kind, summary))
