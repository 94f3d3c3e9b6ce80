"""The demo through its plain functions (no Prefect): a small book, a few weeks, every playbook at work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from flows import demo
from models import (
    BUNDLED_PLAYBOOKS_DIR,
    Account,
    ConfigError,
    Contact,
    CsmTask,
    Enrollment,
    Settings,
    SurveyResponse,
    Touch,
    TouchStatus,
    UsageMetric,
    make_engine,
)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Settings, demo.DemoResult]]:
    folder = tmp_path_factory.mktemp("demo")
    settings = Settings(
        database_url=f"sqlite:///{folder / 'retain.db'}",
        outbox_dir=folder / "outbox",
        playbooks_dir=BUNDLED_PLAYBOOKS_DIR,
    )
    engine = make_engine(settings.database_url)
    assert demo.prepare(engine, settings, reset=False) == 0
    result = demo.run_demo(engine, settings, demo.DemoConfig(accounts=60, days=40, seed=7))
    yield engine, settings, result
    engine.dispose()


def _count(engine: Engine, stmt: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())  # type: ignore[call-overload]


def test_seeds_a_plausible_book(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    engine, _, result = ran
    assert result.seeded["accounts"] == 60
    with engine.connect() as conn:
        accounts = conn.execute(select(Account)).all()
        assert len({a.name for a in accounts}) == len(accounts)
        assert {a.status for a in accounts} >= {"active", "churned"}
        assert len({a.timezone for a in accounts}) >= 5
        assert all(a.renewal_date is not None for a in accounts)
        assert {a.plan for a in accounts} <= {"starter", "team", "business", "enterprise"}
        primaries = conn.execute(
            select(Contact.account_id, func.count()).where(Contact.is_primary).group_by(Contact.account_id)
        ).all()
        assert len(primaries) == len(accounts) and all(n == 1 for _, n in primaries)
    assert _count(engine, select(func.count()).select_from(UsageMetric)) > 60 * 30


def test_every_playbook_enrolls_and_delivers(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    engine, settings, result = ran
    assert result.errors == []
    for playbook in demo.PLAYBOOK_ORDER:
        enrolled = _count(engine, select(func.count()).select_from(Enrollment).where(Enrollment.playbook == playbook))
        delivered = _count(
            engine,
            select(func.count())
            .select_from(Touch)
            .where(Touch.playbook == playbook, Touch.status == TouchStatus.DELIVERED),
        )
        assert enrolled > 0, playbook
        assert delivered > 0, playbook
    holdouts = _count(engine, select(func.count()).select_from(Enrollment).where(Enrollment.holdout))
    assert holdouts > 0
    # webhook steps really delivered, to the local receiver only
    assert result.webhook_requests > 0
    webhooks = _count(
        engine,
        select(func.count())
        .select_from(Touch)
        .where(Touch.channel == "webhook", Touch.status == TouchStatus.DELIVERED),
    )
    assert webhooks == result.webhook_requests
    assert (settings.outbox_dir / "email.jsonl").exists()


def test_customers_react(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    engine, _, result = ran
    assert result.world.get("reply", 0) > 0
    assert _count(engine, select(func.count()).select_from(Touch).where(Touch.replied_at.is_not(None))) > 0
    assert _count(engine, select(func.count()).select_from(SurveyResponse)) > 0
    assert result.world.get("renewed", 0) > 0


def test_refuses_a_database_with_accounts_unless_reset(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    engine, settings, _ = ran
    before = _count(engine, select(func.count()).select_from(Account))
    with pytest.raises(ConfigError, match="--reset"):
        demo.prepare(engine, settings, reset=False)
    assert _count(engine, select(func.count()).select_from(Account)) == before


def test_reset_empties_every_table(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'retain.db'}",
        outbox_dir=tmp_path / "outbox",
        playbooks_dir=BUNDLED_PLAYBOOKS_DIR,
    )
    engine = make_engine(settings.database_url)
    demo.prepare(engine, settings, reset=False)
    demo.run_demo(engine, settings, demo.DemoConfig(accounts=12, days=2, seed=1))
    assert (settings.outbox_dir / "email.jsonl").exists()
    assert demo.prepare(engine, settings, reset=True) > 0
    assert demo.account_count(engine) == 0
    assert _count(engine, select(func.count()).select_from(Touch)) == 0
    assert not (settings.outbox_dir / "email.jsonl").exists()
    engine.dispose()


def test_simulate_on_the_demo_data_changes_nothing(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    """``retain playbooks simulate`` on the demo's book: entries, touches and what the policy holds
    back, and the database folder byte for byte as it was."""
    import hashlib
    from datetime import UTC, datetime, timedelta

    from flows.engine.simulate import simulate
    from flows.engine.tick import delivery_policy
    from playbooks import load_playbooks, load_policy

    engine, settings, _ = ran
    engine.dispose()  # as after a command: SQLite folds its write-ahead log into the file
    folder = Path(str(settings.database_url).removeprefix("sqlite:///")).parent

    def files() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}

    before = files()
    playbooks = load_playbooks(BUNDLED_PLAYBOOKS_DIR)
    start = datetime(2027, 1, 4, 14, tzinfo=UTC) + timedelta(days=40)
    result = simulate(
        make_engine(settings.database_url),
        playbooks["check_in"],
        start,
        14,
        delivery_policy(playbooks.values(), load_policy(BUNDLED_PLAYBOOKS_DIR)),
    )
    assert result.entered and result.steps
    assert result.touches.get("email", {}).get("would be delivered", 0) > 0
    assert result.held_back, "quiet hours, weekends, caps or unsubscribes hold some touches back"
    assert files() == before


def test_tasks_of_ended_enrollments_are_closed_with_the_reason(ran: tuple[Engine, Settings, demo.DemoResult]) -> None:
    engine, _, result = ran
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                CsmTask.status, CsmTask.closed_reason, CsmTask.keep_open, Enrollment.status, Enrollment.playbook
            ).join(Enrollment, Enrollment.id == CsmTask.enrollment_id)
        ).all()
    assert rows
    left_open = [r for r in rows if r[0] == "open" and r[3] != "active" and not r[2]]
    assert left_open == []
    assert result.world["task done"] == sum(1 for r in rows if r[0] == "done") > 0  # the CSMs work their queue
    closed = [r for r in rows if r[0] == "closed"]
    assert closed, "some enrollments with tasks ended in 40 days"
    assert all(reason == f"its enrollment in {pb} ended: " + reason.split(": ", 1)[1] for _, reason, _, _, pb in closed)
