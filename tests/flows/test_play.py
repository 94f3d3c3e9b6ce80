"""A CSM's ad-hoc play goes through the same contact policy as a scheduled tick; a CSM may
override quiet hours on purpose, and the account's timeline says who did."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from cli import main
from flows.engine.outbox import deliver
from flows.engine.play import run_play
from flows.engine.tick import delivery_policy, tick, window_end
from integrations.channels.file import FileChannel
from models import Account, Contact, TimelineEvent, Touch, table_of
from playbooks import compile_file, load_policy
from tests._sqlite import migrated_sqlite

# 05:37 UTC on a Tuesday is 00:37 in New York: inside the quiet hours 20:00-08:00 (08:00 EST = 13:00 UTC)
NIGHT_IN_NEW_YORK = datetime(2027, 1, 12, 5, 37, tzinfo=UTC)
MORNING_IN_NEW_YORK = datetime(2027, 1, 12, 13, 0, tzinfo=UTC)
# Saturday afternoon in New York
SATURDAY = datetime(2027, 1, 16, 17, 0, tzinfo=UTC)

WELCOME = """\
playbook: welcome
name: Welcome
lifecycle: onboarding
audience: account.status == "active"
steps:
  - id: hello
    kind: email
    subject: "Welcome, {{ account.name }}"
    body: "Glad to have you."
"""

POLICY = """\
quiet_hours: "20:00-08:00"
business_days_only: true
max_touches: "3 per 7 days"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "welcome.yaml").write_text(WELCOME, encoding="utf-8")
    (folder / "policy.yaml").write_text(POLICY, encoding="utf-8")
    return folder


def add_account(engine: Engine, external_id: str = "nyc") -> None:
    with engine.begin() as conn:
        (account_id,) = conn.execute(
            insert(table_of(Account)).returning(table_of(Account).c.id),
            {"external_id": external_id, "name": "Big Apple", "status": "active", "country": "US", "custom": {}},
        ).one()
        conn.execute(
            insert(table_of(Contact)),
            {
                "account_id": account_id,
                "email": f"dana@{external_id}.example",
                "name": "Dana",
                "timezone": "America/New_York",
                "is_primary": True,
                "unsubscribed_channels": [],
                "preferences": {},
            },
        )


def touches(engine: Engine) -> list[tuple[str, datetime | None]]:
    t = table_of(Touch)
    with engine.connect() as conn:
        return [(row.status, row.not_before) for row in conn.execute(select(t.c.status, t.c.not_before))]


def events(engine: Engine, kind: str) -> list[TimelineEvent]:
    t = table_of(TimelineEvent)
    with engine.connect() as conn:
        return list(conn.execute(select(t).where(t.c.kind == kind)).all())


def test_a_play_at_night_is_deferred_like_the_scheduled_tick(
    sqlite_engine: Engine, folder: Path, tmp_path: Path
) -> None:
    add_account(sqlite_engine)
    pb = compile_file(folder / "welcome.yaml")
    email = FileChannel("email", tmp_path / "out")
    lines = run_play(sqlite_engine, pb, "nyc", channels={"email": email}, now=NIGHT_IN_NEW_YORK)
    assert touches(sqlite_engine) == [("pending", MORNING_IN_NEW_YORK)]
    assert not email.path.exists()  # nothing went out at 00:37 local time
    assert any(
        "deferred to 2027-01-12 13:00 UTC: quiet hours 20:00-08:00 in America/New_York" in line for line in lines
    )

    # the scheduled tick of the same playbook at the same moment decides the same way
    other = tmp_path / "other.db"
    engine = _fresh(other)
    add_account(engine)
    channels = {"email": FileChannel("email", tmp_path / "tick")}
    tick(engine, pb, NIGHT_IN_NEW_YORK, channels=channels)
    # held for the outbox run at the end of its priority window, which applies the policy
    deliver(engine, channels, as_of=window_end(NIGHT_IN_NEW_YORK), policy=delivery_policy([pb], load_policy(folder)))  # type: ignore[arg-type]
    assert touches(engine) == [("pending", MORNING_IN_NEW_YORK)]
    engine.dispose()


def test_business_days_hold_a_play_too(sqlite_engine: Engine, folder: Path, tmp_path: Path) -> None:
    add_account(sqlite_engine)
    pb = compile_file(folder / "welcome.yaml")
    run_play(sqlite_engine, pb, "nyc", channels={"email": FileChannel("email", tmp_path)}, now=SATURDAY)
    # Monday 08:00 in New York
    assert touches(sqlite_engine) == [("pending", datetime(2027, 1, 18, 13, 0, tzinfo=UTC))]


def test_a_csm_overrides_quiet_hours_and_the_timeline_says_who(
    sqlite_engine: Engine, folder: Path, tmp_path: Path
) -> None:
    add_account(sqlite_engine)
    pb = compile_file(folder / "welcome.yaml")
    email = FileChannel("email", tmp_path / "out")
    lines = run_play(
        sqlite_engine,
        pb,
        "nyc",
        channels={"email": email},
        now=NIGHT_IN_NEW_YORK,
        override_quiet_hours=True,
        by="sam.csm",
    )
    assert [status for status, _ in touches(sqlite_engine)] == ["delivered"]
    assert len(email.path.read_text().splitlines()) == 1
    (override,) = events(sqlite_engine, "override")
    assert override.detail == {"by": "sam.csm", "overridden": "quiet_hours", "quiet_hours": "20:00-08:00"}
    assert "overridden by sam.csm" in override.summary
    assert any("overridden by sam.csm" in line for line in lines)


def test_the_override_is_for_quiet_hours_only(sqlite_engine: Engine, folder: Path, tmp_path: Path) -> None:
    add_account(sqlite_engine)
    pb = compile_file(folder / "welcome.yaml")
    run_play(
        sqlite_engine,
        pb,
        "nyc",
        channels={"email": FileChannel("email", tmp_path)},
        now=SATURDAY,
        override_quiet_hours=True,
        by="sam.csm",
    )
    # still not on a Saturday: Monday, at 09:00 local (without quiet hours a moved touch lands at 09:00)
    assert touches(sqlite_engine) == [("pending", datetime(2027, 1, 18, 14, 0, tzinfo=UTC))]


def test_retain_play_now_records_the_csm_from_the_environment(
    sqlite_url: str, sqlite_engine: Engine, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_account(sqlite_engine)
    # quiet all day long (the command runs at the wall clock's time): only the override lets it go
    (folder / "policy.yaml").write_text('quiet_hours: "00:00-23:59"\n', encoding="utf-8")
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("RETAIN_CSM", "alex@vendor.example")
    args = [
        "--database-url",
        sqlite_url,
        "--playbooks-dir",
        str(folder),
        "play",
        "welcome",
        "--account",
        "nyc",
        "--now",
    ]
    assert main(args) == 0
    (override,) = events(sqlite_engine, "override")
    assert override.detail == {"by": "alex@vendor.example", "overridden": "quiet_hours", "quiet_hours": "00:00-23:59"}
    (enrolled,) = events(sqlite_engine, "enrolled")
    assert enrolled.detail["by"] == "alex@vendor.example"
    sent = [json.loads(line) for line in (tmp_path / "outbox" / "email.jsonl").read_text().splitlines()]
    assert [m["payload"]["subject"] for m in sent] == ["Welcome, Big Apple"]


def _fresh(path: Path) -> Engine:

    engine = migrated_sqlite(path)
    return engine
