"""Many workers: one playbook's deployment run several times at once by two Prefect workers,
over a book on PostgreSQL, and counted at the receiver.

Everything is the documented way of running Retain on several machines (docs/workers.md), on this
one machine:

1. two PostgreSQL databases made for the run: one for the Prefect server, one for Retain's tables;
2. the book comes in through Retain's own commands: ``retain init``, ``retain accounts import``,
   ``retain contacts import`` (CSV files written here);
3. ``retain deployments sync --work-pool POOL`` writes ``prefect.yaml`` (its pull step: the
   directory ``$RETAIN_CODE_DIR`` names in each worker's environment);
4. ``prefect server start`` with its database on PostgreSQL
   (``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://…``), on ``--port``;
5. a process work pool (what ``prefect work-pool create POOL --type process`` makes) and
   ``prefect --no-prompt deploy --all``;
6. two ``prefect worker start --pool POOL`` processes with ``RETAIN_CODE_DIR`` set to this checkout;
7. ``--runs`` flow runs of the playbook's deployment created at the same moment (the same tick
   time), which the workers take between them;
8. a local HTTP receiver gets every webhook with its ``Idempotency-Key`` (the touch's outbox key).

Then it prints one JSON line of counts: the touches expected (one per account: the playbook sends one
webhook per enrollment, holdout 0), the touches written, received once, received twice or more
(``duplicates``), never received (``lost``), the runs by final state and by worker. Exit code 0 when
every touch arrived exactly once and every run completed.

Run: ``python bench/many_workers.py [--accounts 300] [--runs 4] [--workers 2] [--port 4300]
[--pg postgresql://postgres@127.0.0.1:5432/postgres] [--keep]``. ``tests/flows/test_many_workers.py``
runs it small.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from flows.orchestration.deployments import local_prefect_server, stop_process  # noqa: E402
from models import Enrollment, Touch, make_engine, table_of  # noqa: E402

PLAYBOOK = "fanout"
#: the tick time every run is given: they all tick "at once"
AS_OF = "2027-05-03T15:00:00+00:00"
PLAYBOOK_YAML = """
playbook: fanout
name: Fan-out over many workers
lifecycle: custom
description: One webhook per active account, to count deliveries across workers.
audience: account.status == "active"
entry:
  holdout: 0%
steps:
  - id: hello
    kind: webhook
    url: "http://127.0.0.1:{port}/hook"
    json:
      account: "{{{{ account.external_id }}}}"
  - id: rest
    kind: wait
    for: 30 days
"""
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- the receiver --------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        server: Any = self.server
        with server.lock:
            server.keys.append(self.headers.get("Idempotency-Key") or "")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def webhook_receiver() -> Iterator[Any]:
    """An HTTP receiver on 127.0.0.1 that keeps the ``Idempotency-Key`` of every request."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.keys = []
    server.lock = threading.Lock()
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="many-workers-receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- PostgreSQL ----------------------------------------------------------------------------------


def _admin(pg: str) -> Any:
    import psycopg

    url = make_url(pg)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=3,
    )


@contextmanager
def databases(pg: str, keep: bool) -> Iterator[tuple[str, str]]:
    """Two new databases (the Prefect server's, Retain's) as SQLAlchemy URLs; dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = (f"retain_mw_{tag}_prefect", f"retain_mw_{tag}_book")
    with _admin(pg) as admin:
        for name in names:
            admin.execute(f'CREATE DATABASE "{name}"')
    base = make_url(pg)
    prefect = base.set(drivername="postgresql+asyncpg", database=names[0]).render_as_string(hide_password=False)
    book = base.set(drivername="postgresql+psycopg", database=names[1]).render_as_string(hide_password=False)
    try:
        yield prefect, book
    finally:
        if not keep:
            with _admin(pg) as admin:
                for name in names:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- commands ------------------------------------------------------------------------------------


def _command(argv: list[str], env: dict[str, str], what: str, timeout: float = 300) -> str:
    began = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    _say(f"{what}: {time.monotonic() - began:.1f} s")
    return done.stdout


def retain(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from cli import run; sys.exit(run())", *args]


def prefect(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_book(folder: Path, accounts: int) -> tuple[Path, Path]:
    """Accounts (three in four active) and one contact each, as a team would export them."""
    accounts_csv, contacts_csv = folder / "accounts.csv", folder / "contacts.csv"
    with accounts_csv.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["external_id", "name", "plan", "arr", "status", "signup_date"])
        for i in range(accounts):
            status = "churned" if i % 4 == 3 else "active"
            w.writerow([f"acct-{i:05d}", f"Account {i}", "pro", 12000, status, "2026-01-05"])
    with contacts_csv.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["account_external_id", "email", "name", "is_primary"])
        for i in range(accounts):
            w.writerow([f"acct-{i:05d}", f"owner{i}@acct{i}.example", f"Owner {i}", "yes"])
    return accounts_csv, contacts_csv


# --- Prefect -------------------------------------------------------------------------------------


async def _create_process_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))


async def _wait_for_workers(pool: str, count: int, timeout: float) -> None:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            workers = await client.read_workers_for_work_pool(pool)
            online = [w for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE"]
            if len(online) >= count:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(online)} of {count} workers came online within {timeout:g} s")
            await asyncio.sleep(0.5)


async def _run_at_once(deployment: str, runs: int, as_of: str) -> list[str]:
    """Create ``runs`` flow runs of the deployment at the same moment; their ids."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        dep = await client.read_deployment_by_name(deployment)
        created = await asyncio.gather(
            *(
                client.create_flow_run_from_deployment(dep.id, parameters={"playbook": PLAYBOOK, "as_of": as_of})
                for _ in range(runs)
            )
        )
    return [str(run.id) for run in created]


async def _wait_for_runs(ids: list[str], timeout: float) -> dict[str, str]:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            states = {}
            for run_id in ids:
                run = await client.read_flow_run(uuid.UUID(run_id))
                states[run_id] = run.state.type.value if run.state else "PENDING"
            if all(s in TERMINAL for s in states.values()) or time.monotonic() > deadline:
                return states
            await asyncio.sleep(1)


@contextmanager
def _in_background(manager: Any) -> Iterator[Any]:
    """Enter ``manager`` in a thread; yields a function that waits for it and returns its value.
    The manager is exited here, on the way out."""
    box: dict[str, Any] = {}

    def enter() -> None:
        try:
            box["value"] = manager.__enter__()
        except BaseException as exc:  # shown by the waiting function
            box["error"] = exc

    thread = threading.Thread(target=enter, name="many-workers-background", daemon=True)
    thread.start()

    def wait() -> Any:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    try:
        yield wait
    finally:
        thread.join()
        if "value" in box:
            manager.__exit__(None, None, None)


def _with_api(api_url: str, coroutine: Any) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(coroutine)


#: the line each tick logs (``TickReport.line``), which the flow run's process prints to its worker
TICK_LINE = re.compile(
    r"enrolled (?P<enrolled>\d+) \(\d+ holdout\), advanced (?P<advanced>\d+), "
    r"touches written (?P<written>\d+), delivered (?P<delivered>\d+)"
)


def ticks(logs: dict[str, Path]) -> list[dict[str, int]]:
    """What each run's tick did, from its summary line in the workers' logs: how the work was
    shared among the runs (most first)."""
    found = []
    for path in logs.values():
        for line in path.read_text(errors="replace").splitlines():
            if f"{PLAYBOOK}@" in line and (match := TICK_LINE.search(line)):
                found.append({k: int(v) for k, v in match.groupdict().items()})
    return sorted(found, key=lambda tick: (-tick["delivered"], -tick["written"], -tick["enrolled"]))


def runs_by_worker(logs: dict[str, Path], ids: list[str]) -> tuple[dict[str, int], int]:
    """Which worker ran each run, from the workers' own logs; and how many submissions the server
    refused because another worker had the run already (both workers may reach for one run)."""
    ran, aborted = {}, 0
    for name, path in logs.items():
        text = path.read_text(errors="replace")
        submitted = {run_id for run_id in ids if f"submitting flow run '{run_id}'" in text}
        refused = {run_id for run_id in ids if f"Aborted submission of flow run '{run_id}'" in text}
        ran[name] = len(submitted - refused)
        aborted += len(submitted & refused)
    return ran, aborted


# --- the run -------------------------------------------------------------------------------------


def count(book_url: str, received: list[str]) -> dict[str, Any]:
    engine = make_engine(book_url)
    try:
        with engine.connect() as conn:
            t, e = table_of(Touch), table_of(Enrollment)
            rows = conn.execute(select(t.c.key, t.c.status).where(t.c.playbook == PLAYBOOK)).all()
            touches = {key: status for key, status in rows}
            enrollments = conn.execute(select(func.count()).select_from(e).where(e.c.playbook == PLAYBOOK)).scalar_one()
    finally:
        engine.dispose()
    seen = Counter(received)
    return {
        "enrollments": enrollments,
        "touches_written": len(touches),
        "touches_by_status": dict(Counter(touches.values())),
        "received": len(received),
        "delivered_once": sum(1 for key in touches if seen[key] == 1),
        "duplicates": sum(1 for key in touches if seen[key] > 1),
        "lost": sum(1 for key in touches if seen[key] == 0),
        "unexpected": sum(n for key, n in seen.items() if key not in touches),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one script, step by step
    began = time.monotonic()
    pool = f"retain-many-workers-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="retain-many-workers-"))
        if args.keep:
            _say(f"keeping {tmp} (the workers' logs, prefect.yaml, the CSV files)")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        prefect_db, book_url = stack.enter_context(databases(args.pg, args.keep))
        receiver = stack.enter_context(webhook_receiver())
        playbooks = tmp / "playbooks"
        playbooks.mkdir()
        (playbooks / f"{PLAYBOOK}.yaml").write_text(
            textwrap.dedent(PLAYBOOK_YAML).lstrip().format(port=receiver.server_address[1]), encoding="utf-8"
        )
        env = {
            **os.environ,
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            "RETAIN_DATABASE_URL": book_url,
            "RETAIN_PLAYBOOKS_DIR": str(playbooks),
            "COLUMNS": "200",
        }
        env.pop("PREFECT_API_URL", None)

        # the Prefect server on PostgreSQL boots (about 20 s here) while the book comes in
        server_env = {k: env[k] for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")}
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_db
        server_env["PREFECT_SERVER_LOGGING_LEVEL"] = "WARNING"
        started = time.monotonic()
        booting = stack.enter_context(
            _in_background(local_prefect_server(port=args.port, env=server_env, startup_timeout=180))
        )

        # the book, through Retain's own commands
        accounts_csv, contacts_csv = write_book(tmp, args.accounts)
        _command(retain("init"), env, "retain init")
        _command(retain("accounts", "import", str(accounts_csv)), env, "retain accounts import")
        _command(retain("contacts", "import", str(contacts_csv)), env, "retain contacts import")
        prefect_yaml = tmp / "prefect.yaml"
        _command(
            retain("deployments", "sync", "--file", str(prefect_yaml), "--work-pool", pool),
            env,
            "retain deployments sync",
        )

        server = booting()
        _say(f"prefect server on PostgreSQL at {server.api_url}: up {time.monotonic() - started:.1f} s after its start")
        env["PREFECT_API_URL"] = server.api_url
        # what `prefect work-pool create POOL --type process` does, without another interpreter's start
        _with_api(server.api_url, _create_process_pool(pool))

        # the workers: on another machine, the same command with that machine's checkout
        logs: dict[str, Path] = {}
        worker_env = {
            **env,
            "RETAIN_CODE_DIR": str(ROOT),  # the pull step's directory: where this checkout is on the worker's machine
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        }
        started = time.monotonic()
        for i in range(1, args.workers + 1):
            name = f"worker-{i}"
            logs[name] = tmp / f"{name}.log"
            with logs[name].open("wb") as out:
                process = subprocess.Popen(
                    prefect("worker", "start", "--pool", pool, "--name", name, "--limit", str(args.limit)),
                    cwd=tmp,  # anywhere: the pull step finds the code
                    env=worker_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            stack.callback(stop_process, process, 20)
        _command(
            prefect("--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_yaml)), env, "prefect deploy --all"
        )
        _with_api(server.api_url, _wait_for_workers(pool, args.workers, timeout=120))
        _say(f"{args.workers} workers online: {time.monotonic() - started:.1f} s after their start")

        started = time.monotonic()
        ids = _with_api(server.api_url, _run_at_once(f"retain-playbook/{PLAYBOOK}", args.runs, AS_OF))
        states = _with_api(server.api_url, _wait_for_runs(ids, timeout=args.timeout))
        runs_seconds = time.monotonic() - started
        _say(f"{args.runs} runs at once: {runs_seconds:.1f} s")
        per_worker, aborted = runs_by_worker(logs, ids)
        per_tick = ticks(logs)
        with receiver.lock:
            received = list(receiver.keys)
        counts = count(book_url, received)
        expected = sum(1 for i in range(args.accounts) if i % 4 != 3)
        failed_runs = {k: v for k, v in states.items() if v != "COMPLETED"}
        if failed_runs:
            for name, path in logs.items():
                _say(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
    result = {
        "accounts": args.accounts,
        "expected": expected,
        **counts,
        "runs": args.runs,
        "workers": args.workers,
        "runs_by_state": dict(Counter(states.values())),
        "runs_by_worker": per_worker,
        "submissions_refused": aborted,
        # each run's tick: enrolled, advanced, touches written, delivered (how the work was shared)
        "ticks": per_tick,
        "runs_seconds": round(runs_seconds, 1),
        "total_seconds": round(time.monotonic() - began, 1),
    }
    result["ok"] = (
        counts["touches_written"] == expected
        and counts["enrollments"] == expected
        and counts["delivered_once"] == expected
        and counts["duplicates"] == 0
        and counts["lost"] == 0
        and counts["unexpected"] == 0
        and not failed_runs
    )
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--accounts", type=int, default=300, help="accounts imported (three in four active)")
    p.add_argument("--runs", type=int, default=4, help="flow runs of the deployment created at once")
    p.add_argument("--workers", type=int, default=2, help="Prefect workers on the pool")
    p.add_argument("--limit", type=int, default=2, help="flow runs one worker runs at once")
    p.add_argument("--port", type=int, default=None, help="the Prefect server's port (default: a free one)")
    p.add_argument(
        "--pg",
        default=os.environ.get("RETAIN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server where databases may be created (its admin database's URL)",
    )
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the runs")
    p.add_argument("--keep", action="store_true", help="keep the two databases and the folder of logs afterwards")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    result = run(parse(argv))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
