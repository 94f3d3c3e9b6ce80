"""Signed, expiring links: the tokens that emails carry to ``retain web`` (unsubscribe, survey).

A token is ``<subject>.<last day>.<mac>``: the subject (URL-safe base64), the last UTC day it is
valid (``YYYYMMDD``), and an HMAC-SHA256 over the purpose, subject and day (URL-safe base64).
The purpose (``unsubscribe``, ``survey``) is signed too, so a token made for one use is never
valid for another, even under the same secret. Expiry is by whole days, so the same subject
signed on the same day gives the same token (a touch re-rendered gives the same link).

Nothing here reads the database or the settings: callers pass the secret and "today".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from urllib.parse import quote_plus, urlencode

from models import ConfigError, RetainError

__all__ = [
    "DEFAULT_LINK_DAYS",
    "DEFAULT_PUBLIC_URL",
    "DEFAULT_SURVEY_SECRET",
    "DEFAULT_UNSUBSCRIBE_SECRET",
    "ExpiredLink",
    "InvalidLink",
    "LinkConfig",
    "last_valid_day",
    "sign",
    "survey_link_of",
    "unsubscribe_subject",
    "verify",
    "with_token",
]


class InvalidLink(RetainError):
    """A link token that was changed, cut short, made for another use, or signed with another secret."""


class ExpiredLink(InvalidLink):
    """A genuine link token past its last valid day."""

    def __init__(self, message: str, valid_through: date) -> None:
        super().__init__(message)
        self.valid_through = valid_through


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, purpose: str, subject: str, day: str) -> str:
    mac = _keyed(secret).copy()  # the same HMAC as hmac.new(secret, message), without keying it again
    mac.update(f"retain-{purpose}\n{subject}\n{day}".encode())
    return _b64(mac.digest())


@lru_cache(maxsize=8)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with ``secret`` and fed nothing yet: copied for each token (an email
    per contact signs a link; keying the HMAC was half of signing one)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def last_valid_day(now: datetime | date, days: int) -> date:
    """The last day a link made ``now`` stays valid, ``days`` days on (UTC)."""
    today = now.date() if isinstance(now, datetime) else now
    return today + timedelta(days=days)


def sign(secret: str, purpose: str, subject: str, valid_through: date) -> str:
    """A token for ``subject`` (any text) and ``purpose``, valid through the UTC day ``valid_through``."""
    if not secret:
        raise RetainError(f"the {purpose} link secret is empty")
    day = f"{valid_through:%Y%m%d}"
    return f"{_b64(subject.encode())}.{day}.{_mac(secret, purpose, subject, day)}"


def verify(secret: str, purpose: str, token: str, today: date | None) -> tuple[str, date]:
    """The subject of a genuine token, and its last valid day. :class:`InvalidLink` when it was
    changed, cut short, made for another purpose or signed with another secret;
    :class:`ExpiredLink` when ``today`` (UTC; None: do not check) is past its last day. The
    signature is compared in constant time, before anything else is believed."""
    invalid = InvalidLink(f"the {purpose} link is not valid: it was changed or cut short, or made for something else")
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise invalid
    encoded, day, mac = parts
    try:
        subject = _unb64(encoded).decode("utf-8")
    except (binascii.Error, ValueError):
        raise invalid from None
    if not hmac.compare_digest(mac.encode(), _mac(secret, purpose, subject, day).encode()):
        raise invalid
    try:
        valid_through = datetime.strptime(day, "%Y%m%d").date()  # noqa: DTZ007 - a calendar day, signed
    except ValueError:
        raise invalid from None
    if today is not None and today > valid_through:
        raise ExpiredLink(f"the {purpose} link expired: it was valid through {valid_through:%Y-%m-%d}", valid_through)
    return subject, valid_through


def unsubscribe_subject(channel: str, *, contact_id: int | None = None, email: str | None = None) -> str:
    """What an unsubscribe token names: the kind of message (``email``, ``survey``, ``all``) and
    who (``contact:<id>``, or ``email:<address>`` for a message to an address without a contact)."""
    if contact_id is not None:
        return f"{channel}|contact:{contact_id}"
    if not email:
        raise RetainError("an unsubscribe link names a contact or an address")
    return f"{channel}|email:{email.strip().lower()}"


# --- the links emails carry ----------------------------------------------------------------------

#: where ``retain web`` answers when nothing else is configured (its default host and port)
DEFAULT_PUBLIC_URL = "http://localhost:8000"
#: for local use only: set RETAIN_UNSUBSCRIBE_SECRET / RETAIN_SURVEY_SECRET to long random values
#: anywhere links leave the machine (``retain web`` refuses to listen beyond this machine without)
DEFAULT_UNSUBSCRIBE_SECRET = "retain-local-unsubscribe-secret"
DEFAULT_SURVEY_SECRET = "retain-local-survey-secret"
DEFAULT_LINK_DAYS = 90


@dataclass(frozen=True)
class LinkConfig:
    """Where the links in emails point and how they are signed, from the environment (the same
    ``RETAIN_*`` names as :class:`~models.Settings`; read directly, because a touch is written per
    contact and building the settings costs milliseconds)."""

    public_url: str = DEFAULT_PUBLIC_URL
    unsubscribe_url: str | None = None  # default: <public_url>/unsubscribe
    unsubscribe_secret: str | None = None
    survey_url: str | None = None  # default: <public_url>/survey
    survey_secret: str | None = None
    days: int = DEFAULT_LINK_DAYS

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> LinkConfig:
        env = os.environ if environ is None else environ
        days = env.get("RETAIN_LINK_DAYS", "").strip()
        try:
            valid_days = int(days) if days else DEFAULT_LINK_DAYS
        except ValueError:
            raise ConfigError(f"RETAIN_LINK_DAYS must be a whole number of days, not {days!r}") from None
        if valid_days < 1:
            raise ConfigError("RETAIN_LINK_DAYS must be at least 1")
        return cls(
            public_url=(env.get("RETAIN_PUBLIC_URL") or DEFAULT_PUBLIC_URL).rstrip("/"),
            unsubscribe_url=env.get("RETAIN_UNSUBSCRIBE_URL") or None,
            unsubscribe_secret=env.get("RETAIN_UNSUBSCRIBE_SECRET") or None,
            survey_url=env.get("RETAIN_SURVEY_BASE_URL") or None,
            survey_secret=env.get("RETAIN_SURVEY_SECRET") or None,
            days=valid_days,
        )

    @property
    def unsubscribe_base(self) -> str:
        return self.unsubscribe_url or f"{self.public_url.rstrip('/')}/unsubscribe"

    @property
    def survey_base(self) -> str:
        return self.survey_url or f"{self.public_url.rstrip('/')}/survey"

    @property
    def unsubscribe_key(self) -> str:
        return self.unsubscribe_secret or DEFAULT_UNSUBSCRIBE_SECRET

    @property
    def survey_key(self) -> str:
        return self.survey_secret or DEFAULT_SURVEY_SECRET

    def default_secrets(self) -> list[str]:
        """The settings left at their local-only default secrets."""
        missing = []
        if not self.unsubscribe_secret:
            missing.append("RETAIN_UNSUBSCRIBE_SECRET")
        if not self.survey_secret:
            missing.append("RETAIN_SURVEY_SECRET")
        return missing

    def unsubscribe_link(
        self, channel: str, now: datetime, *, contact_id: int | None = None, email: str | None = None
    ) -> str:
        """The link that unsubscribes a contact (or an address) from ``channel`` messages."""
        subject = unsubscribe_subject(channel, contact_id=contact_id, email=email)
        token = sign(self.unsubscribe_key, "unsubscribe", subject, last_valid_day(now, self.days))
        return with_token(self.unsubscribe_base, token)


def with_token(base_url: str, token: str, **more: str) -> str:
    """``base_url`` with ``t=<token>`` (and ``more``) added to its query."""
    query = urlencode({"t": token, **more}) if more else f"t={quote_plus(token)}"  # the same, for one pair
    return f"{base_url}{'&' if '?' in base_url else '?'}{query}"


def survey_link_of(config: LinkConfig, touch_key: str, now: datetime) -> str:
    """The survey link of a touch: its key signed for ``survey``, valid ``config.days`` days."""
    token = sign(config.survey_key, "survey", touch_key, last_valid_day(now, config.days))
    return with_token(config.survey_base, token)
