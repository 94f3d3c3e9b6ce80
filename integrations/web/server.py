"""Running the app: a uvicorn server on a host and port, refused beyond this machine while the
links are signed with the local-only default secrets."""

from __future__ import annotations

import ipaddress
import logging
import re
import threading

import uvicorn
from sqlalchemy.engine import Engine

from integrations.links import LinkConfig
from integrations.web.app import create_app
from models import ConfigError, Settings

__all__ = ["TokensOutOfLogs", "WebThread", "check_exposure", "is_loopback", "web_server"]

_TOKEN = re.compile(r"([?&]t=)[^&\s\"]+")


class TokensOutOfLogs(logging.Filter):
    """Keeps the links' tokens out of the access log: a token lets whoever holds it unsubscribe
    its contact or answer its survey, so ``?t=…`` is logged as ``?t=[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, links: LinkConfig) -> None:
    """Refuse to listen beyond this machine while a link secret is the public default (anyone
    could then sign a link for anyone)."""
    defaults = links.default_secrets()
    if defaults and not is_loopback(host):
        raise ConfigError(
            f"retain web on {host} would accept links signed with the local-only default secrets: "
            f"set {' and '.join(defaults)} to long random values (the same the emails are written with), "
            "or listen on 127.0.0.1"
        )


def web_server(
    engine: Engine,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    activation_event: str | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the app (``.run()`` serves until Ctrl-C or ``should_exit``)."""
    links = LinkConfig.from_environment()
    check_exposure(host, links)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, TokensOutOfLogs) for f in access.filters):
        access.addFilter(TokensOutOfLogs())
    config = uvicorn.Config(
        create_app(engine, settings, links=links, activation_event=activation_event),
        host=host,
        port=port,
        proxy_headers=True,
        forwarded_allow_ips=settings.web_forwarded_allow_ips,
        server_header=False,
        log_level=log_level,
        lifespan="off",
    )
    return uvicorn.Server(config)


class WebThread:
    """The server in a thread of its own, beside something else (``retain serve --web``)."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.run, name="retain-web", daemon=True)

    def __enter__(self) -> WebThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
