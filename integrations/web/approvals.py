"""``/approvals``: a CSM's drafts waiting for approval, each with the rendered email, from the
signed link in their daily digest (``retain today --post``). Approve sends it through the outbox
(its next run; under the touch's own key, so it goes out once); reject drops it. The link names
the CSM, so decisions are recorded as theirs, and it expires after two days.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from integrations.sources import (
    approve_draft,
    csm_of_approvals_token,
    list_drafts,
    reject_draft,
    show_draft,
)
from integrations.web._pages import page
from integrations.web._state import Web, WebState
from models import RetainError

__all__ = ["router"]

router = APIRouter()

#: drafts shown on one page (the oldest first)
PAGE_SIZE = 20


def _drafts(web: Web, csm: str) -> tuple[list[dict[str, Any]], int]:
    lines, total = list_drafts(web.engine, approver=csm, limit=PAGE_SIZE)
    shown = []
    for line in lines:
        _, message, first = show_draft(web.engine, line.key)
        shown.append({"line": line, "message": message, "edited": first is not None})
    return shown, total


def _page(web: Web, token: str, csm: str, *, note: str | None = None, problem: bool = False) -> Response:
    drafts, total = _drafts(web, csm)
    return page("approvals.html", csm=csm, token=token, drafts=drafts, total=total, note=note, problem=problem)


@router.api_route("/approvals", methods=["GET", "HEAD"])
def show(request: Request, web: WebState, t: str = "") -> Response:
    """The CSM's drafts, each as it would be sent, with Approve and Reject."""
    csm = csm_of_approvals_token(web.links, t, web.now())  # a bad link: the app's page for it
    return _page(web, t, csm)


@router.post("/approvals/approve")
def approve(web: WebState, key: Annotated[str, Form()] = "", t: str = "") -> Response:
    """Approve one draft: the outbox sends it at its next run."""
    csm = csm_of_approvals_token(web.links, t, web.now())
    try:
        done, line = approve_draft(web.engine, key, by=csm, now=web.now())
    except RetainError as exc:
        return _page(web, t, csm, note=str(exc), problem=True)
    note = "Approved: it goes out with the next outbox run (within five minutes)." if done else line
    return _page(web, t, csm, note=note)


@router.post("/approvals/reject")
def reject(
    web: WebState, key: Annotated[str, Form()] = "", reason: Annotated[str, Form()] = "", t: str = ""
) -> Response:
    """Reject one draft: it is never sent."""
    csm = csm_of_approvals_token(web.links, t, web.now())
    try:
        reject_draft(web.engine, key, by=csm, now=web.now(), reason=reason.strip()[:500] or None)
    except RetainError as exc:
        return _page(web, t, csm, note=str(exc), problem=True)
    return _page(web, t, csm, note="Rejected: it will not be sent.")
