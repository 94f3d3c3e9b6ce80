"""Local servers that speak the real protocols: an SMTP server (aiosmtpd) and an HTTP server
(stdlib), both on 127.0.0.1, recording what they receive and answering what a test asks."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# --- TLS: one self-signed certificate for 127.0.0.1 per session -----------------------------------


@dataclass(frozen=True)
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext  # trusts only the test certificate
    cert_file: Path  # for servers that read PEM files (dovecot)
    key_file: Path


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("tls")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(cert_pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return Tls(server=server, client=client, cert_file=folder / "cert.pem", key_file=folder / "key.pem")


# --- SMTP -------------------------------------------------------------------------------------


@dataclass
class Received:
    """One message as the SMTP server got it."""

    peer: Any  # (host, port) of the client connection: the same for messages sent on one connection
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    tls: bool
    login: str | None


@dataclass
class SmtpSink:
    """The handler: keeps accepted messages, and refuses what a test asks it to refuse."""

    messages: list[Received] = field(default_factory=list)
    data_reply: str | None = None  # e.g. "451 4.3.0 Try again later": the answer to the next DATA
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> refusal
    logins: list[str] = field(default_factory=list)
    quits: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            reply, self.data_reply = self.data_reply, None
            return reply
        raw = envelope.original_content
        self.messages.append(
            Received(
                peer=session.peer,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                message=BytesParser(policy=policy.default).parsebytes(raw),  # type: ignore[arg-type]
                raw=raw,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=self.logins[-1] if session.authenticated else None,
            )
        )
        return "250 2.0.0 Ok: queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quits += 1
        return "221 Bye"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    sink: SmtpSink

    def url(self, scheme: str = "smtp", userinfo: str = "", query: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{at}{self.host}:{self.port}" + (f"?{query}" if query else "")


SMTP_USER, SMTP_PASSWORD = "retain", "pa:ss/w@rd-S3CRET"  # characters that must be URL-encoded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def start_smtp(tls: Tls) -> Iterator[Callable[..., SmtpServer]]:
    """Starts SMTP servers: ``start_smtp()`` plain; ``auth=True`` offers AUTH (the test user and
    password); ``starttls=True`` offers STARTTLS (and AUTH only after it); ``implicit_tls=True``
    speaks TLS from the first byte (smtps)."""
    controllers: list[Controller] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            server.event_handler.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    def start(*, auth: bool = False, starttls: bool = False, implicit_tls: bool = False) -> SmtpServer:
        sink = SmtpSink()
        options: dict[str, Any] = {}
        if auth:
            # aiosmtpd counts only STARTTLS as TLS: with implicit TLS, AUTH must not "require" it
            options.update(authenticator=authenticate, auth_require_tls=starttls)
        if starttls:
            options.update(tls_context=tls.server, require_starttls=True)
        controller = Controller(
            sink,
            hostname="127.0.0.1",
            port=free_port(),
            ssl_context=tls.server if implicit_tls else None,
            ready_timeout=5,
            **options,
        )
        controller.start()
        controllers.append(controller)
        return SmtpServer("127.0.0.1", controller.port, sink)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp_server(start_smtp: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server (no TLS, no AUTH), as a local relay."""
    return start_smtp()


# --- HTTP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], Any]  # status, headers, body (bytes, str, or JSON-able)


class HttpServer:
    """A real HTTP server on 127.0.0.1: records every request; ``respond(request)`` makes the answer
    (default ``200 {"ok": true}``); ``queue`` holds answers to give first, one per request."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.queue: list[Answer] = []
        self.respond: Callable[[Request], Answer] = lambda request: (200, {}, {"ok": True})
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                target = urlsplit(self.path)
                request = Request(
                    self.command,
                    target.path,
                    parse_qs(target.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                owner.requests.append(request)
                status, headers, body = owner.queue.pop(0) if owner.queue else owner.respond(request)
                if isinstance(body, bytes):
                    data = body
                elif isinstance(body, str):
                    data = body.encode()
                    headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
                else:
                    data = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    server = HttpServer()
    yield server
    server.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    return free_port()


# --- IMAP (dovecot) -------------------------------------------------------------------------------

MAILBOX_USER, MAILBOX_PASSWORD = "success@acme.example", "imap-S3CRET"


@dataclass(frozen=True)
class Dovecot:
    """A real IMAP server (Debian's dovecot) on 127.0.0.1 with one mailbox, ``MAILBOX_USER``: plain
    IMAP on ``imap_port``, TLS on ``imaps_port`` (the session's test certificate), and LMTP on
    ``lmtp_port``, through which mail is delivered into it."""

    imap_port: int
    imaps_port: int
    lmtp_port: int
    log: Path

    def url(self, *, tls: bool = False, query: str = "starttls=false") -> str:
        user = MAILBOX_USER.replace("@", "%40")
        if tls:
            return f"imaps://{user}@127.0.0.1:{self.imaps_port}/INBOX"
        return f"imap://{user}@127.0.0.1:{self.imap_port}/INBOX" + (f"?{query}" if query else "")

    def empty(self) -> None:
        """Delete every message of the mailbox (each test starts from an empty one)."""
        import imaplib

        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10) as imap:
            imap.login(MAILBOX_USER, MAILBOX_PASSWORD)
            imap.select("INBOX")
            if imap.search(None, "ALL")[1][0]:
                imap.store("1:*", "+FLAGS", "(\\Deleted)")
                imap.expunge()

    def deliver(self, raw: bytes, mail_from: str = "") -> None:
        """Deliver one message into the mailbox (LMTP), as a mail server would."""
        import smtplib

        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=10) as lmtp:
            lmtp.sendmail(mail_from, [MAILBOX_USER], raw)


def _dovecot_unavailable(reason: str) -> None:
    """Skip an IMAP test with the reason, or, under ``CI=true`` (.ci/run installs dovecot), fail it."""
    from tests.conftest import in_ci

    if in_ci():
        pytest.fail(f"{reason} (CI=true: the IMAP tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def _dovecot_config(base: Path, cert_file: Path | None, key_file: Path | None, ports: dict[str, int]) -> str:
    """A dovecot of its own: its own folder, ports and passwd-file user, run as this user (as root,
    its processes and the mail belong to ``nobody``: dovecot never keeps mail as root). No chroot:
    only root may chroot."""
    import grp
    import os
    import pwd

    if os.geteuid() == 0:
        account = pwd.getpwnam("nobody")
        os.chown(base / "mail", account.pw_uid, account.pw_gid)
    else:
        account = pwd.getpwuid(os.getuid())
    group = grp.getgrgid(account.pw_gid).gr_name
    ssl = f"ssl = yes\nssl_cert = <{cert_file}\nssl_key = <{key_file}" if cert_file and key_file else "ssl = no"
    return f"""\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
{ssl}
auth_mechanisms = plain login
disable_plaintext_auth = no
default_internal_user = {account.pw_name}
default_internal_group = {group}
default_login_user = {account.pw_name}
first_valid_uid = {min(account.pw_uid, 500)}
first_valid_gid = {min(account.pw_gid, 500)}
mail_location = maildir:{base}/mail/%n
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/passwd
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={base}/mail/%n
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {ports["imaps"]}
  }}
}}
service anvil {{
  chroot =
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {ports["lmtp"]}
  }}
}}
"""


class DovecotUnavailable(Exception):
    """Dovecot is not installed, or did not start (the message says why)."""


@contextlib.contextmanager
def run_dovecot(cert_file: Path | None = None, key_file: Path | None = None) -> Iterator[Dovecot]:
    """Debian's dovecot with its own configuration, ports, passwd-file user and maildir in a
    temporary folder, stopped (and the folder removed) after. Without a certificate, no TLS port.
    :class:`DovecotUnavailable` when it is not installed (``apt-get install dovecot-imapd
    dovecot-lmtpd``) or does not start."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile
    import time

    binary = shutil.which("dovecot") or next((p for p in ("/usr/sbin/dovecot",) if Path(p).exists()), None)
    if binary is None:
        raise DovecotUnavailable("dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
    # not under pytest's temporary folder: as root, the mail belongs to nobody, who must reach it
    base = Path(tempfile.mkdtemp(prefix="retain-dovecot-"))
    base.chmod(0o755)
    (base / "mail").mkdir()
    (base / "passwd").write_text(f"{MAILBOX_USER.split('@')[0]}:{{PLAIN}}{MAILBOX_PASSWORD}\n")
    ports = {"imap": free_port(), "imaps": free_port() if cert_file else 0, "lmtp": free_port()}
    (base / "dovecot.conf").write_text(_dovecot_config(base, cert_file, key_file, ports))
    log = base / "dovecot.log"
    with (base / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-F", "-c", str(base / "dovecot.conf")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its children in one group of its own, stopped together
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", ports["imap"]), timeout=1) as probe:
                    if probe.recv(100).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                said = (base / "stderr.log").read_text(errors="replace") + (
                    log.read_text(errors="replace") if log.exists() else ""
                )
                raise DovecotUnavailable(f"dovecot did not start: {said[-800:]}")
            time.sleep(0.1)
        yield Dovecot(ports["imap"], ports["imaps"], ports["lmtp"], log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(tls: Tls) -> Iterator[Dovecot]:
    """Dovecot for the session (:func:`run_dovecot`, TLS with the session's test certificate).
    Skips (fails under CI=true) when dovecot is not installed or does not start."""
    try:
        with run_dovecot(tls.cert_file, tls.key_file) as server:
            yield server
    except DovecotUnavailable as exc:
        _dovecot_unavailable(str(exc))


@pytest.fixture
def mailbox(dovecot: Dovecot) -> Dovecot:
    """The session's dovecot with its mailbox emptied for this test."""
    dovecot.empty()
    return dovecot


@dataclass
class MailRelay:
    """What the handler of an SMTP server that delivers into the dovecot mailbox keeps: the
    customers' side, who answer Retain's email by SMTP."""

    dovecot: Dovecot
    delivered: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        await asyncio.to_thread(self.dovecot.deliver, envelope.original_content, envelope.mail_from)
        self.delivered += 1
        return "250 2.0.0 Ok: delivered"


@pytest.fixture
def mail_relay(mailbox: Dovecot) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1 (aiosmtpd) that delivers every message into the (emptied)
    dovecot mailbox through LMTP. ``.sink`` is the :class:`MailRelay`."""
    relay = MailRelay(mailbox)
    controller = Controller(relay, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", controller.port, relay)  # type: ignore[arg-type]
    finally:
        controller.stop()
