"""The Prefect flow that posts every CSM's daily digest on its schedule (what ``retain today
--post <channel> --every-csm`` does once): each CSM's day is posted at most once per day and
channel (a ``digest_post`` row per key), however often the flow runs."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from sqlalchemy.engine import Engine

from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from flows.reports.reports import PostResult
from flows.reports.today import csm_today, csms, post_today
from integrations.channels import build_channel
from models import ConfigError, RetainError, Settings, make_engine, require_schema, utcnow

__all__ = ["daily_digest"]

#: the channels a digest can be posted to
POSTS = ("email", "slack", "file")

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="post-digests", cache_policy=NO_CACHE)
@plainly
def post_digests_task(engine: Engine, settings: Settings, post: str, now: datetime) -> list[PostResult | str]:
    """Every CSM's digest; one CSM's failure (their mail server said no) is reported and the
    others are still posted. A failed one is posted by the next run the same day."""
    channel = build_channel(post, settings)
    # the day is the CSMs' own (RETAIN_DIGEST_TIMEZONE): its date names the digest, and the tasks
    # due by the end of it are the ones shown
    now = now.astimezone(zoneinfo.ZoneInfo(settings.digest_timezone))
    logger = get_run_logger()
    results: list[PostResult | str] = []
    for person in csms(engine):
        try:
            result = post_today(
                csm_today(engine, person, now=now),
                channel,
                engine=engine,
                to=person if post == "email" else None,
                now=now,
            )
        except RetainError as exc:
            logger.warning("%s: %s", person, exc)
            results.append(f"{person}: {exc}")
            continue
        logger.info("daily digest %s: %s", result.key, result.status)
        results.append(result)
    return results


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"digest {flow_run.parameters.get('post') or 'RETAIN_DIGEST_POST'}"


@flow(
    on_crashed=[cancelled_when_interrupted],
    name="retain-digest",
    flow_run_name=_run_name,
    log_prints=False,
    validate_parameters=True,
)
@plainly
def daily_digest(post: str | None = None, as_of: str | None = None) -> Any:
    """Post each CSM's day (tasks due or late, drafts to approve, accounts turned red, replies) to
    ``post`` (email to each CSM's own address, slack or file; default RETAIN_DIGEST_POST), once per
    day (in RETAIN_DIGEST_TIMEZONE) and CSM. The run fails, with the reasons, when a CSM's digest could not be posted."""
    from flows.engine.tick import parse_as_of

    settings = Settings()
    channel = post or settings.digest_post
    if channel not in POSTS:
        raise ConfigError(f"the digest is posted by {', '.join(POSTS)}, not {channel!r}")
    moment = parse_as_of(as_of) if as_of else utcnow()
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        results = check(post_digests_task(engine, settings, channel, moment))
    finally:
        engine.dispose()
    failed = [r for r in results if isinstance(r, str)]
    posted = [r for r in results if isinstance(r, PostResult)]
    counts = {
        "posted": sum(r.status == "posted" for r in posted),
        "already posted": sum(r.status != "posted" for r in posted),
        "failed": len(failed),
    }
    get_run_logger().info("daily digests by %s: %s", channel, ", ".join(f"{k} {v}" for k, v in counts.items()))
    if failed:
        return Failed(message="; ".join(failed))
    return counts
