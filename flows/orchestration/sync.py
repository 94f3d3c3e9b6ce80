"""The Prefect flow that runs a SQL source (``sources.yaml``) on its schedule: one deployment per
scheduled source (``sync-<source>`` in ``prefect.yaml``), one task run per source run."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from flows.engine.tick import declared_custom_fields
from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from flows.sync import SyncResult, sync_sources
from models import Settings, make_engine, require_schema, utcnow
from playbooks import load_sources

__all__ = ["sync_flow"]

#: the entrypoint of every source's deployment
SYNC_ENTRYPOINT = "flows/orchestration/sync.py:sync_flow"

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="sync", cache_policy=NO_CACHE)
@plainly
def sync_task(source: str | None) -> list[SyncResult]:
    settings = Settings()
    folder = settings.resolved_playbooks_dir()
    spec = load_sources(folder)
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        results = sync_sources(engine, spec, now=utcnow(), only=source, declared=declared_custom_fields(folder))
    finally:
        engine.dispose()
    logger = get_run_logger()
    for result in results:
        (logger.info if result.status == "ok" else logger.warning)("%s", result.line())
        for line in result.problems[:20]:
            logger.warning("  %s", line)
    return results


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"sync {flow_run.parameters.get('source') or 'all sources'}"


@flow(
    on_crashed=[cancelled_when_interrupted],
    name="retain-sync",
    flow_run_name=_run_name,
    log_prints=False,
    validate_parameters=True,
)
@plainly
def sync_flow(source: str | None = None) -> Any:
    """Run SQL source ``source`` (default: every source) from its cursor. The run fails, with the
    reason, when a source refused rows or failed; the batches committed before that stay."""
    results = check(sync_task(source))
    stopped = [r for r in results if r.status != "ok"]
    if stopped:
        return Failed(message="; ".join(r.line() for r in stopped))
    return [asdict(r) for r in results]
