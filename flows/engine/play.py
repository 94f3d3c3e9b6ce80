"""A CSM's ad-hoc play: enroll one account in a playbook now, advance it, and say what happened."""

from __future__ import annotations

import difflib

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from flows.engine.core import RevisionCache, advance, sync_revision, today_in
from flows.engine.outbox import deliver
from flows.engine.tick import _bind
from integrations.channels.base import Channel
from models import Account, Enrollment, EnrollmentStatus, NotFoundError, RetainError, TimelineEvent, session, utcnow
from playbooks import CompiledPlaybook, env_for, evaluate

__all__ = ["find_account", "run_play"]


def find_account(s: object, external_id: str) -> Account:
    """The account with this external id, or a NotFoundError with the closest ids."""
    account = s.exec(select(Account).where(col(Account.external_id) == external_id)).scalars().first()  # type: ignore[attr-defined]
    if account is None:
        known = [row[0] for row in s.exec(select(col(Account.external_id))).all()]  # type: ignore[attr-defined]
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
) -> list[str]:
    """Enroll (or wake) one account now. Returns the lines of its timeline this play wrote."""
    now = utcnow().replace(microsecond=0)
    cache = RevisionCache(current={pb.id: pb})
    lines: list[str] = []
    with _bind(engine, dry_run) as bind:
        with session(bind) as s:
            sync_revision(s, pb)
            account = find_account(s, external_id)
            active = (
                s.exec(  # type: ignore[call-overload]
                    select(Enrollment).where(
                        col(Enrollment.playbook) == pb.id,
                        col(Enrollment.account_id) == account.id,
                        col(Enrollment.status) == EnrollmentStatus.ACTIVE,
                    )
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
            else:
                inside = (
                    evaluate(pb.expression("audience"), env_for(s, account, now=now, today=today_in(pb, now))) is True
                )
                if not inside and not force:
                    raise RetainError(
                        f"{account.external_id} is not in the audience of {pb.id} ({pb.spec.audience.strip()}); "
                        "use --force to enroll it anyway"
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
                s.add(
                    TimelineEvent.model_validate(
                        {
                            "account_id": account.id,
                            "enrollment_id": enrollment_id,
                            "playbook": pb.id,
                            "at": now,
                            "kind": "enrolled",
                            "summary": f"enrolled in {pb.spec.name} by a CSM play{forced}",
                            "detail": {"revision": pb.revision, "source": "play"},
                        }
                    )
                )
        assert enrollment_id is not None
        advance(bind, cache, pb.id, now, only={enrollment_id})  # type: ignore[arg-type]
        with session(bind) as s:
            events = (
                s.exec(  # type: ignore[call-overload]
                    select(TimelineEvent)
                    .where(col(TimelineEvent.enrollment_id) == enrollment_id, col(TimelineEvent.at) >= now)
                    .order_by(col(TimelineEvent.id))
                )
                .scalars()
                .all()
            )
            lines += [f"{e.at:%Y-%m-%d %H:%M} {e.kind:<10} {e.summary}" for e in events]
    if dry_run:
        lines.append("dry run: nothing was kept and nothing was sent")
    elif channels is not None:
        sent = deliver(engine, channels, as_of=now, enrollment_id=enrollment_id)
        if sent:
            lines.append("delivered: " + ", ".join(f"{k} {v}" for k, v in sorted(sent.items())))
    return lines
