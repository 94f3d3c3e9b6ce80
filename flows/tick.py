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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from integrations.base import Channel
from integrations.registry import build_channels
from models import Enrollment, NotFoundError, Settings, Touch, make_engine, require_schema, session, utcnow
from models.playbook import PolicySpec

from .compiler import CompiledPlaybook, load_playbooks
from .engine import AdvanceResult, RevisionCache, advance, enroll, settle, sync_revision
from .outbox import DeliveryPolicy, deliver
from .policy import ContactPolicy, effective_policy, load_policy

__all__ = ["TickReport", "parse_as_of", "run_playbook", "tick"]


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
) -> TickReport:
    """Settle, enroll, advance and deliver for one playbook at ``as_of`` (plain function).

    ``delivery`` carries the contact policy; by default the ``policy.yaml`` beside the playbook."""
    cache = cache or RevisionCache()
    cache.current[pb.id] = pb
    report = TickReport(pb.id, pb.revision, as_of.isoformat(), dry_run)
    with _bind(engine, dry_run) as bind:
        with session(bind) as s:
            sync_revision(s, pb)
            report.settled = dict(settle(s, cache, pb.id, as_of))
            report.enrolled, report.holdout = enroll(s, pb, as_of)
        result = advance(bind, cache, pb.id, as_of, worker=_worker())  # type: ignore[arg-type]
        _fill(report, result)
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


# --- Prefect ------------------------------------------------------------------------------------

from prefect import flow, get_run_logger, task  # noqa: E402  (after the plain functions on purpose)
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402


def _load(settings: Settings, playbook: str) -> CompiledPlaybook:
    playbooks = load_playbooks(settings.resolved_playbooks_dir())
    if playbook not in playbooks:
        raise NotFoundError(f"no playbook {playbook!r} (playbooks: {', '.join(sorted(playbooks))})")
    return playbooks[playbook]


def _scheduled_start() -> datetime | None:
    scheduled = flow_run.scheduled_start_time
    return datetime.fromtimestamp(scheduled.timestamp(), UTC) if scheduled is not None else None


def _run_name() -> str:
    params = flow_run.parameters
    name = params.get("playbook", "playbook")
    try:
        revision = _load(Settings(), name).revision
    except Exception:  # the flow itself reports a broken playbook; the name must not fail
        revision = "invalid"
    as_of = params.get("as_of") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
    return f"{name}@{revision} {as_of}" + (" dry-run" if params.get("dry_run") else "")


@task(name="compile", cache_policy=NO_CACHE)
def compile_task(playbook: str) -> CompiledPlaybook:
    return _load(Settings(), playbook)


@task(name="settle", cache_policy=NO_CACHE)
def settle_task(
    bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime, cache: RevisionCache
) -> dict[str, int]:
    with session(bind) as s:
        sync_revision(s, pb)
        return dict(settle(s, cache, pb.id, as_of))


@task(name="enroll", cache_policy=NO_CACHE)
def enroll_task(bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime) -> tuple[int, int]:
    with session(bind) as s:
        return enroll(s, pb, as_of)


@task(name="advance", cache_policy=NO_CACHE)
def advance_task(
    bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime, cache: RevisionCache
) -> AdvanceResult:
    return advance(bind, cache, pb.id, as_of, worker=_worker())  # type: ignore[arg-type]


@task(name="deliver", cache_policy=NO_CACHE)
def deliver_task(engine: Engine, pb: CompiledPlaybook, as_of: datetime, settings: Settings) -> dict[str, int]:
    policy = delivery_policy([pb], load_policy(settings.resolved_playbooks_dir()))
    return dict(deliver(engine, build_channels(settings), as_of=as_of, playbook=pb.id, policy=policy))


@task(name="summarize", cache_policy=NO_CACHE)
def summarize_task(report: TickReport, engine: Engine) -> TickReport:
    logger = get_run_logger()
    logger.info(report.line())
    for error in report.errors[:20]:
        logger.warning(error)
    with engine.connect() as conn:
        active = conn.execute(
            select(func.count())
            .select_from(Enrollment)
            .where(col(Enrollment.playbook) == report.playbook, col(Enrollment.status) == "active")
        ).scalar_one()
        touches = conn.execute(
            select(col(Touch.channel), col(Touch.status), func.count())
            .where(col(Touch.playbook) == report.playbook)
            .group_by(col(Touch.channel), col(Touch.status))
        ).all()
    rows = "\n".join(f"| {ch} | {st} | {n} |" for ch, st, n in touches)
    steps = "\n".join(f"| {k} | {v} |" for k, v in sorted(report.steps.items()))
    markdown = (
        f"# {report.playbook} tick\n\n{report.line()}\n\nActive enrollments: **{active}**\n\n"
        f"## Steps run this tick\n\n| step | runs |\n|---|---|\n{steps}\n\n"
        f"## Touches (all time)\n\n| channel | status | count |\n|---|---|---|\n{rows}\n"
    )
    create_markdown_artifact(
        markdown=markdown, key=f"tick-{report.playbook.replace('_', '-')}", description=report.line()
    )
    if not report.dry_run:
        from .reports import publish_playbook_artifacts  # the playbook's funnel and lift, as of this tick

        publish_playbook_artifacts(engine, report.playbook, parse_as_of(report.as_of))
    return report


@flow(name="retain-playbook", flow_run_name=_run_name, log_prints=False, validate_parameters=True)
def run_playbook(playbook: str, as_of: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run one tick of one playbook: settle, enroll, advance, deliver, summarize.

    ``as_of`` (ISO 8601) runs the tick at a simulated time; ``dry_run`` keeps nothing and sends nothing."""
    settings = Settings()
    # a scheduled run ticks at its scheduled time, however late a worker picks it up
    moment = parse_as_of(as_of or _scheduled_start())
    engine = make_engine(settings.database_url)
    require_schema(engine)
    pb = compile_task(playbook)
    cache = RevisionCache(current={pb.id: pb})
    report = TickReport(pb.id, pb.revision, moment.isoformat(), dry_run)
    with _bind(engine, dry_run) as bind:
        report.settled = settle_task(bind, pb, moment, cache)
        report.enrolled, report.holdout = enroll_task(bind, pb, moment)
        _fill(report, advance_task(bind, pb, moment, cache))
    if not dry_run:
        report.delivered = deliver_task(engine, pb, moment, settings)
    summarize_task(report, engine)
    engine.dispose()
    return report.to_dict()


@task(name="deliver-all", cache_policy=NO_CACHE)
def deliver_all_task(engine: Engine, as_of: datetime, settings: Settings) -> dict[str, int]:
    playbooks = load_playbooks(settings.resolved_playbooks_dir())
    policy = delivery_policy(playbooks.values(), load_policy(settings.resolved_playbooks_dir()))
    return dict(deliver(engine, build_channels(settings), as_of=as_of, policy=policy))


@flow(name="retain-outbox", log_prints=False)
def deliver_outbox(as_of: str | None = None) -> dict[str, int]:
    """Deliver every touch that is due, of every playbook, under the contact policy.

    Ticks deliver what they write; this flow runs every few minutes so that a touch deferred to the
    end of a contact's quiet hours goes out then, not at the playbook's next tick."""
    settings = Settings()
    moment = parse_as_of(as_of or _scheduled_start())
    engine = make_engine(settings.database_url)
    require_schema(engine)
    counts = deliver_all_task(engine, moment, settings)
    get_run_logger().info(
        "outbox as of %s: %s",
        moment.isoformat(),
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due",
    )
    engine.dispose()
    return counts
