"""Stripe, read over its REST API (httpx): customers become accounts, their subscriptions give the
plan and renewal date, their invoices and credit notes become revenue.

What the client does for a caller:

* **Pagination**: list endpoints answer ``{"object": "list", "data": [...], "has_more": ...}``,
  newest first; :meth:`StripeClient.pages` asks with ``limit`` and ``starting_after`` (the last id of
  the page before) until ``has_more`` is false, and yields each page with the id to go on from.
* **Rate limits**: a 429 (and a 5xx, or a connection error) is tried again, up to
  ``max_attempts``, after the ``Retry-After`` the answer gives, else an exponential backoff;
  ``Stripe-Should-Retry: false`` stops at once, ``Stripe-Should-Retry: true`` retries whatever the
  status (Stripe's own libraries do the same).
* **A bad key**: 401 becomes an :class:`IntegrationError` saying where the key is read from; the key
  itself is never in a message (Stripe's own message shows only its last four characters).

:func:`customer_record`, :func:`revenue_rows` turn Stripe's objects into the records the file
imports read, so Stripe data is checked and written by the same code as a CSV file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx

from integrations.channels.secrets import MAX_STORED_BODY, redact
from integrations.sources._csv import CsvFile, CsvRecord
from models import IntegrationError, RetryableError

__all__ = [
    "STRIPE_API",
    "CustomerHistory",
    "StripeClient",
    "customer_record",
    "records",
    "revenue_rows",
]

logger = logging.getLogger(__name__)

STRIPE_API = "https://api.stripe.com"
#: objects per page: Stripe's largest
PAGE_SIZE = 100
#: the longest wait between two attempts, whatever an answer asks
MAX_WAIT = 60.0
#: invoices that are revenue (a draft is not yet, a void one never was)
_BILLED = ("open", "paid", "uncollectible")
#: subscriptions that make a plan and a renewal date
_LIVE = ("active", "trialing", "past_due", "unpaid")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class StripeClient:
    """Stripe's API with a key: GET requests, retried as the module says. ``transport`` and
    ``sleep`` are for tests (an :class:`httpx.MockTransport` speaking Stripe's documented shapes,
    and waits recorded rather than slept)."""

    def __init__(
        self,
        key: str,
        *,
        key_from: str = "the Stripe key",
        base_url: str = STRIPE_API,
        transport: httpx.BaseTransport | None = None,
        max_attempts: int = 5,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            auth=(key, ""),  # Stripe's basic auth: the key as the user name
            headers={"User-Agent": "Retain (+https://retain.dev)", "Stripe-Version": "2024-06-20"},
            timeout=httpx.Timeout(30.0, connect=10.0),
            transport=transport,
        )
        self.key_from = key_from
        self.max_attempts = max_attempts
        self.page_size = page_size
        self.sleep = sleep
        self.requests = 0

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One GET, retried on rate limits and Stripe's transient errors; the answer's JSON."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                self.requests += 1
                response = self._http.get(path, params=params)
            except httpx.TransportError as exc:
                error: RetryableError | None = RetryableError(f"Stripe {path}: {type(exc).__name__}: {exc}")
                wait = None
            else:
                if response.is_success:
                    body = response.json()
                    assert isinstance(body, dict)
                    return body
                error = self._refusal(path, response)
                wait = _retry_after(response)
            if error is None or attempt == self.max_attempts:
                break
            pause = min(MAX_WAIT, wait if wait is not None else 0.5 * 2 ** (attempt - 1))
            logger.info("Stripe %s: %s; again in %.1f s (attempt %d)", path, error, pause, attempt + 1)
            self.sleep(pause)
        assert error is not None
        raise error

    def _refusal(self, path: str, response: httpx.Response) -> RetryableError | None:
        """None when the answer is not worth another attempt (then it is raised here)."""
        try:
            detail = response.json().get("error", {}).get("message") or response.text
        except ValueError:
            detail = response.text
        message = redact(f"Stripe {path}: HTTP {response.status_code}: {detail}", limit=MAX_STORED_BODY)
        should_retry = response.headers.get("Stripe-Should-Retry")
        if response.status_code == 401:
            raise IntegrationError(
                f"Stripe refused the API key (401): check {self.key_from} (a restricted key with read access to "
                f"customers, subscriptions, invoices, credit notes and events will do). {message}",
                status_code=401,
            )
        retry = response.status_code == 429 or response.status_code >= 500
        if should_retry is not None:
            retry = should_retry.strip().lower() == "true"
        if not retry:
            raise IntegrationError(message, status_code=response.status_code)
        return RetryableError(message, status_code=response.status_code, retry_after=_retry_after(response))

    def pages(
        self, path: str, params: dict[str, Any] | None = None, *, starting_after: str | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """The pages of a list endpoint from ``starting_after`` on: each page's objects and the id
        the next page starts after (None after the last page)."""
        while True:
            query = {**(params or {}), "limit": self.page_size}
            if starting_after is not None:
                query["starting_after"] = starting_after
            page = self.get(path, query)
            data = list(page.get("data") or [])
            starting_after = data[-1]["id"] if data and page.get("has_more") else None
            yield data, starting_after
            if starting_after is None:
                return

    def every(self, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every object of a list endpoint (a customer's invoices, say: a few pages at most)."""
        return [obj for page, _ in self.pages(path, params) for obj in page]


# --------------------------------------------------------------------------------------------
# Stripe's objects as import records


def _day(timestamp: int | None) -> date | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).date()


def _money(cents: int) -> str:
    return format(Decimal(cents) / 100, "f")


@dataclass
class CustomerHistory:
    """One customer as Stripe has it now: the customer (``deleted`` when deleted), its
    subscriptions, invoices and credit notes."""

    customer: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    credit_notes: list[dict[str, Any]]

    @property
    def deleted(self) -> bool:
        return bool(self.customer.get("deleted"))

    @property
    def currency(self) -> str | None:
        for invoice in self.invoices:
            if invoice.get("currency"):
                return str(invoice["currency"]).upper()
        found = self.customer.get("currency")
        return str(found).upper() if found else None


def _live_subscription(history: CustomerHistory) -> dict[str, Any] | None:
    live = [s for s in history.subscriptions if s.get("status") in _LIVE]
    return max(live, key=lambda s: s.get("created") or 0) if live else None


def customer_record(line: int, history: CustomerHistory) -> dict[str, str]:
    """A customer as an accounts import's row: id, name, currency, country, signup date, and the
    plan and renewal date of its live subscription."""
    customer = history.customer
    cells: dict[str, str] = {
        "external_id": customer["id"],
        "name": customer.get("name") or customer.get("email") or customer["id"],
    }
    if history.currency:
        cells["currency"] = history.currency
    country = (customer.get("address") or {}).get("country")
    if country:
        cells["country"] = str(country)
    if signup := _day(customer.get("created")):
        cells["signup_date"] = signup.isoformat()
    subscription = _live_subscription(history)
    if subscription is not None:
        items = (subscription.get("items") or {}).get("data") or [{}]
        price = items[0].get("price") or {}
        plan = price.get("nickname") or price.get("lookup_key") or price.get("product")
        if plan:
            cells["plan"] = str(plan)[:100]
        period_end = subscription.get("current_period_end") or items[0].get("current_period_end")
        if renewal := _day(period_end):
            cells["renewal_date"] = renewal.isoformat()
    return cells


def revenue_rows(history: CustomerHistory) -> list[dict[str, str]]:
    """A customer's invoice lines and credit notes as a revenue import's rows (Stripe's service
    periods end on the day after: read with ``service_end_exclusive``); ``stripe_id`` names the
    invoice or credit note, for messages."""
    rows: list[dict[str, str]] = []
    customer = history.customer["id"]
    for invoice in history.invoices:
        if invoice.get("status") not in _BILLED:
            continue
        day = _day(invoice.get("created"))
        currency = str(invoice.get("currency") or "usd").upper()
        for line in (invoice.get("lines") or {}).get("data") or []:
            row = {"customer": customer, "date": str(day), "amount": _money(int(line.get("amount") or 0)),
                   "currency": currency, "invoice": invoice["id"]}  # fmt: skip
            period = line.get("period") or {}
            start, end = _day(period.get("start")), _day(period.get("end"))
            if start and end and end > start:
                row["service_start"], row["service_end"] = start.isoformat(), end.isoformat()
            price = line.get("price") or {}
            if price.get("product"):
                row["product"] = str(price["product"])
            row["stripe_id"] = str(invoice["id"])
            rows.append(row)
    products = {row["invoice"]: row["product"] for row in rows if row.get("product")}
    for note in history.credit_notes:
        if note.get("status") == "void":
            continue
        row = {"customer": customer, "date": str(_day(note.get("created"))), "amount": _money(-int(note.get("total") or 0)),
               "currency": str(note.get("currency") or "usd").upper(), "credits": str(note.get("invoice") or "")}  # fmt: skip
        if row["credits"] in products:  # the product of the invoice it refunds, so that they net
            row["product"] = products[row["credits"]]
        row["stripe_id"] = str(note["id"])
        rows.append(row)
    return rows


def records(name: str, rows: list[dict[str, str]]) -> CsvFile:
    """Rows as an import's records (numbered from 1), named ``name``."""
    headers = {key: key for row in rows for key in row}
    return CsvFile(name, headers, [CsvRecord(i, {k: v for k, v in row.items() if v}) for i, row in enumerate(rows, 1)])
