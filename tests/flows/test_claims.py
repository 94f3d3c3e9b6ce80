"""Claims after a crash: a delivery run killed with SIGKILL leaves leases that an immediate re-run
takes over, because the claimer (host and pid) is known to be gone; a live claimer's lease, or
one of another host, is waited out. The lease length is a setting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.engine.claims import claimer, default_lease, is_gone
from flows.engine.outbox import DeliveryPolicy, deliver, recover_interrupted
from flows.engine.tick import tick
from models import Settings, Touch, utcnow

from .test_outbox_crash import ACCOUNTS, ROOT, SECRET, T0, Receiver, hook_playbook, make_database, touch_rows, webhook

SLEEPER = "from flows.engine.claims import claimer; print(claimer(), flush=True); import time; time.sleep(120)"


@contextmanager
def sleeper() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A process that signs a claim and sleeps; killed and reaped at the end."""
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_claimer_names_this_host_and_process() -> None:
    me = claimer()
    assert me.split(";")[0] == f"{socket.gethostname()}:{os.getpid()}"
    assert not is_gone(me)


def test_a_process_that_ended_is_gone_a_running_one_is_not() -> None:
    with sleeper() as (proc, holder):
        assert holder.startswith(f"{socket.gethostname()}:{proc.pid}")
        assert not is_gone(holder)
        proc.send_signal(signal.SIGKILL)
        # killed but not yet reaped: a zombie is gone too
        deadline = utcnow() + timedelta(seconds=5)
        while not is_gone(holder) and utcnow() < deadline:
            pass
        assert is_gone(holder)
    assert is_gone(holder)


def test_a_pid_now_used_by_another_process_is_gone_and_other_hosts_are_never_judged() -> None:
    with sleeper() as (proc, holder):
        first, *rest = holder.split(";")
        reused = ";".join([first, *(p if not p.startswith("started=") else "started=1" for p in rest)])
        assert is_gone(reused) is any(p.startswith("started=") for p in rest)
        assert not is_gone(holder.replace(socket.gethostname(), "elsewhere.example", 1))
        proc.kill()
        proc.wait()
        assert is_gone(holder)
        assert not is_gone(holder.replace(socket.gethostname(), "elsewhere.example", 1))
        assert not is_gone(";".join([first, "pidns=pid:[1]"]))  # another PID namespace (container)
    assert not is_gone(None) and not is_gone("") and not is_gone("no-pid-here")


def test_the_lease_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_lease() == timedelta(seconds=Settings().lease_seconds)
    monkeypatch.setenv("RETAIN_LEASE_SECONDS", "42")
    assert DeliveryPolicy().lease == timedelta(seconds=42)
    assert DeliveryPolicy(lease=timedelta(seconds=7)).lease == timedelta(seconds=7)


# --- a delivery run killed mid-send, and the run right after it ----------------------------------

DELIVERER = """
import json, sys
from datetime import datetime
from flows.engine.outbox import deliver
from integrations.channels.webhook import WebhookChannel
from models import make_engine

job = json.loads(sys.argv[1])
deliver(make_engine(job["db"]), {"webhook": WebhookChannel(signing_secret=job["secret"])},
        as_of=datetime.fromisoformat(job["as_of"]))
"""


def killed_mid_send(tmp_path: Path, *, block_from: int) -> tuple[Any, Receiver, Counter[str]]:
    """A database whose delivery run was SIGKILLed while ``block_from``.. requests were held open."""
    srv = Receiver()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    engine = make_database(tmp_path / "killed.db", [f"{srv.url}/hook"] * ACCOUNTS)
    tick(engine, hook_playbook(), T0)  # writes the touches; nothing sent
    srv.block_from = block_from
    job = {"db": f"sqlite:///{tmp_path / 'killed.db'}", "secret": SECRET, "as_of": T0.isoformat()}
    proc = subprocess.Popen([sys.executable, "-c", DELIVERER, json.dumps(job)], cwd=ROOT)
    try:
        assert srv.reached.wait(60), "the delivery run never reached the receiver"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    srv.let_go()
    return engine, srv, Counter(r.status for r in touch_rows(engine))


def test_a_rerun_right_after_a_kill_delivers_everything_without_waiting_out_the_lease(tmp_path: Path) -> None:
    engine, srv, at_kill = killed_mid_send(tmp_path, block_from=5)
    try:
        assert at_kill["sending"] >= 1 and at_kill["pending"] >= 1
        leased = [r for r in touch_rows(engine) if r.lease_until is not None]
        assert leased and all(r.lease_until > utcnow() + timedelta(minutes=3) for r in leased)  # still live
        assert all(r.claimed_by.split(";")[0].startswith(socket.gethostname() + ":") for r in leased)
        in_flight = {r.key for r in leased}  # claimed, sending, when the run was killed
        counts = deliver(engine, webhook(), as_of=T0)  # now: no time travel past the lease
        rows = touch_rows(engine)
        assert Counter(r.status for r in rows) == {"delivered": ACCOUNTS}
        assert counts["delivered"] == ACCOUNTS - at_kill["delivered"]
        assert all(r.claimed_by is None and r.lease_until is None for r in rows)
        by_key = srv.keys()
        assert set(by_key) == {r.key for r in rows}
        # only the touches in flight at the kill went twice, with the same key (not "the requests
        # received by then": a request the killed run had written may reach the receiver later)
        assert {k for k, n in by_key.items() if n > 1} <= in_flight and max(by_key.values()) <= 2
    finally:
        engine.dispose()
    srv.shutdown()
    srv.server_close()


def test_a_rerun_right_after_a_kill_marks_in_flight_touches_unknown_where_repeats_are_not_dropped(
    tmp_path: Path,
) -> None:
    engine, srv, at_kill = killed_mid_send(tmp_path, block_from=5)
    try:
        counts = recover_interrupted(engine, webhook(dedupes=False))
        assert counts == {"unknown": at_kill["sending"]}
        deliver(engine, webhook(dedupes=False), as_of=T0)
        assert Counter(r.status for r in touch_rows(engine)) == {
            "unknown": at_kill["sending"],
            "delivered": ACCOUNTS - at_kill["sending"],
        }
        assert max(srv.keys().values()) == 1
    finally:
        engine.dispose()
    srv.shutdown()
    srv.server_close()


def test_a_live_claimer_keeps_its_lease(tmp_path: Path) -> None:
    """A touch leased by a process that still runs is left alone until the lease runs out."""
    srv = Receiver()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    engine = make_database(tmp_path / "live.db", [f"{srv.url}/hook"] * 3)
    with sleeper() as (proc, holder):
        tick(engine, hook_playbook(), T0)
        t = Touch.__table__  # type: ignore[attr-defined]
        with engine.begin() as conn:
            conn.execute(
                t.update().values(status="sending", lease_until=utcnow() + timedelta(minutes=5), claimed_by=holder)
            )
        assert recover_interrupted(engine, webhook()) == {}
        assert deliver(engine, webhook(), as_of=T0) == {}
        assert srv.snapshot() == []
        proc.kill()
        proc.wait()
        assert recover_interrupted(engine, webhook()) == {"resent": 3}
        assert deliver(engine, webhook(), as_of=T0) == {"delivered": 3}
    engine.dispose()
    srv.shutdown()
    srv.server_close()


def test_a_touch_whose_send_keeps_killing_its_process_fails_instead_of_looping(tmp_path: Path) -> None:
    """Resent after each crash while its channel drops repeats, but not forever."""
    srv = Receiver()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    engine = make_database(tmp_path / "poison.db", [f"{srv.url}/hook"] * 2)
    with sleeper() as (proc, holder):
        tick(engine, hook_playbook(), T0)
        proc.kill()
        proc.wait()
        t = Touch.__table__  # type: ignore[attr-defined]
        live = {"status": "sending", "lease_until": utcnow() + timedelta(minutes=5), "claimed_by": holder}
        with engine.begin() as conn:
            first, second = (r.id for r in conn.execute(t.select().order_by(t.c.id)))
            conn.execute(t.update().where(t.c.id == first).values(attempts=DeliveryPolicy().max_attempts, **live))
            conn.execute(t.update().where(t.c.id == second).values(attempts=3, **live))
        assert deliver(engine, webhook(), as_of=T0) == {"failed": 1, "resent": 1, "delivered": 1}
        rows = touch_rows(engine)
        assert [r.status for r in rows] == ["failed", "delivered"]
        assert "interrupted while sending 8 times" in rows[0].reason
        assert len(srv.snapshot()) == 1
    engine.dispose()
    srv.shutdown()
    srv.server_close()
