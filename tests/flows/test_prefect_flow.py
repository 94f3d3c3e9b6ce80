"""The Prefect flow ``run_playbook`` through a real (temporary) Prefect API: one task run per
phase, whatever the number of accounts; a readable flow run name; a dry run keeps nothing.

One Prefect API for the whole session (``prefect_api`` in tests/conftest.py), with hermetic
settings: a temporary ``PREFECT_HOME``, quiet logs, no analytics.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from flows.orchestration.runtime import prefect_environment
from models import Account, Enrollment, Settings, table_of
from playbooks import compile_file
from tests._sqlite import migrated_sqlite

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)

PLAYBOOK = """\
playbook: bulk
name: Bulk
lifecycle: custom
audience: account.status == "active"
entry:
  holdout: 50%  # half the accounts advance: the engine's ~2 ms per enrollment is not what this file measures
steps:
  - id: pause
    kind: wait
    for: 7 days
  - id: done
    kind: exit
"""

PHASES = {"compile", "settle", "enroll", "advance", "deliver", "summarize"}


@pytest.fixture
def playbooks_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "bulk.yaml").write_text(PLAYBOOK)
    return folder


def database(path: Path, accounts: int) -> Engine:
    engine = migrated_sqlite(path)
    add_accounts(engine, accounts)
    return engine


def add_accounts(engine: Engine, accounts: int) -> None:
    """Bulk Core insert: 5,000 accounts in a fraction of a second."""
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {
                    "external_id": f"acct-{i:06d}",
                    "name": f"Account {i}",
                    "status": "active",
                    "custom": {},
                    "created_at": T0 - timedelta(days=30),
                    "updated_at": T0 - timedelta(days=30),
                }
                for i in range(accounts)
            ],
        )


def rows_per_table(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in SQLModel.metadata.sorted_tables
        }


def run(settings: Settings, monkeypatch: pytest.MonkeyPatch, *, dry_run: bool = False) -> tuple[dict[str, Any], UUID]:
    from flows.orchestration.playbook import run_playbook

    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(settings.outbox_dir))
    with prefect_environment(settings):
        state = run_playbook(playbook="bulk", as_of=T0.isoformat(), dry_run=dry_run, return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state.result(), flow_run_id  # type: ignore[return-value]


def task_runs(flow_run_id: UUID, *, expected: int = len(PHASES), timeout: float = 15) -> list[Any]:
    """The flow run's task runs as the API has them (their states arrive as events: wait for them)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    def read(client: Any) -> list[Any]:
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
        )

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = read(client)
            done = [r for r in runs if r.state is not None and r.state.is_completed()]
            if len(done) >= expected or time.monotonic() > deadline:
                time.sleep(0.2)  # and nothing more comes
                return read(client)
            time.sleep(0.1)


def flow_run_name(flow_run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).name


def tick_artifact(flow_run_id: UUID) -> str:
    """The markdown of the tick's artifact (``tick-bulk``) that this flow run published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["tick-bulk"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
            )
        )
    assert len(found) == 1, found
    return str(found[0].data)


def test_task_runs_do_not_grow_with_the_number_of_accounts(
    prefect_api: None, playbooks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    revision = compile_file(playbooks_dir / "bulk.yaml").revision
    counts: dict[int, int] = {}
    timings: dict[int, float] = {}
    for accounts in (100, 5_000):
        engine = database(tmp_path / f"n{accounts}.db", accounts)
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / f'n{accounts}.db'}",
            playbooks_dir=playbooks_dir,
            outbox_dir=tmp_path / "outbox",
        )
        started = time.perf_counter()
        report, flow_run_id = run(settings, monkeypatch)
        timings[accounts] = time.perf_counter() - started
        assert report["enrolled"] == accounts
        assert report["advanced"] + report["holdout"] == accounts
        runs = task_runs(flow_run_id)
        counts[accounts] = len(runs)
        assert {r.name.rsplit("-", 1)[0] for r in runs} == PHASES, [r.name for r in runs]
        assert all(r.state is not None and r.state.is_completed() for r in runs)
        name = flow_run_name(flow_run_id)
        assert name.startswith(f"bulk@{revision} "), name
        # the tick's artifact says what this tick did, from its own counts (nothing of the book read)
        page = tick_artifact(flow_run_id)
        assert f"enrolled {accounts} (" in page and "## Steps run this tick" in page, page
        with engine.connect() as conn:
            active = conn.execute(select(func.count()).select_from(Enrollment).where(Enrollment.status == "active"))
            assert active.scalar_one() == accounts
        engine.dispose()
    print(f"task runs: {counts}; seconds: { {n: round(t, 2) for n, t in timings.items()} }")
    assert counts[100] == counts[5_000] == len(PHASES)


def test_a_dry_run_keeps_nothing(
    prefect_api: None,
    engine: Engine,
    playbooks_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_accounts(engine, 50)
    before = rows_per_table(engine)
    settings = Settings(
        database_url=engine.url.render_as_string(hide_password=False),
        playbooks_dir=playbooks_dir,
        outbox_dir=tmp_path / "outbox",
    )
    report, flow_run_id = run(settings, monkeypatch, dry_run=True)
    assert report["dry_run"] is True
    assert report["enrolled"] == 50 and report["advanced"] > 0  # it did the work ...
    assert flow_run_name(flow_run_id).endswith(" dry-run")
    names = {r.name.rsplit("-", 1)[0] for r in task_runs(flow_run_id, expected=len(PHASES) - 1)}
    assert names == PHASES - {"deliver"}  # nothing is sent in a dry run
    assert not (tmp_path / "outbox").exists()
    assert rows_per_table(engine) == before  # ... and kept none of it


#: pysqlite emits no BEGIN for ``Connection.begin()``; the session's SAVEPOINT then opens the
#: transaction itself and its RELEASE commits it, so the outer rollback of ``_bind`` undoes nothing.
