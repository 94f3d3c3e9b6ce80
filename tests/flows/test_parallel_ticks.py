"""Parallel ticks of one playbook on PostgreSQL, as real ``retain run`` processes: a new revision is
registered once without an error, and enrollments ended by several runs at once get one outcome
and one timeline line each.

The race is made certain, not hoped for: the test holds the rows the runs are about to write (a
revision row it has not committed, or the enrollments locked ``FOR UPDATE``), waits until every
run is blocked on them, then lets go."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Engine

import cli
from models import Account, Enrollment, Outcome, PlaybookRevision, TimelineEvent, table_of
from playbooks import compile_file

RETAIN = str(Path(sys.executable).parent / "retain")
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ACCOUNTS = 60
RUNS = 2  # two runs released at once are the race; a third is one more start-up, not another race

RENEWAL = """\
playbook: renewal
name: Renewal
lifecycle: renewal
audience: account.status == "active"
goal:
  when: account.health == "green"
  outcome: renewed
steps:
  - id: pause
    kind: wait
    for: 30 days
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "renewal.yaml").write_text(textwrap.dedent(RENEWAL), encoding="utf-8")
    return folder


def _accounts(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {"external_id": f"a{i:03d}", "name": f"A{i}", "status": "active", "health": "red", "custom": {}}
                for i in range(ACCOUNTS)
            ],
        )


def _runs(pg_url: str, folder: Path, tmp_path: Path, as_of: datetime, n: int = RUNS) -> list[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIN_")}
    env.update({"RETAIN_OUTBOX_DIR": str(tmp_path / "outbox"), "COLUMNS": "200"})
    args = [RETAIN, "--database-url", pg_url, "--playbooks-dir", str(folder)]
    args += ["run", "renewal", "--no-prefect", "--as-of", as_of.isoformat()]
    return [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(n)
    ]


def _wait_until_blocked(engine: Engine, runs: list[subprocess.Popen[str]], n: int) -> None:
    """Until ``n`` sessions of this database wait for a lock (every run reached the held rows)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting >= n:
            return
        if any(run.poll() is not None for run in runs):
            break  # a run ended without reaching the rows: its output says why
        time.sleep(0.1)
    outputs = [run.communicate(timeout=60)[0] if run.poll() is not None else "(still running)" for run in runs]
    pytest.fail(f"the runs did not all block on the held rows: {outputs}")


def _finished(runs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for run in runs:
        output = run.communicate(timeout=120)[0]
        assert run.returncode == 0, output
        assert "Traceback" not in output and "UniqueViolation" not in output, output
        outputs.append(output)
    return outputs


def test_parallel_first_ticks_register_the_revision_once(
    pg_clean: Engine, pg_url: str, folder: Path, tmp_path: Path
) -> None:
    _accounts(pg_clean)
    pb = compile_file(folder / "renewal.yaml")
    revisions = table_of(PlaybookRevision)
    with pg_clean.connect() as holder:
        held = holder.begin()
        # the same primary key, not committed: every run's insert of it waits for this transaction
        holder.execute(
            insert(revisions),
            {"playbook": pb.id, "revision": pb.revision, "source": pb.source, "templates": {}, "created_at": T0},
        )
        runs = _runs(pg_url, folder, tmp_path, T0)
        _wait_until_blocked(pg_clean, runs, RUNS)
        held.rollback()
    outputs = _finished(runs)
    assert sum(f"enrolled {ACCOUNTS} " in output for output in outputs) == 1, outputs
    with pg_clean.connect() as conn:
        assert conn.execute(select(func.count()).select_from(revisions)).scalar_one() == 1
        enrollments = table_of(Enrollment)
        assert conn.execute(select(func.count()).select_from(enrollments)).scalar_one() == ACCOUNTS


def test_parallel_ticks_end_each_enrollment_once(
    pg_clean: Engine,
    pg_url: str,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _accounts(pg_clean)
    # the first tick, alone, enrolls everyone: in this process (the parallel ones below are processes)
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    args = ["--database-url", pg_url, "--playbooks-dir", str(folder), "run", "renewal", "--no-prefect"]
    assert cli.main([*args, "--as-of", T0.isoformat()]) == 0
    assert capsys.readouterr().out.count(f"enrolled {ACCOUNTS} ") == 1
    accounts, enrollments = table_of(Account), table_of(Enrollment)
    with pg_clean.begin() as conn:
        conn.execute(update(accounts).values(health="green"))  # every account renewed: the goal holds
    with pg_clean.connect() as holder:
        held = holder.begin()
        holder.execute(select(enrollments.c.id).with_for_update())  # the runs' UPDATE waits for these
        runs = _runs(pg_url, folder, tmp_path, T0 + timedelta(days=1))
        _wait_until_blocked(pg_clean, runs, RUNS)
        held.rollback()
    outputs = _finished(runs)
    ended = sorted(int(output.split("ended ")[1].split(",")[0]) for output in outputs)
    assert ended == [0] * (RUNS - 1) + [ACCOUNTS], outputs
    outcomes, timeline = table_of(Outcome), table_of(TimelineEvent)
    with pg_clean.connect() as conn:
        assert conn.execute(select(outcomes.c.kind, func.count()).group_by(outcomes.c.kind)).all() == [
            ("renewed", ACCOUNTS)
        ]
        completed = conn.execute(
            select(func.count()).select_from(timeline).where(timeline.c.kind == "completed")
        ).scalar_one()
        assert completed == ACCOUNTS
        statuses = conn.execute(select(enrollments.c.status, func.count()).group_by(enrollments.c.status)).all()
        assert statuses == [("completed", ACCOUNTS)]
