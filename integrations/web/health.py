"""``/`` (what this address is) and ``/healthz`` (for load balancers: the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from integrations.web._pages import page
from integrations.web._state import WebState

__all__ = ["router"]

router = APIRouter()


@router.get("/")
def home() -> Response:
    return page("home.html")


@router.get("/healthz")
def healthz(web: WebState) -> Response:
    try:
        with web.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any reason the database does not answer: say so, do not crash
        return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"ok": True})
