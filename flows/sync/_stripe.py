"""One run of the Stripe connector: customers into accounts, invoices and credit notes into revenue,
one page at a time, each page committed with the cursor that resumes after it.

**The first run** walks every customer (``/v1/customers``, a page at a time). For each customer of
a page it reads the customer's subscriptions, invoices and credit notes, and the page is written in
one transaction: the customers through the accounts import, their billing through the revenue
import (a customer's whole history replaces theirs), and the cursor — the last customer of the
page. A run that fails mid-way (Stripe unreachable, a page refused) keeps the pages before it, and
the next run goes on after the last committed page.

**Later runs** read Stripe's events since the first run began (``/v1/events``: customers,
subscriptions, invoices, credit notes created, updated or deleted), a page at a time, and read
again each customer an event names; the cursor keeps the window (``since``..``until``) and the last
committed event, so a failed run resumes inside its window. A customer Stripe deleted becomes
``cancelling`` (its history is kept), and churned when the months without its revenue are judged. Stripe keeps events for 30 days: a cursor older than that
starts over with a full walk (rewriting what did not change changes nothing).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flows.analytics.state import derive_account_state
from flows.sync._sql import SyncResult, _revenue_columns
from integrations.channels.secrets import redact, resolve_secret
from integrations.connectors import CustomerHistory, StripeClient, customer_record, records, revenue_rows
from integrations.sources import (
    Spread,
    chunks,
    commit_batch,
    finish_run,
    import_event,
    land_accounts,
    land_revenue,
    read_cursor,
    revenue_of,
    start_run,
)
from models import (
    Account,
    AccountStatus,
    ConfigError,
    DataImportError,
    RetainError,
    RowProblem,
    TimelineEvent,
    table_of,
)
from models.sources import StripeSource

__all__ = ["STRIPE", "sync_stripe"]

STRIPE = "stripe"
#: what Stripe keeps of its events
EVENTS_KEPT_SECONDS = 30 * 24 * 3600
#: the events that say a customer's account or billing changed
EVENT_TYPES = (
    "customer.created", "customer.updated", "customer.deleted",
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "invoice.created", "invoice.finalized", "invoice.updated", "invoice.paid", "invoice.voided",
    "invoice.marked_uncollectible", "credit_note.created", "credit_note.updated", "credit_note.voided",
)  # fmt: skip

_ACCOUNT: Table = table_of(Account)
_TIMELINE: Table = table_of(TimelineEvent)


def stripe_key(spec: StripeSource, lookup: Callable[[str], str] = resolve_secret) -> tuple[str, str]:
    """The API key, and where it was read from (for the 401 message)."""
    place = spec.key
    if place.env is not None:
        import os

        value = os.environ.get(place.env, "").strip()
        if not value:
            raise ConfigError(f"stripe: ${place.env} is not set; it holds the Stripe API key")
        return value, f"${place.env}"
    assert place.secret is not None
    return lookup(place.secret), f"the secret {place.secret!r} (RETAIN_SECRET_{place.secret.upper()})"


def _history(client: StripeClient, customer: dict[str, Any]) -> CustomerHistory:
    if customer.get("deleted"):
        return CustomerHistory(customer, [], [], [])
    by = {"customer": customer["id"]}
    return CustomerHistory(
        customer,
        client.every("/v1/subscriptions", {**by, "status": "all"}),
        client.every("/v1/invoices", by),
        client.every("/v1/credit_notes", by),
    )


def _mark_deleted(conn: Connection, customers: list[str], now: datetime) -> None:
    """Customers Stripe deleted (their subscriptions end with them): their accounts are
    ``cancelling`` from now, on the timeline; revenue makes them churned once it stops."""
    for chunk in chunks(customers):
        rows = conn.execute(select(_ACCOUNT.c.id, _ACCOUNT.c.status).where(_ACCOUNT.c.external_id.in_(chunk))).all()
        for account_id, status in rows:
            if status in (AccountStatus.CHURNED.value, AccountStatus.CANCELLING.value):
                continue
            values = {"status": AccountStatus.CANCELLING.value, "cancelled_at": now, "updated_at": now}
            conn.execute(update(_ACCOUNT).where(_ACCOUNT.c.id == account_id).values(**values))
            summary = "deleted in Stripe: cancelling (churned once its revenue stops; its history is kept)"
            conn.execute(insert(_TIMELINE), [import_event(account_id, now, summary, {"source": STRIPE})])


@contextmanager
def _named(rows: list[dict[str, str]], key: str) -> Iterator[None]:
    """A refusal of these rows names each row's Stripe object (``in_…``, ``cn_…``, ``cus_…``)."""
    try:
        yield
    except DataImportError as exc:
        problems = [
            RowProblem(
                p.row, f"{rows[p.row - 1].get(key)}: {p.message}" if 0 < p.row <= len(rows) else p.message, p.column
            )
            for p in exc.problems
        ]
        raise DataImportError(exc.file, problems) from None


def _land(conn: Connection, histories: list[CustomerHistory], now: datetime) -> None:
    """One page of customers: accounts, revenue (one landing per currency), deletions."""
    live = [h for h in histories if not h.deleted]
    if live:
        rows = [customer_record(i, h) for i, h in enumerate(live, 1)]
        with _named(rows, "external_id"):
            land_accounts(conn, records(STRIPE, rows), now=now, label=STRIPE)
    by_currency: dict[str, list[dict[str, str]]] = defaultdict(list)
    for history in live:
        billed = {i["id"] for i in history.invoices if i.get("status") in ("open", "paid", "uncollectible")}
        for row in revenue_rows(history):
            if row.get("credits") and row["credits"] not in billed:
                del row["credits"]  # it credits a void or draft invoice: revenue of its own month
            by_currency[row["currency"]].append(row)
    for currency, rows in sorted(by_currency.items()):
        revenue = records(f"{STRIPE} ({currency})", rows)
        columns = _revenue_columns(revenue.headers)
        with _named(rows, "stripe_id"):
            land_revenue(
                conn, revenue_of(revenue, columns, spread=Spread.MONTH, service_end_exclusive=True), now=now,
                label=STRIPE,
            )  # fmt: skip
    deleted = [h.customer["id"] for h in histories if h.deleted]
    if deleted:
        _mark_deleted(conn, deleted, now)


def _page(engine: Engine, run: int, histories: list[CustomerHistory], cursor: dict[str, Any], now: datetime) -> None:
    with engine.begin() as conn:
        _land(conn, histories, now)
        commit_batch(conn, run, STRIPE, STRIPE, json.dumps(cursor, sort_keys=True), len(histories), now=now)


def _walk(
    engine: Engine, client: StripeClient, run: int, cursor: dict[str, Any], now: datetime, result: SyncResult
) -> None:
    """Every customer, from the cursor's ``after``; then events from when the walk began."""
    since = int(cursor.get("since") or now.timestamp())
    for customers, after in client.pages("/v1/customers", starting_after=cursor.get("after")):
        histories = [_history(client, c) for c in customers]
        nxt = {"phase": "walk", "since": since, "after": after} if after else {"phase": "events", "since": since}
        _page(engine, run, histories, nxt, now)
        result.rows_in += len(histories)
        result.batches += 1
        result.cursor = json.dumps(nxt, sort_keys=True)


def _events(
    engine: Engine, client: StripeClient, run: int, cursor: dict[str, Any], now: datetime, result: SyncResult
) -> None:
    """The customers named by the events of the cursor's window, read again, page by page."""
    since, until = int(cursor["since"]), int(cursor.get("until") or now.timestamp())
    params = {"created[gt]": since, "created[lte]": until, "types[]": list(EVENT_TYPES)}
    for events, after in client.pages("/v1/events", params, starting_after=cursor.get("after")):
        named: dict[str, None] = {}
        for event in events:
            obj = (event.get("data") or {}).get("object") or {}
            customer = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
            if isinstance(customer, str):
                named.setdefault(customer)
        histories = [_history(client, client.get(f"/v1/customers/{c}")) for c in named]
        nxt = {"phase": "events", "since": since, "until": until, "after": after} if after else {
            "phase": "events", "since": until,
        }  # fmt: skip
        _page(engine, run, histories, nxt, now)
        result.rows_in += len(histories)
        result.batches += 1
        result.cursor = json.dumps(nxt, sort_keys=True)


def sync_stripe(
    engine: Engine,
    spec: StripeSource,
    *,
    now: datetime,
    client: StripeClient | None = None,
    lookup: Callable[[str], str] = resolve_secret,
) -> SyncResult:
    """Run the Stripe connector from its stored cursor (see the module's documentation). Never
    raises for what Stripe or its data do: the result (and ``sync_run``) says what happened."""
    result = SyncResult(STRIPE, STRIPE)
    run = start_run(engine, STRIPE, STRIPE, now=now)
    own = client is None
    try:
        if client is None:
            key, where = stripe_key(spec, lookup)
            client = StripeClient(key, key_from=where)
        with engine.connect() as conn:
            stored = read_cursor(conn, STRIPE)
        cursor: dict[str, Any] = json.loads(stored) if stored else {"phase": "walk"}
        result.cursor = stored
        too_old = cursor["phase"] == "events" and now.timestamp() - int(cursor["since"]) > EVENTS_KEPT_SECONDS
        if cursor["phase"] == "walk" or too_old:
            _walk(engine, client, run, {"phase": "walk"} if too_old else cursor, now, result)
        else:
            _events(engine, client, run, cursor, now, result)
        if result.rows_in:
            with engine.begin() as conn:
                result.state = derive_account_state(conn, now, now=now).line()
    except DataImportError as exc:
        result.status, result.rows_refused = "refused", len({p.row for p in exc.problems})
        result.problems = [p.format(exc.file) for p in exc.problems]
        result.message = f"{result.rows_refused} rows refused; nothing of that page was written"
    except (RetainError, SQLAlchemyError) as exc:
        result.status, result.message = "failed", redact(str(exc))
    except BaseException as exc:  # Ctrl-C, a cancelled flow run, a bug: the run never stays "running"
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
        finish_run(engine, run, "failed", now=now, message=redact(why))
        raise
    finally:
        if own and client is not None:
            client.close()
    finish_run(
        engine, run, result.status, now=now, refused=result.rows_refused, message=result.message,
        problems=result.problems,
    )  # fmt: skip
    return result
