"""Surveys: NPS, CSAT and CES on hand-counted answers, signed links, recording one answer and
importing a file of them (all or nothing, bad rows by number), and the summary, on SQLite and
PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine

from flows.analytics.surveys import (
    DEFAULT_SURVEY_BASE_URL,
    DEFAULT_SURVEY_SECRET,
    InvalidSurveyToken,
    SurveyError,
    ces_score,
    csat_score,
    import_answers,
    nps_group,
    nps_score,
    read_survey_token,
    record_answer,
    summarize,
    survey_link,
    survey_link_for,
    survey_summary,
    survey_token,
)
from models import (
    Account,
    Contact,
    DataImportError,
    NotFoundError,
    SurveyResponse,
    TimelineEvent,
    Touch,
    session,
)

NOW = datetime(2027, 3, 31, 12, 0, tzinfo=UTC)
SECRET = "test-secret"
TOUCH_KEY = "check_in:7:ask_nps:1:2"

# --- the arithmetic -------------------------------------------------------------------------------


def test_nps_is_promoters_minus_detractors() -> None:
    # 4 promoters (9, 9, 10, 10), 3 passives (7, 8, 8), 3 detractors (0, 5, 6): 40% - 30% = +10
    answers = [9, 9, 10, 10, 7, 8, 8, 0, 5, 6]
    assert nps_score(answers) == 10.0
    assert [nps_group(s) for s in (6, 7, 8, 9)] == ["detractor", "passive", "passive", "promoter"]
    assert nps_score([10, 10]) == 100.0
    assert nps_score([0, 6, 3]) == -100.0
    assert nps_score([9, 7, 6]) == 0.0
    assert nps_score([9, 6, 6]) == -33.3  # 1/3 - 2/3, one decimal
    assert nps_score([]) is None


def test_csat_is_the_share_of_satisfied_answers() -> None:
    # satisfied 4, 5, 5 of 1, 2, 3, 4, 5, 5: 3/6 = 50%
    assert csat_score([1, 2, 3, 4, 5, 5]) == 50.0
    assert csat_score([4, 4, 3]) == 66.7
    assert csat_score([]) is None


def test_ces_is_the_average_and_the_share_of_easy_answers() -> None:
    assert ces_score([7, 6, 5, 1]) == 4.75
    summary = summarize("ces", {7: 1, 6: 1, 5: 1, 1: 1})
    assert summary["score"] == 4.75
    assert summary["groups"] == {"easy": 3, "neutral": 0, "difficult": 1}
    assert summary["shares"]["easy"] == 75.0


def test_summarize_gives_groups_shares_and_every_possible_score() -> None:
    summary = summarize("nps", {9: 2, 10: 2, 7: 1, 8: 2, 0: 1, 5: 1, 6: 1})
    assert summary == {
        "kind": "nps",
        "responses": 10,
        "score": 10.0,
        "average": 7.2,  # (18 + 20 + 7 + 16 + 0 + 5 + 6) / 10
        "groups": {"promoters": 4, "passives": 3, "detractors": 3},
        "shares": {"promoters": 40.0, "passives": 30.0, "detractors": 30.0},
        "distribution": {0: 1, 1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1, 7: 1, 8: 2, 9: 2, 10: 2},
    }
    csat = summarize("csat", {5: 1, 4: 1, 3: 1, 1: 1})
    assert (csat["score"], csat["average"], csat["groups"]) == (
        50.0,
        3.25,
        {"satisfied": 2, "neutral": 1, "dissatisfied": 1},
    )
    empty = summarize("csat", {})
    assert (empty["responses"], empty["score"], empty["average"], empty["shares"]["satisfied"]) == (0, None, None, None)


# --- signed links -------------------------------------------------------------------------------


def test_a_token_reads_back_as_its_touch_key() -> None:
    token = survey_token(TOUCH_KEY, SECRET)
    assert read_survey_token(token, SECRET) == TOUCH_KEY
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert survey_token(TOUCH_KEY, SECRET) == token  # the same key, the same link


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # a changed signature
        lambda t: survey_token("check_in:7:ask_nps:1:3", SECRET).split(".")[0] + "." + t.split(".")[1],  # another key
        lambda t: t.split(".")[0],  # no signature
        lambda t: t[:20],  # cut short
        lambda t: "!!!." + t.split(".")[1],  # not base64
        lambda t: "",
        lambda t: survey_token(TOUCH_KEY, "another secret"),
    ],
)
def test_a_changed_token_is_refused(tamper: Any) -> None:
    with pytest.raises(InvalidSurveyToken, match="the survey token is not valid: it was changed or cut short"):
        read_survey_token(tamper(survey_token(TOUCH_KEY, SECRET)), SECRET)


def test_links_carry_the_token_and_read_their_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    token = survey_token(TOUCH_KEY, SECRET)
    assert survey_link("https://acme.test/s", TOUCH_KEY, SECRET) == f"https://acme.test/s?t={token}"
    assert survey_link("https://acme.test/s?lang=de", TOUCH_KEY, SECRET) == f"https://acme.test/s?lang=de&t={token}"

    monkeypatch.delenv("RETAIN_SURVEY_SECRET", raising=False)
    monkeypatch.delenv("RETAIN_SURVEY_BASE_URL", raising=False)
    assert survey_link_for(TOUCH_KEY) == survey_link(DEFAULT_SURVEY_BASE_URL, TOUCH_KEY, DEFAULT_SURVEY_SECRET)
    monkeypatch.setenv("RETAIN_SURVEY_SECRET", SECRET)
    monkeypatch.setenv("RETAIN_SURVEY_BASE_URL", "https://acme.test/s")
    assert survey_link_for(TOUCH_KEY) == f"https://acme.test/s?t={token}"


# --- a small database ---------------------------------------------------------------------------


def _seed(engine: Engine) -> dict[str, int]:
    """Accounts acme (segment enterprise; contacts ana, bo) and globex (smb; contact gil); a survey
    touch (NPS) to ana, and an email touch to bo."""
    with engine.begin() as conn:
        conn.execute(
            insert(Account),
            [
                {"external_id": "acme", "name": "Acme", "segment": "enterprise", "custom": {}},
                {"external_id": "globex", "name": "Globex", "segment": "smb", "custom": {}},
            ],
        )
        ids = dict(conn.execute(select(Account.external_id, Account.id)).all())
        conn.execute(
            insert(Contact),
            [
                {"account_id": ids[a], "email": e, "unsubscribed_channels": [], "preferences": {}}
                for a, e in (("acme", "ana@acme.test"), ("acme", "bo@acme.test"), ("globex", "gil@globex.test"))
            ],
        )
        contacts = dict(conn.execute(select(Contact.email, Contact.id)).all())
        conn.execute(
            insert(Touch),
            [
                {
                    "key": TOUCH_KEY,
                    "account_id": ids["acme"],
                    "contact_id": contacts["ana@acme.test"],
                    "playbook": "check_in",
                    "step_id": "ask_nps",
                    "channel": "email",
                    "status": "delivered",
                    "payload": {"kind": "survey", "survey": "nps"},
                    "created_at": NOW - timedelta(days=2),
                },
                {
                    "key": "check_in:7:hello:1:3",
                    "account_id": ids["acme"],
                    "contact_id": contacts["bo@acme.test"],
                    "playbook": "check_in",
                    "step_id": "hello",
                    "channel": "email",
                    "status": "delivered",
                    "payload": {"kind": "email"},
                    "created_at": NOW - timedelta(days=2),
                },
            ],
        )
    return {**ids, **contacts}


def _responses(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(
                    SurveyResponse.account_id,
                    SurveyResponse.contact_id,
                    SurveyResponse.touch_id,
                    SurveyResponse.kind,
                    SurveyResponse.score,
                    SurveyResponse.comment,
                ).order_by(SurveyResponse.id)
            )
        ]


def _events(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        query = select(TimelineEvent.summary).where(TimelineEvent.kind == "survey").order_by(TimelineEvent.id)
        return list(conn.execute(query).scalars())


def _touch_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(Touch.id).where(Touch.key == TOUCH_KEY)).scalar_one())


def test_recording_an_answer_by_account_and_kind(engine: Engine) -> None:
    ids = _seed(engine)
    with session(engine) as s:
        response = record_answer(
            s, account="acme", kind="csat", score=4, contact_email="BO@acme.test", comment="quick fix", now=NOW
        )
    assert (response.kind, response.score, response.responded_at) == ("csat", 4, NOW)
    assert _responses(engine) == [(ids["acme"], ids["bo@acme.test"], None, "csat", 4, "quick fix")]
    assert _events(engine) == ["CSAT 4 from bo@acme.test: “quick fix”"]


def test_recording_an_answer_through_its_token_links_the_touch(engine: Engine) -> None:
    ids = _seed(engine)
    token = survey_token(TOUCH_KEY, SECRET)
    with session(engine) as s:
        record_answer(s, token=token, score=6, now=NOW, secret=SECRET, responded_at="2027-03-30T09:00:00+02:00")
    touch = _touch_id(engine)
    assert _responses(engine) == [(ids["acme"], ids["ana@acme.test"], touch, "nps", 6, None)]
    with session(engine) as s:  # they change their mind: the answer is replaced, not counted twice
        record_answer(s, token=token, score=9, comment="better now", now=NOW, secret=SECRET)
    assert _responses(engine) == [(ids["acme"], ids["ana@acme.test"], touch, "nps", 9, "better now")]
    assert _events(engine) == [
        "NPS 6 (detractor) from ana@acme.test",
        "NPS answer changed 6 → 9 by ana@acme.test: “better now”",
    ]
    with engine.connect() as conn:
        replied = conn.execute(select(Touch.replied_at).where(Touch.id == touch)).scalar_one()
        playbook = conn.execute(select(TimelineEvent.playbook).where(TimelineEvent.kind == "survey")).scalars().all()
    assert replied == datetime(2027, 3, 30, 7, 0, tzinfo=UTC)  # the first answer
    assert playbook == ["check_in", "check_in"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"account": "acme", "kind": "nps", "score": 11}, SurveyError, "11 is out of range for NPS: use a whole number from 0 to 10"),
        ({"account": "acme", "kind": "csat", "score": 0}, SurveyError, "0 is out of range for CSAT: use a whole number from 1 to 5"),
        ({"account": "acme", "kind": "ces", "score": 8}, SurveyError, "8 is out of range for CES: use a whole number from 1 to 7"),
        ({"account": "acme", "kind": "nsp", "score": 1}, SurveyError, "'nsp' is not a survey kind: use nps, csat or ces"),
        ({"account": "acmee", "kind": "nps", "score": 1}, NotFoundError, "no account with external id 'acmee'; did you mean 'acme'?"),
        ({"account": "acme", "kind": "nps", "score": 1, "contact_email": "gil@globex.test"}, NotFoundError,
         "account 'acme' has no contact gil@globex.test"),
        ({"account": "acme", "kind": "nps", "score": 1, "responded_at": "2027-04-02"}, SurveyError,
         "2027-04-02 00:00 UTC is in the future"),
        ({"account": "acme", "kind": "nps", "score": 1, "responded_at": "yesterday"}, SurveyError,
         "'yesterday' is not a date or time"),
        ({"score": 1}, SurveyError, "name the account and the kind of survey"),
        ({"token": "abc.def", "score": 1}, InvalidSurveyToken, "the survey token is not valid"),
        ({"token": survey_token("nope", SECRET), "score": 1}, NotFoundError, "no survey was sent with this token"),
        ({"token": survey_token("check_in:7:hello:1:3", SECRET), "score": 1}, NotFoundError,
         "no survey was sent with this token"),
        ({"token": survey_token(TOUCH_KEY, SECRET), "score": 4, "kind": "csat"}, SurveyError,
         "the token is for an NPS survey, not csat"),
        ({"token": survey_token(TOUCH_KEY, SECRET), "score": 4, "account": "globex"}, SurveyError,
         "the token is for account 'acme', not 'globex'"),
    ],
)  # fmt: skip
def test_a_bad_answer_is_refused_and_nothing_is_written(
    sqlite_engine: Engine, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    _seed(sqlite_engine)
    with pytest.raises(error, match=re.escape(message)), session(sqlite_engine) as s:
        record_answer(s, now=NOW, secret=SECRET, **kwargs)
    assert _responses(sqlite_engine) == []
    assert _events(sqlite_engine) == []


# --- import -------------------------------------------------------------------------------------


def _csv(tmp_path: Path, text: str, name: str = "answers.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_file_of_answers_is_recorded_and_a_second_import_adds_nothing(engine: Engine, tmp_path: Path) -> None:
    ids = _seed(engine)
    token = survey_token(TOUCH_KEY, SECRET)
    path = _csv(
        tmp_path,
        "Token,Account External ID,Kind,Score,Comment,Responded At,Contact Email,Channel\n"
        f"{token},,,10,love it,2027-03-30T10:00:00Z,,web\n"
        ",acme,CSAT,5,,2027-03-29,bo@acme.test,web\n"
        ",globex,nps,3,too slow,2027-03-28T08:00:00,,\n",
    )
    result = import_answers(engine, path, now=NOW, secret=SECRET)
    assert (result.inserted, result.updated, result.unchanged, result.ignored_columns) == (3, 0, 0, ("Channel",))
    touch = _touch_id(engine)
    assert _responses(engine) == [
        (ids["acme"], ids["ana@acme.test"], touch, "nps", 10, "love it"),
        (ids["acme"], ids["bo@acme.test"], None, "csat", 5, None),
        (ids["globex"], None, None, "nps", 3, "too slow"),
    ]
    assert _events(engine) == [
        "NPS 10 (promoter) from ana@acme.test: “love it”",
        "CSAT 5 from bo@acme.test",
        "NPS 3 (detractor) from someone: “too slow”",
    ]

    again = import_answers(engine, path, now=NOW + timedelta(hours=1), secret=SECRET)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    assert len(_responses(engine)) == 3 and len(_events(engine)) == 3


def test_bad_rows_are_listed_by_number_and_nothing_is_written(engine: Engine, tmp_path: Path) -> None:
    _seed(engine)
    good = survey_token(TOUCH_KEY, SECRET)
    path = _csv(
        tmp_path,
        "token,account_external_id,kind,score,responded_at,contact_email\n"
        ",acme,nps,9,,\n"  # row 2: good
        ",acme,nps,11,,\n"  # row 3
        ",acme,csat,0,,\n"  # row 4
        ",acme,ces,nine,,\n"  # row 5
        ",nobody,nps,5,,\n"  # row 6
        ",acme,nps,5,,gil@globex.test\n"  # row 7
        f"{good[:-2]}xx,,,5,,\n"  # row 8: tampered
        f"{survey_token('unknown:touch', SECRET)},,,5,,\n"  # row 9
        ",acme,,5,,\n"  # row 10
        ",acme,nps,,,\n"  # row 11
        ",acme,nps,5,2099-01-01,\n"  # row 12
        f"{good},,,9,,\n"  # row 13: good
        f"{good},,,8,,\n"  # row 14: the same token again
        f"{good},,csat,3,,\n",  # row 15: not a CSAT survey
    )
    with pytest.raises(DataImportError) as caught:
        import_answers(engine, path, now=NOW, secret=SECRET)
    f = str(path)
    assert [p.format(f) for p in caught.value.problems] == [
        f"{f}: row 3, column 'score': 11 is out of range for NPS: use a whole number from 0 to 10",
        f"{f}: row 4, column 'score': 0 is out of range for CSAT: use a whole number from 1 to 5",
        f"{f}: row 5, column 'score': 'nine' is not a whole number from 1 to 7",
        f"{f}: row 6, column 'account_external_id': unknown account 'nobody'",
        f"{f}: row 7, column 'contact_email': account 'acme' has no contact gil@globex.test",
        f"{f}: row 8, column 'token': the survey token is not valid: it was changed or cut short, "
        "or signed with another secret (RETAIN_SURVEY_SECRET)",
        f"{f}: row 9, column 'token': no survey was sent with this token",
        f"{f}: row 10, column 'kind': a value is required (or a token)",
        f"{f}: row 11, column 'score': a value is required",
        f"{f}: row 12, column 'responded_at': 2099-01-01 00:00 UTC is in the future",
        f"{f}: row 14, column 'token': duplicate: the same answer is already on row 13",
        f"{f}: row 15, column 'kind': the token is for an NPS survey, not csat",
    ]
    assert _responses(engine) == []
    assert _events(engine) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("account_external_id,score\nacme,9\n", "row 1: the header needs a 'token' column, or 'account_external_id' and 'kind'; it has 'account_external_id', 'score'"),
        ("token,kind\nabc,nps\n", "row 1: missing required column 'score'; the header has 'token', 'kind'"),
        ("", "row 1: the file is empty; the header must name score"),
    ],
)  # fmt: skip
def test_a_file_without_the_columns_it_needs_is_refused(
    sqlite_engine: Engine, tmp_path: Path, text: str, message: str
) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(DataImportError) as caught:
        import_answers(sqlite_engine, path, now=NOW, secret=SECRET)
    assert [p.format(str(path)) for p in caught.value.problems] == [f"{path}: {message}"]


def test_a_dry_run_counts_and_writes_nothing(sqlite_engine: Engine, tmp_path: Path) -> None:
    _seed(sqlite_engine)
    path = _csv(tmp_path, f"token,score\n{survey_token(TOUCH_KEY, SECRET)},9\n")
    result = import_answers(sqlite_engine, path, now=NOW, secret=SECRET, dry_run=True)
    assert (result.inserted, result.dry_run) == (1, True)
    assert _responses(sqlite_engine) == []


# --- summary ------------------------------------------------------------------------------------


def test_the_summary_counts_by_kind_time_and_segment(engine: Engine) -> None:
    ids = _seed(engine)
    day = timedelta(days=1)
    answers = [
        ("acme", "nps", 10, NOW - 1 * day),
        ("acme", "nps", 9, NOW - 2 * day),
        ("acme", "nps", 3, NOW - 40 * day),
        ("globex", "nps", 7, NOW - 3 * day),
        ("globex", "nps", 6, NOW - 4 * day),
        ("globex", "csat", 4, NOW - 4 * day),
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(SurveyResponse),
            [{"account_id": ids[a], "kind": k, "score": s, "responded_at": at} for a, k, s, at in answers],
        )
    with session(engine) as s:
        everything = survey_summary(s, "nps")
        recent = survey_summary(s, "nps", since=NOW - 30 * day)
        enterprise = survey_summary(s, "nps", since=NOW - 30 * day, segment="enterprise")
        old = survey_summary(s, "nps", until=NOW - 30 * day)
        csat = survey_summary(s, "csat", segment="enterprise")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(SurveyResponse)).scalar_one() == 6
    # all: promoters 10, 9; passive 7; detractors 3, 6: (2 - 2) / 5 = 0
    assert (everything["responses"], everything["accounts"], everything["score"]) == (5, 2, 0.0)
    # the last 30 days: 10, 9, 7, 6: (2 - 1) / 4 = +25
    assert (recent["responses"], recent["score"], recent["groups"]) == (
        4,
        25.0,
        {"promoters": 2, "passives": 1, "detractors": 1},
    )
    assert (enterprise["responses"], enterprise["accounts"], enterprise["score"]) == (2, 1, 100.0)
    assert (old["responses"], old["score"]) == (1, -100.0)
    assert (csat["responses"], csat["score"]) == (0, None)
    with pytest.raises(SurveyError, match="unknown survey kind 'promoters'"), session(engine) as s:
        survey_summary(s, "promoters")
