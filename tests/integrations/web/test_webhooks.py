"""Provider events and inbound replies through the ASGI app, about emails a playbook sent over a
real SMTP server (aiosmtpd) to contacts brought in by ``retain contacts import``: the generic JSON
shape (HMAC) and SendGrid's Event Webhook (ECDSA), recorded once on the touch, read by ``branch``
and ``wait_for``; a hard bounce or a complaint suppresses the address; forged, altered, stale and
replayed requests change nothing."""

from __future__ import annotations

import base64
import json
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from integrations.channels import build_channels
from integrations.channels import sign as retain_sign
from models import InboundMessage, ProviderEvent, Settings, Suppression, Touch
from playbooks import compile_source

from ._book import book, contact, timeline
from .conftest import T0, Client, Clock, make_client

SECRET = "events-webhook-secret"
INBOUND = "inbound-webhook-secret"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()

PLAYBOOK = compile_source(
    textwrap.dedent(
        """
        playbook: follow_up
        name: Follow up
        lifecycle: check_in
        audience: account.status == "active"
        steps:
          - id: first
            kind: email
            subject: "Your workspace"
            body: "Hi {{ contact.first_name }}, have a look."
          - id: pause
            kind: wait
            for: 1 day
          - id: check
            kind: branch
            if: touches("first").clicked
            then: thanks
            else: nudge
          - id: nudge
            kind: email
            subject: "Did you see it?"
            body: "Hi {{ contact.first_name }}, in case you missed it."
          - id: stop
            kind: exit
          - id: thanks
            kind: email
            subject: "Glad you looked"
            body: "Hi {{ contact.first_name }}, thanks for looking."
        """
    ),
    "follow_up.yaml",
)


@pytest.fixture
def world(sqlite_engine: Engine, clock: Clock, smtp_server: Any, tmp_path: Path) -> dict[str, Any]:
    """The first email sent to both contacts over SMTP; the app with every webhook configured."""
    book(sqlite_engine, tmp_path)
    settings = Settings(  # type: ignore[call-arg]
        smtp_url=smtp_server.url(query="starttls=false"), email_from="Acme Success <success@acme.example>",
        outbox_dir=tmp_path / "out",
    )  # fmt: skip
    tick(sqlite_engine, PLAYBOOK, T0, channels=build_channels(settings), window=None)
    ids = {m.rcpt_tos[0]: m.message["Message-ID"] for m in smtp_server.sink.messages}
    client = make_client(
        sqlite_engine, clock, events_webhook_secret=SECRET, sendgrid_verification_key=SENDGRID_PUBLIC,
        inbound_webhook_secret=INBOUND,
    )  # fmt: skip
    return {"ids": ids, "client": client, "settings": settings}


def _generic(client: Client, clock: Clock, body: Any, *, secret: str = SECRET, at: float | None = None) -> Any:
    raw = json.dumps(body).encode()
    stamp = str(int(at if at is not None else clock.now().timestamp()))
    headers = {"X-Retain-Timestamp": stamp, "X-Retain-Signature": retain_sign(secret, stamp, raw),
               "Content-Type": "application/json"}  # fmt: skip
    return client.post("/webhooks/events", content=raw, headers=headers)


def _touch(engine: Engine, email: str, step: str = "first") -> Touch:
    with engine.connect() as conn:
        row = conn.execute(
            select(Touch).where(Touch.step_id == step, Touch.payload["to"].as_string().contains(email))
        ).one()
    return Touch.model_validate(row._mapping)


def _events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ProviderEvent)).scalar_one())


def test_generic_events_land_on_the_touch_once_and_branch_reads_them(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any]
) -> None:
    client, dana = world["client"], world["ids"]["dana@acme.example"]
    at = (T0 + timedelta(minutes=5)).isoformat()
    body = {"events": [
        {"id": "e1", "type": "delivered", "message_id": dana, "email": "dana@acme.example", "timestamp": at},
        {"id": "e2", "type": "opened", "message_id": dana, "timestamp": at},
        {"id": "e3", "type": "clicked", "message_id": dana, "timestamp": at, "url": "https://acme.example/x"},
    ]}  # fmt: skip
    clock.travel(minutes=10)
    answer = _generic(client, clock, body)
    assert answer.status_code == 200
    assert answer.json() == {
        "received": 3,
        "recorded": 3,
        "repeated": 0,
        "unmatched": 0,
        "suppressed": [],
        "ignored": 0,
    }
    touch = _touch(sqlite_engine, "dana@acme.example")
    assert touch.clicked_at == touch.opened_at == T0 + timedelta(minutes=5)

    again = _generic(client, clock, body)  # the provider retries the same delivery
    assert again.json()["repeated"] == 3 and again.json()["recorded"] == 0
    assert _events(sqlite_engine) == 3

    channels = build_channels(world["settings"])
    tick(sqlite_engine, PLAYBOOK, T0 + timedelta(days=2), channels=channels, window=None)
    with sqlite_engine.connect() as conn:
        steps = dict(
            conn.execute(
                select(Touch.step_id, func.count()).where(Touch.step_id != "first").group_by(Touch.step_id)
            ).all()
        )
    assert steps == {"thanks": 1, "nudge": 1}  # Dana clicked; Jo did not


def test_a_hard_bounce_or_a_complaint_suppresses_the_address_and_a_soft_bounce_does_not(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any]
) -> None:
    client, ids = world["client"], world["ids"]
    stamp = T0.isoformat()
    soft = {"id": "b0", "type": "bounced", "bounce": "soft", "message_id": ids["dana@acme.example"],
            "email": "dana@acme.example", "timestamp": stamp, "reason": "452 mailbox full"}  # fmt: skip
    assert _generic(client, clock, soft).json()["suppressed"] == []
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed is False
    hard = {"id": "b1", "type": "bounced", "bounce": "hard", "message_id": ids["dana@acme.example"],
            "email": "dana@acme.example", "timestamp": stamp, "reason": "550 no such user"}  # fmt: skip
    spam = {"id": "c1", "type": "complained", "email": "Jo@Kraft.example", "timestamp": stamp}
    answer = _generic(client, clock, [hard, spam])
    assert answer.json()["suppressed"] == ["dana@acme.example", "jo@kraft.example"]
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed is True
    assert contact(sqlite_engine, "jo@kraft.example").unsubscribed is True
    with sqlite_engine.connect() as conn:
        sources = dict(conn.execute(select(Suppression.email, Suppression.source)).all())
    assert sources == {"dana@acme.example": "bounce", "jo@kraft.example": "complaint"}
    assert _touch(sqlite_engine, "dana@acme.example").bounced_at == T0
    assert "first to dana@acme.example bounced (hard): 550 no such user (generic)" in timeline(sqlite_engine, "bounced")
    assert "contact dana@acme.example unsubscribed from everything (hard bounce: 550 no such user)" in timeline(
        sqlite_engine, "unsubscribed"
    )

    tick(sqlite_engine, PLAYBOOK, T0 + timedelta(days=2), channels=build_channels(world["settings"]), window=None)
    nudge = _touch(sqlite_engine, "dana@acme.example", "nudge")
    assert nudge.status == "suppressed" and "unsubscribed from everything" in (nudge.reason or "")


@pytest.mark.parametrize(
    "forgery",
    [
        "no signature",
        "another secret",
        "altered body",
        "stale",
        "from the future",
        "bad timestamp",
        "not json",
        "bad shape",
    ],
)
def test_forged_altered_stale_or_malformed_generic_requests_change_nothing(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any], forgery: str
) -> None:
    client = world["client"]
    event = {"id": "x1", "type": "complained", "email": "dana@acme.example", "timestamp": T0.isoformat()}
    raw = json.dumps(event).encode()
    stamp = str(int(clock.now().timestamp()))
    good = retain_sign(SECRET, stamp, raw)
    headers = {"X-Retain-Timestamp": stamp, "X-Retain-Signature": good}
    expected = 401
    if forgery == "no signature":
        del headers["X-Retain-Signature"]
    elif forgery == "another secret":
        headers["X-Retain-Signature"] = retain_sign("guessed", stamp, raw)
    elif forgery == "altered body":
        raw = raw.replace(b"complained", b"delivered")
    elif forgery in ("stale", "from the future"):
        moved = str(int(clock.now().timestamp()) + (-301 if forgery == "stale" else 301))
        headers = {"X-Retain-Timestamp": moved, "X-Retain-Signature": retain_sign(SECRET, moved, raw)}
    elif forgery == "bad timestamp":
        headers["X-Retain-Timestamp"] = "yesterday"
    elif forgery in ("not json", "bad shape"):
        raw = b"{not json" if forgery == "not json" else json.dumps([{"id": "", "type": "exploded"}]).encode()
        headers["X-Retain-Signature"] = retain_sign(SECRET, stamp, raw)
        expected = 400
    answer = client.post("/webhooks/events", content=raw, headers=headers)
    assert answer.status_code == expected, answer.text
    assert _events(sqlite_engine) == 0 and contact(sqlite_engine, "dana@acme.example").unsubscribed is False
    if forgery == "bad shape":
        assert answer.json()["problems"] == [
            "events[0].id: String should have at least 1 character",
            "events[0].type: Input should be 'delivered', 'opened', 'clicked', 'bounced', 'complained', 'replied' or 'unsubscribed'",
            "events[0].timestamp: Field required",
        ]


def test_an_unconfigured_webhook_says_which_setting_it_needs(sqlite_engine: Engine, clock: Clock) -> None:
    client = make_client(sqlite_engine, clock)
    for path, name in [("/webhooks/events", "RETAIN_EVENTS_WEBHOOK_SECRET"),
                       ("/webhooks/sendgrid", "RETAIN_SENDGRID_VERIFICATION_KEY"),
                       ("/webhooks/inbound", "RETAIN_INBOUND_WEBHOOK_SECRET")]:  # fmt: skip
        answer = client.post(path, content=b"[]")
        assert answer.status_code == 503 and name in answer.json()["error"]


def _sendgrid(client: Client, clock: Clock, events: list[dict[str, Any]], *, key: Any = SENDGRID_KEY) -> Any:
    raw = json.dumps(events).encode()
    stamp = str(int(clock.now().timestamp()))
    signature = base64.b64encode(key.sign(stamp.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()
    headers = {"X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
               "Content-Type": "application/json"}  # fmt: skip
    return client.post("/webhooks/sendgrid", content=raw, headers=headers)


def test_sendgrid_s_event_webhook_verified_by_its_signature(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any]
) -> None:
    client, ids = world["client"], world["ids"]
    when = int(T0.timestamp()) + 60
    events = [
        {"email": "dana@acme.example", "timestamp": when, "smtp-id": ids["dana@acme.example"], "event": "processed",
         "sg_event_id": "sg0", "sg_message_id": "m1"},
        {"email": "dana@acme.example", "timestamp": when, "smtp-id": ids["dana@acme.example"], "event": "delivered",
         "sg_event_id": "sg1", "response": "250 OK"},
        {"email": "dana@acme.example", "timestamp": when + 60, "event": "open", "sg_event_id": "sg2",
         "smtp-id": ids["dana@acme.example"]},
        {"email": "jo@kraft.example", "timestamp": when, "smtp-id": ids["jo@kraft.example"], "event": "bounce",
         "type": "bounce", "sg_event_id": "sg3", "reason": "550 5.1.1 unknown user", "status": "5.1.1"},
    ]  # fmt: skip
    clock.travel(minutes=10)
    answer = _sendgrid(client, clock, events)
    assert answer.status_code == 200
    assert answer.json() == {"received": 3, "recorded": 3, "repeated": 0, "unmatched": 0,
                             "suppressed": ["jo@kraft.example"], "ignored": 1}  # fmt: skip
    assert _touch(sqlite_engine, "dana@acme.example").opened_at == T0 + timedelta(minutes=2)
    assert contact(sqlite_engine, "jo@kraft.example").unsubscribed is True

    clock.travel(minutes=1)
    assert _sendgrid(client, clock, events).json()["repeated"] == 3  # replayed, freshly signed: nothing changes

    other = ec.generate_private_key(ec.SECP256R1())
    spam = [{"email": "dana@acme.example", "timestamp": when, "event": "spamreport", "sg_event_id": "sg9"}]
    assert _sendgrid(client, clock, spam, key=other).status_code == 401  # forged
    stale = clock.now().timestamp() - 600
    raw = json.dumps(spam).encode()
    old = str(int(stale))
    signature = base64.b64encode(SENDGRID_KEY.sign(old.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()
    replay = client.post("/webhooks/sendgrid", content=raw, headers={
        "X-Twilio-Email-Event-Webhook-Signature": signature, "X-Twilio-Email-Event-Webhook-Timestamp": old})  # fmt: skip
    assert replay.status_code == 401 and "replay" in replay.json()["error"]
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed is False
    assert _events(sqlite_engine) == 3


def _reply_headers(answers: str) -> str:
    return (
        "From: Dana Buyer <dana@acme.example>\r\nTo: success@acme.example\r\nSubject: Re: Your workspace\r\n"
        f"Message-ID: <reply-1@acme.example>\r\nIn-Reply-To: {answers}\r\nReferences: {answers}\r\n"
    )


def test_an_inbound_reply_is_matched_to_its_touch_once(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any]
) -> None:
    client, ids = world["client"], world["ids"]
    form = {
        "headers": _reply_headers(ids["dana@acme.example"]),
        "text": "Thanks, looks good!",
        "from": "dana@acme.example",
    }
    auth = ("sendgrid", INBOUND)
    assert client.post("/webhooks/inbound", files={}, data=form).status_code == 401
    refused = client.post("/webhooks/inbound", data=form, auth=("sendgrid", "guess"))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Basic realm="retain"'
    assert _touch(sqlite_engine, "dana@acme.example").replied_at is None

    answer = client.post("/webhooks/inbound", data=form, files={"attachment1": ("a.txt", b"hi")}, auth=auth)
    assert answer.status_code == 200 and answer.json()["replies"] == 1
    assert _touch(sqlite_engine, "dana@acme.example").replied_at == T0
    again = client.post("/webhooks/inbound", data=form, files={"attachment1": ("a.txt", b"hi")}, auth=auth)
    assert again.json()["already"] == 1 and again.json()["replies"] == 0
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(InboundMessage)).scalar_one() == 1

    stranger = {"headers": _reply_headers("<unknown@elsewhere.example>").replace("reply-1", "reply-2")}
    assert client.post("/webhooks/inbound", data=stranger, auth=auth).json()["unknown"] == 1
    assert client.post("/webhooks/inbound", data={"text": "no headers"}, auth=auth).status_code == 400


WAITING = compile_source(
    textwrap.dedent(
        """
        playbook: until_opened
        name: Until opened
        lifecycle: check_in
        audience: account.external_id == "acme"
        steps:
          - id: first
            kind: email
            subject: "Your workspace"
            body: "Hi {{ contact.first_name }}, have a look."
          - id: opened
            kind: wait_for
            condition: touches("first").opened
            timeout: 7 days
            on_timeout: stop
            check_every: 1 hour
          - id: next_tip
            kind: email
            subject: "A next tip"
            body: "Hi {{ contact.first_name }}, since you had a look: a tip."
          - id: stop
            kind: exit
        """
    ),
    "until_opened.yaml",
)


def test_wait_for_moves_on_when_the_provider_reports_an_open(
    sqlite_engine: Engine, clock: Clock, smtp_server: Any, tmp_path: Path
) -> None:
    book(sqlite_engine, tmp_path)
    settings = Settings(  # type: ignore[call-arg]
        smtp_url=smtp_server.url(query="starttls=false"), email_from="Acme Success <success@acme.example>",
        outbox_dir=tmp_path / "out",
    )  # fmt: skip
    tick(sqlite_engine, WAITING, T0, channels=build_channels(settings), window=None)
    [sent] = smtp_server.sink.messages
    tick(sqlite_engine, WAITING, T0 + timedelta(hours=2), channels=build_channels(settings), window=None)
    assert len(smtp_server.sink.messages) == 1  # still waiting

    client = make_client(sqlite_engine, clock, events_webhook_secret=SECRET)
    clock.travel(hours=3)
    opened = {
        "id": "o1",
        "type": "opened",
        "message_id": sent.message["Message-ID"],
        "timestamp": clock.now().isoformat(),
    }
    assert _generic(client, clock, opened).json()["recorded"] == 1
    tick(sqlite_engine, WAITING, T0 + timedelta(hours=4), channels=build_channels(settings), window=None)
    assert [m.message["Subject"] for m in smtp_server.sink.messages] == ["Your workspace", "A next tip"]


def test_the_same_events_delivered_twice_at_once_are_kept_once_on_postgresql(
    pg_clean: Engine, clock: Clock, tmp_path: Path
) -> None:
    """Two deliveries of one batch racing on PostgreSQL (a provider retrying while the first is in
    flight, two web workers): the events are kept once; the loser is told to retry (503) or finds
    them repeated, and a retry changes nothing."""
    from concurrent.futures import ThreadPoolExecutor

    book(pg_clean, tmp_path)
    client = make_client(pg_clean, clock, events_webhook_secret=SECRET)
    body = [{"id": f"race-{n}", "type": "bounced", "bounce": "hard", "email": "dana@acme.example",
             "timestamp": T0.isoformat()} for n in range(200)]  # fmt: skip
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _generic(client, clock, body), range(2)))
    assert sorted(a.status_code for a in answers) in ([200, 200], [200, 503])
    recorded = sum(a.json().get("recorded", 0) for a in answers)
    assert recorded == 200
    assert _events(pg_clean) == 200
    retry = _generic(client, clock, body)
    assert retry.json()["repeated"] == 200 and _events(pg_clean) == 200
    assert contact(pg_clean, "dana@acme.example").unsubscribed is True
    assert len(timeline(pg_clean, "unsubscribed")) == 1


def test_the_provider_s_own_unsubscribe_link_unsubscribes_from_emails(
    sqlite_engine: Engine, clock: Clock, world: dict[str, Any]
) -> None:
    client, ids = world["client"], world["ids"]
    events = [{"email": "dana@acme.example", "timestamp": int(T0.timestamp()), "event": "unsubscribe",
               "sg_event_id": "u1", "smtp-id": ids["dana@acme.example"]}]  # fmt: skip
    assert _sendgrid(client, clock, events).json()["suppressed"] == ["dana@acme.example"]
    dana = contact(sqlite_engine, "dana@acme.example")
    assert (dana.unsubscribed, dana.unsubscribed_channels) == (False, ["email"])
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(Suppression.source, Suppression.reason)).one() == (
            "link",
            "through the email provider's unsubscribe link",
        )
