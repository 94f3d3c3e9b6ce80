"""Every registered channel, built by the registry from settings and pointed at a local server,
keeps the ``Channel`` contract; and no channel's error ever shows a secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from integrations.channels import registry
from integrations.channels.base import Channel, Delivery, Receipt
from integrations.channels.crm import CrmTaskChannel
from integrations.channels.email import SmtpEmailChannel
from integrations.channels.file import FileChannel
from integrations.channels.slack import SlackChannel
from integrations.channels.webhook import WebhookChannel
from models import ConfigError, IntegrationError, Settings

from .conftest import SMTP_PASSWORD, SMTP_USER, HttpServer, Request, SmtpServer

SLACK_TOKEN = "xoxb-S3CRET-slack-token"
CRM_TOKEN = "pat-S3CRET-crm-token"
CONFIGURED = {
    "email": SmtpEmailChannel,
    "slack": SlackChannel,
    "webhook": WebhookChannel,
    "crm": CrmTaskChannel,
    "file": FileChannel,
}


def fake_apis(request: Request) -> tuple[int, dict[str, str], Any]:
    """Slack's Web API and HubSpot's, as much as one successful send of each needs."""
    routes: dict[str, Any] = {
        "/slack/chat.postMessage": {"ok": True, "channel": "C1", "ts": "1.2"},
        "/crm/v3/objects/companies/search": {"total": 1, "results": [{"id": "512"}]},
        "/crm/v3/owners/": {"results": []},
        "/crm/v3/objects/tasks": {"id": "9001"},
        "/hook": {"received": True},
    }
    return (200, {}, routes[request.path]) if request.path in routes else (404, {}, "no such route")


def settings_for(tmp_path: Path, smtp: SmtpServer, http: HttpServer, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "outbox_dir": tmp_path / "outbox",
        "smtp_url": SecretStr(smtp.url(query="starttls=false")),
        "email_from": "Acme Success <success@acme.com>",
        "unsubscribe_url": "https://retain.example.com/unsubscribe",
        "unsubscribe_secret": SecretStr("S3CRET-unsubscribe"),
        "slack_bot_token": SecretStr(SLACK_TOKEN),
        "slack_webhook_url": None,
        "slack_api_url": f"{http.url}/slack/",
        "crm_token": SecretStr(CRM_TOKEN),
        "crm_url": http.url,
        "webhook_signing_secret": SecretStr("S3CRET-signing"),
    }
    values.update(changes)
    return Settings(**values)


def sample(name: str, http: HttpServer) -> Delivery:
    """One delivery of the shape the engine writes for each channel."""
    payloads: dict[str, dict[str, Any]] = {
        "email": {
            "kind": "email",
            "to": "dana@customer.io",
            "subject": "Welcome",
            "text": "Hello",
            "html": "<p>Hello</p>",
        },
        "slack": {"kind": "slack", "channel": "#cs", "text": "Acme signed up"},
        "webhook": {"kind": "webhook", "url": f"{http.url}/hook", "method": "POST", "json": {"a": 1}, "headers": {}},
        "crm": {
            "kind": "crm_task",
            "company": "acme",
            "title": "Kick-off call",
            "body": None,
            "priority": "normal",
            "due_at": "2027-01-11T09:00:00+00:00",
            "assignee": "csm@acme.com",
        },
        "file": {"kind": "file", "text": "hello"},
    }
    assert name in payloads, f"a new channel {name!r}: add a sample delivery (and its receiver) to this test"
    return Delivery(f"conformance:{name}:1", name, payloads[name], meta={"account_id": 1, "contact_id": 2})


@pytest.mark.parametrize("name", registry.CHANNEL_NAMES)
def test_every_channel_keeps_the_contract(
    name: str, tmp_path: Path, smtp_server: SmtpServer, http_server: HttpServer
) -> None:
    http_server.respond = fake_apis
    channel = registry.build_channel(name, settings_for(tmp_path, smtp_server, http_server))
    assert isinstance(channel, Channel)
    assert type(channel) is CONFIGURED[name]
    assert channel.name == name
    assert isinstance(channel.dedupes_by_key, bool)

    async def main() -> Receipt:
        try:
            return await channel.send(sample(name, http_server))
        finally:
            await channel.aclose()

    receipt = asyncio.run(main())
    assert isinstance(receipt, Receipt)
    # the receiver got it, once
    outbox_file = tmp_path / "outbox" / "file.jsonl"
    received = {
        "smtp": len(smtp_server.sink.messages),
        "http": len(http_server.requests),
        "file": len(outbox_file.read_text().splitlines()) if outbox_file.exists() else 0,
    }
    http_requests = {"slack": 1, "webhook": 1, "crm": 3}.get(name, 0)  # crm: company, owner, task
    assert received == {"smtp": int(name == "email"), "http": http_requests, "file": int(name == "file")}


def test_unconfigured_channels_write_to_files(tmp_path: Path) -> None:
    settings = Settings(
        outbox_dir=tmp_path, smtp_url=None, slack_bot_token=None, slack_webhook_url=None, crm_token=None
    )
    channels = registry.build_channels(settings)
    assert {name: type(c) for name, c in channels.items()} == {
        "email": FileChannel,
        "slack": FileChannel,
        "webhook": WebhookChannel,
        "crm": FileChannel,
        "file": FileChannel,
    }
    asyncio.run(channels["webhook"].aclose())


def test_a_slack_webhook_alone_is_enough(tmp_path: Path) -> None:
    settings = Settings(outbox_dir=tmp_path, slack_bot_token=None, slack_webhook_url=SecretStr("https://hooks.test/x"))
    assert type(registry.build_channel("slack", settings)) is SlackChannel


def test_smtp_needs_a_from_address(tmp_path: Path) -> None:
    settings = Settings(outbox_dir=tmp_path, smtp_url=SecretStr("smtp://u:hunter22@mail.test"), email_from=None)
    with pytest.raises(ConfigError) as info:
        registry.build_channel("email", settings)
    assert "RETAIN_EMAIL_FROM" in str(info.value) and "hunter22" not in str(info.value)


def test_settings_never_show_secrets(tmp_path: Path, smtp_server: SmtpServer, http_server: HttpServer) -> None:
    text = repr(settings_for(tmp_path, smtp_server, http_server)) + str(
        settings_for(tmp_path, smtp_server, http_server)
    )
    assert "S3CRET" not in text


# --- no secret in any error -----------------------------------------------------------------------------


def _email_wrong_password(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    server = start_smtp(auth=True)
    url = server.url(userinfo=f"{SMTP_USER}:{quote(SMTP_PASSWORD + 'S3CRET', safe='')}", query="starttls=false")
    return {"smtp_url": SecretStr(url)}


def _email_unreachable(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    return {"smtp_url": SecretStr(f"smtps://{SMTP_USER}:{quote(SMTP_PASSWORD, safe='')}@127.0.0.1:{closed}")}


def _slack_invalid_auth(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    http.respond = lambda request: (200, {}, {"ok": False, "error": "invalid_auth"})
    return {}


def _slack_webhook_unreachable(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    return {"slack_bot_token": None, "slack_webhook_url": SecretStr(f"http://127.0.0.1:{closed}/services/T1/B2/S3CRET")}


def _crm_unauthorized(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    http.respond = lambda request: (401, {}, {"status": "error", "message": "Authentication credentials not found"})
    return {}


def _crm_unreachable(start_smtp: Callable[..., SmtpServer], http: HttpServer, closed: int) -> dict[str, Any]:
    return {"crm_url": f"http://127.0.0.1:{closed}"}


@pytest.mark.parametrize(
    ("name", "scenario"),
    [
        ("email", _email_wrong_password),
        ("email", _email_unreachable),
        ("slack", _slack_invalid_auth),
        ("slack", _slack_webhook_unreachable),
        ("crm", _crm_unauthorized),
        ("crm", _crm_unreachable),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else value,
)
def test_errors_never_show_a_secret(
    name: str,
    scenario: Callable[..., dict[str, Any]],
    tmp_path: Path,
    start_smtp: Callable[..., SmtpServer],
    smtp_server: SmtpServer,
    http_server: HttpServer,
    closed_port: int,
) -> None:
    changes = scenario(start_smtp, http_server, closed_port)
    settings = settings_for(tmp_path, smtp_server, http_server, **changes)
    channel = registry.build_channel(name, settings)

    async def main() -> None:
        try:
            await channel.send(sample(name, http_server))
        finally:
            await channel.aclose()

    with pytest.raises(IntegrationError) as info:
        asyncio.run(main())
    error = info.value
    shown = " ".join([str(error), repr(error), str(error.response), json.dumps(error.args, default=str)])
    for secret in (SMTP_PASSWORD, quote(SMTP_PASSWORD, safe=""), "S3CRET"):
        assert secret not in shown
