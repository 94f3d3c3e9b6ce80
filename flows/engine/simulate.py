"""``retain playbooks simulate``: what a playbook would do over the coming days, with no side
effects at all.

The run happens on a scratch copy: a SQLite file is copied into memory through SQLite's backup
API from a read-only connection (the file is not written, not even locked for writing); on
PostgreSQL the run happens in one transaction that is rolled back. Channels are recorders: nothing
leaves the machine. The engine, the outbox and the contact policy are the real ones, so the
simulation shows what the next days would really bring, including what the policy would defer
or suppress and why.

Each tick reads the book as it stood at its moment (:mod:`flows.engine.point_in_time`): over a past
window the simulation is a backtest, and nothing dated after a tick reaches its audience, goals,
exits or branches.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pendulum
from croniter import croniter
from sqlalchemy import create_engine, func, literal, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.pool import StaticPool

from flows.engine.outbox import DeliveryPolicy, deliver
from flows.engine.point_in_time import PointInTime
from flows.engine.revisions import RevisionCache
from flows.engine.steps import HANDLERS
from flows.engine.tick import tick
from integrations.channels import CHANNEL_NAMES, Delivery, Receipt
from models import Account, Enrollment, EnrollmentStatus, TimelineEvent, Touch, table_of
from playbooks import CompiledPlaybook

__all__ = ["Simulation", "simulate"]

MIN_TICK_GAP = timedelta(hours=6)


class _Recorder:
    """A channel that keeps what it is given: the simulation's only "delivery"."""

    dedupes_by_key = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[Delivery] = []

    async def send(self, delivery: Delivery) -> Receipt:
        self.sent.append(delivery)
        return Receipt(provider_id="simulated")

    async def aclose(self) -> None:
        return None


@dataclass
class Simulation:
    """What a playbook would do from ``start`` over ``days`` days."""

    playbook: str
    revision: str
    start: str
    days: int
    entered: list[dict[str, Any]] = field(default_factory=list)  # who would enter, and when
    holdout: int = 0
    steps: dict[str, int] = field(default_factory=dict)  # step id -> enrollments that would reach it
    touches: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> state -> count
    held_back: list[dict[str, Any]] = field(default_factory=list)  # deferred or suppressed, with why
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@contextmanager
def _scratch(engine: Engine) -> Iterator[Engine]:
    """A copy of the database to run on: in memory for SQLite, a rolled-back transaction otherwise."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        path = url.database
        memory = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        source = _read_only(path) if path else None
        try:
            raw = memory.raw_connection()
            if source is not None:
                source.backup(raw.driver_connection)  # type: ignore[arg-type]
            raw.driver_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]
            raw.close()
        finally:
            if source is not None:
                source.close()
        try:
            yield memory
        finally:
            memory.dispose()
        return
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn  # type: ignore[misc]
        finally:
            outer.rollback()


def _read_only(path: str) -> sqlite3.Connection:
    """Open a SQLite file without writing anything next to it. With no write-ahead log in use,
    ``immutable`` reads the file as it is (no -wal or -shm file is created); otherwise a read-only
    connection sees the log's committed pages too."""
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return sqlite3.connect(f"file:{path}?immutable=1", uri=True)


def simulate(engine: Engine, pb: CompiledPlaybook, start: datetime, days: int, delivery: DeliveryPolicy) -> Simulation:
    """Run ``pb`` on its schedule from ``start`` for ``days`` days on a scratch copy, with the outbox
    drained every hour as its deployment does, and report what happened."""
    result = Simulation(pb.id, pb.revision, start.isoformat(), days)
    delivery = replace(delivery, resolve_secrets=False)  # nothing leaves: no secret is needed
    channels = {name: _Recorder(name) for name in CHANNEL_NAMES}
    ticks = _tick_times(pb, start, start + timedelta(days=days))
    drains = {start + timedelta(hours=h) for h in range(days * 24 + 1)}
    with _scratch(engine) as scratch:
        first_touch = _max_id(scratch, Touch)
        first_enrollment = _max_id(scratch, Enrollment)
        cache = RevisionCache()
        _forget_after(scratch, start)
        then = PointInTime(scratch, start, start + timedelta(days=days))
        for moment in sorted(ticks | drains):
            if moment in ticks:
                then.move_to(moment)
                report = tick(
                    scratch,
                    pb,
                    moment,
                    channels=dict(channels),
                    cache=cache,
                    delivery=delivery,
                    enroll_only=then.present(moment),
                )
                result.errors += report.errors
            elif _anything_to_deliver(scratch, pb.id):
                deliver(scratch, dict(channels), as_of=moment, playbook=pb.id, policy=delivery)
        _collect(scratch, pb, result, first_touch, first_enrollment)
    return result


def _tick_times(pb: CompiledPlaybook, start: datetime, end: datetime) -> set[datetime]:
    """When the playbook's deployment would tick: its cron, thinned to one tick per six hours (waits
    are counted in days; more ticks would only slow the preview), and always at the start."""
    times = {start}
    if pb.spec.schedule is None:
        return times | {start + timedelta(days=d) for d in range(1, (end - start).days + 1)}
    local = pendulum.instance(start).in_timezone(pb.spec.schedule.timezone)
    fires = croniter(pb.spec.schedule.cron, local)
    last = start
    while True:
        moment = fires.get_next(datetime).astimezone(UTC).replace(microsecond=0)
        if moment > end:
            return times
        if moment - last >= MIN_TICK_GAP:
            times.add(moment)
            last = moment


def _forget_after(bind: Any, start: datetime) -> None:
    """What Retain itself did from ``start`` on did not exist yet at the simulation's first tick:
    the enrollments started since leave the playbooks (renamed, never a valid id, and ended), so
    they neither block a re-entry nor get advanced. (Touches delivered since are past every tick's
    contact policy, which reads no later than its tick.)"""
    e = table_of(Enrollment)
    with _transaction(bind) as conn:
        conn.execute(
            update(e)
            .where(e.c.started_at >= start)
            .values(playbook=literal("~") + func.substr(e.c.playbook, 2), status=EnrollmentStatus.EXITED.value)
        )


@contextmanager
def _transaction(bind: Any) -> Iterator[Any]:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        yield bind


def _anything_to_deliver(bind: Any, playbook: str) -> bool:
    """Whether the hourly outbox run has work: a touch of ``playbook`` waiting or being sent."""
    t = table_of(Touch)
    waiting = select(t.c.id).where(t.c.playbook == playbook, t.c.status.in_(("pending", "sending"))).limit(1)
    with _connect(bind) as conn:
        return conn.execute(waiting).first() is not None


def _max_id(bind: Any, table: Any) -> int:
    with _connect(bind) as conn:
        return conn.execute(select(table.id).order_by(table.id.desc()).limit(1)).scalar() or 0


@contextmanager
def _connect(bind: Any) -> Iterator[Any]:
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            yield conn
    else:
        yield bind


def _collect(bind: Any, pb: CompiledPlaybook, result: Simulation, first_touch: int, first_enrollment: int) -> None:
    # SQLModel types these columns as their values (int | None), which mypy cannot query with
    e, a, t, tl = cast(Any, (Enrollment, Account, Touch, TimelineEvent))
    with _connect(bind) as conn:
        for external_id, name, started, holdout in conn.execute(
            select(a.external_id, a.name, e.started_at, e.holdout)
            .join(a, a.id == e.account_id)
            .where(e.playbook == pb.id, e.id > first_enrollment)
            .order_by(e.started_at, a.external_id)
        ):
            result.entered.append(
                {"account": external_id, "name": name, "on": started.date().isoformat(), "holdout": bool(holdout)}
            )
            result.holdout += bool(holdout)
        new_enrollments = select(e.id).where(e.playbook == pb.id, e.id > first_enrollment)
        reached: dict[str, set[int]] = defaultdict(set)
        for step_id, enrollment_id in conn.execute(
            select(tl.step_id, tl.enrollment_id).where(tl.enrollment_id.in_(new_enrollments), tl.step_id.is_not(None))
        ):
            reached[step_id].add(enrollment_id)
        order = {s.id: i for i, s in enumerate(pb.spec.steps)}
        result.steps = {k: len(v) for k, v in sorted(reached.items(), key=lambda kv: order.get(kv[0], 999))}
        touches: dict[str, Counter[str]] = defaultdict(Counter)
        for channel, status, not_before, reason, step_id, external_id in conn.execute(
            select(t.channel, t.status, t.not_before, t.reason, t.step_id, a.external_id)
            .join(a, a.id == t.account_id)
            .where(t.playbook == pb.id, t.id > first_touch)
            .order_by(t.id)
        ):
            state = (
                "would be delivered"
                if status == "delivered"
                else "deferred"
                if status == "pending" and not_before
                else status
            )
            touches[channel][state] += 1
            if status in ("suppressed", "unknown", "failed") or (status == "pending" and reason):
                result.held_back.append(
                    {"account": external_id, "step": step_id, "channel": channel, "state": state, "why": reason}
                )
        result.touches = {k: dict(v) for k, v in sorted(touches.items())}
        for (outcome,) in conn.execute(select(e.outcome).where(e.id.in_(new_enrollments), e.outcome.is_not(None))):
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        # deferrals that were later delivered are still worth showing: they changed the timing
        channel_of = {step.id: next(iter(HANDLERS[step.kind].channels), None) for step in pb.spec.steps}
        for at, summary, step_id, external_id in conn.execute(
            select(tl.at, tl.summary, tl.step_id, a.external_id)
            .join(a, a.id == tl.account_id)
            .where(tl.enrollment_id.in_(new_enrollments), tl.kind == "deferred")
            .order_by(tl.id)
        ):
            result.held_back.append(
                {
                    "account": external_id,
                    "step": step_id,
                    "channel": channel_of.get(step_id),
                    "state": "deferred",
                    "why": f"{at:%Y-%m-%d}: {summary}",
                }
            )
