"""Surveys: NPS, CSAT and CES arithmetic and summaries (and, re-exported, links and answers).

The three kinds, as the industry counts them:

* **NPS** (0-10, "how likely are you to recommend us?"): promoters answer 9-10, passives 7-8,
  detractors 0-6; the score is % promoters - % detractors, from -100 to 100.
* **CSAT** (1-5, "how satisfied were you?"): the score is the share of satisfied answers (4-5),
  in percent; the average is shown too.
* **CES** (1-7, "how easy was it?"; 7 = very easy): the score is the average; the share of "easy"
  answers (5-7) is shown too.

The signed survey links and the recording of answers (by token, by account, from CSV, from the
survey page of ``retain web``) are survey data coming in: they live in
``integrations.sources.surveys`` and are re-exported here, where the engine and the CLI find them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select
from sqlmodel import Session

from integrations.sources.surveys import (
    DEFAULT_SURVEY_BASE_URL,
    DEFAULT_SURVEY_SECRET,
    IMPORT_COLUMNS,
    KINDS,
    ExpiredSurveyToken,
    InvalidSurveyToken,
    SurveyError,
    SurveyImportResult,
    import_answers,
    nps_group,
    read_survey_token,
    record_answer,
    survey_base_url,
    survey_link,
    survey_link_for,
    survey_secret,
    survey_token,
)
from models import Account, SurveyResponse, table_of

__all__ = [
    "DEFAULT_SURVEY_BASE_URL",
    "DEFAULT_SURVEY_SECRET",
    "IMPORT_COLUMNS",
    "KINDS",
    "ExpiredSurveyToken",
    "InvalidSurveyToken",
    "SurveyError",
    "SurveyImportResult",
    "ces_score",
    "csat_score",
    "import_answers",
    "nps_group",
    "nps_score",
    "read_survey_token",
    "record_answer",
    "summarize",
    "survey_base_url",
    "survey_link",
    "survey_link_for",
    "survey_secret",
    "survey_summary",
    "survey_token",
]

_ACCOUNT: Table = table_of(Account)
_RESPONSE: Table = table_of(SurveyResponse)

# --- the arithmetic -------------------------------------------------------------------------------


def _groups(kind: str, score: int) -> str:
    if kind == "nps":
        return nps_group(score) + "s"
    if kind == "csat":
        return "satisfied" if score >= 4 else "neutral" if score == 3 else "dissatisfied"
    return "easy" if score >= 5 else "neutral" if score == 4 else "difficult"


_GROUP_ORDER = {
    "nps": ("promoters", "passives", "detractors"),
    "csat": ("satisfied", "neutral", "dissatisfied"),
    "ces": ("easy", "neutral", "difficult"),
}


def _percent(part: int, whole: int) -> float:
    return round(part / whole * 100, 1)


def nps_score(scores: Iterable[int]) -> float | None:
    """% promoters - % detractors (-100..100, one decimal); None without answers."""
    scores = list(scores)
    if not scores:
        return None
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return round((promoters - detractors) / len(scores) * 100, 1)


def csat_score(scores: Iterable[int]) -> float | None:
    """The share of satisfied answers (4-5), in percent (one decimal); None without answers."""
    scores = list(scores)
    return _percent(sum(1 for s in scores if s >= 4), len(scores)) if scores else None


def ces_score(scores: Iterable[int]) -> float | None:
    """The average effort score (1-7, higher is easier; two decimals); None without answers."""
    scores = list(scores)
    return round(sum(scores) / len(scores), 2) if scores else None


def summarize(kind: str, distribution: Mapping[int, int]) -> dict[str, Any]:
    """The summary of answers given as ``{score: count}``::

        {"kind", "responses", "score", "average", "groups": {name: count},
         "shares": {name: percent}, "distribution": {score: count, every possible score}}

    ``score`` is the NPS, the CSAT share satisfied, or the CES average (None without answers)."""
    low, high = KINDS[kind]
    counts = {s: int(distribution.get(s, 0)) for s in range(low, high + 1)}
    total = sum(counts.values())
    groups = dict.fromkeys(_GROUP_ORDER[kind], 0)
    for s, n in counts.items():
        groups[_groups(kind, s)] += n
    average = round(sum(s * n for s, n in counts.items()) / total, 2) if total else None
    if not total:
        value = None
    elif kind == "nps":
        value = round((groups["promoters"] - groups["detractors"]) / total * 100, 1)
    elif kind == "csat":
        value = _percent(groups["satisfied"], total)
    else:
        value = average
    return {
        "kind": kind,
        "responses": total,
        "score": value,
        "average": average,
        "groups": groups,
        "shares": {g: (_percent(n, total) if total else None) for g, n in groups.items()},
        "distribution": counts,
    }


def survey_summary(
    s: Session,
    kind: str,
    since: datetime | None = None,
    segment: str | None = None,
    *,
    until: datetime | None = None,
) -> dict[str, Any]:
    """:func:`summarize` of the answers of one kind recorded at or after ``since`` (and before
    ``until``), of accounts in ``segment``; plus ``accounts``, how many accounts answered."""
    if kind not in KINDS:
        raise SurveyError(f"unknown survey kind {kind!r}: use nps, csat or ces")
    where = [_RESPONSE.c.kind == kind]
    if since is not None:
        where.append(_RESPONSE.c.responded_at >= since)
    if until is not None:
        where.append(_RESPONSE.c.responded_at < until)
    source: Any = _RESPONSE
    if segment is not None:
        source = _RESPONSE.join(_ACCOUNT, _ACCOUNT.c.id == _RESPONSE.c.account_id)
        where.append(_ACCOUNT.c.segment == segment)
    conn = s.connection()
    rows = conn.execute(
        select(_RESPONSE.c.score, func.count()).select_from(source).where(*where).group_by(_RESPONSE.c.score)
    )
    accounts = conn.execute(
        select(func.count(func.distinct(_RESPONSE.c.account_id))).select_from(source).where(*where)
    ).scalar_one()
    summary = summarize(kind, dict(rows.all()))
    return {**summary, "accounts": int(accounts)}
