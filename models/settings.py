"""Where Retain keeps its data and finds its playbooks. Read from the environment (``RETAIN_*``)."""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["BUNDLED_PLAYBOOKS_DIR", "Settings", "get_settings"]

#: the playbooks shipped with Retain (the ``playbooks`` package's own folder)
BUNDLED_PLAYBOOKS_DIR = Path(__file__).resolve().parent.parent / "playbooks"


class Settings(BaseSettings):
    """Retain's settings. Every field can be set as ``RETAIN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore")

    database_url: str = "sqlite:///retain.db"
    #: the playbooks folder; by default ``./playbooks`` when it exists, else the bundled playbooks
    playbooks_dir: Path | None = None
    #: where the local file channel writes messages of channels that are not configured
    outbox_dir: Path = Path("retain-outbox")
    #: how long a delivery run's claim on touches lasts before another run may take them over
    #: (sooner when the claiming process on this host is known to be gone); longer than one send
    lease_seconds: int = Field(default=300, ge=5)
    #: HMAC key that signs every webhook body (X-Retain-Signature)
    webhook_signing_secret: SecretStr | None = None

    # --- email (SMTP); without ``smtp_url`` email goes to the file channel ---
    #: ``smtp://user:pass@host:587`` (STARTTLS when offered), ``smtps://user:pass@host:465`` (implicit
    #: TLS), ``smtp://host:1025?starttls=false`` (a trusted local relay); user and password URL-encoded
    smtp_url: SecretStr | None = None
    #: at most this many SMTP connections open at once, each reused across messages
    smtp_connections: int = Field(default=2, ge=1, le=20)
    #: the From header, e.g. ``Acme Success <success@acme.com>``; required with ``smtp_url``
    email_from: str | None = None
    #: base of the unsubscribe link (``List-Unsubscribe`` and the link in every email):
    #: ``<url>?t=<token>``; default ``<public_url>/unsubscribe``
    unsubscribe_url: str | None = None
    #: HMAC key of the unsubscribe tokens; required with ``unsubscribe_url``
    unsubscribe_secret: SecretStr | None = None

    # --- the inbound web app (``retain web``): pages for people, webhooks for providers ---
    #: where people and providers reach ``retain web`` (https:// anywhere links leave the machine)
    public_url: str = "http://localhost:8000"
    #: base of the survey links, default ``<public_url>/survey``
    survey_base_url: str | None = None
    #: HMAC key of the survey tokens
    survey_secret: SecretStr | None = None
    #: how many days the links in an email stay valid (unsubscribe, survey)
    link_days: int = Field(default=90, ge=1, le=3650)
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8000, ge=1, le=65535)
    #: the largest request body ``retain web`` reads, in bytes
    web_max_body: int = Field(default=1_000_000, ge=1024)
    #: the largest inbound-parse webhook body (a whole email, attachments included), in bytes
    web_max_inbound_body: int = Field(default=30_000_000, ge=1024)
    #: requests per minute from one client address (beyond: 429 with Retry-After)
    web_rate_limit: int = Field(default=120, ge=1)
    #: proxies whose X-Forwarded-For names the client (comma-separated addresses, or ``*``)
    web_forwarded_allow_ips: str = "127.0.0.1"
    #: HMAC key of the generic provider events webhook (``X-Retain-Signature``)
    events_webhook_secret: SecretStr | None = None
    #: SendGrid's Event Webhook verification key (the base64 public key SendGrid shows)
    sendgrid_verification_key: str | None = None
    #: the password (basic auth, any user) of the inbound-parse (replies) webhook
    inbound_webhook_secret: SecretStr | None = None
    #: the write key of the Segment-spec endpoints (basic auth user, as Segment sends it)
    segment_write_key: SecretStr | None = None

    # --- replies from a mailbox (``retain replies poll``); its password is a secret, never here ---
    #: ``imaps://user@host:993/INBOX``; the password in ``RETAIN_SECRET_MAILBOX_PASSWORD`` or the
    #: Prefect Secret block ``retain-mailbox-password``
    mailbox_url: str | None = None

    # --- Slack: an incoming webhook, or a bot token (which can also message people by email) ---
    slack_webhook_url: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    # --- CRM tasks (a HubSpot-shaped API); without ``crm_token`` tasks go to the file channel ---
    crm_url: str = "https://api.hubapi.com"
    crm_token: SecretStr | None = None
    #: the company property that holds an account's external id
    crm_company_id_property: str = "retain_external_id"
    #: ``retain serve`` pulls the CRM's task states (``retain tasks sync``) this often, in minutes
    tasks_sync_minutes: int = Field(default=15, ge=1, le=1440)

    # --- the CSMs' daily digest (``retain today --post … --every-csm``), posted on a schedule ---
    #: the local time (HH:MM, 24-hour) it is posted each day, in ``digest_timezone``
    digest_time: str = "08:00"
    #: the IANA time zone of ``digest_time``, e.g. Europe/Berlin
    digest_timezone: str = "UTC"
    #: where: ``email`` (each CSM's own address), ``slack`` or ``file``
    digest_post: Literal["email", "slack", "file"] = "email"

    @field_validator("digest_time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a time of day as HH:MM (e.g. 08:00)")
        return f"{int(match[1]):02d}:{match[2]}"

    @field_validator("digest_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value.strip())
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Europe/Berlin)") from None
        return value.strip()

    def digest_cron(self) -> str:
        """The cron expression of ``digest_time`` (in ``digest_timezone``)."""
        hour, minute = self.digest_time.split(":")
        return f"{int(minute)} {int(hour)} * * *"

    def resolved_playbooks_dir(self) -> Path:
        if self.playbooks_dir is not None:
            return self.playbooks_dir
        local = Path("playbooks")
        if local.is_dir() and any(local.glob("*.y*ml")):
            return local
        return BUNDLED_PLAYBOOKS_DIR


def get_settings() -> Settings:
    return Settings()
