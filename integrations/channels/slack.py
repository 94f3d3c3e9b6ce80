"""Slack: through an incoming webhook, or as a bot (``chat.postMessage``), which can also reach a
person by email (``users.lookupByEmail``).

Slack drops nothing by key, so a post whose answer is lost (a read timeout, a connection dropped
after the request left) is never retried: it raises :class:`models.MaybeDeliveredError` and the
outbox marks the touch ``unknown``, as it does a send interrupted by a crash.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from integrations.channels._http import (
    ChannelClient,
    log_transport_error,
    may_have_arrived,
    raise_for_answer,
    retry_after_seconds,
)
from integrations.channels.base import Delivery, Receipt
from models import ConfigError, IntegrationError, MaybeDeliveredError, RetryableError

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_API_URL", "SlackChannel"]

_log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"

#: ``{"ok": false, "error": ...}`` answers that another attempt may fix; every other error is permanent
_TRANSIENT_ERRORS = frozenset({"ratelimited", "service_unavailable", "internal_error"})


class SlackChannel:
    """Posts ``{"kind": "slack", "channel", "text"}`` payloads. ``channel`` is ``#name`` (or a channel
    id) or ``@person@example.com``.

    With ``bot_token`` a person is looked up by email and messaged directly. With ``webhook_url``
    only, ``#name`` is passed as ``channel`` (which older webhooks honour and newer ones ignore), and
    a message for a person goes to the webhook's channel, starting "For <email>:".
    """

    name = "slack"
    dedupes_by_key = False  # Slack posts a repeated message again
    max_per_second = 1.0  # Slack: about one message a second per channel

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        bot_token: str | None = None,
        api_url: str = DEFAULT_API_URL,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not webhook_url and not bot_token:
            raise ConfigError("Slack needs RETAIN_SLACK_BOT_TOKEN or RETAIN_SLACK_WEBHOOK_URL")
        if webhook_url and not webhook_url.startswith(("https://", "http://")):
            raise ConfigError("RETAIN_SLACK_WEBHOOK_URL is not an http(s) URL")
        self._webhook_url = None if bot_token else webhook_url  # a bot can do all a webhook can
        self._token = bot_token
        self._api_url = api_url if api_url.endswith("/") else api_url + "/"
        self._client = ChannelClient(client)
        self._user_ids: dict[str, str] = {}  # email -> Slack user id, for this channel's life

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def send(self, delivery: Delivery) -> Receipt:
        payload = delivery.payload
        if payload.get("kind", "slack") != "slack":
            raise IntegrationError(f"slack: cannot send a {payload.get('kind')!r} payload")
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise IntegrationError("slack: the payload has no text")
        target = str(payload.get("channel") or "").strip()
        person = target[1:] if target.startswith("@") and "@" in target[1:] else None
        if self._token:
            if not target:
                raise IntegrationError("slack: the payload names no channel")
            return await self._post_as_bot(target, person, text)
        return await self._post_to_webhook(target, person, text)

    async def _post_to_webhook(self, target: str, person: str | None, text: str) -> Receipt:
        body: dict[str, Any] = {"text": text}
        if person:
            body["text"] = f"For {person}: {text}"
        elif target:
            body["channel"] = target
        what = f"slack webhook to {target or 'its channel'}"
        response = await self._request("POST", str(self._webhook_url), what, body, posts=True)
        raise_for_answer(response, what)  # webhooks answer errors as 4xx with a short text body
        return Receipt(provider_id=None, detail=f"HTTP {response.status_code} {response.text[:100]}".rstrip())

    async def _post_as_bot(self, target: str, person: str | None, text: str) -> Receipt:
        channel = await self._user_id(person) if person else target
        answer = await self._call("chat.postMessage", f"to {target}", {"channel": channel, "text": text})
        return Receipt(provider_id=f"{answer.get('channel', channel)}:{answer.get('ts', '')}", detail="ok")

    async def _user_id(self, email: str) -> str:
        key = email.lower()
        if key not in self._user_ids:
            answer = await self._call("users.lookupByEmail", f"for {email}", params={"email": email})
            user_id = (answer.get("user") or {}).get("id")
            if not user_id:
                raise IntegrationError(f"slack users.lookupByEmail for {email}: the answer has no user id")
            self._user_ids[key] = user_id
        return self._user_ids[key]

    async def _call(
        self, method: str, about: str, body: dict[str, Any] | None = None, *, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One Web API call; Slack answers most errors as HTTP 200 with ``{"ok": false}``."""
        what = f"slack {method} {about}"
        if body is None:
            response = await self._request("GET", self._api_url + method, what, params=params)
        else:
            # the only POST is chat.postMessage; lookups are GETs, safe to repeat
            response = await self._request("POST", self._api_url + method, what, body, posts=True)
        raise_for_answer(response, what)
        try:
            answer = response.json()
        except ValueError:
            raise IntegrationError(f"{what}: the answer is not JSON: {response.text[:200]}") from None
        if not isinstance(answer, dict):
            raise IntegrationError(f"{what}: the answer is not a JSON object: {response.text[:200]}")
        if answer.get("ok") is True:
            return answer
        error = str(answer.get("error") or "unknown_error")
        message = f"{what}: {error}"
        if error == "users_not_found":
            message = f"{what}: no Slack user has this email (users_not_found)"
        elif answer.get("needed"):
            message += f" (needs the {answer['needed']} scope)"
        if error in _TRANSIENT_ERRORS:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            _log.info(
                "%s, worth another attempt%s",
                message,
                "" if retry_after is None else f" (Retry-After {retry_after:g} s)",
            )
            raise RetryableError(message, status_code=response.status_code, response=error, retry_after=retry_after)
        raise IntegrationError(message, status_code=response.status_code, response=error)

    async def _request(
        self,
        method: str,
        url: str,
        what: str,
        body: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        posts: bool = False,
    ) -> httpx.Response:
        """``posts``: the request posts the message, so losing its answer means it may be posted."""
        import httpx  # on the first request (see integrations.channels._http)

        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {} if body is None else {"Content-Type": "application/json; charset=utf-8"}
        if self._token:  # the token goes in this header only, never in a URL or an error
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            return await self._http().request(method, url, content=content, headers=headers, params=params)
        except httpx.HTTPError as exc:
            # not translate_transport_error: an exception's text may quote the webhook URL (a secret)
            message = f"{what}: {type(exc).__name__}: {self._redact(str(exc))}"
            error = MaybeDeliveredError(message) if posts and may_have_arrived(exc) else RetryableError(message)
            log_transport_error(error)
            raise error from exc

    def _redact(self, text: str) -> str:
        for secret in (self._webhook_url, self._token):
            if secret:
                text = text.replace(secret, "***")
        return text

    async def aclose(self) -> None:
        await self._client.aclose()
