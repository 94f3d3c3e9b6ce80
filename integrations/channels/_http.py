"""httpx clients made in one place, and HTTP answers mapped to Retain's errors.

httpx is imported when a channel first talks HTTP, not with the channels: a play or a tick that
sends email only (or writes to the outbox folder) never loads it. The channels' modules import
it in the methods that send."""

from __future__ import annotations

import email.utils
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from integrations.channels.secrets import MAX_STORED_BODY, redact
from models import IntegrationError, MaybeDeliveredError, RetryableError

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ChannelClient",
    "log_transport_error",
    "make_client",
    "may_have_arrived",
    "raise_for_answer",
    "retry_after_seconds",
    "translate_transport_error",
]

_log = logging.getLogger(__name__)  # answers worth another attempt, and requests that lost theirs

#: seconds for a whole request, and for connecting
DEFAULT_TIMEOUT = (10.0, 5.0)


def make_client(
    *, base_url: str = "", headers: dict[str, str] | None = None, timeout: httpx.Timeout | None = None
) -> httpx.AsyncClient:
    """An async client with connection reuse, a timeout, and Retain's user agent."""
    import httpx

    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": "Retain (+https://retain.dev)", **(headers or {})},
        timeout=timeout or httpx.Timeout(DEFAULT_TIMEOUT[0], connect=DEFAULT_TIMEOUT[1]),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        follow_redirects=False,
    )


class ChannelClient:
    """A channel's httpx client: the one passed in (its owner closes it), or one made on first use
    and made again after :meth:`aclose` — the outbox closes channels after each delivery run, and a
    client belongs to the event loop it was used on."""

    def __init__(self, given: httpx.AsyncClient | None = None) -> None:
        self._given = given
        self._own: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._given is not None:
            return self._given
        if self._own is None or self._own.is_closed:
            self._own = make_client()
        return self._own

    async def aclose(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            await own.aclose()


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        if when is None:
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def raise_for_answer(response: httpx.Response, what: str) -> None:
    """Map an HTTP answer: 2xx passes; 429 and 5xx are retryable; other 4xx are permanent."""
    if response.is_success:
        return
    # redacted before it is cut (a cut never leaves half a secret), and from a bounded window
    body = redact(response.text[: 40 * MAX_STORED_BODY], limit=MAX_STORED_BODY)
    message = f"{what}: HTTP {response.status_code} {response.reason_phrase}: {body}".rstrip(": ")
    if response.status_code == 429 or response.status_code >= 500:
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        _log.info("%s: HTTP %d, worth another attempt%s", what, response.status_code, _after(retry_after))
        raise RetryableError(message, status_code=response.status_code, response=body, retry_after=retry_after)
    raise IntegrationError(message, status_code=response.status_code, response=body)


def may_have_arrived(exc: httpx.HTTPError) -> bool:
    """Whether a request that failed with ``exc`` may still have reached the receiver: anything but
    failing to connect (a read timeout, a connection lost while waiting for the answer, ...)."""
    import httpx

    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def translate_transport_error(exc: httpx.HTTPError, what: str) -> RetryableError:
    """Failing to connect is worth another attempt; losing the answer after the request left means
    it may have been delivered (the outbox then re-sends only to receivers that drop repeats)."""
    message = redact(f"{what}: {type(exc).__name__}: {exc}")  # an exception's text may quote the URL
    error = MaybeDeliveredError(message) if may_have_arrived(exc) else RetryableError(message)
    log_transport_error(error)
    return error


def log_transport_error(error: RetryableError) -> None:
    """Say in the log whether a request that got no answer may have arrived."""
    if isinstance(error, MaybeDeliveredError):
        _log.warning("%s (no answer: it may have been delivered)", error)
    else:
        _log.info("%s (not sent: worth another attempt)", error)


def _after(retry_after: float | None) -> str:
    return "" if retry_after is None else f" (Retry-After {retry_after:g} s)"
