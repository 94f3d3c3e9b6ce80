"""The inbound web app (``retain web``): one ASGI application, one module per route group.

:func:`create_app` builds it on a database engine and the settings. Every route is guarded by a
body size limit and a per-address rate limit (:mod:`._limits`); a link that was forged, altered
or has expired gets a page that says so (and changes nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy.engine import Engine
from starlette.responses import Response

from integrations.links import ExpiredLink, InvalidLink, LinkConfig
from integrations.web import approvals, health, providers, segment, surveys, unsubscribe
from integrations.web._limits import BodyLimit, RateLimit, TokenBuckets
from integrations.web._pages import accepted_language, error_page
from integrations.web._state import Web
from models import Settings, utcnow

__all__ = ["create_app"]


def _invalid_link(request: Request, exc: Exception) -> Response:
    lang = accepted_language(request)
    if isinstance(exc, ExpiredLink):
        return error_page("expired", lang=lang, status=410, day=exc.valid_through)
    return error_page("invalid", lang=lang, status=400)


def create_app(
    engine: Engine,
    settings: Settings | None = None,
    *,
    links: LinkConfig | None = None,
    now: Callable[[], datetime] | None = None,
    rate_clock: Callable[[], float] | None = None,
    activation_event: str | None = None,
) -> Any:
    """The ASGI application. ``links`` defaults to the environment's (the same the emails were
    written with); ``now`` and ``rate_clock`` let tests travel in time; ``activation_event`` is the
    playbooks folder's (``sources.yaml``), for product events over HTTP."""
    settings = settings or Settings()
    app = FastAPI(title="Retain", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = Web(engine, settings, links or LinkConfig.from_environment(), now or utcnow, activation_event)
    app.add_exception_handler(InvalidLink, _invalid_link)
    for routes in (health, unsubscribe, surveys, providers, segment, approvals):
        app.include_router(routes.router)
    buckets = TokenBuckets(settings.web_rate_limit, clock=rate_clock or time.monotonic)
    # outermost first: the rate limit refuses before a body is read
    # an inbound-parse webhook carries the whole message, attachments included
    limits = {"/webhooks/inbound": max(settings.web_max_inbound_body, settings.web_max_body)}
    return RateLimit(BodyLimit(app, settings.web_max_body, limits), buckets)
