"""Slack against a real HTTP server on 127.0.0.1 that answers as Slack does: the Web API as a bot
(``chat.postMessage``, ``users.lookupByEmail``) and incoming webhooks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from integrations.channels.base import Delivery, Receipt
from integrations.channels.slack import SlackChannel
from models import ConfigError, IntegrationError, RetryableError

from .conftest import HttpServer, Request

TOKEN = "xoxb-1111-2222-S3CRETtoken"
WEBHOOK_PATH = "/services/T0001/B0002/S3CRETwebhookpath"


def slack_delivery(channel: str = "#renewals", text: str = "Acme renews in 30 days") -> Delivery:
    return Delivery("renewal:7:ping:0:r1", "slack", {"kind": "slack", "channel": channel, "text": text})


def bot(server: HttpServer) -> SlackChannel:
    return SlackChannel(bot_token=TOKEN, api_url=f"{server.url}/api")


def webhook(server: HttpServer) -> SlackChannel:
    return SlackChannel(webhook_url=server.url + WEBHOOK_PATH)


def send(channel: SlackChannel, *deliveries: Delivery) -> list[Receipt]:
    async def main() -> list[Receipt]:
        try:
            return [await channel.send(d) for d in deliveries]
        finally:
            await channel.aclose()

    return asyncio.run(main())


def send_error(channel: SlackChannel, delivery: Delivery) -> IntegrationError:
    with pytest.raises(IntegrationError) as info:
        send(channel, delivery)
    for secret in (TOKEN, "S3CRET"):
        assert secret not in str(info.value)
        assert secret not in str(info.value.response)
    return info.value


def slack_api(request: Request) -> tuple[int, dict[str, str], Any]:
    """Slack's Web API, as far as these tests need it."""
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return 200, {}, {"ok": False, "error": "invalid_auth"}
    if request.path == "/api/users.lookupByEmail":
        email = request.query["email"][0]
        if email == "csm@acme.com":
            return 200, {}, {"ok": True, "user": {"id": "U0CSM", "name": "csm"}}
        return 200, {}, {"ok": False, "error": "users_not_found"}
    if request.path == "/api/chat.postMessage":
        channel = request.json()["channel"]
        if channel == "#nope":
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        return 200, {}, {"ok": True, "channel": "C0RENEW" if channel == "#renewals" else channel, "ts": "1700.0001"}
    return 404, {}, "unknown method"


# --- as a bot ---------------------------------------------------------------------------------


def test_bot_posts_to_a_channel(http_server: HttpServer) -> None:
    http_server.respond = slack_api
    [receipt] = send(bot(http_server), slack_delivery())
    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", "/api/chat.postMessage")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.json() == {"channel": "#renewals", "text": "Acme renews in 30 days"}
    assert receipt == Receipt(provider_id="C0RENEW:1700.0001", detail="ok")


def test_bot_messages_a_person_by_email_looking_them_up_once(http_server: HttpServer) -> None:
    http_server.respond = slack_api
    send(bot(http_server), slack_delivery("@csm@acme.com", "one"), slack_delivery("@csm@acme.com", "two"))
    lookup, first, second = http_server.requests
    assert (lookup.method, lookup.path, lookup.query) == (
        "GET",
        "/api/users.lookupByEmail",
        {"email": ["csm@acme.com"]},
    )
    assert lookup.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.json() == {"channel": "U0CSM", "text": "one"}
    assert second.json() == {"channel": "U0CSM", "text": "two"}


def test_429_with_retry_after_is_retryable_then_the_post_goes_through(http_server: HttpServer) -> None:
    http_server.respond = slack_api
    http_server.queue = [(429, {"Retry-After": "7"}, {"ok": False, "error": "ratelimited"})]
    channel = bot(http_server)
    error = send_error(channel, slack_delivery())
    assert isinstance(error, RetryableError)
    assert (error.retry_after, error.status_code) == (7.0, 429)
    [receipt] = send(channel, slack_delivery())  # the same channel, after aclose, on a new event loop
    assert receipt.provider_id == "C0RENEW:1700.0001"
    assert [r.path for r in http_server.requests] == ["/api/chat.postMessage"] * 2


def test_ratelimited_in_an_ok_false_answer_is_retryable(http_server: HttpServer) -> None:
    http_server.queue = [(200, {"Retry-After": "3"}, {"ok": False, "error": "ratelimited"})]
    error = send_error(bot(http_server), slack_delivery())
    assert isinstance(error, RetryableError)
    assert error.retry_after == 3.0
    assert str(error) == "slack chat.postMessage to #renewals: ratelimited"


@pytest.mark.parametrize(
    ("delivery", "answer", "message"),
    [
        (slack_delivery("#nope"), None, "slack chat.postMessage to #nope: channel_not_found"),
        (
            slack_delivery("@who@acme.com"),
            None,
            "slack users.lookupByEmail for who@acme.com: no Slack user has this email (users_not_found)",
        ),
        (
            slack_delivery(),
            {"ok": False, "error": "missing_scope", "needed": "chat:write", "provided": "users:read"},
            "slack chat.postMessage to #renewals: missing_scope (needs the chat:write scope)",
        ),
        (slack_delivery(), {"ok": False, "error": "invalid_auth"}, "slack chat.postMessage to #renewals: invalid_auth"),
    ],
    ids=["channel_not_found", "users_not_found", "missing_scope", "invalid_auth"],
)
def test_ok_false_answers_are_permanent(
    http_server: HttpServer, delivery: Delivery, answer: dict[str, Any] | None, message: str
) -> None:
    http_server.respond = slack_api
    if answer is not None:
        http_server.queue = [(200, {}, answer)]
    error = send_error(bot(http_server), delivery)
    assert not isinstance(error, RetryableError)
    assert str(error) == message


def test_5xx_is_retryable(http_server: HttpServer) -> None:
    http_server.queue = [(503, {}, "upstream unavailable")]
    error = send_error(bot(http_server), slack_delivery())
    assert isinstance(error, RetryableError)
    assert str(error) == "slack chat.postMessage to #renewals: HTTP 503 Service Unavailable: upstream unavailable"


# --- through an incoming webhook ------------------------------------------------------------------


def test_webhook_posts_text_and_channel(http_server: HttpServer) -> None:
    http_server.queue = [(200, {}, "ok")]
    [receipt] = send(webhook(http_server), slack_delivery())
    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", WEBHOOK_PATH)
    assert "authorization" not in request.headers
    assert request.json() == {"channel": "#renewals", "text": "Acme renews in 30 days"}
    assert receipt.detail == "HTTP 200 ok"


def test_webhook_cannot_look_people_up_so_it_names_them(http_server: HttpServer) -> None:
    http_server.queue = [(200, {}, "ok")]
    send(webhook(http_server), slack_delivery("@csm@acme.com"))
    assert http_server.requests[0].json() == {"text": "For csm@acme.com: Acme renews in 30 days"}


@pytest.mark.parametrize(
    ("answer", "retryable", "message"),
    [
        ((404, {}, "channel_not_found"), False, "HTTP 404 Not Found: channel_not_found"),
        ((403, {}, "invalid_token"), False, "HTTP 403 Forbidden: invalid_token"),
        ((429, {"Retry-After": "2"}, "rate_limited"), True, "HTTP 429 Too Many Requests: rate_limited"),
        ((500, {}, "oops"), True, "HTTP 500 Internal Server Error: oops"),
    ],
)
def test_webhook_errors(
    http_server: HttpServer, answer: tuple[int, dict[str, str], str], retryable: bool, message: str
) -> None:
    http_server.queue = [answer]
    error = send_error(webhook(http_server), slack_delivery())
    assert isinstance(error, RetryableError) is retryable
    assert str(error) == f"slack webhook to #renewals: {message}"


# --- failures that never show a secret ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bot", "webhook"])
def test_no_server_is_retryable_and_names_no_secret(closed_port: int, mode: str) -> None:
    base = f"http://127.0.0.1:{closed_port}"
    channel = (
        SlackChannel(bot_token=TOKEN, api_url=base + "/api")
        if mode == "bot"
        else SlackChannel(webhook_url=base + WEBHOOK_PATH)
    )
    error = send_error(channel, slack_delivery())
    assert isinstance(error, RetryableError)
    assert "ConnectError" in str(error)


def test_payloads_and_settings_that_cannot_work(http_server: HttpServer) -> None:
    with pytest.raises(IntegrationError, match=r"^slack: the payload has no text$"):
        send(bot(http_server), slack_delivery(text=" "))
    with pytest.raises(IntegrationError, match=r"^slack: the payload names no channel$"):
        send(bot(http_server), slack_delivery(channel=""))
    with pytest.raises(ConfigError, match="RETAIN_SLACK_BOT_TOKEN or RETAIN_SLACK_WEBHOOK_URL"):
        SlackChannel()
    assert not http_server.requests
