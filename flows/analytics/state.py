"""An account's lifecycle state from its revenue, at a point in time.

:func:`derive_account_state` keeps ``status``, ``churned_at``, ``reactivated_at``, ``renewed_at``,
``expanded_at``, ``contracted_at``, ``mrr`` and ``arr`` on every account with revenue equal to what
its monthly MRR says as of a date. It reads the movements the metrics read: the waterfall of
:mod:`flows.analytics.metrics`, less a month's length, as :func:`flows.analytics.attribution.revenue_events`
finds them (one derivation for the metrics, the revenue outcomes and the account row). The rules,
with their edge cases, are in ``docs/metrics.md`` ("Account state from revenue"):

* The judged months are those that are over by the **cutoff**, the earlier of ``as_of`` and the
  revenue's *data through* date (:func:`read_data_through`, recorded by ``retain revenue import``):
  a month's MRR is not dated more finely than its month, so nothing paid after ``as_of`` is read,
  and a month the data does not cover to its end is never read as churn.
* ``churned_at`` / ``reactivated_at`` / ``expanded_at`` / ``contracted_at``: the first day of the
  latest month with that movement; ``renewed_at``: the latest renewal date kept paying through.
* ``mrr`` / ``arr``: the last judged month's MRR (all products), in the account's currency; ARR = 12 × MRR.
* ``status``: ``churned`` when that MRR is zero after earlier revenue; ``active`` when it is
  positive (a ``paused`` or ``cancelling`` status set by a person is kept while the account pays).
* Accounts with no revenue by the cutoff keep their status; their revenue dates are cleared.

Each changed status or date is one ``TimelineEvent(kind="state")``. Updates are batched Core
statements (one per set of changed columns), never one ORM object per account.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from flows.analytics.attribution import revenue_events
from flows.analytics.metrics import add_months
from integrations.sources import chunks
from models import Account, AccountStatus, DataSource, RevenueEntry, TimelineEvent, table_of

__all__ = [
    "REVENUE_SOURCE",
    "STATE_FIELDS",
    "AccountState",
    "StateResult",
    "account_states",
    "derive_account_state",
    "judged_through",
    "read_data_through",
]

logger = logging.getLogger(__name__)

#: the name revenue's data-through date is kept under (``data_source.name``)
REVENUE_SOURCE = "revenue"
#: the fields the derivation owns, each change one timeline event (mrr and arr change quietly)
STATE_FIELDS = ("status", "churned_at", "reactivated_at", "renewed_at", "expanded_at", "contracted_at")
#: statuses a person sets that revenue does not override while the account pays
_KEPT_WHILE_PAYING = (AccountStatus.PAUSED.value, AccountStatus.CANCELLING.value)
#: the movement each date field takes the latest of
_DATE_OF_KIND = {
    "churned": "churned_at",
    "reactivated": "reactivated_at",
    "renewed": "renewed_at",
    "expanded": "expanded_at",
    "contracted": "contracted_at",
}

_ACCOUNT: Table = table_of(Account)
_REVENUE: Table = table_of(RevenueEntry)
_SOURCE: Table = table_of(DataSource)
_TIMELINE: Table = table_of(TimelineEvent)


def read_data_through(conn: Connection, source: str = REVENUE_SOURCE) -> date | None:
    """The date ``source``'s data runs through, as its last import recorded it (None before any)."""
    return conn.execute(select(_SOURCE.c.data_through).where(_SOURCE.c.name == source)).scalar_one_or_none()


def judged_through(as_of: datetime | date, through: date | None) -> date:
    """The last judged month (its first day): the last month wholly on or before the earlier of
    ``as_of`` and ``through`` (a month's MRR is not dated more finely than its month, so a month is
    read once it is over)."""
    day = as_of.date() if isinstance(as_of, datetime) else as_of
    if through is not None:
        day = min(day, through)
    return add_months((day + timedelta(days=1)).replace(day=1), -1)


@dataclass(frozen=True)
class AccountState:
    """What revenue says of one account at the cutoff."""

    status: str | None  # None: revenue says nothing (no revenue by the cutoff), the status is kept
    churned_at: datetime | None
    reactivated_at: datetime | None
    renewed_at: datetime | None
    expanded_at: datetime | None
    contracted_at: datetime | None
    mrr: float  # in the account's currency (not cents), as Account.arr
    arr: float


@dataclass
class StateResult:
    """What :func:`derive_account_state` did."""

    as_of: str
    data_through: str | None
    through_month: str  # the last judged month, YYYY-MM
    accounts: int = 0  # accounts with revenue judged
    changed: int = 0  # accounts whose row changed
    events: int = 0  # timeline events written
    by_field: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        fields = ", ".join(f"{n} {name}" for name, n in sorted(self.by_field.items())) or "nothing changed"
        return (
            f"account state as of {self.as_of[:10]} (revenue through {self.through_month}): "
            f"{self.accounts} accounts judged, {self.changed} changed ({fields})"
        )


def _start(month: date) -> datetime:
    return datetime.combine(month, time(0), tzinfo=UTC)


def _as_utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


def _books(conn: Connection, last: date) -> dict[str, dict[tuple[int, date], int]]:
    """Monthly MRR per currency up to ``last``: ``{currency: {(account_id, month): cents}}`` (set-based)."""
    total = func.sum(_REVENUE.c.mrr_cents)
    query = (
        select(_REVENUE.c.currency, _REVENUE.c.account_id, _REVENUE.c.period, total)
        .where(_REVENUE.c.period <= last)
        .group_by(_REVENUE.c.currency, _REVENUE.c.account_id, _REVENUE.c.period)
    )
    books: dict[str, dict[tuple[int, date], int]] = defaultdict(dict)
    for code, account_id, period, cents in conn.execute(query):
        if cents:
            books[code][(account_id, period)] = int(cents)
    return books


def account_states(
    conn: Connection, last: date, *, tolerance: float = 0.01
) -> tuple[dict[int, AccountState], set[int]]:
    """What revenue says of every account with revenue up to ``last`` (a first day of a month), and
    the accounts with revenue only after it (not customers yet at the cutoff)."""
    books = _books(conn, last)
    renewals = dict(
        conn.execute(select(_ACCOUNT.c.id, _ACCOUNT.c.renewal_date).where(_ACCOUNT.c.renewal_date.is_not(None))).all()
    )
    latest: dict[int, dict[str, datetime]] = defaultdict(dict)
    mrr: dict[int, int] = defaultdict(int)
    paid: set[int] = set()
    for code, book in books.items():
        for (account_id, month), cents in book.items():
            paid.add(account_id)
            if month == last:
                mrr[account_id] += cents
        for event in revenue_events(book, renewals, through=last, tolerance=tolerance, currency=code):
            name, of = _DATE_OF_KIND[event.kind], latest[int(event.account)]  # type: ignore[call-overload]
            if name not in of or event.occurred_at > of[name]:
                of[name] = event.occurred_at
    later = set(conn.execute(select(_REVENUE.c.account_id).where(_REVENUE.c.period > last).distinct()).scalars())
    states = {}
    for account_id in paid:
        dates = latest.get(account_id, {})
        cents = mrr.get(account_id, 0)
        states[account_id] = AccountState(
            status=AccountStatus.ACTIVE.value if cents > 0 else AccountStatus.CHURNED.value,
            churned_at=dates.get("churned_at"),
            reactivated_at=dates.get("reactivated_at"),
            renewed_at=dates.get("renewed_at"),
            expanded_at=dates.get("expanded_at"),
            contracted_at=dates.get("contracted_at"),
            mrr=cents / 100,
            arr=12 * cents / 100,
        )
    not_yet = later - paid
    return states, not_yet


_EMPTY = AccountState(None, None, None, None, None, None, 0.0, 0.0)


def _changes(row: Any, want: AccountState) -> dict[str, Any]:
    """The columns of ``row`` that differ from ``want`` (status only when revenue says one)."""
    changes: dict[str, Any] = {}
    status = want.status
    if status == AccountStatus.ACTIVE.value and row.status in _KEPT_WHILE_PAYING:
        status = row.status
    if status is not None and status != row.status:
        changes["status"] = status
    for name in STATE_FIELDS[1:]:
        if _as_utc(getattr(row, name)) != getattr(want, name):
            changes[name] = getattr(want, name)
    for name in ("mrr", "arr"):
        if round(float(getattr(row, name) or 0), 2) != round(getattr(want, name), 2):
            changes[name] = getattr(want, name)
    return changes


def _event(account_id: int, name: str, old: Any, new: Any, want: AccountState, at: datetime) -> dict[str, Any]:
    def shown(value: Any) -> str:
        return "none" if value is None else f"{value:%Y-%m-%d}" if isinstance(value, datetime) else str(value)

    summary = f"from revenue: {name} {shown(old)} -> {shown(new)}"
    detail = {
        "source": REVENUE_SOURCE,
        "field": name,
        "old": old.isoformat() if isinstance(old, datetime) else old,
        "new": new.isoformat() if isinstance(new, datetime) else new,
        "mrr": want.mrr,
        "arr": want.arr,
    }
    return {
        "account_id": account_id, "at": at, "kind": "state", "playbook": None, "enrollment_id": None,
        "step_id": None, "summary": summary, "detail": detail,
    }  # fmt: skip


def _when(name: str, new: Any, want: AccountState, cutoff: datetime) -> datetime:
    """When a change happened: the new date itself; for a status, the move that made it."""
    if isinstance(new, datetime):
        return new
    if name == "status":
        moves = [d for d in (want.churned_at if new == "churned" else want.reactivated_at,) if d is not None]
        if moves:
            return moves[0]
    return cutoff


def _update(conn: Connection, updates: Iterable[tuple[int, dict[str, Any]]], now: datetime) -> None:
    """One executemany per set of changed columns."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for account_id, values in updates:
        columns = tuple(sorted(values))
        by_columns[columns].append({"row_id": account_id, **{f"new_{c}": values[c] for c in columns}})
    for columns, params in by_columns.items():
        values = {c: bindparam(f"new_{c}") for c in columns} | {"updated_at": now}
        conn.execute(update(_ACCOUNT).where(_ACCOUNT.c.id == bindparam("row_id")).values(values), params)


def derive_account_state(
    conn: Connection,
    as_of: datetime,
    data_through: date | None = None,
    *,
    now: datetime | None = None,
    tolerance: float = 0.01,
) -> StateResult:
    """Make every account's revenue-derived state what its revenue says as of ``as_of`` (aware),
    reading months no later than ``data_through`` (by default the date recorded by the last revenue
    import; without one, ``as_of``). Writes the changed rows and one timeline event per changed
    status or date, in the caller's transaction. Running it again changes nothing."""
    through = data_through if data_through is not None else read_data_through(conn)
    last = judged_through(as_of, through)
    moment = now or as_of
    cutoff = min(as_of, datetime.combine(through, time(23, 59, 59), tzinfo=UTC)) if through else as_of
    states, not_yet = account_states(conn, last, tolerance=tolerance)
    result = StateResult(as_of.isoformat(), through.isoformat() if through else None, f"{last:%Y-%m}")
    result.accounts = len(states)
    wanted: Mapping[int, AccountState] = {**dict.fromkeys(not_yet, _EMPTY), **states}
    columns = [_ACCOUNT.c.id, *(_ACCOUNT.c[name] for name in (*STATE_FIELDS, "mrr", "arr"))]
    updates: list[tuple[int, dict[str, Any]]] = []
    events: list[dict[str, Any]] = []
    counts: dict[str, int] = defaultdict(int)
    for ids in chunks(sorted(wanted)):
        for row in conn.execute(select(*columns).where(_ACCOUNT.c.id.in_(ids))):
            want = wanted[row.id]
            changes = _changes(row, want)
            if not changes:
                continue
            updates.append((row.id, changes))
            for name, new in changes.items():
                counts[name] += 1
                if name in STATE_FIELDS:
                    old = _as_utc(getattr(row, name)) if name != "status" else row.status
                    events.append(_event(row.id, name, old, new, want, _when(name, new, want, cutoff)))
    _update(conn, updates, moment)
    for batch in chunks(events):
        conn.execute(insert(_TIMELINE), batch)
    result.changed, result.events, result.by_field = len(updates), len(events), dict(counts)
    logger.info("%s", result.line())
    return result
