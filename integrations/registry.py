"""The explicit registry of channels. A YAML step names a channel by kind; code is never
imported by a name written in YAML."""

from __future__ import annotations

from collections.abc import Callable

from models import ConfigError, Settings

from .base import Channel
from .file import FileChannel
from .webhook import WebhookChannel

__all__ = ["CHANNEL_NAMES", "build_channel", "build_channels"]


def _email(settings: Settings) -> Channel:
    return FileChannel("email", settings.outbox_dir)


def _slack(settings: Settings) -> Channel:
    return FileChannel("slack", settings.outbox_dir)


def _crm(settings: Settings) -> Channel:
    return FileChannel("crm", settings.outbox_dir)


def _webhook(settings: Settings) -> Channel:
    secret = settings.webhook_signing_secret
    return WebhookChannel(signing_secret=secret.get_secret_value() if secret else None)


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
