"""Retain's figures of scale and speed, each against a hand-written baseline run in the same process.

Builds its own data (a book of accounts with one contact each, in a temporary SQLite file and,
with ``--postgres``, in a database made for the run) and prints one JSON line per figure:
``name``, ``value``, ``unit``, ``baseline`` (what the hand-written baseline measured), ``ratio``
(value / baseline), ``target`` and ``size``. No asserts: the machine's load moves the absolute
figures; the ratios are what to compare between changes (docs/performance.md).

Run: ``python bench/run.py [--quick] [--postgres URL] [--accounts N]``. ``--quick`` (small sizes,
about a minute) runs in CI; the full run enrolls ``--accounts`` (1,000,000 by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: Retain's packages live at the root
    sys.path.insert(0, str(ROOT))

from sqlalchemy import bindparam, delete, exists, false, insert, literal, select, text, update  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from models import Account, Contact, Enrollment, TimelineEvent, Touch, make_engine, table_of, upgrade  # noqa: E402

AS_OF = datetime(2027, 3, 1, 12, tzinfo=UTC)  # a Monday, noon UTC: no quiet hours, no weekend
LATER = AS_OF + timedelta(hours=1)

#: the playbook of the enrollment figures: an email, then a week's wait
PLAYBOOK = textwrap.dedent(
    """
    playbook: {id}
    name: Bench {id}
    lifecycle: custom
    audience: account.status == "active" and account.arr >= 1000
    entry: {{holdout: {holdout}%}}
    steps:
      - id: note
        kind: email
        subject: "Hello {{{{ account.name }}}}"
        body: "Hi {{{{ contact.first_name }}}}, your {{{{ account.plan }}}} plan renews {{{{ account.renewal_date | date }}}}."
      - id: pause
        kind: wait
        for: 7 days
      - id: done
        kind: exit
    """
)


def playbook(pid: str, holdout: int = 10) -> Any:
    from playbooks import compile_source

    return compile_source(PLAYBOOK.format(id=pid, holdout=holdout), f"{pid}.yaml")


# --- output -------------------------------------------------------------------------------------


def emit(
    name: str,
    value: float,
    unit: str,
    baseline: float | None,
    *,
    target: str,
    size: int | None = None,
    **extra: Any,
) -> None:
    ratio = round(value / baseline, 3) if baseline else None
    if "cpu" in extra and extra.get("baseline_cpu"):  # in-process work: the ratio of CPU seconds too
        extra["cpu"], extra["baseline_cpu"] = round(extra["cpu"], 4), round(extra["baseline_cpu"], 4)
        extra["cpu_ratio"] = round(extra["cpu"] / extra["baseline_cpu"], 3)
    line = {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": ratio,
        "target": target,
        "size": size,
        **extra,
    }
    print(json.dumps(line), flush=True)


@contextmanager
def timer() -> Iterator[Clock]:
    clock = Clock()
    yield clock
    clock.stop()


class Clock:
    """Wall seconds (calling it) and this process's CPU seconds (``cpu``) of a block: on a shared
    machine the wall time follows the load, the CPU time of in-process work (SQLite) much less."""

    def __init__(self) -> None:
        self.began, self.began_cpu = time.perf_counter(), time.process_time()
        self.wall: float | None = None
        self.cpu = 0.0

    def stop(self) -> None:
        self.wall = time.perf_counter() - self.began
        self.cpu = time.process_time() - self.began_cpu

    def __call__(self) -> float:
        return self.wall if self.wall is not None else time.perf_counter() - self.began


PROFILES: Path | None = None  # --profile DIR: each of Retain's timed parts profiled there


@contextmanager
def measured(name: str) -> Iterator[Clock]:
    """:func:`timer` around Retain's part of a figure; with ``--profile``, also its pyinstrument
    profile (``<name>.txt``, the call tree of the slowest frames, and ``<name>.html``)."""
    if PROFILES is None:
        with timer() as took:
            yield took
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.002, async_mode="enabled")
    with timer() as took:
        profiler.start()
        try:
            yield took
        finally:
            profiler.stop()
    PROFILES.mkdir(parents=True, exist_ok=True)
    (PROFILES / f"{name}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
    (PROFILES / f"{name}.html").write_text(profiler.output_html())


# --- data ---------------------------------------------------------------------------------------

CHUNK = 20_000


def add_accounts(engine: Engine, first: int, count: int) -> None:
    """``count`` active accounts (external ids ``a<first>`` on), each with one primary contact,
    inserted in chunks so the bench's own memory stays small."""
    acct, contact = table_of(Account), table_of(Contact)
    for lo in range(first, first + count, CHUNK):
        hi = min(lo + CHUNK, first + count)
        with engine.begin() as conn:
            top = conn.execute(select(acct.c.id).order_by(acct.c.id.desc()).limit(1)).scalar() or 0
            conn.execute(
                insert(acct),
                [
                    {
                        "external_id": f"a{i}",
                        "name": f"Account {i}",
                        "plan": "team",
                        "arr": 5000.0,
                        "currency": "USD",
                        "status": "active",
                        "custom": {},
                        "renewal_date": date(2027, 6, 1),
                        "timezone": "UTC",
                        "created_at": AS_OF - timedelta(days=30),
                        "updated_at": AS_OF - timedelta(days=30),
                    }
                    for i in range(lo, hi)
                ],
            )
            ids = conn.execute(select(acct.c.id).where(acct.c.id > top).order_by(acct.c.id)).scalars().all()
            conn.execute(
                insert(contact),
                [
                    {
                        "account_id": i,
                        "email": f"c{i}@example.com",
                        "name": f"Pat {i}",
                        "is_primary": True,
                        "unsubscribed": False,
                        "unsubscribed_channels": [],
                        "preferences": {},
                        "timezone": "UTC",
                    }
                    for i in ids
                ],
            )


@contextmanager
def sqlite_database(folder: Path, name: str) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{folder / name}.db")
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[Engine]:
    """A database made for this run on the server of ``admin_url``, dropped afterwards."""
    import psycopg

    url = make_url(admin_url)
    name = f"retain_bench_{uuid.uuid4().hex[:10]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(url.set(database=name).render_as_string(hide_password=False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the baselines ------------------------------------------------------------------------------


def bare_enroll(engine: Engine, pid: str) -> Clock:
    """Seconds of one plain ``INSERT … SELECT`` of the same audience, with the same anti-join
    against ``pid``'s enrollments (no holdout bookkeeping, no timeline), committed; deleted afterwards."""
    enr, acct = table_of(Enrollment), table_of(Account)
    taken = exists(select(enr.c.id).where(enr.c.playbook == pid, enr.c.account_id == acct.c.id))
    chosen = select(
        literal(pid),
        literal("r"),
        acct.c.id,
        literal("active"),
        false(),
        literal("note"),
        literal(AS_OF, type_=enr.c.next_due_at.type),
        literal(AS_OF, type_=enr.c.started_at.type),
        literal("schedule"),
        literal({}, type_=enr.c.state.type),
    ).where(acct.c.status == "active", acct.c.arr >= 1000, ~taken)
    columns = ["playbook", "revision", "account_id", "status", "holdout", "step_id"]
    columns += ["next_due_at", "started_at", "source", "state"]
    with engine.connect() as conn:
        with timer() as took:  # committed, as Retain's enrollments are: writing them out is the work too
            conn.execute(insert(enr).from_select(columns, chosen))
            conn.commit()
        conn.execute(delete(enr).where(enr.c.playbook == pid, enr.c.revision == "r"))  # its own rows only
        conn.commit()
    return took


def due_check(engine: Engine, pid: str) -> Clock:
    """Seconds of the one query that tells whether anything of ``pid`` is due."""
    enr = table_of(Enrollment)
    with timer() as took, engine.connect() as conn:
        conn.execute(
            select(enr.c.id).where(enr.c.playbook == pid, enr.c.status == "active", enr.c.next_due_at <= LATER).limit(1)
        ).all()
    return took


# --- the figures --------------------------------------------------------------------------------


def enroll_figures(engine: Engine, db: str, n: int, *, quick: bool) -> None:
    """Enroll the whole book; then a tick with nothing due; then one where 96 accounts are new."""
    from flows.engine.enroll import enroll
    from flows.engine.revisions import RevisionCache
    from flows.engine.tick import tick
    from models import session

    pb = playbook("book")
    base = bare_enroll(engine, pb.id)
    with measured(f"enroll_{db}") as took, session(engine) as s:
        enrolled, holdout = enroll(s, pb, AS_OF)
    emit(
        f"enroll_{db}",
        took(),
        "s",
        base(),
        target="<= 2x",
        size=n,
        cpu=took.cpu,
        baseline_cpu=base.cpu,
        enrolled=enrolled,
        holdout=holdout,
    )

    # every enrollment now waits (as after its first step): a tick an hour later has nothing to do
    enr = table_of(Enrollment)
    with engine.begin() as conn:
        conn.execute(update(enr).where(enr.c.playbook == pb.id).values(next_due_at=AS_OF + timedelta(days=7)))
    cache = RevisionCache()
    tick(engine, pb, AS_OF + timedelta(minutes=1), cache=cache)  # the holdout ends: not part of the figure
    base = due_check(engine, pb.id)
    with measured(f"tick_nothing_due_{db}") as took:
        report = tick(engine, pb, LATER, cache=cache)
    emit(
        f"tick_nothing_due_{db}",
        took(),
        "s",
        base(),
        target="<= 1 s",
        size=n,
        cpu=took.cpu,
        baseline_cpu=base.cpu,
        enrolled=report.enrolled,
    )

    add_accounts(engine, n, 96)
    base = bare_enroll(engine, pb.id)
    with measured(f"tick_96_new_{db}") as took:
        report = tick(engine, pb, LATER + timedelta(minutes=5), cache=cache, window=None)
    emit(
        f"tick_96_new_{db}",
        took(),
        "s",
        base(),
        target="<= 2x",
        size=n,
        cpu=took.cpu,
        baseline_cpu=base.cpu,
        enrolled=report.enrolled,
    )


def advance_figure(folder: Path, n: int) -> None:
    """Advance one email touch per enrollment (ms per enrollment) against a bare executemany of
    the very rows Retain wrote (its touches, its timeline, its enrollments' new state)."""
    from flows.engine.advance import advance
    from flows.engine.enroll import enroll
    from flows.engine.revisions import RevisionCache, sync_revision
    from models import session

    with sqlite_database(folder, "advance") as engine:
        add_accounts(engine, 0, n)
        pb = playbook("adv", holdout=0)
        with session(engine) as s:
            sync_revision(s, pb)
            enroll(s, pb, AS_OF)
        touch, timeline, enr = table_of(Touch), table_of(TimelineEvent), table_of(Enrollment)
        columns = (enr.c.id, enr.c.step_id, enr.c.next_due_at, enr.c.state)
        with engine.connect() as conn:
            mark = conn.execute(select(timeline.c.id).order_by(text("id DESC")).limit(1)).scalar()
            before = [
                {"eid": r.id, "step_id": r.step_id, "next_due_at": r.next_due_at, "state": r.state}
                for r in conn.execute(select(*columns))
            ]
        with measured("advance_email_sqlite") as retain:
            result = advance(engine, RevisionCache(), pb.id, AS_OF)
        with engine.connect() as conn:
            touches = [dict(r._mapping) for r in conn.execute(select(touch))]
            lines = [dict(r._mapping) for r in conn.execute(select(timeline).where(timeline.c.id > (mark or 0)))]
            states = [
                {"eid": r.id, "step_id": r.step_id, "next_due_at": r.next_due_at, "state": r.state}
                for r in conn.execute(select(*columns))
            ]
        moved = (
            update(enr)
            .where(enr.c.id == bindparam("eid"))
            .values(step_id=bindparam("step_id"), next_due_at=bindparam("next_due_at"), state=bindparam("state"))
        )
        with engine.connect() as conn:  # Retain's writes undone (committed, untimed), then made again by hand
            conn.execute(delete(touch))
            conn.execute(delete(timeline).where(timeline.c.id > (mark or 0)))
            conn.execute(moved, before)
            conn.commit()
            with timer() as base:  # committed, as Retain's advance is: writing them out is the work too
                conn.execute(insert(touch), touches)
                conn.execute(insert(timeline), lines)
                conn.execute(moved, states)
                conn.commit()
        # nothing to clean up: the baseline left the very rows Retain wrote, in a database of its own
    per = 1000 / max(result.enrollments, 1)
    emit(
        "advance_email_sqlite",
        retain() * per,
        "ms/enrollment",
        base() * per,
        target="<= 3x",
        size=result.enrollments,
        cpu=retain.cpu * per,
        baseline_cpu=base.cpu * per,
    )


SINK = r"""
import asyncio, sys
count = 0
async def handle(reader, writer):
    global count
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            count += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes our stdin
    print(count, flush=True)
asyncio.run(main())
"""


@contextmanager
def sink() -> Iterator[tuple[str, Callable[[], int]]]:
    """A local HTTP receiver in its own process (it answers 200 to every request and counts them)."""
    process = subprocess.Popen([sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdin is not None
    port = int(process.stdout.readline())
    received: list[int] = []

    def count() -> int:
        return received[0] if received else -1

    try:
        yield f"http://127.0.0.1:{port}/hook", count
    finally:
        process.stdin.close()
        received.append(int(process.stdout.readline() or -1))
        process.wait(timeout=10)


async def bare_loop(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> None:
    """The baseline: one httpx client, ``concurrency`` requests in flight, nothing else."""
    import httpx

    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=20, max_keepalive_connections=10)) as client:

        async def one(key: str, body: bytes) -> None:
            async with gate:
                answer = await client.post(url, content=body, headers={"Idempotency-Key": key})
                answer.raise_for_status()

        await asyncio.gather(*(one(k, b) for k, b in bodies))


def delivery_figure(folder: Path, n: int) -> None:
    """Deliver ``n`` webhook touches to a local sink (requests per second) against a bare httpx
    async loop sending the same bodies with the same concurrency to the same sink."""
    from flows.engine.outbox import DeliveryPolicy, deliver
    from integrations.channels.webhook import WebhookChannel

    accounts = min(n, 2_000)
    with sqlite_database(folder, "deliver") as engine, sink() as (url, received):
        add_accounts(engine, 0, accounts)
        rows = [
            {
                "key": f"hook:{i}",
                "account_id": 1 + i % accounts,
                "playbook": "hook",
                "revision": "r",
                "step_id": "hook",
                "channel": "webhook",
                "priority": 50,
                "status": "pending",
                "payload": {"url": url, "json": {"account": f"a{i % accounts}", "event": "hello"}},
                "created_at": AS_OF,
            }
            for i in range(n)
        ]
        with engine.begin() as conn:
            conn.execute(insert(table_of(Touch)), rows)
        bodies = [(r["key"] + ":bare", json.dumps(r["payload"]["json"]).encode()) for r in rows]
        policy = DeliveryPolicy()
        with timer() as took:
            asyncio.run(bare_loop(url, bodies, policy.concurrency))
        base = n / took()
        with measured("deliver_webhook") as took:
            counts = deliver(engine, {"webhook": WebhookChannel()}, as_of=AS_OF, policy=policy)  # type: ignore[dict-item]
        retain = n / took()
    emit(
        "deliver_webhook",
        retain,
        "requests/s",
        base,
        target=">= 0.8x",
        size=n,
        delivered=counts.get("delivered", 0),
        received=received(),
    )


def memory_child(url: str, advance_n: int) -> None:
    """(In a child process.) Peak memory of enrolling the whole book of ``url``, advancing
    ``advance_n`` of the enrollments and delivering their emails; printed as JSON."""
    from flows.engine.advance import advance
    from flows.engine.enroll import enroll
    from flows.engine.outbox import DeliveryPolicy, deliver
    from flows.engine.revisions import RevisionCache, sync_revision
    from integrations.channels import FileChannel
    from models import session

    after_imports = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = make_engine(url)
    pb = playbook("mem", holdout=0)
    with session(engine) as s:
        sync_revision(s, pb)
        enrolled, _ = enroll(s, pb, AS_OF)
    enr = table_of(Enrollment)
    with engine.begin() as conn:  # only the first advance_n are due (advancing a million takes hours)
        first = select(enr.c.id).where(enr.c.playbook == pb.id).order_by(enr.c.id).limit(1).offset(advance_n)
        cut = conn.execute(first).scalar()
        if cut is not None:
            conn.execute(update(enr).where(enr.c.playbook == pb.id, enr.c.id >= cut).values(next_due_at=LATER))
    result = advance(engine, RevisionCache(), pb.id, AS_OF)
    with tempfile.TemporaryDirectory() as tmp:
        channels = {"email": FileChannel("email", Path(tmp))}
        counts = deliver(engine, channels, as_of=AS_OF, playbook=pb.id, policy=DeliveryPolicy())  # type: ignore[arg-type]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"peak": peak, "after_imports": after_imports, "enrolled": enrolled, "advanced": result.enrollments}
    print(json.dumps({**figures, "delivered": counts.get("delivered", 0)}))


def memory_figure(url: str, n: int, advance_n: int) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", url, "--advance", str(advance_n)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    emit(
        "peak_memory",
        got["peak"],
        "MB",
        got["after_imports"],
        target="<= 500 MB",
        size=n,
        enrolled=got["enrolled"],
        advanced=got["advanced"],
        delivered=got["delivered"],
    )


def wall(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    with timer() as took:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    return took()


def medians(commands: dict[str, list[str]], runs: int, **kwargs: Any) -> dict[str, float]:
    """Median wall time of each command, interleaved: a change in the machine's load falls on all."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(wall(command, **kwargs))
    return {name: statistics.median(values) for name, values in times.items()}


def cli_figures(folder: Path, runs: int) -> None:
    """``retain --help`` and ``retain play`` for one account, in fresh processes."""
    retain = [sys.executable, "-c", "import sys, cli; sys.argv[0] = 'retain'; cli.run()"]
    home = folder / "cli"
    (home / "playbooks").mkdir(parents=True)
    (home / "playbooks" / "solo.yaml").write_text(PLAYBOOK.format(id="solo", holdout=0))
    with sqlite_database(home, "retain") as engine:
        add_accounts(engine, 0, 1)
    env = {
        **os.environ,
        "RETAIN_DATABASE_URL": f"sqlite:///{home / 'retain.db'}",
        "RETAIN_PLAYBOOKS_DIR": str(home / "playbooks"),
        "RETAIN_OUTBOX_DIR": str(home / "outbox"),
        "PYTHONPATH": str(ROOT),
    }
    got = medians(
        {
            "help": [*retain, "--help"],
            "imports": [sys.executable, "-c", "import typer, rich, sqlalchemy"],
            "pass": [sys.executable, "-c", "pass"],
        },
        runs,
        env=env,
        cwd=home,
    )
    emit("retain_help", got["help"], "s", got["imports"], target="<= 2x (import typer, rich, sqlalchemy)")
    plays: list[float] = []
    for i in range(runs):  # each run a new account: a play enrolls an account once
        with sqlite_database(home, "retain") as engine:
            add_accounts(engine, 1 + i, 1)
        plays.append(wall([*retain, "play", "solo", "--account", f"a{1 + i}"], env=env, cwd=home))
    emit("retain_play_one_account", statistics.median(plays), "s", got["pass"], target="<= 3 s wall")


def prefect_figure(folder: Path, sizes: tuple[int, int]) -> None:
    """Prefect task runs of one tick (the flow ``run_playbook``) at two sizes: equal, by design."""
    import prefect.settings as ps
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.testing.utilities import prefect_test_harness

    from flows.orchestration.runtime import prefect_environment
    from models import Settings

    home = folder / "prefect"
    hermetic = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "ERROR",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    os.environ.update(hermetic)
    books = folder / "flow-playbooks"
    books.mkdir()
    (books / "flow.yaml").write_text(PLAYBOOK.format(id="flow", holdout=50))
    counts: dict[int, int] = {}
    seconds: dict[int, float] = {}
    updates = {ps.PREFECT_HOME: str(home), ps.PREFECT_LOGGING_LEVEL: "ERROR"}
    with ps.temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=None):
        from flows.orchestration.playbook import run_playbook

        for n in sizes:
            with sqlite_database(folder, f"flow{n}") as engine:
                add_accounts(engine, 0, n)
            settings = Settings(
                database_url=f"sqlite:///{folder / f'flow{n}.db'}", playbooks_dir=books, outbox_dir=folder / "out"
            )
            os.environ["RETAIN_OUTBOX_DIR"] = str(folder / "out")
            with timer() as took, prefect_environment(settings):
                state = run_playbook(playbook="flow", as_of=AS_OF.isoformat(), return_state=True)
            seconds[n] = took()
            run_id = state.state_details.flow_run_id
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 20
                while True:  # task run states arrive as events: wait until they settle
                    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
                    if (len(runs) >= 6 and all(r.state and r.state.is_final() for r in runs)) or (
                        time.monotonic() > deadline
                    ):
                        break
                    time.sleep(0.2)
            counts[n] = len(runs)
    small, large = sizes
    emit(
        "prefect_task_runs_per_tick",
        counts[large],
        "task runs",
        counts[small],
        target="equal at both sizes",
        size=large,
        baseline_size=small,
        seconds={str(k): round(v, 2) for k, v in seconds.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute), as CI runs it")
    parser.add_argument("--postgres", metavar="URL", help="also enroll on PostgreSQL (a database made on this server)")
    parser.add_argument("--accounts", type=int, help="the book's size (default 1,000,000; --quick: 2,000)")
    parser.add_argument("--only", nargs="+", help="run only these groups: enroll advance deliver memory cli prefect")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="write a pyinstrument profile of each figure here")
    parser.add_argument("--memory-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--advance", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.advance)
        return
    global PROFILES
    PROFILES = args.profile
    n = args.accounts or (2_000 if args.quick else 1_000_000)
    advance_n = 500 if args.quick else 10_000
    deliver_n = 1_000 if args.quick else 20_000
    flow_sizes = (100, 1_000) if args.quick else (1_000, 100_000)
    runs = 1 if args.quick else 3
    groups = set(args.only or ["enroll", "advance", "deliver", "memory", "cli", "prefect"])
    with tempfile.TemporaryDirectory(prefix="retain-bench-") as tmp:
        folder = Path(tmp)
        if "enroll" in groups or "memory" in groups:
            with sqlite_database(folder, "book") as engine:
                add_accounts(engine, 0, n)
                if "enroll" in groups:
                    enroll_figures(engine, "sqlite", n, quick=args.quick)
            if "memory" in groups:
                memory_figure(f"sqlite:///{folder / 'book.db'}", n, advance_n)
        if "enroll" in groups and args.postgres:
            with postgres_database(args.postgres) as engine:
                add_accounts(engine, 0, n)
                enroll_figures(engine, "postgresql", n, quick=args.quick)
        if "advance" in groups:
            advance_figure(folder, advance_n)
        if "deliver" in groups:
            delivery_figure(folder, deliver_n)
        if "cli" in groups:
            cli_figures(folder, runs)
        if "prefect" in groups:
            prefect_figure(folder, flow_sizes)


if __name__ == "__main__":
    main()
