"""The engine: enroll, settle and advance, as plain functions over a database (no Prefect here).

One tick of one playbook:

1. ``sync_revision`` stores the playbook's source under its revision (enrollments pin to it);
2. ``settle`` ends, set-based, the enrollments whose goal holds, whose ``exit_when`` holds, or
   whose goal window has passed;
3. ``enroll`` adds every newly eligible account in ONE ``INSERT … SELECT`` (audience compiled to
   SQL, re-entry rule, holdout by a stable hash);
4. ``advance`` claims due enrollments in batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; the
   claim is the batch's first write on SQLite), and runs each one's steps until a wait. Side
   effects are written as touches (the outbox) in the same transaction; ``flows.engine.outbox`` delivers.

Waits are due times on the enrollment row, never a sleeping process.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.utils import formataddr
from typing import Any

import pendulum
from sqlalchemy import and_, exists, false, insert, literal, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from flows.analytics.surveys import survey_link_for
from flows.engine.policy import unsubscribe_reason
from flows.engine.render import markdown_to_html, render_value, template_variables
from models import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    EnrollmentStatus,
    Outcome,
    PlaybookRevision,
    RetainError,
    TimelineEvent,
    Touch,
    TouchStatus,
    session,
)
from models._duration import format_duration
from models.playbook import (
    BranchStep,
    EmailStep,
    ExitStep,
    OutcomeStep,
    SlackStep,
    SurveyStep,
    TaskStep,
    UpdateStep,
    WaitForStep,
    WaitStep,
    WebhookStep,
    reentry_after,
)
from models.tables import HOLDOUT_BUCKETS
from playbooks import AUDIENCE, ENROLLMENT, CompiledPlaybook, compile_source, env_for, evaluate, to_sql

__all__ = [
    "AdvanceResult",
    "RevisionCache",
    "advance",
    "enroll",
    "holdout_salt",
    "settle",
    "sync_revision",
    "today_in",
]

log = logging.getLogger("retain.engine")

MAX_STEPS_PER_WAKE = 200  # a guard: validation already refuses loops without a wait
MAX_ERRORS = 3  # an enrollment that fails this often is ended with outcome "error"
RETRY_AFTER_ERROR = timedelta(hours=1)
DEFAULT_AT = time(9, 0)


def today_in(pb: CompiledPlaybook, as_of: datetime) -> date:
    """ "Today" for a playbook: the date at ``as_of`` in its schedule's time zone (else UTC)."""
    zone = pb.spec.schedule.timezone if pb.spec.schedule else "UTC"
    return pendulum.instance(as_of).in_timezone(zone).date()


def holdout_salt(playbook: str) -> int:
    """Per-playbook rotation of the account buckets: holdouts differ between playbooks."""
    return int(hashlib.sha256(playbook.encode()).hexdigest(), 16) % HOLDOUT_BUCKETS


# --- revisions ----------------------------------------------------------------------------------


def sync_revision(s: Session, pb: CompiledPlaybook) -> None:
    """Store this revision's source and templates once; enrollments started on it will use them."""
    if s.get(PlaybookRevision, (pb.id, pb.revision)) is None:
        s.add(
            PlaybookRevision.model_validate(
                {
                    "playbook": pb.id,
                    "revision": pb.revision,
                    "source": pb.source,
                    "templates": pb.templates,
                    "path": pb.file,
                }
            )
        )
        s.flush()


@dataclass
class RevisionCache:
    """Compiled playbooks by (playbook, revision): the current files plus stored older revisions."""

    current: dict[str, CompiledPlaybook] = field(default_factory=dict)
    _compiled: dict[tuple[str, str], CompiledPlaybook] = field(default_factory=dict)

    def get(self, s: Session, playbook: str, revision: str) -> CompiledPlaybook:
        pb = self.current.get(playbook)
        if pb is not None and pb.revision == revision:
            return pb
        key = (playbook, revision)
        if key not in self._compiled:
            row = s.get(PlaybookRevision, key)
            if row is None:
                raise RetainError(
                    f"playbook {playbook!r} revision {revision} is not stored; cannot advance its enrollments"
                )
            self._compiled[key] = compile_source(row.source, f"{playbook}@{revision}", templates=row.templates)
        return self._compiled[key]


# --- settle: goal, exit, goal window (set-based) ----------------------------------------------


def settle(s: Session, cache: RevisionCache, playbook: str, as_of: datetime) -> Counter[str]:
    """End every active enrollment of ``playbook`` whose goal or exit condition holds, or whose goal
    window has passed. One query per condition and revision in flight, not one per enrollment."""
    enr, acct = Enrollment.__table__, Account.__table__  # type: ignore[attr-defined]
    counts: Counter[str] = Counter()
    revisions = s.exec(  # type: ignore[call-overload]
        select(enr.c.revision).where(enr.c.playbook == playbook, enr.c.status == EnrollmentStatus.ACTIVE).distinct()
    ).all()
    for (revision,) in revisions:
        pb = cache.get(s, playbook, revision)
        today = today_in(pb, as_of)
        base = and_(enr.c.playbook == playbook, enr.c.revision == revision, enr.c.status == EnrollmentStatus.ACTIVE)
        goal = pb.spec.goal
        if goal is not None:
            cond = to_sql(pb.expression("goal", "when"), ENROLLMENT, now=as_of, today=today)
            ids = _ids(s, select(enr.c.id).join(acct, acct.c.id == enr.c.account_id).where(base, cond))
            counts["goal"] += _end(
                s, ids, as_of, EnrollmentStatus.COMPLETED, goal.outcome, f"goal reached: {goal.when}", goal=True
            )
        if pb.spec.exit_when is not None:
            cond = to_sql(pb.expression("exit_when"), ENROLLMENT, now=as_of, today=today)
            ids = _ids(s, select(enr.c.id).join(acct, acct.c.id == enr.c.account_id).where(base, cond))
            counts["exited"] += _end(
                s, ids, as_of, EnrollmentStatus.EXITED, "exited", f"exit condition held: {pb.spec.exit_when}"
            )
        if goal is not None and goal.within is not None:
            ids = _ids(s, select(enr.c.id).where(base, enr.c.started_at <= as_of - goal.within))
            counts["goal_missed"] += _end(
                s,
                ids,
                as_of,
                EnrollmentStatus.EXITED,
                "goal_missed",
                f"goal not reached within {format_duration(goal.within)}",
            )
        if goal is None or goal.within is None:
            # a holdout has no steps to finish: without a goal window it ends where it began
            # (not those enrolled at this very moment: a re-run of the same tick must add nothing)
            ids = _ids(s, select(enr.c.id).where(base, enr.c.holdout == true(), enr.c.started_at < as_of))
            counts["holdout_done"] += _end(
                s, ids, as_of, EnrollmentStatus.COMPLETED, None, "holdout: no goal window to watch"
            )
    return counts


def _ids(s: Session, stmt: Any) -> list[int]:
    return [row[0] for row in s.exec(stmt).all()]


def _end(
    s: Session, ids: list[int], as_of: datetime, status: str, outcome: str | None, reason: str, *, goal: bool = False
) -> int:
    if not ids:
        return 0
    enr = Enrollment.__table__  # type: ignore[attr-defined]
    rows = s.exec(select(enr.c.id, enr.c.account_id, enr.c.playbook).where(enr.c.id.in_(ids))).all()  # type: ignore[call-overload]
    s.exec(
        update(enr)
        .where(enr.c.id.in_(ids), enr.c.status == EnrollmentStatus.ACTIVE)
        .values(status=status, outcome=outcome, ended_at=as_of, next_due_at=None, step_id=None)
    )
    if goal and outcome:
        s.connection().execute(
            insert(Outcome.__table__),  # type: ignore[attr-defined]
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
        s.connection().execute(insert(TimelineEvent.__table__), values)  # type: ignore[attr-defined]


# --- enroll: one INSERT ... SELECT ----------------------------------------------------------------


def enroll(s: Session, pb: CompiledPlaybook, as_of: datetime, *, source: str = "schedule") -> tuple[int, int]:
    """Enroll every account that matches the audience and may (re-)enter. Returns (enrolled, holdout)."""
    enr, acct = Enrollment.__table__, Account.__table__  # type: ignore[attr-defined]
    today = today_in(pb, as_of)
    audience = to_sql(pb.expression("audience"), AUDIENCE, now=as_of, today=today)
    previous = select(enr.c.id).where(enr.c.playbook == pb.id, enr.c.account_id == acct.c.id)
    rule = reentry_after(pb.spec.entry.reentry)
    if rule is None:  # never: one enrollment per account, ever
        blocked = exists(previous)
    else:  # after <duration>: counted from the start of the previous enrollment; never while one is active
        blocked = exists(previous.where(or_(enr.c.status == EnrollmentStatus.ACTIVE, enr.c.started_at > as_of - rule)))
    threshold = round(pb.spec.entry.holdout * HOLDOUT_BUCKETS)
    in_holdout = ((acct.c.holdout_bucket + holdout_salt(pb.id)) % HOLDOUT_BUCKETS) < threshold if threshold else false()
    first_step = pb.spec.steps[0].id
    chosen = select(
        literal(pb.id),
        literal(pb.revision),
        acct.c.id,
        literal(EnrollmentStatus.ACTIVE.value),
        in_holdout,
        literal(first_step),
        literal(as_of, type_=enr.c.next_due_at.type),
        literal(as_of, type_=enr.c.started_at.type),
        literal(source),
        literal({}, type_=enr.c.state.type),
    ).where(audience, ~blocked)
    columns = [
        "playbook",
        "revision",
        "account_id",
        "status",
        "holdout",
        "step_id",
        "next_due_at",
        "started_at",
        "source",
        "state",
    ]
    stmt = _insert_ignore(s, enr).from_select(columns, chosen)
    s.exec(stmt)  # type: ignore[call-overload]
    # holdout enrollments never run steps; the timeline records every new enrollment
    s.exec(
        update(enr)
        .where(enr.c.playbook == pb.id, enr.c.started_at == as_of, enr.c.holdout == true(), enr.c.step_id.is_not(None))
        .values(step_id=None, next_due_at=None)
    )
    new = s.exec(  # type: ignore[call-overload]
        select(enr.c.id, enr.c.account_id, enr.c.holdout).where(
            enr.c.playbook == pb.id,
            enr.c.started_at == as_of,
            enr.c.source == source,
            ~exists(
                select(col(TimelineEvent.id)).where(
                    col(TimelineEvent.enrollment_id) == enr.c.id, col(TimelineEvent.kind) == "enrolled"
                )
            ),
        )
    ).all()
    values = [
        {
            "account_id": a,
            "enrollment_id": e,
            "playbook": pb.id,
            "at": as_of,
            "kind": "enrolled",
            "summary": f"enrolled in {pb.spec.name}" + (" (holdout: never contacted)" if h else ""),
            "detail": {"revision": pb.revision, "holdout": bool(h), "source": source},
        }
        for e, a, h in new
    ]
    if values:
        s.connection().execute(insert(TimelineEvent.__table__), values)  # type: ignore[attr-defined]
    holdouts = sum(1 for _, _, h in new if h)
    return len(new), holdouts


def _insert_ignore(s: Session, table: Any) -> Any:
    """INSERT that skips rows hitting a unique key (two workers enrolling the same account)."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return insert(table)


# --- advance ------------------------------------------------------------------------------------


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
    enr = Enrollment.__table__  # type: ignore[attr-defined]
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
    stmt = update(enr).where(enr.c.id.in_(due.scalar_subquery())).values(claimed_by=worker).returning(enr.c.id)
    return sorted(row[0] for row in s.exec(stmt).all())  # type: ignore[call-overload]


def advance(
    engine: Engine,
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
    result = AdvanceResult()
    enrollments = (
        s.exec(select(Enrollment).where(col(Enrollment.id).in_(ids)).order_by(col(Enrollment.id)))  # type: ignore[call-overload]
        .scalars()
        .all()
    )
    account_ids = {e.account_id for e in enrollments}
    accounts = {
        a.id: a
        for a in s.exec(select(Account).where(col(Account.id).in_(account_ids))).scalars().all()  # type: ignore[call-overload]
    }
    contacts: dict[int, list[Contact]] = {}
    for c in (
        s.exec(select(Contact).where(col(Contact.account_id).in_(account_ids)).order_by(col(Contact.id)))  # type: ignore[call-overload]
        .scalars()
        .all()
    ):
        contacts.setdefault(c.account_id, []).append(c)
    writes = _Writes(s)
    for enrollment in enrollments:
        result.enrollments += 1
        account = accounts[enrollment.account_id]
        savepoint = s.begin_nested()
        try:
            pb = cache.get(s, enrollment.playbook, enrollment.revision)
            run = _Run(s, pb, enrollment, account, contacts.get(account.id, []), as_of, result, writes)
            run.wake()
            enrollment.claimed_by = None
            s.add(enrollment)
            s.flush()
            savepoint.commit()
            writes.timeline += run.timeline  # kept only once the enrollment's own writes are
        except SQLAlchemyError:
            raise  # the database failed, not this enrollment: the whole batch is rolled back and retried
        except Exception as exc:  # a template, expression or step failing for this account only
            savepoint.rollback()
            message = str(exc) if isinstance(exc, RetainError) else f"{type(exc).__name__}: {exc}"
            _record_error(s, enrollment, as_of, message, result)
    writes.flush_timeline()
    return result


class _Writes:
    """A batch's inserts through Core statements compiled once (the ORM's per-row overhead was most
    of a wake-up's cost); timeline rows go in one executemany at the end of the batch."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.touch = _insert_ignore(s, Touch.__table__)  # type: ignore[attr-defined]
        self.task = insert(CsmTask.__table__)  # type: ignore[attr-defined]
        self.timeline: list[dict[str, Any]] = []

    def flush_timeline(self) -> None:
        if self.timeline:
            self.s.connection().execute(insert(TimelineEvent.__table__), self.timeline)  # type: ignore[attr-defined]
            self.timeline = []


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


class _Run:
    """One enrollment's wake-up: goal and exit first, then steps until a wait or the end."""

    def __init__(
        self,
        s: Session,
        pb: CompiledPlaybook,
        enrollment: Enrollment,
        account: Account,
        contacts: list[Contact],
        as_of: datetime,
        result: AdvanceResult,
        writes: _Writes | None = None,
    ) -> None:
        self.s, self.pb, self.e, self.account, self.contacts = s, pb, enrollment, account, contacts
        self.as_of, self.result = as_of, result
        self.writes = writes or _Writes(s)
        self.timeline: list[dict[str, Any]] = []  # this wake-up's timeline rows (written with the batch)
        self.today = today_in(pb, as_of)
        self.state: dict[str, Any] = dict(enrollment.state or {})

    # -- helpers --
    def _env(self, contact: Contact | None = None) -> Any:
        return env_for(self.s, self.account, now=self.as_of, today=self.today, contact=contact, enrollment=self.e)

    def _holds(self, expr: Any, contact: Contact | None = None) -> bool:
        return evaluate(expr, self._env(contact)) is True

    def _timeline(self, kind: str, summary: str, step_id: str | None = None, **detail: Any) -> None:
        self.timeline.append(
            {
                "account_id": self.account.id,
                "enrollment_id": self.e.id,
                "playbook": self.pb.id,
                "step_id": step_id,
                "at": self.as_of,
                "kind": kind,
                "summary": summary,
                "detail": detail,
            }
        )

    def _save(self) -> None:
        self.e.state = self.state
        self.s.add(self.e)

    def _end(self, status: str, outcome: str | None, reason: str, *, record_outcome: bool = False) -> None:
        self.e.status, self.e.outcome, self.e.ended_at = status, outcome, self.as_of
        self.e.next_due_at, self.e.step_id = None, None
        if record_outcome and outcome:
            self.s.add(
                Outcome.model_validate(
                    {
                        "account_id": self.account.id,
                        "enrollment_id": self.e.id,
                        "playbook": self.pb.id,
                        "kind": outcome,
                        "source": "goal" if reason.startswith("goal") else "step",
                        "occurred_at": self.as_of,
                    }
                )
            )
        self._timeline(status, f"{status}: {reason}", outcome=outcome)
        self.result.ended[outcome or status] += 1
        self._save()

    def _goto(self, step_id: str | None) -> None:
        self.e.step_id = step_id
        self.e.next_due_at = self.as_of

    def _next_of(self, step_id: str) -> str | None:
        i = self.pb.step_index(step_id)
        return self.pb.spec.steps[i + 1].id if i + 1 < len(self.pb.spec.steps) else None

    def _sleep(self, until: datetime, why: str, step_id: str) -> None:
        self.e.next_due_at = until
        self._timeline("wait", f"waiting until {until:%Y-%m-%d %H:%M} UTC: {why}", step_id, until=until.isoformat())
        self._save()

    def _zone(self) -> str:
        return self.account.timezone or (self.pb.spec.schedule.timezone if self.pb.spec.schedule else "UTC")

    # -- the loop --
    def wake(self) -> None:
        spec = self.pb.spec
        for _ in range(MAX_STEPS_PER_WAKE):
            if self.e.status != EnrollmentStatus.ACTIVE:
                return
            if spec.goal is not None and self._holds(self.pb.expression("goal", "when")):
                self._end(
                    EnrollmentStatus.COMPLETED,
                    spec.goal.outcome,
                    f"goal reached: {spec.goal.when}",
                    record_outcome=True,
                )
                return
            if spec.exit_when is not None and self._holds(self.pb.expression("exit_when")):
                self._end(EnrollmentStatus.EXITED, "exited", f"exit condition held: {spec.exit_when}")
                return
            if self.e.step_id is None:
                self._finish()
                return
            step = spec.step(self.e.step_id)
            if not self._run_step(step):
                return  # waiting
        raise RetainError(f"more than {MAX_STEPS_PER_WAKE} steps in one wake-up")

    def _finish(self) -> None:
        goal = self.pb.spec.goal
        if goal is not None and goal.within is not None and self.as_of < self.e.started_at + goal.within:
            # the steps are done; the goal may still be reached within its window (settle watches)
            if self.e.next_due_at is not None:
                self.e.next_due_at = None
                self._timeline(
                    "steps_done",
                    f"all steps done; watching the goal until {(self.e.started_at + goal.within):%Y-%m-%d}",
                )
                self._save()
            return
        self._end(EnrollmentStatus.COMPLETED, None, "all steps done")

    def _visit(self, step_id: str) -> int:
        visits = dict(self.state.get("visits", {}))
        visits[step_id] = int(visits.get(step_id, 0)) + 1
        self.state["visits"] = visits
        return visits[step_id]

    def _run_step(self, step: Any) -> bool:
        """Run one step; True to go on with the next, False when the enrollment now waits or ended."""
        self.result.steps[step.id] += 1
        if isinstance(step, WaitStep):
            return self._wait(step)
        if isinstance(step, WaitForStep):
            return self._wait_for(step)
        if isinstance(step, BranchStep):
            taken = self._holds(self.pb.step_expression(step.id, "if"))
            target = (step.then if taken else step.else_) or self._next_of(step.id)
            self._timeline(
                "branch",
                f"{step.id}: {'yes' if taken else 'no'} -> {target or 'end'}",
                step.id,
                condition=step.if_,
                taken=taken,
            )
            self._goto(target)
            return True
        if isinstance(step, ExitStep):
            self._end(EnrollmentStatus.COMPLETED, step.outcome, f"exit step {step.id!r}", record_outcome=True)
            return False
        visit = self._visit(step.id)
        if isinstance(step, EmailStep | SurveyStep):
            self._message(step, visit)
        elif isinstance(step, SlackStep):
            self._slack(step, visit)
        elif isinstance(step, WebhookStep):
            self._webhook(step, visit)
        elif isinstance(step, TaskStep):
            self._task(step, visit)
        elif isinstance(step, UpdateStep):
            self._update(step)
        elif isinstance(step, OutcomeStep):
            self._outcome(step)
        self._goto(self._next_of(step.id))
        self._save()
        return True

    # -- waits --
    def _wait(self, step: WaitStep) -> bool:
        waiting = self.state.get("waiting")
        if waiting and waiting.get("step") == step.id:
            until = datetime.fromisoformat(waiting["until"])
            if self.as_of >= until:
                self.state.pop("waiting")
                self._goto(self._next_of(step.id))
                self._save()
                return True
            self._sleep(until, "still waiting", step.id)
            return False
        if step.for_ is not None:
            until = self._at_local(self.as_of + step.for_, step.at)
            why = f"{step.id}: wait {format_duration(step.for_)}" + (f" until {step.at} local" if step.at else "")
        else:
            value = evaluate(self.pb.step_expression(step.id, "until"), self._env())
            if value is None:
                self._timeline("wait", f"{step.id}: no date to wait for ({step.until} is empty); going on", step.id)
                self._goto(self._next_of(step.id))
                return True
            if isinstance(value, datetime):
                until = value if step.at is None else self._at_local(value, step.at)
            else:
                until = self._at_local_date(value, step.at)
            why = f"{step.id}: wait until {step.until}"
        if until <= self.as_of:
            self._goto(self._next_of(step.id))
            return True
        self.state["waiting"] = {"step": step.id, "until": until.isoformat()}
        self._sleep(until, why, step.id)
        return False

    def _at_local(self, moment: datetime, at: str | None) -> datetime:
        if at is None:
            return moment
        local = pendulum.instance(moment).in_timezone(self._zone())
        hh, mm = (int(x) for x in at.split(":"))
        candidate = local.set(hour=hh, minute=mm, second=0, microsecond=0)
        if candidate < local:
            candidate = candidate.add(days=1)
        return candidate.in_timezone("UTC")

    def _at_local_date(self, day: date, at: str | None) -> datetime:
        hh, mm = (int(x) for x in at.split(":")) if at else (DEFAULT_AT.hour, DEFAULT_AT.minute)
        local = pendulum.datetime(day.year, day.month, day.day, hh, mm, tz=self._zone())
        return local.in_timezone("UTC")

    def _wait_for(self, step: WaitForStep) -> bool:
        started_map = dict(self.state.get("wait_for", {}))
        started = datetime.fromisoformat(started_map[step.id]) if step.id in started_map else self.as_of
        if self._holds(self.pb.step_expression(step.id, "condition")):
            started_map.pop(step.id, None)
            self.state["wait_for"] = started_map
            self._timeline("wait_for", f"{step.id}: condition met: {step.condition}", step.id)
            self._goto(self._next_of(step.id))
            self._save()
            return True
        deadline = started + step.timeout
        if self.as_of >= deadline:
            started_map.pop(step.id, None)
            self.state["wait_for"] = started_map
            target = step.on_timeout or self._next_of(step.id)
            self._timeline(
                "wait_for", f"{step.id}: timed out after {format_duration(step.timeout)} -> {target or 'end'}", step.id
            )
            self._goto(target)
            self._save()
            return True
        started_map[step.id] = started.isoformat()
        self.state["wait_for"] = started_map
        self.e.next_due_at = min(self.as_of + step.check_every, deadline)
        if step.id not in (self.e.state or {}).get("wait_for", {}):
            self._timeline(
                "wait_for", f"{step.id}: waiting for {step.condition} (at most until {deadline:%Y-%m-%d})", step.id
            )
        self._save()
        return False

    # -- side effects: written as touches (the outbox) or rows in this transaction --
    def _recipients(self, step: EmailStep | SurveyStep) -> list[Contact]:
        """The step's own ``contacts`` rule, else the playbook's ``entry.contacts``, else the
        primary contact."""
        if step.contacts is not None:
            expr = self.pb.step_expression(step.id, "contacts")
        elif self.pb.spec.entry.contacts is not None:
            expr = self.pb.expression("entry", "contacts")
        else:
            primary = [c for c in self.contacts if c.is_primary]
            return primary[:1] or self.contacts[:1]
        return [c for c in self.contacts if self._holds(expr, c)]

    def _touch(
        self,
        step: Any,
        visit: int,
        channel: str,
        payload: dict[str, Any],
        contact: Contact | None = None,
        *,
        suppressed: str | None = None,
    ) -> None:
        key = self._touch_key(step.id, visit, contact)
        values = {
            "key": key,
            "enrollment_id": self.e.id,
            "account_id": self.account.id,
            "contact_id": contact.id if contact else None,
            "playbook": self.pb.id,
            "revision": self.pb.revision,
            "step_id": step.id,
            "channel": channel,
            "priority": self.pb.spec.effective_priority,
            "status": TouchStatus.SUPPRESSED if suppressed else TouchStatus.PENDING,
            "reason": suppressed,
            "payload": payload,
            "created_at": self.as_of,
        }
        self.s.connection().execute(self.writes.touch, values)
        self.result.touches[f"{channel}:{values['status']}"] += 1
        who = contact.email if contact else payload.get("channel") or (payload.get("url") and "webhook") or channel
        if suppressed:
            self._timeline("suppressed", f"{step.id}: {channel} to {who} suppressed: {suppressed}", step.id, key=key)
        else:
            self._timeline("touch", f"{step.id}: {channel} to {who} queued", step.id, key=key)

    def _touch_key(self, step_id: str, visit: int, contact: Contact | None) -> str:
        """The touch's unique key: playbook, enrollment, step, visit and contact."""
        return f"{self.pb.id}:{self.e.id}:{step_id}:{visit}" + (f":{contact.id}" if contact else "")

    def _message(self, step: EmailStep | SurveyStep, visit: int) -> None:
        if isinstance(step, EmailStep) and step.to == "csm":
            targets: list[Contact | None] = [None]
        else:
            targets = list(self._recipients(step))
            if not targets:
                self._timeline(
                    "skipped",
                    f"{step.id}: no contact matches {step.contacts or self.pb.spec.entry.contacts or 'primary contact'}",
                    step.id,
                )
                return
        for contact in targets:
            extra: dict[str, Any] = {}
            if isinstance(step, SurveyStep):
                # the signed link carries the touch key, so an answer finds its touch (and marks it replied)
                extra["survey_url"] = survey_link_for(self._touch_key(step.id, visit, contact))
            variables = template_variables(
                self.pb, self.account, now=self.as_of, enrollment=self.e, contact=contact, step_id=step.id, extra=extra
            )
            address = contact.email if contact else self.account.csm_email
            name = contact.name if contact else self.account.csm_name
            # "Dana Buyer <dana@acme.com>": people see their name, not a bare address
            to = formataddr((name, address)) if address and name else address
            if isinstance(step, EmailStep):
                body_source = self.pb.templates[step.template] if step.template else step.body
                text = render_value(body_source, variables)
                payload = {
                    "kind": "email",
                    "to": to,
                    "subject": render_value(step.subject, variables),
                    "text": text,
                    "html": markdown_to_html(text),
                }
                if step.cc_csm and self.account.csm_email:
                    payload["cc"] = self.account.csm_email
            else:
                question = render_value(step.question, variables) if step.question else _SURVEY_QUESTIONS[step.survey]
                subject = (
                    render_value(step.subject, variables) if step.subject else "A quick question from your account team"
                )
                text = f"{question}\n\n{extra['survey_url']}\n"
                payload = {
                    "kind": "survey",
                    "survey": step.survey,
                    "to": to,
                    "subject": subject,
                    "text": text,
                    "question": question,
                    "survey_url": extra["survey_url"],
                    "html": markdown_to_html(text),
                }
            reason = unsubscribe_reason(contact, payload["kind"]) if contact is not None else None
            if reason is None and not to:
                reason = "no address (the account has no CSM email)" if contact is None else "contact has no email"
            self._touch(step, visit, "email", payload, contact, suppressed=reason)

    def _slack(self, step: SlackStep, visit: int) -> None:
        variables = template_variables(self.pb, self.account, now=self.as_of, enrollment=self.e, step_id=step.id)
        channel = render_value(step.channel, variables) if step.channel else None
        payload = {
            "kind": "slack",
            "channel": channel or f"@{self.account.csm_email}",
            "text": render_value(step.text, variables),
        }
        self._touch(step, visit, "slack", payload)

    def _webhook(self, step: WebhookStep, visit: int) -> None:
        variables = template_variables(self.pb, self.account, now=self.as_of, enrollment=self.e, step_id=step.id)
        payload = {
            "kind": "webhook",
            "url": render_value(step.url, variables),
            "method": step.method,
            "json": render_value(step.payload, variables)
            if step.payload is not None
            else {"account": self.account.external_id, "playbook": self.pb.id, "step": step.id},
            "headers": render_value(step.headers, variables) if step.headers else {},
        }
        self._touch(step, visit, "webhook", payload)

    def _task(self, step: TaskStep, visit: int) -> None:
        variables = template_variables(self.pb, self.account, now=self.as_of, enrollment=self.e, step_id=step.id)
        title = render_value(step.title, variables)
        body = render_value(step.body, variables) if step.body else None
        assignee = render_value(step.assignee, variables) if step.assignee else self.account.csm_email
        due = self.as_of + step.due_in
        task = {
            "account_id": self.account.id,
            "enrollment_id": self.e.id,
            "title": title,
            "body": body,
            "priority": step.priority,
            "assignee": assignee,
            "due_at": due,
            "status": "open",
            "created_at": self.as_of,
        }
        self.s.connection().execute(self.writes.task, task)
        self._timeline("task", f"{step.id}: task for {assignee or 'the CSM'}: {title} (due {due:%Y-%m-%d})", step.id)
        if step.crm:
            payload = {
                "kind": "crm_task",
                "company": self.account.external_id,
                "title": title,
                "body": body,
                "priority": step.priority,
                "due_at": due.isoformat(),
                "assignee": assignee,
            }
            self._touch(step, visit, "crm", payload)

    def _update(self, step: UpdateStep) -> None:
        changes = {}
        custom = dict(self.account.custom or {})
        for name, value in step.set.items():
            if name.startswith("custom."):
                key = name.removeprefix("custom.")
                changes[name] = (custom.get(key), value)
                custom[key] = value
            else:
                changes[name] = (getattr(self.account, name), value)
                setattr(self.account, name, value)
        self.account.custom = custom
        self.account.updated_at = self.as_of
        self.s.add(self.account)
        text = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        self._timeline("update", f"{step.id}: {text}", step.id)

    def _outcome(self, step: OutcomeStep) -> None:
        variables = template_variables(self.pb, self.account, now=self.as_of, enrollment=self.e, step_id=step.id)
        note = render_value(step.note, variables) if step.note else None
        self.s.add(
            Outcome.model_validate(
                {
                    "account_id": self.account.id,
                    "enrollment_id": self.e.id,
                    "playbook": self.pb.id,
                    "kind": step.outcome,
                    "source": "step",
                    "note": note,
                    "occurred_at": self.as_of,
                }
            )
        )
        self._timeline("outcome", f"{step.id}: outcome {step.outcome}" + (f" ({note})" if note else ""), step.id)


_SURVEY_QUESTIONS = {
    "nps": "How likely are you to recommend us to a friend or colleague? (0 = not at all, 10 = extremely likely)",
    "csat": "How satisfied are you with our service? (1 = very unsatisfied, 5 = very satisfied)",
    "ces": "How easy was it to get what you needed from us? (1 = very difficult, 7 = very easy)",
}
