"""What a person does with the outbox: look at the touches, decide the ``unknown`` ones, and
retry the ``failed`` ones. Every decision goes on the account's timeline with who made it.

``unknown`` means a touch may have reached its receiver (a crash or a lost answer during the send)
through a channel that cannot drop a repeat: only a person who checked can say whether it arrived
(``delivered``), should go again (``resend``) or should not go at all (``drop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.engine import Engine, Row
from sqlalchemy.sql.elements import ColumnElement

from models import Account, NotFoundError, RetainError, TimelineEvent, Touch, TouchStatus, table_of

__all__ = [
    "ATTENTION",
    "Decision",
    "TouchFilter",
    "TouchLine",
    "find_touch",
    "list_touches",
    "resolve_touch",
    "retry_failed",
]

#: the states a person may have to look at (the default of ``retain outbox list``)
ATTENTION = (TouchStatus.PENDING, TouchStatus.SENDING, TouchStatus.UNKNOWN, TouchStatus.FAILED)

Decision = Literal["delivered", "resend", "drop"]

_T = table_of(Touch)
_A = table_of(Account)


@dataclass(frozen=True)
class TouchFilter:
    """Which touches to list. ``account`` is the account's external id; ``older_than`` an age."""

    states: Sequence[str] = ATTENTION
    channel: str | None = None
    playbook: str | None = None
    account: str | None = None
    older_than: timedelta | None = None
    limit: int = 200


@dataclass(frozen=True)
class TouchLine:
    """One touch as a person reads it."""

    id: int
    key: str
    state: str
    channel: str
    playbook: str | None
    step_id: str | None
    account: str
    attempts: int
    created_at: datetime
    not_before: datetime | None
    reason: str | None

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "state": self.state,
            "channel": self.channel,
            "playbook": self.playbook,
            "step": self.step_id,
            "account": self.account,
            "attempts": self.attempts,
            "created_at": self.created_at.isoformat(),
            "age_seconds": int(self.age(now).total_seconds()),
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "reason": self.reason,
        }


def _columns() -> list[Any]:
    return [
        _T.c.id,
        _T.c.key,
        _T.c.status,
        _T.c.channel,
        _T.c.playbook,
        _T.c.step_id,
        _A.c.external_id,
        _T.c.attempts,
        _T.c.created_at,
        _T.c.not_before,
        _T.c.reason,
        _T.c.account_id,
        _T.c.enrollment_id,
    ]


def _line(row: Row[Any]) -> TouchLine:
    return TouchLine(
        id=row.id,
        key=row.key,
        state=row.status,
        channel=row.channel,
        playbook=row.playbook,
        step_id=row.step_id,
        account=row.external_id,
        attempts=row.attempts,
        created_at=row.created_at,
        not_before=row.not_before,
        reason=row.reason,
    )


def list_touches(engine: Engine, where: TouchFilter, *, now: datetime) -> tuple[list[TouchLine], int]:
    """The touches that match, oldest first (at most ``where.limit``), and how many match in all."""
    conditions: list[ColumnElement[bool]] = [_T.c.status.in_(list(where.states))]
    if where.channel:
        conditions.append(_T.c.channel == where.channel)
    if where.playbook:
        conditions.append(_T.c.playbook == where.playbook)
    if where.account:
        conditions.append(_A.c.external_id == where.account)
    if where.older_than is not None:
        conditions.append(_T.c.created_at <= now - where.older_than)
    joined = _T.join(_A, _A.c.id == _T.c.account_id)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(joined).where(and_(*conditions))).scalar_one()
        rows = conn.execute(
            select(*_columns())
            .select_from(joined)
            .where(and_(*conditions))
            .order_by(_T.c.created_at, _T.c.id)
            .limit(where.limit)
        ).all()
    return [_line(row) for row in rows], int(total)


def find_touch(engine: Engine, ref: str) -> Row[Any]:
    """A touch by its key, or by its id written ``#123``."""
    joined = _T.join(_A, _A.c.id == _T.c.account_id)
    ident = ref[1:] if ref.startswith("#") else None
    condition = _T.c.id == int(ident) if ident and ident.isdigit() else _T.c.key == ref
    with engine.connect() as conn:
        row = conn.execute(select(*_columns()).select_from(joined).where(condition)).first()
    if row is None:
        raise NotFoundError(f"no touch {ref!r} (see `retain outbox list --state all`)")
    return row


def _event(row: Row[Any], now: datetime, kind: str, summary: str, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_id": row.account_id,
        "enrollment_id": row.enrollment_id,
        "playbook": row.playbook,
        "step_id": row.step_id,
        "at": now,
        "kind": kind,
        "summary": summary,
        "detail": detail,
    }


_DONE = {"delivered": "marked delivered", "resend": "to be sent again", "drop": "dropped"}


def resolve_touch(
    engine: Engine, ref: str, decision: Decision, *, by: str, now: datetime, note: str | None = None
) -> str:
    """Decide an ``unknown`` touch; returns what was done, as a sentence.

    ``delivered``: the person checked that it arrived. ``resend``: it goes out with the next outbox
    run (the person accepts a possible repeat). ``drop``: it is never sent."""
    row = find_touch(engine, ref)
    if row.status != TouchStatus.UNKNOWN:
        hint = " (failed touches: `retain outbox retry`)" if row.status == TouchStatus.FAILED else ""
        raise RetainError(f"touch {row.key} is {row.status}: only unknown touches are resolved{hint}")
    why = f"resolved by {by}: {_DONE[decision]}" + (f" ({note})" if note else "")
    values: dict[str, Any] = {"reason": why, "lease_until": None, "claimed_by": None}
    if decision == "delivered":
        values.update(status=TouchStatus.DELIVERED, delivered_at=now)
    elif decision == "resend":
        values.update(status=TouchStatus.PENDING, not_before=None)
    else:
        values.update(status=TouchStatus.DROPPED)
    summary = f"{row.step_id}: {row.channel} touch {row.key} {why}"
    detail = {"by": by, "decision": decision, "was": row.status, "reason": row.reason, "note": note}
    with engine.begin() as conn:
        changed = conn.execute(
            update(_T).where(_T.c.id == row.id, _T.c.status == TouchStatus.UNKNOWN).values(**values)
        ).rowcount
        if not changed:
            raise RetainError(f"touch {row.key} changed meanwhile: look again with `retain outbox list`")
        conn.execute(insert(table_of(TimelineEvent)), _event(row, now, "resolved", summary, detail))
    return f"{row.key}: {_DONE[decision]}" + (" (it goes out with the next outbox run)" if decision == "resend" else "")


def retry_failed(
    engine: Engine,
    refs: Sequence[str],
    *,
    by: str,
    now: datetime,
    channel: str | None = None,
    playbook: str | None = None,
) -> list[str]:
    """Make ``failed`` touches pending again, with their attempts counted afresh: those named by
    ``refs``, or (none named) every failed one of the channel and playbook. Returns their keys."""
    if refs:
        rows = [find_touch(engine, ref) for ref in refs]
        if bad := [r for r in rows if r.status != TouchStatus.FAILED]:
            listed = ", ".join(f"{r.key} is {r.status}" for r in bad)
            raise RetainError(f"only failed touches are retried: {listed}")
    else:
        conditions = [_T.c.status == TouchStatus.FAILED]
        if channel:
            conditions.append(_T.c.channel == channel)
        if playbook:
            conditions.append(_T.c.playbook == playbook)
        joined = _T.join(_A, _A.c.id == _T.c.account_id)
        with engine.connect() as conn:
            rows = list(conn.execute(select(*_columns()).select_from(joined).where(and_(*conditions))).all())
    retried: list[str] = []
    with engine.begin() as conn:
        for row in rows:
            why = f"retried by {by} after: {row.reason}"
            changed = conn.execute(
                update(_T)
                .where(_T.c.id == row.id, _T.c.status == TouchStatus.FAILED)
                .values(status=TouchStatus.PENDING, attempts=0, not_before=None, reason=why)
            ).rowcount
            if changed:
                summary = f"{row.step_id}: {row.channel} touch {row.key} retried by {by}"
                detail = {"by": by, "was": row.status, "reason": row.reason, "attempts": row.attempts}
                conn.execute(insert(table_of(TimelineEvent)), _event(row, now, "retried", summary, detail))
                retried.append(row.key)
    return retried
