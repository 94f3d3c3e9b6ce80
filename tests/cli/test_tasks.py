"""``retain tasks …`` through the CLI, on accounts and contacts brought in by ``retain accounts
import`` and ``retain contacts import``: a CSM's queue (mine by default), done, snooze, reassign,
note; tasks of ended enrollments closed with the reason unless the step keeps them;
``task("call").done`` read by a ``wait_for``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cli._world import CARE, Retain, make_retain

KEEP = """\
playbook: keep
name: Keep
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: followup
    kind: task
    title: "Follow up with {{ account.name }} after the season"
    due_in: 60 days
    priority: low
    keep_open: true
  - id: call
    kind: task
    title: "Quick call {{ account.name }}"
    due_in: 1 day
    keep_open: false
  - id: handoff
    kind: task
    title: "Take {{ account.name }} from here"
  - id: bye
    kind: exit
"""

WAITS = """\
playbook: waits
name: Waits for the call
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: call
    kind: task
    title: "Call {{ account.name }} before we write"
    due_in: 2 days
  - id: until_called
    kind: wait_for
    condition: task("call").done
    timeout: 10 days
    on_timeout: nudge
    check_every: 1 hour
  - id: thanks
    kind: outcome
    outcome: called
  - id: stop
    kind: exit
  - id: nudge
    kind: exit
    outcome: never_called
"""


@pytest.fixture
def retain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Retain:
    return make_retain(tmp_path, capsys, monkeypatch, {"care": CARE, "keep": KEEP, "waits": WAITS})


def tasks(retain: Retain, *args: str) -> list[dict]:
    run = retain("tasks", "list", "--format", "json", *args)
    assert run.code == 0, run
    return json.loads(run.out)["tasks"]


def soon(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds")


def test_list_is_mine_by_default_and_filters(retain: Retain, monkeypatch: pytest.MonkeyPatch) -> None:
    for account in ("acme", "initech"):
        assert retain("play", "care", "--account", account, "--as", "sam@csm.example").code == 0
    mine = tasks(retain, "--as", "sam@csm.example")
    assert [(t["account"], t["title"], t["priority"], t["playbook"], t["step_id"]) for t in mine] == [
        ("acme", "Call Acme", "high", "care", "call")
    ]
    monkeypatch.setenv("RETAIN_CSM", "kim@csm.example")
    assert [t["account"] for t in tasks(retain)] == ["initech"]
    assert [t["account"] for t in tasks(retain, "--csm", "sam@csm.example")] == ["acme"]
    assert sorted(t["account"] for t in tasks(retain, "--all")) == ["acme", "initech"]
    assert [t["account"] for t in tasks(retain, "--all", "--account", "initech")] == ["initech"]
    assert tasks(retain, "--all", "--playbook", "keep") == []
    assert tasks(retain, "--all", "--priority", "low") == []
    assert len(tasks(retain, "--all", "--due", "3 days")) == 2
    assert tasks(retain, "--all", "--due", "1 day") == []
    assert tasks(retain, "--all", "--overdue") == []
    late = tasks(retain, "--all", "--overdue", "--as-of", soon(3))
    assert len(late) == 2 and all(t["overdue"] for t in late)
    assert retain("tasks", "list", "--priority", "urgent").code == 2


def test_done_snooze_reassign_and_note_record_who(retain: Retain) -> None:
    assert retain("play", "care", "--account", "acme", "--as", "sam@csm.example").code == 0
    (task,) = tasks(retain, "--as", "sam@csm.example")
    tid = str(task["id"])

    run = retain("tasks", "note", tid, "Left a voicemail", "--as", "sam@csm.example")
    assert run.code == 0 and "note added" in run.out
    run = retain("tasks", "snooze", tid, "--until", "3 days", "--as", "sam@csm.example")
    assert run.code == 0 and "snoozed until" in run.out
    assert tasks(retain, "--as", "sam@csm.example") == []  # out of the list until then
    (snoozed,) = tasks(retain, "--as", "sam@csm.example", "--snoozed")
    assert snoozed["notes"][0]["text"] == "Left a voicemail" and snoozed["notes"][0]["by"] == "sam@csm.example"
    assert snoozed["due_at"] >= snooze_floor(2)

    assert retain("tasks", "reassign", tid, "--to", "kim@csm.example", "--as", "sam@csm.example").code == 0
    assert tasks(retain, "--as", "kim@csm.example", "--snoozed")[0]["id"] == task["id"]
    run = retain("tasks", "done", tid, "--note", "Renewal confirmed", "--as", "kim@csm.example")
    assert run.code == 0 and f"task {tid} done: Call Acme" in run.out
    (done,) = tasks(retain, "--all", "--status", "done")
    assert [n["text"] for n in done["notes"]] == ["Left a voicemail", "Renewal confirmed"]

    again = retain("tasks", "done", tid, "--as", "kim@csm.example")
    assert again.code == 1 and f"task {tid} is done already" in again.err
    missing = retain("tasks", "done", "999", "--as", "kim@csm.example")
    assert missing.code == 1 and "no task 999" in missing.err and "Traceback" not in missing.err
    timeline = json.loads(retain("accounts", "show", "acme", "--format", "json").out)["timeline"]
    said = [e["summary"] for e in timeline if e["kind"].startswith("task_")]
    assert said == [
        "note by sam@csm.example on task 'Call Acme': Left a voicemail",
        said[1],
        "task reassigned by sam@csm.example from sam@csm.example to kim@csm.example: Call Acme",
        "task done by kim@csm.example: Call Acme",
    ]
    assert said[1].startswith("task snoozed by sam@csm.example until ")


def snooze_floor(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def test_tasks_of_an_ended_enrollment_close_with_the_reason_unless_kept(retain: Retain) -> None:
    assert retain("play", "keep", "--account", "acme", "--as", "sam@csm.example").code == 0
    # keep ends at once (exit): its "call" task is closed with the reason; "followup" stays open, and
    # so does "handoff", followed only by the exit: the playbook's hand-off to the CSM
    kept = tasks(retain, "--all")
    assert sorted(t["step_id"] for t in kept) == ["followup", "handoff"]
    (closed,) = tasks(retain, "--all", "--status", "closed")
    assert closed["step_id"] == "call"
    assert closed["closed_reason"] == "its enrollment in keep ended: completed"
    timeline = json.loads(retain("accounts", "show", "acme", "--format", "json").out)["timeline"]
    assert any(
        e["summary"] == "task closed: Quick call Acme (its enrollment in keep ended: completed)" for e in timeline
    )

    assert retain("play", "care", "--account", "initech", "--as", "kim@csm.example").code == 0
    assert retain("run", "care", "--no-prefect", "--as-of", soon(31)).code == 0  # the wait ends, then exit
    assert [t["account"] for t in tasks(retain, "--all", "--status", "closed", "--playbook", "care")] == ["initech"]


def test_wait_for_reads_the_task_state(retain: Retain) -> None:
    assert retain("play", "waits", "--account", "acme", "--as", "sam@csm.example").code == 0
    assert retain("run", "waits", "--no-prefect", "--as-of", soon(1)).code == 0
    shown = json.loads(retain("accounts", "show", "acme", "--format", "json").out)
    (waiting,) = [e for e in shown["active_enrollments"] if e["playbook"] == "waits"]
    assert waiting["step_id"] == "until_called"
    (task,) = tasks(retain, "--as", "sam@csm.example", "--playbook", "waits")
    assert retain("tasks", "done", str(task["id"]), "--as", "sam@csm.example").code == 0
    assert retain("run", "waits", "--no-prefect", "--as-of", soon(2)).code == 0
    shown = json.loads(retain("accounts", "show", "acme", "--format", "json").out)
    assert not [e for e in shown["active_enrollments"] if e["playbook"] == "waits"]
    assert [o["kind"] for o in shown["recent_outcomes"]] == ["called"]


def test_the_list_fits_an_80_column_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    long = CARE.replace('title: "Call {{ account.name }}"', 'title: "' + "Call {{ account.name }} about " * 6 + 'it"')
    retain = make_retain(tmp_path, capsys, monkeypatch, {"care": long}, width=80)
    for account in ("acme", "initech"):
        assert retain("play", "care", "--account", account, "--as", "sam@csm.example").code == 0
    for args in (("--as", "sam@csm.example"), ("--all",)):
        out = retain("tasks", "list", *args).out
        assert "Call Acme about" in out
        assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "initech" in retain("tasks", "list", "--all").out
