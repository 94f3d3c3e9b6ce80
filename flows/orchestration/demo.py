"""The demo as a Prefect flow: one tick per simulated day."""

from __future__ import annotations

from datetime import date
from typing import Any

# --- Prefect: one flow run, one task per simulated week -------------------------------------------------
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from flows.demo.world import (
    DayReport,
    DemoConfig,
    World,
    _load_demo_playbooks,
    _notify,
    _result,
    demo_delivery,
    seed,
    simulate_day,
    webhook_receiver,
)
from flows.engine.outbox import DeliveryPolicy
from flows.engine.revisions import RevisionCache
from models import (
    Settings,
)
from playbooks import CompiledPlaybook


@task(name="seed", cache_policy=NO_CACHE)
def seed_task(engine: Engine, cfg: DemoConfig) -> World:
    world = seed(engine, cfg)
    get_run_logger().info("seeded %s", dict(world.seeded))
    return world


@task(name="simulate-week", task_run_name="week {week}", cache_policy=NO_CACHE)
def week_task(
    engine: Engine,
    settings: Settings,
    world: World,
    playbooks: dict[str, CompiledPlaybook],
    cache: RevisionCache,
    delivery: DeliveryPolicy,
    week: int,
    first_day: int,
    last_day: int,
) -> list[DayReport]:
    reports = []
    for day in range(first_day, last_day):
        reports.append(simulate_day(engine, settings, world, playbooks, day, cache, delivery))
        _notify(reports[-1], world.cfg.days)
    enrolled = sum(r.enrolled for r in reports)
    delivered = sum(r.delivered for r in reports)
    get_run_logger().info(
        "week %d (%s): enrolled %d, delivered %d",
        week,
        reports[0].as_of.date() if reports else "-",
        enrolled,
        delivered,
    )
    return reports


@flow(
    name="retain-demo",
    flow_run_name="demo {accounts} accounts x {days} days from {start} (seed {seed})",
    validate_parameters=True,
)
def demo_flow(accounts: int = 500, days: int = 180, seed: int = 7, start: str = "2027-01-04") -> dict[str, Any]:
    """Seed a synthetic book and simulate ``days`` days of the five playbooks, a task per week.
    The database must already be prepared (``prepare``)."""
    from models import make_engine

    settings = Settings()
    cfg = DemoConfig(accounts=accounts, days=days, seed=seed, start=date.fromisoformat(start))
    engine = make_engine(settings.database_url)
    playbooks = _load_demo_playbooks(settings)
    cache = RevisionCache()
    delivery = demo_delivery(settings, playbooks)
    reports: list[DayReport] = []
    try:
        world = seed_task(engine, cfg)
        with webhook_receiver() as receiver:
            for week, first in enumerate(range(0, days, 7), start=1):
                last = min(first + 7, days)
                reports += week_task(engine, settings, world, playbooks, cache, delivery, week, first, last)
            world.webhook_requests = len(receiver.received)
    finally:
        engine.dispose()
    from prefect.runtime import flow_run

    return {**_result(world, reports).to_dict(), "flow_run": flow_run.name, "flow_run_id": flow_run.id}
