"""The Prefect flow that reads replies from the mailbox on its schedule (what ``retain replies
poll`` does once): a reply to a Retain email marks its touch replied before the playbooks' next
ticks read ``touches("<step>").replied``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from integrations.sources import Mailbox, PollResult, configured_mailbox, poll_mailbox, team_addresses
from models import Settings, make_engine, require_schema, utcnow

__all__ = ["poll_replies"]

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="poll-mailbox", cache_policy=NO_CACHE)
@plainly
def poll_task(engine: Engine, mailbox: Mailbox, now: datetime, team: tuple[str, ...]) -> PollResult:
    return poll_mailbox(engine, mailbox, now=now, team=team)


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"replies {flow_run.parameters.get('mailbox') or 'RETAIN_MAILBOX_URL'}"


@flow(
    on_crashed=[cancelled_when_interrupted],
    name="retain-replies",
    flow_run_name=_run_name,
    log_prints=False,
    validate_parameters=True,
)
@plainly
def poll_replies(mailbox: str | None = None) -> dict[str, Any]:
    """Read the mailbox's new messages once (``mailbox``, an imaps:// URL; default
    RETAIN_MAILBOX_URL): replies mark their touches replied, automatic replies go on the timeline.
    Without a mailbox configured there is nothing to do, and the run says so."""
    settings = Settings()
    if not mailbox and not settings.mailbox_url:
        get_run_logger().info("no mailbox configured (RETAIN_MAILBOX_URL): nothing to poll")
        return {"mailbox": None}
    target = configured_mailbox(mailbox, settings.mailbox_url)
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        result = check(poll_task(engine, target, utcnow(), team_addresses(settings.email_from)))
    finally:
        engine.dispose()
    get_run_logger().info("%s", result.line())
    return {"mailbox": result.mailbox, **result.counts(), "touches": result.touches}
