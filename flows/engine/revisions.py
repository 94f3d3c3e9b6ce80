"""Which playbook an enrollment runs: revisions stored once, compiled once, and the per-playbook
facts every step of a tick shares ("today" in the playbook's zone, the holdout rotation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache

import pendulum
from sqlmodel import Session

from flows.engine._sql import insert_ignore
from models import PlaybookRevision, RetainError, execute, table_of, utcnow
from models.tables import HOLDOUT_BUCKETS
from playbooks import CompiledPlaybook, compile_source

__all__ = ["RevisionCache", "holdout_salt", "sync_revision", "today_in"]


def today_in(pb: CompiledPlaybook, as_of: datetime) -> date:
    """ "Today" for a playbook: the date at ``as_of`` in its schedule's time zone (else UTC)."""
    return _date_in(pb.spec.schedule.timezone if pb.spec.schedule else "UTC", as_of)


@lru_cache(maxsize=1024)
def _date_in(zone: str, as_of: datetime) -> date:
    """Asked once per enrollment woken up, with the same answer for the whole tick."""
    return pendulum.instance(as_of).in_timezone(zone).date()


def holdout_salt(playbook: str) -> int:
    """Per-playbook rotation of the account buckets: holdouts differ between playbooks."""
    return int(hashlib.sha256(playbook.encode()).hexdigest(), 16) % HOLDOUT_BUCKETS


def sync_revision(s: Session, pb: CompiledPlaybook) -> None:
    """Store this revision's source and templates once; enrollments started on it will use them.

    Insert-or-ignore: several workers' first ticks of a new revision each try, one row is kept."""
    if s.get(PlaybookRevision, (pb.id, pb.revision)) is None:
        row = {
            "playbook": pb.id,
            "revision": pb.revision,
            "source": pb.source,
            "templates": pb.templates,
            "path": pb.file,
            "created_at": utcnow(),
        }
        execute(s, insert_ignore(s, table_of(PlaybookRevision)).values(**row))


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
