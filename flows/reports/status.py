"""What has happened so far, per playbook: enrollments by state and outcome, touches by channel and
state (``retain status``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from models import Enrollment, EnrollmentStatus, Touch

__all__ = ["MANUAL", "PlaybookStatus", "playbook_status"]

#: touches that no playbook made (a CSM's own) are counted under this name
MANUAL = "(manual)"


@dataclass
class PlaybookStatus:
    """One playbook's counts. ``ended`` counts finished enrollments by outcome (or by status when
    they ended without one); ``touches`` counts by channel, then by state."""

    enrolled: int = 0
    active: int = 0
    holdout: int = 0
    ended: dict[str, int] = field(default_factory=dict)
    #: active enrollments by the playbook revision they run (each is pinned to the one it started on)
    revisions: dict[str, int] = field(default_factory=dict)
    touches: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def playbook_status(engine: Engine) -> dict[str, PlaybookStatus]:
    """Every playbook that enrolled an account or made a touch, in the order the database lists them."""
    found: dict[str, PlaybookStatus] = {}
    enrollments = select(
        col(Enrollment.playbook), col(Enrollment.status), col(Enrollment.holdout), col(Enrollment.outcome), func.count()
    ).group_by(col(Enrollment.playbook), col(Enrollment.status), col(Enrollment.holdout), col(Enrollment.outcome))
    touches = select(col(Touch.playbook), col(Touch.channel), col(Touch.status), func.count()).group_by(
        col(Touch.playbook), col(Touch.channel), col(Touch.status)
    )
    revisions = (
        select(col(Enrollment.playbook), col(Enrollment.revision), func.count())
        .where(col(Enrollment.status) == EnrollmentStatus.ACTIVE)
        .group_by(col(Enrollment.playbook), col(Enrollment.revision))
    )
    with engine.connect() as conn:
        for playbook, revision, n in conn.execute(revisions):
            found.setdefault(playbook, PlaybookStatus()).revisions[revision] = n
        for playbook, status, holdout, outcome, n in conn.execute(enrollments):
            row = found.setdefault(playbook, PlaybookStatus())
            row.enrolled += n
            if holdout:
                row.holdout += n
            if status == EnrollmentStatus.ACTIVE:
                row.active += n
            else:
                key: str = outcome or status
                row.ended[key] = row.ended.get(key, 0) + n
        for made_by, channel, state, n in conn.execute(touches):
            row = found.setdefault(made_by or MANUAL, PlaybookStatus())
            row.touches.setdefault(channel, {})[state] = n
    return found
