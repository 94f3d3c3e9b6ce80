"""Unsubscribes and suppression lists: addresses Retain must not contact, on some channels or at all.

An unsubscribe is kept as a :class:`~models.Suppression` row by address, and applied to every
contact with that address (across accounts); a contact imported later with a suppressed address is
unsubscribed at once. Suppression lists from an email provider import the same way, all or
nothing. The contact policy reads the contacts' flags before every delivery.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import write_all_or_nothing
from integrations.sources._csv import parse_email, read_csv
from models import Contact, DataImportError, RowProblem, Suppression, TimelineEvent, table_of, utcnow

__all__ = [
    "CHANNELS",
    "PROVIDER_SOURCES",
    "ResubscribeResult",
    "SuppressionResult",
    "apply_suppressions",
    "import_suppression_list",
    "resubscribe",
    "resubscribe_addresses",
    "suppress_address",
    "suppression_of",
    "unsubscribe",
]

logger = logging.getLogger(__name__)  # what each unsubscribe and list import did, for the run's log

#: what an unsubscribe can name: everything, or one kind of message
CHANNELS = ("all", "email", "survey")
_CONTACT = table_of(Contact)
_SUPPRESSION = table_of(Suppression)


@dataclass(frozen=True)
class SuppressionResult:
    addresses: int  # suppressed addresses written (new or widened)
    contacts: int  # contacts newly unsubscribed by them


def _merge(old: list[str] | None, channel: str) -> list[str]:
    """Channels after adding ``channel``; an empty list means everything."""
    if channel == "all" or old == []:
        return []
    return sorted({*(old or []), channel})


def _suppress(conn: Connection, email: str, channel: str, reason: str | None, source: str, now: datetime) -> bool:
    """Record (or widen) the suppression of one address. True if anything changed."""
    row = conn.execute(select(_SUPPRESSION.c.channels).where(_SUPPRESSION.c.email == email)).first()
    if row is None:
        channels = _merge(None, channel)
        conn.execute(
            insert(_SUPPRESSION).values(email=email, channels=channels, reason=reason, source=source, created_at=now)
        )
        return True
    channels = _merge(row[0], channel)
    if channels == row[0]:
        return False
    conn.execute(
        update(_SUPPRESSION).where(_SUPPRESSION.c.email == email).values(channels=channels, reason=reason or None)
    )
    return True


def suppress_address(
    conn: Connection, email: str, channel: str, reason: str | None, source: str, now: datetime
) -> bool:
    """Record (or widen) the suppression of one address in the caller's transaction; the caller
    applies it to the contacts (:func:`apply_suppressions`). True if anything changed."""
    return _suppress(conn, email.strip().lower(), channel, reason, source, now)


def apply_suppressions(conn: Connection, now: datetime, emails: set[str] | None = None) -> int:
    """Unsubscribe the contacts whose address is suppressed (all of them, or those of ``emails``).
    Returns how many contacts changed; each change is on its account's timeline."""
    query = select(_SUPPRESSION.c.email, _SUPPRESSION.c.channels, _SUPPRESSION.c.reason)
    if emails is not None:
        if not emails:
            return 0
        query = query.where(_SUPPRESSION.c.email.in_(sorted(emails)))
    changed = 0
    for email, channels, reason in conn.execute(query).all():
        for contact_id, account_id, unsubscribed, current in conn.execute(
            select(
                _CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.unsubscribed, _CONTACT.c.unsubscribed_channels
            ).where(func.lower(_CONTACT.c.email) == email)
        ).all():
            if unsubscribed:
                continue
            if channels:
                wanted = sorted({*(current or []), *channels})
                if wanted == sorted(current or []):
                    continue
                conn.execute(
                    update(_CONTACT)
                    .where(_CONTACT.c.id == contact_id)
                    .values(unsubscribed_channels=wanted, unsubscribed_at=now)
                )
                what = f"unsubscribed from {', '.join(channels)}"
            else:
                conn.execute(
                    update(_CONTACT).where(_CONTACT.c.id == contact_id).values(unsubscribed=True, unsubscribed_at=now)
                )
                what = "unsubscribed from everything"
            conn.execute(
                insert(table_of(TimelineEvent)),
                {"account_id": account_id, "at": now, "kind": "unsubscribed", "playbook": None, "enrollment_id": None,
                 "step_id": None, "summary": f"contact {email} {what}" + (f" ({reason})" if reason else ""),
                 "detail": {"email": email, "channels": channels or ["all"], "reason": reason}},
            )  # fmt: skip
            changed += 1
    return changed


def unsubscribe(
    engine: Engine,
    email: str,
    *,
    channel: str = "all",
    reason: str | None = None,
    now: datetime | None = None,
    source: str = "manual",
) -> SuppressionResult:
    """Unsubscribe an address (from everything, or from ``email`` / ``survey`` messages).
    ``source`` says who asked: ``manual`` (a person at the CLI), ``link`` (the contact, through
    the link in an email), ``bounce`` or ``complaint`` (the email provider)."""
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    address = parse_email(email.strip()).lower()
    moment = now or utcnow()
    result = SuppressionResult(0, 0)

    def work(conn: Connection) -> None:
        nonlocal result
        written = _suppress(conn, address, channel, reason, source, moment)
        result = SuppressionResult(int(written), apply_suppressions(conn, moment, {address}))

    write_all_or_nothing(engine, address, work)
    logger.info("unsubscribed %s from %s: %d contacts changed", address, channel, result.contacts)
    return result


def import_suppression_list(
    engine: Engine, path: str | Path, *, dry_run: bool = False, now: datetime | None = None
) -> SuppressionResult:
    """Import a suppression list (columns ``email``; optional ``channel`` all|email|survey and
    ``reason``), all or nothing: a bad row and nothing is written."""
    csv_file = read_csv(path, "suppression list", ["email"])
    moment = now or utcnow()
    problems: list[RowProblem] = list(csv_file.problems)
    wanted: list[tuple[str, str, str | None]] = []
    for record in csv_file.records:
        cells: dict[str, Any] = record.cells
        try:
            address = parse_email(cells.get("email", "")).lower()
        except ValueError as exc:
            problems.append(
                RowProblem(
                    record.line, str(exc) if cells.get("email") else "a value is required", csv_file.header("email")
                )
            )
            continue
        channel = (cells.get("channel") or "all").lower()
        if channel not in CHANNELS:
            problems.append(
                RowProblem(
                    record.line, f"{channel!r} is not a channel: use all, email or survey", csv_file.header("channel")
                )
            )
            continue
        wanted.append((address, channel, cells.get("reason")))
    if problems:
        logger.warning("%s: %d rows refused, so nothing is written", csv_file.name, len({p.row for p in problems}))
        raise DataImportError(csv_file.name, sorted(problems, key=lambda p: p.row))
    result = SuppressionResult(0, 0)

    def work(conn: Connection) -> None:
        nonlocal result
        written = sum(_suppress(conn, address, channel, reason, "list", moment) for address, channel, reason in wanted)
        result = SuppressionResult(written, apply_suppressions(conn, moment, {a for a, _, _ in wanted}))
        if dry_run:
            raise _DryRun

    with contextlib.suppress(_DryRun):
        write_all_or_nothing(engine, csv_file.name, work)
    logger.info(
        "%s: %d addresses suppressed, %d contacts unsubscribed%s",
        csv_file.name,
        result.addresses,
        result.contacts,
        " (dry run: nothing written)" if dry_run else "",
    )
    return result


class _DryRun(Exception):
    """Rolls back a dry run's transaction."""


# --- resubscribing ----------------------------------------------------------------------------------

#: suppressions only a person at the CLI may lift (``--force``): the provider said the address
#: bounced or its owner reported a message as spam
PROVIDER_SOURCES = ("bounce", "complaint")
_KINDS = tuple(c for c in CHANNELS if c != "all")


@dataclass(frozen=True)
class ResubscribeResult:
    contacts: int  # contacts that may be written to again (on that channel)
    kept: tuple[str, ...] = ()  # why an address stays suppressed (a bounce, a complaint)
    kept_addresses: frozenset[str] = frozenset()


def suppression_of(conn: Connection, email: str) -> tuple[list[str], str | None, str] | None:
    """The suppression of an address: (channels, empty meaning everything; reason; source), or None."""
    row = conn.execute(
        select(_SUPPRESSION.c.channels, _SUPPRESSION.c.reason, _SUPPRESSION.c.source).where(
            _SUPPRESSION.c.email == email.strip().lower()
        )
    ).first()
    return None if row is None else (list(row[0] or []), row[1], row[2])


def _without(channels: list[str], channel: str) -> list[str]:
    """Channels suppressed after lifting ``channel``; ``[]`` here means none are left."""
    if channel == "all":
        return []
    return [c for c in (channels or list(_KINDS)) if c != channel]


_KEPT_BECAUSE = {
    "bounce": "the email provider reported a bounce",
    "complaint": "its owner reported a message as spam",
    "link": "the contact unsubscribed through the link in an email",
}


def resubscribe_addresses(
    conn: Connection,
    emails: set[str],
    now: datetime,
    *,
    channel: str = "all",
    by: str,
    keep: tuple[str, ...] = PROVIDER_SOURCES,
) -> ResubscribeResult:
    """Lift the suppression of ``emails`` (on ``channel``) and resubscribe every contact with one
    of them, each on its account's timeline (``by`` says who: ``link``, ``import of x.csv``, a
    person). Suppressions whose source is in ``keep`` stay (and are named in the result)."""
    kept: list[str] = []
    kept_addresses: set[str] = set()
    changed = 0
    for email in sorted(emails):
        found = suppression_of(conn, email)
        if found is not None and found[2] in keep:
            because = _KEPT_BECAUSE.get(found[2], f"it was suppressed by {found[2]}")
            kept.append(f"{email}: {because}" + (f" ({found[1]})" if found[1] else ""))
            kept_addresses.add(email)
            continue
        if found is not None:
            left = _without(found[0], channel)
            if left:
                conn.execute(update(_SUPPRESSION).where(_SUPPRESSION.c.email == email).values(channels=left))
            else:
                conn.execute(delete(_SUPPRESSION).where(_SUPPRESSION.c.email == email))
        for contact_id, account_id, unsubscribed, current in conn.execute(
            select(
                _CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.unsubscribed, _CONTACT.c.unsubscribed_channels
            ).where(func.lower(_CONTACT.c.email) == email)
        ).all():
            if not unsubscribed and not current:
                continue
            if channel == "all":
                values: dict[str, Any] = {"unsubscribed": False, "unsubscribed_channels": [], "unsubscribed_at": None}
            else:
                left = _without([] if unsubscribed else list(current or []), channel)
                if left == sorted(current or []) and not unsubscribed:
                    continue
                values = {"unsubscribed": False, "unsubscribed_channels": left}
                if not left:
                    values["unsubscribed_at"] = None
            conn.execute(update(_CONTACT).where(_CONTACT.c.id == contact_id).values(**values))
            what = "everything" if channel == "all" else f"{channel} messages"
            conn.execute(
                insert(table_of(TimelineEvent)),
                {"account_id": account_id, "at": now, "kind": "resubscribed", "playbook": None, "enrollment_id": None,
                 "step_id": None, "summary": f"contact {email} resubscribed to {what} ({by})",
                 "detail": {"email": email, "channels": [channel], "by": by}},
            )  # fmt: skip
            changed += 1
    return ResubscribeResult(changed, tuple(kept), frozenset(kept_addresses))


def resubscribe(
    engine: Engine,
    email: str,
    *,
    channel: str = "all",
    by: str = "manual",
    force: bool = False,
    now: datetime | None = None,
) -> ResubscribeResult:
    """Resubscribe an address (to everything, or to ``email`` / ``survey`` messages): the
    suppression is lifted and its contacts may be written to again; each change is on the
    timeline. A bounce or complaint reported by the provider stays unless ``force``."""
    keep = () if force else PROVIDER_SOURCES
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    address = parse_email(email.strip()).lower()
    moment = now or utcnow()
    result = ResubscribeResult(0)

    def work(conn: Connection) -> None:
        nonlocal result
        result = resubscribe_addresses(conn, {address}, moment, channel=channel, by=by, keep=keep)

    write_all_or_nothing(engine, address, work)
    logger.info("resubscribed %s to %s (%s): %d contacts changed", address, channel, by, result.contacts)
    return result
