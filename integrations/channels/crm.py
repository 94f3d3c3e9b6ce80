"""CRM tasks through a HubSpot-shaped REST API (v3 objects): find the account's company by a
property holding its external id, then create a task associated with it.

The touch key is sent as ``Idempotency-Key``, but HubSpot ignores it: this channel does not dedupe
by key: a task create whose answer is lost (a read timeout, a connection dropped after the request
left) raises :class:`models.MaybeDeliveredError`, and the outbox marks the touch ``unknown`` as it
does a send interrupted by a crash; it is never retried.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from integrations.channels._http import ChannelClient, log_transport_error, may_have_arrived, raise_for_answer
from integrations.channels.base import Delivery, Receipt
from models import ConfigError, IntegrationError, MaybeDeliveredError, RetryableError

if TYPE_CHECKING:
    import httpx

__all__ = ["DEFAULT_COMPANY_ID_PROPERTY", "DEFAULT_CRM_URL", "TASK_TO_COMPANY", "CrmTaskChannel"]

DEFAULT_CRM_URL = "https://api.hubapi.com"
DEFAULT_COMPANY_ID_PROPERTY = "retain_external_id"
#: HubSpot's association type "task to company"
TASK_TO_COMPANY = 192

_TASK_STATES = ("NOT_STARTED", "IN_PROGRESS", "WAITING", "DEFERRED", "COMPLETED")
_PRIORITIES = {"low": "LOW", "normal": "MEDIUM", "medium": "MEDIUM", "high": "HIGH"}


def _hubspot_time(value: Any) -> str:
    """An ISO 8601 instant as HubSpot writes them: UTC, milliseconds, ``Z``."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise IntegrationError(f"crm: due_at is not an ISO 8601 time: {value!r}") from None
    else:
        raise IntegrationError(f"crm: due_at is not a time: {value!r}")
    if when.tzinfo is None:
        raise IntegrationError(f"crm: due_at has no time zone: {value!r}")
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CrmTaskChannel:
    """Sends ``{"kind": "crm_task", "company", "title", "body", "priority", "due_at", "assignee"}``.

    ``company`` is the account's external id, looked up in the company property
    ``company_id_property``. ``assignee`` (an email) becomes the task's owner when the CRM has an owner
    with that email; otherwise the task is created unassigned and the receipt says so.
    """

    name = "crm"
    dedupes_by_key = False  # the CRM creates a second task for a repeat
    max_per_second = 5.0  # HubSpot private apps: well under the 10-per-second burst limit

    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_CRM_URL,
        company_id_property: str = DEFAULT_COMPANY_ID_PROPERTY,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not token:
            raise ConfigError("the CRM channel needs RETAIN_CRM_TOKEN")
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._property = company_id_property
        self._client = ChannelClient(client)
        # lookups remembered for this channel's life (one delivery run): the search API is rate limited
        self._companies: dict[str, str] = {}
        self._owners: dict[str, str | None] = {}

    def _http(self) -> httpx.AsyncClient:
        return self._client.get()

    async def send(self, delivery: Delivery) -> Receipt:
        payload = delivery.payload
        if payload.get("kind") == "crm_task_update":
            return await self._update_task(payload)
        if payload.get("kind", "crm_task") != "crm_task":
            raise IntegrationError(f"crm: cannot send a {payload.get('kind')!r} payload")
        external_id = payload.get("company")
        if not isinstance(external_id, str) or not external_id:
            raise IntegrationError("crm: the payload names no company (the account's external id)")
        title = str(payload.get("title") or "").strip()
        if not title:
            raise IntegrationError("crm: the task has no title")
        priority = payload.get("priority") or "normal"
        if str(priority).lower() not in _PRIORITIES:
            raise IntegrationError(f"crm: unknown task priority {priority!r} (low, normal, high)")
        due = payload.get("due_at") or datetime.now(UTC)

        properties: dict[str, str] = {
            "hs_task_subject": title,
            "hs_timestamp": _hubspot_time(due),
            "hs_task_priority": _PRIORITIES[str(priority).lower()],
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO",
        }
        if payload.get("body"):
            properties["hs_task_body"] = str(payload["body"])
        company_id = await self._company_id(external_id)  # only once the payload is known to be good
        assignee = payload.get("assignee")
        owner_id = await self._owner_id(assignee) if isinstance(assignee, str) and assignee else None
        if owner_id:
            properties["hubspot_owner_id"] = owner_id
        body = {
            "properties": properties,
            "associations": [
                {
                    "to": {"id": company_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}],
                }
            ],
        }
        answer = await self._call(
            "POST", "/crm/v3/objects/tasks", f"task for {external_id}", body, idempotency_key=delivery.key
        )
        detail = f"task for company {company_id}"
        if assignee and not owner_id:
            detail += f"; unassigned: no CRM owner has the email {assignee}"
        return Receipt(provider_id=str(answer.get("id")) if answer.get("id") else None, detail=detail)

    async def _update_task(self, payload: dict[str, Any]) -> Receipt:
        """``{"kind": "crm_task_update", "task": <CRM id>, "status": "COMPLETED"}``: a task closed in
        Retain is closed in the CRM. Setting a status is idempotent, so a repeat does no harm."""
        task_id = payload.get("task")
        status = str(payload.get("status") or "COMPLETED")
        if not isinstance(task_id, str) or not task_id:
            raise IntegrationError("crm: the task update names no CRM task id")
        if status not in _TASK_STATES:
            raise IntegrationError(f"crm: unknown task status {status!r} ({', '.join(_TASK_STATES)})")
        body = {"properties": {"hs_task_status": status}}
        await self._call("PATCH", f"/crm/v3/objects/tasks/{task_id}", f"task {task_id}", body)
        return Receipt(provider_id=task_id, detail=f"task {task_id} set to {status}")

    async def task_states(self, ids: Sequence[str]) -> dict[str, str]:
        """The status of each CRM task (``NOT_STARTED``, ``IN_PROGRESS``, ``WAITING``, ``DEFERRED``,
        ``COMPLETED``) by id, read 100 at a time; a task the CRM no longer has is left out."""
        states: dict[str, str] = {}
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            body = {"properties": ["hs_task_status"], "inputs": [{"id": i} for i in chunk]}
            answer = await self._call("POST", "/crm/v3/objects/tasks/batch/read", f"{len(chunk)} tasks", body)
            for result in answer.get("results") or []:
                if isinstance(result, dict) and result.get("id"):
                    status = (result.get("properties") or {}).get("hs_task_status")
                    if isinstance(status, str):
                        states[str(result["id"])] = status
        return states

    async def _company_id(self, external_id: str) -> str:
        if external_id not in self._companies:
            search = {
                "filterGroups": [
                    {"filters": [{"propertyName": self._property, "operator": "EQ", "value": external_id}]}
                ],
                "properties": [self._property, "name"],
                "limit": 2,
            }
            answer = await self._call(
                "POST", "/crm/v3/objects/companies/search", f"company {self._property}={external_id}", search
            )
            found = [r for r in answer.get("results") or [] if isinstance(r, dict) and r.get("id")]
            if not found:
                raise IntegrationError(
                    f"crm: no company has {self._property} = {external_id!r}: set that property on the "
                    "account's company in the CRM"
                )
            if len(found) > 1:
                ids = ", ".join(str(r["id"]) for r in found)
                raise IntegrationError(f"crm: several companies have {self._property} = {external_id!r} ({ids})")
            self._companies[external_id] = str(found[0]["id"])
        return self._companies[external_id]

    async def _owner_id(self, email: str) -> str | None:
        """The CRM owner with this email, or ``None`` (also when the token may not read owners)."""
        key = email.lower()
        if key not in self._owners:
            what = f"crm owner {email}"
            response = await self._request("GET", "/crm/v3/owners/", what, params={"email": email, "limit": "1"})
            if response.status_code in (400, 403, 404):  # a missing scope must not stop the task
                self._owners[key] = None
            else:
                answer = self._json(response, what)
                results = answer.get("results") or []
                self._owners[key] = str(results[0]["id"]) if results and results[0].get("id") else None
        return self._owners[key]

    async def _call(
        self, method: str, path: str, about: str, body: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        what = f"crm {method} {path} ({about})"
        # a request with the touch's key creates the task; searches and lookups are safe to repeat
        response = await self._request(
            method, path, what, body=body, idempotency_key=idempotency_key, creates=idempotency_key is not None
        )
        return self._json(response, what)

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        raise_for_answer(response, what)
        try:
            answer = response.json()
        except ValueError:
            raise IntegrationError(f"{what}: the answer is not JSON: {response.text[:200]}") from None
        if not isinstance(answer, dict):
            raise IntegrationError(f"{what}: the answer is not a JSON object: {response.text[:200]}")
        return answer

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
        creates: bool = False,
    ) -> httpx.Response:
        """``creates``: the request creates the task, so losing its answer means it may exist."""
        import httpx  # on the first request (see integrations.channels._http)

        # the token goes in this header only, never in a URL or an error
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            return await self._http().request(
                method, self._base_url + path, content=content, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            message = f"{what}: {type(exc).__name__}: {str(exc).replace(self._token, '***')}"
            # the CRM makes a second task for a repeat: the outbox marks a maybe-delivered one unknown
            error = MaybeDeliveredError(message) if creates and may_have_arrived(exc) else RetryableError(message)
            log_transport_error(error)
            raise error from exc

    async def aclose(self) -> None:
        await self._client.aclose()
