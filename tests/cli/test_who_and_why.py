"""Who did what and why an account entered, through the CLI on imported data: a play records the
CSM (``--as``, ``RETAIN_CSM``, else the system user) and the audience clauses with their values;
a refused play names the failing clause; ``status`` and ``accounts show`` show the revision."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import pytest

from tests.cli._world import CARE, Retain, make_retain


@pytest.fixture
def retain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Retain:
    return make_retain(tmp_path, capsys, monkeypatch, {"care": CARE})


def enrolled_line(retain: Retain, account: str) -> dict:
    shown = json.loads(retain("accounts", "show", account, "--format", "json").out)
    (line,) = [e for e in shown["timeline"] if e["kind"] == "enrolled"]
    return line


def test_a_play_records_who_played_it_and_which_clauses_held(retain: Retain) -> None:
    run = retain("play", "care", "--account", "acme", "--as", "sam@csm.example")
    assert run.code == 0, run
    line = enrolled_line(retain, "acme")
    assert line["summary"] == (
        'enrolled in Care by sam@csm.example: account.status == "active" (account.status = "active"); '
        "account.arr >= 5000 (account.arr = 12000)"
    )
    assert line["detail"]["by"] == "sam@csm.example"
    assert line["detail"]["audience"] == [
        {"clause": 'account.status == "active"', "held": True, "values": {"account.status": "active"}},
        {"clause": "account.arr >= 5000", "held": True, "values": {"account.arr": 12000}},
    ]


def test_the_csm_comes_from_retain_csm_else_the_system_user(retain: Retain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_CSM", "kim@csm.example")
    assert retain("play", "care", "--account", "initech").code == 0
    assert enrolled_line(retain, "initech")["detail"]["by"] == "kim@csm.example"
    monkeypatch.delenv("RETAIN_CSM")
    assert retain("play", "care", "--account", "acme").code == 0
    assert enrolled_line(retain, "acme")["detail"]["by"] == getpass.getuser()


def test_a_refused_play_names_the_failing_clause_and_its_value(retain: Retain) -> None:
    run = retain("play", "care", "--account", "globex", "--as", "sam@csm.example")
    assert run.code == 1
    assert "Traceback" not in run.err
    message = " ".join(run.err.split())
    assert (
        "globex is not in the audience of care: account.arr >= 5000 (account.arr = 2400) is false; "
        "use --force to enroll it anyway"
    ) in message
    assert "account.status" not in message  # the clause that held is not blamed


def test_a_forced_play_says_which_clause_did_not_hold(retain: Retain) -> None:
    assert retain("play", "care", "--account", "globex", "--force", "--as", "sam@csm.example").code == 0
    line = enrolled_line(retain, "globex")
    assert line["summary"].startswith("enrolled in Care by sam@csm.example (forced: outside the audience): ")
    assert "account.arr >= 5000 (account.arr = 2400) [did not hold]" in line["summary"]
    assert [c["held"] for c in line["detail"]["audience"]] == [True, False]


def test_a_scheduled_enrollment_says_why_too(retain: Retain) -> None:
    assert retain("run", "care", "--no-prefect").code == 0
    assert enrolled_line(retain, "initech")["summary"] == (
        'enrolled in Care: account.status == "active" (account.status = "active"); '
        "account.arr >= 5000 (account.arr = 30000)"
    )


def test_status_and_accounts_show_the_revision_each_enrollment_runs(retain: Retain) -> None:
    assert retain("run", "care", "--no-prefect").code == 0
    shown = json.loads(retain("accounts", "show", "acme", "--format", "json").out)
    (enrollment,) = shown["active_enrollments"]
    revision = enrollment["revision"]
    assert len(revision) >= 8
    table = retain("accounts", "show", "acme").out
    assert "revision" in table and revision[:8] in table
    status = json.loads(retain("status", "--format", "json").out)
    assert status["playbooks"]["care"]["revisions"] == {revision: 2}
    text = retain("status").out
    assert "revision" in text and f"{revision[:8]} 2" in text
