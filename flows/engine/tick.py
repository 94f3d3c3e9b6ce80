"""One tick of one playbook, as plain functions and as the Prefect flow the deployments run.

Prefect task runs are one per phase (compile, settle, enroll, advance, deliver, summarize), never
one per account: the cost of a tick in Prefect does not grow with the book of business.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from flows.engine.advance import AdvanceResult, advance
from flows.engine.approvals import settle_approvals
from flows.engine.enroll import enroll
from flows.engine.outbox import CUSTOMER_CHANNELS, DeliveryPolicy, deliver
from flows.engine.policy import ContactPolicy, effective_policy
from flows.engine.revisions import RevisionCache, sync_revision
from flows.engine.settle import settle
from flows.engine.tasks import close_tasks_of_ended
from integrations.channels import Channel
from models import Problem, Touch, TouchStatus, execute, session, table_of, utcnow
from models.playbook import PolicySpec
from playbooks import CompiledPlaybook, load_playbook, load_policy, validate_paths

__all__ = [
    "PRIORITY_WINDOW",
    "TickReport",
    "declared_custom_fields",
    "delivery_policy",
    "find_playbook_in",
    "hold_for_the_window",
    "parse_as_of",
    "tick",
    "valid_playbooks",
    "window_end",
]

#: Customer-facing touches (email, surveys) that playbooks' ticks write within one window of the
#: clock (09:00-09:05, 09:05-09:10, ...) are delivered together at the window's end by the outbox
#: run, highest playbook priority first: a contact's touch cap then goes to the higher priority
#: whichever playbook ticked first. The outbox deployment runs at every window's end.
PRIORITY_WINDOW = timedelta(minutes=5)


@dataclass
class TickReport:
    """What one tick did: the summary printed, logged and stored as a Prefect artifact."""

    playbook: str
    revision: str
    as_of: str
    dry_run: bool
    settled: dict[str, int] = field(default_factory=dict)
    enrolled: int = 0
    holdout: int = 0
    advanced: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    ended: dict[str, int] = field(default_factory=dict)
    touches_written: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        touches = sum(self.touches_written.values())
        sent = self.delivered.get("delivered", 0)
        mode = " (dry run: nothing kept, nothing sent)" if self.dry_run else ""
        return (
            f"{self.playbook}@{self.revision} as of {self.as_of}{mode}: enrolled {self.enrolled} ({self.holdout} holdout), "
            f"advanced {self.advanced}, touches written {touches}, delivered {sent}, "
            f"ended {sum(self.ended.values()) + sum(self.settled.values())}, errors {len(self.errors)}"
        )


def parse_as_of(value: str | datetime | None) -> datetime:
    """``as_of`` as an aware UTC datetime, whole seconds. A date means midnight UTC."""
    if value is None:
        moment = utcnow()
    elif isinstance(value, datetime):
        moment = value
    else:
        import pendulum

        try:
            parsed = pendulum.parse(value, tz="UTC")
        except (ValueError, pendulum.parsing.exceptions.ParserError) as exc:
            from models import ConfigError

            raise ConfigError(
                f"--as-of {value!r} is not an ISO 8601 date or time (like 2027-06-01 or 2027-06-01T09:00:00Z)"
            ) from exc
        # pendulum.parse gives a DateTime for any date or time text (exact=False)
        moment = datetime.fromtimestamp(parsed.timestamp(), UTC)  # type: ignore[union-attr]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def _bind(engine: Engine, dry_run: bool) -> Iterator[Engine | Connection]:
    """The real engine, or (dry run) one connection whose transaction is rolled back at the end."""
    if not dry_run:
        yield engine
        return
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


def delivery_policy(playbooks: Iterable[CompiledPlaybook], global_policy: PolicySpec) -> DeliveryPolicy:
    """The outbox settings: the global contact policy, and each playbook's own overrides."""
    policies: dict[str | None, ContactPolicy] = {None: effective_policy(global_policy, None)}
    policies.update({pb.id: effective_policy(global_policy, pb.spec.policy) for pb in playbooks})
    return DeliveryPolicy(contact_policies=policies)


def _default_delivery(pb: CompiledPlaybook) -> DeliveryPolicy:
    source = Path(pb.file)
    return delivery_policy([pb], load_policy(source.parent) if source.is_file() else PolicySpec())


def tick(
    engine: Engine,
    pb: CompiledPlaybook,
    as_of: datetime,
    *,
    dry_run: bool = False,
    channels: dict[str, Channel] | None = None,
    cache: RevisionCache | None = None,
    delivery: DeliveryPolicy | None = None,
    window: timedelta | None = PRIORITY_WINDOW,
    enroll_only: ColumnElement[bool] | None = None,
) -> TickReport:
    """Settle, enroll, advance and deliver for one playbook at ``as_of`` (plain function).

    ``delivery`` carries the contact policy; by default the ``policy.yaml`` beside the playbook.
    The customer-facing touches written are held for the outbox run at the end of their
    ``window`` (see :data:`PRIORITY_WINDOW`; None: delivered in this tick); the others go now.
    ``enroll_only`` narrows who may enroll (a simulation's accounts that existed at ``as_of``)."""
    cache = cache or RevisionCache()
    cache.current[pb.id] = pb
    report = TickReport(pb.id, pb.revision, as_of.isoformat(), dry_run)
    with _bind(engine, dry_run) as bind:
        with session(bind) as s:
            sync_revision(s, pb)
            report.settled = dict(settle(s, cache, pb.id, as_of))
            settle_approvals(s, as_of, playbook=pb.id)  # drafts past their approval deadline
            report.enrolled, report.holdout = enroll(s, pb, as_of, only=enroll_only)
        result = advance(bind, cache, pb.id, as_of, worker=_worker())
        _fill(report, result)
        with session(bind) as s:  # tasks of the enrollments that ended are closed with the reason
            close_tasks_of_ended(s, as_of, playbook=pb.id)
        if window is not None:
            hold_for_the_window(bind, pb.id, as_of, window)
        if not dry_run and channels is not None:
            policy = delivery or _default_delivery(pb)
            report.delivered = dict(deliver(engine, channels, as_of=as_of, playbook=pb.id, policy=policy))
    return report


def _fill(report: TickReport, result: AdvanceResult) -> None:
    report.advanced = result.enrollments
    report.steps = dict(result.steps)
    report.ended = dict(result.ended)
    report.touches_written = dict(result.touches)
    report.errors = result.errors


def valid_playbooks(folder: Path) -> tuple[dict[str, CompiledPlaybook], list[Problem]]:
    """The playbooks of ``folder`` that compile, by id, and the problems of those that do not:
    one broken playbook stops only itself, never the ticks of the others."""
    compiled, problems = validate_paths([folder])
    broken = {p.file for p in problems}
    return {pb.id: pb for pb in compiled if pb.file not in broken}, problems


def declared_custom_fields(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """The custom fields the playbooks of ``folder`` declare: ``{name: [(type, file name), ...]}``
    (a playbook that does not compile declares nothing): what an accounts import, from a file or a
    SQL source, checks its custom columns against."""
    declared: dict[str, list[tuple[str, str]]] = {}
    if not folder.is_dir():
        return declared
    compiled, _ = valid_playbooks(folder)
    for pb in compiled.values():
        for name, kind in pb.spec.custom_fields.items():
            declared.setdefault(name, []).append((str(kind), Path(pb.file).name))
    return declared


def find_playbook_in(folder: Path, name: str) -> CompiledPlaybook:
    """Playbook ``name`` (its id or file name) of ``folder``: a :class:`PlaybookError` with the
    located problems of its own file when it does not compile, whatever the other files hold: only
    the file that declares it is compiled, so a broken or hostile sibling costs nothing."""
    return load_playbook(folder, name)


def window_end(moment: datetime, window: timedelta = PRIORITY_WINDOW) -> datetime:
    """The end of the clock window ``moment`` falls in (a moment on a boundary opens a window)."""
    size = window.total_seconds()
    return datetime.fromtimestamp((moment.timestamp() // size + 1) * size, UTC)


def hold_for_the_window(
    bind: Engine | Connection, playbook: str, as_of: datetime, window: timedelta = PRIORITY_WINDOW
) -> int:
    """Hold the customer-facing touches this tick of ``playbook`` wrote until the end of their
    window, where they compete by priority with those of every other playbook. Returns how many."""
    t = table_of(Touch)
    end = window_end(as_of, window)
    with session(bind) as s:
        held = execute(
            s,
            update(t)
            .where(
                t.c.playbook == playbook,
                t.c.created_at == as_of,
                t.c.status == TouchStatus.PENDING,
                t.c.channel.in_(CUSTOMER_CHANNELS),
                t.c.contact_id.is_not(None),
                or_(t.c.not_before.is_(None), t.c.not_before < end),
            )
            .values(not_before=end),
        )
        return int(held.rowcount)
