"""Two guards in front of every route, as plain ASGI middleware: a body size limit (413) and a
per-address rate limit (429 with ``Retry-After``)."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp as App
from starlette.types import Message, Receive, Scope, Send

__all__ = ["BodyLimit", "RateLimit", "TokenBuckets"]


async def _plain(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        *(headers or [])],
        }
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses a request whose body is larger than ``max_bytes`` (or its path's own limit in
    ``by_path``): at once when ``Content-Length`` says so, else as soon as the streamed body passes
    the limit (the route never sees it)."""

    def __init__(self, app: App, max_bytes: int, by_path: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.by_path = app, max_bytes, by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(scope.get("path", ""), self.max_bytes)
        message = f"the request body is larger than {limit} bytes"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _plain(send, 400, "Content-Length is not a number")
                    return
                if declared > limit:
                    await _plain(send, 413, message)
                    return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            event = await receive()
            if event.get("type") == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    # answer now, and tell the route the client is gone: whatever it does next
                    # (a parser that turns errors into 400s included) is not sent
                    refused = True
                    if not started:
                        await _plain(send, 413, message)
                    return {"type": "http.disconnect"}
            return event

        async def watched(event: Message) -> None:
            nonlocal started
            if refused:
                return
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, counted, watched)


class TokenBuckets:
    """One bucket per client address: ``per_minute`` requests, refilled evenly. Thread-safe (the
    routes run in a thread pool); forgets full buckets when it holds too many."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_addresses: int = 50_000):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, address: str) -> float:
        """0 when the request may go on; else the seconds until it may."""
        with self._lock:
            now = self.clock()
            tokens, when = self._buckets.get(address, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.rate)
            if tokens >= 1:
                self._buckets[address] = (tokens - 1, now)
                if len(self._buckets) > self.max_addresses:
                    self._forget_full(now)
                return 0.0
            self._buckets[address] = (tokens, now)
            return (1 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        for address, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * self.rate >= self.capacity:
                del self._buckets[address]


class RateLimit:
    """At most ``buckets``' rate of requests from one client address (after a trusted proxy's
    ``X-Forwarded-For``, which uvicorn applies to the scope); beyond it, 429 with ``Retry-After``."""

    def __init__(self, app: App, buckets: TokenBuckets) -> None:
        self.app, self.buckets = app, buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.buckets.take(address)
        if wait > 0:
            retry = str(max(1, math.ceil(wait))).encode()
            await _plain(send, 429, "too many requests from this address: try again later", [(b"retry-after", retry)])
            return
        await self.app(scope, receive, send)
