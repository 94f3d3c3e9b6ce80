"""The Prefect flow that scores account health on its schedule."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

# --- Prefect ------------------------------------------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from flows.analytics.health import (
    AccountReadings,
    HealthReport,
    HealthResult,
    read_accounts,
    report_of,
    score,
    write_scores,
)
from flows.engine.tick import parse_as_of
from flows.orchestration._plainly import check, plainly
from flows.orchestration._signals import cancelled_when_interrupted, leave_ctrl_c_to_the_runner
from models import (
    Settings,
    make_engine,
    require_schema,
)
from models.health import HealthSpec
from playbooks import health_file, load_health

leave_ctrl_c_to_the_runner()  # a flow run started by `retain serve` is stopped by serve


@task(name="load", cache_policy=NO_CACHE)
@plainly
def load_task(path: Path) -> HealthSpec:
    return load_health(path)


@task(name="read", cache_policy=NO_CACHE)
@plainly
def read_task(engine: Engine, spec: HealthSpec, as_of: datetime) -> list[AccountReadings]:
    with engine.connect() as conn:
        return read_accounts(conn, spec, as_of)


@task(name="score", cache_policy=NO_CACHE)
@plainly
def score_task(spec: HealthSpec, accounts: list[AccountReadings]) -> list[HealthResult]:
    return score(spec, accounts)


@task(name="write", cache_policy=NO_CACHE)
@plainly
def write_task(engine: Engine, results: list[HealthResult], as_of: datetime) -> None:
    with engine.begin() as conn:
        write_scores(conn, results, as_of)


@task(name="summarize", cache_policy=NO_CACHE)
@plainly
def summarize_task(report: HealthReport) -> HealthReport:
    get_run_logger().info(report.line())
    bands = "\n".join(f"| {b} | {report.bands.get(b, 0)} |" for b in ("green", "yellow", "red"))
    changes = "\n".join(f"| {k} | {v} |" for k, v in sorted(report.changes.items())) or "| none | 0 |"
    skipped = "\n".join(f"| {k} | {v} |" for k, v in sorted(report.skipped.items())) or "| none | 0 |"
    markdown = (
        f"# Health scores\n\n{report.line()}\n\nDefinition: `{report.definition}`\n\n"
        f"## Bands\n\n| band | accounts |\n|---|---|\n{bands}\n\n"
        f"## Band changes\n\n| change | accounts |\n|---|---|\n{changes}\n\n"
        f"## Measures skipped for lack of data\n\n| measure | accounts |\n|---|---|\n{skipped}\n"
    )
    create_markdown_artifact(markdown=markdown, key="health-scores", description=report.line())
    return report


def _run_name() -> str:
    from prefect.runtime import flow_run

    return f"health {flow_run.parameters.get('as_of') or 'now'}"


@flow(
    on_crashed=[cancelled_when_interrupted],
    name="retain-health",
    flow_run_name=_run_name,
    log_prints=False,
    validate_parameters=True,
)
@plainly
def health(as_of: str | None = None) -> dict[str, Any]:
    """Score every account's health at ``as_of`` (ISO 8601; default now): load, read, score,
    write, summarize. One task run per phase, whatever the number of accounts."""
    settings = Settings()
    moment = parse_as_of(as_of)
    path = health_file(settings.resolved_playbooks_dir())
    spec = check(load_task(path))
    engine = make_engine(settings.database_url)
    require_schema(engine)
    try:
        accounts = check(read_task(engine, spec, moment))
        results = check(score_task(spec, accounts))
        check(write_task(engine, results, moment))
        report = check(summarize_task(report_of(results, moment, path)))
    finally:
        engine.dispose()
    return report.to_dict()
