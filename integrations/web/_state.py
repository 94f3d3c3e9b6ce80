"""What every route shares (:class:`Web`), reached through the request (:func:`web`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from integrations.links import LinkConfig
from models import Settings, utcnow

__all__ = ["Web", "WebState", "web"]


@dataclass
class Web:
    """The database, the settings, the links' configuration and the clock."""

    engine: Engine
    settings: Settings
    links: LinkConfig
    now: Callable[[], datetime] = field(default=utcnow)
    #: the track event that means onboarded (``sources.yaml``), for product events over HTTP
    activation_event: str | None = None


def web(request: Request) -> Web:
    """The app's :class:`Web`."""
    found: Web = request.app.state.web
    return found


#: a route parameter that receives the app's :class:`Web`
WebState = Annotated[Web, Depends(web)]
