"""Retain's tables (SQLModel). Timestamps are aware UTC; money in revenue rows is integer cents.

Families follow the usual SQLModel shape: ``XBase`` holds the fields a person provides,
``X(XBase, table=True)`` adds keys and bookkeeping. Build rows with ``X.model_validate(...)``.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Table, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from ._types import UTCDateTime, utcnow

#: holdout buckets: an account's bucket is a stable hash of its external id in [0, HOLDOUT_BUCKETS)
HOLDOUT_BUCKETS = 10_000


def holdout_bucket(external_id: str) -> int:
    """A stable, well-mixed bucket for an account; holdout membership is derived from it in SQL."""
    digest = hashlib.sha256(external_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


def table_of(model: type[SQLModel] | SQLModel) -> Table:
    """The SQLAlchemy :class:`~sqlalchemy.Table` of a table model (or of one of its rows).

    SQLModel sets ``__table__`` when a ``table=True`` class is created, where type checkers cannot
    see it; this is the one place that reads it, checked, so callers need no ``type: ignore``.
    """
    cls = model if isinstance(model, type) else type(model)
    table = getattr(cls, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"{cls.__name__} is not a table model (declare it with table=True)")
    return table


def _bucket_default(context: Any) -> int:
    return holdout_bucket(context.get_current_parameters()["external_id"])


__all__ = [
    "HOLDOUT_BUCKETS",
    "Account",
    "AccountBase",
    "AccountStatus",
    "Contact",
    "ContactBase",
    "CsmTask",
    "DataSource",
    "DigestPost",
    "Enrollment",
    "EnrollmentStatus",
    "HealthScore",
    "InboundMessage",
    "Outcome",
    "PlaybookRevision",
    "ProductEvent",
    "ProductUser",
    "ProviderEvent",
    "RevenueEntry",
    "SupportTicket",
    "Suppression",
    "SurveyResponse",
    "SyncCursor",
    "SyncRun",
    "TimelineEvent",
    "Touch",
    "TouchStatus",
    "UsageMetric",
    "holdout_bucket",
    "table_of",
]


def _ts(*, nullable: bool = True, index: bool = False, default: Any = None) -> Any:
    """An aware UTC timestamp column."""
    if default is not None:
        return Field(default_factory=default, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class AccountStatus(StrEnum):
    TRIAL = "trial"
    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CHURNED = "churned"


class AccountBase(SQLModel):
    external_id: str = Field(index=True, unique=True, max_length=200)
    name: str = Field(max_length=300)
    plan: str | None = Field(default=None, max_length=100)
    arr: float = 0.0  # a snapshot for targeting; revenue_entry holds the money, in cents
    mrr: float = 0.0  # the latest judged month's MRR (flows/analytics/state.py), like arr
    currency: str = Field(default="USD", max_length=3)
    status: str = Field(default=AccountStatus.ACTIVE, max_length=20, index=True)
    lifecycle_stage: str | None = Field(default=None, max_length=40)
    segment: str | None = Field(default=None, max_length=60)
    industry: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=2)  # ISO 3166 alpha-2, for holidays
    timezone: str | None = Field(default=None, max_length=64)  # IANA, e.g. Europe/Berlin
    csm_email: str | None = Field(default=None, max_length=320)
    csm_name: str | None = Field(default=None, max_length=200)
    signup_date: date | None = None
    onboarded_at: datetime | None = _ts()
    renewal_date: date | None = Field(default=None, index=True)
    renewed_at: datetime | None = _ts()
    cancelled_at: datetime | None = _ts()  # notice of cancellation given
    churned_at: datetime | None = _ts()
    reactivated_at: datetime | None = _ts()
    expanded_at: datetime | None = _ts()  # the latest expansion read from revenue
    contracted_at: datetime | None = _ts()  # the latest contraction read from revenue
    last_seen_at: datetime | None = _ts()  # the latest product event of any of its users
    health: str | None = Field(default=None, max_length=10)  # green | yellow | red
    health_score: float | None = None  # 0..100
    health_trend: float | None = None  # change of health_score over the last 30 days, in points
    seats: int | None = None
    custom: dict[str, Any] = _json(dict)


class Account(AccountBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    # set on insert from external_id (also for Core bulk inserts), never changed
    holdout_bucket: int = Field(default=None, nullable=False, sa_column_kwargs={"default": _bucket_default})
    created_at: datetime = _ts(nullable=False, default=utcnow)
    #: stamped by every writer that changes the account: enroll reads only accounts changed since
    #: the playbook's last tick (``PlaybookRevision.enrolled_through``), by this index
    updated_at: datetime = _ts(nullable=False, default=utcnow, index=True)


class ContactBase(SQLModel):
    account_id: int = Field(foreign_key="account.id", index=True)
    email: str = Field(max_length=320, index=True)
    name: str | None = Field(default=None, max_length=200)
    role: str | None = Field(default=None, max_length=60)  # champion, admin, billing, user, executive
    title: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    is_primary: bool = False
    unsubscribed: bool = False  # from everything
    unsubscribed_channels: list[str] = _json(list)  # e.g. ["email"], ["survey"]
    unsubscribed_at: datetime | None = _ts()
    preferences: dict[str, Any] = _json(dict)  # channel preferences, language, ...
    slack_user_id: str | None = Field(default=None, max_length=40)


class Contact(ContactBase, table=True):
    __table_args__ = (UniqueConstraint("account_id", "email", name="uq_contact_account_email"),)
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts(nullable=False, default=utcnow)


class UsageMetric(SQLModel, table=True):
    """One measure of product usage for one account on one day (logins, active_users, ...)."""

    __tablename__ = "usage_metric"
    __table_args__ = (UniqueConstraint("account_id", "metric", "day", name="uq_usage_account_metric_day"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    metric: str = Field(max_length=60)
    day: date
    value: float


class SupportTicket(SQLModel, table=True):
    __tablename__ = "support_ticket"
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    external_id: str | None = Field(default=None, max_length=200)
    subject: str = Field(max_length=500)
    status: str = Field(default="open", max_length=20)  # open | pending | solved
    priority: str = Field(default="normal", max_length=20)
    opened_at: datetime = _ts(nullable=False, default=utcnow)
    closed_at: datetime | None = _ts()
    satisfaction: int | None = None  # the requester's rating once solved (CSAT 1-5)


class ProductEvent(SQLModel, table=True):
    """One product event in the Segment spec (``track``, ``identify``, ``group``), kept once by its
    ``message_id``; ``account_id`` is the account its user belongs to (from ``group``), if known."""

    __tablename__ = "product_event"
    __table_args__ = (Index("ix_product_event_account_name_at", "account_id", "name", "occurred_at"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=200, unique=True)
    type: str = Field(max_length=10)  # track | identify | group
    name: str | None = Field(default=None, max_length=200)  # track's event name
    user_id: str | None = Field(default=None, max_length=200)
    account_id: int | None = Field(default=None, foreign_key="account.id")
    occurred_at: datetime = _ts(nullable=False)
    properties: dict[str, Any] = _json(dict)  # track's properties, identify's or group's traits


class ProductUser(SQLModel, table=True):
    """A user of the product as the events name it: ``group`` ties it to an account, ``identify``
    gives its traits (email, name)."""

    __tablename__ = "product_user"
    user_id: str = Field(primary_key=True, max_length=200)
    account_id: int | None = Field(default=None, foreign_key="account.id", index=True)
    email: str | None = Field(default=None, max_length=320)
    traits: dict[str, Any] = _json(dict)
    first_seen_at: datetime | None = _ts()
    last_seen_at: datetime | None = _ts()


class SurveyResponse(SQLModel, table=True):
    """An answer to an NPS (0-10), CSAT (1-5) or CES (1-7) survey."""

    __tablename__ = "survey_response"
    __table_args__ = (
        Index("ix_survey_account_kind_at", "account_id", "kind", "responded_at"),
        # one answer per survey sent: a second through its link updates it, even two at once
        Index("uq_survey_response_touch", "touch_id", unique=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    contact_id: int | None = Field(default=None, foreign_key="contact.id")
    touch_id: int | None = Field(default=None, foreign_key="touch.id")
    kind: str = Field(max_length=10)  # nps | csat | ces
    score: int
    comment: str | None = None
    responded_at: datetime = _ts(nullable=False, default=utcnow)


class RevenueEntry(SQLModel, table=True):
    """Recurring revenue of one account (and product) for one month, in integer cents."""

    __tablename__ = "revenue_entry"
    __table_args__ = (UniqueConstraint("account_id", "period", "product", name="uq_revenue_account_period_product"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    period: date  # first day of the month
    product: str = Field(default="", max_length=100)
    mrr_cents: int = Field(sa_type=BigInteger)
    currency: str = Field(default="USD", max_length=3)


class PlaybookRevision(SQLModel, table=True):
    """The exact source of every playbook revision that enrolled someone.

    Enrollments are pinned to a revision; the engine compiles their steps from this stored source,
    so editing the YAML never moves people already in flight.
    """

    __tablename__ = "playbook_revision"
    playbook: str = Field(primary_key=True, max_length=100)
    revision: str = Field(primary_key=True, max_length=64)
    source: str
    templates: dict[str, str] = _json(dict)  # template path -> source, as of this revision
    path: str | None = None
    created_at: datetime = _ts(nullable=False, default=utcnow)
    #: enroll's cursor for this revision: every account up to this id, and every account changed
    #: before this moment, was looked at by a tick (flows/engine/enroll.py reads only the others)
    enrolled_through: datetime | None = _ts()
    enrolled_through_id: int | None = None


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"  # reached the goal or the end of its steps
    EXITED = "exited"  # exit_when, an exit step, or the goal window passed


class Enrollment(SQLModel, table=True):
    """One account's passage through one playbook. Waits are ``next_due_at``, never a process."""

    __table_args__ = (
        # at most one active enrollment per playbook and account
        Index(
            "uq_enrollment_active",
            "playbook",
            "account_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_enrollment_due", "playbook", "status", "next_due_at"),
        # a tick's reads, each by an index (tests/flows/test_tick_plans.py): the anti-join of
        # enroll, the enrollments it just made, the revisions in flight, the holdouts to end
        Index("ix_enrollment_playbook_account", "playbook", "account_id"),
        Index("ix_enrollment_started", "playbook", "started_at"),
        Index("ix_enrollment_revision", "playbook", "revision", "status"),
        Index("ix_enrollment_holdout", "playbook", "status", "holdout", "started_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    playbook: str = Field(max_length=100)
    revision: str = Field(max_length=64)
    account_id: int = Field(foreign_key="account.id", index=True)
    status: str = Field(default=EnrollmentStatus.ACTIVE, max_length=20)
    holdout: bool = False
    step_id: str | None = Field(default=None, max_length=100)  # the step to run next
    next_due_at: datetime | None = _ts()
    started_at: datetime = _ts(nullable=False, default=utcnow)
    ended_at: datetime | None = _ts()
    outcome: str | None = Field(default=None, max_length=40)
    source: str = Field(default="schedule", max_length=20)  # schedule | play | event
    #: the product event that started it (``entry.on_event``): each event enrolls at most once
    trigger_event_id: int | None = Field(default=None, foreign_key="product_event.id", index=True)
    state: dict[str, Any] = _json(dict)  # step bookkeeping (wait_for start times, visits)
    claimed_by: str | None = Field(default=None, max_length=100)
    claimed_until: datetime | None = _ts()


class TouchStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"  # a crash during a send through a channel that cannot dedupe
    DROPPED = "dropped"  # an unknown touch a person decided not to send (retain outbox resolve --drop)
    DRAFT = "draft"  # waits for a person's approval (``approve:``): the outbox does not deliver it
    REJECTED = "rejected"  # a draft a person rejected, or skipped at its approval deadline


class Touch(SQLModel, table=True):
    """One side effect, written before it happens (the outbox). ``key`` makes it happen once."""

    __table_args__ = (
        Index("ix_touch_status_not_before", "status", "not_before"),
        # a reply names the message it answers by its Message-ID, which an email touch keeps here
        Index("ix_touch_provider_id", "provider_id"),
        Index("ix_touch_playbook_created", "playbook", "created_at"),  # the touches a tick just wrote
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=200, unique=True)
    enrollment_id: int | None = Field(default=None, foreign_key="enrollment.id", index=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True)
    playbook: str | None = Field(default=None, max_length=100)
    revision: str | None = Field(default=None, max_length=64)
    step_id: str | None = Field(default=None, max_length=100)
    channel: str = Field(max_length=30)
    priority: int = 50  # the playbook's priority: who goes first when a contact's touch cap binds
    status: str = Field(default=TouchStatus.PENDING, max_length=20)
    payload: dict[str, Any] = _json(dict)  # the rendered message; never secrets
    reason: str | None = None  # why suppressed, deferred or failed
    attempts: int = 0
    not_before: datetime | None = _ts()  # deferred by the contact policy until then
    #: the receiver asked not to be asked again before then (Retry-After, back-off): wall clock
    retry_not_before: datetime | None = _ts()
    lease_until: datetime | None = _ts()
    claimed_by: str | None = Field(default=None, max_length=200)  # the delivery run holding the lease
    provider_id: str | None = Field(default=None, max_length=300)
    created_at: datetime = _ts(nullable=False, default=utcnow)
    sent_at: datetime | None = _ts()
    delivered_at: datetime | None = _ts()
    replied_at: datetime | None = _ts()
    opened_at: datetime | None = _ts()
    # approval (a step's ``approve:``): who may approve the draft, by when, and what happens then
    approver: str | None = Field(default=None, max_length=320)
    approve_by: datetime | None = _ts()
    on_deadline: str | None = Field(default=None, max_length=10)  # send | skip | escalate
    decided_by: str | None = Field(default=None, max_length=320)
    decided_at: datetime | None = _ts()
    draft: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))  # before an edit
    clicked_at: datetime | None = _ts()  # the email provider's first click event
    bounced_at: datetime | None = _ts()  # a bounce the provider reported (hard or soft)
    complained_at: datetime | None = _ts()  # the recipient marked it as spam


class Outcome(SQLModel, table=True):
    """Something that happened to an account that CS is measured by."""

    __table_args__ = (
        # a detected outcome is recorded once per account and attributed enrollment, whoever runs
        # the detection and however often (NULL enrollment counted as one value, hence coalesce)
        Index("uq_outcome_key", "account_id", "key", text("coalesce(enrollment_id, 0)"), unique=True),
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    enrollment_id: int | None = Field(default=None, foreign_key="enrollment.id", index=True)
    playbook: str | None = Field(default=None, max_length=100)
    kind: str = Field(max_length=40)  # renewed, churned, expanded, contracted, won_back, onboarded, ...
    source: str = Field(default="manual", max_length=20)  # goal | step | revenue | manual
    arr_delta_cents: int | None = Field(default=None, sa_type=BigInteger)
    note: str | None = None
    recorded_by: str | None = Field(default=None, max_length=320)
    occurred_at: datetime = _ts(nullable=False, default=utcnow)
    #: what detected it, e.g. ``revenue:renewed:2027-03`` (revenue outcomes); None for a person's
    key: str | None = Field(default=None, max_length=120)


class TaskStatus(StrEnum):
    OPEN = "open"
    DONE = "done"  # a person (or the CRM) completed it
    CLOSED = "closed"  # closed without being done: its enrollment ended (``closed_reason`` says how)


class CsmTask(SQLModel, table=True):
    """A to-do for the account's CSM (a "CTA"), optionally mirrored in the CRM."""

    __tablename__ = "csm_task"
    __table_args__ = (
        Index("ix_csm_task_assignee_status", "assignee", "status"),
        Index("ix_csm_task_enrollment_step", "enrollment_id", "step_id"),
        Index("ix_csm_task_open", "status", "keep_open"),  # a tick closes the open tasks of ended enrollments
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    enrollment_id: int | None = Field(default=None, foreign_key="enrollment.id")
    touch_id: int | None = Field(default=None, foreign_key="touch.id")  # the touch that creates it in the CRM
    playbook: str | None = Field(default=None, max_length=100)
    step_id: str | None = Field(default=None, max_length=100)  # the task step that made it: task("<step>")
    title: str = Field(max_length=500)
    body: str | None = None
    priority: str = Field(default="normal", max_length=10)  # low | normal | high
    assignee: str | None = Field(default=None, max_length=320)
    status: str = Field(default=TaskStatus.OPEN, max_length=10)  # open | done | closed
    due_at: datetime | None = _ts()
    snoozed_until: datetime | None = _ts()  # out of the CSM's list until then
    keep_open: bool = False  # stays open when its enrollment ends (the task step's keep_open)
    notes: list[dict[str, Any]] = _json(list)  # [{at, by, text}]
    external_id: str | None = Field(default=None, max_length=200)  # the CRM's id
    created_at: datetime = _ts(nullable=False, default=utcnow)
    updated_at: datetime | None = _ts()
    completed_at: datetime | None = _ts()
    closed_by: str | None = Field(default=None, max_length=320)  # who completed or closed it (crm, retain)
    closed_reason: str | None = None


class HealthScore(SQLModel, table=True):
    """One computed health score of an account, kept as history (the latest is on the account)."""

    __tablename__ = "health_score"
    __table_args__ = (Index("ix_health_account_at", "account_id", "scored_at"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    scored_at: datetime = _ts(nullable=False, default=utcnow)
    score: float  # 0..100
    band: str = Field(max_length=10)  # green | yellow | red
    trend: float | None = None  # change against the score 30 days before
    components: dict[str, Any] = _json(dict)  # measure -> {value, points, weight}


class Suppression(SQLModel, table=True):
    """An address that must not be contacted (on some channels, or at all), kept even when no
    contact has it yet: a contact imported later with this address is unsubscribed at once."""

    email: str = Field(primary_key=True, max_length=320)  # lower case
    channels: list[str] = _json(list)  # e.g. ["survey"]; empty: everything
    reason: str | None = None
    source: str = Field(default="manual", max_length=30)  # manual | list | link
    created_at: datetime = _ts(nullable=False, default=utcnow)


class DigestPost(SQLModel, table=True):
    """The weekly digest, posted once per week and destination: ``sending`` just before it
    leaves, then ``posted`` (or ``failed``). The key is the primary key, so two posters on two
    machines cannot both post it."""

    __tablename__ = "digest_post"
    key: str = Field(primary_key=True, max_length=400)  # weekly:<YYYY-Www>:<channel>[:<to>]
    channel: str = Field(max_length=30)
    status: str = Field(max_length=20)  # sending | posted | failed
    provider_id: str | None = Field(default=None, max_length=300)
    detail: str | None = None
    started_at: datetime = _ts(nullable=False, default=utcnow)
    finished_at: datetime | None = _ts()


class DataSource(SQLModel, table=True):
    """A source of dated data (``revenue``, ...) and the date its data runs through: nothing after
    it is read as churn or silence."""

    __tablename__ = "data_source"
    name: str = Field(primary_key=True, max_length=40)
    data_through: date
    updated_at: datetime = _ts(nullable=False, default=utcnow)


class SyncCursor(SQLModel, table=True):
    """Where a source's sync stands: the cursor of its last committed batch. Any source writes here
    (a SQL source, a vendor connector, a mailbox), under its own name; the next run goes on from it."""

    __tablename__ = "sync_cursor"
    source: str = Field(primary_key=True, max_length=100)
    kind: str = Field(max_length=40)  # accounts, revenue, stripe, imap, ...
    cursor: str | None = None  # as text (ISO 8601 for moments); None: from the start
    cursor_type: str = Field(default="text", max_length=20)  # int, float, decimal, datetime, date, text
    updated_at: datetime = _ts(nullable=False, default=utcnow)


class SyncRun(SQLModel, table=True):
    """One run of one source's sync (``retain sync status`` reads these): when, from which cursor to
    which, rows taken in and refused, and why it stopped if it did."""

    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_source_started", "source", "started_at"),)
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=100)
    kind: str = Field(max_length=40)
    started_at: datetime = _ts(nullable=False, default=utcnow)
    finished_at: datetime | None = _ts()
    status: str = Field(default="running", max_length=20)  # running | ok | refused | failed
    cursor_before: str | None = None
    cursor_after: str | None = None
    rows_in: int = 0  # rows written in committed batches
    rows_refused: int = 0  # rows of the batch that was refused (nothing of it written)
    message: str | None = None  # why the run stopped: the refusal or the failure, for a person
    problems: list[str] = _json(list)  # the refused rows' problems, as located lines (at most 100)


class InboundMessage(SQLModel, table=True):
    """A message from a mailbox that answered a touch: a reply or an automatic reply (out of office,
    ``Auto-Submitted``). Its Message-ID is unique, so a message is processed once whatever the
    mailbox's cursor says (a folder rebuilt with a new UIDVALIDITY, two pollers)."""

    __tablename__ = "inbound_message"
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=300, unique=True)
    mailbox: str = Field(max_length=400)
    uid: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=20)  # reply | auto_reply
    reason: str | None = Field(default=None, max_length=200)  # why it is an automatic reply
    touch_id: int = Field(foreign_key="touch.id", index=True)
    from_address: str | None = Field(default=None, max_length=320)
    subject: str | None = Field(default=None, max_length=500)
    received_at: datetime = _ts(nullable=False)
    processed_at: datetime = _ts(nullable=False, default=utcnow)


class ProviderEvent(SQLModel, table=True):
    """An email provider's event about a message (delivered, opened, clicked, bounced, complained,
    replied), kept once by the provider's event id: a webhook delivered twice changes nothing."""

    __tablename__ = "provider_event"
    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_provider_event"),)
    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(max_length=30)  # generic | sendgrid
    event_id: str = Field(max_length=200)
    kind: str = Field(max_length=20)  # delivered | opened | clicked | bounced | complained | replied
    touch_id: int | None = Field(default=None, foreign_key="touch.id", index=True)  # None: not Retain's
    email: str | None = Field(default=None, max_length=320)
    occurred_at: datetime = _ts(nullable=False)
    received_at: datetime = _ts(nullable=False, default=utcnow)
    detail: dict[str, Any] = _json(dict)  # bounce type, reason, url ...


class TimelineEvent(SQLModel, table=True):
    """One line of an account's story: enrolled, a step, a touch, a suppression, an outcome."""

    __tablename__ = "timeline_event"
    __table_args__ = (
        Index("ix_timeline_account_at", "account_id", "at"),
        Index("ix_timeline_enrollment", "enrollment_id"),  # "is this enrollment's line written?"
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    at: datetime = _ts(nullable=False, default=utcnow)
    kind: str = Field(max_length=30)
    playbook: str | None = Field(default=None, max_length=100)
    enrollment_id: int | None = Field(default=None, foreign_key="enrollment.id")
    step_id: str | None = Field(default=None, max_length=100)
    summary: str
    detail: dict[str, Any] = _json(dict)
