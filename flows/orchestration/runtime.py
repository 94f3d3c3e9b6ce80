"""Running Retain's flows through Prefect from the command line, with no server to start by hand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from models import Settings

__all__ = ["prefect_environment", "run_flow_in_process"]


@contextmanager
def prefect_environment(settings: Settings) -> Iterator[None]:
    """Make the flow see the CLI's settings (flows read ``RETAIN_*`` from the environment) and
    turn off the per-run heartbeat thread, which adds about a second to every short flow run."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    saved = {k: os.environ.get(k) for k in ("RETAIN_DATABASE_URL", "RETAIN_PLAYBOOKS_DIR")}
    os.environ["RETAIN_DATABASE_URL"] = settings.database_url
    os.environ["RETAIN_PLAYBOOKS_DIR"] = str(settings.resolved_playbooks_dir())
    updates: dict[Any, Any] = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        # the temporary server has no internet here to send usage data to, and says so loudly
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    if not os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        # the default 20 s is close to a cold start on 2 cores
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 90
    try:
        with temporary_settings(updates=updates):
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_flow_in_process(settings: Settings, playbook: str, as_of: str | None, dry_run: bool) -> dict[str, Any]:
    """One tick as a Prefect flow run in this process (Prefect's ephemeral API when no server is set)."""
    from flows.engine.tick import TickReport
    from flows.orchestration.playbook import run_playbook

    with prefect_environment(settings):
        report = run_playbook(playbook=playbook, as_of=as_of, dry_run=dry_run)
    tick_report = TickReport(**report)
    return {**report, "line": tick_report.line()}
