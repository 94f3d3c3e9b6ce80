"""Ctrl-C and SIGTERM stop ``retain serve`` and ``retain run`` cleanly: exit 130, no traceback, and
the flow runs in flight are Cancelled in Prefect (not left Running, not Crashed).

Real processes against a real local Prefect server; the run in flight is a tick whose webhook
waits on a local receiver that answers only when the test is over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from models import Account, table_of
from tests._sqlite import migrated_sqlite

RETAIN = str(Path(sys.executable).parent / "retain")
ROOT = Path(__file__).resolve().parents[2]

SLOW = """\
playbook: slow
name: Slow
lifecycle: custom
audience: account.status == "active"
steps:
  - id: notify
    kind: webhook
    url: "http://127.0.0.1:{port}/hook"
"""


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.server.release.wait(60)  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.hits = []  # type: ignore[attr-defined]
    server.release = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def prefect_api(prefect_server: str) -> str:
    """The session's local Prefect server (tests/conftest.py): a real ``prefect server start``."""
    return prefect_server


def _world(folder: Path, receiver: ThreadingHTTPServer) -> dict[str, str]:
    """In ``folder``: a database with one account, the slow playbook; the environment to run them
    with no Prefect settings."""
    books = folder / "playbooks"
    books.mkdir(parents=True)
    (books / "slow.yaml").write_text(SLOW.format(port=receiver.server_address[1]), encoding="utf-8")
    database = folder / "retain.db"
    engine = migrated_sqlite(database)
    with engine.begin() as conn:
        conn.execute(insert(table_of(Account)), {"external_id": "acme", "name": "Acme", "custom": {}})
    engine.dispose()
    values = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETAIN_"))}
    values.update(
        {
            "PREFECT_HOME": str(folder / "prefect-client-home"),
            "DO_NOT_TRACK": "1",
            "RETAIN_DATABASE_URL": f"sqlite:///{database}",
            "RETAIN_PLAYBOOKS_DIR": str(books),
            "RETAIN_OUTBOX_DIR": str(folder / "outbox"),
            "COLUMNS": "200",
        }
    )
    return values


@pytest.fixture
def plain_env(tmp_path: Path, receiver: ThreadingHTTPServer) -> dict[str, str]:
    """A database with one account, the slow playbook, and no Prefect settings."""
    values = _world(tmp_path, receiver)
    receiver.hits.clear()  # type: ignore[attr-defined]
    return values


@pytest.fixture
def env(plain_env: dict[str, str], prefect_api: str) -> dict[str, str]:
    """The same against the module's Prefect server; serve looks for due runs every 2 seconds."""
    return {**plain_env, "PREFECT_API_URL": prefect_api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}


def _api(url: str, body: dict[str, Any], attempts: int = 8) -> Any:
    """POST to the Prefect API; a busy server answers 503 (its SQLite database is locked) or 429,
    and Prefect's own client retries those with a back-off: so does this."""
    for attempt in range(attempts):
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code not in (429, 503) or attempt == attempts - 1:
                raise
            error.close()
            time.sleep(0.5 * 2**attempt)


def _runs_of(api: str, deployment_or_flow_name: str) -> list[dict[str, Any]]:
    runs = _api(f"{api}/flow_runs/filter", {"sort": "START_TIME_DESC"})
    return [r for r in runs if r["name"].startswith(deployment_or_flow_name)]


def _wait_for(condition: Any, what: str, *processes: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            if process.poll() is not None:
                pytest.fail(f"the process ended before {what}: {process.communicate()[0]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def started() -> Iterator[Any]:
    """Starts processes and, whatever the test's outcome, stops and reaps them (a failed test
    must not leave a ``retain serve`` running into the next tests)."""
    processes: list[subprocess.Popen[str]] = []

    def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_ctrl_c_stops_serve_and_cancels_the_runs_in_flight(
    env: dict[str, str], prefect_api: str, receiver: ThreadingHTTPServer, started: Any
) -> None:
    before = {r["id"] for r in _runs_of(prefect_api, "slow@")}
    serve = started([RETAIN, "serve"], env)
    deployments: list[dict[str, Any]] = []

    def served() -> bool:
        deployments[:] = [d for d in _api(f"{prefect_api}/deployments/filter", {}) if d["name"] == "slow"]
        return bool(deployments)

    _wait_for(served, "the deployments are served", serve)
    _api(f"{prefect_api}/deployments/{deployments[0]['id']}/create_flow_run", {})
    _wait_for(lambda: bool(receiver.hits), "the run's webhook is in flight", serve)  # type: ignore[attr-defined]
    serve.send_signal(signal.SIGINT)
    output = serve.communicate(timeout=120)[0]
    assert serve.returncode == 130, output
    assert "Traceback" not in output, output
    (run,) = [r for r in _runs_of(prefect_api, "slow@") if r["id"] not in before]
    assert run["state"]["type"] == "CANCELLED", run["state"]


def test_a_signal_stops_a_prefect_run_cleanly_and_cancels_it(
    tmp_path: Path, prefect_api: str, receiver: ThreadingHTTPServer, started: Any
) -> None:
    """Ctrl-C (SIGINT) to one ``retain run``, SIGTERM to another: both in flight at once, each on a
    database of its own (their start-ups overlap: one test, not two after each other)."""
    before = {r["id"] for r in _runs_of(prefect_api, "slow@")}
    receiver.hits.clear()  # type: ignore[attr-defined]
    runs = {
        stop: started(
            [RETAIN, "run", "slow"], {**_world(tmp_path / stop.name, receiver), "PREFECT_API_URL": prefect_api}
        )
        for stop in (signal.SIGINT, signal.SIGTERM)
    }
    _wait_for(lambda: len(receiver.hits) == len(runs), "both ticks' webhooks are in flight", *runs.values())  # type: ignore[attr-defined]
    for stop, run in runs.items():
        run.send_signal(stop)
    for stop, run in runs.items():
        output = run.communicate(timeout=120)[0]
        assert run.returncode == 130, (stop.name, output)
        assert "Traceback" not in output, (stop.name, output)
    flow_runs = [r for r in _runs_of(prefect_api, "slow@") if r["id"] not in before]
    assert len(flow_runs) == len(runs), flow_runs
    assert [r["state"]["type"] for r in flow_runs] == ["CANCELLED"] * len(runs), [r["state"] for r in flow_runs]


def test_sigterm_stops_a_command_without_prefect_cleanly(
    plain_env: dict[str, str], receiver: ThreadingHTTPServer, started: Any
) -> None:
    run = started([RETAIN, "run", "slow", "--no-prefect"], plain_env)
    _wait_for(lambda: bool(receiver.hits), "the tick's webhook is in flight", run)  # type: ignore[attr-defined]
    run.send_signal(signal.SIGTERM)
    output = run.communicate(timeout=60)[0]
    assert run.returncode == 130, output
    assert "Traceback" not in output, output
