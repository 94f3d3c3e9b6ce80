"""The approvals page of ``retain web``, from the signed link in a CSM's daily digest: the drafts
waiting for that CSM with the rendered email, Approve (the outbox sends it once, under its key)
and Reject; a forged, foreign or expired link changes nothing. The book comes in through
``retain accounts import`` / ``contacts import`` and a ``retain play``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from flows.engine.outbox import deliver
from integrations.channels.file import FileChannel
from integrations.sources import approvals_link
from integrations.web import create_app
from models import Settings, make_engine, utcnow
from tests.cli._world import Retain, make_retain
from tests.integrations.web.conftest import LINKS, Client, Clock

REVIEW = """\
playbook: review
name: Review
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: note
    kind: email
    subject: "Your renewal, {{ account.name }}"
    body: "Hello {{ contact.name }}, shall we talk about the **renewal**?"
    approve: csm
  - id: pause
    kind: wait
    for: 30 days
"""


@pytest.fixture
def world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Retain, Client, str]:
    retain = make_retain(tmp_path, capsys, monkeypatch, {"review": REVIEW})
    for account, csm in (("acme", "sam@csm.example"), ("initech", "kim@csm.example")):
        assert retain("play", "review", "--account", account, "--as", csm).code == 0
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    clock = Clock(at=utcnow())
    app = create_app(make_engine(url), Settings(database_url=url), links=LINKS, now=clock.now, rate_clock=clock.tick)
    return retain, Client(app), url


def token_of(csm: str, days: int = 0) -> str:
    link = approvals_link(LINKS, csm, utcnow() - timedelta(days=days))
    assert link.startswith("https://retain.acme.test/approvals?t=")
    return parse_qs(urlsplit(link).query)["t"][0]


def test_a_csm_approves_and_rejects_from_the_page(world: tuple[Retain, Client, str], tmp_path: Path) -> None:
    retain, client, url = world
    t = token_of("sam@csm.example")
    page = client.get("/approvals", params={"t": t})
    assert page.status_code == 200
    assert "Drafts waiting for your approval" in page.text and "Your renewal, Acme" in page.text
    assert "Initech" not in page.text  # kim's draft is kim's
    assert "&lt;strong&gt;renewal&lt;/strong&gt;" in page.text  # the rendered email, in a sandboxed frame
    key = json.loads(retain("approvals", "list", "--as", "sam@csm.example", "--format", "json").out)["drafts"][0]["key"]

    done = client.post("/approvals/approve", params={"t": t}, data={"key": key})
    assert done.status_code == 200 and "Approved: it goes out with the next outbox run" in done.text
    again = client.post("/approvals/approve", params={"t": t}, data={"key": key})
    assert f"{key} was approved by sam@csm.example" in again.text
    outbox = FileChannel("email", tmp_path / "sent")
    engine = make_engine(url)
    assert deliver(engine, {"email": outbox}, as_of=utcnow())["delivered"] == 1
    assert deliver(engine, {"email": outbox}, as_of=utcnow()).get("delivered", 0) == 0
    assert len(outbox.path.read_text().splitlines()) == 1

    kim = token_of("kim@csm.example")
    kim_key = json.loads(retain("approvals", "list", "--as", "kim@csm.example", "--format", "json").out)["drafts"][0][
        "key"
    ]
    stolen = client.post("/approvals/reject", params={"t": t}, data={"key": kim_key})
    assert f"only kim@csm.example may decide on {kim_key}" in stolen.text
    rejected = client.post("/approvals/reject", params={"t": kim}, data={"key": kim_key, "reason": "too early"})
    assert "Rejected: it will not be sent." in rejected.text and "Nothing waits for you." in rejected.text
    shown = json.loads(retain("approvals", "show", kim_key, "--format", "json").out)
    assert shown["status"] == "rejected"
    timeline = json.loads(retain("accounts", "show", "initech", "--format", "json").out)["timeline"]
    assert any(e["summary"].endswith("rejected by kim@csm.example: too early") for e in timeline)
    engine.dispose()


def test_a_forged_or_expired_link_changes_nothing(world: tuple[Retain, Client, str]) -> None:
    retain, client, _ = world
    key = json.loads(retain("approvals", "list", "--all", "--format", "json").out)["drafts"][0]["key"]
    forged = token_of("sam@csm.example")[:-3] + "abc"
    assert client.post("/approvals/approve", params={"t": forged}, data={"key": key}).status_code == 400
    expired = token_of("sam@csm.example", days=5)
    assert client.get("/approvals", params={"t": expired}).status_code == 410
    other_csm = token_of("sam@csm.example").replace("c2Ft", "a2lt", 1)  # the subject changed to kim, unsigned
    assert client.get("/approvals", params={"t": other_csm}).status_code == 400
    assert len(json.loads(retain("approvals", "list", "--all", "--format", "json").out)["drafts"]) == 2
