"""Advance: claim the due enrollments of a playbook in batches (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; the claim is the batch's first write on SQLite) and wake each one up (see
:mod:`flows.engine.wake`). Each batch is one transaction, its writes an executemany per table; when
an enrollment fails, the batch is run again with a savepoint per enrollment, so the one that fails
is retried later and, after ``MAX_ERRORS`` failures, ended with outcome ``error``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, inspect, select, true, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from flows.engine._sql import claim
from flows.engine.revisions import RevisionCache
from flows.engine.wake import Wake, Writes
from models import (
    Account,
    Contact,
    Enrollment,
    EnrollmentStatus,
    RetainError,
    TimelineEvent,
    execute,
    session,
    table_of,
)

__all__ = ["MAX_ERRORS", "RETRY_AFTER_ERROR", "AdvanceResult", "advance", "claim_due"]

MAX_ERRORS = 3  # an enrollment that fails this often is ended with outcome "error"
RETRY_AFTER_ERROR = timedelta(hours=1)


@dataclass
class AdvanceResult:
    enrollments: int = 0
    steps: Counter[str] = field(default_factory=Counter)  # step id -> runs
    ended: Counter[str] = field(default_factory=Counter)  # outcome -> count
    touches: Counter[str] = field(default_factory=Counter)  # channel:status -> count
    errors: list[str] = field(default_factory=list)

    def merge(self, other: AdvanceResult) -> None:
        self.enrollments += other.enrollments
        self.steps.update(other.steps)
        self.ended.update(other.ended)
        self.touches.update(other.touches)
        self.errors += other.errors


def claim_due(
    s: Session, playbook: str, as_of: datetime, worker: str, limit: int, only: set[int] | None = None
) -> list[int]:
    """Claim up to ``limit`` due enrollments for this transaction.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` so workers never take the same row; the locks go with
    the transaction, so a worker that dies frees its claims at once. SQLite: the claim is the
    transaction's first write, which serialises writers."""
    enr = table_of(Enrollment)
    due = (
        select(enr.c.id)
        .where(
            enr.c.playbook == playbook,
            enr.c.status == EnrollmentStatus.ACTIVE,
            enr.c.next_due_at.is_not(None),
            enr.c.next_due_at <= as_of,
        )
        .where(enr.c.id.in_(only) if only is not None else true())
        .order_by(enr.c.next_due_at, enr.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = claim(s, enr, due).values(claimed_by=worker).returning(enr.c.id)
    return sorted(row[0] for row in execute(s, stmt).all())


def advance(
    engine: Engine | Connection,  # a connection: a dry run's, rolled back at the end
    cache: RevisionCache,
    playbook: str,
    as_of: datetime,
    *,
    worker: str = "local",
    batch_size: int = 500,
    only: set[int] | None = None,
) -> AdvanceResult:
    """Advance every due enrollment of ``playbook``, batch by batch, each batch one transaction."""
    total = AdvanceResult()
    while True:
        with session(engine) as s:
            ids = claim_due(s, playbook, as_of, worker, batch_size, only)
            if not ids:
                break
            total.merge(_advance_batch(s, cache, ids, as_of))
    return total


def _advance_batch(s: Session, cache: RevisionCache, ids: list[int], as_of: datetime) -> AdvanceResult:
    """The batch in one go (one savepoint, its writes in one executemany per table); should any
    enrollment fail, the batch is undone and run again one savepoint per enrollment, so that
    only the failing ones are held back."""
    enrollments, accounts, contacts = _load(s, ids)
    result = AdvanceResult()
    writes = Writes(s)
    whole = s.begin_nested()
    try:
        for enrollment in enrollments:
            result.enrollments += 1
            account = accounts[enrollment.account_id]
            pb = cache.get(s, enrollment.playbook, enrollment.revision)
            wake = Wake(s, pb, enrollment, account, contacts.get(enrollment.account_id, []), as_of, result, writes)
            wake.run()
            enrollment.claimed_by = None
            writes.timeline += wake.timeline
        writes.flush_touches()
        _write_enrollments(s, enrollments)
        s.flush()  # what the steps changed besides (accounts, outcomes)
        whole.commit()
    except SQLAlchemyError:
        raise  # the database failed, not an enrollment: the whole batch is rolled back and retried
    except Exception:  # a template, expression or step failing for one account: find which
        whole.rollback()
        return _advance_one_by_one(s, cache, ids, as_of)
    writes.flush_timeline()
    return result


def _write_enrollments(s: Session, enrollments: list[Enrollment]) -> None:
    """The batch's enrollments written as one executemany per set of changed columns, then let go
    of by the session (nothing reads them after the batch). The ORM's flush did the same UPDATEs,
    but compared every attribute's history first: a sixth of a batch's time."""
    enr = table_of(Enrollment)
    changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for enrollment in enrollments:
        state = inspect(enrollment)
        changed = tuple(sorted(key for key in state.committed_state if key in enr.c))
        if changed:
            values = state.dict
            changes.setdefault(changed, []).append({"_id": enrollment.id, **{k: values[k] for k in changed}})
    connection = s.connection()
    for columns, rows in changes.items():
        stmt = update(enr).where(enr.c.id == bindparam("_id")).values({k: bindparam(k) for k in columns})
        connection.execute(stmt, rows)
    for enrollment in enrollments:
        s.expunge(enrollment)


def _load(s: Session, ids: list[int]) -> tuple[list[Enrollment], dict[int, Account], dict[int, list[Contact]]]:
    """The batch's enrollments, their accounts and their contacts: three queries per batch."""
    enrollments = list(
        execute(s, select(Enrollment).where(col(Enrollment.id).in_(ids)).order_by(col(Enrollment.id))).scalars().all()
    )
    account_ids = {e.account_id for e in enrollments}
    accounts = {a.id: a for a in execute(s, select(Account).where(col(Account.id).in_(account_ids))).scalars().all()}
    contacts: dict[int, list[Contact]] = {}
    for c in (
        execute(s, select(Contact).where(col(Contact.account_id).in_(account_ids)).order_by(col(Contact.id)))
        .scalars()
        .all()
    ):
        contacts.setdefault(c.account_id, []).append(c)
    return enrollments, {a: account for a, account in accounts.items() if a is not None}, contacts


def _advance_one_by_one(s: Session, cache: RevisionCache, ids: list[int], as_of: datetime) -> AdvanceResult:
    """Each enrollment in its own savepoint: one that fails is retried later and, after
    ``MAX_ERRORS`` failures, ended with outcome ``error``; the others go on."""
    result = AdvanceResult()
    enrollments, accounts, contacts = _load(s, ids)
    writes = Writes(s)
    for enrollment in enrollments:
        result.enrollments += 1
        account = accounts[enrollment.account_id]
        savepoint = s.begin_nested()
        try:
            pb = cache.get(s, enrollment.playbook, enrollment.revision)
            wake = Wake(s, pb, enrollment, account, contacts.get(enrollment.account_id, []), as_of, result, writes)
            wake.run()
            writes.flush_touches()
            enrollment.claimed_by = None
            s.add(enrollment)
            s.flush()
            savepoint.commit()
            writes.timeline += wake.timeline  # kept only once the enrollment's own writes are
        except SQLAlchemyError:
            raise  # the database failed, not this enrollment: the whole batch is rolled back and retried
        except Exception as exc:  # a template, expression or step failing for this account only
            writes.touches = []
            savepoint.rollback()
            message = str(exc) if isinstance(exc, RetainError) else f"{type(exc).__name__}: {exc}"
            _record_error(s, enrollment, as_of, message, result)
    writes.flush_timeline()
    return result


def _record_error(s: Session, enrollment: Enrollment, as_of: datetime, message: str, result: AdvanceResult) -> None:
    s.refresh(enrollment)
    errors = int(enrollment.state.get("errors", 0)) + 1
    enrollment.state = {**enrollment.state, "errors": errors, "last_error": message}
    enrollment.claimed_by = None
    if errors >= MAX_ERRORS:
        enrollment.status, enrollment.outcome, enrollment.ended_at, enrollment.next_due_at = (
            "exited",
            "error",
            as_of,
            None,
        )
        summary = f"ended after {errors} errors at step {enrollment.step_id!r}: {message}"
        result.ended["error"] += 1
    else:
        enrollment.next_due_at = as_of + RETRY_AFTER_ERROR
        summary = f"error at step {enrollment.step_id!r} (attempt {errors} of {MAX_ERRORS}, retried later): {message}"
    s.add(enrollment)
    s.add(
        TimelineEvent.model_validate(
            {
                "account_id": enrollment.account_id,
                "enrollment_id": enrollment.id,
                "playbook": enrollment.playbook,
                "step_id": enrollment.step_id,
                "at": as_of,
                "kind": "error",
                "summary": summary,
            }
        )
    )
    s.flush()
    result.errors.append(f"{enrollment.playbook} enrollment {enrollment.id} ({enrollment.step_id}): {message}")
