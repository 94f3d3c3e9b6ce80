"""Local servers that speak the real protocols: an SMTP server (aiosmtpd) and an HTTP server
(stdlib), both on 127.0.0.1, recording what they receive and answering what a test asks."""

from __future__ import annotations

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
    return Tls(server=server, client=client)


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
