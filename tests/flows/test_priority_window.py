"""The touch cap goes to the higher-priority playbook whichever playbook ticked first: the
customer-facing touches written in one clock window are delivered together, by priority, at the
window's end (``PRIORITY_WINDOW``); internal touches (Slack, webhooks, CRM) go out in the tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import deliver
from flows.engine.tick import PRIORITY_WINDOW, delivery_policy, tick, window_end
from integrations.channels.file import FileChannel
from models import Account, Contact, Touch, table_of
from models.playbook import PolicySpec
from playbooks import CompiledPlaybook, compile_source

MONDAY_9 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)  # 09:00 in UTC, a Monday


def two_emails(playbook: str, priority: int, *, slack: bool = False) -> CompiledPlaybook:
    extra = '  - id: team\n    kind: slack\n    channel: "#cs"\n    text: "heads up"\n' if slack else ""
    source = (
        f"playbook: {playbook}\nname: {playbook}\nlifecycle: custom\npriority: {priority}\n"
        'audience: account.status == "active"\nsteps:\n'
        f"{extra}"
        f'  - id: first\n    kind: email\n    subject: "{playbook} 1"\n    body: "one"\n'
        f'  - id: second\n    kind: email\n    subject: "{playbook} 2"\n    body: "two"\n'
    )
    return compile_source(source, f"{playbook}.yaml")


def add_contact(engine: Engine) -> None:
    with engine.begin() as conn:
        (account_id,) = conn.execute(
            insert(table_of(Account)).returning(table_of(Account).c.id),
            {"external_id": "acme", "name": "Acme", "status": "active", "timezone": "UTC", "custom": {}},
        ).one()
        conn.execute(
            insert(table_of(Contact)),
            {
                "account_id": account_id,
                "email": "dana@acme.example",
                "is_primary": True,
                "unsubscribed_channels": [],
                "preferences": {},
            },
        )


def states(engine: Engine) -> dict[str, str]:
    t = table_of(Touch)
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.playbook, t.c.step_id, t.c.channel, t.c.status)).all()
    return {f"{p}:{s}" if c == "email" else f"{p}:{c}": status for p, s, c, status in rows}


def test_the_higher_priority_playbook_keeps_its_place_in_the_cap_whoever_ticks_first(
    engine: Engine, tmp_path: Path
) -> None:
    add_contact(engine)
    low, high = two_emails("low", 10, slack=True), two_emails("high", 95)
    policy = delivery_policy([low, high], PolicySpec(max_touches="3 per 7 days"))
    channels = {"email": FileChannel("email", tmp_path), "slack": FileChannel("slack", tmp_path)}
    # the low-priority playbook ticks first; the other a minute later, in the same window
    first = tick(engine, low, MONDAY_9, channels=channels, delivery=policy)
    assert first.delivered == {"delivered": 1}  # its Slack post to the team goes at once
    tick(engine, high, MONDAY_9 + timedelta(minutes=1), channels=channels, delivery=policy)
    assert states(engine) == {
        "low:slack": "delivered",
        "low:first": "pending",
        "low:second": "pending",
        "high:first": "pending",
        "high:second": "pending",
    }
    # the outbox run at the window's end: by priority, the cap of 3 leaves out the low one's second
    end = window_end(MONDAY_9)
    assert end == MONDAY_9 + PRIORITY_WINDOW
    counts = deliver(engine, channels, as_of=end, policy=policy)  # type: ignore[arg-type]
    assert counts == {"delivered": 3, "deferred": 1}
    assert states(engine) == {
        "low:slack": "delivered",
        "low:first": "delivered",
        "low:second": "pending",
        "high:first": "delivered",
        "high:second": "delivered",
    }


def test_a_tick_on_a_window_boundary_opens_the_next_window() -> None:
    assert window_end(MONDAY_9) == datetime(2027, 3, 1, 9, 5, tzinfo=UTC)
    assert window_end(MONDAY_9 + timedelta(minutes=4, seconds=59)) == datetime(2027, 3, 1, 9, 5, tzinfo=UTC)
    assert window_end(MONDAY_9 + timedelta(minutes=5)) == datetime(2027, 3, 1, 9, 10, tzinfo=UTC)


def test_a_tick_without_a_window_delivers_everything_itself(sqlite_engine: Engine, tmp_path: Path) -> None:
    add_contact(sqlite_engine)
    pb = two_emails("solo", 50)
    channels = {"email": FileChannel("email", tmp_path)}
    report = tick(
        sqlite_engine, pb, MONDAY_9, channels=channels, delivery=delivery_policy([pb], PolicySpec()), window=None
    )
    assert report.delivered == {"delivered": 2}
