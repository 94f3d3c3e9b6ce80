"""Accounts as the CLI shows them: the book filtered and sorted, one account with what surrounds it
(contacts, active enrollments, open tasks, outcomes, timeline), and an account's health history."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select

from models import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    EnrollmentStatus,
    HealthScore,
    NotFoundError,
    Outcome,
    TimelineEvent,
)

__all__ = ["AccountView", "as_json", "find_accounts", "health_history", "load_account_view"]


def as_json(row: SQLModel, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A row as JSON-ready data, its fields in the order the model declares them."""
    data = row.model_dump(mode="json")
    return {name: data[name] for name in type(row).model_fields if name in data and name not in exclude}


def find_accounts(
    engine: Engine, *, status: str | None = None, csm: str | None = None, limit: int = 0
) -> tuple[list[Account], int]:
    """The accounts in ``status`` and of the CSM with the email ``csm`` (any case), by name (case
    ignored) then external id; at most ``limit`` of them (0: all), and how many there are in all."""
    query = select(Account)
    if status is not None:
        query = query.where(Account.status == status)
    if csm is not None:
        query = query.where(func.lower(Account.csm_email) == csm.strip().lower())
    with Session(engine) as s:
        total = s.exec(select(func.count()).select_from(query.subquery())).one()
        query = query.order_by(func.lower(Account.name), col(Account.external_id))
        return list(s.exec(query.limit(limit) if limit else query).all()), total


@dataclass(frozen=True)
class AccountView:
    """One account and what surrounds it, as `retain accounts show` presents it."""

    account: Account
    contacts: Sequence[Contact]
    enrollments: Sequence[Enrollment]  # active ones
    tasks: Sequence[CsmTask]  # open ones
    outcomes: Sequence[Outcome]  # the most recent, newest last
    timeline: Sequence[TimelineEvent]  # the most recent, newest last
    timeline_total: int

    def to_json(self) -> dict[str, Any]:
        def rows(items: Sequence[Any]) -> list[dict[str, Any]]:
            return [as_json(item, exclude=frozenset({"account_id"})) for item in items]

        return {
            "account": as_json(self.account),
            "contacts": rows(self.contacts),
            "active_enrollments": rows(self.enrollments),
            "open_tasks": rows(self.tasks),
            "recent_outcomes": rows(self.outcomes),
            "timeline": rows(self.timeline),
        }


def _not_found(s: Session, external_id: str) -> NotFoundError:
    known = s.exec(select(Account.external_id, Account.name)).all()
    wanted = external_id.casefold()
    guesses = [eid for eid, name in known if wanted in (eid.casefold(), name.casefold())]
    guesses = guesses or difflib.get_close_matches(external_id, [eid for eid, _ in known], n=3)
    message = f"no account with external id {external_id!r}"
    if guesses:
        message += f"; did you mean {' or '.join(repr(g) for g in guesses)}?"
    elif known:
        message += " (`retain accounts list` shows them)"
    else:
        message += ": there are no accounts yet (`retain accounts import FILE.csv`)"
    return NotFoundError(message)


def load_account_view(engine: Engine, external_id: str, *, events: int = 20, outcomes: int = 10) -> AccountView:
    """The account with this external id, its contacts, active enrollments, open tasks, the last
    ``outcomes`` outcomes and the last ``events`` timeline events. NotFoundError (with a guess)
    when there is no such account."""
    with Session(engine) as s:
        account = s.exec(select(Account).where(Account.external_id == external_id)).first()
        if account is None:
            raise _not_found(s, external_id)
        contacts = s.exec(
            select(Contact)
            .where(Contact.account_id == account.id)
            .order_by(col(Contact.is_primary).desc(), col(Contact.email))
        ).all()
        enrollments = s.exec(
            select(Enrollment)
            .where(Enrollment.account_id == account.id, Enrollment.status == EnrollmentStatus.ACTIVE.value)
            .order_by(col(Enrollment.next_due_at), col(Enrollment.playbook))
        ).all()
        tasks = s.exec(
            select(CsmTask)
            .where(CsmTask.account_id == account.id, CsmTask.status == "open")
            .order_by(col(CsmTask.due_at), col(CsmTask.id))
        ).all()
        recent_outcomes = s.exec(
            select(Outcome)
            .where(Outcome.account_id == account.id)
            .order_by(col(Outcome.occurred_at).desc(), col(Outcome.id).desc())
            .limit(outcomes)
        ).all()
        timeline = s.exec(
            select(TimelineEvent)
            .where(TimelineEvent.account_id == account.id)
            .order_by(col(TimelineEvent.at).desc(), col(TimelineEvent.id).desc())
            .limit(events)
        ).all()
        total = s.exec(select(func.count()).where(TimelineEvent.account_id == account.id)).one()
    return AccountView(
        account=account,
        contacts=contacts,
        enrollments=enrollments,
        tasks=tasks,
        outcomes=list(reversed(recent_outcomes)),
        timeline=list(reversed(timeline)),
        timeline_total=total,
    )


def health_history(engine: Engine, external_id: str, *, scores: int = 12) -> tuple[Account, list[HealthScore]]:
    """The account with this external id and its last ``scores`` health scores, oldest first.
    NotFoundError (with the closest id) when there is no such account."""
    with Session(engine) as s:
        account = s.exec(select(Account).where(Account.external_id == external_id)).first()
        if account is None:
            known = list(s.exec(select(Account.external_id)).all())
            close = difflib.get_close_matches(external_id, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise NotFoundError(f"no account with external id {external_id!r}{hint}")
        rows = list(
            s.exec(
                select(HealthScore)
                .where(HealthScore.account_id == account.id)
                .order_by(col(HealthScore.scored_at).desc(), col(HealthScore.id).desc())
                .limit(scores)
            ).all()
        )
    rows.reverse()
    return account, rows
