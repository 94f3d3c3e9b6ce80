"""The inbound web app (``retain web``): one-click unsubscribe, survey pages, provider events,
inbound replies and product events over HTTP. Built by :func:`create_app`."""

from integrations.web._state import Web
from integrations.web.app import create_app

__all__ = ["Web", "create_app"]
