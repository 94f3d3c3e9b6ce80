"""The Prefect flow that keeps CSM tasks in step with the CRM on its schedule (what ``retain tasks
sync`` does once): a task completed in the CRM is completed in Retain, so ``task("…").done``
moves its enrollment on at the playbook's next tick."""

from __future__ import annotations

from datetime import datetime
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from flows.engine.tasks import pull_crm_tasks
from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from integrations.channels import CrmTaskChannel, build_channel
from models import Settings, make_engine, require_schema, utcnow

__all__ = ["sync_crm_tasks"]

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="pull-crm-tasks", cache_policy=NO_CACHE)
@plainly
def pull_task(engine: Engine, crm: CrmTaskChannel, now: datetime) -> dict[str, int]:
    return pull_crm_tasks(engine, crm, now=now)


@flow(on_crashed=[cancelled_when_interrupted], name="retain-tasks-sync", log_prints=False, validate_parameters=True)
@plainly
def sync_crm_tasks() -> dict[str, Any]:
    """Complete in Retain the open tasks completed in the CRM (RETAIN_CRM_TOKEN, RETAIN_CRM_URL).
    Without a CRM configured there is nothing to do, and the run says so."""
    settings = Settings()
    crm = build_channel("crm", settings)
    if not isinstance(crm, CrmTaskChannel):
        get_run_logger().info("no CRM configured (RETAIN_CRM_TOKEN): no tasks to sync")
        return {"crm": None}
    engine = make_engine(settings.database_url)
    try:
        require_schema(engine)
        counts = check(pull_task(engine, crm, utcnow()))
    finally:
        engine.dispose()
    get_run_logger().info(
        "CRM tasks: %d open checked, %d completed there and now here, %d newly linked",
        counts["checked"],
        counts["completed"],
        counts["linked"],
    )
    return {"crm": settings.crm_url, **counts}
