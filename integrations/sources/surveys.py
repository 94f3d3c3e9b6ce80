"""Survey answers in: the signed survey links, and recording answers (one through a link's token,
by ``retain surveys record``, from a CSV file, or from the survey page of ``retain web``).

A survey step writes a touch whose ``survey_url`` is :func:`survey_link_for` its touch key: the base
URL (``RETAIN_SURVEY_BASE_URL``, default ``<RETAIN_PUBLIC_URL>/survey``, the page ``retain web``
serves) with ``?t=<token>``, the token being the touch key and its last valid day signed with
HMAC-SHA256 (``RETAIN_SURVEY_SECRET``). The page, or whatever form tool receives the answer, hands
the token back (``retain surveys import`` with a ``token`` column, or ``retain surveys record
--token``); the answer is then linked to its touch, account and contact, and nobody can answer for
another account by editing the link.

Every answer becomes a ``SurveyResponse`` and a ``TimelineEvent(kind="survey")``. An answer through
a token also marks its touch replied (so ``touches("step").replied`` sees it); a second answer
through the same token replaces the first (people change their minds; an export imported twice
counts once). The arithmetic of the scores is in ``flows.analytics.surveys``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from integrations.links import (
    DEFAULT_LINK_DAYS,
    DEFAULT_PUBLIC_URL,
    DEFAULT_SURVEY_SECRET,
    ExpiredLink,
    InvalidLink,
    LinkConfig,
    last_valid_day,
    sign,
    survey_link_of,
    verify,
    with_token,
)
from integrations.sources._batches import chunks
from integrations.sources._csv import CsvFile, CsvRecord, read_csv, settle_problems
from models import (
    Account,
    Contact,
    DataImportError,
    NotFoundError,
    RetainError,
    RowProblem,
    SurveyResponse,
    TimelineEvent,
    Touch,
    table_of,
    utcnow,
)

__all__ = [
    "DEFAULT_SURVEY_BASE_URL",
    "DEFAULT_SURVEY_SECRET",
    "IMPORT_COLUMNS",
    "KINDS",
    "ExpiredSurveyToken",
    "InvalidSurveyToken",
    "SurveyError",
    "SurveyImportResult",
    "SurveyTouch",
    "import_answers",
    "nps_group",
    "read_survey_token",
    "record_answer",
    "survey_base_url",
    "survey_link",
    "survey_link_for",
    "survey_secret",
    "survey_token",
    "survey_touch",
]

#: kind -> (lowest, highest) answer
KINDS: dict[str, tuple[int, int]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
_NAMES = {"nps": "NPS", "csat": "CSAT", "ces": "CES"}
_WITH_ARTICLE = {"nps": "an NPS", "csat": "a CSAT", "ces": "a CES"}

DEFAULT_SURVEY_BASE_URL = f"{DEFAULT_PUBLIC_URL}/survey"

logger = logging.getLogger(__name__)  # what each import of answers did, for the run's log

_ACCOUNT: Table = table_of(Account)
_CONTACT: Table = table_of(Contact)
_RESPONSE: Table = table_of(SurveyResponse)
_TOUCH: Table = table_of(Touch)
_TIMELINE: Table = table_of(TimelineEvent)


class SurveyError(RetainError):
    """A survey answer that cannot be recorded as given (a score out of range, an unknown kind)."""


class InvalidSurveyToken(SurveyError):
    """A survey token that was changed, cut short, or signed with another secret."""


class ExpiredSurveyToken(InvalidSurveyToken):
    """A genuine survey token past its last valid day (checked by the web page only)."""


def nps_group(score: int) -> str:
    """``promoter`` (9-10), ``passive`` (7-8) or ``detractor`` (0-6)."""
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


# --- signed links -------------------------------------------------------------------------------


def survey_token(touch_key: str, secret: str, valid_through: date | None = None) -> str:
    """The token of a survey link (see :mod:`integrations.links`): the touch key, signed for
    ``survey``, valid through ``valid_through`` (default: :data:`DEFAULT_LINK_DAYS` from today)."""
    if not secret:
        raise SurveyError("the survey secret is empty: set RETAIN_SURVEY_SECRET")
    last_day = valid_through or last_valid_day(utcnow(), DEFAULT_LINK_DAYS)
    return sign(secret, "survey", touch_key, last_day)


def read_survey_token(token: str, secret: str, today: date | None = None) -> str:
    """The touch key a token was made for. :class:`InvalidSurveyToken` if it was changed, cut
    short or signed with another secret (the signatures are compared in constant time); with
    ``today`` (the web page), :class:`ExpiredSurveyToken` past its last day. Imports by a person
    (``retain surveys import``/``record``) do not check the day: the answer was given in time."""
    try:
        return verify(secret, "survey", token, today)[0]
    except ExpiredLink as exc:
        raise ExpiredSurveyToken(
            f"the survey link expired: it was valid through {exc.valid_through:%Y-%m-%d}"
        ) from None
    except InvalidLink:
        raise InvalidSurveyToken(
            "the survey token is not valid: it was changed or cut short, or signed with another "
            "secret (RETAIN_SURVEY_SECRET)"
        ) from None


def survey_link(base_url: str, touch_key: str, secret: str, valid_through: date | None = None) -> str:
    """The link a survey email carries: ``base_url`` with ``t=<token>`` added to its query."""
    return with_token(base_url, survey_token(touch_key, secret, valid_through))


def survey_secret() -> str:
    """``RETAIN_SURVEY_SECRET``, or a fixed secret for local use (links that never leave the machine)."""
    return LinkConfig.from_environment().survey_key


def survey_base_url() -> str:
    """``RETAIN_SURVEY_BASE_URL``: the page that shows the question and takes the answer
    (default ``<RETAIN_PUBLIC_URL>/survey``, served by ``retain web``)."""
    return LinkConfig.from_environment().survey_base


def survey_link_for(touch_key: str, now: datetime | None = None) -> str:
    """The survey link of a touch written ``now``, with the configured base URL and secret (for the engine)."""
    return survey_link_of(LinkConfig.from_environment(), touch_key, now or utcnow())


# --- recording answers ------------------------------------------------------------------------------


def _kind(value: str) -> str:
    kind = value.strip().lower()
    if kind not in KINDS:
        raise SurveyError(f"{value!r} is not a survey kind: use nps, csat or ces")
    return kind


def _score(kind: str, value: int | str) -> int:
    low, high = KINDS[kind]
    text = str(value).strip()
    try:
        number = int(text)
    except ValueError:
        raise SurveyError(f"{text!r} is not a whole number from {low} to {high}") from None
    if not low <= number <= high:
        raise SurveyError(f"{number} is out of range for {_NAMES[kind]}: use a whole number from {low} to {high}")
    return number


def _moment(value: str | datetime, now: datetime) -> datetime:
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise SurveyError(f"{value!r} is not a date or time: write ISO 8601, like 2027-03-01T14:30:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a date or a time without a zone is UTC
    moment = moment.astimezone(UTC)
    if moment > now:
        raise SurveyError(f"{moment:%Y-%m-%d %H:%M} UTC is in the future")
    return moment


@dataclass(frozen=True)
class _Answer:
    """One validated answer, ready to write."""

    account_id: int
    contact_id: int | None
    kind: str
    score: int
    comment: str | None
    responded_at: datetime
    who: str  # for the timeline: the contact's email, or "someone"
    touch: Any = None  # the touch row (key, id, enrollment_id, playbook, step_id) when through a token


def _summary(a: _Answer, previous: int | None) -> str:
    label = f"{_NAMES[a.kind]} {a.score}"
    if a.kind == "nps":
        label += f" ({nps_group(a.score)})"
    text = f"{label} from {a.who}"
    if previous is not None and previous != a.score:
        text = f"{_NAMES[a.kind]} answer changed {previous} → {a.score} by {a.who}"
    if a.comment:
        comment = a.comment if len(a.comment) <= 80 else a.comment[:77] + "..."
        text += f": “{comment}”"
    return text


def _write(conn: Connection, answers: list[_Answer]) -> tuple[int, int]:
    """Insert the answers (or, through a token already answered, update that answer), their
    timeline events, and mark their touches replied. Returns (inserted, updated)."""
    touch_ids = [a.touch.id for a in answers if a.touch is not None]
    existing: dict[int, tuple[int, int]] = {}  # touch id -> (response id, score)
    for chunk in chunks(touch_ids):
        for response_id, touch_id, old in conn.execute(
            select(_RESPONSE.c.id, _RESPONSE.c.touch_id, _RESPONSE.c.score).where(_RESPONSE.c.touch_id.in_(chunk))
        ):
            existing[touch_id] = (response_id, old)
    inserts, updates, events, replies = [], [], [], []
    for a in answers:
        values = {
            "account_id": a.account_id,
            "contact_id": a.contact_id,
            "touch_id": a.touch.id if a.touch is not None else None,
            "kind": a.kind,
            "score": a.score,
            "comment": a.comment,
            "responded_at": a.responded_at,
        }
        before = existing.get(a.touch.id) if a.touch is not None else None
        if before is not None:
            updates.append({"response": before[0], **values})
        else:
            inserts.append(values)
        if a.touch is not None:
            replies.append({"touch": a.touch.id, "replied": a.responded_at})
        events.append(
            {
                "account_id": a.account_id,
                "at": a.responded_at,
                "kind": "survey",
                "playbook": a.touch.playbook if a.touch is not None else None,
                "enrollment_id": a.touch.enrollment_id if a.touch is not None else None,
                "step_id": a.touch.step_id if a.touch is not None else None,
                "summary": _summary(a, before[1] if before else None),
                "detail": {
                    "survey": a.kind,
                    "score": a.score,
                    "comment": a.comment,
                    "contact": None if a.who == "someone" else a.who,
                    "touch": a.touch.key if a.touch is not None else None,
                },
            }
        )
    if inserts:
        conn.execute(insert(_RESPONSE), inserts)
    if updates:
        assignments: dict[str, Any] = {c: bindparam(c) for c in updates[0] if c != "response"}
        conn.execute(update(_RESPONSE).where(_RESPONSE.c.id == bindparam("response")).values(assignments), updates)
    if replies:  # the first answer is the reply; a later change of mind does not move it
        conn.execute(
            update(_TOUCH)
            .where(_TOUCH.c.id == bindparam("touch"), _TOUCH.c.replied_at.is_(None))
            .values(replied_at=bindparam("replied")),
            replies,
        )
    if events:
        conn.execute(insert(_TIMELINE), events)
    return len(inserts), len(updates)


def _touch_by_key(conn: Connection, keys: Iterable[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for chunk in chunks(set(keys)):
        for row in conn.execute(
            select(
                _TOUCH.c.id,
                _TOUCH.c.key,
                _TOUCH.c.account_id,
                _TOUCH.c.contact_id,
                _TOUCH.c.enrollment_id,
                _TOUCH.c.playbook,
                _TOUCH.c.step_id,
                _TOUCH.c.payload,
            ).where(_TOUCH.c.key.in_(chunk))
        ):
            found[row.key] = row
    return found


def _account_guess(conn: Connection, external_id: str) -> NotFoundError:
    known = list(conn.execute(select(_ACCOUNT.c.external_id)).scalars())
    close = difflib.get_close_matches(external_id, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return NotFoundError(f"no account with external id {external_id!r}{hint}")


def record_answer(
    s: Session,
    *,
    score: int | str,
    kind: str | None = None,
    account: str | None = None,
    contact_email: str | None = None,
    token: str | None = None,
    comment: str | None = None,
    responded_at: str | datetime | None = None,
    now: datetime | None = None,
    secret: str | None = None,
) -> SurveyResponse:
    """Record one answer, by ``token`` (from a survey link: account, contact and kind come from its
    touch) or by ``account`` (external id) and ``kind``. ``responded_at`` defaults to ``now``.
    Raises :class:`SurveyError` (a bad score, kind or token) or :class:`NotFoundError`."""
    now = now or utcnow()
    conn = s.connection()
    at = _moment(responded_at, now) if responded_at is not None else now
    touch = None
    contact_id: int | None = None
    who = "someone"
    if token is not None:
        key = read_survey_token(token, secret if secret is not None else survey_secret())
        touch = _touch_by_key(conn, [key]).get(key)
        if touch is None or (touch.payload or {}).get("kind") != "survey":
            raise NotFoundError(f"no survey was sent with this token (touch {key!r})")
        sent_kind = touch.payload.get("survey")
        if kind is not None and _kind(kind) != sent_kind:
            raise SurveyError(f"the token is for {_WITH_ARTICLE[sent_kind]} survey, not {_kind(kind)}")
        kind = sent_kind
        account_id, contact_id = touch.account_id, touch.contact_id
        external_id = conn.execute(select(_ACCOUNT.c.external_id).where(_ACCOUNT.c.id == account_id)).scalar_one()
        if account is not None and account != external_id:
            raise SurveyError(f"the token is for account {external_id!r}, not {account!r}")
        if contact_id is not None:
            who = conn.execute(select(_CONTACT.c.email).where(_CONTACT.c.id == contact_id)).scalar_one()
        if contact_email is not None and contact_email.strip().lower() != who:
            raise SurveyError(f"the token is for contact {who}, not {contact_email}")
    else:
        if account is None or kind is None:
            raise SurveyError("name the account and the kind of survey (or give the token from the survey link)")
        kind = _kind(kind)
        found = conn.execute(select(_ACCOUNT.c.id).where(_ACCOUNT.c.external_id == account)).scalar()
        if found is None:
            raise _account_guess(conn, account)
        account_id = found
        if contact_email is not None:
            who = contact_email.strip().lower()
            contact_id = conn.execute(
                select(_CONTACT.c.id).where(_CONTACT.c.account_id == account_id, _CONTACT.c.email == who)
            ).scalar()
            if contact_id is None:
                raise NotFoundError(f"account {account!r} has no contact {who}")
    assert kind is not None
    answer = _Answer(account_id, contact_id, kind, _score(kind, score), comment or None, at, who, touch)
    _write(conn, [answer])
    query = select(SurveyResponse).where(_RESPONSE.c.account_id == account_id, _RESPONSE.c.kind == kind)
    if touch is not None:
        query = query.where(_RESPONSE.c.touch_id == touch.id)
    response: SurveyResponse = s.execute(query.order_by(_RESPONSE.c.id.desc()).limit(1)).scalar_one()
    return response


# --- import ---------------------------------------------------------------------------------------

#: the columns a survey answers file knows
IMPORT_COLUMNS = ("token", "account_external_id", "kind", "score", "comment", "responded_at", "contact_email")


@dataclass(frozen=True)
class SurveyImportResult:
    """What an import wrote (or, with ``dry_run``, would write)."""

    file: str
    inserted: int = 0
    updated: int = 0  # answers through a token that had been answered: replaced
    unchanged: int = 0  # already recorded exactly so
    ignored_columns: tuple[str, ...] = ()
    dry_run: bool = False


def _problem(csv_file: CsvFile, line: int, column: str, message: str) -> None:
    csv_file.problems.append(RowProblem(line, message, csv_file.header(column)))


def _parse_answer(csv_file: CsvFile, record: CsvRecord, secret: str, now: datetime) -> dict[str, Any]:
    """One row on its own: its cells parsed, or ``{}`` when it has problems (noted in ``csv_file``)."""
    cells, ok = record.cells, True
    row: dict[str, Any] = {}
    if "token" in cells:
        try:
            row["touch_key"] = read_survey_token(cells["token"], secret)
        except InvalidSurveyToken as exc:
            _problem(csv_file, record.line, "token", str(exc))
            ok = False
    elif "account_external_id" not in cells or "kind" not in cells:
        missing = [c for c in ("account_external_id", "kind") if c not in cells]
        for column in missing:
            _problem(csv_file, record.line, column, "a value is required (or a token)")
        ok = False
    parsers: tuple[tuple[str, Callable[[str], Any]], ...] = (
        ("kind", _kind),
        ("responded_at", lambda v: _moment(v, now)),
    )
    for column, parse in parsers:
        if column in cells:
            try:
                row[column] = parse(cells[column])
            except SurveyError as exc:
                _problem(csv_file, record.line, column, str(exc))
                ok = False
    if "score" not in cells:
        _problem(csv_file, record.line, "score", "a value is required")
        ok = False
    for column in ("account_external_id", "comment", "score"):
        if column in cells:
            row[column] = cells[column]
    if "contact_email" in cells:
        row["contact_email"] = cells["contact_email"].lower()
    return row if ok else {}


@dataclass
class _Known:
    """What the database knows about the accounts, contacts and touches a file names."""

    touches: dict[str, Any]  # touch key -> touch row
    accounts: dict[str, int]  # external id -> id
    contacts: dict[tuple[int, str], int]  # (account id, email) -> contact id
    emails: dict[int, str]  # contact id -> email
    external_of: dict[int, str]  # account id -> external id

    @classmethod
    def load(cls, conn: Connection, rows: list[tuple[int, dict[str, Any]]]) -> _Known:
        touches = _touch_by_key(conn, [r["touch_key"] for _, r in rows if "touch_key" in r])
        external_ids = {r["account_external_id"] for _, r in rows if "account_external_id" in r}
        accounts: dict[str, int] = {}
        for chunk in chunks(external_ids):
            accounts.update(
                conn.execute(
                    select(_ACCOUNT.c.external_id, _ACCOUNT.c.id).where(_ACCOUNT.c.external_id.in_(chunk))
                ).all()
            )
        account_ids = set(accounts.values()) | {t.account_id for t in touches.values()}
        contacts: dict[tuple[int, str], int] = {}
        emails: dict[int, str] = {}
        for ids in chunks(account_ids):
            for contact_id, account_id, email in conn.execute(
                select(_CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.email).where(_CONTACT.c.account_id.in_(ids))
            ):
                contacts[(account_id, email.lower())] = contact_id
                emails[contact_id] = email.lower()
        external_of = {i: e for e, i in accounts.items()}
        for ids in chunks({t.account_id for t in touches.values()} - set(external_of)):
            external_of.update(
                conn.execute(select(_ACCOUNT.c.id, _ACCOUNT.c.external_id).where(_ACCOUNT.c.id.in_(ids))).all()
            )
        return cls(touches, accounts, contacts, emails, external_of)


#: whose answer a row is: (kind, account id, contact id, who, touch)
_Whose = tuple[str, int, int | None, str, Any]


def _through_token(csv_file: CsvFile, line: int, r: dict[str, Any], known: _Known) -> _Whose | None:
    """A token row checked against the touch it names (None, with a problem noted, when it fails)."""
    touch = known.touches.get(r["touch_key"])
    if touch is None or (touch.payload or {}).get("kind") != "survey":
        _problem(csv_file, line, "token", "no survey was sent with this token")
        return None
    kind = touch.payload.get("survey")
    if "kind" in r and r["kind"] != kind:
        _problem(csv_file, line, "kind", f"the token is for {_WITH_ARTICLE[kind]} survey, not {r['kind']}")
        return None
    account_id, contact_id = touch.account_id, touch.contact_id
    external = known.external_of[account_id]
    if r.get("account_external_id", external) != external:
        _problem(csv_file, line, "account_external_id", f"the token is for account {external!r}")
        return None
    who = known.emails.get(contact_id, "someone") if contact_id is not None else "someone"
    if "contact_email" in r and r["contact_email"] != who:
        _problem(csv_file, line, "contact_email", f"the token is for contact {who}")
        return None
    return kind, account_id, contact_id, who, touch


def _through_account(csv_file: CsvFile, line: int, r: dict[str, Any], known: _Known) -> _Whose | None:
    """An account (and contact) row checked against the database (None, with a problem, when it fails)."""
    if r["account_external_id"] not in known.accounts:
        _problem(csv_file, line, "account_external_id", f"unknown account {r['account_external_id']!r}")
        return None
    account_id, contact_id, who = known.accounts[r["account_external_id"]], None, "someone"
    if "contact_email" in r:
        contact_id = known.contacts.get((account_id, r["contact_email"]))
        if contact_id is None:
            message = f"account {r['account_external_id']!r} has no contact {r['contact_email']}"
            _problem(csv_file, line, "contact_email", message)
            return None
        who = r["contact_email"]
    return r["kind"], account_id, contact_id, who, None


def _checked_answers(
    csv_file: CsvFile, rows: list[tuple[int, dict[str, Any]]], known: _Known, now: datetime
) -> list[tuple[int, _Answer]]:
    """The rows against the database, and against each other (a repeat is a problem)."""
    answers: list[tuple[int, _Answer]] = []
    first_seen: dict[Any, int] = {}
    for line, r in rows:
        check = _through_token if "touch_key" in r else _through_account
        whose = check(csv_file, line, r, known)
        if whose is None:
            continue
        kind, account_id, contact_id, who, touch = whose
        try:
            score = _score(kind, r["score"])
        except SurveyError as exc:
            _problem(csv_file, line, "score", str(exc))
            continue
        at = r.get("responded_at", now)
        answer = _Answer(account_id, contact_id, kind, score, r.get("comment"), at, who, touch)
        key = ("touch", touch.id) if touch is not None else ("answer", account_id, contact_id, kind, at)
        if key in first_seen and (touch is not None or "responded_at" in r):
            column = "token" if touch is not None else "responded_at"
            _problem(csv_file, line, column, f"duplicate: the same answer is already on row {first_seen[key]}")
            continue
        first_seen.setdefault(key, line)
        answers.append((line, answer))
    return answers


def _not_yet_recorded(conn: Connection, answers: list[tuple[int, _Answer]]) -> tuple[list[_Answer], int]:
    """The answers not already recorded exactly so (those are left alone), and how many were."""
    recorded: set[tuple[Any, ...]] = set()
    for chunk in chunks({a.account_id for _, a in answers}):
        recorded.update(
            conn.execute(
                select(
                    _RESPONSE.c.account_id,
                    _RESPONSE.c.contact_id,
                    _RESPONSE.c.touch_id,
                    _RESPONSE.c.kind,
                    _RESPONSE.c.score,
                    _RESPONSE.c.comment,
                    _RESPONSE.c.responded_at,
                ).where(_RESPONSE.c.account_id.in_(chunk))
            ).all()
        )
    fresh = []
    unchanged = 0
    for _, a in answers:
        same = (
            a.account_id,
            a.contact_id,
            a.touch.id if a.touch is not None else None,
            a.kind,
            a.score,
            a.comment,
            a.responded_at,
        )
        if same in recorded:
            unchanged += 1
        else:
            fresh.append(a)
    return fresh, unchanged


def _would_write(conn: Connection, fresh: list[_Answer]) -> tuple[int, int]:
    """(inserted, updated) that writing ``fresh`` would give: an answered token's answer is replaced."""
    touched = {a.touch.id for a in fresh if a.touch is not None}
    answered = {
        t
        for chunk in chunks(touched)
        for t in conn.execute(select(_RESPONSE.c.touch_id).where(_RESPONSE.c.touch_id.in_(chunk))).scalars()
    }
    updated = sum(1 for a in fresh if a.touch is not None and a.touch.id in answered)
    return len(fresh) - updated, updated


def import_answers(
    engine: Engine,
    path: str | Path,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    secret: str | None = None,
) -> SurveyImportResult:
    """Record the answers of a CSV file, all or nothing.

    Columns: ``token`` (from the survey link) OR ``account_external_id`` and ``kind``; ``score``;
    optional ``comment``, ``responded_at`` (ISO 8601; a date or a time without a zone is UTC;
    default: now) and ``contact_email`` (a contact of that account). Every row is checked (score
    range per kind, known account and contact, a valid token for a survey that was sent) before
    anything is written; :class:`DataImportError` lists every bad row as ``FILE: row N, column 'x':
    message``. A row that repeats an answer already recorded (same account, contact, kind, time and
    score) is counted unchanged, so importing the same export twice adds nothing."""
    now = now or utcnow()
    secret = secret if secret is not None else survey_secret()
    csv_file = read_csv(path, "survey answers", ["score"])
    headers = csv_file.headers
    if "token" not in headers and not {"account_external_id", "kind"} <= set(headers):
        found = ", ".join(repr(h) for h in headers.values())
        message = f"the header needs a 'token' column, or 'account_external_id' and 'kind'; it has {found}"
        raise DataImportError(csv_file.name, [*csv_file.problems, RowProblem(1, message)])
    ignored = tuple(h for c, h in headers.items() if c not in IMPORT_COLUMNS)
    # 1. each row on its own
    parsed = [(record.line, _parse_answer(csv_file, record, secret, now)) for record in csv_file.records]
    label = Path(path).name
    result: dict[str, int] = {"inserted": 0, "updated": 0, "unchanged": 0}

    def work(conn: Connection) -> None:
        rows = [(line, row) for line, row in parsed if row]
        # 2. rows against the database, and against each other
        answers = _checked_answers(csv_file, rows, _Known.load(conn, rows), now)
        settle_problems(csv_file, skip_invalid=False)
        # 3. what is already recorded exactly so is left alone
        fresh, result["unchanged"] = _not_yet_recorded(conn, answers)
        result["inserted"], result["updated"] = _would_write(conn, fresh) if dry_run else _write(conn, fresh)

    try:
        with engine.begin() as conn:
            work(conn)
    except DBAPIError as exc:
        raise RetainError(f"{label}: the database refused the import, so nothing was written: {exc.orig}") from exc
    logger.info(
        "%s: survey answers %d inserted, %d updated, %d unchanged%s",
        csv_file.name,
        result["inserted"],
        result["updated"],
        result["unchanged"],
        " (dry run: nothing written)" if dry_run else "",
    )
    return SurveyImportResult(csv_file.name, dry_run=dry_run, ignored_columns=ignored, **result)


# --- the survey page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurveyTouch:
    """What the survey page shows for a token: the question, and the answer already given."""

    key: str
    kind: str
    question: str | None
    score: int | None  # the answer already recorded through this link
    comment: str | None
    preferences: dict[str, Any]  # the contact's (language, ...)
    custom: dict[str, Any]  # the account's custom fields (language, ...)

    @property
    def scale(self) -> range:
        low, high = KINDS[self.kind]
        return range(low, high + 1)


def survey_touch(conn: Connection, token: str, secret: str, today: date) -> SurveyTouch:
    """The survey a link's token was sent with. :class:`InvalidSurveyToken` (forged, altered),
    :class:`ExpiredSurveyToken` (past ``today``), :class:`NotFoundError` (no such survey sent)."""
    key = read_survey_token(token, secret, today)
    touch = _touch_by_key(conn, [key]).get(key)
    if touch is None or (touch.payload or {}).get("kind") != "survey":
        raise NotFoundError("no survey was sent with this link")
    answer = conn.execute(
        select(_RESPONSE.c.score, _RESPONSE.c.comment).where(_RESPONSE.c.touch_id == touch.id)
    ).first()
    preferences = (
        conn.execute(select(_CONTACT.c.preferences).where(_CONTACT.c.id == touch.contact_id)).scalar()
        if touch.contact_id is not None
        else None
    )
    custom = conn.execute(select(_ACCOUNT.c.custom).where(_ACCOUNT.c.id == touch.account_id)).scalar()
    question = touch.payload.get("question")
    return SurveyTouch(
        key=key,
        kind=touch.payload["survey"],
        question=question if isinstance(question, str) else None,
        score=answer.score if answer else None,
        comment=answer.comment if answer else None,
        preferences=preferences or {},
        custom=custom or {},
    )
