"""The explicit registry of channels. A YAML step names a channel by kind; code is never
imported by a name written in YAML."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import SecretStr

from integrations.channels.base import Channel
from integrations.channels.crm import CrmTaskChannel
from integrations.channels.email import SmtpEmailChannel
from integrations.channels.file import FileChannel
from integrations.channels.slack import SlackChannel
from integrations.channels.webhook import WebhookChannel
from models import ConfigError, Settings

__all__ = ["CHANNEL_NAMES", "build_channel", "build_channels"]


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _email(settings: Settings) -> Channel:
    """SMTP when ``RETAIN_SMTP_URL`` is set, else the local file channel."""
    smtp_url = _secret(settings.smtp_url)
    if not smtp_url:
        return FileChannel("email", settings.outbox_dir)
    if not settings.email_from:
        raise ConfigError("RETAIN_SMTP_URL is set but RETAIN_EMAIL_FROM is not (e.g. 'Acme Success <cs@acme.com>')")
    return SmtpEmailChannel(
        smtp_url,
        sender=settings.email_from,
        unsubscribe_url=settings.unsubscribe_url,
        unsubscribe_secret=_secret(settings.unsubscribe_secret),
        connections=settings.smtp_connections,
    )


def _slack(settings: Settings) -> Channel:
    """Slack when a bot token or an incoming webhook URL is set, else the local file channel."""
    token, webhook_url = _secret(settings.slack_bot_token), _secret(settings.slack_webhook_url)
    if not token and not webhook_url:
        return FileChannel("slack", settings.outbox_dir)
    return SlackChannel(webhook_url=webhook_url, bot_token=token, api_url=settings.slack_api_url)


def _crm(settings: Settings) -> Channel:
    """CRM tasks when ``RETAIN_CRM_TOKEN`` is set, else the local file channel."""
    token = _secret(settings.crm_token)
    if not token:
        return FileChannel("crm", settings.outbox_dir)
    return CrmTaskChannel(token=token, base_url=settings.crm_url, company_id_property=settings.crm_company_id_property)


def _webhook(settings: Settings) -> Channel:
    return WebhookChannel(signing_secret=_secret(settings.webhook_signing_secret))


def _file(settings: Settings) -> Channel:
    return FileChannel("file", settings.outbox_dir)


_FACTORIES: dict[str, Callable[[Settings], Channel]] = {
    "email": _email,
    "slack": _slack,
    "webhook": _webhook,
    "crm": _crm,
    "file": _file,
}
CHANNEL_NAMES = tuple(_FACTORIES)


def build_channel(name: str, settings: Settings) -> Channel:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(f"unknown channel {name!r} (channels: {', '.join(CHANNEL_NAMES)})") from None
    return factory(settings)


def build_channels(settings: Settings, names: tuple[str, ...] = CHANNEL_NAMES) -> dict[str, Channel]:
    """One instance per channel name, configured from the settings."""
    return {name: build_channel(name, settings) for name in names}
