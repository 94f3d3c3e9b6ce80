"""Channels out: email (SMTP), Slack, signed webhooks, CRM tasks and the file channel, each
behind the :class:`Channel` protocol and listed once in the registry (:data:`CHANNEL_NAMES`,
:func:`build_channel`, :func:`build_channels`).

Code outside this package imports from here, never from the modules inside it.
"""

from integrations.channels.base import Channel, Delivery, Receipt
from integrations.channels.crm import CrmTaskChannel
from integrations.channels.email import SmtpEmailChannel, message_id, unsubscribe_token, verify_unsubscribe_token
from integrations.channels.file import FileChannel
from integrations.channels.registry import CHANNEL_NAMES, build_channel, build_channels
from integrations.channels.secrets import (
    MAX_STORED_BODY,
    MAX_STORED_MESSAGE,
    PREFECT_BLOCKS,
    REDACTED,
    SEALED,
    SECRET,
    SecretMarkers,
    is_sealed,
    redact,
    resolve_secret,
    resolve_secrets,
    seal,
    secret_names,
)
from integrations.channels.slack import SlackChannel
from integrations.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookChannel, sign, verify

__all__ = [
    "CHANNEL_NAMES",
    "MAX_STORED_BODY",
    "MAX_STORED_MESSAGE",
    "PREFECT_BLOCKS",
    "REDACTED",
    "SEALED",
    "SECRET",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Channel",
    "CrmTaskChannel",
    "Delivery",
    "FileChannel",
    "Receipt",
    "SecretMarkers",
    "SlackChannel",
    "SmtpEmailChannel",
    "WebhookChannel",
    "build_channel",
    "build_channels",
    "is_sealed",
    "message_id",
    "redact",
    "resolve_secret",
    "resolve_secrets",
    "seal",
    "secret_names",
    "sign",
    "unsubscribe_token",
    "verify",
    "verify_unsubscribe_token",
]
