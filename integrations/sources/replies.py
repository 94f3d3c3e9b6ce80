"""Replies logged by hand: a person says that a contact answered a touch (``retain touches reply``).

The touch is named by its key (``retain status``/the timeline show it), or as "the latest message
this playbook sent to this account": the latest touch to a contact (email or survey) of the
account's enrollments in the playbook that went out (``sent_at`` set). Its ``replied_at`` is set,
which is what ``touches("<step>").replied`` reads in ``branch`` and ``wait_for`` conditions, and
the account's timeline says who logged it. Logging a reply twice changes nothing.

Replies read from a mailbox (:mod:`integrations.sources.mailbox`) set ``replied_at`` through the
same :func:`set_replied`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import write_all_or_nothing
from models import Account, NotFoundError, TimelineEvent, Touch, table_of

__all__ = ["ReplyResult", "mark_replied", "set_replied"]

logger = logging.getLogger(__name__)

_TOUCH = table_of(Touch)
_ACCOUNT = table_of(Account)


@dataclass(frozen=True)
class ReplyResult:
    key: str
    account: str  # external id
    playbook: str | None
    step_id: str | None
    replied_at: datetime
    already: bool  # it was marked replied before; nothing changed

    def line(self) -> str:
        where = f"{self.playbook}/{self.step_id}" if self.playbook else (self.step_id or "ad hoc")
        if self.already:
            return f"touch {self.key} ({self.account}, {where}) was already marked replied at {self.replied_at:%Y-%m-%d %H:%M} UTC"
        return f"touch {self.key} ({self.account}, {where}) marked replied at {self.replied_at:%Y-%m-%d %H:%M} UTC"


def set_replied(conn: Connection, replied: Mapping[int, datetime]) -> None:
    """Set ``replied_at`` (what ``touches("<step>").replied`` reads in ``branch`` and ``wait_for``)
    of these touches, id -> when, where it is not set yet: the first reply's time stays."""
    if replied:
        conn.execute(
            update(_TOUCH)
            .where(_TOUCH.c.id == bindparam("b_touch"), _TOUCH.c.replied_at.is_(None))
            .values(replied_at=bindparam("b_at")),
            [{"b_touch": touch, "b_at": at} for touch, at in replied.items()],
        )


def _find(conn: Connection, key: str | None, account: str | None, playbook: str | None) -> dict[str, object]:
    columns = [_TOUCH.c.id, _TOUCH.c.key, _TOUCH.c.account_id, _TOUCH.c.playbook, _TOUCH.c.step_id,
               _TOUCH.c.enrollment_id, _TOUCH.c.replied_at, _ACCOUNT.c.external_id]  # fmt: skip
    query = select(*columns).join(_ACCOUNT, _ACCOUNT.c.id == _TOUCH.c.account_id)
    if key is not None:
        found = conn.execute(query.where(_TOUCH.c.key == key)).mappings().first()
        if found is None:
            raise NotFoundError(f"no touch with key {key!r} (retain status and the account's timeline show the keys)")
        return dict(found)
    if account is None or playbook is None:
        raise ValueError("name the touch by its key, or by --account and --playbook")
    if conn.execute(select(_ACCOUNT.c.id).where(_ACCOUNT.c.external_id == account)).first() is None:
        raise NotFoundError(f"no account {account!r}")
    found = (
        conn.execute(
            query.where(
                _ACCOUNT.c.external_id == account,
                _TOUCH.c.playbook == playbook,
                _TOUCH.c.contact_id.is_not(None),
                _TOUCH.c.sent_at.is_not(None),
            ).order_by(_TOUCH.c.sent_at.desc(), _TOUCH.c.id.desc())
        )
        .mappings()
        .first()
    )
    if found is None:
        raise NotFoundError(f"playbook {playbook!r} has sent no message to account {account!r}: nothing to reply to")
    return dict(found)


def mark_replied(
    engine: Engine,
    *,
    now: datetime,
    key: str | None = None,
    account: str | None = None,
    playbook: str | None = None,
    by: str | None = None,
) -> ReplyResult:
    """Mark one touch replied (see the module's documentation). ``now`` (aware) is the reply's time."""
    result: ReplyResult | None = None

    def work(conn: Connection) -> None:
        nonlocal result
        touch = _find(conn, key, account, playbook)
        already = touch["replied_at"] is not None
        replied_at = touch["replied_at"] if already else now
        assert isinstance(replied_at, datetime)
        if not already:
            assert isinstance(touch["id"], int)
            set_replied(conn, {touch["id"]: now})
            conn.execute(
                insert(table_of(TimelineEvent)),
                {"account_id": touch["account_id"], "at": now, "kind": "replied", "playbook": touch["playbook"],
                 "enrollment_id": touch["enrollment_id"], "step_id": touch["step_id"],
                 "summary": f"reply to {touch['step_id'] or 'a touch'} logged" + (f" by {by}" if by else ""),
                 "detail": {"touch": touch["key"], "by": by}},
            )  # fmt: skip
        result = ReplyResult(
            str(touch["key"]),
            str(touch["external_id"]),
            touch["playbook"] if isinstance(touch["playbook"], str) else None,
            touch["step_id"] if isinstance(touch["step_id"], str) else None,
            replied_at,
            already,
        )

    write_all_or_nothing(engine, key or f"{account}/{playbook}", work)
    assert result is not None
    logger.info("%s", result.line())
    return result
