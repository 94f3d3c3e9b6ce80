"""``retain approvals …`` through the CLI, on accounts and contacts brought in by ``retain accounts
import`` / ``contacts import``, with a real SMTP server (aiosmtpd on 127.0.0.1): a step with
``approve:`` drafts its email (the outbox does not send it); a CSM lists, shows, edits, approves or
rejects it; an approved draft is sent exactly once, approved twice or while the outbox runs in
parallel; at the deadline a draft is sent, skipped or escalated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli._world import Retain, make_retain
from tests.integrations.conftest import SmtpSink

REVIEW = """\
playbook: review
name: Review
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: note
    kind: email
    subject: "Your renewal, {{ account.name }}"
    body: "Hello {{ contact.name }}, shall we talk about the renewal?"
    approve: csm
  - id: pause
    kind: wait
    for: 30 days
"""

DEADLINES = """\
playbook: deadlines
name: Deadlines
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: goes
    kind: email
    subject: "Sent at the deadline"
    body: "Hello"
    approve: {{by: csm, deadline: 2 days, at_deadline: send}}
  - id: skipped
    kind: email
    subject: "Skipped at the deadline"
    body: "Hello"
    approve: {{by: {boss}, deadline: 2 days}}
  - id: escalated
    kind: email
    subject: "Escalated at the deadline"
    body: "Hello"
    approve: {{by: csm, deadline: 1 day, at_deadline: escalate}}
  - id: pause
    kind: wait
    for: 30 days
"""


BOOKS = {"review": REVIEW, "deadlines": DEADLINES.format(boss="boss@csm.example")}


@pytest.fixture
def retain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, smtp: SmtpSink
) -> Retain:
    return make_retain(tmp_path, capsys, monkeypatch, BOOKS)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or the session's PostgreSQL database emptied (the many-workers path)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'retain.db'}"
    return str(request.getfixturevalue("pg_clean").url.render_as_string(hide_password=False))


def drafts(retain: Retain, *args: str) -> list[dict]:
    run = retain("approvals", "list", "--format", "json", *args)
    assert run.code == 0, run
    return json.loads(run.out)["drafts"]


def later(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds")


def test_a_draft_waits_then_is_edited_and_approved_once(retain: Retain, smtp: SmtpSink) -> None:
    assert retain("play", "review", "--account", "acme", "--as", "sam@csm.example").code == 0
    assert retain("outbox", "deliver").code == 0
    assert smtp.messages == []  # a draft is never delivered by the outbox
    (draft,) = drafts(retain, "--as", "sam@csm.example")
    key = draft["key"]
    assert (draft["account"], draft["subject"], draft["approver"], draft["status"]) == (
        "acme", "Your renewal, Acme", "sam@csm.example", "draft",
    )  # fmt: skip
    assert drafts(retain, "--as", "kim@csm.example") == []
    assert "Your renewal, Acme" in retain("approvals", "list", "--as", "sam@csm.example").out

    shown = retain("approvals", "show", key)
    assert "Hello Ana, shall we talk about the renewal?" in shown.out and "sam@csm.example" in shown.out

    refused = retain("approvals", "approve", key, "--as", "kim@csm.example")
    assert refused.code == 1 and f"only sam@csm.example may decide on {key}" in refused.err
    text_file = Path(os.environ["RETAIN_OUTBOX_DIR"]).parent / "body.md"
    text_file.write_text("Hi Ana,\n\nCould we meet **on Tuesday** about the renewal?\n", encoding="utf-8")
    edited = retain(
        "approvals", "edit", key, "--subject", "Tuesday?", "--body-file", text_file, "--as", "sam@csm.example"
    )
    assert edited.code == 0 and "edited (the subject and the text)" in edited.out
    as_json = json.loads(retain("approvals", "show", key, "--format", "json").out)
    assert as_json["message"]["subject"] == "Tuesday?"
    assert "<strong>on Tuesday</strong>" in as_json["message"]["html"]
    assert as_json["first_draft"]["subject"] == "Your renewal, Acme"  # the first draft is kept

    first = retain("approvals", "approve", key, "--as", "sam@csm.example")
    assert first.code == 0 and "approved" in first.out and "delivered 1" in first.out
    second = retain("approvals", "approve", key, "--as", "sam@csm.example")
    assert second.code == 0 and "was approved by sam@csm.example" in second.out
    assert retain("outbox", "deliver").code == 0
    assert [m.message["Subject"] for m in smtp.messages] == ["Tuesday?"]
    assert "on Tuesday" in smtp.messages[0].message.get_body(("plain",)).get_content()
    timeline = json.loads(retain("accounts", "show", "acme", "--format", "json").out)["timeline"]
    kinds = {e["kind"]: e["summary"] for e in timeline}
    assert kinds["draft"].startswith("note: email to ana@acme.example drafted, waiting for approval by sam@csm.example")
    assert kinds["edited"] == (
        "note: draft to Ana <ana@acme.example> edited by sam@csm.example: the subject and the text "
        "('Your renewal, Acme' -> 'Tuesday?')"
    )
    assert kinds["approved"] == "note: email to Ana <ana@acme.example> approved by sam@csm.example"
    assert drafts(retain, "--all") == []


def test_a_rejected_draft_is_never_sent(retain: Retain, smtp: SmtpSink) -> None:
    assert retain("play", "review", "--account", "initech", "--as", "kim@csm.example").code == 0
    (draft,) = drafts(retain, "--as", "kim@csm.example")
    run = retain("approvals", "reject", draft["key"], "--reason", "wrong tone", "--as", "kim@csm.example")
    assert run.code == 0 and "will not be sent" in run.out
    again = retain("approvals", "approve", draft["key"], "--as", "kim@csm.example")
    assert again.code == 1 and "was rejected by kim@csm.example" in again.err
    assert retain("outbox", "deliver").code == 0
    assert smtp.messages == []
    missing = retain("approvals", "show", "nope")
    assert missing.code == 1 and "no draft with key 'nope'" in missing.err


def test_approved_while_the_outbox_runs_in_parallel_it_is_sent_once(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    smtp: SmtpSink,
    tmp_path: Path,
    database_url: str,
) -> None:
    retain = make_retain(tmp_path, capsys, monkeypatch, BOOKS, url=database_url)
    assert retain("play", "review", "--account", "acme", "--as", "sam@csm.example").code == 0
    (draft,) = drafts(retain, "--as", "sam@csm.example")
    url = database_url
    base = [sys.executable, "-c", "import sys; from cli import main; sys.exit(main(sys.argv[1:]))"]
    base += ["--database-url", url, "--playbooks-dir", str(tmp_path / "playbooks")]
    env = {**os.environ, "RETAIN_CSM": "sam@csm.example"}
    root = Path(__file__).resolve().parents[2]
    commands = [
        [*base, "approvals", "approve", draft["key"]],
        [*base, "approvals", "approve", draft["key"]],
        [*base, "outbox", "deliver"],
        [*base, "outbox", "deliver"],
    ]
    procs = [
        subprocess.Popen(c, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    assert [code for code, _, _ in results] == [0, 0, 0, 0], results
    assert sum("approved: the outbox sends it" in out for _, out, _ in results) == 1
    assert len(smtp.messages) == 1
    assert smtp.messages[0].message["Subject"] == "Your renewal, Acme"


def test_at_the_deadline_a_draft_is_sent_skipped_or_escalated(retain: Retain, smtp: SmtpSink) -> None:
    assert retain("play", "deadlines", "--account", "acme", "--as", "sam@csm.example").code == 0
    assert {d["step_id"]: d["approver"] for d in drafts(retain, "--all", "--account", "acme")} == {
        "goes": "sam@csm.example", "skipped": "boss@csm.example", "escalated": "sam@csm.example",
    }  # fmt: skip
    assert retain("run", "deadlines", "--no-prefect", "--as-of", later(1.5)).code == 0
    # a day and a half: only the escalation's deadline passed; it keeps waiting, the CSM has a task
    assert sorted(d["step_id"] for d in drafts(retain, "--all", "--account", "acme")) == [
        "escalated",
        "goes",
        "skipped",
    ]
    (task,) = json.loads(
        retain("tasks", "list", "--format", "json", "--account", "acme", "--as", "sam@csm.example").out
    )["tasks"]
    assert task["priority"] == "high" and task["title"].startswith("Approve or reject the email to Ana")
    assert retain("run", "deadlines", "--no-prefect", "--as-of", later(3)).code == 0
    assert [d["step_id"] for d in drafts(retain, "--all", "--account", "acme")] == [
        "escalated"
    ]  # escalated once, still waiting
    assert len(json.loads(retain("tasks", "list", "--format", "json", "--all", "--account", "acme").out)["tasks"]) == 1
    assert retain("outbox", "deliver", "--as-of", later(3)).code == 0
    # initech entered at the first tick: its deadline has not come yet
    assert [m.message["Subject"] for m in smtp.messages] == ["Sent at the deadline"]
    timeline = json.loads(retain("accounts", "show", "acme", "--format", "json").out)["timeline"]
    deadline = sorted(e["summary"].split(" UTC: ")[1] for e in timeline if e["kind"] == "deadline")
    assert deadline == ["escalated to sam@csm.example", "sent as drafted", "skipped (not sent)"]
