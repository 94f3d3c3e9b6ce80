"""One enrollment's wake-up: goal and exit first, then its steps until a wait or the end.

Each step kind is run by its handler in :mod:`flows.engine.steps`; this module holds what every
handler shares (the enrollment's state, the timeline, touches written to the outbox, moving on).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session

from flows.engine._sql import insert_ignore
from flows.engine.render import template_variables
from flows.engine.revisions import today_in
from flows.engine.steps import HANDLERS
from integrations.links import LinkConfig
from models import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    EnrollmentStatus,
    Outcome,
    RetainError,
    TimelineEvent,
    Touch,
    TouchStatus,
    table_of,
)
from models.playbook import Step
from playbooks import CompiledPlaybook, env_for, evaluate

if TYPE_CHECKING:
    from flows.engine.advance import AdvanceResult

__all__ = ["MAX_STEPS_PER_WAKE", "Wake", "Writes"]

MAX_STEPS_PER_WAKE = 200  # a guard: validation already refuses loops without a wait


class Writes:
    """A batch's inserts through Core statements compiled once (the ORM's per-row overhead was most
    of a wake-up's cost); touches and timeline rows are kept and written in one executemany each
    (touches before anything reads the database again, so a step sees the touches before it)."""

    def __init__(self, s: Session) -> None:
        self.s = s
        self.touch = insert_ignore(s, table_of(Touch))
        self.task = insert(table_of(CsmTask))
        self.touches: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self._links: LinkConfig | None = None

    @property
    def links(self) -> LinkConfig:
        """Where the links in emails point and how they are signed, read from the environment
        once per batch (it was read for every email)."""
        if self._links is None:
            self._links = LinkConfig.from_environment()
        return self._links

    def flush_touches(self) -> None:
        if self.touches:
            self.s.connection().execute(self.touch, self.touches)
            self.touches = []

    def flush_timeline(self) -> None:
        if self.timeline:
            self.s.connection().execute(insert(table_of(TimelineEvent)), self.timeline)
            self.timeline = []


def _copied(value: Any) -> Any:
    """A deep copy of JSON-shaped data (what an enrollment's state holds) without
    :func:`copy.deepcopy`'s generic machinery; anything else is deep-copied as before."""
    kind = type(value)
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is list:
        return [_copied(v) for v in value]
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    return copy.deepcopy(value)


class Wake:
    """One enrollment's wake-up, and what step handlers may do to it."""

    def __init__(
        self,
        s: Session,
        pb: CompiledPlaybook,
        enrollment: Enrollment,
        account: Account,
        contacts: list[Contact],
        as_of: datetime,
        result: AdvanceResult,
        writes: Writes | None = None,
    ) -> None:
        self.s, self.pb, self.enrollment, self.account, self.contacts = s, pb, enrollment, account, contacts
        self.as_of, self.result = as_of, result
        self.writes = writes or Writes(s)
        self.timeline: list[dict[str, Any]] = []  # this wake-up's timeline rows (written with the batch)
        self.today = today_in(pb, as_of)
        self.state: dict[str, Any] = dict(enrollment.state or {})

    # -- reading --
    def env(self, contact: Contact | None = None) -> Any:
        """The expression environment for this enrollment (and one of its contacts)."""
        self.writes.flush_touches()  # its lookups may read the touches written before
        return env_for(
            self.s, self.account, now=self.as_of, today=self.today, contact=contact, enrollment=self.enrollment
        )

    def holds(self, expr: Any, contact: Contact | None = None) -> bool:
        return evaluate(expr, self.env(contact)) is True

    def variables(
        self, step_id: str, contact: Contact | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The template variables of a step's message."""
        return template_variables(
            self.pb,
            self.account,
            now=self.as_of,
            enrollment=self.enrollment,
            contact=contact,
            step_id=step_id,
            extra=extra,
        )

    def zone(self) -> str:
        """The time zone of "local" times: the account's, else the playbook's schedule's, else UTC."""
        return self.account.timezone or (self.pb.spec.schedule.timezone if self.pb.spec.schedule else "UTC")

    def next_of(self, step_id: str) -> str | None:
        """The id of the step written after ``step_id`` (None: it was the last)."""
        i = self.pb.step_index(step_id)
        return self.pb.spec.steps[i + 1].id if i + 1 < len(self.pb.spec.steps) else None

    # -- writing --
    def record(self, kind: str, summary: str, step_id: str | None = None, **detail: Any) -> None:
        """A timeline row for this enrollment."""
        self.timeline.append(
            {
                "account_id": self.account.id,
                "enrollment_id": self.enrollment.id,
                "playbook": self.pb.id,
                "step_id": step_id,
                "at": self.as_of,
                "kind": kind,
                "summary": summary,
                "detail": detail,
            }
        )

    def save(self) -> None:
        """Write the state explicitly. The row gets a copy: were it given ``self.state`` itself, a
        flush (any query that reads data autoflushes) would make the session's "unchanged" value
        that very dict, later changes to it would compare equal, and they would never be written."""
        self.enrollment.state = _copied(self.state)
        flag_modified(self.enrollment, "state")
        if self.enrollment not in self.s:  # adding a row the session holds already walks its relations
            self.s.add(self.enrollment)

    def goto(self, step_id: str | None) -> None:
        """Run ``step_id`` next, in this wake-up (None: the steps are done)."""
        self.enrollment.step_id = step_id
        self.enrollment.next_due_at = self.as_of

    def sleep(self, until: datetime, why: str, step_id: str) -> None:
        """Wake up again at ``until``: a due time on the enrollment, never a sleeping process."""
        self.enrollment.next_due_at = until
        self.record("wait", f"waiting until {until:%Y-%m-%d %H:%M} UTC: {why}", step_id, until=until.isoformat())
        self.save()

    def end(self, status: str, outcome: str | None, reason: str, *, record_outcome: bool = False) -> None:
        e = self.enrollment
        e.status, e.outcome, e.ended_at = status, outcome, self.as_of
        e.next_due_at, e.step_id = None, None
        if record_outcome and outcome:
            self.s.add(
                Outcome.model_validate(
                    {
                        "account_id": self.account.id,
                        "enrollment_id": e.id,
                        "playbook": self.pb.id,
                        "kind": outcome,
                        "source": "goal" if reason.startswith("goal") else "step",
                        "occurred_at": self.as_of,
                    }
                )
            )
        self.record(status, f"{status}: {reason}", outcome=outcome)
        self.result.ended[outcome or status] += 1
        self.save()

    def visit(self, step_id: str) -> int:
        """Count one more visit of ``step_id`` (a loop may come back): part of its touches' keys."""
        visits = dict(self.state.get("visits", {}))
        count = int(visits.get(step_id, 0)) + 1
        visits[step_id] = count
        self.state["visits"] = visits
        return count

    def touch_key(self, step_id: str, visit: int, contact: Contact | None) -> str:
        """The touch's unique key: playbook, enrollment, step, visit and contact."""
        return f"{self.pb.id}:{self.enrollment.id}:{step_id}:{visit}" + (f":{contact.id}" if contact else "")

    def touch(
        self,
        step_id: str,
        visit: int,
        channel: str,
        payload: dict[str, Any],
        contact: Contact | None = None,
        *,
        suppressed: str | None = None,
        approval: dict[str, Any] | None = None,
    ) -> str:
        """A side effect written to the outbox (delivered later by ``flows.engine.outbox``); its key.

        ``approval`` (``approver``, ``approve_by``, ``on_deadline``) makes it a draft that waits for
        a person's approval: the outbox delivers only what is pending."""
        key = self.touch_key(step_id, visit, contact)
        values = {
            "key": key,
            "enrollment_id": self.enrollment.id,
            "account_id": self.account.id,
            "contact_id": contact.id if contact else None,
            "playbook": self.pb.id,
            "revision": self.pb.revision,
            "step_id": step_id,
            "channel": channel,
            "priority": self.pb.spec.effective_priority,
            "status": TouchStatus.SUPPRESSED
            if suppressed
            else TouchStatus.DRAFT
            if approval is not None
            else TouchStatus.PENDING,
            "reason": suppressed,
            "payload": payload,
            "created_at": self.as_of,
            "approver": None,
            "approve_by": None,
            "on_deadline": None,
            **(approval if approval is not None and not suppressed else {}),
        }
        self.writes.touches.append(values)
        self.result.touches[f"{channel}:{values['status']}"] += 1
        who = contact.email if contact else payload.get("channel") or channel  # a Slack post names its channel
        if suppressed:
            self.record("suppressed", f"{step_id}: {channel} to {who} suppressed: {suppressed}", step_id, key=key)
        elif approval is not None:
            deadline = values["approve_by"]
            by = f" by {deadline:%Y-%m-%d %H:%M} UTC (then: {values['on_deadline']})" if deadline else ""
            self.record(
                "draft",
                f"{step_id}: {channel} to {who} drafted, waiting for approval by {values['approver']}{by}",
                step_id,
                key=key,
            )
        else:
            self.record("touch", f"{step_id}: {channel} to {who} queued", step_id, key=key)
        return key

    # -- the loop --
    def run(self) -> None:
        """Steps until a wait or the end; the goal and ``exit_when`` are checked before each one."""
        spec = self.pb.spec
        for _ in range(MAX_STEPS_PER_WAKE):
            if self.enrollment.status != EnrollmentStatus.ACTIVE:
                return
            if spec.goal is not None and self.holds(self.pb.expression("goal", "when")):
                self.end(
                    EnrollmentStatus.COMPLETED,
                    spec.goal.outcome,
                    f"goal reached: {spec.goal.when}",
                    record_outcome=True,
                )
                return
            if spec.exit_when is not None and self.holds(self.pb.expression("exit_when")):
                self.end(EnrollmentStatus.EXITED, "exited", f"exit condition held: {spec.exit_when}")
                return
            if self.enrollment.step_id is None:
                self._finish()
                return
            if not self._run_step(spec.step(self.enrollment.step_id)):
                return  # waiting, or ended
        raise RetainError(f"more than {MAX_STEPS_PER_WAKE} steps in one wake-up")

    def _run_step(self, step: Step) -> bool:
        """Run one step by its kind's handler; True to go on with the next, False when the
        enrollment now waits or ended."""
        self.result.steps[step.id] += 1
        return HANDLERS[step.kind].run(self, step)

    def _finish(self) -> None:
        goal = self.pb.spec.goal
        e = self.enrollment
        if goal is not None and goal.within is not None and self.as_of < e.started_at + goal.within:
            # the steps are done; the goal may still be reached within its window (settle watches)
            if e.next_due_at is not None:
                e.next_due_at = None
                self.record(
                    "steps_done",
                    f"all steps done; watching the goal until {(e.started_at + goal.within):%Y-%m-%d}",
                )
                self.save()
            return
        self.end(EnrollmentStatus.COMPLETED, None, "all steps done")
