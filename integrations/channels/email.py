"""Email over SMTP (aiosmtplib): one ``multipart/alternative`` message (text and HTML) per touch,
with a ``Message-ID`` derived from the touch key and one-click unsubscribe headers (RFC 8058).

SMTP receivers do not drop a repeated message, so this channel does not dedupe by key: a send
interrupted by a crash is marked ``unknown`` by the outbox, never sent twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import email.utils
import hashlib
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

from integrations.channels.base import Delivery, Receipt
from integrations.links import (
    DEFAULT_LINK_DAYS,
    InvalidLink,
    last_valid_day,
    sign,
    unsubscribe_subject,
    verify,
    with_token,
)
from models import ConfigError, IntegrationError, MaybeDeliveredError, RetryableError

__all__ = [
    "SmtpEmailChannel",
    "SmtpServer",
    "message_id",
    "parse_smtp_url",
    "unsubscribe_token",
    "verify_unsubscribe_token",
]

_log = logging.getLogger(__name__)  # SMTP answers worth another attempt, and sends that lost their answer


def _log_failure(error: IntegrationError) -> None:
    if isinstance(error, MaybeDeliveredError):
        _log.warning("%s (no answer: it may have been delivered)", error)
    elif isinstance(error, RetryableError):
        _log.info("%s (worth another attempt)", error)


#: how messages are composed: CRLF line ends, bodies quoted-printable at 76 columns
_COMPOSE = email.policy.SMTP
#: how they are written out: headers folded only past RFC 5322's hard limit, so that long URLs in
#: ``List-Unsubscribe`` are never turned into encoded words (which receivers do not decode there)
_WRITE = email.policy.SMTP.clone(max_line_length=998)
_WRITE_UTF8 = email.policy.SMTPUTF8.clone(max_line_length=998)

_IDLE_CHECK_AFTER = 5.0  # seconds: a connection idle longer is checked with NOOP before reuse


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect, from ``RETAIN_SMTP_URL``. ``str()`` never shows the credentials."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False  # smtps://: TLS from the first byte
    start_tls: bool | None = None  # None: STARTTLS when the server offers it

    def __str__(self) -> str:
        return f"{'smtps' if self.use_tls else 'smtp'}://{self.host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://user:pass@host:587`` (STARTTLS when offered), ``smtps://user:pass@host:465`` (implicit
    TLS), ``smtp://host:1025?starttls=false`` (no TLS, for a trusted local relay; ``starttls=true``
    requires it). User and password are URL-decoded. Errors never repeat the URL: it holds a password."""
    what = "RETAIN_SMTP_URL"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(f"{what} must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"{what}: the port is not a number (URL-encode ':', '/', '@' in the user and password)"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"{what} names no host")
    use_tls = parts.scheme == "smtps"
    start_tls: bool | None = None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "starttls" or value.lower() not in ("true", "false", "auto"):
            raise ConfigError(f"{what}: the only option is starttls=true|false|auto")
        start_tls = {"true": True, "false": False, "auto": None}[value.lower()]
    if use_tls and start_tls:
        raise ConfigError(f"{what}: smtps:// is TLS already; starttls=true applies to smtp:// only")
    return SmtpServer(
        host=parts.hostname,
        port=port or (465 if use_tls else 587),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        use_tls=use_tls,
        start_tls=False if use_tls else start_tls,
    )


def message_id(key: str, domain: str) -> str:
    """The ``Message-ID`` of a touch: the same key always gives the same id, so a receiver (or a
    person) can recognise a repeat."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def unsubscribe_token(secret: str, subject: str, valid_through: date | None = None) -> str:
    """The token of an unsubscribe link (see :mod:`integrations.links`): ``subject`` (what
    :func:`~integrations.links.unsubscribe_subject` makes: the kind of message and who) signed
    for ``unsubscribe``, valid through ``valid_through`` (default: 90 days from today)."""
    return sign(secret, "unsubscribe", subject, valid_through or last_valid_day(datetime.now(UTC), DEFAULT_LINK_DAYS))


def verify_unsubscribe_token(secret: str, token: str, today: date | None = None) -> str | None:
    """The subject of a genuine token (not past its last day when ``today`` is given), else ``None``."""
    try:
        return verify(secret, "unsubscribe", token, today)[0]
    except InvalidLink:
        return None


def _addresses(value: Any, what: str) -> list[str]:
    if value is None or value == "":
        return []
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, list | tuple) else None
    if values is None or not all(isinstance(v, str) and v.strip() for v in values):
        raise IntegrationError(f"email: {what} must be an address or a list of addresses, not {value!r}")
    return [v.strip() for v in values]


def _envelope_address(header_value: str) -> str:
    return email.utils.parseaddr(header_value)[1]


class _Connections:
    """Up to ``size`` SMTP connections of one event loop, each reused across messages."""

    def __init__(self, size: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[aiosmtplib.SMTP, float]] = []  # (connection, when it was last used)


class SmtpEmailChannel:
    """Sends ``{"kind": "email"|"survey", "to", "subject", "text", "html", "cc"?}`` payloads.

    ``sender`` is the From header (``"Acme Success <success@acme.com>"``); ``unsubscribe_url`` and
    ``unsubscribe_secret`` make the one-click unsubscribe link; ``tls_context`` replaces the system's
    trust store (tests, private CAs).
    """

    name = "email"
    dedupes_by_key = False  # SMTP receivers deliver a repeated message again

    def __init__(
        self,
        server: SmtpServer | str,
        *,
        sender: str,
        unsubscribe_url: str | None = None,
        unsubscribe_secret: str | None = None,
        connections: int = 2,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.server = parse_smtp_url(server) if isinstance(server, str) else server
        sender_address = _envelope_address(sender)
        if "@" not in sender_address:
            raise ConfigError(f"RETAIN_EMAIL_FROM is not an email address: {sender!r}")
        if unsubscribe_url and not unsubscribe_secret:
            raise ConfigError("RETAIN_UNSUBSCRIBE_URL needs RETAIN_UNSUBSCRIBE_SECRET (the key of its tokens)")
        if unsubscribe_url and not unsubscribe_url.startswith("https://"):
            raise ConfigError("RETAIN_UNSUBSCRIBE_URL must be an https:// URL (RFC 8058 one-click unsubscribe)")
        self.sender = sender
        self.sender_address = sender_address
        self.domain = sender_address.rpartition("@")[2]
        self._unsubscribe_url = unsubscribe_url
        self._unsubscribe_secret = unsubscribe_secret
        self._size = max(1, connections)
        self.max_in_flight = self._size  # one message per pooled connection
        self._timeout = timeout
        self._tls_context = tls_context
        self._pool: _Connections | None = None

    # --- composing ---------------------------------------------------------------------------

    def compose(self, delivery: Delivery) -> EmailMessage:
        """The message a delivery becomes (also what a preview can show)."""
        payload = delivery.payload
        if payload.get("kind", "email") not in ("email", "survey"):
            raise IntegrationError(f"email: cannot send a {payload.get('kind')!r} payload")
        to = _addresses(payload.get("to"), "to")
        if not to:
            raise IntegrationError("email: the payload has no recipient ('to')")
        cc = _addresses(payload.get("cc"), "cc")
        text, html = payload.get("text"), payload.get("html")
        if not text and not html:
            raise IntegrationError("email: the payload has neither text nor html")
        message = EmailMessage(policy=_COMPOSE)
        try:
            message["From"] = self.sender
            message["To"] = ", ".join(to)
            if cc:
                message["Cc"] = ", ".join(cc)
            # a template may leave a line break in a subject; a header cannot hold one
            message["Subject"] = " ".join(str(payload.get("subject") or "").split())
            message["Date"] = email.utils.format_datetime(datetime.now(UTC))
            message["Message-ID"] = message_id(delivery.key, self.domain)
            message["X-Retain-Key"] = delivery.key
            links = [f"<mailto:unsubscribe@{self.domain}?subject=unsubscribe>"]
            link = self._unsubscribe_link(delivery, to[0])
            if link.startswith("https://"):  # RFC 8058: one-click unsubscribe only over https
                links.insert(0, f"<{link}>")
                message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
            message["List-Unsubscribe"] = ", ".join(links)
            # quoted-printable keeps the message 7-bit clean whatever the server supports
            message.set_content(str(text or ""), cte="quoted-printable")
            if html:
                message.add_alternative(str(html), subtype="html", cte="quoted-printable")
        except (ValueError, TypeError) as exc:  # a header the email package refuses
            raise IntegrationError(f"email to {', '.join(to)}: cannot compose the message: {exc}") from exc
        return message

    def _unsubscribe_link(self, delivery: Delivery, to: str) -> str:
        """The touch's own signed link (written with it, shown in its body), else one made here
        from ``unsubscribe_url`` and ``unsubscribe_secret`` (for payloads written without one)."""
        written = delivery.payload.get("unsubscribe_url")
        if isinstance(written, str) and written:
            return written
        if not (self._unsubscribe_url and self._unsubscribe_secret):
            return ""
        kind = str(delivery.payload.get("kind") or "email")
        contact_id = delivery.meta.get("contact_id")
        subject = unsubscribe_subject(
            kind, contact_id=contact_id if isinstance(contact_id, int) else None, email=_envelope_address(to)
        )
        return with_token(self._unsubscribe_url, unsubscribe_token(self._unsubscribe_secret, subject))

    # --- sending -----------------------------------------------------------------------------

    async def send(self, delivery: Delivery) -> Receipt:
        message = self.compose(delivery)
        given = _addresses(delivery.payload.get("to"), "to") + _addresses(delivery.payload.get("cc"), "cc")
        recipients = [_envelope_address(a) for a in given]
        if bad := [g for g, a in zip(given, recipients, strict=True) if "@" not in a]:
            raise IntegrationError(f"email: not an email address: {', '.join(map(repr, bad))}")
        utf8 = not all(a.isascii() for a in [self.sender_address, *recipients])
        raw = message.as_bytes(policy=_WRITE_UTF8 if utf8 else _WRITE)
        where = f"email to {', '.join(recipients)} via {self.server}"
        pool = self._connections()
        async with pool.slots:
            client: aiosmtplib.SMTP | None = None
            connected = False
            try:
                client = await self._checkout(pool)
                connected = True
                refused, reply = await client.sendmail(
                    self.sender_address, recipients, raw, mail_options=["SMTPUTF8"] if utf8 else None
                )
            except BaseException as exc:
                if client is not None:
                    _abort(client)  # the session's state is unknown: never reuse it
                if isinstance(exc, aiosmtplib.SMTPException | OSError | TimeoutError | ValueError):
                    error = self._translate(exc, where, sending=client is not None and connected)
                    _log_failure(error)
                    raise error from exc
                raise
            pool.idle.append((client, time.monotonic()))
        detail = reply
        if refused:
            detail += "; refused: " + ", ".join(f"{a} ({r.code} {r.message})" for a, r in refused.items())
        return Receipt(provider_id=message["Message-ID"], detail=self._redact(detail))

    def _connections(self) -> _Connections:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            # connections of a finished event loop cannot be used (or closed) from this one
            self._pool = _Connections(self._size)
        return self._pool

    async def _checkout(self, pool: _Connections) -> aiosmtplib.SMTP:
        """An open, logged-in connection: an idle one that still answers, or a new one."""
        while pool.idle:
            client, last_used = pool.idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - last_used < _IDLE_CHECK_AFTER:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                await _closed(_abort(client))
        return await self._connect()

    async def _connect(self) -> aiosmtplib.SMTP:
        server = self.server
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.use_tls,
            start_tls=server.start_tls,
            timeout=self._timeout,
            tls_context=self._tls_context,
        )
        await client.connect()
        try:
            if server.username is not None:
                encrypted = client.get_transport_info("sslcontext") is not None
                if not encrypted and server.start_tls is not False:
                    raise IntegrationError(
                        f"{server} did not offer STARTTLS: not sending the password unencrypted "
                        "(use smtps://, or add ?starttls=false for a trusted local relay)"
                    )
                await client.login(server.username, server.password or "")
        except BaseException:
            _abort(client)
            raise
        return client

    def _translate(self, exc: BaseException, where: str, *, sending: bool = False) -> IntegrationError:
        """SMTP 4xx, lost connections and timeouts are worth another attempt; 5xx replies are not.
        A connection lost or timed out while the message was being sent may have delivered it."""
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            replies = [(r.code, f"{r.recipient}: {r.code} {r.message}") for r in exc.recipients]
            text = self._redact("; ".join(reply for _, reply in replies))
            code = max(c for c, _ in replies)
            if all(400 <= c < 500 for c, _ in replies):
                return RetryableError(f"{where}: recipients refused: {text}", status_code=code, response=text)
            return IntegrationError(f"{where}: recipients refused: {text}", status_code=code, response=text)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            text = self._redact(exc.message)
            what = "login refused" if isinstance(exc, aiosmtplib.SMTPAuthenticationError) else "SMTP"
            message = f"{where}: {what} {exc.code} {text}"
            if exc.code >= 500:
                return IntegrationError(message, status_code=exc.code, response=text)
            return RetryableError(message, status_code=exc.code, response=text)
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError | TimeoutError):
            message = f"{where}: {type(exc).__name__}: {self._redact(str(exc))}"
            if sending and not isinstance(exc, aiosmtplib.SMTPConnectError):
                return MaybeDeliveredError(message)
            return RetryableError(message)
        # SMTPNotSupported (e.g. SMTPUTF8), no AUTH offered, an address that cannot be sent
        return IntegrationError(f"{where}: {self._redact(str(exc))}")

    def _redact(self, text: str) -> str:
        password = self.server.password
        if password and len(password) >= 4:
            for form in _password_forms(password):
                text = text.replace(form, "***")
        return text

    async def aclose(self) -> None:
        """Quit the idle connections (politely when possible)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.loop is not asyncio.get_running_loop():
            return  # a finished loop took its connections with it
        for client, _ in pool.idle:
            protocol, transport = client.protocol, client.transport  # ``quit`` forgets them
            if client.is_connected:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                    await client.quit()
            if transport is not None:
                cast(asyncio.Transport, transport).abort()  # after QUIT, no need to wait for the TLS goodbye
            await _closed(protocol)
        pool.idle.clear()


def _abort(client: aiosmtplib.SMTP) -> Any:
    """Close a connection at once (no TLS goodbye); returns its protocol, to wait for the socket."""
    protocol, transport = client.protocol, client.transport
    if transport is not None:
        cast(asyncio.Transport, transport).abort()
    client.close()
    return protocol


async def _closed(protocol: Any) -> None:
    """Wait (briefly) until the socket is really closed, which takes the event loop a turn or two,
    rather than leave it to the garbage collector when the loop ends right after ``aclose``."""
    for _ in range(50):
        if getattr(protocol, "transport", None) is None:
            return
        await asyncio.sleep(0.01)


def _password_forms(password: str) -> Iterable[str]:
    yield password
    yield base64.b64encode(password.encode()).decode()
