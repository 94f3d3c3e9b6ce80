"""CRM task sync both ways, the CRM played by ``httpx.MockTransport`` (a HubSpot-shaped vendor API
we cannot run): a task step with ``crm: true`` creates the task there through the outbox (the tick writes it,
the outbox run here delivers it to the fake CRM); a task completed in the CRM is completed in Retain (``pull_crm_tasks``); a task done in Retain
(``retain tasks done``) is closed in the CRM through the outbox; a task closed before its create
left never reaches the CRM. The accounts come in through ``retain accounts import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from flows.engine.outbox import deliver
from flows.engine.tasks import pull_crm_tasks
from flows.engine.tick import tick
from integrations.channels.crm import CrmTaskChannel
from models import CsmTask, Touch, make_engine, session, utcnow
from playbooks import compile_file
from tests.cli._world import Retain, make_retain

TOKEN = "pat-test-0000"

CRM_CARE = """\
playbook: crmcare
name: CRM care
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
steps:
  - id: call
    kind: task
    title: "Call {{ account.name }}"
    due_in: 2 days
    crm: true
  - id: pause
    kind: wait
    for: 30 days
"""


class FakeCrm:
    """Companies by the external id property, tasks created, read in batches and patched."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.calls.append(f"{method} {path}")
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        body = json.loads(request.content) if request.content else {}
        if path == "/crm/v3/objects/companies/search":
            value = body["filterGroups"][0]["filters"][0]["value"]
            return httpx.Response(200, json={"results": [{"id": f"co-{value}", "properties": {}}]})
        if path == "/crm/v3/owners/":
            return httpx.Response(200, json={"results": []})
        if path == "/crm/v3/objects/tasks" and method == "POST":
            task_id = f"t{len(self.tasks) + 1}"
            self.tasks[task_id] = dict(body["properties"])
            return httpx.Response(201, json={"id": task_id, "properties": body["properties"]})
        if path == "/crm/v3/objects/tasks/batch/read":
            found = [
                {"id": i["id"], "properties": {"hs_task_status": self.tasks[i["id"]]["hs_task_status"]}}
                for i in body["inputs"]
                if i["id"] in self.tasks
            ]
            return httpx.Response(200, json={"status": "COMPLETE", "results": found})
        if path.startswith("/crm/v3/objects/tasks/") and method == "PATCH":
            task_id = path.rsplit("/", 1)[1]
            if task_id not in self.tasks:
                return httpx.Response(404, json={"message": "no such task"})
            self.tasks[task_id].update(body["properties"])
            return httpx.Response(200, json={"id": task_id, "properties": self.tasks[task_id]})
        return httpx.Response(404, json={"message": f"no route {method} {path}"})


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Retain, str]:
    return make_retain(tmp_path, capsys, monkeypatch, {"crmcare": CRM_CARE}), f"sqlite:///{tmp_path / 'retain.db'}"


def crm_channel(fake: FakeCrm) -> CrmTaskChannel:
    return CrmTaskChannel(
        token=TOKEN, base_url="https://crm.test", client=httpx.AsyncClient(transport=httpx.MockTransport(fake))
    )


def tasks_of(url: str) -> list[CsmTask]:
    engine = make_engine(url)
    with session(engine) as s:
        found = list(s.exec(select(CsmTask).order_by(CsmTask.id)).scalars())  # type: ignore[call-overload]
    engine.dispose()
    return found


def test_crm_tasks_sync_both_ways(world: tuple[Retain, str]) -> None:
    retain, url = world
    fake = FakeCrm()
    crm = crm_channel(fake)
    engine = make_engine(url)
    tick(engine, compile_file(Path(url.removeprefix("sqlite:///")).parent / "playbooks" / "crmcare.yaml"), utcnow())
    assert deliver(engine, {"crm": crm}, as_of=utcnow())["delivered"] == 2
    assert sorted(fake.tasks) == ["t1", "t2"] and all(t["hs_task_status"] == "NOT_STARTED" for t in fake.tasks.values())

    # the CRM completes one: Retain learns the ids from the receipts, then completes it here
    assert pull_crm_tasks(engine, crm, now=utcnow()) == {"linked": 2, "checked": 2, "completed": 0}
    by_crm = {t.external_id: t for t in tasks_of(url)}
    fake.tasks["t1"]["hs_task_status"] = "COMPLETED"
    assert pull_crm_tasks(engine, crm, now=utcnow()) == {"linked": 0, "checked": 2, "completed": 1}
    after = {t.external_id: t for t in tasks_of(url)}
    assert (after["t1"].status, after["t1"].closed_by) == ("done", "crm")
    assert after["t2"].status == "open"

    # the CSM completes the other in Retain: the outbox closes it in the CRM, once
    run = retain("tasks", "done", str(by_crm["t2"].id), "--as", "kim@csm.example")
    assert run.code == 0 and "closed in the CRM too" in run.out
    assert deliver(engine, {"crm": crm}, as_of=utcnow())["delivered"] == 1
    assert fake.tasks["t2"]["hs_task_status"] == "COMPLETED"
    assert deliver(engine, {"crm": crm}, as_of=utcnow()).get("delivered", 0) == 0
    assert fake.calls.count("PATCH /crm/v3/objects/tasks/t2") == 1
    assert pull_crm_tasks(engine, crm, now=utcnow()) == {"linked": 0, "checked": 0, "completed": 0}
    engine.dispose()


def test_a_task_done_before_its_create_left_never_reaches_the_crm(world: tuple[Retain, str]) -> None:
    retain, url = world
    fake = FakeCrm()
    engine = make_engine(url)
    tick(engine, compile_file(Path(url.removeprefix("sqlite:///")).parent / "playbooks" / "crmcare.yaml"), utcnow())
    task = tasks_of(url)[0]
    run = retain("tasks", "done", str(task.id), "--as", "sam@csm.example")
    assert run.code == 0 and "its CRM task will not be created" in run.out
    assert deliver(engine, {"crm": crm_channel(fake)}, as_of=utcnow())["delivered"] == 1  # initech's only
    assert [t["hs_task_subject"] for t in fake.tasks.values()] == ["Call Initech"]
    with session(engine) as s:
        touch = s.exec(select(Touch).where(Touch.id == task.touch_id)).scalars().one()  # type: ignore[call-overload]
        assert (touch.status, touch.reason) == ("dropped", "its task was closed in Retain before it reached the CRM")
    engine.dispose()


def test_sync_needs_the_crm_configured(world: tuple[Retain, str]) -> None:
    retain, _ = world
    run = retain("tasks", "sync")
    assert run.code == 1 and "the CRM is not configured: set RETAIN_CRM_TOKEN" in run.err
