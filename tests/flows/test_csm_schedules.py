"""The scheduled flows of the CSM's side, run against the session's real Prefect server
(``prefect_api``) on data brought in by Retain's own commands: every CSM's daily digest, posted
once per day and CSM however often the flow runs (a real SMTP server, and the file target); CRM
task states pulled (a HubSpot-shaped vendor API, the test's ``FakeCrm`` behind a real local HTTP
server); and the outbox's regular run honouring approval deadlines without a playbook tick."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from flows.orchestration.crm_tasks import sync_crm_tasks
from flows.orchestration.digest import daily_digest
from flows.orchestration.playbook import deliver_outbox
from flows.orchestration.runtime import prefect_environment
from models import Settings
from tests.cli._world import CARE, Retain, make_retain
from tests.integrations.conftest import SmtpSink

from .test_tasks_crm import CRM_CARE, TOKEN, FakeCrm, tasks_of

DEADLINE = """\
playbook: deadline
name: Deadline
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: goes
    kind: email
    subject: "Sent at the deadline"
    body: "Hello"
    approve: {by: csm, deadline: 1 day, at_deadline: send}
  - id: pause
    kind: wait
    for: 30 days
"""


def _world(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, books: dict[str, str]
) -> tuple[Retain, Settings]:
    retain = make_retain(tmp_path, capsys, monkeypatch, books)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'retain.db'}", playbooks_dir=tmp_path / "playbooks")
    return retain, settings


def later(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(timespec="seconds")


def test_the_digest_flow_posts_each_csms_day_once(
    prefect_api: None,
    smtp: SmtpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retain, settings = _world(tmp_path, capsys, monkeypatch, {"care": CARE})
    assert retain("play", "care", "--account", "acme", "--as", "sam@csm.example").code == 0
    monkeypatch.setenv("RETAIN_DIGEST_POST", "email")
    morning = later(2.05)  # the care task (due in 2 days) is late by then
    with prefect_environment(settings):
        first = daily_digest(as_of=morning, return_state=True)
        second = daily_digest(as_of=morning, return_state=True)
    assert first.is_completed(), first
    assert first.result() == {"posted": 2, "already posted": 0, "failed": 0}
    assert second.result() == {"posted": 0, "already posted": 2, "failed": 0}
    digests = [m for m in smtp.messages if m.message["Subject"].startswith("Today for ")]
    assert sorted(m.rcpt_tos[0] for m in digests) == ["kim@csm.example", "sam@csm.example"]
    sam = next(m for m in digests if m.rcpt_tos == ["sam@csm.example"])
    assert "Call Acme" in sam.message.get_body(("plain",)).get_content()

    # the file target: once per day and CSM too, beside the email ones
    with prefect_environment(settings):
        assert daily_digest(post="file", as_of=morning, return_state=True).result()["posted"] == 2
        assert daily_digest(post="file", as_of=morning, return_state=True).result()["posted"] == 0
    lines = (tmp_path / "outbox" / "file.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["payload"]["title"].split(",")[0] for line in lines) == [
        "Today for kim@csm.example",
        "Today for sam@csm.example",
    ]

    # a channel that is not one is the run's plain failure, not a traceback
    with prefect_environment(settings):
        bad = daily_digest(post="fax", return_state=True)
    assert bad.is_failed() and "not 'fax'" in str(bad.message) and "Traceback" not in str(bad.message)


class _Bridge(http.server.BaseHTTPRequestHandler):
    """A real HTTP server in front of the test's vendor fake: the channel speaks HTTP to it."""

    fake: FakeCrm

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = httpx.Request(self.command, f"http://crm.test{self.path}", headers=dict(self.headers), content=body)
        response = self.fake(request)
        self.send_response(response.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCrm]:
    fake = FakeCrm()
    handler = type("Bridge", (_Bridge,), {"fake": fake})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("RETAIN_CRM_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield fake
    server.shutdown()
    server.server_close()


def test_the_tasks_sync_flow_completes_what_the_crm_completed(
    prefect_api: None, crm: FakeCrm, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    retain, settings = _world(tmp_path, capsys, monkeypatch, {"crmcare": CRM_CARE})
    monkeypatch.delenv("RETAIN_CRM_TOKEN", raising=False)
    with prefect_environment(settings):  # no CRM configured: nothing to do, and it says so
        idle = sync_crm_tasks(return_state=True)
    assert idle.is_completed() and idle.result() == {"crm": None}

    monkeypatch.setenv("RETAIN_CRM_TOKEN", TOKEN)
    assert retain("run", "crmcare", "--no-prefect").code == 0
    assert retain("outbox", "deliver").code == 0
    assert sorted(crm.tasks) == ["t1", "t2"]
    crm.tasks["t1"]["hs_task_status"] = "COMPLETED"  # the CSM closed it in the CRM
    with prefect_environment(settings):
        state = sync_crm_tasks(return_state=True)
        again = sync_crm_tasks(return_state=True)
    assert state.is_completed(), state
    assert {k: v for k, v in state.result().items() if k != "crm"} == {"linked": 2, "checked": 2, "completed": 1}
    assert again.result()["completed"] == 0
    by_crm = {t.external_id: t for t in tasks_of(settings.database_url)}
    assert (by_crm["t1"].status, by_crm["t1"].closed_by) == ("done", "crm")
    assert by_crm["t2"].status == "open"
    assert crm.calls.count("POST /crm/v3/objects/tasks/batch/read") == 2


def test_the_outbox_run_honours_approval_deadlines(
    prefect_api: None,
    smtp: SmtpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retain, settings = _world(tmp_path, capsys, monkeypatch, {"deadline": DEADLINE})
    assert retain("play", "deadline", "--account", "acme", "--as", "sam@csm.example").code == 0
    with prefect_environment(settings):
        early = deliver_outbox(as_of=later(0.5), return_state=True)
    assert early.is_completed() and "deadline send" not in early.result()
    assert smtp.messages == []
    # past the deadline, with no tick of the playbook: the outbox's own run sends it as drafted
    with prefect_environment(settings):
        due = deliver_outbox(as_of=later(1.5), return_state=True)
    assert due.is_completed(), due
    assert due.result()["deadline send"] == 1 and due.result()["delivered"] == 1
    assert [m.message["Subject"] for m in smtp.messages] == ["Sent at the deadline"]
    timeline = json.loads(retain("accounts", "show", "acme", "--format", "json").out)["timeline"]
    assert [e["summary"].split(" UTC: ")[1] for e in timeline if e["kind"] == "deadline"] == ["sent as drafted"]


def test_a_digest_that_could_not_go_fails_the_run_and_goes_next_time(
    prefect_api: None,
    smtp: SmtpSink,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One CSM's mail server refusing does not hold up the others; the run fails with the reason,
    and the next run the same day posts only the one that did not go."""
    _, settings = _world(tmp_path, capsys, monkeypatch, {"care": CARE})
    smtp.rcpt_replies["kim@csm.example"] = "450 4.2.1 Mailbox busy, try again later"
    with prefect_environment(settings):
        first = daily_digest(post="email", return_state=True)
    assert first.is_failed() and "kim@csm.example" in str(first.message) and "Traceback" not in str(first.message)
    assert [m.rcpt_tos for m in smtp.messages] == [["sam@csm.example"]]
    smtp.rcpt_replies.clear()
    with prefect_environment(settings):
        second = daily_digest(post="email", return_state=True)
    assert second.result() == {"posted": 1, "already posted": 1, "failed": 0}
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == ["kim@csm.example", "sam@csm.example"]


def test_retain_outbox_deliver_honours_approval_deadlines_too(
    smtp: SmtpSink, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    retain, _ = _world(tmp_path, capsys, monkeypatch, {"deadline": DEADLINE})
    assert retain("play", "deadline", "--account", "acme", "--as", "sam@csm.example").code == 0
    early = retain("outbox", "deliver", "--as-of", later(0.5))
    assert early.code == 0 and "deadline" not in early.out and smtp.messages == []
    due = retain("outbox", "deliver", "--as-of", later(1.5))
    assert due.code == 0 and "deadline send 1" in due.out and "delivered 1" in due.out, due
    assert [m.message["Subject"] for m in smtp.messages] == ["Sent at the deadline"]


def test_the_digest_day_is_the_digest_time_zones_day(
    prefect_api: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 08:00 in Kiritimati (UTC+14) it is still yesterday in UTC: the digest is that CSM day's."""
    _, settings = _world(tmp_path, capsys, monkeypatch, {"care": CARE})
    monkeypatch.setenv("RETAIN_DIGEST_TIMEZONE", "Pacific/Kiritimati")
    with prefect_environment(settings):
        state = daily_digest(post="file", as_of="2026-03-09T18:00:00+00:00", return_state=True)
    assert state.result()["posted"] == 2
    lines = (tmp_path / "outbox" / "file.jsonl").read_text(encoding="utf-8").splitlines()
    keys = sorted(json.loads(line)["key"] for line in lines)
    assert keys == ["today:2026-03-10:kim@csm.example:file", "today:2026-03-10:sam@csm.example:file"]
    assert json.loads(lines[0])["payload"]["title"].endswith("Tue 10 Mar 2026")
