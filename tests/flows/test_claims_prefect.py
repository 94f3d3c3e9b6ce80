"""Claims held by a Prefect flow run that has ended are taken over at once, asked of a real Prefect
API (the session's ``prefect_api``): the run's process may be on another host, where its pid says
nothing, but Prefect knows the run Crashed, Failed, was Cancelled or Completed. A run that may
still be running (Running, or awaiting a retry) keeps its lease."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from flows.engine.claims import gone_holders
from flows.engine.outbox import DeliveryPolicy, deliver, recover_interrupted
from flows.engine.tick import tick
from models import Settings, Touch, utcnow

from .test_outbox_crash import PLAYBOOK, T0, Receiver, hook_playbook, make_database, touch_rows, webhook

ELSEWHERE = "worker-7.elsewhere.example"  # another host: its pids are not ours to judge


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    srv = Receiver()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def flow_runs(prefect_api: None) -> dict[str, str]:
    """Flow runs in the session's Prefect API, one per state, by state name."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import AwaitingRetry, Cancelled, Completed, Crashed, Failed, Running

    @flow(name="retain-test-claims")
    def holder() -> None:  # never run: its runs are made and moved through the API
        return None

    runs: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name, state in [
            ("crashed", Crashed),
            ("failed", Failed),
            ("cancelled", Cancelled),
            ("completed", Completed),
            ("running", Running),
            ("awaiting_retry", AwaitingRetry),
        ]:
            run = client.create_flow_run(holder, state=Running())
            if name != "running":
                client.set_flow_run_state(run.id, state(), force=True)
            runs[name] = str(run.id)
    return runs


def signed(flow_run: str, pid: int = 4242) -> str:
    return f"{ELSEWHERE}:{pid};pidns=pid:[4026531836];started=1234;flow_run={flow_run}"


def test_prefect_says_which_flow_runs_have_ended(flow_runs: dict[str, str]) -> None:
    from flows.orchestration.claims import flow_runs_over

    unknown = str(uuid.uuid4())
    over = flow_runs_over([*flow_runs.values(), unknown, "not-a-flow-run"])
    ended = {flow_runs[n] for n in ("crashed", "failed", "cancelled", "completed")}
    # a server is configured (the session's): a run it does not know was deleted or never reported there
    assert over == ended | {unknown}
    holders = [signed(run, pid) for pid, run in enumerate(flow_runs.values(), start=100)]
    assert gone_holders(holders) == []  # without Prefect: other hosts are never judged
    gone = gone_holders([*holders, f"{ELSEWHERE}:9"], flow_runs_over)
    assert {h.rpartition("flow_run=")[2] for h in gone} == ended


def test_a_dead_flow_runs_claims_are_taken_over_at_once_a_running_ones_are_not(
    flow_runs: dict[str, str], receiver: Receiver, tmp_path: Path
) -> None:
    from flows.orchestration.claims import with_prefect_claims

    engine = make_database(tmp_path / "claims.db", [f"{receiver.url}/hook"] * 3)
    try:
        tick(engine, hook_playbook(), T0)  # the touches; nothing sent
        crashed_pending, crashed_sending, running = (r.id for r in touch_rows(engine))
        lease = utcnow() + timedelta(minutes=5)
        claim(engine, crashed_pending, "pending", signed(flow_runs["crashed"], 11), lease)
        claim(engine, crashed_sending, "sending", signed(flow_runs["crashed"], 11), lease)
        claim(engine, running, "pending", signed(flow_runs["running"], 12), lease)

        # without asking Prefect every lease is waited out: nothing moves for 5 minutes
        assert recover_interrupted(engine, webhook()) == {}
        assert deliver(engine, webhook(), as_of=T0) == {}
        assert receiver.snapshot() == []

        counts = deliver(engine, webhook(), as_of=T0, policy=with_prefect_claims(DeliveryPolicy()))
        assert counts == {"resent": 1, "delivered": 2}
        rows = {r.id: r for r in touch_rows(engine)}
        assert rows[crashed_pending].status == rows[crashed_sending].status == "delivered"
        assert (rows[running].status, rows[running].claimed_by) == ("pending", signed(flow_runs["running"], 12))
        assert sorted(s.key for s in receiver.snapshot()) == sorted(
            [rows[crashed_pending].key, rows[crashed_sending].key]
        )
    finally:
        engine.dispose()


def test_the_outbox_flow_asks_prefect(
    flow_runs: dict[str, str], receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Prefect flows hand the engine the question: a crashed run's claims go in the next outbox run."""
    from flows.orchestration.playbook import deliver_outbox
    from flows.orchestration.runtime import prefect_environment

    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "hook.yaml").write_text(PLAYBOOK.lstrip())
    engine = make_database(tmp_path / "flow.db", [f"{receiver.url}/hook"] * 2)
    try:
        tick(engine, hook_playbook(), T0)
        lease = utcnow() + timedelta(minutes=5)
        for touch_id in (r.id for r in touch_rows(engine)):
            claim(engine, touch_id, "pending", signed(flow_runs["failed"], 21), lease)
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'flow.db'}", playbooks_dir=folder)
        monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
        with prefect_environment(settings):
            state: Any = deliver_outbox(as_of=T0.isoformat(), return_state=True)
        assert state.is_completed(), state
        assert {r.status for r in touch_rows(engine)} == {"delivered"}
        assert len(receiver.snapshot()) == 2
    finally:
        engine.dispose()


def claim(engine: Engine, touch_id: int, status: str, holder: str, lease: Any) -> None:
    t = Touch.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(t.update().where(t.c.id == touch_id).values(status=status, claimed_by=holder, lease_until=lease))
