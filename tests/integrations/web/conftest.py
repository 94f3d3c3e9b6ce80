"""The web app through its ASGI interface (httpx's ASGI transport): a client per test, a clock
that tests move, and a migrated SQLite file database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from integrations.links import LinkConfig
from integrations.web import create_app
from models import Settings

T0 = datetime(2027, 3, 2, 15, 0, tzinfo=UTC)
LINKS = LinkConfig(
    public_url="https://retain.acme.test",
    unsubscribe_secret="unsubscribe-test-secret",
    survey_secret="survey-test-secret",
    days=30,
)


@dataclass
class Clock:
    at: datetime = T0
    monotonic: float = 1000.0

    def now(self) -> datetime:
        return self.at

    def tick(self) -> float:
        return self.monotonic

    def travel(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.at += step
        self.monotonic += step.total_seconds()


@dataclass
class Client:
    """Requests to the app as one client address would send them."""

    app: Any
    address: str = "203.0.113.7"
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(self.address, 50_000))
            async with httpx.AsyncClient(transport=transport, base_url="https://retain.acme.test") as client:
                return await client.request(method, url, **options)

        return asyncio.run(go())

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_client(engine: Engine, clock: Clock, *, address: str = "203.0.113.7", **settings: Any) -> Client:
    app = create_app(engine, Settings(**settings), links=LINKS, now=clock.now, rate_clock=clock.tick)
    return Client(app, address)


@pytest.fixture
def client(sqlite_engine: Engine, clock: Clock) -> Iterator[Client]:
    yield make_client(sqlite_engine, clock)
