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
from integrations.web._pages import accepted_language, error_page, language_of, page
from integrations.web._state import Web, WebState
from models import NotFoundError

__all__ = ["MAX_COMMENT", "router"]

router = APIRouter()

#: the longest comment kept, in characters
MAX_COMMENT = 5_000


def _problem(exc: Exception, request: Request) -> Response:
    lang = accepted_language(request)
    if isinstance(exc, ExpiredSurveyToken):
        return error_page("survey_expired", lang=lang, status=410)
    if isinstance(exc, InvalidSurveyToken):
        return error_page("invalid", lang=lang, status=400)
    if isinstance(exc, NotFoundError):
        return error_page("no_survey", lang=lang, status=404)
    return error_page("bad_answer", lang=lang, status=400, detail=str(exc)[0].upper() + str(exc)[1:] + ".")


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
        return _problem(exc, request)


@router.post("/survey")
def answer(request: Request, web: WebState, score: Annotated[str, Form()] = "", t: str = "") -> Response:
    """One click on a score: recorded (again: updated), then the comment box."""
    try:
        survey = _load(web, t)
        return _page(_record(web, survey, t, score, survey.comment), t, "thanks")
    except (SurveyError, NotFoundError) as exc:
        return _problem(exc, request)


@router.post("/survey/comment")
def comment(request: Request, web: WebState, comment: Annotated[str, Form()] = "", t: str = "") -> Response:
    """The comment that follows a score (an empty one removes it)."""
    try:
        survey = _load(web, t)
        if survey.score is None:
            raise SurveyError("choose a score first")
        return _page(_record(web, survey, t, str(survey.score), comment.strip() or None), t, "commented")
    except (SurveyError, NotFoundError) as exc:
        return _problem(exc, request)
