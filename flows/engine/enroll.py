"""Enroll: every newly eligible account in ONE ``INSERT … SELECT`` (the audience compiled to SQL, the
re-entry rule, holdout by a stable hash), each new enrollment recorded in the timeline.

A playbook with ``entry.on_event`` enrolls only accounts with a matching event not yet used by
it: the same one statement picks each account's earliest such event (recorded as the
enrollment's ``trigger_event_id``), so events are read set-based at the tick, never a run per event.

A tick's cost follows what changed, not the book's size: when only a change to an account's own row
can bring it into the audience (the audience reads the account alone and not the clock, an account
enters once, no ``on_event``), a tick reads only the accounts added or changed since this revision's
previous tick (``PlaybookRevision.enrolled_through``, by the indexes on ``account.id`` and
``account.updated_at``); otherwise every account is read, set-based, in the one statement."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    case,
    cast,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.selectable import AliasedReturnsRows, SelectBase, TableClause
from sqlalchemy.sql.visitors import iterate
from sqlmodel import Session

from flows.engine._sql import insert_ignore
from flows.engine.revisions import holdout_salt, today_in
from models import (
    Account,
    Enrollment,
    EnrollmentStatus,
    PlaybookRevision,
    ProductEvent,
    TimelineEvent,
    execute,
    table_of,
)
from models.playbook import reentry_after
from models.tables import HOLDOUT_BUCKETS
from playbooks import AUDIENCE, EVENT, CompiledPlaybook, clause_columns, clause_sql, json_bool, json_object, to_sql

__all__ = ["LOOK_BACK", "enroll"]

#: how long before the previous tick's moment a tick looks again at changed accounts: a change
#: stamped a little before that tick but committed after it is not missed
LOOK_BACK = timedelta(days=1)


def enroll(
    s: Session,
    pb: CompiledPlaybook,
    as_of: datetime,
    *,
    source: str = "schedule",
    only: ColumnElement[bool] | None = None,
) -> tuple[int, int]:
    """Enroll every account that matches the audience and may (re-)enter. Returns (enrolled, holdout).

    ``only`` narrows the accounts further (a simulation over a past window passes the accounts that
    existed then)."""
    enr, acct = table_of(Enrollment), table_of(Account)
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
    trigger = _trigger(pb, as_of, today)
    # a simulation's narrower set of accounts (``only``) neither uses nor moves the cursor
    candidates = _candidates(s, pb, as_of, today, audience) if only is None else None
    top = execute(s, select(func.max(acct.c.id))).scalar()  # before the statement: a later account is read later
    chosen = select(
        literal(pb.id),
        literal(pb.revision),
        acct.c.id,
        literal(EnrollmentStatus.ACTIVE.value),
        in_holdout,
        # holdout enrollments never run steps
        case((in_holdout, cast(null(), enr.c.step_id.type)), else_=literal(first_step)),
        case((in_holdout, cast(null(), enr.c.next_due_at.type)), else_=literal(as_of, type_=enr.c.next_due_at.type)),
        literal(as_of, type_=enr.c.started_at.type),
        literal(source),
        literal({}, type_=enr.c.state.type),
        trigger if trigger is not None else cast(null(), enr.c.trigger_event_id.type),  # typed: PostgreSQL
    ).where(
        audience,
        ~blocked,
        *([trigger.is_not(None)] if trigger is not None else []),
        *([only] if only is not None else []),
        *(candidates or []),
    )
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
        "trigger_event_id",
    ]
    stmt = insert_ignore(s, enr).from_select(columns, chosen)
    if s.get_bind().dialect.name == "postgresql":
        enrolled, holdouts = _enroll_with_lines(s, pb, as_of, today, source, stmt)
    else:
        execute(s, stmt)
        enrolled, holdouts = _write_timeline(s, pb, as_of, today, source)
    if candidates is not None and top is not None:
        rev = table_of(PlaybookRevision)
        s.exec(
            update(rev)
            .where(rev.c.playbook == pb.id, rev.c.revision == pb.revision)
            .values(enrolled_through=as_of, enrolled_through_id=top)
        )
    return enrolled, holdouts


def _write_timeline(s: Session, pb: CompiledPlaybook, as_of: datetime, today: date, source: str) -> tuple[int, int]:
    """(SQLite, after the enrollments' ``INSERT … SELECT``.) The timeline line of each enrollment
    this tick made, in one more ``INSERT … SELECT``: the enrollments of this playbook started at
    ``as_of`` by ``source`` that have no line yet (the index on ``timeline_event.enrollment_id``
    answers that). Returns (enrolled, holdout)."""
    enr, tl = table_of(Enrollment), table_of(TimelineEvent)
    new = (
        select(enr.c.id, enr.c.account_id, enr.c.holdout)
        .where(
            enr.c.playbook == pb.id,
            enr.c.started_at == as_of,
            enr.c.source == source,
            ~exists(select(tl.c.id).where(tl.c.enrollment_id == enr.c.id, tl.c.kind == "enrolled")),
        )
        .subquery("new_enrollment")
    )
    counted = execute(s, _counts(new)).one()
    if counted[0]:
        execute(s, _lines(pb, as_of, today, source, new, "sqlite"))
    return int(counted[0]), int(counted[1])


def _enroll_with_lines(
    s: Session, pb: CompiledPlaybook, as_of: datetime, today: date, source: str, stmt: Any
) -> tuple[int, int]:
    """(PostgreSQL.) The enrollments' ``INSERT … SELECT`` and their timeline lines in ONE statement:
    the lines are written from the rows the insert returns (``WITH new AS (INSERT … RETURNING …)
    INSERT INTO timeline_event …``), so they are exactly this statement's enrollments, those of a
    worker enrolling in parallel excepted, with no anti-join over the timeline: its plan cannot go
    wrong on a freshly filled table whose statistics still say it is empty (an anti-join then read
    the whole growing timeline once per new enrollment). Returns (enrolled, holdout)."""
    enr = table_of(Enrollment)
    new = stmt.returning(enr.c.id, enr.c.account_id, enr.c.holdout).cte("new_enrollment")
    lines = _lines(pb, as_of, today, source, new, "postgresql").cte("new_line")
    row = execute(s, _counts(new).add_cte(lines)).one()
    return int(row[0]), int(row[1])


def _counts(new: Any) -> Any:
    """How many enrollments ``new`` holds, and how many of them are holdout."""
    holdout = func.coalesce(func.sum(case((new.c.holdout == true(), 1), else_=0)), 0)
    return select(func.count(), holdout).select_from(new)


def _lines(pb: CompiledPlaybook, as_of: datetime, today: date, source: str, new: Any, dialect: str) -> Any:
    """``INSERT INTO timeline_event … SELECT`` the line of each enrollment in ``new`` (its ``id``,
    ``account_id`` and ``holdout``), saying why it entered: every clause of the audience and the
    values it read, made by the database (no row passes through Python)."""
    acct, tl = table_of(Account), table_of(TimelineEvent)
    audience = pb.expression("audience")
    why = clause_columns(audience, now=as_of, today=today)
    read = (
        select(new.c.id, new.c.account_id, new.c.holdout, *(column.label(name) for name, column in why))
        .select_from(new.join(acct, acct.c.id == new.c.account_id))
        .subquery("why")
    )
    said, clauses_json = clause_sql(audience, read.c, dialect)
    summary = (
        literal(f"enrolled in {pb.spec.name}", String())
        .concat(case((read.c.holdout == true(), " (holdout: never contacted)"), else_=""))
        .concat(literal(": ", String()))
        .concat(said)
    )
    detail = json_object(
        dialect,
        {
            "revision": cast(literal(pb.revision, String()), String()),
            "holdout": json_bool(read.c.holdout, dialect),
            "source": cast(literal(source, String()), String()),
            "audience": clauses_json,
        },
    )
    return insert(tl).from_select(
        ["account_id", "enrollment_id", "playbook", "at", "kind", "summary", "detail"],
        select(
            read.c.account_id,
            read.c.id,
            cast(literal(pb.id, String()), String()),
            literal(as_of, type_=tl.c.at.type),
            cast(literal("enrolled", String()), String()),
            summary,
            detail,
        ),
    )


def _candidates(
    s: Session, pb: CompiledPlaybook, as_of: datetime, today: date, audience: ColumnElement[Any]
) -> list[ColumnElement[bool]] | None:
    """The condition that limits enroll to the accounts added or changed since this revision's
    previous tick ([] for a first tick, a tick back in time, or one after a long gap: every
    account), or None when anything but a change of the account's own row can bring it into the
    audience (the clock, other tables, re-entry, events): then every account is read."""
    if not _only_account_changes(pb, as_of, today, audience, s.get_bind().dialect):
        return None
    rev, acct = table_of(PlaybookRevision), table_of(Account)
    cursor = execute(
        s,
        select(rev.c.enrolled_through, rev.c.enrolled_through_id).where(
            rev.c.playbook == pb.id, rev.c.revision == pb.revision
        ),
    ).first()
    if cursor is None or cursor[0] is None or cursor[1] is None or cursor[0] > as_of:
        return []
    changed = acct.alias("account_changed")  # an alias: not correlated with the enclosing read of account
    added = select(changed.c.id).where(changed.c.id > cursor[1])
    return [acct.c.id.in_(added.union(select(changed.c.id).where(changed.c.updated_at >= cursor[0] - LOOK_BACK)))]


def _only_account_changes(
    pb: CompiledPlaybook, as_of: datetime, today: date, audience: ColumnElement[Any], dialect: Dialect
) -> bool:
    """True when only a change to an account's own row can bring it into the audience: it enters
    once (no re-entry, no events), and the audience reads no other table and not the clock."""
    if pb.spec.entry.on_event is not None or reentry_after(pb.spec.entry.reentry) is not None:
        return False
    for element in iterate(audience):
        if isinstance(element, SelectBase | AliasedReturnsRows):
            return False
        if isinstance(element, TableClause) and element.name != "account":
            return False
        table = getattr(element, "table", None) if isinstance(element, ColumnClause) else None
        if table is not None and getattr(table, "name", None) != "account":
            return False
    # the clock: the same audience compiled for a moment years away must be the very same statement
    later = to_sql(
        pb.expression("audience"), AUDIENCE, now=as_of + timedelta(days=3000), today=today + timedelta(days=3000)
    )
    now_sql, later_sql = audience.compile(dialect=dialect), later.compile(dialect=dialect)
    return str(now_sql) == str(later_sql) and now_sql.params == later_sql.params


def _trigger(pb: CompiledPlaybook, as_of: datetime, today: date) -> Any:
    """The id of the account's earliest event that may enroll it (``entry.on_event``), as a
    correlated subquery; None when the playbook does not enter on events."""
    on_event = pb.spec.entry.on_event
    if on_event is None:
        return None
    ev, enr, acct = table_of(ProductEvent), table_of(Enrollment), table_of(Account)
    used = select(enr.c.id).where(enr.c.playbook == pb.id, enr.c.trigger_event_id == ev.c.id)
    conditions = [
        ev.c.account_id == acct.c.id,
        ev.c.type == "track",
        ev.c.name == on_event.track,
        ev.c.occurred_at <= as_of,
        ev.c.occurred_at > as_of - on_event.within,
        ~exists(used),
    ]
    if on_event.when is not None:
        conditions.append(to_sql(pb.expression("entry", "on_event", "when"), EVENT, now=as_of, today=today))
    return select(func.min(ev.c.id)).where(*conditions).scalar_subquery()
