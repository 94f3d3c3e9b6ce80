"""``retain today`` through the CLI on data brought in by Retain's own commands (accounts,
contacts, tickets imports; health scored by ``retain health run``; a reply logged with ``retain
touches reply``): a CSM's due tasks, drafts waiting, accounts that turned red and replies, in 80
columns; and the daily digest posted once per day and CSM (a real SMTP server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli._world import CARE, Retain, make_retain
from tests.integrations.conftest import SmtpSink

ASK = """\
playbook: ask
name: Ask
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: hello
    kind: email
    subject: "How is it going, {{ account.name }}?"
    body: "Tell us."
  - id: offer
    kind: email
    subject: "An offer for {{ account.name }}"
    body: "Shall we?"
    approve: csm
  - id: pause
    kind: wait
    for: 30 days
"""

HEALTH = """\
description: support load only, for the test
measures:
  open_tickets:
    weight: 100
    points: [[0, 100], [2, 40], [5, 0]]
bands:
  green: 70
  yellow: 40
trend_window: 30 days
"""

TICKETS = """\
external_id,account_external_id,subject,status,priority,opened_at,closed_at,satisfaction
T-1,acme,Broken export,open,high,{at},,
T-2,acme,Slow reports,open,normal,{at},,
T-3,acme,SSO fails,open,high,{at},,
T-4,acme,Billing question,open,normal,{at},,
T-5,acme,Data missing,open,high,{at},,
"""


@pytest.fixture
def retain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, smtp: SmtpSink
) -> Retain:
    run = make_retain(tmp_path, capsys, monkeypatch, {"care": CARE, "ask": ASK}, width=80)
    (tmp_path / "playbooks" / "health.yaml").write_text(HEALTH, encoding="utf-8")
    return run


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


@pytest.mark.usefixtures("prefect_api")  # `retain health run` is a Prefect flow run: on the session's server
def test_a_csm_morning_in_one_screen_and_once_a_day_by_email(retain: Retain, smtp: SmtpSink, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    # health: green yesterday, red today (five open tickets came in)
    assert retain("health", "run", "--as-of", iso(now - timedelta(days=2))).code == 0
    (tmp_path / "tickets.csv").write_text(TICKETS.format(at=iso(now - timedelta(hours=5))), encoding="utf-8")
    assert retain("tickets", "import", tmp_path / "tickets.csv").code == 0
    assert retain("health", "run", "--as-of", iso(now - timedelta(hours=1))).code == 0
    # a task due in 2 days (care), a draft waiting (ask), a reply to ask's first email
    assert retain("play", "care", "--account", "acme", "--as", "sam@csm.example").code == 0
    assert retain("play", "ask", "--account", "acme", "--as", "sam@csm.example").code == 0
    assert retain("touches", "reply", "--account", "acme", "--playbook", "ask", "--as", "sam@csm.example").code == 0

    later = iso(now + timedelta(days=2, hours=1))  # the care task is late by then
    data = json.loads(
        retain("today", "--as", "sam@csm.example", "--format", "json", "--since", "3 days", "--as-of", later).out
    )
    assert [(t["account"], t["title"], t["overdue"]) for t in data["tasks"]] == [("acme", "Call Acme", True)]
    assert [(d["account"], d["subject"]) for d in data["drafts"]] == [("acme", "An offer for Acme")]
    assert [(r["account"], r["was"]) for r in data["red"]] == [("acme", "green")]
    assert [(r["account"], r["subject"]) for r in data["replies"]] == [("acme", "How is it going, Acme?")]

    screen = retain("today", "--as", "sam@csm.example", "--since", "3 days", "--as-of", later).out
    for expected in ("Tasks due today or late (1)", "Call Acme", "Waiting for your approval (1)", "An offer for Acme",
                     "Turned red (1)", "Acme: health 0, was green", "Replies (1)", "How is it going, Acme?"):  # fmt: skip
        assert expected in screen, screen
    assert max(len(line) for line in screen.splitlines()) <= 80, screen
    kim = retain("today", "--as", "kim@csm.example", "--as-of", later).out
    assert "Tasks due today or late (0)" in kim and "Turned red (0)" in kim

    # the daily digest: once per day and CSM, however often it runs
    for _ in range(2):
        run = retain("today", "--post", "email", "--every-csm", "--since", "3 days", "--as-of", later)
        assert run.code == 0, run
    day = later[:10]
    digests = [m for m in smtp.messages if m.message["Subject"].startswith("Today for ")]
    assert sorted(m.rcpt_tos[0] for m in digests) == ["kim@csm.example", "sam@csm.example"]
    sam = next(m for m in digests if m.rcpt_tos == ["sam@csm.example"])
    assert sam.message["Subject"].startswith("Today for sam@csm.example")
    text = sam.message.get_body(("plain",)).get_content()
    assert "Call Acme" in text
    assert "review them: http://localhost:8000/approvals?t=" in text  # the CSM's approvals page
    assert f"daily digest today:{day}:sam@csm.example:email:sam@csm.example: already posted" in run.err
    refused = retain("today", "--every-csm")
    assert refused.code == 2


def test_the_digest_day_is_the_csms_own_by_hand_as_on_schedule(
    retain: Retain, smtp: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In New York, 09:00 and 22:00 on 1 March are one day, though 22:00 there is 2 March in UTC:
    a digest posted at both is posted once, under the day the scheduled digest names it by."""
    monkeypatch.setenv("RETAIN_DIGEST_TIMEZONE", "America/New_York")
    for moment in ("2027-03-01T14:00:00Z", "2027-03-02T03:00:00Z"):
        run = retain("today", "--as", "sam@csm.example", "--post", "email", "--as-of", moment)
        assert run.code == 0, run
    assert "daily digest today:2027-03-01:sam@csm.example:email:sam@csm.example: already posted" in run.err
    digests = [m for m in smtp.messages if m.message["Subject"].startswith("Today for ")]
    assert len(digests) == 1 and "Mon 01 Mar 2027" in digests[0].message["Subject"]
