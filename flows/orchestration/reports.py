"""The Prefect flow that records revenue outcomes and publishes the reports as artifacts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlmodel import Session

from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from flows.orchestration.artifacts import publish_artifacts
from flows.reports.reports import (
    Report,
    health_report,
    playbooks_report,
    retention_report,
    surveys_report,
)

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="revenue-outcomes", cache_policy=NO_CACHE)
@plainly
def outcomes_task(engine: Any, as_of: datetime) -> dict[str, Any]:
    from flows.analytics.attribution import record_revenue_outcomes
    from models import session

    with session(engine) as s:
        result = record_revenue_outcomes(s, as_of)
    get_run_logger().info(result.line())
    return result.to_dict()


@task(name="report", task_run_name="report-{kind}", cache_policy=NO_CACHE)
@plainly
def report_task(engine: Any, kind: str, as_of: datetime, months: int, window_days: int) -> Report:
    with Session(engine) as s:
        if kind == "retention":
            return retention_report(s, as_of, months=months)
        if kind == "playbooks":
            return playbooks_report(s, as_of, months=months, window=timedelta(days=window_days))
        if kind == "surveys":
            return surveys_report(s, as_of, months=months)
        return health_report(s, as_of, months=months)


@task(name="publish", cache_policy=NO_CACHE)
@plainly
def publish_task(reports: list[Report]) -> list[str]:
    keys = []
    for report in reports:
        keys += publish_artifacts(report)
    return keys


@flow(on_crashed=[cancelled_when_interrupted], name="retain-reports", log_prints=False, validate_parameters=True)
@plainly
def report_flow(as_of: str | None = None, months: int = 12, window_days: int = 120) -> dict[str, Any]:
    """Record revenue outcomes, then build the retention, playbooks, surveys and health reports and
    publish them as Prefect artifacts. One task run per phase and report, whatever the book's size."""
    from flows.engine.tick import parse_as_of
    from models import Settings, make_engine, require_schema

    settings = Settings()
    moment = parse_as_of(as_of)
    engine = make_engine(settings.database_url)
    require_schema(engine)
    try:
        outcomes = check(outcomes_task(engine, moment))
        reports = [
            check(report_task(engine, kind, moment, months, window_days))
            for kind in ("retention", "playbooks", "surveys", "health")
        ]
        keys = check(publish_task(reports))
    finally:
        engine.dispose()
    return {"as_of": moment.isoformat(), "revenue_outcomes": outcomes, "artifacts": keys}
