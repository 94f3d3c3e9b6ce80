"""Webhooks: a JSON body to any URL, signed with HMAC-SHA256, carrying the touch key as
``Idempotency-Key`` so the receiver can drop a repeat."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import TYPE_CHECKING

from integrations.channels._http import ChannelClient, raise_for_answer, translate_transport_error
from integrations.channels.base import Delivery, Receipt
from models import IntegrationError

if TYPE_CHECKING:
    import httpx

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel", "sign", "verify"]

SIGNATURE_HEADER = "X-Retain-Signature"
TIMESTAMP_HEADER = "X-Retain-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=<hex>``: HMAC-SHA256 over ``"<timestamp>.<body>"`` (the scheme Stripe and Slack use)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300, now: float | None = None
) -> bool:
    """What a receiver runs: the signature matches and the timestamp is recent (no replays)."""
    current = time.time() if now is None else now
    if abs(current - float(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel:
    """POST/PUT/PATCH ``payload["json"]`` to ``payload["url"]``."""

    name = "webhook"
    dedupes_by_key = True  # receivers are expected to honour Idempotency-Key

    def __init__(self, *, signing_secret: str | None = None, client: httpx.AsyncClient | None = None) -> None:
        self._secret = signing_secret
        self._client = ChannelClient(client)

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def send(self, delivery: Delivery) -> Receipt:
        payload = delivery.payload
        url = payload.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            # never echo the URL: it is often a secret (or holds one in its path or query)
            shown = "is empty" if not url else f"is not an http(s) URL ({len(str(url))} characters, not shown)"
            raise IntegrationError(f"webhook: the step's url {shown}")
        body = json.dumps(payload.get("json") or {}, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Idempotency-Key": delivery.key, TIMESTAMP_HEADER: timestamp}
        headers.update(payload.get("headers") or {})
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        import httpx  # on the first send (see integrations.channels._http)

        method = payload.get("method", "POST")
        try:
            response = await self._http().request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, _what(method, url)) from exc
        if not response.is_success:  # (parsing the URL for the message costs: only when there is one)
            raise_for_answer(response, _what(method, url))
        return Receipt(provider_id=response.headers.get("X-Request-Id"), detail=f"HTTP {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _what(method: str, url: str) -> str:
    """The request, for a message: the host only (paths and queries of webhook URLs often hold tokens)."""
    import httpx

    target = httpx.URL(url)
    return f"webhook {method} {target.scheme}://{target.host}"
