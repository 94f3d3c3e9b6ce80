"""The demo: a synthetic book of accounts whose customers react to outreach, run through the shipped playbooks."""

from flows.demo.world import (
    PLAYBOOK_ORDER,
    DayReport,
    DemoConfig,
    DemoResult,
    World,
    account_count,
    demo_channels,
    demo_settings,
    prepare,
    reset_database,
    run_demo,
    sample_timelines,
    seed,
    set_progress_hook,
    simulate_day,
    webhook_receiver,
)

__all__ = [
    "PLAYBOOK_ORDER",
    "DayReport",
    "DemoConfig",
    "DemoResult",
    "World",
    "account_count",
    "demo_channels",
    "demo_settings",
    "prepare",
    "reset_database",
    "run_demo",
    "sample_timelines",
    "seed",
    "set_progress_hook",
    "simulate_day",
    "webhook_receiver",
]
