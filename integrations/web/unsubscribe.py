"""``/unsubscribe``: the link in every email, from a signed token per contact and kind of message.

``GET`` shows what the link would do and a button; ``POST`` unsubscribes (RFC 8058 one-click: a
mail program posts ``List-Unsubscribe=One-Click`` to the same URL, no page in between), through
the same suppression as ``retain contacts unsubscribe``; the page says what happened and offers
to undo (``POST /unsubscribe/undo``), which resubscribes through ``retain contacts
resubscribe``'s path. Both are on the account's timeline. Repeating a POST changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.responses import Response

from integrations.links import InvalidLink, verify
from integrations.sources import CHANNELS, resubscribe, suppression_of, unsubscribe
from integrations.web._pages import accepted_language, error_page, language_of, page
from integrations.web._state import Web, WebState
from models import Account, Contact, table_of

__all__ = ["router"]

router = APIRouter()

_CONTACT = table_of(Contact)
_ACCOUNT = table_of(Account)


@dataclass(frozen=True)
class _Reader:
    """Whom a token names: the address, the kind of message, and the page's language."""

    email: str
    channel: str
    lang: str
    token: str


def _reader(web: Web, token: str, lang: str = "en") -> _Reader | Response:
    subject, _ = verify(web.links.unsubscribe_key, "unsubscribe", token, web.now().date())
    channel, _, who = subject.partition("|")
    if channel not in CHANNELS:
        raise InvalidLink("the unsubscribe link names no kind of message")
    if who.startswith("email:"):
        return _Reader(who.removeprefix("email:"), channel, "en", token)
    if not who.startswith("contact:") or not who.removeprefix("contact:").isdigit():
        raise InvalidLink("the unsubscribe link names nobody")
    with web.engine.connect() as conn:
        found = conn.execute(
            select(_CONTACT.c.email, _CONTACT.c.preferences, _ACCOUNT.c.custom)
            .join(_ACCOUNT, _ACCOUNT.c.id == _CONTACT.c.account_id)
            .where(_CONTACT.c.id == int(who.removeprefix("contact:")))
        ).first()
    if found is None:
        return error_page("gone", lang=lang, status=404)
    return _Reader(found.email.lower(), channel, language_of(found.preferences, found.custom), token)


def _unsubscribed(web: Web, reader: _Reader) -> bool:
    """Whether the address is unsubscribed from the token's kind of message (or everything)."""
    with web.engine.connect() as conn:
        found = suppression_of(conn, reader.email)
        flags = conn.execute(
            select(_CONTACT.c.unsubscribed, _CONTACT.c.unsubscribed_channels).where(_CONTACT.c.email == reader.email)
        ).all()
    if found is not None and (not found[0] or reader.channel in found[0]):
        return True
    return bool(flags) and all(u or (reader.channel != "all" and reader.channel in (c or [])) for u, c in flags)


def _page(reader: _Reader, state: str, status: int = 200, **more: Any) -> Response:
    return page("unsubscribe.html", lang=reader.lang, status=status, state=state, reader=reader, **more)


@router.get("/unsubscribe")
def ask(request: Request, web: WebState, t: str = "") -> Response:
    reader = _reader(web, t, accepted_language(request))
    if isinstance(reader, Response):
        return reader
    return _page(reader, "already" if _unsubscribed(web, reader) else "ask")


@router.post("/unsubscribe")
def one_click(request: Request, web: WebState, t: str = "") -> Response:
    """RFC 8058: whatever the body (``List-Unsubscribe=One-Click``), a genuine token unsubscribes."""
    reader = _reader(web, t, accepted_language(request))
    if isinstance(reader, Response):
        return reader
    if _unsubscribed(web, reader):
        return _page(reader, "already")
    unsubscribe(
        web.engine,
        reader.email,
        channel=reader.channel,
        reason="through the unsubscribe link",
        now=web.now(),
        source="link",
    )
    return _page(reader, "done")


@router.post("/unsubscribe/undo")
def undo(request: Request, web: WebState, t: str = "") -> Response:
    reader = _reader(web, t, accepted_language(request))
    if isinstance(reader, Response):
        return reader
    result = resubscribe(web.engine, reader.email, channel=reader.channel, by="link", now=web.now())
    if result.kept:
        return _page(reader, "kept", status=409)
    return _page(reader, "undone")
