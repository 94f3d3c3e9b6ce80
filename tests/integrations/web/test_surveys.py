"""``/survey`` through the ASGI app: a survey sent by a playbook to contacts brought in by
``retain contacts import``; one click records, a comment follows, a second answer updates; forged,
altered, expired and out-of-range input changes nothing."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from integrations.channels import build_channels
from integrations.links import sign
from models import Settings, SurveyResponse, Touch
from playbooks import compile_source

from ._book import book, timeline
from .conftest import LINKS, T0, Client, Clock

PLAYBOOK = compile_source(
    textwrap.dedent(
        """
        playbook: pulse
        name: Pulse
        lifecycle: check_in
        audience: account.status == "active"
        steps:
          - id: ask_nps
            kind: survey
            survey: nps
        """
    ),
    "pulse.yaml",
)


@pytest.fixture
def sent(sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """The survey payloads sent (through the file channel), by contact address."""
    book(sqlite_engine, tmp_path)
    for name, value in {"RETAIN_PUBLIC_URL": LINKS.public_url, "RETAIN_SURVEY_SECRET": LINKS.survey_key,
                        "RETAIN_UNSUBSCRIBE_SECRET": LINKS.unsubscribe_key, "RETAIN_LINK_DAYS": str(LINKS.days)}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    tick(sqlite_engine, PLAYBOOK, T0, channels=build_channels(Settings(outbox_dir=tmp_path / "out")), window=None)  # type: ignore[call-arg]
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(Touch.payload)).scalars().all()
    return {p["to"].split("<")[1].rstrip(">"): p for p in rows}


def _path(link: str) -> str:
    return link.removeprefix(LINKS.public_url)


def _answers(engine: Engine) -> list[tuple[int, str | None]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(SurveyResponse.score, SurveyResponse.comment))]  # type: ignore[misc]


def test_the_email_shows_a_row_of_score_buttons(sent: dict[str, dict[str, str]]) -> None:
    payload = sent["dana@acme.example"]
    link = payload["survey_url"]
    assert link.startswith("https://retain.acme.test/survey?t=")
    html = payload["html"]
    for n in range(11):
        assert f'href="{link}&amp;score={n}"' in html
    assert f'<a href="{link}">Open the survey</a>' in html
    assert "0 = Not at all likely, 10 = Extremely likely" in html
    assert "want these surveys?" in html and payload["unsubscribe_url"] in html


def test_one_click_records_a_comment_follows_and_a_second_answer_updates(
    sqlite_engine: Engine, client: Client, sent: dict[str, dict[str, str]]
) -> None:
    link = _path(sent["dana@acme.example"]["survey_url"])
    asked = client.get(link)
    assert asked.status_code == 200
    assert "How likely are you to recommend us" in asked.text and asked.text.count('name="score"') == 11
    assert _answers(sqlite_engine) == []

    clicked = client.post(link, data={"score": "9"})
    assert clicked.status_code == 200 and "your answer <strong>9</strong> is recorded" in clicked.text
    assert 'value="9" aria-pressed="true"' in clicked.text
    assert _answers(sqlite_engine) == [(9, None)]

    commented = client.post(link.replace("/survey?", "/survey/comment?"), data={"comment": "Great onboarding"})
    assert commented.status_code == 200 and "and your comment are recorded" in commented.text
    assert _answers(sqlite_engine) == [(9, "Great onboarding")]

    changed = client.post(link, data={"score": "6"})  # a change of mind, or the same form sent twice
    assert changed.status_code == 200
    assert client.post(link, data={"score": "6"}).status_code == 200
    assert _answers(sqlite_engine) == [(6, "Great onboarding")]  # updated, never duplicated
    assert "You answered <strong>6</strong>" in client.get(link).text
    with sqlite_engine.connect() as conn:
        replied = conn.execute(select(func.count()).where(Touch.replied_at == T0)).scalar_one()
    assert replied == 1
    assert timeline(sqlite_engine, "survey") == [
        "NPS 9 (promoter) from dana@acme.example",
        "NPS 9 (promoter) from dana@acme.example: “Great onboarding”",
        "NPS answer changed 9 → 6 by dana@acme.example: “Great onboarding”",
    ]  # the repeated 6 changed nothing


def test_the_email_s_score_button_answers_in_one_click(
    sqlite_engine: Engine, client: Client, sent: dict[str, dict[str, str]]
) -> None:
    link = _path(sent["jo@kraft.example"]["survey_url"])
    assert client.request("HEAD", f"{link}&score=3").status_code == 200  # a mail system's link checker
    assert _answers(sqlite_engine) == []
    clicked = client.get(f"{link}&score=10")
    assert clicked.status_code == 200 and '<html lang="de">' in clicked.text
    assert "Ihre Antwort <strong>10</strong> ist gespeichert" in clicked.text
    assert _answers(sqlite_engine) == [(10, None)]


def test_forged_altered_expired_or_out_of_range_input_changes_nothing(
    sqlite_engine: Engine, client: Client, clock: Clock, sent: dict[str, dict[str, str]]
) -> None:
    link = _path(sent["dana@acme.example"]["survey_url"])
    token = link.split("t=")[1]
    subject, _, mac = token.split(".")
    forged = {
        f"{subject}.20991231.{mac}": 400,  # a later last day
        token[:-4]: 400,
        sign("guessed", "survey", "pulse:1:ask_nps:1:1", T0.date()): 400,
        sign(LINKS.unsubscribe_key, "unsubscribe", "email|contact:1", T0.date()): 400,  # made for another use
        sign(LINKS.survey_key, "survey", "no:such:touch", T0.date()): 404,
        "": 400,
    }
    for bad, status in forged.items():
        for method in ("GET", "POST"):
            answer = client.request(
                method, "/survey", params={"t": bad}, data={"score": "10"} if method == "POST" else None
            )
            assert answer.status_code == status, (bad, method)
            assert "Nothing was changed" in answer.text
        assert client.get("/survey", params={"t": bad, "score": "10"}).status_code == status
    for score in ("11", "-1", "nine", ""):
        refused = client.post(link, data={"score": score})
        assert refused.status_code == 400 and "Nothing was changed" in refused.text, score
    assert "out of range for NPS" in client.post(link, data={"score": "11"}).text
    early = client.post(link.replace("/survey?", "/survey/comment?"), data={"comment": "x" * 10})
    assert early.status_code == 400 and "Choose a score first" in early.text
    assert _answers(sqlite_engine) == []
    client.post(link, data={"score": "8"})
    essay = client.post(link.replace("/survey?", "/survey/comment?"), data={"comment": "x" * 5001})
    assert essay.status_code == 400 and "longer than 5000 characters" in essay.text
    assert _answers(sqlite_engine) == [(8, None)]

    clock.travel(days=LINKS.days + 1)
    expired = client.post(link, data={"score": "9"})
    assert expired.status_code == 410 and "This survey link has expired" in expired.text
    assert _answers(sqlite_engine) == [(8, None)]


def test_two_answers_through_one_link_at_once_make_one_answer_on_postgresql(
    pg_clean: Engine, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double tap on PostgreSQL: both requests find no answer yet, one inserts, the other becomes
    the update (the unique touch of an answer holds it); one answer, never two."""
    from concurrent.futures import ThreadPoolExecutor

    from .conftest import make_client

    book(pg_clean, tmp_path)
    monkeypatch.setenv("RETAIN_PUBLIC_URL", LINKS.public_url)
    monkeypatch.setenv("RETAIN_SURVEY_SECRET", LINKS.survey_key)
    tick(pg_clean, PLAYBOOK, T0, channels=build_channels(Settings(outbox_dir=tmp_path / "out")), window=None)  # type: ignore[call-arg]
    with pg_clean.connect() as conn:
        links = [p["survey_url"] for p in conn.execute(select(Touch.payload)).scalars()]
    client = make_client(pg_clean, clock)
    for link in links:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda score, at=_path(link): client.post(at, data={"score": score}), ["7", "8"]))
        assert [a.status_code for a in answers] == [200, 200]
    assert sorted(score for score, _ in _answers(pg_clean)) in ([7, 7], [7, 8], [8, 8])
    assert len(_answers(pg_clean)) == len(links) == 2
