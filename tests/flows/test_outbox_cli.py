"""``retain outbox list|deliver|resolve|retry`` through the real CLI, on a real SQLite file, with a
real SMTP server (aiosmtpd) and a real HTTP receiver on 127.0.0.1.

Touches get into doubt the way they do in life: an email whose delivery run was killed while
sending (its claimer, a real process, is gone) becomes ``unknown``; a webhook the receiver refuses
with a 400 becomes ``failed``. A person then resolves and retries them, and the timeline says who.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import insert, select, update

import cli
from cli._app import console
from models import Account, TimelineEvent, Touch, make_engine, utcnow
from tests._sqlite import migrated_sqlite
from tests.integrations.conftest import HttpServer, Request, SmtpSink, free_port


@dataclass
class Run:
    code: int
    out: str
    err: str


Retain = Callable[..., Run]


@dataclass
class World:
    url: str
    smtp: SmtpSink
    http: HttpServer
    dead: str  # the claim of a delivery run that was killed

    def touches(self) -> dict[str, Any]:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                return {r.key: r for r in conn.execute(select(Touch.__table__))}  # type: ignore[attr-defined]
        finally:
            engine.dispose()

    def timeline(self) -> list[Any]:
        engine = make_engine(self.url)
        try:
            with engine.connect() as conn:
                tl = TimelineEvent.__table__  # type: ignore[attr-defined]
                return list(conn.execute(select(tl).order_by(tl.c.id)))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def dead_claimer() -> str:
    """The claim a real process signs, once that process has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "from flows.engine.claims import claimer; print(claimer())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return proc.stdout.strip()


def receiver(request: Request) -> tuple[int, dict[str, str], Any]:
    if request.path == "/refuses":
        return 400, {}, "missing field: customer_id"
    return 200, {}, {"ok": True}


@pytest.fixture
def world(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_claimer: str) -> Iterator[World]:
    sink = SmtpSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    smtp.start()
    http = HttpServer()
    http.respond = receiver
    monkeypatch.setenv("RETAIN_SMTP_URL", f"smtp://127.0.0.1:{smtp.port}?starttls=false")
    monkeypatch.setenv("RETAIN_EMAIL_FROM", "Acme Success <cs@acme.test>")
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.delenv("RETAIN_CSM", raising=False)
    monkeypatch.setenv("USER", "ops-bot")
    engine = migrated_sqlite(sqlite_url)
    now = utcnow()
    dead = dead_claimer
    with engine.begin() as conn:
        acme, globex = (
            conn.execute(
                insert(Account.__table__).returning(Account.__table__.c.id),  # type: ignore[attr-defined]
                {"external_id": name, "name": name.title(), "status": "active", "custom": {}},
            ).scalar_one()
            for name in ("acme", "globex")
        )

        def touch(key: str, account: int, channel: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {
                "key": key,
                "account_id": account,
                "channel": channel,
                "payload": payload,
                "playbook": key.split(":")[0],
                "step_id": key.split(":")[2],
                "created_at": now - timedelta(hours=3),
                **extra,
            }

        email = {"kind": "email", "to": ["Dana <dana@acme.test>"], "subject": "Welcome", "text": "Hello Dana"}
        in_flight = {"status": "sending", "attempts": 1, "lease_until": now + timedelta(minutes=5), "claimed_by": dead}
        waiting = {"status": "pending", "attempts": 0, "lease_until": None, "claimed_by": None}
        conn.execute(
            insert(Touch.__table__),  # type: ignore[attr-defined]
            [
                touch("onboarding:1:welcome:0", acme, "email", email, **in_flight),
                touch("onboarding:2:welcome:0", globex, "email", email, **in_flight),
                touch("onboarding:3:welcome:0", globex, "email", email, **in_flight),
                touch(
                    "renewal:4:notify:0", acme, "webhook", {"url": f"{http.url}/refuses", "json": {"a": 1}}, **waiting
                ),
                touch(
                    "renewal:5:notify:0", globex, "webhook", {"url": f"{http.url}/hook", "json": {"a": 2}}, **waiting
                ),
            ],
        )
    engine.dispose()
    monkeypatch.setattr(console, "width", 80)
    yield World(sqlite_url, sink, http, dead)
    http.close()
    smtp.stop()


@pytest.fixture
def retain(world: World, capsys: pytest.CaptureFixture[str]) -> Retain:
    capsys.readouterr()

    def run(*args: str) -> Run:
        code = cli.main(
            ["--database-url", world.url, *args]
            if args[0] != "--playbooks-dir"
            else [*args[:2], "--database-url", world.url, *args[2:]]
        )
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def test_a_killed_send_becomes_unknown_and_a_person_resolves_each_way(retain: Retain, world: World) -> None:
    listed = retain("outbox", "list")
    assert listed.code == 0, listed.err
    assert "onboarding:1:welcome:0" in listed.out and "sending" in listed.out
    run = retain("outbox", "deliver")
    assert run.code == 0, run.err
    # the dead run's emails may have gone: unknown, never sent again; the good webhook went, the 400 failed
    assert "unknown 3" in run.out and "delivered 1" in run.out and "failed 1" in run.out
    assert "retain outbox list --state unknown,failed" in run.out
    assert world.smtp.messages == []
    touches = world.touches()
    assert [touches[f"onboarding:{i}:welcome:0"].status for i in (1, 2, 3)] == ["unknown"] * 3

    listed = retain("outbox", "list", "--state", "unknown")
    assert listed.code == 0, listed.err
    assert listed.out.count("unknown") >= 3 and "retain outbox resolve KEY" in listed.out
    assert all(len(line) <= 80 for line in listed.out.splitlines()), listed.out

    assert retain("outbox", "resolve", "onboarding:1:welcome:0", "--resend", "--by", "dana").code == 0
    assert retain("outbox", "resolve", "onboarding:2:welcome:0", "--delivered", "--note", "in her inbox").code == 0
    dropped = retain("outbox", "resolve", "onboarding:3:welcome:0", "--drop", "--by", "sam")
    assert dropped.code == 0, dropped.err
    assert dropped.out.strip() == "onboarding:3:welcome:0: dropped"
    touches = world.touches()
    assert touches["onboarding:1:welcome:0"].status == "pending"
    assert touches["onboarding:2:welcome:0"].status == "delivered"
    assert touches["onboarding:2:welcome:0"].reason == "resolved by ops-bot: marked delivered (in her inbox)"
    assert touches["onboarding:3:welcome:0"].status == "dropped"
    resolved = [e for e in world.timeline() if e.kind == "resolved"]
    assert [(e.detail["by"], e.detail["decision"]) for e in resolved] == [
        ("dana", "resend"),
        ("ops-bot", "delivered"),
        ("sam", "drop"),
    ]
    assert resolved[0].summary == "welcome: email touch onboarding:1:welcome:0 resolved by dana: to be sent again"

    run = retain("outbox", "deliver")
    assert run.code == 0, run.err
    assert "delivered 1" in run.out
    assert [m.message["X-Retain-Key"] for m in world.smtp.messages] == ["onboarding:1:welcome:0"]
    again = retain("outbox", "resolve", "onboarding:1:welcome:0", "--drop")
    assert again.code == 1
    assert "touch onboarding:1:welcome:0 is delivered: only unknown touches are resolved" in again.err


def test_a_failed_touch_is_retried_once_its_cause_is_fixed(retain: Retain, world: World) -> None:
    assert retain("outbox", "deliver").code == 0
    failed = world.touches()["renewal:4:notify:0"]
    assert failed.status == "failed" and "HTTP 400" in failed.reason
    listed = retain("outbox", "list", "--state", "failed", "--format", "json")
    document = json.loads(listed.out)
    assert [(t["key"], t["state"], t["account"]) for t in document["touches"]] == [
        ("renewal:4:notify:0", "failed", "acme")
    ]
    assert document["touches"][0]["age_seconds"] >= 3 * 3600
    # not retried by itself
    assert "failed" not in retain("outbox", "deliver").out
    assert len([r for r in world.http.requests if r.path == "/refuses"]) == 1

    world.http.respond = lambda request: (200, {}, {"ok": True})  # the receiver is fixed
    run = retain("outbox", "retry", "renewal:4:notify:0", "--by", "lee")
    assert run.code == 0, run.err
    assert "renewal:4:notify:0: pending again" in run.out
    retried = world.touches()["renewal:4:notify:0"]
    assert (retried.status, retried.attempts) == ("pending", 0)
    [event] = [e for e in world.timeline() if e.kind == "retried"]
    assert event.detail["by"] == "lee" and "HTTP 400" in event.detail["reason"]
    assert "delivered 1" in retain("outbox", "deliver").out
    assert world.touches()["renewal:4:notify:0"].status == "delivered"
    assert retain("outbox", "retry", "--all").out.strip() == "no failed touches to retry"


def test_list_filters_by_state_channel_playbook_account_and_age(retain: Retain) -> None:
    def keys(*args: str) -> list[str]:
        run = retain("outbox", "list", "--format", "json", *args)
        assert run.code == 0, run.err
        return [t["key"] for t in json.loads(run.out)["touches"]]

    everything = keys("--state", "all")
    assert len(everything) == 5
    assert keys("--channel", "webhook") == ["renewal:4:notify:0", "renewal:5:notify:0"]
    assert keys("--playbook", "onboarding", "--account", "globex") == [
        "onboarding:2:welcome:0",
        "onboarding:3:welcome:0",
    ]
    assert keys("--older-than", "2 hours") == everything
    assert keys("--older-than", "4 hours") == []
    assert keys("--state", "sending", "--state", "pending") == everything
    assert keys("--state", "delivered") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--state", "lost"], "unknown state 'lost'"),
        (["list", "--older-than", "soon"], "--older-than"),
        (["resolve", "onboarding:1:welcome:0"], "give exactly one of --delivered, --resend, --drop"),
        (["resolve", "onboarding:1:welcome:0", "--drop", "--resend"], "give exactly one of"),
        (["resolve", "nope:1", "--drop"], "no touch 'nope:1'"),
        (["resolve", "onboarding:1:welcome:0", "--drop"], "is sending: only unknown touches are resolved"),
        (["retry"], "name the touches to retry, or give --all"),
        (["retry", "renewal:5:notify:0"], "only failed touches are retried: renewal:5:notify:0 is pending"),
    ],
)
def test_mistakes_are_messages_not_tracebacks(retain: Retain, world: World, args: list[str], message: str) -> None:
    before = {k: r.status for k, r in world.touches().items()}
    run = retain("outbox", *args)
    assert run.code in (1, 2)
    assert message in run.err
    assert "Traceback" not in run.out + run.err
    assert {k: r.status for k, r in world.touches().items()} == before


def test_the_table_is_readable_at_80_columns(retain: Retain, world: World) -> None:
    engine = make_engine(world.url)
    with engine.begin() as conn:
        conn.execute(
            update(Touch.__table__).values(  # type: ignore[attr-defined]
                reason="will retry: webhook POST http://127.0.0.1: HTTP 503 Service Unavailable: " + "x" * 120
            )
        )
    engine.dispose()
    run = retain("outbox", "list", "--state", "all")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    for key in world.touches():
        assert key in run.out.replace("\n", "") or key.split(":")[0] in run.out
    assert lines[-1] == "5 touches"


def test_a_broken_playbook_holds_up_no_touches(retain: Retain, world: World, tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "farewell.yaml").write_text("playbook: farewell\nname: Farewell\nsteps:\n  - id: x\n    kind: emial\n")
    run = retain("--playbooks-dir", str(folder), "outbox", "deliver")
    assert run.code == 0, run.err
    assert "farewell.yaml" in run.err and "Traceback" not in run.out + run.err
    assert "delivered 1" in run.out  # the webhook that the receiver accepts
    assert world.touches()["renewal:5:notify:0"].status == "delivered"
