"""Running Retain's flows through Prefect from the command line, with no server to start by hand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models import RetainError, Settings

__all__ = ["prefect_environment", "run_flow_in_process"]


@contextmanager
def prefect_environment(settings: Settings, *, start_temporary_server: bool = True) -> Iterator[None]:
    """Make the flow see the CLI's settings (flows read ``RETAIN_*`` from the environment) and
    turn off the per-run heartbeat thread, which adds about a second to every short flow run.

    With no Prefect server configured, Prefect's temporary server is started here, one process
    at a time per ``PREFECT_HOME`` (see :func:`_start_temporary_server`)."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    saved = {
        k: os.environ.get(k) for k in ("RETAIN_DATABASE_URL", "RETAIN_PLAYBOOKS_DIR", "PREFECT_SERVER_LOGGING_LEVEL")
    }
    os.environ["RETAIN_DATABASE_URL"] = settings.database_url
    os.environ["RETAIN_PLAYBOOKS_DIR"] = str(settings.resolved_playbooks_dir())
    # the temporary server (a subprocess reading the environment) logs its own retried hiccups, such
    # as an event flush that met a busy SQLite file, with tracebacks a Retain user cannot act on
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
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
            if start_temporary_server:
                _start_temporary_server()
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _start_temporary_server() -> None:
    """Start Prefect's temporary server now, under a lock on ``PREFECT_HOME``, when no server is
    configured. The server migrates its database as it starts: several runs sharing a fresh
    ``PREFECT_HOME`` would race on those migrations (``no such table``, ``database is locked``)."""
    import fcntl

    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    from integrations.channels.secrets import note_temporary_prefect_server

    if PREFECT_API_URL.value():
        return
    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".retain-server-start.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        SubprocessASGIServer().start()  # the one the clients of this process use; stopped at exit
    note_temporary_prefect_server()


def run_flow_in_process(settings: Settings, playbook: str, as_of: str | None, dry_run: bool) -> dict[str, Any]:
    """One tick as a Prefect flow run in this process (Prefect's ephemeral API when no server is set)."""
    from prefect.exceptions import TerminationSignal

    from flows.engine.tick import TickReport
    from flows.orchestration.playbook import run_playbook

    with prefect_environment(settings):
        try:
            state = run_playbook(playbook=playbook, as_of=as_of, dry_run=dry_run, return_state=True)
        except TerminationSignal:  # SIGTERM during the run (now marked Cancelled): stop as Ctrl-C does
            raise KeyboardInterrupt from None
        if not state.is_completed():
            # the run failed with a user's mistake (its message says where) or a bug (its
            # traceback is in the run's logs); either way the message is what to show
            raise RetainError(state.message or f"the tick of {playbook} ended {state.name}")
        report = state.result()
    tick_report = TickReport(**report)
    return {**report, "line": tick_report.line()}
