"""``/unsubscribe`` through the ASGI app: the page, RFC 8058 one-click, undo, and every kind of
bad link (forged, altered, expired, made for another use, replayed), on contacts imported by
``retain contacts import``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from integrations.channels import build_channels
from integrations.links import sign
from models import Settings, Suppression, Touch
from playbooks import compile_source

from ._book import book, contact, timeline
from .conftest import LINKS, T0, Client, Clock

ONE_CLICK = {"content": b"List-Unsubscribe=One-Click", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


def _path(link: str) -> str:
    return link.removeprefix(LINKS.public_url)


@pytest.fixture
def ids(sqlite_engine: Engine, tmp_path: Path) -> dict[str, int]:
    return book(sqlite_engine, tmp_path)


def test_the_page_asks_and_one_click_unsubscribes_once(
    sqlite_engine: Engine, client: Client, ids: dict[str, int]
) -> None:
    link = _path(LINKS.unsubscribe_link("email", T0, contact_id=ids["dana@acme.example"]))
    asked = client.get(link)
    assert asked.status_code == 200
    assert "Unsubscribe from our emails?" in asked.text and "dana@acme.example" in asked.text
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed_channels == []  # a GET changes nothing

    done = client.post(link, **ONE_CLICK)
    assert done.status_code == 200 and "You are unsubscribed" in done.text and "Undo" in done.text
    dana = contact(sqlite_engine, "dana@acme.example")
    assert (dana.unsubscribed, dana.unsubscribed_channels, dana.unsubscribed_at) == (False, ["email"], T0)
    with sqlite_engine.connect() as conn:
        [(channels, source)] = conn.execute(select(Suppression.channels, Suppression.source)).all()
    assert (channels, source) == (["email"], "link")
    assert timeline(sqlite_engine, "unsubscribed") == [
        "contact dana@acme.example unsubscribed from email (through the unsubscribe link)"
    ]

    replayed = client.post(link, **ONE_CLICK)  # a mail program retrying, a second click
    assert replayed.status_code == 200 and "Already done" in replayed.text
    assert len(timeline(sqlite_engine, "unsubscribed")) == 1
    assert "Already done" in client.get(link).text


def test_undo_resubscribes_and_is_on_the_timeline(sqlite_engine: Engine, client: Client, ids: dict[str, int]) -> None:
    link = _path(LINKS.unsubscribe_link("email", T0, contact_id=ids["dana@acme.example"]))
    client.post(link, **ONE_CLICK)
    undone = client.post(link.replace("/unsubscribe?", "/unsubscribe/undo?"))
    assert undone.status_code == 200 and "You are subscribed again" in undone.text
    dana = contact(sqlite_engine, "dana@acme.example")
    assert (dana.unsubscribed, dana.unsubscribed_channels, dana.unsubscribed_at) == (False, [], None)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(Suppression)).all() == []
    assert timeline(sqlite_engine, "resubscribed") == [
        "contact dana@acme.example resubscribed to email messages (link)"
    ]


def test_the_page_is_in_the_account_s_language(client: Client, ids: dict[str, int]) -> None:
    link = _path(LINKS.unsubscribe_link("survey", T0, contact_id=ids["jo@kraft.example"]))
    asked = client.get(link)
    assert '<html lang="de">' in asked.text and "Von unseren Umfragen abmelden?" in asked.text
    assert "Sie sind abgemeldet" in client.post(link, **ONE_CLICK).text


def _forged(ids: dict[str, int]) -> dict[str, str]:
    genuine = LINKS.unsubscribe_link("email", T0, contact_id=ids["dana@acme.example"]).split("t=")[1]
    other = LINKS.unsubscribe_link("email", T0, contact_id=ids["jo@kraft.example"]).split("t=")[1]
    subject, day, mac = genuine.split(".")
    return {
        "another contact's subject": f"{other.split('.')[0]}.{day}.{mac}",
        "a later last day": f"{subject}.20991231.{mac}",
        "cut short": genuine[:-5],
        "another secret": sign("guessed", "unsubscribe", "all|contact:1", T0.date()),
        "a survey token": sign(LINKS.survey_key, "unsubscribe", "x", T0.date()).replace(".", "..", 1),
        "made for surveys": sign(LINKS.survey_key, "survey", f"email|contact:{ids['dana@acme.example']}", T0.date()),
        "no token": "",
    }


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_forged_or_altered_links_get_a_page_and_change_nothing(
    sqlite_engine: Engine, client: Client, ids: dict[str, int], method: str
) -> None:
    for why, token in _forged(ids).items():
        answer = client.request(method, "/unsubscribe", params={"t": token})
        assert answer.status_code == 400, why
        assert "This link is not valid" in answer.text and "Nothing was changed" in answer.text, why
    undo = client.post("/unsubscribe/undo", params={"t": _forged(ids)["a later last day"]})
    assert undo.status_code == 400
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed_channels == []
    assert timeline(sqlite_engine, "unsubscribed") == []


def test_an_expired_link_says_so_and_changes_nothing(
    sqlite_engine: Engine, client: Client, clock: Clock, ids: dict[str, int]
) -> None:
    link = _path(LINKS.unsubscribe_link("email", T0, contact_id=ids["dana@acme.example"]))
    clock.travel(days=LINKS.days)
    assert client.get(link).status_code == 200  # its last day
    clock.travel(days=1)
    expired = client.post(link, **ONE_CLICK)
    assert expired.status_code == 410
    assert "This link has expired" in expired.text and "April 1, 2027" in expired.text
    assert contact(sqlite_engine, "dana@acme.example").unsubscribed_channels == []


def test_a_link_to_a_contact_no_longer_there(client: Client) -> None:
    gone = client.get(_path(LINKS.unsubscribe_link("email", T0, contact_id=999)))
    assert gone.status_code == 404 and "We no longer have this address" in gone.text


PLAYBOOK = compile_source(
    textwrap.dedent(
        """
        playbook: nudges
        name: Nudges
        lifecycle: check_in
        audience: account.status == "active"
        steps:
          - id: first
            kind: email
            subject: "Hello {{ account.name }}"
            body: "Hi {{ contact.first_name }}, a first note."
          - id: pause
            kind: wait
            for: 1 day
          - id: second
            kind: email
            subject: "Again"
            body: "Hi {{ contact.first_name }}, a second note."
        """
    ),
    "nudges.yaml",
)


def test_the_email_carries_the_link_and_after_one_click_the_next_touch_is_suppressed(
    sqlite_engine: Engine, client: Client, ids: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETAIN_PUBLIC_URL", LINKS.public_url)
    monkeypatch.setenv("RETAIN_UNSUBSCRIBE_SECRET", LINKS.unsubscribe_key)
    monkeypatch.setenv("RETAIN_LINK_DAYS", str(LINKS.days))
    channels = build_channels(Settings(outbox_dir=tmp_path / "outbox"))  # type: ignore[call-arg]
    tick(sqlite_engine, PLAYBOOK, T0, channels=channels, window=None)
    with sqlite_engine.connect() as conn:
        payload = conn.execute(select(Touch.payload).where(Touch.contact_id == ids["dana@acme.example"])).scalar_one()
    link = payload["unsubscribe_url"]
    assert link.startswith("https://retain.acme.test/unsubscribe?t=")
    assert f"Unsubscribe: {link}" in payload["text"] and f'<a href="{link}">Unsubscribe</a>' in payload["html"]

    assert client.post(_path(link), **ONE_CLICK).status_code == 200
    tick(sqlite_engine, PLAYBOOK, T0.replace(day=4), channels=channels, window=None)
    with sqlite_engine.connect() as conn:
        second = conn.execute(
            select(Touch.status, Touch.reason).where(
                Touch.step_id == "second", Touch.contact_id == ids["dana@acme.example"]
            )
        ).one()
    assert second.status == "suppressed" and "unsubscribed from email" in (second.reason or "")


def test_a_refusal_is_in_the_browser_s_language_when_the_link_names_nobody_yet(
    client: Client, clock: Clock, ids: dict[str, int]
) -> None:
    german = {"Accept-Language": "fr-CH, de-DE;q=0.8, en;q=0.5"}  # no French pages: German, the next choice
    forged = client.get("/unsubscribe", params={"t": "forged.20270401.x"}, headers=german)
    assert forged.status_code == 400 and '<html lang="de">' in forged.text
    assert "Dieser Link ist nicht gültig" in forged.text and "Es wurde nichts geändert" in forged.text
    link = _path(LINKS.unsubscribe_link("email", T0, contact_id=ids["dana@acme.example"]))
    clock.travel(days=LINKS.days + 1)
    expired = client.get(link, headers=german)
    assert expired.status_code == 410 and "bis zum 1. April 2027 gültig" in expired.text
    english = client.get(link, headers={"Accept-Language": "de;q=0, en-GB"})
    assert '<html lang="en">' in english.text and "valid through April 1, 2027" in english.text
