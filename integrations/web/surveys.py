"""``/survey``: the page behind a survey link (NPS, CSAT, CES), from the link's signed token.

``GET`` shows the question and a row of score buttons; one click on a score (``POST``, or the
email's own score buttons: ``GET ?score=N``) records the answer, and a comment may follow
(``POST /survey/comment``). Answering again through the same link updates the answer, never
adds a second (``integrations.sources.surveys.record_answer``); the touch is marked replied.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.responses import Response

from integrations.sources.surveys import (
    ExpiredSurveyToken,
    InvalidSurveyToken,
    SurveyError,
    SurveyTouch,
    record_answer,
    survey_touch,
)
from integrations.web._pages import language_of, page
from integrations.web._state import Web, WebState
from models import NotFoundError

__all__ = ["MAX_COMMENT", "router"]

router = APIRouter()

#: the longest comment kept, in characters
MAX_COMMENT = 5_000


def _problem(exc: Exception) -> Response:
    if isinstance(exc, ExpiredSurveyToken):
        title, status, hint = "This survey link has expired", 410, "Thank you all the same: reply to the email instead."
    elif isinstance(exc, InvalidSurveyToken):
        title, status = "This link is not valid", 400
        hint = "Open the link from the email again, or copy all of it into the address bar."
    elif isinstance(exc, NotFoundError):
        title, status, hint = "We cannot find this survey", 404, "Reply to the email instead."
    else:
        title, status, hint = "This answer cannot be recorded", 400, ""
    message = str(exc)[0].upper() + str(exc)[1:] + ". Nothing was changed."
    return page("error.html", status=status, title=title, message=message, hint=hint)


def _load(web: Web, token: str) -> SurveyTouch:
    with web.engine.connect() as conn:
        return survey_touch(conn, token, web.links.survey_key, web.now().date())


def _page(survey: SurveyTouch, token: str, state: str, **more: Any) -> Response:
    lang = language_of(survey.preferences, survey.custom)
    return page("survey.html", lang=lang, state=state, survey=survey, token=token, **more)


def _record(web: Web, survey: SurveyTouch, token: str, score: str, comment: str | None) -> SurveyTouch:
    if comment is not None and len(comment) > MAX_COMMENT:
        raise SurveyError(f"the comment is longer than {MAX_COMMENT} characters")
    if str(survey.score) == score.strip() and survey.comment == comment:
        return survey  # the same answer again (a second click, a form sent twice): nothing to change
    for attempt in (1, 2):
        try:
            with Session(web.engine) as s:
                record_answer(s, token=token, score=score, comment=comment, now=web.now(), secret=web.links.survey_key)
                s.commit()
            break
        except IntegrityError:  # the same link answered at the same moment (a double tap): now an update
            if attempt == 2:
                raise
    return _load(web, token)


@router.api_route("/survey", methods=["GET", "HEAD"])
def show(request: Request, web: WebState, t: str = "", score: str | None = None) -> Response:
    """The question; with ``score`` (a score button in the email), that answer recorded at once.
    A ``HEAD`` request (link checkers of mail systems send them) records nothing."""
    try:
        survey = _load(web, t)
        if score is None or request.method == "HEAD":
            return _page(survey, t, "answered" if survey.score is not None else "ask")
        return _page(_record(web, survey, t, score, survey.comment), t, "thanks")
    except (SurveyError, NotFoundError) as exc:
        return _problem(exc)


@router.post("/survey")
def answer(web: WebState, score: Annotated[str, Form()] = "", t: str = "") -> Response:
    """One click on a score: recorded (again: updated), then the comment box."""
    try:
        survey = _load(web, t)
        return _page(_record(web, survey, t, score, survey.comment), t, "thanks")
    except (SurveyError, NotFoundError) as exc:
        return _problem(exc)


@router.post("/survey/comment")
def comment(web: WebState, comment: Annotated[str, Form()] = "", t: str = "") -> Response:
    """The comment that follows a score (an empty one removes it)."""
    try:
        survey = _load(web, t)
        if survey.score is None:
            raise SurveyError("choose a score first")
        return _page(_record(web, survey, t, str(survey.score), comment.strip() or None), t, "commented")
    except (SurveyError, NotFoundError) as exc:
        return _problem(exc)
