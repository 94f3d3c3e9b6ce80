"""Webhooks of email providers: their events about the messages Retain sent, and the replies
their inbound parse receives.

``POST /webhooks/events``: Retain's generic JSON shape, for any provider (or a small relay in
front of one), signed like Retain's own webhooks: ``X-Retain-Timestamp`` (Unix seconds) and
``X-Retain-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`` with
``RETAIN_EVENTS_WEBHOOK_SECRET``. The body is one event, a list of them, or ``{"events": [...]}``;
an event::

    {"id": "evt_123",                       # unique per provider: a repeat changes nothing
     "type": "delivered|opened|clicked|bounced|complained|replied|unsubscribed",
     "timestamp": "2027-03-02T15:00:00Z",   # or Unix seconds
     "message_id": "<…@acme.com>",          # the Message-ID of the email (or "touch": its key)
     "email": "dana@acme.com",
     "bounce": "hard|soft",                 # bounced only: hard suppresses the address
     "reason": "550 mailbox unavailable", "url": "https://…"}   # optional

``POST /webhooks/sendgrid``: SendGrid's Event Webhook as SendGrid sends it, verified with its
signed event webhook (ECDSA P-256 over timestamp + body; ``RETAIN_SENDGRID_VERIFICATION_KEY`` is
the public key SendGrid shows): delivered, open, click, bounce (``type: bounce`` is hard,
``blocked`` soft), spamreport, unsubscribe and group_unsubscribe; other events are acknowledged and
ignored.

``POST /webhooks/inbound``: an inbound-parse webhook (SendGrid's Inbound Parse: multipart form with
``headers``, or ``email`` with the raw message), behind HTTP basic auth (any user, the password
``RETAIN_INBOUND_WEBHOOK_SECRET``): a reply is matched to its touch by ``In-Reply-To``/``References``
and recorded as ``retain replies poll`` records one from a mailbox.

A request older than five minutes (by its signed timestamp) is refused as a replay; an event or a
message already kept is acknowledged and changes nothing. Refusals are JSON with a status that
says why: 401 (no or wrong signature), 400 (not the documented shape: every problem named), 503
(the webhook's secret is not configured).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from integrations.channels import verify as verify_retain_signature
from integrations.sources import (
    ProviderEventRecord,
    land_provider_events,
    read_answer,
    record_inbound,
    team_addresses,
    write_all_or_nothing,
)
from integrations.web._state import Web, WebState
from models import RetainError

__all__ = ["REPLAY_WINDOW", "router"]

router = APIRouter(prefix="/webhooks")

#: seconds a signed request stays acceptable (a provider's clock may differ a little)
REPLAY_WINDOW = 300


class _Refused(Exception):
    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.problems = status, problems or []


def _answer(exc: _Refused) -> Response:
    body: dict[str, Any] = {"error": str(exc)}
    if exc.problems:
        body["problems"] = exc.problems
    headers = {"WWW-Authenticate": 'Basic realm="retain"'} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _Refused(400, f"the body is not JSON: {exc}") from None


def _recent(web: Web, timestamp: str | None) -> None:
    try:
        at = float(timestamp or "")
    except ValueError:
        raise _Refused(401, "the timestamp header is missing or not Unix seconds") from None
    if abs(web.now().timestamp() - at) > REPLAY_WINDOW:
        raise _Refused(401, f"the request is older than {REPLAY_WINDOW} s (or its clock is off): refused as a replay")


def _landed(web: Web, events: list[ProviderEventRecord], ignored: int = 0) -> Response:
    try:
        result = land_provider_events(web.engine, events, now=web.now())
    except RetainError as exc:  # another delivery of the same events at the same moment: retry later
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "30"})
    return JSONResponse({**result.counts(), "ignored": ignored})


# --- the generic shape ---------------------------------------------------------------------------


class _GenericEvent(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    id: str = Field(min_length=1, max_length=200)
    type: Literal["delivered", "opened", "clicked", "bounced", "complained", "replied", "unsubscribed"]
    timestamp: datetime
    message_id: str | None = Field(default=None, max_length=300)
    touch: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    bounce: Literal["hard", "soft"] | None = None
    reason: str | None = Field(default=None, max_length=1000)
    url: str | None = Field(default=None, max_length=2000)

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _problems(exc: ValidationError, where: str) -> list[str]:
    return [f"{where}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


def generic_events(data: Any) -> list[ProviderEventRecord]:
    """The records of a generic body; :class:`_Refused` naming every problem, all or nothing."""
    items = data.get("events") if isinstance(data, dict) and "events" in data else data
    items = items if isinstance(items, list) else [items]
    records, problems = [], []
    for i, item in enumerate(items):
        try:
            event = _GenericEvent.model_validate(item)
        except ValidationError as exc:
            problems.extend(_problems(exc, f"events[{i}]"))
            continue
        if event.message_id is None and event.touch is None and event.email is None:
            problems.append(f"events[{i}]: name the message (message_id or touch) or the address (email)")
            continue
        detail = {k: v for k, v in {"reason": event.reason, "url": event.url}.items() if v}
        records.append(
            ProviderEventRecord(
                "generic",
                event.id,
                event.type,
                event.timestamp,
                message_id=event.message_id,
                touch_key=event.touch,
                email=event.email.lower() if event.email else None,
                bounce=event.bounce if event.type == "bounced" else None,
                detail=detail,
            )
        )
    if problems:
        raise _Refused(400, "the events are not in the documented shape: nothing was recorded", problems)
    return records


@router.post("/events")
async def generic(request: Request, web: WebState) -> Response:
    body = await request.body()
    secret = web.settings.events_webhook_secret
    try:
        if secret is None:
            raise _Refused(503, "this webhook is not configured: set RETAIN_EVENTS_WEBHOOK_SECRET")
        timestamp = request.headers.get("x-retain-timestamp")
        _recent(web, timestamp)
        signature = request.headers.get("x-retain-signature", "")
        if not verify_retain_signature(
            secret.get_secret_value(), timestamp or "", body, signature, tolerance=REPLAY_WINDOW,
            now=web.now().timestamp(),
        ):  # fmt: skip
            raise _Refused(401, "the signature does not match the body (X-Retain-Signature: v1=<hex>)")
        events = generic_events(_json(body))
    except _Refused as exc:
        return _answer(exc)
    return await _run(_landed, web, events)


async def _run(function: Any, *args: Any) -> Response:
    """The database work of a route, in the thread pool (the event loop keeps serving)."""
    result: Response = await run_in_threadpool(function, *args)
    return result


# --- SendGrid --------------------------------------------------------------------------------------

_SENDGRID_KINDS = {"delivered": "delivered", "open": "opened", "click": "clicked", "bounce": "bounced",
                   "spamreport": "complained", "unsubscribe": "unsubscribed",
                   "group_unsubscribe": "unsubscribed"}  # fmt: skip


def _sendgrid_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        raw = text.strip()
        key = (
            serialization.load_pem_public_key(raw.encode())
            if raw.startswith("-----")
            else serialization.load_der_public_key(base64.b64decode(raw))
        )
    except (ValueError, binascii.Error) as exc:
        raise _Refused(503, f"RETAIN_SENDGRID_VERIFICATION_KEY is not a public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _Refused(503, "RETAIN_SENDGRID_VERIFICATION_KEY is not an ECDSA public key")
    return key


def sendgrid_events(data: Any) -> tuple[list[ProviderEventRecord], int]:
    """The records of a SendGrid Event Webhook body (a JSON array), and how many were ignored."""
    if not isinstance(data, list):
        raise _Refused(400, "SendGrid posts a JSON array of events")
    records, problems, ignored = [], [], 0
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            problems.append(f"[{i}]: not an event (an object with 'event')")
            continue
        kind = _SENDGRID_KINDS.get(item["event"])
        if kind is None:
            ignored += 1
            continue
        event_id, stamp = item.get("sg_event_id"), item.get("timestamp")
        if not isinstance(event_id, str) or not event_id or not isinstance(stamp, int | float):
            problems.append(f"[{i}]: an event needs sg_event_id (text) and timestamp (Unix seconds)")
            continue
        email = item.get("email")
        bounce = None
        if kind == "bounced":
            bounce = "soft" if item.get("type") == "blocked" else "hard"
        detail = {k: str(item[k])[:1000] for k in ("reason", "url", "status") if item.get(k)}
        detail["sendgrid_event"] = item["event"]
        records.append(
            ProviderEventRecord(
                "sendgrid",
                event_id[:200],
                kind,
                datetime.fromtimestamp(stamp, UTC),
                message_id=str(item["smtp-id"])[:300] if item.get("smtp-id") else None,
                email=email.strip().lower()[:320] if isinstance(email, str) else None,
                bounce=bounce,
                detail=detail,
            )
        )
    if problems:
        raise _Refused(400, "the events are not SendGrid's shape: nothing was recorded", problems)
    return records, ignored


@router.post("/sendgrid")
async def sendgrid(request: Request, web: WebState) -> Response:
    body = await request.body()
    try:
        if not web.settings.sendgrid_verification_key:
            raise _Refused(503, "this webhook is not configured: set RETAIN_SENDGRID_VERIFICATION_KEY")
        key = _sendgrid_key(web.settings.sendgrid_verification_key)
        timestamp = request.headers.get("x-twilio-email-event-webhook-timestamp")
        _recent(web, timestamp)
        try:
            signature = base64.b64decode(request.headers.get("x-twilio-email-event-webhook-signature", ""))
            key.verify(signature, (timestamp or "").encode() + body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, binascii.Error, ValueError):
            raise _Refused(401, "the SendGrid signature does not match the body") from None
        events, ignored = sendgrid_events(_json(body))
    except _Refused as exc:
        return _answer(exc)
    return await _run(_landed, web, events, ignored)


# --- inbound parse (replies) -------------------------------------------------------------------------


def _basic_password(request: Request) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(credentials).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return None


def _replies(web: Web, header: bytes) -> Response:
    now = web.now()
    answer = read_answer(0, now, header)
    found: dict[str, int] = {}

    def work(conn: Connection) -> None:
        team = team_addresses(web.settings.email_from)
        found.update(record_inbound(conn, "webhook:inbound", [answer], now, team).counts())

    try:
        write_all_or_nothing(web.engine, "inbound message", work)
    except RetainError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "30"})
    return JSONResponse(found)


@router.post("/inbound")
async def inbound(request: Request, web: WebState) -> Response:
    secret = web.settings.inbound_webhook_secret
    try:
        if secret is None:
            raise _Refused(503, "this webhook is not configured: set RETAIN_INBOUND_WEBHOOK_SECRET")
        password = _basic_password(request)
        if password is None or not hmac.compare_digest(password.encode(), secret.get_secret_value().encode()):
            raise _Refused(401, "basic auth with the inbound webhook's password is required")
        async with request.form(max_files=20, max_fields=200) as form:  # closes uploaded attachments
            raw = form.get("email") or form.get("headers")
        if not isinstance(raw, str) or not raw.strip():
            raise _Refused(400, "the form has neither 'headers' nor 'email' (SendGrid Inbound Parse's fields)")
    except _Refused as exc:
        return _answer(exc)
    header = raw.encode("utf-8", "replace").split(b"\r\n\r\n")[0].split(b"\n\n")[0]
    return await _run(_replies, web, header)
