"""Settle: end, set-based, the enrollments whose goal holds, whose ``exit_when`` holds, or whose goal
window has passed; one query per condition and revision in flight, not one per enrollment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, true, update
from sqlmodel import Session

from flows.engine.revisions import RevisionCache, today_in
from models import (
    Account,
    Enrollment,
    EnrollmentStatus,
    Outcome,
    PlaybookRevision,
    TimelineEvent,
    execute,
    format_duration,
    table_of,
)
from playbooks import ENROLLMENT, to_sql

__all__ = ["settle"]


def settle(s: Session, cache: RevisionCache, playbook: str, as_of: datetime) -> Counter[str]:
    """End every active enrollment of ``playbook`` whose goal or exit condition holds, or whose goal
    window has passed. One query per condition and revision in flight, not one per enrollment."""
    enr, acct = table_of(Enrollment), table_of(Account)
    counts: Counter[str] = Counter()
    # the revisions in flight: of the playbook's few stored revisions, those with an active
    # enrollment (one index probe each, not a read of every active enrollment)
    rev = table_of(PlaybookRevision)
    stored = execute(s, select(rev.c.revision).where(rev.c.playbook == playbook)).scalars().all()
    revisions = [
        (revision,)
        for revision in stored
        if execute(
            s,
            select(enr.c.id)
            .where(enr.c.playbook == playbook, enr.c.revision == revision, enr.c.status == EnrollmentStatus.ACTIVE)
            .limit(1),
        ).first()
    ]
    for (revision,) in revisions:
        pb = cache.get(s, playbook, revision)
        today = today_in(pb, as_of)
        base = and_(enr.c.playbook == playbook, enr.c.revision == revision, enr.c.status == EnrollmentStatus.ACTIVE)
        goal = pb.spec.goal
        if goal is not None:
            cond = to_sql(pb.expression("goal", "when"), ENROLLMENT, now=as_of, today=today)
            chosen = select(enr.c.id).join(acct, acct.c.id == enr.c.account_id).where(base, cond)
            counts["goal"] += _end(
                s, chosen, as_of, EnrollmentStatus.COMPLETED, goal.outcome, f"goal reached: {goal.when}", goal=True
            )
        if pb.spec.exit_when is not None:
            cond = to_sql(pb.expression("exit_when"), ENROLLMENT, now=as_of, today=today)
            chosen = select(enr.c.id).join(acct, acct.c.id == enr.c.account_id).where(base, cond)
            counts["exited"] += _end(
                s, chosen, as_of, EnrollmentStatus.EXITED, "exited", f"exit condition held: {pb.spec.exit_when}"
            )
        if goal is not None and goal.within is not None:
            chosen = select(enr.c.id).where(base, enr.c.started_at <= as_of - goal.within)
            counts["goal_missed"] += _end(
                s,
                chosen,
                as_of,
                EnrollmentStatus.EXITED,
                "goal_missed",
                f"goal not reached within {format_duration(goal.within)}",
            )
        if goal is None or goal.within is None:
            # a holdout has no steps to finish: without a goal window it ends where it began
            # (not those enrolled at this very moment: a re-run of the same tick must add nothing)
            chosen = select(enr.c.id).where(base, enr.c.holdout == true(), enr.c.started_at < as_of)
            counts["holdout_done"] += _end(
                s, chosen, as_of, EnrollmentStatus.COMPLETED, None, "holdout: no goal window to watch"
            )
    return counts


#: enrollments ended per statement: memory and parameters stay bounded however many end at once
#: (PostgreSQL takes at most 65,535 parameters in one statement)
END_BATCH = 5_000


def _end(
    s: Session, chosen: Any, as_of: datetime, status: str, outcome: str | None, reason: str, *, goal: bool = False
) -> int:
    """End the active enrollments ``chosen`` selects (a select of their ids), a batch at a time;
    returns how many this run ended."""
    ended = 0
    while True:
        ids = [row[0] for row in s.exec(chosen.limit(END_BATCH)).all()]
        if ids:
            ended += _end_batch(s, ids, as_of, status, outcome, reason, goal=goal)
        if len(ids) < END_BATCH:
            return ended


def _end_batch(
    s: Session, ids: list[int], as_of: datetime, status: str, outcome: str | None, reason: str, *, goal: bool
) -> int:
    enr = table_of(Enrollment)
    # only the rows this run ended get an outcome and a timeline line: a parallel tick that
    # selected the same ids finds them no longer active and ends nothing
    rows = execute(
        s,
        update(enr)
        .where(enr.c.id.in_(ids), enr.c.status == EnrollmentStatus.ACTIVE)
        .values(status=status, outcome=outcome, ended_at=as_of, next_due_at=None, step_id=None)
        .returning(enr.c.id, enr.c.account_id, enr.c.playbook),
    ).all()
    if goal and outcome and rows:
        s.connection().execute(
            insert(table_of(Outcome)),
            [
                {
                    "account_id": a,
                    "enrollment_id": e,
                    "playbook": p,
                    "kind": outcome,
                    "source": "goal",
                    "occurred_at": as_of,
                }
                for e, a, p in rows
            ],
        )
    _timeline_many(s, [(a, e, p) for e, a, p in rows], as_of, status, f"{status}: {reason}", {"outcome": outcome})
    return len(rows)


def _timeline_many(
    s: Session, rows: Iterable[tuple[int, int, str]], at: datetime, kind: str, summary: str, detail: dict[str, Any]
) -> None:
    values = [
        {
            "account_id": a,
            "enrollment_id": e,
            "playbook": p,
            "at": at,
            "kind": kind,
            "summary": summary,
            "detail": detail,
        }
        for a, e, p in rows
    ]
    if values:
        s.connection().execute(insert(table_of(TimelineEvent)), values)
