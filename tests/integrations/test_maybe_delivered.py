"""Conformance over every registered channel: a request whose answer comes too late is never
retried by a channel whose receiver cannot drop a repeat.

The receivers are real and local: an HTTP server (Slack as webhook and as bot, the CRM, webhooks)
that holds the answer of the request that creates something past the channel's timeout, and an
aiosmtpd server that accepts the message's DATA and then stalls before its reply. Each touch goes
through the outbox. Where the receiver cannot drop a repeat (email, Slack, CRM) the touch becomes
``unknown`` and the receiver got exactly one request; where it can (webhooks, the file channel)
the touch is sent again with the same key until it is delivered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import DeliveryPolicy, deliver
from integrations.channels.base import Channel, Delivery
from integrations.channels.crm import CrmTaskChannel
from integrations.channels.email import SmtpEmailChannel
from integrations.channels.file import FileChannel
from integrations.channels.registry import CHANNEL_NAMES, build_channel
from integrations.channels.slack import SlackChannel
from integrations.channels.webhook import WebhookChannel
from models import Account, MaybeDeliveredError, RetryableError, Settings, TimelineEvent, Touch

from .conftest import HttpServer, Request, SmtpSink, free_port

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 0.4  # the channels' own timeout, seconds
LATE = 1.2  # how long a receiver holds its answer: past the timeout
POLICY = DeliveryPolicy(backoff_base=0.01)


def quick_client() -> httpx.AsyncClient:
    """A short timeout; no connection kept between requests (each delivery run has its own loop)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT), limits=httpx.Limits(max_keepalive_connections=0))


# --- the late receivers ---------------------------------------------------------------------------


class LateSmtpSink(SmtpSink):
    """Takes the whole message and queues it, then waits ``stall`` seconds before answering DATA
    (a server that delivers what it got, though the sender stopped waiting for the reply)."""

    stall: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(self.stall)
        return reply


@dataclass
class Late:
    """The receivers, and which paths answer late (the requests that create something)."""

    http: HttpServer
    smtp: LateSmtpSink
    smtp_port: int
    late_paths: set[str]

    def creating(self, path: str) -> list[Request]:
        return [r for r in self.http.requests if r.path == path]


def _answer(late_paths: set[str]) -> Callable[[Request], tuple[int, dict[str, str], Any]]:
    def respond(request: Request) -> tuple[int, dict[str, str], Any]:
        if request.path in late_paths:
            time.sleep(LATE)  # the handler thread holds the answer; the sender has given up
        if request.path.endswith("/companies/search"):
            return 200, {}, {"total": 1, "results": [{"id": "512"}]}
        if request.path.endswith("/objects/tasks"):
            return 201, {}, {"id": "9001"}
        if request.path.endswith("/chat.postMessage"):
            return 200, {}, {"ok": True, "channel": "C1", "ts": "1.2"}
        if request.path.endswith("/users.lookupByEmail"):
            return 200, {}, {"ok": True, "user": {"id": "U1"}}
        return 200, {}, "ok"

    return respond


@pytest.fixture
def late(http_server: HttpServer) -> Iterator[Late]:
    paths = {"/slack-hook", "/slack/chat.postMessage", "/crm/v3/objects/tasks", "/hook"}
    http_server.respond = _answer(paths)
    sink = LateSmtpSink()
    sink.stall = LATE
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, ready_timeout=5)
    controller.start()
    yield Late(http_server, sink, port, paths)
    controller.stop()


# --- one case per way of reaching a receiver ------------------------------------------------------


@dataclass(frozen=True)
class Case:
    channel: str  # the registry's name
    make: Callable[[Late, Path], Channel]
    payload: Callable[[Late], dict[str, Any]]
    creating_path: str | None  # the HTTP path that creates the message (None: SMTP or a file)
    dedupes: bool


CASES = {
    "email": Case(
        "email",
        lambda late, tmp: SmtpEmailChannel(
            f"smtp://127.0.0.1:{late.smtp_port}?starttls=false", sender="Acme <cs@acme.test>", timeout=TIMEOUT
        ),
        lambda late: {"kind": "email", "to": ["Dana <dana@acme.test>"], "subject": "Hello", "text": "Hi Dana"},
        None,
        False,
    ),
    "slack-webhook": Case(
        "slack",
        lambda late, tmp: SlackChannel(webhook_url=f"{late.http.url}/slack-hook", client=quick_client()),
        lambda late: {"kind": "slack", "channel": "#renewals", "text": "Acme renews soon"},
        "/slack-hook",
        False,
    ),
    "slack-bot": Case(
        "slack",
        lambda late, tmp: SlackChannel(bot_token="xoxb-test", api_url=f"{late.http.url}/slack/", client=quick_client()),
        lambda late: {"kind": "slack", "channel": "@dana@acme.test", "text": "Acme renews soon"},
        "/slack/chat.postMessage",
        False,
    ),
    "crm": Case(
        "crm",
        lambda late, tmp: CrmTaskChannel(token="pat-test", base_url=f"{late.http.url}", client=quick_client()),
        lambda late: {"kind": "crm_task", "company": "acme", "title": "Call Acme", "due_at": T0.isoformat()},
        "/crm/v3/objects/tasks",
        False,
    ),
    "webhook": Case(
        "webhook",
        lambda late, tmp: WebhookChannel(signing_secret="s3cret", client=quick_client()),
        lambda late: {"kind": "webhook", "url": f"{late.http.url}/hook", "json": {"event": "hello"}},
        "/hook",
        True,
    ),
    "file": Case(
        "file",
        lambda late, tmp: FileChannel("file", tmp / "outbox"),
        lambda late: {"kind": "file", "text": "hello"},
        None,
        True,
    ),
}


def add_touch(engine: Engine, channel: str, payload: dict[str, Any], key: str = "late:1") -> None:
    with engine.begin() as conn:
        [account_id] = conn.execute(
            insert(Account.__table__).returning(Account.__table__.c.id),  # type: ignore[attr-defined]
            {
                "external_id": "acme",
                "name": "Acme",
                "status": "active",
                "custom": {},
                "created_at": T0,
                "updated_at": T0,
            },
        ).one()
        conn.execute(
            insert(Touch.__table__),  # type: ignore[attr-defined]
            {"key": key, "account_id": account_id, "channel": channel, "payload": payload, "playbook": "late"},
        )


def the_touch(engine: Engine) -> Any:
    t = Touch.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return conn.execute(select(t)).one()


def settle(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for the late receivers to finish what they were holding."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


# --- the conformance ------------------------------------------------------------------------------


def test_every_registered_channel_has_a_case_built_like_the_registry_builds_it(tmp_path: Path, late: Late) -> None:
    """A channel added to the registry without a case here fails this test."""
    assert {case.channel for case in CASES.values()} == set(CHANNEL_NAMES)
    settings = Settings(
        smtp_url=SecretStr(f"smtp://127.0.0.1:{late.smtp_port}?starttls=false"),
        email_from="Acme <cs@acme.test>",
        slack_webhook_url=SecretStr(f"{late.http.url}/slack-hook"),
        crm_token=SecretStr("pat-test"),
        crm_url=late.http.url,
        outbox_dir=tmp_path / "outbox",
    )
    for case in CASES.values():
        built = build_channel(case.channel, settings)
        ours = case.make(late, tmp_path)
        assert type(built) is type(ours), case.channel
        assert built.dedupes_by_key is ours.dedupes_by_key is case.dedupes, case.channel


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.dedupes])
def test_a_late_answer_makes_the_touch_unknown_and_it_is_never_sent_again(
    name: str, late: Late, sqlite_engine: Engine, tmp_path: Path
) -> None:
    case = CASES[name]
    add_touch(sqlite_engine, case.channel, case.payload(late))
    counts = deliver(sqlite_engine, {case.channel: case.make(late, tmp_path)}, as_of=T0, policy=POLICY)
    assert counts == {"unknown": 1}
    touch = the_touch(sqlite_engine)
    assert (touch.status, touch.attempts) == ("unknown", 1)
    assert "may have been delivered" in touch.reason and "cannot drop a repeat" in touch.reason
    tl = TimelineEvent.__table__  # type: ignore[attr-defined]
    with sqlite_engine.connect() as conn:
        [summary] = conn.execute(select(tl.c.summary)).scalars().all()
    assert "unknown" in summary

    # the receiver did get it, once; the outbox never tries it again, however late
    def received() -> int:
        return len(late.smtp.messages) if case.creating_path is None else len(late.creating(case.creating_path))

    settle(lambda: received() >= 1 and (case.creating_path is not None or late.smtp.messages != []))
    assert received() == 1
    assert deliver(sqlite_engine, {case.channel: case.make(late, tmp_path)}, as_of=T0 + timedelta(days=1)) == {}
    time.sleep(LATE / 2)
    assert received() == 1
    assert the_touch(sqlite_engine).status == "unknown"


def test_a_webhook_whose_answer_is_late_is_sent_again_with_the_same_key(
    late: Late, sqlite_engine: Engine, tmp_path: Path
) -> None:
    """The receiver is expected to drop a repeat of the key, so the outbox may try again."""
    case = CASES["webhook"]
    add_touch(sqlite_engine, case.channel, case.payload(late))
    counts = deliver(sqlite_engine, {"webhook": case.make(late, tmp_path)}, as_of=T0, policy=POLICY)
    assert counts == {"retry": 1}
    touch = the_touch(sqlite_engine)
    assert touch.status == "pending" and "will retry" in touch.reason and "ReadTimeout" in touch.reason
    late.late_paths.clear()  # the receiver answers in time again
    later = deliver(sqlite_engine, {"webhook": case.make(late, tmp_path)}, as_of=T0 + timedelta(hours=1), policy=POLICY)
    assert later == {"delivered": 1}
    settle(lambda: len(late.creating("/hook")) == POLICY.attempts_now + 1)
    keys = {r.headers["idempotency-key"] for r in late.creating("/hook")}
    assert keys == {"late:1"} and len(late.creating("/hook")) == POLICY.attempts_now + 1


def test_the_file_channel_drops_a_repeat_of_a_key(tmp_path: Path, late: Late) -> None:
    channel = CASES["file"].make(late, tmp_path)
    assert isinstance(channel, FileChannel)
    delivery = Delivery("late:1", "file", {"kind": "file", "text": "hello"})

    async def twice() -> None:
        await channel.send(delivery)
        await channel.send(delivery)

    asyncio.run(twice())
    lines = channel.path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["late:1"]


# --- what is safe to repeat stays retryable ---------------------------------------------------------


def _error(channel: Channel, delivery: Delivery) -> BaseException:
    async def main() -> BaseException:
        try:
            await channel.send(delivery)
        except Exception as exc:
            return exc
        finally:
            await channel.aclose()
        raise AssertionError("the send did not fail")

    return asyncio.run(main())


def test_lookups_that_time_out_are_retryable_not_maybe_delivered(late: Late) -> None:
    """A search or a lookup creates nothing: losing its answer is worth another attempt."""
    late.late_paths.update({"/slack/users.lookupByEmail", "/crm/v3/objects/companies/search"})
    slack = SlackChannel(bot_token="xoxb-test", api_url=f"{late.http.url}/slack/", client=quick_client())
    error = _error(slack, Delivery("k1", "slack", {"kind": "slack", "channel": "@dana@acme.test", "text": "hi"}))
    assert isinstance(error, RetryableError) and not isinstance(error, MaybeDeliveredError)
    assert "users.lookupByEmail" in str(error)
    crm = CrmTaskChannel(token="pat-test", base_url=late.http.url, client=quick_client())
    error = _error(crm, Delivery("k2", "crm", CASES["crm"].payload(late)))
    assert isinstance(error, RetryableError) and not isinstance(error, MaybeDeliveredError)
    assert "companies/search" in str(error)
    settle(lambda: len(late.http.requests) == 2)
    assert not late.creating("/slack/chat.postMessage") and not late.creating("/crm/v3/objects/tasks")


def test_a_refused_connection_is_retryable_and_a_dropped_answer_is_maybe_delivered(
    late: Late, closed_port: int
) -> None:
    """Nothing left when the connection was refused; a connection closed with no answer after the
    request was sent may have delivered it."""
    refused = SlackChannel(webhook_url=f"http://127.0.0.1:{closed_port}/slack-hook", client=quick_client())
    error = _error(refused, Delivery("k3", "slack", {"kind": "slack", "text": "hi"}))
    assert isinstance(error, RetryableError) and not isinstance(error, MaybeDeliveredError)

    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def read_then_hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()  # the request arrived; no answer

    thread = threading.Thread(target=read_then_hang_up, daemon=True)
    thread.start()
    try:
        hook = f"http://127.0.0.1:{listener.getsockname()[1]}/services/T0/B0/S3CRET"
        slack = SlackChannel(webhook_url=hook, client=quick_client())
        error = _error(slack, Delivery("k4", "slack", {"kind": "slack", "text": "hi"}))
        assert isinstance(error, MaybeDeliveredError)
        assert "S3CRET" not in str(error)
    finally:
        thread.join(5)
        listener.close()
