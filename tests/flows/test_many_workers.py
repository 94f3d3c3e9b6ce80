"""Many workers, small: ``bench/many_workers.py`` starts a Prefect server on PostgreSQL, a process
work pool and two workers, deploys with ``prefect --no-prompt deploy --all`` from the
``prefect.yaml`` that ``retain deployments sync`` wrote, runs one playbook's deployment four times
at once over a book imported with ``retain accounts import``, and counts at a local webhook
receiver by outbox key: every touch once, none twice, none lost, every run completed.

It takes half a minute to two (a Prefect server, two workers and four flow-run processes start),
started when the collection ends so that it runs beside the tests before it (``many_workers_run``
in tests/conftest.py); marked ``slow`` (``-m "not slow and not reliability"`` leaves it out locally;
CI runs it). PostgreSQL down skips it with the reason, or fails it under ``CI=true``.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import PG_ADMIN_URL, ManyWorkersRun, _pg_admin_connect, pg_unavailable

pytestmark = pytest.mark.slow


def test_two_workers_run_one_deployment_four_times_at_once_and_every_touch_arrives_once(
    many_workers_run: ManyWorkersRun,
) -> None:
    try:
        _pg_admin_connect().close()
    except Exception as exc:
        pg_unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        import asyncpg  # noqa: F401 - the Prefect server's PostgreSQL driver (Prefect brings it)
    except ImportError:
        pg_unavailable("asyncpg, the Prefect server's PostgreSQL driver, is not installed")
    # started when the collection ended (tests/conftest.py): it ran beside the tests before this one
    code, stdout, stderr = many_workers_run.result(timeout=600)
    port = many_workers_run.port
    done = subprocess.CompletedProcess(many_workers_run.process.args, code, stdout, stderr)
    assert done.stdout.strip(), done.stderr[-5000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["expected"] == 30  # 40 accounts imported, three in four active
    assert counts["enrollments"] == 30  # each account enrolled once, though four ticks ran at once
    assert counts["touches_written"] == 30 and counts["touches_by_status"] == {"delivered": 30}
    assert counts["received"] == 30 and counts["delivered_once"] == 30
    assert counts["duplicates"] == 0 and counts["lost"] == 0 and counts["unexpected"] == 0
    assert counts["runs_by_state"] == {"COMPLETED": 4}, done.stderr[-5000:]
    # both workers ran flow runs, and between them every run once
    assert sum(counts["runs_by_worker"].values()) == 4
    assert all(n >= 1 for n in counts["runs_by_worker"].values()), counts["runs_by_worker"]
    # the four ticks' own reports add up to the work done once: what one did, the others skipped
    assert len(counts["ticks"]) == 4
    for figure in ("enrolled", "written", "delivered"):
        assert sum(tick[figure] for tick in counts["ticks"]) == 30, counts["ticks"]
    assert counts["ok"] is True and done.returncode == 0
    # what the script showed on the way: the documented commands, each of which succeeded
    for line in ("retain accounts import", "retain deployments sync", "prefect deploy --all", "2 workers online"):
        assert line in done.stderr
    assert f"prefect server on PostgreSQL at http://127.0.0.1:{port}/api" in done.stderr
