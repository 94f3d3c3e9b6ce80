"""The Stripe connector against Stripe's documented API shapes (an ``httpx.MockTransport`` speaking
them: lists of ``{"object": "list", "data", "has_more"}`` newest first, ``starting_after``, errors as
``{"error": {...}}``, 429 with ``Retry-After``, ``Stripe-Should-Retry``): customers become accounts,
invoices and credit notes revenue; a page that fails mid-way resumes after the last committed page;
events bring changes and deletions; a bad key is a clear error."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from flows.sync import sync_stripe
from integrations.connectors import StripeClient
from models import Account, RevenueEntry, TimelineEvent, table_of
from models.sources import StripeSource

KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
NOW = datetime(2026, 10, 5, 12, tzinfo=UTC)
LATER = datetime(2026, 10, 7, 12, tzinfo=UTC)
SPEC = StripeSource.model_validate({"key": {"env": "STRIPE_API_KEY"}})


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def customer(cid: str, name: str, created: str, country: str) -> dict[str, Any]:
    return {"id": cid, "object": "customer", "name": name, "email": f"billing@{name.lower()}.example",
            "created": ts(created), "currency": "usd", "address": {"country": country}, "metadata": {}}  # fmt: skip


def invoice(iid: str, cid: str, month: int, cents: int, *, status: str = "paid") -> dict[str, Any]:
    start, end = f"2026-{month:02d}-01", f"2026-{month + 1:02d}-01"
    return {
        "id": iid, "object": "invoice", "customer": cid, "status": status, "currency": "usd",
        "created": ts(start), "total": cents, "number": iid.upper(),
        "lines": {"object": "list", "has_more": False, "data": [
            {"id": f"il_{iid}", "object": "line_item", "amount": cents, "currency": "usd",
             "period": {"start": ts(start), "end": ts(end)}, "price": {"id": "price_pro", "product": "prod_core"}},
        ]},
    }  # fmt: skip


def subscription(sid: str, cid: str, period_end: str) -> dict[str, Any]:
    return {"id": sid, "object": "subscription", "customer": cid, "status": "active", "created": ts("2026-07-01"),
            "current_period_end": ts(period_end),
            "items": {"object": "list", "data": [{"price": {"id": "price_pro", "nickname": "Pro", "product": "prod_core"}}]}}  # fmt: skip


@dataclass
class FakeStripe:
    """Stripe's list, retrieve and error shapes, in memory; ``faults`` answers a matching request first."""

    customers: list[dict[str, Any]]
    subscriptions: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    credit_notes: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    faults: list[tuple[Callable[[httpx.Request], bool], httpx.Response]] = field(default_factory=list)
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.seen.append((request.url.path, params))
        expected = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            given = base64.b64decode(request.headers["Authorization"].split()[1]).decode().rstrip(":")
            return httpx.Response(401, json={"error": {
                "message": f"Invalid API Key provided: {given[:8]}{'*' * 12}{given[-4:]}", "type": "invalid_request_error"}})  # fmt: skip
        for i, (matches, answer) in enumerate(self.faults):
            if matches(request):
                del self.faults[i]
                return answer
        path = request.url.path
        if path.startswith("/v1/customers/"):
            cid = path.rsplit("/", 1)[1]
            if cid in self.deleted:
                return httpx.Response(200, json={"id": cid, "object": "customer", "deleted": True})
            return httpx.Response(200, json=next(c for c in self.customers if c["id"] == cid))
        if path == "/v1/events":
            gt, lte = int(params["created[gt]"]), int(params["created[lte]"])
            types = set(request.url.params.get_list("types[]"))
            return self.page(path, [e for e in self.events if gt < e["created"] <= lte and e["type"] in types], params)
        objects = {"/v1/customers": [c for c in self.customers if c["id"] not in self.deleted],
                   "/v1/subscriptions": self.subscriptions, "/v1/invoices": self.invoices,
                   "/v1/credit_notes": self.credit_notes}[path]  # fmt: skip
        if "customer" in params:
            objects = [o for o in objects if o["customer"] == params["customer"]]
        return self.page(path, objects, params)

    @staticmethod
    def page(path: str, objects: list[dict[str, Any]], params: dict[str, Any]) -> httpx.Response:
        newest_first = sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)
        if "starting_after" in params:
            at = [o["id"] for o in newest_first].index(params["starting_after"])
            newest_first = newest_first[at + 1 :]
        limit = int(params.get("limit", 10))
        body = {"object": "list", "url": path, "has_more": len(newest_first) > limit, "data": newest_first[:limit]}
        return httpx.Response(200, json=body)


@pytest.fixture
def stripe() -> FakeStripe:
    return FakeStripe(
        customers=[
            customer("cus_acme", "Acme", "2026-06-01", "US"),
            customer("cus_globex", "Globex", "2026-06-02", "DE"),
            customer("cus_initech", "Initech", "2026-06-03", "FR"),
        ],
        subscriptions=[subscription(f"sub_{c}", f"cus_{c}", "2026-11-01") for c in ("acme", "globex", "initech")],
        invoices=[
            invoice(f"in_{c}_{m}", f"cus_{c}", m, 10000) for c in ("acme", "globex", "initech") for m in (7, 8, 9)
        ],
        credit_notes=[
            {
                "id": "cn_globex_8",
                "object": "credit_note",
                "customer": "cus_globex",
                "invoice": "in_globex_8",
                "status": "issued",
                "currency": "usd",
                "total": 2000,
                "created": ts("2026-08-20"),
            }
        ],
    )


def client(fake: FakeStripe, sleeps: list[float], key: str = KEY) -> StripeClient:
    return StripeClient(key, transport=httpx.MockTransport(fake), max_attempts=3, page_size=2, sleep=sleeps.append)


def accounts(engine: Engine) -> dict[str, dict[str, Any]]:
    a = table_of(Account)
    with engine.connect() as conn:
        return {r.external_id: dict(r._mapping) for r in conn.execute(select(a))}


def test_a_page_that_fails_mid_way_resumes_after_the_last_committed_page(engine: Engine, stripe: FakeStripe) -> None:
    sleeps: list[float] = []
    second_page = lambda r: r.url.path == "/v1/customers" and r.url.params.get("starting_after") == "cus_globex"  # noqa: E731
    # the first ask of page 2 is rate limited (and says when to come back); then Stripe fails twice more
    stripe.faults = [
        (second_page, httpx.Response(429, headers={"Retry-After": "2"},
                                     json={"error": {"type": "invalid_request_error", "code": "rate_limit"}})),
        *[(second_page, httpx.Response(503, json={"error": {"type": "api_error", "message": "busy"}}))] * 2,
    ]  # fmt: skip
    first = sync_stripe(engine, SPEC, now=NOW, client=client(stripe, sleeps))
    assert (first.status, first.rows_in, first.batches) == ("failed", 2, 1)
    assert "Stripe /v1/customers: HTTP 503: busy" in (first.message or "")
    assert sleeps == [2.0, 1.0]  # Retry-After honoured, then a backoff; the third attempt (max_attempts) ends it
    assert sorted(accounts(engine)) == ["cus_globex", "cus_initech"]  # page 1 (newest first) is kept
    assert json.loads(first.cursor or "") == {"phase": "walk", "since": int(NOW.timestamp()), "after": "cus_globex"}

    stripe.seen.clear()
    second = sync_stripe(engine, SPEC, now=NOW, client=client(stripe, sleeps))
    assert (second.status, second.rows_in) == ("ok", 1)
    customer_pages = [p for path, p in stripe.seen if path == "/v1/customers"]
    assert customer_pages == [{"limit": "2", "starting_after": "cus_globex"}]  # resumed, page 1 not read again
    assert json.loads(second.cursor or "") == {"phase": "events", "since": int(NOW.timestamp())}

    book = accounts(engine)
    assert sorted(book) == ["cus_acme", "cus_globex", "cus_initech"]
    acme, globex = book["cus_acme"], book["cus_globex"]
    assert (acme["name"], acme["country"], acme["plan"], str(acme["renewal_date"])) == (
        "Acme",
        "US",
        "Pro",
        "2026-11-01",
    )
    # revenue: 100.00 a month; globex's August was credited 20.00; judged through August
    assert (acme["mrr"], globex["mrr"], globex["status"]) == (100, 80, "active")


def test_events_bring_changes_and_deletions(sqlite_engine: Engine, stripe: FakeStripe) -> None:
    sleeps: list[float] = []
    assert sync_stripe(sqlite_engine, SPEC, now=NOW, client=client(stripe, sleeps)).status == "ok"
    # in Stripe since: acme deleted, globex renamed, initech paid October
    stripe.deleted.add("cus_acme")
    globex = next(c for c in stripe.customers if c["id"] == "cus_globex")
    globex["name"] = "Globex Corporation"
    october = invoice("in_initech_10", "cus_initech", 10, 15000)
    stripe.invoices.append(october)
    stripe.events = [
        {"id": "evt_1", "object": "event", "type": "customer.deleted", "created": ts("2026-10-06 09:00:00"),
         "data": {"object": {"id": "cus_acme", "object": "customer", "deleted": True}}},
        {"id": "evt_2", "object": "event", "type": "customer.updated", "created": ts("2026-10-06 10:00:00"),
         "data": {"object": globex}},
        {"id": "evt_3", "object": "event", "type": "invoice.paid", "created": ts("2026-10-06 11:00:00"),
         "data": {"object": october}},
        {"id": "evt_0", "object": "event", "type": "invoice.paid", "created": ts("2026-10-01 11:00:00"),
         "data": {"object": october}},  # before the first run began: not read again
    ]  # fmt: skip
    stripe.seen.clear()
    result = sync_stripe(sqlite_engine, SPEC, now=LATER, client=client(stripe, sleeps))
    assert (result.status, result.rows_in, result.batches) == ("ok", 3, 2)
    events = [p for path, p in stripe.seen if path == "/v1/events"]
    assert events[0]["created[gt]"] == str(int(NOW.timestamp())) and events[0]["created[lte]"] == str(
        int(LATER.timestamp())
    )
    assert not any(path == "/v1/customers" for path, _ in stripe.seen)  # no full walk: only the named customers
    book = accounts(sqlite_engine)
    # deleted: cancelling from now; churned once a month without its revenue is judged (September was paid)
    assert (book["cus_acme"]["status"], book["cus_acme"]["cancelled_at"], book["cus_acme"]["churned_at"]) == (
        "cancelling", LATER, None,
    )  # fmt: skip
    assert book["cus_globex"]["name"] == "Globex Corporation"
    r = table_of(RevenueEntry)
    with sqlite_engine.connect() as conn:
        initech = conn.execute(
            select(r.c.period, r.c.mrr_cents).where(r.c.account_id == book["cus_initech"]["id"]).order_by(r.c.period)
        ).all()
    assert [(f"{p:%Y-%m}", c) for p, c in initech] == [("2026-07", 10000), ("2026-08", 10000), ("2026-09", 10000),
                                                      ("2026-10", 15000)]  # fmt: skip
    a, t = table_of(Account), table_of(TimelineEvent)
    with sqlite_engine.connect() as conn:
        lines = (
            conn.execute(select(t.c.summary).join(a, a.c.id == t.c.account_id).where(a.c.external_id == "cus_acme"))
            .scalars()
            .all()
        )
    assert "deleted in Stripe: cancelling (churned once its revenue stops; its history is kept)" in lines
    assert json.loads(result.cursor or "") == {"phase": "events", "since": int(LATER.timestamp())}


def test_a_bad_key_is_a_clear_error_that_never_shows_the_key(sqlite_engine: Engine, stripe: FakeStripe) -> None:
    bad = "sk_test_WRONGwrongWRONGwrong9999"
    stripe_client = StripeClient(
        bad, key_from="$STRIPE_API_KEY", transport=httpx.MockTransport(stripe), sleep=[].append
    )
    result = sync_stripe(sqlite_engine, SPEC, now=NOW, client=stripe_client)
    assert result.status == "failed"
    assert (result.message or "").startswith("Stripe refused the API key (401): check $STRIPE_API_KEY")
    assert bad not in (result.message or "") and len(stripe.seen) == 1  # never retried
    assert accounts(sqlite_engine) == {}


def test_stripe_should_retry_overrides_the_status(stripe: FakeStripe) -> None:
    sleeps: list[float] = []
    stripe.faults = [
        (lambda r: True, httpx.Response(409, headers={"Stripe-Should-Retry": "true"}, json={"error": {"message": "lock"}})),
        (lambda r: True, httpx.Response(500, headers={"Stripe-Should-Retry": "false"}, json={"error": {"message": "no"}})),
    ]  # fmt: skip
    with pytest.raises(Exception, match="HTTP 500: no"):
        client(stripe, sleeps).get("/v1/customers")
    assert sleeps == [0.5] and len(stripe.seen) == 2


def test_the_key_comes_from_the_environment_never_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import PlaybookError
    from playbooks import load_sources_file

    path = tmp_path / "sources.yaml"
    path.write_text("stripe:\n  key: sk_live_abc\n", encoding="utf-8")
    with pytest.raises(PlaybookError, match=r"sources\.yaml:2:8: stripe\.key: an API key never goes in this file"):
        load_sources_file(path)
    monkeypatch.delenv("STRIPE_API_KEY", raising=False)
    from flows.sync._stripe import stripe_key
    from models import ConfigError

    with pytest.raises(ConfigError, match=r"stripe: \$STRIPE_API_KEY is not set"):
        stripe_key(SPEC)


def test_a_refused_page_names_the_stripe_object_and_is_not_written(sqlite_engine: Engine, stripe: FakeStripe) -> None:
    stripe.credit_notes[0]["total"] = 50000  # more than the invoice it credits
    result = sync_stripe(sqlite_engine, SPEC, now=NOW, client=client(stripe, []))
    assert (result.status, result.rows_in, result.rows_refused) == ("refused", 0, 1)
    (problem,) = result.problems
    assert problem.startswith("stripe (USD): row 7, column 'amount': cn_globex_8: credit notes exceed invoices")
    assert accounts(sqlite_engine) == {}  # the page (globex's and initech's) is written whole or not at all
    assert result.cursor is None  # the next run starts again from the first page
