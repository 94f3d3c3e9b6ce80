"""Product events over HTTP in the Segment spec: ``POST /v1/identify``, ``/v1/group``,
``/v1/track``, ``/v1/page``, ``/v1/screen``, ``/v1/alias`` (one call each) and ``/v1/batch``
(``{"batch": [calls with "type"]}``).

Authenticated as Segment's HTTP API is: basic auth with the write key as the user and no password
(``RETAIN_SEGMENT_WRITE_KEY``), or ``writeKey`` in the body. The calls land through the same code as
``retain events import`` (one definition of what an event means): each stored once by its
``messageId`` (a call sent again changes nothing), users tied to accounts by ``group``,
``last_seen_at`` and ``onboarded_at`` kept current. All or nothing per request: a bad call and 400
lists every problem (``batch[N]``), nothing stored. A call without ``timestamp`` happened when it
was received; a call with ``sentAt`` (its own, or the batch's) is corrected for the sending
device's clock as Segment corrects it: ``timestamp = received - (sentAt - timestamp)``. The
activation event (``sources.yaml``) is read when ``retain web`` starts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from integrations.sources import land_calls
from integrations.sources._csv import parse_timestamp
from integrations.web._state import Web, WebState
from models import DataImportError, RetainError

__all__ = ["router"]

router = APIRouter(prefix="/v1")


def _write_key(request: Request, body: Any) -> str | None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return None
    key = body.get("writeKey") if isinstance(body, dict) else None
    return key if isinstance(key, str) else None


def _error(status: int, message: str, problems: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"success": False, "error": message}
    if problems:
        body["problems"] = problems
    headers = {"WWW-Authenticate": 'Basic realm="segment"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _moment(value: Any) -> datetime | None:
    try:
        return parse_timestamp(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def _land(web: Web, calls: list[Any], sent: Any = None) -> Response:
    received = web.now()
    for call in calls:
        if not isinstance(call, dict):
            continue
        if not call.get("timestamp"):
            call["timestamp"] = received.isoformat()
            continue
        at, sent_at = _moment(call["timestamp"]), _moment(call.get("sentAt") or sent)
        if at is not None and sent_at is not None:  # the device's clock, corrected (a bad one is refused below)
            call["timestamp"] = (received - (sent_at - at)).isoformat()
    try:
        result = land_calls(web.engine, "batch", calls, now=received, activation=web.activation_event)
    except DataImportError as exc:
        problems = [f"batch[{p.row - 1}]{f'.{p.column}' if p.column else ''}: {p.message}" for p in exc.problems]
        return _error(400, "the calls are not in the Segment spec: nothing was stored", problems)
    except RetainError as exc:  # the same calls landing at the same moment from another request
        return JSONResponse({"success": False, "error": str(exc)}, status_code=503, headers={"Retry-After": "10"})
    return JSONResponse(
        {"success": True, "stored": result.inserted, "already_stored": result.unchanged, "onboarded": result.onboarded}
    )


async def _receive(request: Request, web: Web, kind: str | None) -> Response:
    secret = web.settings.segment_write_key
    if secret is None:
        return _error(503, "product events over HTTP are not configured: set RETAIN_SEGMENT_WRITE_KEY")
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"the body is not JSON: {exc}")
    key = _write_key(request, body)
    if key is None or not hmac.compare_digest(key.encode(), secret.get_secret_value().encode()):
        return _error(401, "a write key is required: basic auth with the write key as the user")
    sent = None
    if kind is None:
        calls = body.get("batch") if isinstance(body, dict) else None
        sent = body.get("sentAt") if isinstance(body, dict) else None
        if not isinstance(calls, list) or not calls:
            return _error(400, 'a batch is {"batch": [calls, each with its "type"]}')
    elif not isinstance(body, dict):
        return _error(400, f"a {kind} call is a JSON object")
    else:
        calls = [{**body, "type": kind}]
    calls = [{k: v for k, v in c.items() if k != "writeKey"} if isinstance(c, dict) else c for c in calls]
    result: Response = await run_in_threadpool(_land, web, calls, sent)
    return result


def _one_call(kind: str) -> None:
    """``POST /v1/<kind>``: one call of that type (the path says which, as Segment's HTTP API)."""

    async def receive(request: Request, web: WebState) -> Response:
        return await _receive(request, web, kind)

    router.add_api_route(f"/{kind}", receive, methods=["POST"], name=f"segment_{kind}")


for _kind in ("identify", "group", "track", "page", "screen", "alias"):
    _one_call(_kind)


@router.post("/batch")
async def batch(request: Request, web: WebState) -> Response:
    return await _receive(request, web, None)
