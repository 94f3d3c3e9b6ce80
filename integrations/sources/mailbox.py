"""Replies from a mailbox: a folder read over IMAP, each message that answers a Retain email matched
to its touch by ``In-Reply-To``/``References``, and the touch marked replied.

- Where: ``imaps://user@host:993/INBOX`` (TLS from the first byte), or ``imap://user@host:143/INBOX``
  (STARTTLS when offered; ``?starttls=true`` requires it, ``?starttls=false`` never, for a trusted
  local server). The password is a secret, never in the URL: ``RETAIN_SECRET_MAILBOX_PASSWORD`` or
  the Prefect Secret block ``retain-mailbox-password`` (``?secret=<name>`` names another).
- Matching: every email touch is sent with a ``Message-ID`` derived from its key
  (:func:`integrations.channels.email.message_id`), kept on the touch (``provider_id``) when it is
  delivered. A message whose ``In-Reply-To`` (first) or ``References`` (latest first) names one is
  an answer to that touch; a touch delivered without its id kept (resolved by hand after a crash)
  is found by the key's hash the id carries. Anything else is *unknown*: counted, left alone.
- Automatic replies (``Auto-Submitted`` other than ``no``, ``X-Autoreply``/``X-Autorespond``,
  ``Precedence: auto_reply|bulk|junk``, a null sender, a delivery report, and as a fallback an out-of-office
  subject) are recorded on the timeline as such; they do not mark the touch replied.
- Once: the folder is read from its cursor (UIDVALIDITY and the highest UID processed, kept with
  the other sources' cursors; each poll is a sync run that ``retain sync status`` shows), and every
  answer is kept by its own ``Message-ID`` (unique), so a folder rebuilt under a new UIDVALIDITY, or
  two pollers at once, never count a message twice. Nothing is written to the mailbox: it is opened
  read-only and messages keep their flags.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import imaplib
import logging
import re
import socket
import ssl
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from integrations.channels.secrets import redact, resolve_secret
from integrations.sources._batches import chunks
from integrations.sources.replies import set_replied
from integrations.sources.sync_state import commit_batch, finish_run, read_cursor, start_run
from models import (
    Account,
    ConfigError,
    InboundMessage,
    IntegrationError,
    TimelineEvent,
    Touch,
    TouchStatus,
    table_of,
)

__all__ = [
    "DEFAULT_SECRET",
    "SOURCE_KIND",
    "Answer",
    "Mailbox",
    "PollResult",
    "automatic_reason",
    "configured_mailbox",
    "imap_utf7",
    "parse_mailbox_url",
    "poll_mailbox",
    "read_answer",
    "record_inbound",
    "team_addresses",
]

logger = logging.getLogger(__name__)

_TOUCH = table_of(Touch)
_INBOUND = table_of(InboundMessage)
_TIMELINE = table_of(TimelineEvent)
_ACCOUNT = table_of(Account)

#: the kind of a mailbox's sync runs and cursor (``retain sync status``)
SOURCE_KIND = "mailbox"
#: the secret that holds the mailbox's password, unless the URL names another (``?secret=``)
DEFAULT_SECRET = "mailbox_password"
#: UIDs fetched (headers only) and written per transaction
BATCH = 200
#: the headers read of each message: nothing of its body
_HEADERS = (
    "MESSAGE-ID IN-REPLY-TO REFERENCES FROM SUBJECT DATE AUTO-SUBMITTED X-AUTOREPLY X-AUTORESPOND "
    "X-AUTO-RESPONSE-SUPPRESS PRECEDENCE CONTENT-TYPE RETURN-PATH"
)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_FETCHED = re.compile(rb"UID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
#: subjects automatic replies are sent with, for the mail systems that set none of the headers
_OUT_OF_OFFICE = re.compile(
    r"\b(out of (the )?office|automatic reply|auto[- ]?reply|auto[- ]?response|autoresponder|away from (the )?office"
    r"|on vacation|on holiday|on leave|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique"
    r"|absence du bureau|fuera de la oficina|respuesta autom[áa]tica|risposta automatica|fuori sede)\b",
    re.IGNORECASE,
)


# --- where -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """A mailbox folder, from its URL. ``str()`` is its name in Retain (the cursor's key): no password."""

    host: str
    port: int
    username: str
    folder: str = "INBOX"
    use_tls: bool = True  # imaps://: TLS from the first byte
    start_tls: bool | None = None  # imap://: None = STARTTLS when the server offers it
    secret: str = DEFAULT_SECRET  # the name of the secret that holds the password

    def __str__(self) -> str:
        scheme = "imaps" if self.use_tls else "imap"
        return f"{scheme}://{quote(self.username, safe='')}@{self.host}:{self.port}/{quote(self.folder, safe='')}"

    @property
    def source(self) -> str:
        """Its name among the sources (``sync_cursor``, ``retain sync status``): at most 100 characters."""
        name = f"mailbox:{self.username}@{self.host}:{self.port}/{self.folder}"
        if len(name) <= 100:
            return name
        return f"{name[:86]}~{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def parse_mailbox_url(url: str, what: str = "RETAIN_MAILBOX_URL") -> Mailbox:
    """``imaps://user@host[:993][/FOLDER]`` or ``imap://user@host[:143][/FOLDER][?starttls=…]``;
    ``?secret=<name>`` names the secret holding the password (default ``mailbox_password``).
    User and folder are URL-decoded. A :class:`ConfigError` names ``what`` and never repeats the URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("imap", "imaps"):
        raise ConfigError(f"{what} must start with imaps:// (or imap://), e.g. imaps://user@host:993/INBOX")
    if parts.password is not None:
        raise ConfigError(
            f"{what} holds a password: take it out of the URL and set it as a secret, "
            f"RETAIN_SECRET_{DEFAULT_SECRET.upper()} or the Prefect Secret block 'retain-mailbox-password'"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{what}: the port is not a number (URL-encode '@', ':' and '/' in the user)") from None
    if not parts.hostname:
        raise ConfigError(f"{what} names no host")
    if not parts.username:
        raise ConfigError(f"{what} names no user: imaps://USER@{parts.hostname}/INBOX")
    use_tls = parts.scheme == "imaps"
    start_tls: bool | None = None
    secret = DEFAULT_SECRET
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "starttls" and value.lower() in ("true", "false", "auto"):
            start_tls = {"true": True, "false": False, "auto": None}[value.lower()]
        elif name == "secret" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            secret = value
        else:
            raise ConfigError(f"{what}: the options are starttls=true|false|auto and secret=<name>, not {name!r}")
    if use_tls and start_tls:
        raise ConfigError(f"{what}: imaps:// is TLS already; starttls=true applies to imap:// only")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return Mailbox(
        host=parts.hostname,
        port=port or (993 if use_tls else 143),
        username=unquote(parts.username),
        folder=folder,
        use_tls=use_tls,
        start_tls=False if use_tls else start_tls,
        secret=secret,
    )


# --- what a message is -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What Retain reads of one message: who, about what, and whether a machine sent it."""

    uid: int
    message_id: str
    received_at: datetime  # when the mailbox got it (INTERNALDATE)
    answers: tuple[str, ...]  # Message-IDs it answers, the likeliest first
    from_address: str | None
    subject: str
    automatic: str | None  # why it is an automatic reply, or None


def automatic_reason(message: EmailMessage) -> str | None:
    """Why ``message`` was sent by a machine (an out-of-office, a vacation responder, a bounce), or
    None for a person's reply. RFC 3834's ``Auto-Submitted`` first, then the headers mail systems use
    instead, then the subject."""
    submitted = str(message.get("Auto-Submitted", "")).split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return f"Auto-Submitted: {submitted}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if message.get(name) is not None:
            return name
    precedence = str(message.get("Precedence", "")).strip().lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return f"Precedence: {precedence}"
    suppress = str(message.get("X-Auto-Response-Suppress", "")).lower()
    if "oof" in suppress.replace(" ", "").split(","):
        return "X-Auto-Response-Suppress: OOF"
    if message.get("Return-Path") is not None and str(message["Return-Path"]).strip() in ("<>", ""):
        return "a null sender (Return-Path: <>)"  # what RFC 3834 asks of automatic responders
    if message.get_content_type() == "multipart/report":
        return "a delivery report"
    subject = " ".join(str(message.get("Subject", "")).split())
    if found := _OUT_OF_OFFICE.search(subject):
        return f"out-of-office subject ({found.group(0).lower()!r})"
    return None


def _message_ids(value: Any) -> list[str]:
    return _MESSAGE_ID.findall(str(value or ""))


def _bounded_id(value: str) -> str:
    """A Message-ID as stored: as it is when it fits, else a hash of it (still unique)."""
    if len(value) <= 300:
        return value
    return f"<sha256.{hashlib.sha256(value.encode()).hexdigest()}@retain.invalid>"


def read_answer(uid: int, received_at: datetime, header: bytes) -> Answer:
    """One message's headers as Retain reads them."""
    message = BytesParser(policy=policy.default).parsebytes(header, headersonly=True)
    assert isinstance(message, EmailMessage)
    own = _message_ids(message.get("Message-ID"))
    # a message with no Message-ID (rare) is known by its headers: the same message, the same id
    message_id = own[0] if own else f"<sha256.{hashlib.sha256(header).hexdigest()[:40]}@retain.invalid>"
    answers = _message_ids(message.get("In-Reply-To")) + list(reversed(_message_ids(message.get("References"))))
    sender = parseaddr(str(message.get("From", "")))[1].strip().lower() or None
    return Answer(
        uid=uid,
        message_id=_bounded_id(message_id),
        received_at=received_at,
        answers=tuple(dict.fromkeys(answers)),
        from_address=sender[:320] if sender else None,
        subject=" ".join(str(message.get("Subject", "")).split())[:500],
        automatic=automatic_reason(message),
    )


# --- reading the folder ----------------------------------------------------------------------------


def _internaldate(text: bytes) -> datetime:
    """``02-Dec-2026 10:31:36 +0000`` (RFC 3501), aware UTC; month names are not the locale's."""
    day, month, rest = text.decode("ascii").strip().split("-", 2)
    year, clock, zone = rest.split()
    hour, minute, second = (int(x) for x in clock.split(":"))
    sign = -1 if zone[0] == "-" else 1
    offset = sign * (int(zone[1:3]) * 60 + int(zone[3:5]))
    local = datetime(
        int(year), _MONTHS[month], int(day), hour, minute, second, tzinfo=timezone(timedelta(minutes=offset))
    )
    return local.astimezone(UTC)


class _Folder:
    """An open IMAP connection with the folder selected read-only."""

    def __init__(self, imap: imaplib.IMAP4, mailbox: Mailbox) -> None:
        self.imap = imap
        self.mailbox = mailbox
        typ, data = imap.select(_quoted(mailbox.folder), readonly=True)
        if typ != "OK":
            raise ConfigError(f"mailbox {mailbox}: no folder {mailbox.folder!r}: {_text(data)}")
        validity = imap.response("UIDVALIDITY")[1]
        if not validity or validity[0] is None:
            raise IntegrationError(f"mailbox {mailbox}: the server gave no UIDVALIDITY for {mailbox.folder!r}")
        self.uidvalidity = int(validity[0])

    def uids_after(self, last_uid: int) -> list[int]:
        typ, data = self.imap.uid("SEARCH", f"UID {last_uid + 1}:*")
        if typ != "OK":
            raise IntegrationError(f"mailbox {self.mailbox}: UID SEARCH failed: {_text(data)}")
        # "n:*" always holds the newest message, even when its UID is n or below
        return sorted(u for u in (int(x) for x in b" ".join(d for d in data if d).split()) if u > last_uid)

    def headers(self, uids: Sequence[int]) -> Iterator[tuple[int, datetime, bytes]]:
        """(uid, INTERNALDATE, header bytes) of these messages; BODY.PEEK leaves them unread."""
        wanted = ",".join(map(str, uids))
        typ, data = self.imap.uid("FETCH", wanted, f"(UID INTERNALDATE BODY.PEEK[HEADER.FIELDS ({_HEADERS})])")
        if typ != "OK":
            raise IntegrationError(f"mailbox {self.mailbox}: UID FETCH failed: {_text(data)}")
        for item in data:
            if not isinstance(item, tuple) or len(item) < 2:
                continue  # the closing ")" of each message, or an unsolicited update
            envelope, header = item[0], item[1]
            uid, date = _FETCHED.search(envelope), _INTERNALDATE.search(envelope)
            if uid is None or date is None:
                continue
            yield int(uid.group(1)), _internaldate(date.group(1)), bytes(header)


def _quoted(folder: str) -> str:
    """A folder name as IMAP carries it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    encoded = imap_utf7(folder)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_utf7(name: str) -> str:
    """``name`` in IMAP's modified UTF-7: printable ASCII as it is (``&`` as ``&-``), anything else
    as ``&<modified base64 of UTF-16>-`` (``Réponses`` -> ``R&AOk-ponses``)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            packed = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii").rstrip("=")
            out.append("&" + packed.replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _text(data: Any) -> str:
    parts = data if isinstance(data, list) else [data]
    return " ".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts if p is not None)


@contextmanager
def _open(mailbox: Mailbox, password: str, ssl_context: ssl.SSLContext | None, timeout: float) -> Iterator[_Folder]:
    """The folder, logged in; IMAP and socket errors become :class:`IntegrationError` (a refused login
    a :class:`ConfigError` that says where the password comes from)."""
    context = ssl_context or ssl.create_default_context()
    where = f"mailbox {mailbox}"
    imap: imaplib.IMAP4 | None = None
    try:
        if mailbox.use_tls:
            imap = imaplib.IMAP4_SSL(mailbox.host, mailbox.port, ssl_context=context, timeout=timeout)
        else:
            imap = imaplib.IMAP4(mailbox.host, mailbox.port, timeout=timeout)
            offered = "STARTTLS" in imap.capabilities
            if mailbox.start_tls or (mailbox.start_tls is None and offered):
                if not offered:
                    raise IntegrationError(f"{where}: the server does not offer STARTTLS (starttls=true requires it)")
                imap.starttls(ssl_context=context)
        try:
            _login(imap, mailbox.username, password)
        except imaplib.IMAP4.error as exc:
            secret_env = f"RETAIN_SECRET_{mailbox.secret.upper()}"
            raise ConfigError(
                f"{where}: the server refused the login of {mailbox.username!r} ({redact(str(exc))}): "
                f"check the password in {secret_env} (or the Prefect Secret block "
                f"'retain-{mailbox.secret.replace('_', '-')}')"
            ) from None
        yield _Folder(imap, mailbox)
    except (imaplib.IMAP4.error, OSError, ssl.SSLError, EOFError) as exc:
        reason = (
            "timed out" if isinstance(exc, TimeoutError | socket.timeout) else redact(str(exc) or type(exc).__name__)
        )
        raise IntegrationError(f"{where}: {reason}") from exc
    finally:
        if imap is not None:
            _logout(imap)


def _login(imap: imaplib.IMAP4, username: str, password: str) -> None:
    """LOGIN, or AUTHENTICATE PLAIN (RFC 4616, UTF-8) when the user or password is not ASCII: LOGIN
    carries ASCII only."""
    if username.isascii() and password.isascii():
        imap.login(username, password)
    else:
        imap.authenticate("PLAIN", lambda _challenge: f"\0{username}\0{password}".encode())


def _logout(imap: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError, EOFError):  # the connection is gone already
        imap.logout()


# --- recording -------------------------------------------------------------------------------------


@dataclass
class PollResult:
    """What one poll of a mailbox found (counts of messages read this time)."""

    mailbox: str
    uidvalidity: int | None = None
    last_uid: int = 0
    read: int = 0
    replies: int = 0
    auto_replies: int = 0
    unknown: int = 0  # not an answer to a Retain email: left alone
    already: int = 0  # processed by an earlier poll (the folder was rebuilt, or another poller)
    team: int = 0  # written by the account's CSM or Retain's own sender in the thread: not the customer's
    restarted: bool = False  # the folder's UIDVALIDITY changed: read again from the start
    touches: list[str] = field(default_factory=list)  # keys of the touches marked replied

    def counts(self) -> dict[str, int]:
        return {
            "read": self.read,
            "replies": self.replies,
            "auto_replies": self.auto_replies,
            "unknown": self.unknown,
            "already": self.already,
            "team": self.team,
        }

    def line(self) -> str:
        again = " (its UIDVALIDITY changed: read from the start)" if self.restarted else ""
        return (
            f"mailbox {self.mailbox}{again}: {self.read} new messages, {self.replies} replies, "
            f"{self.auto_replies} automatic replies, {self.unknown} not about a Retain email (left alone), "
            f"{self.already} processed before"
        ) + (f", {self.team} from the team's side (not counted)" if self.team else "")


def _touches_answered(conn: Connection, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Message-ID -> the touch it belongs to (with its account's CSM), for those of ``ids`` that are Retain's."""
    columns = [_TOUCH.c.id, _TOUCH.c.key, _TOUCH.c.account_id, _TOUCH.c.playbook, _TOUCH.c.step_id,
               _TOUCH.c.enrollment_id, _TOUCH.c.sent_at, _TOUCH.c.provider_id, _ACCOUNT.c.csm_email]  # fmt: skip
    touches = select(*columns).join(_ACCOUNT, _ACCOUNT.c.id == _TOUCH.c.account_id)
    found: dict[str, dict[str, Any]] = {}
    for chunk in chunks(sorted(ids)):
        for row in conn.execute(touches.where(_TOUCH.c.provider_id.in_(chunk))).mappings():
            found[row["provider_id"]] = dict(row)
    # an email touch delivered without its id kept (a send resolved by hand after a crash): its
    # Message-ID still carries the hash of its key
    hashes = {m[1:33]: m for m in ids - set(found) if re.fullmatch(r"<[0-9a-f]{32}@[^>]+>", m)}
    if hashes:
        query = touches.where(
            _TOUCH.c.channel == "email",
            _TOUCH.c.provider_id.is_(None),
            _TOUCH.c.status.in_([TouchStatus.DELIVERED, TouchStatus.UNKNOWN]),
        )
        for row in conn.execute(query).mappings():
            digest = hashlib.sha256(str(row["key"]).encode()).hexdigest()[:32]
            if digest in hashes:
                found[hashes[digest]] = dict(row)
    return found


def _already(conn: Connection, ids: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    for chunk in chunks(sorted(set(ids))):
        seen.update(conn.execute(select(_INBOUND.c.message_id).where(_INBOUND.c.message_id.in_(chunk))).scalars())
    return seen


def _record(
    conn: Connection, mailbox: str, answers: list[Answer], now: datetime, result: PollResult, team: Collection[str]
) -> None:
    """Record one batch of messages in this transaction: inbound rows, replied touches, timeline.
    ``team``: addresses of the team's side (Retain's sender) besides each account's CSM."""
    touches = _touches_answered(conn, {i for a in answers for i in a.answers})
    seen = _already(conn, (a.message_id for a in answers))
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    replied: dict[int, datetime] = {}
    for answer in sorted(answers, key=lambda a: (a.received_at, a.uid)):
        touch = next((touches[i] for i in answer.answers if i in touches), None)
        if touch is None:
            result.unknown += 1
            continue
        if answer.from_address and answer.from_address in {*team, str(touch["csm_email"] or "").lower()}:
            result.team += 1  # the CSM answering in the thread is not the customer's reply
            continue
        if answer.message_id in seen:
            result.already += 1
            continue
        seen.add(answer.message_id)
        # a reply cannot come before its message, nor after now (clocks differ)
        at = min(answer.received_at, now)
        if touch["sent_at"] is not None:
            at = max(at, touch["sent_at"])
        kind = "auto_reply" if answer.automatic else "reply"
        rows.append({"message_id": answer.message_id, "mailbox": mailbox, "uid": answer.uid, "kind": kind,
                     "reason": answer.automatic[:200] if answer.automatic else None, "touch_id": touch["id"],
                     "from_address": answer.from_address, "subject": answer.subject, "received_at": at,
                     "processed_at": now})  # fmt: skip
        step = touch["step_id"] or "a touch"
        sender = answer.from_address or "an unknown sender"
        if answer.automatic:
            result.auto_replies += 1
            summary = f"automatic reply to {step} from {sender} ({answer.automatic}): not counted as a reply"
        else:
            result.replies += 1
            replied.setdefault(touch["id"], at)
            result.touches.append(str(touch["key"]))
            summary = f"reply to {step} from {sender} (mailbox)"
        events.append({"account_id": touch["account_id"], "at": at, "kind": "replied" if kind == "reply" else kind,
                       "playbook": touch["playbook"], "enrollment_id": touch["enrollment_id"], "step_id": touch["step_id"],
                       "summary": summary,
                       "detail": {"touch": touch["key"], "from": answer.from_address, "subject": answer.subject,
                                  "message_id": answer.message_id, "mailbox": mailbox,
                                  **({"automatic": answer.automatic} if answer.automatic else {})}})  # fmt: skip
    if rows:
        conn.execute(insert(_INBOUND), rows)
        conn.execute(insert(_TIMELINE), events)
        set_replied(conn, replied)


def record_inbound(
    conn: Connection, source: str, answers: list[Answer], now: datetime, team: Collection[str] = ()
) -> PollResult:
    """Record messages that came another way than this module's IMAP poll (an email provider's
    inbound-parse webhook, through ``retain web``), exactly as a poll records them: matched by
    ``In-Reply-To``/``References``, kept once by their Message-ID, the team's own messages not
    counted (``team``: see :func:`team_addresses`), in the caller's transaction."""
    result = PollResult(source, read=len(answers))
    _record(conn, source, answers, now, result, {t.lower() for t in team})
    return result


def _cursor(conn: Connection, source: str) -> tuple[int | None, int]:
    """(UIDVALIDITY, highest UID processed) of the mailbox's last committed batch, kept as
    ``"<uidvalidity>:<uid>"`` in ``sync_cursor``; (None, 0) before its first poll."""
    text = read_cursor(conn, source)
    if not isinstance(text, str) or not re.fullmatch(r"\d+:\d+", text):
        return None, 0
    validity, uid = text.split(":")
    return int(validity), int(uid)


def poll_mailbox(
    engine: Engine,
    mailbox: Mailbox,
    *,
    now: datetime,
    password: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    batch: int = BATCH,
    team: Collection[str] = (),
) -> PollResult:
    """Read the folder's new messages (see the module's documentation) and record the answers to
    touches. ``password`` defaults to the mailbox's secret; ``now`` (aware) is the poll's time.
    Messages from ``team`` (Retain's sender address) or from the account's CSM are not replies.

    Each batch of messages is written in one transaction with the cursor, so a poll stopped half way
    goes on where it stopped. Each poll is a sync run of the source :attr:`Mailbox.source` (kind
    ``mailbox``): ``retain sync status`` shows its cursor, its answers taken in, and why it failed."""
    source = mailbox.source
    result = PollResult(str(mailbox))
    lowered = {t.lower() for t in team}
    run = start_run(engine, source, SOURCE_KIND, now=now)
    try:
        secret = password if password is not None else resolve_secret(mailbox.secret)
        with engine.connect() as conn:
            uidvalidity, last_uid = _cursor(conn, source)
        with _open(mailbox, secret, ssl_context, timeout) as folder:
            if uidvalidity is not None and uidvalidity != folder.uidvalidity:
                result.restarted, last_uid = True, 0
            result.uidvalidity, result.last_uid = folder.uidvalidity, last_uid
            uids = folder.uids_after(last_uid)
            if not uids and uidvalidity != folder.uidvalidity:  # a new or rebuilt folder, empty
                with engine.begin() as conn:
                    commit_batch(conn, run, source, SOURCE_KIND, f"{folder.uidvalidity}:0", 0, now=now)
            for part in chunks(uids, batch):
                answers = []
                for uid, received_at, header in folder.headers(part):
                    try:
                        answers.append(read_answer(uid, received_at, header))
                    except (ValueError, TypeError, LookupError) as exc:  # a header the parser cannot read
                        logger.warning("%s: message UID %s cannot be read, left alone: %s", mailbox, uid, exc)
                        result.unknown += 1
                result.read += len(part)
                cursor = f"{folder.uidvalidity}:{max(part)}"
                _write_batch(engine, answers, cursor, run=run, mailbox=mailbox, now=now, result=result, team=lowered)
    except BaseException as exc:  # Ctrl-C and a cancelled flow run too: the run never stays "running"
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
        finish_run(engine, run, "failed", now=now, message=redact(why))
        raise
    finish_run(engine, run, "ok", now=now, message=result.line())
    logger.info("%s", result.line())
    return result


def _write_batch(
    engine: Engine,
    answers: list[Answer],
    cursor: str,
    *,
    run: int,
    mailbox: Mailbox,
    now: datetime,
    result: PollResult,
    team: Collection[str],
) -> None:
    """One batch and the cursor, in one transaction; if another poller recorded one of these
    messages first, the batch is read again against what it recorded (so counted once)."""
    for attempt in (1, 2):
        trial = PollResult(result.mailbox)
        try:
            with engine.begin() as conn:
                _record(conn, str(mailbox), answers, now, trial, team)
                commit_batch(
                    conn, run, mailbox.source, SOURCE_KIND, cursor, trial.replies + trial.auto_replies, now=now
                )
        except IntegrityError:
            if attempt == 2:
                raise
            continue
        break
    result.replies += trial.replies
    result.auto_replies += trial.auto_replies
    result.unknown += trial.unknown
    result.already += trial.already
    result.team += trial.team
    result.touches += trial.touches
    result.last_uid = int(cursor.split(":")[1])


def configured_mailbox(url: str | None, settings_url: str | None) -> Mailbox:
    """The mailbox a command polls: ``url`` (``--mailbox``), else ``RETAIN_MAILBOX_URL``."""
    if url:
        return parse_mailbox_url(url, "--mailbox")
    if settings_url:
        return parse_mailbox_url(settings_url)
    raise ConfigError("no mailbox to poll: set RETAIN_MAILBOX_URL (imaps://user@host:993/INBOX) or pass --mailbox URL")


def team_addresses(email_from: str | None) -> tuple[str, ...]:
    """The team's side of a thread, besides each account's CSM: Retain's own sender
    (``RETAIN_EMAIL_FROM``, e.g. ``Acme Success <success@acme.com>``)."""
    address = parseaddr(email_from or "")[1].strip().lower()
    return (address,) if "@" in address else ()
