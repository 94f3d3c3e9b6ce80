"""CRM tasks against a HubSpot-shaped API played by ``httpx.MockTransport`` (a vendor API we cannot
run): the company search, the task with its association, owners, and the error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from integrations.channels.base import Delivery, Receipt
from integrations.channels.crm import CrmTaskChannel
from models import IntegrationError, RetryableError

TOKEN = "pat-na1-S3CRET-0000"
BASE = "https://crm.test"


def task_delivery(key: str = "renewal:7:task:0:r1", **payload: Any) -> Delivery:
    body = {
        "kind": "crm_task",
        "company": "acme",
        "title": "Call Acme about the renewal",
        "body": "ARR 120k; renewal on 2027-02-01",
        "priority": "high",
        "due_at": "2027-01-11T10:00:00+01:00",
        "assignee": "csm@acme.com",
    }
    body.update(payload)
    return Delivery(key, "crm", body)


class FakeHubSpot:
    """Records requests; answers like HubSpot's v3 objects API."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.companies = {"acme": ["512"], "twins": ["1", "2"]}
        self.owners = {"csm@acme.com": "77"}
        self.override: Callable[[httpx.Request], httpx.Response | None] = lambda request: None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if (answer := self.override(request)) is not None:
            return answer
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"status": "error", "message": "Authentication credentials not found."})
        path = request.url.path
        if path == "/crm/v3/objects/companies/search":
            [value] = [f["value"] for f in json.loads(request.content)["filterGroups"][0]["filters"]]
            ids = self.companies.get(value, [])
            return httpx.Response(200, json={"total": len(ids), "results": [{"id": i, "properties": {}} for i in ids]})
        if path == "/crm/v3/owners/":
            owner = self.owners.get(request.url.params["email"])
            return httpx.Response(200, json={"results": [{"id": owner}] if owner else []})
        if path == "/crm/v3/objects/tasks":
            return httpx.Response(201, json={"id": "9001", "properties": json.loads(request.content)["properties"]})
        return httpx.Response(404, json={"status": "error", "message": "no such route"})

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


@pytest.fixture
def hubspot() -> FakeHubSpot:
    return FakeHubSpot()


def channel(hubspot: FakeHubSpot, **options: Any) -> CrmTaskChannel:
    return CrmTaskChannel(
        token=TOKEN, base_url=BASE, client=httpx.AsyncClient(transport=httpx.MockTransport(hubspot)), **options
    )


def send(crm: CrmTaskChannel, *deliveries: Delivery) -> list[Receipt]:
    async def main() -> list[Receipt]:
        try:
            return [await crm.send(d) for d in deliveries]
        finally:
            await crm.aclose()

    return asyncio.run(main())


def send_error(crm: CrmTaskChannel, delivery: Delivery) -> IntegrationError:
    with pytest.raises(IntegrationError) as info:
        send(crm, delivery)
    assert TOKEN not in str(info.value) and "S3CRET" not in str(info.value.response)
    return info.value


def test_finds_the_company_then_creates_an_associated_task(hubspot: FakeHubSpot) -> None:
    delivery = task_delivery()
    [receipt] = send(channel(hubspot), delivery)
    assert hubspot.paths() == [
        "POST /crm/v3/objects/companies/search",
        "GET /crm/v3/owners/",
        "POST /crm/v3/objects/tasks",
    ]
    search, owner, task = hubspot.requests
    assert json.loads(search.content) == {
        "filterGroups": [{"filters": [{"propertyName": "retain_external_id", "operator": "EQ", "value": "acme"}]}],
        "properties": ["retain_external_id", "name"],
        "limit": 2,
    }
    assert dict(owner.url.params) == {"email": "csm@acme.com", "limit": "1"}
    assert json.loads(task.content) == {
        "properties": {
            "hs_task_subject": "Call Acme about the renewal",
            "hs_task_body": "ARR 120k; renewal on 2027-02-01",
            "hs_timestamp": "2027-01-11T09:00:00.000Z",
            "hs_task_priority": "HIGH",
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO",
            "hubspot_owner_id": "77",
        },
        "associations": [
            {"to": {"id": "512"}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}]}
        ],
    }
    for request in hubspot.requests:
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in str(request.url)
    assert task.headers["idempotency-key"] == delivery.key
    assert task.headers["content-type"] == "application/json"
    assert receipt == Receipt(provider_id="9001", detail="task for company 512")


def test_lookups_are_remembered_for_the_channels_life(hubspot: FakeHubSpot) -> None:
    send(channel(hubspot), task_delivery("k1"), task_delivery("k2", priority="low", body=None))
    assert hubspot.paths().count("POST /crm/v3/objects/companies/search") == 1
    assert hubspot.paths().count("GET /crm/v3/owners/") == 1
    second = json.loads(hubspot.requests[-1].content)["properties"]
    assert second["hs_task_priority"] == "LOW" and "hs_task_body" not in second


def test_a_custom_company_property(hubspot: FakeHubSpot) -> None:
    send(channel(hubspot, company_id_property="domain"), task_delivery())
    filters = json.loads(hubspot.requests[0].content)["filterGroups"][0]["filters"]
    assert filters == [{"propertyName": "domain", "operator": "EQ", "value": "acme"}]


def test_an_unknown_owner_leaves_the_task_unassigned(hubspot: FakeHubSpot) -> None:
    [receipt] = send(channel(hubspot), task_delivery(assignee="new@acme.com"))
    assert "hubspot_owner_id" not in json.loads(hubspot.requests[-1].content)["properties"]
    assert receipt.detail == "task for company 512; unassigned: no CRM owner has the email new@acme.com"


def test_a_token_that_may_not_read_owners_still_creates_the_task(hubspot: FakeHubSpot) -> None:
    hubspot.override = lambda r: (
        httpx.Response(403, json={"category": "MISSING_SCOPES"}) if "owners" in r.url.path else None
    )
    [receipt] = send(channel(hubspot), task_delivery())
    assert receipt.provider_id == "9001"
    assert "unassigned" in str(receipt.detail)


def test_no_company_with_that_external_id(hubspot: FakeHubSpot) -> None:
    error = send_error(channel(hubspot), task_delivery(company="globex"))
    assert not isinstance(error, RetryableError)
    assert str(error) == (
        "crm: no company has retain_external_id = 'globex': set that property on the account's company in the CRM"
    )
    assert hubspot.paths() == ["POST /crm/v3/objects/companies/search"]


def test_two_companies_with_that_external_id(hubspot: FakeHubSpot) -> None:
    error = send_error(channel(hubspot), task_delivery(company="twins"))
    assert str(error) == "crm: several companies have retain_external_id = 'twins' (1, 2)"


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [(429, {"Retry-After": "10"}, True, 10.0), (502, {}, True, None), (400, {}, False, None), (401, {}, False, None)],
)
def test_http_errors_on_the_task(
    hubspot: FakeHubSpot, status: int, headers: dict[str, str], retryable: bool, retry_after: float | None
) -> None:
    answer = {"status": "error", "message": "something", "correlationId": "c-1"}
    hubspot.override = lambda r: httpx.Response(status, headers=headers, json=answer) if "tasks" in r.url.path else None
    error = send_error(channel(hubspot), task_delivery())
    assert isinstance(error, RetryableError) is retryable
    assert error.status_code == status
    assert getattr(error, "retry_after", None) == retry_after
    assert str(error).startswith(f"crm POST /crm/v3/objects/tasks (task for acme): HTTP {status} ")
    assert '"correlationId":"c-1"' in str(error)  # the CRM's answer, for whoever reads the touch


def test_a_transport_failure_is_retryable(hubspot: FakeHubSpot) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url} with {request.headers['authorization']}")

    hubspot.override = refuse
    error = send_error(channel(hubspot), task_delivery())
    assert isinstance(error, RetryableError)
    assert str(error).startswith(
        "crm POST /crm/v3/objects/companies/search (company retain_external_id=acme): ConnectError"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"company": None}, "crm: the payload names no company (the account's external id)"),
        ({"title": " "}, "crm: the task has no title"),
        ({"priority": "urgent"}, "crm: unknown task priority 'urgent' (low, normal, high)"),
        ({"due_at": "next week"}, "crm: due_at is not an ISO 8601 time: 'next week'"),
        ({"due_at": "2027-01-11T10:00:00"}, "crm: due_at has no time zone: '2027-01-11T10:00:00'"),
        ({"kind": "email"}, "crm: cannot send a 'email' payload"),
    ],
)
def test_payloads_that_cannot_become_tasks(hubspot: FakeHubSpot, payload: dict[str, Any], message: str) -> None:
    error = send_error(channel(hubspot), task_delivery(**payload))
    assert not isinstance(error, RetryableError)
    assert str(error) == message
    assert not hubspot.requests
