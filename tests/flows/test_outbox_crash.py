"""The outbox against a real HTTP receiver and real crashes.

A local receiver (stdlib ``http.server`` in a thread) records every request: its
``Idempotency-Key``, its body and whether its HMAC signature verifies. A child process runs a tick
with a webhook step for 20 accounts against a SQLite file and is killed with SIGKILL at several
points: before delivery, once some requests reached the receiver (which then holds every further
request open, so the kill lands mid-send), and after every request was answered but before the
answers were recorded. The tick is then run again in this process, and a delivery after the
leases expire: every touch is delivered at least once, a repeat always carries the touch's key,
none is lost; through a channel that cannot drop a repeat, an interrupted touch becomes
``unknown`` and is not sent again.

The children run at the same time (each imports Prefect through ``flows.engine.tick``: ~3 s apiece).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import DeliveryPolicy, deliver, recover_interrupted
from flows.engine.tick import tick
from integrations.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, verify
from models import Account, TimelineEvent, Touch, make_engine, table_of, utcnow
from playbooks import CompiledPlaybook, compile_source
from tests._sqlite import migrated_sqlite

SECRET = "test-signing-secret"
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ACCOUNTS = 20
ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
playbook: hook
name: Hook
lifecycle: custom
audience: account.status == "active"
steps:
  - id: notify
    kind: webhook
    url: "{{ account.custom.url }}"
    json:
      account: "{{ account.external_id }}"
      event: hello
  - id: pause
    kind: wait
    for: 30 days
"""


# --- the receiver ---------------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    key: str | None
    body: dict[str, Any]
    signed: bool
    status: int = 200  # what the receiver answered
    at: float = 0.0  # time.monotonic() when it came


class Receiver(ThreadingHTTPServer):
    """Records every request. ``block_from``: from the n-th request on, hold the answer until
    released (the sender is killed meanwhile). ``script``: path -> statuses answered in turn to
    each repeat of one key (then 200). ``pause``: path -> seconds to wait before reading a request (a
    slow vendor); ``retry_after``: the Retry-After of a 429. (Also the receiver of bench/reliability.py.)"""

    daemon_threads = True
    request_queue_size = 64  # the default 5 drops connections when 8 arrive at once (a 1 s SYN retry)

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.block_from: int | None = None
        self.reached = threading.Event()
        self.release = threading.Event()
        self.script: dict[str, list[int]] = {}
        self.pause: Callable[[str], float] | None = None
        self.retry_after = "0"

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a sender killed mid-request resets its connection: expected here

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def keys(self) -> Counter[str | None]:
        with self.lock:
            return Counter(r.key for r in self.requests)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.requests)

    def let_go(self) -> None:
        """Answer the requests held, hold no more, and wait until the receiver is :meth:`quiet`."""
        self.block_from = None
        self.release.set()
        self.quiet()

    def quiet(self, still: float = 0.5, timeout: float = 20) -> None:
        """Wait until no request has come for ``still`` seconds: a request a killed sender had
        already written reaches the receiver, and is recorded, a little after the kill."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = len(self.snapshot())
            if count != seen:
                seen, since = count, time.monotonic()
            elif time.monotonic() - since >= still:
                return
            time.sleep(0.05)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        if self.server.pause is not None:
            time.sleep(self.server.pause(self.path))
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if len(body) < length:
            return  # the sender died while writing: a receiver never acts on half a request
        signed = verify(SECRET, self.headers.get(TIMESTAMP_HEADER, "0"), body, self.headers.get(SIGNATURE_HEADER, ""))
        key = self.headers.get("Idempotency-Key")
        srv = self.server
        with srv.lock:
            repeat = sum(1 for r in srv.requests if r.key == key and r.path == self.path)
            answers = srv.script.get(self.path, [])
            status = answers[repeat] if repeat < len(answers) else 200
            srv.requests.append(Seen(self.path, key, json.loads(body or b"{}"), signed, status, time.monotonic()))
            block = srv.block_from is not None and len(srv.requests) >= srv.block_from
        if block:
            srv.reached.set()
            srv.release.wait(60)  # the sender is dead by then; answering may fail
        try:
            payload = b"missing field: customer_id" if status == 400 else b"{}"
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", srv.retry_after)
            self.send_header("X-Request-Id", f"req-{key}")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receivers() -> Iterator[Any]:
    made: list[Receiver] = []

    def make() -> Receiver:
        srv = Receiver()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


# --- data -------------------------------------------------------------------------------------------


def hook_playbook() -> CompiledPlaybook:
    return compile_source(textwrap.dedent(PLAYBOOK).lstrip(), "hook.yaml")


def make_database(path: Path, urls: list[str]) -> Engine:
    engine = migrated_sqlite(path)
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {
                    "external_id": f"acct-{i:02d}",
                    "name": f"Account {i}",
                    "status": "active",
                    "custom": {"url": url},
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i, url in enumerate(urls)
            ],
        )
    return engine


def touch_rows(engine: Engine) -> list[Any]:
    t = table_of(Touch)
    with engine.connect() as conn:
        return list(conn.execute(select(t).order_by(t.c.id)))


def webhook(*, dedupes: bool = True) -> dict[str, Any]:
    channel = WebhookChannel(signing_secret=SECRET)
    channel.dedupes_by_key = dedupes  # type: ignore[misc]
    return {"webhook": channel}


# --- the children -------------------------------------------------------------------------------

# One child process imports Retain (and Prefect, through flows.engine.tick: ~3 s) once, then forks one
# process per crash; each runs a tick (or, with "mode": "outbox", an outbox run alone) and dies where
# its job says. It reports each pid, then each exit code, as JSON lines. With "smtp", emails go to
# that SMTP server; with "wait", jobs run one at a time as they are read (bench/reliability.py).
CHILD = """
import json, os, signal, sys, traceback
from datetime import datetime
from pathlib import Path

import flows.engine.outbox
import flows.engine.tick
from playbooks import compile_source, load_policy
from integrations.channels.email import SmtpEmailChannel
from integrations.channels.webhook import WebhookChannel
from models import make_engine


def die_now(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def run(job):
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if job["die"] == "before_deliver":
        flows.engine.tick.deliver = die_now
    elif job["die"] == "before_record":
        flows.engine.outbox._finish_many = die_now
    pb = compile_source(Path(job["playbook"]).read_text(), job["playbook"])
    channels = {"webhook": WebhookChannel(signing_secret=job["secret"])}
    if job.get("smtp"):
        channels["email"] = SmtpEmailChannel(job["smtp"], sender="Retain <cs@retain.test>")
    engine, as_of = make_engine(job["db"]), datetime.fromisoformat(job["as_of"])
    if job.get("mode") == "outbox":
        policy = flows.engine.tick.delivery_policy([pb], load_policy(Path(job["playbook"]).parent))
        print(dict(flows.engine.outbox.deliver(engine, channels, as_of=as_of, policy=policy)), flush=True)
        return
    report = flows.engine.tick.tick(engine, pb, as_of, channels=channels)
    print(report.line(), flush=True)


pids = {}
for line in iter(sys.stdin.readline, ""):
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            run(job)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"name": job["name"], "pid": pid}), flush=True)
    if job.get("wait"):  # one at a time: this job's exit is reported before the next job is read
        print(json.dumps({"name": job["name"], "exit": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
    else:
        pids[pid] = job["name"]
while pids:
    pid, status = os.wait()
    print(json.dumps({"name": pids.pop(pid), "exit": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@dataclass
class Crash:
    """One child tick and where it dies: ``die`` (by its own hand) or after ``block_from`` requests."""

    name: str
    die: str = "none"
    block_from: int | None = None
    receiver: Receiver | None = None
    engine: Engine | None = None
    db: Path | None = None
    pid: int | None = None
    log: Path | None = None


def prepare(crash: Crash, tmp: Path, receiver: Receiver, source: Path) -> dict[str, Any]:
    crash.receiver = receiver
    receiver.block_from = crash.block_from
    crash.db = tmp / f"{crash.name}.db"
    crash.engine = make_database(crash.db, [f"{receiver.url}/hook"] * ACCOUNTS)
    crash.log = tmp / f"{crash.name}.log"
    return {
        "name": crash.name,
        "db": f"sqlite:///{crash.db}",
        "playbook": str(source),
        "as_of": T0.isoformat(),
        "secret": SECRET,
        "die": crash.die,
        "log": str(crash.log),
    }


def copy_sqlite(source: Path, target: Path) -> Engine:
    """A consistent copy of a SQLite database in WAL mode (the backup API reads through the WAL)."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return make_engine(f"sqlite:///{target}")


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Crash]]:
    """Four ticks in child processes, each killed at its point; their databases as left."""
    tmp = tmp_path_factory.mktemp("crashes")
    source = tmp / "hook.yaml"
    source.write_text(textwrap.dedent(PLAYBOOK).lstrip())
    crashes = {
        c.name: c
        for c in [
            Crash("before_deliver", die="before_deliver"),
            Crash("first_request", block_from=1),
            Crash("mid_batch", block_from=12),
            Crash("before_record", die="before_record"),
        ]
    }
    servers: list[Receiver] = []
    jobs = []
    for crash in crashes.values():
        srv = Receiver()
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        jobs.append(prepare(crash, tmp, srv, source))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("".join(json.dumps(job) + "\n" for job in jobs))
        proc.stdin.close()
        for _ in jobs:
            line = json.loads(proc.stdout.readline())
            crashes[line["name"]].pid = line["pid"]
        for crash in crashes.values():
            if crash.block_from is not None:
                assert crash.receiver is not None and crash.pid is not None
                if not crash.receiver.reached.wait(90):
                    os.kill(crash.pid, signal.SIGKILL)
                    pytest.fail(f"{crash.name}: the receiver never got {crash.block_from} requests")
                os.kill(crash.pid, signal.SIGKILL)
        for _ in jobs:
            line = json.loads(proc.stdout.readline())
            crash = crashes[line["name"]]
            assert line["exit"] == -signal.SIGKILL, f"{crash.name}: exit {line['exit']}: {crash.log.read_text()}"  # type: ignore[union-attr]
        assert proc.wait(30) == 0
        for srv in servers:
            srv.let_go()
        # a copy of one crashed database, for the channel that cannot dedupe
        mid = crashes["mid_batch"]
        copy = Crash("mid_batch_no_dedupe", receiver=mid.receiver, db=tmp / "copy.db")
        copy.engine = copy_sqlite(mid.db, copy.db)  # type: ignore[arg-type]
        crashes[copy.name] = copy
        yield crashes
    finally:
        if proc.poll() is None:
            for crash in crashes.values():
                if crash.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(crash.pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        for crash in crashes.values():
            if crash.engine is not None:
                crash.engine.dispose()
        for srv in servers:
            srv.release.set()
            srv.shutdown()
            srv.server_close()


def rerun(engine: Engine) -> None:
    """What happens next: the scheduler's next run of the same tick, then a delivery once the dead
    process's leases have expired."""
    pb = hook_playbook()
    report = tick(engine, pb, T0, channels=webhook())
    assert report.enrolled == 0 and report.advanced == 0  # the tick's writes were committed before the crash
    recover_interrupted(engine, webhook(), now=utcnow() + DeliveryPolicy().lease + timedelta(seconds=1))
    deliver(engine, webhook(), as_of=T0)


def check_delivered_once_each(crash: Crash) -> Counter[str | None]:
    """Every touch delivered, every repeat with the same key; returns requests per key."""
    assert crash.engine is not None and crash.receiver is not None
    rows = touch_rows(crash.engine)
    assert len(rows) == ACCOUNTS
    assert {r.status for r in rows} == {"delivered"}, Counter(r.status for r in rows)
    seen = crash.receiver.snapshot()
    assert all(s.signed for s in seen), "every request carries a valid HMAC signature"
    keys_by_account: dict[str, set[str | None]] = defaultdict(set)
    for s in seen:
        keys_by_account[s.body["account"]].add(s.key)
    assert len(keys_by_account) == ACCOUNTS, "no touch lost"
    assert all(len(keys) == 1 for keys in keys_by_account.values()), "a repeat carries the same key"
    expected = {r.key for r in rows}
    by_key = Counter(s.key for s in seen)
    assert set(by_key) == expected
    return by_key


# --- the crashes --------------------------------------------------------------------------------------


def test_killed_before_delivery_sends_each_touch_once(crashed: dict[str, Crash]) -> None:
    crash = crashed["before_deliver"]
    assert crash.receiver is not None and crash.engine is not None
    assert crash.receiver.snapshot() == []
    assert {r.status for r in touch_rows(crash.engine)} == {"pending"}
    rerun(crash.engine)
    by_key = check_delivered_once_each(crash)
    assert set(by_key.values()) == {1}


@pytest.mark.parametrize("name", ["first_request", "mid_batch"])
def test_killed_mid_send_resends_only_with_the_same_key(crashed: dict[str, Crash], name: str) -> None:
    crash = crashed[name]
    assert crash.receiver is not None and crash.engine is not None
    before = crash.receiver.keys()
    assert sum(before.values()) >= (crash.block_from or 0)
    # only the requests in flight were "sending"; claimed touches not yet tried stay pending
    statuses = Counter(r.status for r in touch_rows(crash.engine))
    assert set(statuses) <= {"pending", "sending", "delivered"}
    assert 1 <= statuses["sending"] <= DeliveryPolicy().concurrency
    in_flight = {r.key for r in touch_rows(crash.engine) if r.status == "sending"}
    rerun(crash.engine)
    by_key = check_delivered_once_each(crash)
    # a key is repeated only if its touch was in flight at the crash and its request reached the receiver
    assert {k for k, n in by_key.items() if n > 1} <= in_flight & set(before)
    assert max(by_key.values()) <= 2


def test_killed_after_sending_before_recording_resends_everything_with_the_same_keys(
    crashed: dict[str, Crash],
) -> None:
    crash = crashed["before_record"]
    assert crash.receiver is not None and crash.engine is not None
    before = crash.receiver.keys()  # answered, but the process died before recording the first answer
    assert 1 <= sum(before.values()) <= DeliveryPolicy().concurrency
    in_flight = {r.key for r in touch_rows(crash.engine) if r.status == "sending"}
    rerun(crash.engine)
    by_key = check_delivered_once_each(crash)
    # the interrupted ones went again with the same key (the receiver drops the copy); no others
    assert {k for k, n in by_key.items() if n == 2} <= in_flight & set(before)
    assert max(by_key.values()) <= 2


def test_a_channel_that_cannot_dedupe_marks_interrupted_touches_unknown(crashed: dict[str, Crash]) -> None:
    crash = crashed["mid_batch_no_dedupe"]
    assert crash.engine is not None and crash.receiver is not None
    requests_before = len(crash.receiver.snapshot())
    keys_before = crash.receiver.keys()  # (the receiver is shared with the mid_batch crash)
    at_crash = Counter(r.status for r in touch_rows(crash.engine))
    # the killed process is known to be gone: its claims are taken over at once, not after the lease
    counts = recover_interrupted(crash.engine, webhook(dedupes=False))
    assert counts == {"unknown": at_crash["sending"]}  # only the requests that were in flight
    tick(crash.engine, hook_playbook(), T0, channels=webhook(dedupes=False))
    deliver(crash.engine, webhook(dedupes=False), as_of=T0)
    rows = touch_rows(crash.engine)
    assert Counter(r.status for r in rows) == {
        "unknown": at_crash["sending"],
        "delivered": at_crash["delivered"] + at_crash["pending"],
    }
    assert all("not sent again" in r.reason for r in rows if r.status == "unknown")
    tl = table_of(TimelineEvent)
    with crash.engine.connect() as conn:
        assert len(conn.execute(select(tl).where(tl.c.kind == "unknown")).all()) == at_crash["sending"]
    # the never-tried touches went out once; the interrupted ones were not sent again
    assert len(crash.receiver.snapshot()) == requests_before + at_crash["pending"]
    sent_now = crash.receiver.keys() - keys_before
    unknown = {r.key for r in rows if r.status == "unknown"}
    assert set(sent_now).isdisjoint(unknown) and set(sent_now.values()) <= {1}


def test_a_live_lease_is_not_taken_over(tmp_path: Path, receivers: Any) -> None:
    """A touch another process is sending right now (its lease still runs) is left alone."""
    srv: Receiver = receivers()
    engine = make_database(tmp_path / "lease.db", [f"{srv.url}/hook"] * 3)
    try:
        tick(engine, hook_playbook(), T0)
        t = table_of(Touch)
        with engine.begin() as conn:
            conn.execute(t.update().values(status="sending", lease_until=utcnow() + timedelta(minutes=5)))
        assert recover_interrupted(engine, webhook()) == {}
        assert deliver(engine, webhook(), as_of=T0) == {}
        assert srv.snapshot() == []
    finally:
        engine.dispose()


# --- retries -----------------------------------------------------------------------------------------


def test_retries_only_on_429_and_5xx_and_a_400_fails_with_the_answer_recorded(tmp_path: Path, receivers: Any) -> None:
    srv: Receiver = receivers()
    srv.script = {"/flaky": [503, 502], "/limited": [429], "/bad": [400], "/down": [503] * 20}
    paths = ["/ok", "/flaky", "/limited", "/bad", "/down"]
    closed = socket_that_refuses()
    engine = make_database(tmp_path / "retry.db", [f"{srv.url}{p}" for p in paths] + [closed])
    try:
        tick(engine, hook_playbook(), T0)  # writes the touches; no channels: nothing sent yet
        counts = deliver(engine, webhook(), as_of=T0, policy=DeliveryPolicy(backoff_base=0.01))
        assert counts == {"delivered": 3, "failed": 1, "retry": 2}
        hits = Counter(s.path for s in srv.snapshot())
        assert hits == {"/ok": 1, "/flaky": 3, "/limited": 2, "/bad": 1, "/down": 3}
        assert all(s.signed for s in srv.snapshot())
        by_url = {r.payload["url"]: r for r in touch_rows(engine)}
        for path in ("/ok", "/flaky", "/limited"):
            row = by_url[f"{srv.url}{path}"]
            assert (row.status, row.attempts, row.provider_id) == ("delivered", 1, f"req-{row.key}")
        bad = by_url[f"{srv.url}/bad"]
        assert bad.status == "failed"
        assert "HTTP 400" in bad.reason and "missing field: customer_id" in bad.reason
        down = by_url[f"{srv.url}/down"]
        assert down.status == "pending" and "will retry" in down.reason and "503" in down.reason
        assert down.not_before is not None
        refused = by_url[closed]
        assert refused.status == "pending" and "will retry" in refused.reason
        # the failed touch is never tried again; the pending ones only once their time comes
        assert deliver(engine, webhook(), as_of=T0, policy=DeliveryPolicy(backoff_base=0.01)) == {}
        srv.script = {}
        later = deliver(engine, webhook(), as_of=T0 + timedelta(hours=1), policy=DeliveryPolicy(backoff_base=0.01))
        assert later == {"delivered": 1, "retry": 1}
        assert Counter(s.path for s in srv.snapshot())["/bad"] == 1
    finally:
        engine.dispose()


def socket_that_refuses() -> str:
    """A loopback URL on a port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused"


def test_a_run_killed_while_waiting_out_a_retry_after_leaves_it_to_the_next_run(tmp_path: Path, receivers: Any) -> None:
    """A receiver answers 429 with ``Retry-After: 5``; the delivery run waiting it out is killed with
    SIGKILL. The next run, at once, does not ask again before the 5 s are over (the wait was recorded
    on the touch, not only slept); once they are, the touch goes, with the same key."""
    srv: Receiver = receivers()
    srv.script, srv.retry_after = {"/limited": [429]}, "5"
    engine = make_database(tmp_path / "wait.db", [f"{srv.url}/limited"])
    source = tmp_path / "hook.yaml"
    source.write_text(textwrap.dedent(PLAYBOOK).lstrip())
    job = {
        "name": "waiting",
        "db": f"sqlite:///{tmp_path / 'wait.db'}",
        "playbook": str(source),
        "as_of": T0.isoformat(),
        "secret": SECRET,
        "die": "none",
        "log": str(tmp_path / "child.log"),
        "mode": "outbox",
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        tick(engine, hook_playbook(), T0)  # writes the touch; no channels: nothing sent yet
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job) + "\n")
        proc.stdin.close()
        pid = json.loads(proc.stdout.readline())["pid"]
        deadline = time.monotonic() + 90
        while not srv.snapshot() and time.monotonic() < deadline:
            time.sleep(0.05)
        (first,) = srv.snapshot()
        assert first.status == 429
        time.sleep(max(0.0, first.at + 1.5 - time.monotonic()))  # well inside the 5 s wait
        os.kill(pid, signal.SIGKILL)
        assert json.loads(proc.stdout.readline())["exit"] == -signal.SIGKILL, (tmp_path / "child.log").read_text()
        killed_at = time.monotonic()
        assert killed_at < first.at + 5, "the kill must land within the wait"

        # the next run comes at once: the killed claimer is known to be gone, its Retry-After is not
        assert deliver(engine, webhook(), as_of=T0) == {}
        (row,) = touch_rows(engine)
        assert (row.status, row.claimed_by) == ("pending", None)
        assert row.retry_not_before is not None and row.retry_not_before > utcnow()
        assert len(srv.snapshot()) == 1, "asked again before its Retry-After"

        # the wait was recorded just after the 429 came back: it ends a moment after first.at + 5
        time.sleep(max(0.0, (row.retry_not_before - utcnow()).total_seconds()) + 0.05)
        assert deliver(engine, webhook(), as_of=T0) == {"delivered": 1}
        _, second = srv.snapshot()
        assert second.key == first.key and second.at - first.at >= 5
        assert touch_rows(engine)[0].status == "delivered"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        engine.dispose()
