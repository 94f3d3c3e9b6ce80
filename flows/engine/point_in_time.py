"""The book as it stood at a past moment, for ``retain playbooks simulate`` over a past window.

A simulation runs on a scratch copy of the database (:mod:`flows.engine.simulate`). Before each
simulated tick, :class:`PointInTime` makes that copy's account rows what the dated data said at the
tick's moment, so that a simulation over a past window is a backtest: nothing dated after the
moment reaches an audience, a goal, an exit or a branch.

* The account's dated columns as imported (``signup_date``, ``onboarded_at``, ``renewed_at``,
  ``cancelled_at``, ``churned_at``, ``reactivated_at``, ``expanded_at``, ``contracted_at``,
  ``last_seen_at``) are kept where they are on or before the moment and cleared where they are
  after it; ``last_seen_at`` becomes the latest product event on or before the moment.
* ``status``, for an account whose state is imported rather than read from revenue: ``churned``
  when a churn on or before the moment was not followed by a reactivation by then; ``active``
  for an account whose churn (or notice of cancellation) came after the moment; otherwise the
  imported status.
* Revenue: the state is derived again as of the moment (:func:`flows.analytics.state.derive_account_state`),
  reading only the months over by then: ``status``, ``churned_at``, ``reactivated_at``,
  ``renewed_at``, ``expanded_at``, ``contracted_at``, ``mrr`` and ``arr``.
* Health: ``health``, ``health_score`` and ``health_trend`` of the latest score on or before the
  moment, for accounts that have scores.
* An account that did not exist yet does not enter: the earliest of its dated data (sign-up, first
  revenue month, first product event, usage day or ticket, imported lifecycle dates) is after the
  moment (:meth:`PointInTime.present`).

Usage, tickets, product events, survey answers and revenue are read by the expressions themselves
as of the tick (``usage`` up to today, ``events``/``last_event`` up to now, ``open_tickets`` open at
now, ``last_survey`` answered by now). Not dated, so read as they are: ``custom`` fields, ``plan``,
``arr`` of accounts without revenue, ``renewal_date``, contacts and their unsubscribes.

The rows are rebuilt only when the moment passes a date at which something changes (a dated
value, a product event, a health score, a month of revenue being over), set-based.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from flows.analytics.metrics import add_months
from flows.analytics.state import derive_account_state
from models import (
    Account,
    AccountStatus,
    HealthScore,
    ProductEvent,
    RevenueEntry,
    SupportTicket,
    UsageMetric,
    UTCDateTime,
    table_of,
)

__all__ = ["DATED_COLUMNS", "PointInTime"]

#: the account's timestamp columns that say when something happened
DATED_COLUMNS = (
    "onboarded_at",
    "renewed_at",
    "cancelled_at",
    "churned_at",
    "reactivated_at",
    "expanded_at",
    "contracted_at",
    "last_seen_at",
)
_KEPT = ("id", "status", "signup_date", *DATED_COLUMNS, "health", "health_score", "health_trend")

_ACCOUNT = table_of(Account)
_EVENT = table_of(ProductEvent)
_HEALTH = table_of(HealthScore)
_REVENUE = table_of(RevenueEntry)
_USAGE = table_of(UsageMetric)
_TICKET = table_of(SupportTicket)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        yield bind


class PointInTime:
    """Keeps a scratch copy's accounts as they stood at each moment it is moved to (forward or back).

    Built once on the scratch copy (it keeps the accounts as imported in a temporary table), then
    :meth:`move_to` before each tick, and :meth:`present` as a condition on who may enroll."""

    def __init__(self, bind: Engine | Connection, start: datetime | None = None, end: datetime | None = None) -> None:
        """``start`` and ``end`` (aware) bound the moments it will be moved to, when known: only the
        changes between them are kept in memory (a long event history costs nothing then)."""
        self.bind = bind
        self._start, self._end = start, end
        meta = MetaData()
        self.imported = Table(
            "retain_sim_imported_account",
            meta,
            *(Column(name, _ACCOUNT.c[name].type, primary_key=name == "id") for name in _KEPT),
            prefixes=["TEMPORARY"],
        )
        self.first_known = Table(
            "retain_sim_first_known",
            meta,
            Column("account_id", Integer, primary_key=True),
            Column("at", UTCDateTime()),
            prefixes=["TEMPORARY"],
        )
        self._moment: datetime | None = None
        with _transaction(bind) as conn:
            self.imported.create(conn)
            self.first_known.create(conn)
            conn.execute(insert(self.imported).from_select(list(_KEPT), select(*(_ACCOUNT.c[n] for n in _KEPT))))
            self._changes = self._change_moments(conn)
            self._fill_first_known(conn)

    # --- when something changes ---

    def _change_moments(self, conn: Connection) -> list[datetime]:
        """Every moment at which the rebuilt rows may differ from the moment just before."""
        moments: set[datetime] = set()
        o = self.imported

        def within(column: Any) -> list[Any]:
            bounds = [column.is_not(None)]
            if self._start is not None:
                bounds.append(column > literal(self._start, UTCDateTime()))
            if self._end is not None:
                bounds.append(column <= literal(self._end, UTCDateTime()))
            return bounds

        for name in DATED_COLUMNS:
            moments.update(_aware(v) for v in conn.execute(select(o.c[name]).where(*within(o.c[name]))).scalars())
        for day in conn.execute(select(o.c.signup_date).where(o.c.signup_date.is_not(None)).distinct()).scalars():
            moments.add(_midnight(day))
        for column in (_EVENT.c.occurred_at, _HEALTH.c.scored_at):
            moments.update(_aware(v) for v in conn.execute(select(column).where(*within(column)).distinct()).scalars())
        # a month of revenue is read from its last day on (flows.analytics.state.judged_through),
        # a month without any revenue too (that is a churn): every month's last day counts
        first, last = conn.execute(select(func.min(_REVENUE.c.period), func.max(_REVENUE.c.period))).one()
        if first is not None:
            month = self._start.date().replace(day=1) if self._start is not None else first
            until = self._end.date() if self._end is not None else add_months(last, 2)
            while month <= until:
                moments.add(_midnight(add_months(month, 1) - timedelta(days=1)))
                month = add_months(month, 1)
        return sorted(moments)

    def _fill_first_known(self, conn: Connection) -> None:
        """The earliest dated data of each account that has any."""
        first: dict[int, datetime] = {}

        def keep(rows: Any) -> None:
            for account_id, at in rows:
                if account_id is None or at is None:
                    continue
                moment = _midnight(at) if not isinstance(at, datetime) else _aware(at)
                if account_id not in first or moment < first[account_id]:
                    first[account_id] = moment

        o = self.imported
        for name in ("signup_date", *DATED_COLUMNS):
            keep(conn.execute(select(o.c.id, o.c[name]).where(o.c[name].is_not(None))))
        for table, column in (
            (_REVENUE, _REVENUE.c.period),
            (_EVENT, _EVENT.c.occurred_at),
            (_USAGE, _USAGE.c.day),
            (_TICKET, _TICKET.c.opened_at),
        ):
            keep(conn.execute(select(table.c.account_id, func.min(column)).group_by(table.c.account_id)))
        rows = [{"account_id": k, "at": v} for k, v in first.items()]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(self.first_known), rows[start : start + 5000])

    def present(self, as_of: datetime) -> ColumnElement[bool]:
        """Accounts that existed at ``as_of``: none of them has all its dated data after it."""
        fk = self.first_known
        return ~exists(select(fk.c.account_id).where(fk.c.account_id == _ACCOUNT.c.id, fk.c.at > as_of))

    # --- moving the rows ---

    def move_to(self, moment: datetime) -> bool:
        """Make the accounts what the data said at ``moment`` (aware). Returns whether anything was
        rebuilt (nothing is when no dated data changes between the last moment and this one)."""
        last = self._moment
        if last is not None:
            low, high = min(last, moment), max(last, moment)
            if bisect_right(self._changes, high) == bisect_right(self._changes, low):
                self._moment = moment
                return False
        with _transaction(self.bind) as conn:
            self._rebuild(conn, moment)
        self._moment = moment
        return True

    def _rebuild(self, conn: Connection, moment: datetime) -> None:
        o, a = self.imported, _ACCOUNT
        at = literal(moment, UTCDateTime())
        mine = o.c.id == a.c.id

        def as_imported(name: str) -> Any:
            return select(o.c[name]).where(mine).scalar_subquery()

        def by_then(name: str) -> Any:
            return select(case((o.c[name] <= at, o.c[name]), else_=None)).where(mine).scalar_subquery()

        latest_event = (
            select(func.max(_EVENT.c.occurred_at))
            .where(_EVENT.c.account_id == a.c.id, _EVENT.c.occurred_at <= at)
            .scalar_subquery()
        )
        values: dict[str, Any] = {name: by_then(name) for name in DATED_COLUMNS if name != "last_seen_at"}
        values["last_seen_at"] = func.coalesce(by_then("last_seen_at"), latest_event)
        values["signup_date"] = (
            select(case((o.c.signup_date <= literal(moment.date()), o.c.signup_date), else_=None))
            .where(mine)
            .scalar_subquery()
        )
        conn.execute(update(a).values(values))
        # the status an import gave, as of then (revenue's own is derived below)
        churned, active = AccountStatus.CHURNED.value, AccountStatus.ACTIVE.value
        still_churned = and_(
            a.c.churned_at.is_not(None), or_(a.c.reactivated_at.is_(None), a.c.reactivated_at < a.c.churned_at)
        )
        imported_status = as_imported("status")
        status = case(
            (still_churned, literal(churned, String())),
            (and_(imported_status == churned, as_imported("churned_at").is_not(None)), literal(active, String())),
            (
                and_(imported_status == AccountStatus.CANCELLING.value, as_imported("cancelled_at") > at),
                literal(active, String()),
            ),
            else_=imported_status,
        )
        conn.execute(update(a).values(status=status))
        # health: the latest score by then, for accounts that have scores
        h = _HEALTH.alias()

        def scored(name: str) -> Any:
            return (
                select(h.c[name])
                .where(h.c.account_id == a.c.id, h.c.scored_at <= at)
                .order_by(h.c.scored_at.desc(), h.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )

        conn.execute(
            update(a)
            .where(exists(select(_HEALTH.c.id).where(_HEALTH.c.account_id == a.c.id)))
            .values(health=scored("band"), health_score=scored("score"), health_trend=scored("trend"))
        )
        if conn.execute(select(_REVENUE.c.id).limit(1)).first() is not None:
            derive_account_state(conn, moment)
