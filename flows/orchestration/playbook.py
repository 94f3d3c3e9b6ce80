"""The Prefect flows of a tick: one flow run per playbook per tick, one task run per phase.

A user's mistake (a playbook that does not compile, a database without Retain's schema, a bad
``as_of``) fails the run with its located message and no traceback; a broken playbook fails only
its own runs, never those of the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from sqlalchemy.engine import Connection, Engine

from flows.engine.advance import AdvanceResult, advance
from flows.engine.approvals import settle_approvals
from flows.engine.enroll import enroll
from flows.engine.outbox import deliver
from flows.engine.revisions import RevisionCache, sync_revision
from flows.engine.settle import settle
from flows.engine.tasks import close_tasks_of_ended
from flows.engine.tick import (
    TickReport,
    _bind,
    _fill,
    _worker,
    delivery_policy,
    find_playbook_in,
    hold_for_the_window,
    parse_as_of,
    valid_playbooks,
)
from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from flows.orchestration.claims import with_prefect_claims
from integrations.channels import build_channels
from models import Settings, make_engine, require_schema, session
from playbooks import CompiledPlaybook, load_policy

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


def _load(settings: Settings, playbook: str) -> CompiledPlaybook:
    return find_playbook_in(settings.resolved_playbooks_dir(), playbook)


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
@plainly
def compile_task(playbook: str) -> CompiledPlaybook:
    return _load(Settings(), playbook)


@task(name="settle", cache_policy=NO_CACHE)
@plainly
def settle_task(
    bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime, cache: RevisionCache
) -> dict[str, int]:
    with session(bind) as s:
        sync_revision(s, pb)
        settled = dict(settle(s, cache, pb.id, as_of))
        settle_approvals(s, as_of, playbook=pb.id)  # drafts past their approval deadline
        return settled


@task(name="enroll", cache_policy=NO_CACHE)
@plainly
def enroll_task(bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime) -> tuple[int, int]:
    with session(bind) as s:
        return enroll(s, pb, as_of)


@task(name="advance", cache_policy=NO_CACHE)
@plainly
def advance_task(
    bind: Engine | Connection, pb: CompiledPlaybook, as_of: datetime, cache: RevisionCache
) -> AdvanceResult:
    result = advance(bind, cache, pb.id, as_of, worker=_worker())
    with session(bind) as s:  # tasks of the enrollments that ended are closed with the reason
        close_tasks_of_ended(s, as_of, playbook=pb.id)
    hold_for_the_window(bind, pb.id, as_of)  # customer touches compete by priority in the outbox run
    return result


@task(name="deliver", cache_policy=NO_CACHE)
@plainly
def deliver_task(engine: Engine, pb: CompiledPlaybook, as_of: datetime, settings: Settings) -> dict[str, int]:
    policy = with_prefect_claims(delivery_policy([pb], load_policy(settings.resolved_playbooks_dir())))
    return dict(deliver(engine, build_channels(settings), as_of=as_of, playbook=pb.id, policy=policy))


@task(name="summarize", cache_policy=NO_CACHE)
@plainly
def summarize_task(report: TickReport) -> TickReport:
    """The tick's artifact: what this tick did (enrolled, steps run, touches written and delivered,
    enrollments ended), all from the tick's own counts. It reads nothing of the book, so a tick's
    cost follows what changed; the playbook's funnel and lift (a read of every enrollment) are
    published once a day by the ``reports`` flow, and by ``retain report playbooks``."""
    logger = get_run_logger()
    logger.info(report.line())
    for error in report.errors[:20]:
        logger.warning(error)

    def table(title: str, head: str, counts: dict[str, int]) -> str:
        rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items())) or "| none | 0 |"
        return f"## {title}\n\n| {head} | count |\n|---|---|\n{rows}\n"

    ended = {**report.settled, **{k: v + report.settled.get(k, 0) for k, v in report.ended.items()}}
    markdown = "\n".join(
        [
            f"# {report.playbook} tick\n\n{report.line()}\n",
            table("Steps run this tick", "step", report.steps),
            table("Touches written this tick", "channel", report.touches_written),
            table("Delivered this tick", "result", report.delivered),
            table("Enrollments ended this tick", "why", ended),
        ]
    )
    create_markdown_artifact(
        markdown=markdown, key=f"tick-{report.playbook.replace('_', '-')}", description=report.line()
    )
    return report


@flow(
    on_crashed=[cancelled_when_interrupted],
    name="retain-playbook",
    flow_run_name=_run_name,
    log_prints=False,
    validate_parameters=True,
)
@plainly
def run_playbook(playbook: str, as_of: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run one tick of one playbook: settle, enroll, advance, deliver, summarize.

    ``as_of`` (ISO 8601) runs the tick at a simulated time; ``dry_run`` keeps nothing and sends nothing."""
    settings = Settings()
    # a scheduled run ticks at its scheduled time, however late a worker picks it up
    moment = parse_as_of(as_of or _scheduled_start())
    engine = make_engine(settings.database_url)
    require_schema(engine)
    pb = check(compile_task(playbook))
    cache = RevisionCache(current={pb.id: pb})
    report = TickReport(pb.id, pb.revision, moment.isoformat(), dry_run)
    with _bind(engine, dry_run) as bind:
        report.settled = check(settle_task(bind, pb, moment, cache))
        report.enrolled, report.holdout = check(enroll_task(bind, pb, moment))
        _fill(report, check(advance_task(bind, pb, moment, cache)))
    if not dry_run:
        report.delivered = check(deliver_task(engine, pb, moment, settings))
    check(summarize_task(report))
    engine.dispose()
    return report.to_dict()


@task(name="approval-deadlines", cache_policy=NO_CACHE)
@plainly
def approval_deadlines_task(engine: Engine, as_of: datetime) -> dict[str, int]:
    """Drafts of every playbook past their approval deadline, settled before the outbox runs: a
    deadline is honoured within the outbox's interval, not only at its playbook's next tick."""
    with session(engine) as s:
        return settle_approvals(s, as_of)


@task(name="deliver-all", cache_policy=NO_CACHE)
@plainly
def deliver_all_task(engine: Engine, as_of: datetime, settings: Settings) -> dict[str, int]:
    # a playbook that does not compile must not hold up the others' touches: its own touches
    # follow the global policy until it is fixed
    playbooks, problems = valid_playbooks(settings.resolved_playbooks_dir())
    for problem in problems:
        get_run_logger().warning("%s", problem.format())
    policy = with_prefect_claims(delivery_policy(playbooks.values(), load_policy(settings.resolved_playbooks_dir())))
    return dict(deliver(engine, build_channels(settings), as_of=as_of, policy=policy))


@flow(on_crashed=[cancelled_when_interrupted], name="retain-outbox", log_prints=False)
@plainly
def deliver_outbox(as_of: str | None = None) -> dict[str, int]:
    """Deliver every touch that is due, of every playbook, under the contact policy.

    Ticks deliver what they write; this flow runs every few minutes so that a touch deferred to the
    end of a contact's quiet hours goes out then, not at the playbook's next tick. Drafts past their
    approval deadline are settled first (sent as drafted, skipped or escalated, as their step says),
    so a ``send`` on deadline goes out in this same run."""
    settings = Settings()
    moment = parse_as_of(as_of or _scheduled_start())
    engine = make_engine(settings.database_url)
    require_schema(engine)
    deadlines = check(approval_deadlines_task(engine, moment))
    counts = check(deliver_all_task(engine, moment, settings))
    counts.update({f"deadline {k}": v for k, v in deadlines.items() if v})  # e.g. "deadline send"
    get_run_logger().info(
        "outbox as of %s: %s",
        moment.isoformat(),
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due",
    )
    engine.dispose()
    return counts
