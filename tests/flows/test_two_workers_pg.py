"""Several real worker processes claim the same due enrollments on PostgreSQL.

Three child processes (not threads: each its own interpreter and connections) start together on
the same 120 due enrollments and advance them with ``FOR UPDATE SKIP LOCKED`` in small batches.
No enrollment advances twice (the workers' counts add up to exactly 120, and every enrollment has
one "touch" event per step), no touch is written twice, and the work was shared. A worker killed
with SIGKILL while it holds claims frees them at once: the claims live in its transaction, so
there is no lease to wait out.

Also here: with ``CI=true``, PostgreSQL down fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from flows.engine.advance import advance
from flows.engine.enroll import enroll
from flows.engine.revisions import RevisionCache, sync_revision
from models import Account, Enrollment, TimelineEvent, Touch, session, table_of
from playbooks import CompiledPlaybook, compile_source

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2027, 5, 3, 9, 0, tzinfo=UTC)
ACCOUNTS = 120
WORKERS = 3

PLAYBOOK = """
playbook: fanout
name: Fan-out
lifecycle: custom
audience: account.status == "active"
steps:
  - id: notify
    kind: webhook
    url: "http://127.0.0.1:9/hook"
    json:
      account: "{{ account.external_id }}"
  - id: pause
    kind: wait
    for: 1 day
  - id: again
    kind: webhook
    url: "http://127.0.0.1:9/hook"
    json:
      account: "{{ account.external_id }}"
  - id: rest
    kind: wait
    for: 30 days
"""

# A worker: imports everything, says "ready", waits for "go" on stdin, then advances as of the
# given time and prints how many enrollments it advanced.
WORKER = """
import json, sys
from datetime import datetime
from pathlib import Path
from flows.engine.advance import advance
from flows.engine.revisions import RevisionCache
from models import make_engine
from playbooks import compile_source

job = json.loads(sys.argv[1])
pb = compile_source(Path(job["playbook"]).read_text(), job["playbook"])
engine = make_engine(job["db"])
with engine.connect():
    pass
print("ready", flush=True)
sys.stdin.readline()
result = advance(engine, RevisionCache(current={pb.id: pb}), pb.id, datetime.fromisoformat(job["as_of"]),
                 worker=job["name"], batch_size=job["batch"])
print(json.dumps({"name": job["name"], "advanced": result.enrollments, "errors": result.errors}), flush=True)
"""

# A worker that claims a batch and then hangs while holding it (to be killed).
HOLDER = """
import json, sys, time
from datetime import datetime
from flows.engine.advance import claim_due
from models import make_engine, session

job = json.loads(sys.argv[1])
with session(make_engine(job["db"])) as s:
    ids = claim_due(s, "fanout", datetime.fromisoformat(job["as_of"]), "holder", job["batch"])
    print(json.dumps(ids), flush=True)
    time.sleep(120)
"""


def playbook() -> CompiledPlaybook:
    return compile_source(textwrap.dedent(PLAYBOOK).lstrip(), "fanout.yaml")


@pytest.fixture
def due(pg_clean: Engine, tmp_path: Path) -> tuple[Engine, Path]:
    """120 active accounts, all enrolled in ``fanout`` and due at T0; the playbook's file."""
    pb = playbook()
    with pg_clean.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {
                    "external_id": f"acct-{i:03d}",
                    "name": f"Account {i}",
                    "status": "active",
                    "custom": {},
                    "created_at": T0,
                    "updated_at": T0,
                }
                for i in range(ACCOUNTS)
            ],
        )
    with session(pg_clean) as s:
        sync_revision(s, pb)
        assert enroll(s, pb, T0) == (ACCOUNTS, 0)
    source = tmp_path / "fanout.yaml"
    source.write_text(textwrap.dedent(PLAYBOOK).lstrip())
    return pg_clean, source


def job(engine: Engine, source: Path, name: str, as_of: datetime, batch: int) -> str:
    url = engine.url.render_as_string(hide_password=False)
    return json.dumps({"db": url, "playbook": str(source), "name": name, "as_of": as_of.isoformat(), "batch": batch})


def run_workers(engine: Engine, source: Path, as_of: datetime) -> list[dict[str, Any]]:
    """Start the workers, let them all import and connect, then release them at once."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, job(engine, source, f"w{i}", as_of, 5)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(WORKERS)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            reports.append(json.loads(proc.stdout.readline()))
            assert proc.wait(60) == 0
        return reports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def events_per_enrollment(engine: Engine, step: str) -> Counter[int]:
    tl = table_of(TimelineEvent)
    with engine.connect() as conn:
        rows = conn.execute(
            select(tl.c.enrollment_id, func.count())
            .where(tl.c.kind == "touch", tl.c.step_id == step)
            .group_by(tl.c.enrollment_id)
        ).all()
    return Counter({enrollment: n for enrollment, n in rows})


def touches_by_step(engine: Engine) -> Counter[str]:
    t = table_of(Touch)
    with engine.connect() as conn:
        return Counter(dict(conn.execute(select(t.c.step_id, func.count()).group_by(t.c.step_id)).all()))


def test_three_worker_processes_never_advance_an_enrollment_twice(due: tuple[Engine, Path]) -> None:
    engine, source = due
    for as_of, step in ((T0, "notify"), (T0 + timedelta(days=1), "again")):
        reports = run_workers(engine, source, as_of)
        advanced = [r["advanced"] for r in reports]
        assert all(r["errors"] == [] for r in reports)
        assert sum(advanced) == ACCOUNTS, advanced  # each due enrollment advanced by exactly one worker
        assert sum(1 for n in advanced if n > 0) >= 2, advanced  # and they really worked side by side
        per_enrollment = events_per_enrollment(engine, step)
        assert len(per_enrollment) == ACCOUNTS and set(per_enrollment.values()) == {1}
    assert touches_by_step(engine) == {"notify": ACCOUNTS, "again": ACCOUNTS}
    t, enr = table_of(Touch), table_of(Enrollment)
    with engine.connect() as conn:
        assert conn.execute(select(func.count(func.distinct(t.c.key)))).scalar_one() == 2 * ACCOUNTS
        states = Counter(conn.execute(select(enr.c.step_id, enr.c.claimed_by)).all())
    assert states == {("rest", None): ACCOUNTS}  # all at the last wait, no claim left behind


def test_a_worker_killed_while_holding_claims_frees_them_at_once(due: tuple[Engine, Path]) -> None:
    engine, source = due
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, job(engine, source, "holder", T0, 30)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = json.loads(holder.stdout.readline())
        assert len(held) == 30
        pb = playbook()
        # while it holds them, another worker skips them (SKIP LOCKED) and advances the rest
        others = advance(engine, RevisionCache(current={pb.id: pb}), pb.id, T0, worker="other", batch_size=40)
        assert others.enrollments == ACCOUNTS - 30
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(10) == -signal.SIGKILL
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # right away, no lease to wait out: the dead worker's transaction took its claims with it
    rest = advance(engine, RevisionCache(current={pb.id: pb}), pb.id, T0, worker="next", batch_size=40)
    assert rest.enrollments == 30
    per_enrollment = events_per_enrollment(engine, "notify")
    assert len(per_enrollment) == ACCOUNTS and set(per_enrollment.values()) == {1}
    assert touches_by_step(engine) == {"notify": ACCOUNTS}


def test_postgresql_down_fails_under_ci_and_skips_elsewhere() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    node = f"{Path(__file__).relative_to(ROOT)}::test_a_worker_killed_while_holding_claims_frees_them_at_once"
    # the two inner sessions, with and without CI=true, run at the same time (each its own start-up)
    procs = {}
    for ci in ("true", ""):
        env = {**os.environ, "CI": ci, "RETAIN_TEST_PG_URL": f"postgresql://postgres@127.0.0.1:{closed}/postgres"}
        env.pop("PYTEST_ADDOPTS", None)  # CI's coverage options: the inner run measures nothing of ours
        procs[ci] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        done = {ci: (proc.communicate(timeout=120)[0], proc.returncode) for ci, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for ci, outcome in (("true", "1 error"), ("", "1 skipped")):
        stdout, returncode = done[ci]
        assert outcome in stdout, (ci, stdout[-2000:])
        assert f"PostgreSQL not reachable at postgresql://postgres@127.0.0.1:{closed}/postgres" in stdout
        if ci:
            assert returncode == 1 and "CI=true: PostgreSQL tests must run, not skip" in stdout
        else:
            assert returncode == 0
