"""A CSM's ad-hoc play: enroll one account in a playbook now, advance it, and say what happened.

A play goes through the same contact policy as a scheduled tick (quiet hours in the contact's
zone, business days, holidays, caps, survey fatigue): a touch that may not go now is deferred and
the outbox sends it later. A CSM may deliberately override quiet hours for one play; the
account's timeline then records who overrode what.
"""

from __future__ import annotations

import dataclasses
import difflib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from flows.engine.advance import advance
from flows.engine.outbox import DeliveryPolicy, deliver
from flows.engine.revisions import RevisionCache, sync_revision, today_in
from flows.engine.tasks import close_tasks_of_ended
from flows.engine.tick import _bind, _default_delivery
from integrations.channels import Channel
from models import (
    Account,
    Enrollment,
    EnrollmentStatus,
    NotFoundError,
    RetainError,
    TimelineEvent,
    execute,
    session,
    utcnow,
)
from playbooks import CompiledPlaybook, env_for, explain

__all__ = ["find_account", "run_play"]


def find_account(s: Session, external_id: str) -> Account:
    """The account with this external id, or a NotFoundError with the closest ids."""
    account: Account | None = (
        execute(s, select(Account).where(col(Account.external_id) == external_id)).scalars().first()
    )
    if account is None:
        known = [row[0] for row in execute(s, select(col(Account.external_id))).all()]
        close = difflib.get_close_matches(external_id, known, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        raise NotFoundError(f"no account with external id {external_id!r}{hint}")
    return account


def run_play(
    engine: Engine,
    pb: CompiledPlaybook,
    external_id: str,
    *,
    force: bool = False,
    dry_run: bool = False,
    channels: dict[str, Channel] | None = None,
    now: datetime | None = None,
    delivery: DeliveryPolicy | None = None,
    override_quiet_hours: bool = False,
    by: str | None = None,
) -> list[str]:
    """Enroll (or wake) one account now. Returns the lines of its timeline this play wrote.

    ``delivery`` carries the contact policy (by default the ``policy.yaml`` beside the playbook);
    ``override_quiet_hours`` lets this play's touches go during quiet hours (every other rule
    still holds), recorded on the timeline as done ``by`` this CSM."""
    now = (now or utcnow()).replace(microsecond=0)
    delivery = delivery or _default_delivery(pb)
    override = _quiet_hours_override(delivery, pb.id) if override_quiet_hours else None
    who = by or "a CSM"
    cache = RevisionCache(current={pb.id: pb})
    lines: list[str] = []
    with _bind(engine, dry_run) as bind:
        with session(bind) as s:
            sync_revision(s, pb)
            account = find_account(s, external_id)
            active = (
                execute(
                    s,
                    select(Enrollment).where(
                        col(Enrollment.playbook) == pb.id,
                        col(Enrollment.account_id) == account.id,
                        col(Enrollment.status) == EnrollmentStatus.ACTIVE,
                    ),
                )
                .scalars()
                .first()
            )
            if active is not None:
                enrollment_id = active.id
                lines.append(
                    f"{account.name} is already in {pb.id} since {active.started_at:%Y-%m-%d} (step {active.step_id or 'done'})"
                )
                active.next_due_at = now
                s.add(active)
                account_id = account.id
            else:
                enrollment_id = _enroll(s, pb, account, now=now, force=force, by=by)
                account_id = account.id
            if override is not None:
                delivery, quiet = override
                s.add(
                    TimelineEvent.model_validate(
                        {
                            "account_id": account_id,
                            "enrollment_id": enrollment_id,
                            "playbook": pb.id,
                            "at": now,
                            "kind": "override",
                            "summary": f"quiet hours {quiet} in the contact's time zone overridden by {who} for this play",
                            "detail": {"by": by, "overridden": "quiet_hours", "quiet_hours": quiet},
                        }
                    )
                )
            elif override_quiet_hours:
                lines.append(f"{pb.id} has no quiet hours: nothing to override")
        assert enrollment_id is not None
        advance(bind, cache, pb.id, now, only={enrollment_id})
        with session(bind) as s:
            close_tasks_of_ended(s, now, playbook=pb.id)
        with session(bind) as s:
            events = (
                execute(
                    s,
                    select(TimelineEvent)
                    .where(col(TimelineEvent.enrollment_id) == enrollment_id, col(TimelineEvent.at) >= now)
                    .order_by(col(TimelineEvent.id)),
                )
                .scalars()
                .all()
            )
            lines += [f"{e.at:%Y-%m-%d %H:%M} {e.kind:<10} {e.summary}" for e in events]
            shown = max((e.id for e in events), default=0)
    if dry_run:
        lines.append("dry run: nothing was kept and nothing was sent")
    elif channels is not None:
        sent = deliver(engine, channels, as_of=now, enrollment_id=enrollment_id, policy=delivery)
        if sent:
            lines.append("delivered: " + ", ".join(f"{k} {v}" for k, v in sorted(sent.items())))
        lines += _held_back(engine, enrollment_id, after=shown)
    return lines


def _enroll(s: Session, pb: CompiledPlaybook, account: Account, *, now: datetime, force: bool, by: str | None) -> int:
    """A new enrollment of ``account`` by a play, and the timeline line that says why it entered
    (each clause of the audience and the values it read) and who played it. Outside the audience
    (without ``force``) it refuses, naming each clause that does not hold and its values."""
    who = by or "a CSM"
    env = env_for(s, account, now=now, today=today_in(pb, now))
    why = explain(pb.expression("audience"), env)
    inside = all(clause.held is True for clause in why)
    if not inside and not force:
        failing = [clause for clause in why if clause.held is not True]
        raise RetainError(
            f"{account.external_id} is not in the audience of {pb.id}: "
            + "; ".join(f"{c.line()} is {'unknown' if c.held is None else 'false'}" for c in failing)
            + "; use --force to enroll it anyway"
        )
    enrollment = Enrollment.model_validate(
        {
            "playbook": pb.id,
            "revision": pb.revision,
            "account_id": account.id,
            "step_id": pb.spec.steps[0].id,
            "next_due_at": now,
            "started_at": now,
            "source": "play",
            "state": {},
        }
    )
    s.add(enrollment)
    s.flush()
    enrollment_id = enrollment.id
    forced = "" if inside else " (forced: outside the audience)"
    held = "; ".join(c.line() + ("" if c.held else " [did not hold]") for c in why)
    s.add(
        TimelineEvent.model_validate(
            {
                "account_id": account.id,
                "enrollment_id": enrollment_id,
                "playbook": pb.id,
                "at": now,
                "kind": "enrolled",
                "summary": f"enrolled in {pb.spec.name} by {who}{forced}: {held}",
                "detail": {
                    "revision": pb.revision,
                    "source": "play",
                    "by": by,
                    "audience": [c.to_dict() for c in why],
                },
            }
        )
    )
    assert enrollment_id is not None
    return enrollment_id


def _quiet_hours_override(delivery: DeliveryPolicy, playbook: str) -> tuple[DeliveryPolicy, str] | None:
    """The delivery policy without quiet hours for ``playbook``, and the hours overridden
    (None when the playbook has none)."""
    rules = delivery.contact_policy(playbook)
    if rules is None or rules.quiet_hours is None:
        return None
    start, end = rules.quiet_hours
    policies = {**delivery.contact_policies, playbook: dataclasses.replace(rules, quiet_hours=None)}
    return dataclasses.replace(delivery, contact_policies=policies), f"{start:%H:%M}-{end:%H:%M}"


def _held_back(engine: Engine, enrollment_id: int, *, after: int) -> list[str]:
    """What the outbox's contact policy deferred or suppressed in this play, and why."""
    with session(engine) as s:
        events = (
            execute(
                s,
                select(TimelineEvent)
                .where(
                    col(TimelineEvent.enrollment_id) == enrollment_id,
                    col(TimelineEvent.id) > after,
                    col(TimelineEvent.kind).in_(("deferred", "suppressed")),
                )
                .order_by(col(TimelineEvent.id)),
            )
            .scalars()
            .all()
        )
    return [f"{e.at:%Y-%m-%d %H:%M} {e.kind:<10} {e.summary}" for e in events]
