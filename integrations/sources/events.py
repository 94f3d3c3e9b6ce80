"""Product events in, in the Segment spec: ``identify``, ``group``, ``track``, ``page``,
``screen`` and ``alias`` calls, from JSON Lines (Segment's own export shape) or CSV, and the one
landing function every source calls.

A record: ``type``, ``userId`` or ``anonymousId`` (a call has one or both; the user is its
``userId`` when it has one), ``timestamp`` (ISO 8601), and ``messageId`` (when missing, one is
derived from the record's content, so a re-import still finds it); ``track`` has ``event`` and
``properties``; ``identify`` has ``traits`` (``email`` ties the user to a contact's address);
``group`` has ``groupId`` (the account's ``external_id``) and ``traits``; ``page`` and ``screen``
have ``name`` and ``properties`` (a page view is stored as an event of its type: it counts as the
user being seen, but ``events(...)`` and the activation event read ``track`` calls only);
``alias`` has ``previousId`` and ``userId``: the two are one user, so the one that has an account
gives it to the other (whose events without an account are attached to it). A call may name its
account itself with ``groupId`` or ``context.groupId``; otherwise it belongs to the account its
user was grouped with (in this file or before; events that arrived before their user's ``group``
call are attached when it comes). Other Segment keys (``sentAt``, ``context``…) are read and
ignored here (``retain web`` corrects a device's clock by ``sentAt``).

Each event is stored once, by its message id: importing a file again writes nothing new.
What the events say about accounts is kept current as they land:

* ``account.last_seen_at``: the latest event of any of its users;
* ``account.onboarded_at``: the first ``track`` of the *activation event*, if the account has no
  ``onboarded_at`` yet. The activation event is declared in ``sources.yaml`` in the playbooks
  folder (``activation_event: Onboarding Completed``); without it, no event onboards anyone.
* contacts: a user with an ``email`` trait and an account (its ``group`` call, or the ``groupId``
  or ``context.groupId`` of its ``identify``) is a contact of that account: created when the
  account has no contact with that address (primary when the account has no primary contact, and
  unsubscribed when the address is suppressed), its ``name`` (or ``firstName`` and ``lastName``),
  ``title`` and ``role`` traits written on it. So the playbooks reach users known only from
  product events.

All or nothing: every record is checked first (shape, cells, unknown accounts) and one bad
record means nothing is written; the error lists every one by its line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator
from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from integrations.sources._batches import CHUNK, chunks, import_event, write_all_or_nothing
from integrations.sources._csv import CsvFile, parse_timestamp, quote_cell, settle_problems, validate_rows
from integrations.sources._records import object_records, read_records
from integrations.sources.activity import account_ids
from integrations.sources.suppression import apply_suppressions
from models import Account, Contact, ProductEvent, ProductUser, TimelineEvent, table_of

__all__ = [
    "EventRecord",
    "EventsResult",
    "event_records",
    "import_events",
    "land_calls",
    "land_events",
]

logger = logging.getLogger(__name__)

_ACCOUNT: Table = table_of(Account)
_EVENT: Table = table_of(ProductEvent)
_USER: Table = table_of(ProductUser)
_CONTACT: Table = table_of(Contact)
_TIMELINE: Table = table_of(TimelineEvent)


# --------------------------------------------------------------------------------------------
# records


def _json_object(value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except json.JSONDecodeError:
        raise ValueError(f"{quote_cell(value)} is not a JSON object") from None
    if not isinstance(data, dict):
        raise ValueError(f"{quote_cell(value)} is not a JSON object")
    return data


def _text(limit: int) -> Any:
    def parse(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"is {len(value)} characters long; at most {limit} fit")
        return value

    return BeforeValidator(parse)


#: the Segment calls Retain reads
CALLS = ("track", "identify", "group", "page", "screen", "alias")


def _kind(value: str) -> str:
    if value.lower() not in CALLS:
        raise ValueError(f"{quote_cell(value)} is not a Segment call: use {', '.join(CALLS)}")
    return value.lower()


class _EventRow(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Annotated[Literal["track", "identify", "group", "page", "screen", "alias"], BeforeValidator(_kind)]
    user_id: Annotated[str | None, _text(200)] = None
    anonymous_id: Annotated[str | None, _text(200)] = None
    timestamp: Annotated[datetime, BeforeValidator(parse_timestamp)]
    message_id: Annotated[str | None, _text(200)] = None
    event: Annotated[str | None, _text(200)] = None
    name: Annotated[str | None, _text(200)] = None  # page and screen
    previous_id: Annotated[str | None, _text(200)] = None  # alias
    group_id: Annotated[str | None, _text(200)] = None
    properties: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = None
    traits: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = None
    context: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = None

    @model_validator(mode="after")
    def _complete(self) -> _EventRow:
        if not self.user_id and not self.anonymous_id:
            raise ValueError("a call needs 'userId' or 'anonymousId'")
        if self.type == "track" and not self.event:
            raise ValueError("a track call needs 'event' (the event's name)")
        if self.type == "alias" and not (self.previous_id and self.user_id):
            raise ValueError("an alias call needs 'previousId' and 'userId'")
        if self.type == "group" and not self.group_id:
            raise ValueError("a group call needs 'groupId' (the account's external_id)")
        return self


@dataclass(frozen=True)
class EventRecord:
    """One Segment call as a source gives it (``line``: where, for errors)."""

    line: int
    message_id: str
    type: str
    user_id: str
    occurred_at: datetime
    name: str | None = None
    group_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    previous_id: str | None = None  # alias: the user's other id


def _message_id(row: _EventRow) -> str:
    if row.message_id:
        return row.message_id
    content: list[Any] = [row.type, row.user_id, row.timestamp.isoformat(), row.event, row.group_id, row.properties,
                          row.traits]  # fmt: skip
    more = {"anonymousId": row.anonymous_id, "name": row.name, "previousId": row.previous_id}
    if any(more.values()):  # only then: a call without them keeps the id it was derived before
        content.append(more)
    body = json.dumps(content, sort_keys=True, default=str)
    return "derived-" + hashlib.sha256(body.encode()).hexdigest()[:40]


def _record(line: int, row: _EventRow) -> EventRecord:
    group = row.group_id or (row.context or {}).get("groupId")
    payload = row.traits if row.type in ("identify", "group") else row.properties
    user = row.user_id or row.anonymous_id
    assert user is not None  # the row model requires one
    return EventRecord(
        line=line,
        message_id=_message_id(row),
        type=row.type,
        user_id=user,
        occurred_at=row.timestamp,
        name=row.event if row.type == "track" else row.name if row.type in ("page", "screen") else None,
        group_id=str(group) if group else None,
        properties=dict(payload or {}) if row.type != "alias" else {"previousId": row.previous_id},
        previous_id=row.previous_id,
    )


# --------------------------------------------------------------------------------------------
# landing


@dataclass(frozen=True)
class EventsResult:
    file: str
    inserted: int = 0  # events new to the database
    unchanged: int = 0  # events already stored (same message id)
    users: int = 0  # users added or changed
    onboarded: int = 0  # accounts whose onboarded_at the activation event set
    contacts: int = 0  # contacts added or changed from identify calls
    dry_run: bool = False

    def line(self) -> str:
        text = (
            f"{self.file}: events: {self.inserted} new, {self.unchanged} already stored; "
            f"{self.users} users added or changed; {self.onboarded} accounts onboarded by the activation event; "
            f"{self.contacts} contacts added or updated"
        )
        return text + (" (dry run: nothing written)" if self.dry_run else "")


def _user_after(old: dict[str, Any] | None, event: EventRecord, ids: Mapping[str, int]) -> dict[str, Any]:
    """A product user as ``event`` leaves it: its account (a group call), traits and email (an
    identify call), and the first and last moments it was seen."""
    user = dict(old) if old else {"user_id": event.user_id, "account_id": None, "email": None, "traits": {}}
    if event.type == "group" and event.group_id:
        user["account_id"] = ids[event.group_id]
    if event.type == "identify":
        if event.group_id and not user.get("account_id"):  # an identify that names its account
            user["account_id"] = ids[event.group_id]
        user["traits"] = {**(user.get("traits") or {}), **event.properties}
        email = event.properties.get("email")
        if isinstance(email, str) and email.strip():
            user["email"] = email.strip().lower()[:320]
    first, last = user.get("first_seen_at"), user.get("last_seen_at")
    user["first_seen_at"] = min(first, event.occurred_at) if first else event.occurred_at
    user["last_seen_at"] = max(last, event.occurred_at) if last else event.occurred_at
    return user


def _aliases(
    conn: Connection,
    events: Iterable[EventRecord],
    changed: dict[str, dict[str, Any]],
    users: dict[str, dict[str, Any]],
) -> None:
    """``alias`` calls: a user under two ids is one user, so an account known to one id is the
    other's (its events without an account are then attached to it). The aliases of these calls,
    and those stored before of users who have just been given an account (a ``group`` after the
    ``alias``), are applied after every other call."""
    links = [(e.user_id, e.previous_id, e.occurred_at) for e in events if e.previous_id]
    gained = sorted(u for u, v in changed.items() if v.get("account_id") and not (users.get(u) or {}).get("account_id"))
    for chunk in chunks(gained, CHUNK):
        query = select(_EVENT.c.user_id, _EVENT.c.properties, _EVENT.c.occurred_at).where(
            _EVENT.c.type == "alias", _EVENT.c.user_id.in_(chunk)
        )
        for user_id, properties, at in conn.execute(query):
            previous = (properties or {}).get("previousId")
            if isinstance(previous, str) and previous:
                links.append((user_id, previous, at))
    unknown = sorted({i for a, b, _ in links for i in (a, b)} - users.keys() - changed.keys())
    for chunk in chunks(unknown, CHUNK):
        for row in conn.execute(select(_USER).where(_USER.c.user_id.in_(chunk))).mappings():
            users[row["user_id"]] = dict(row)
    for user_id, previous, at in links:
        pair = (user_id, previous)
        known: list[dict[str, Any] | None] = [changed.get(i) or users.get(i) for i in pair]
        account = next((u["account_id"] for u in known if u and u.get("account_id")), None)
        if account is None:
            continue
        for one, record in zip(pair, known, strict=True):
            if record is None:  # an id the database has not seen calls of
                record = {"user_id": one, "account_id": None, "email": None, "traits": {},
                          "first_seen_at": at, "last_seen_at": at}  # fmt: skip
            if not record.get("account_id"):
                changed[one] = {**record, "account_id": account}


def land_events(
    conn: Connection,
    source: str,
    events: Sequence[EventRecord],
    *,
    now: datetime,
    activation: str | None,
    write: bool = True,
) -> EventsResult:
    """Store the events not stored yet, tie users to accounts, and keep the accounts' last-seen
    and onboarded moments current. Unknown accounts raise :class:`DataImportError` (nothing written)."""
    ids = account_ids(conn, source, [(e.line, e.group_id) for e in events if e.group_id], "groupId")
    stored: dict[str, int | None] = {}  # message id -> account id, of the events already stored
    for chunk in chunks(sorted({e.message_id for e in events}), CHUNK):
        query = select(_EVENT.c.message_id, _EVENT.c.account_id).where(_EVENT.c.message_id.in_(chunk))
        stored.update((message_id, account_id) for message_id, account_id in conn.execute(query))
    new: dict[str, EventRecord] = {}
    for event in events:
        if event.message_id not in stored:
            new.setdefault(event.message_id, event)
    users: dict[str, dict[str, Any]] = {}
    named = {e.user_id for e in new.values()} | {e.previous_id for e in new.values() if e.previous_id}
    for chunk in chunks(sorted(named), CHUNK):
        for found in conn.execute(select(_USER).where(_USER.c.user_id.in_(chunk))).mappings():
            users[found["user_id"]] = dict(found)
    changed_users: dict[str, dict[str, Any]] = {}
    for event in sorted(new.values(), key=lambda e: e.occurred_at):
        old = changed_users.get(event.user_id) or users.get(event.user_id)
        user = _user_after(old, event, ids)
        if user != old:
            changed_users[event.user_id] = user
    _aliases(conn, new.values(), changed_users, users)
    rows = [
        {
            "message_id": e.message_id,
            "type": e.type,
            "name": e.name,
            "user_id": e.user_id,
            "account_id": ids[e.group_id]
            if e.group_id
            else (changed_users.get(e.user_id) or users.get(e.user_id) or {}).get("account_id"),
            "occurred_at": e.occurred_at,
            "properties": e.properties,
        }
        for e in new.values()
    ]
    result = EventsResult(source, len(rows), len(events) - len(rows), len(changed_users), 0, dry_run=not write)
    if not write:
        return result
    for user_id, user in changed_users.items():
        if user_id in users:
            conn.execute(update(_USER).where(_USER.c.user_id == user_id).values(**user))
        else:
            conn.execute(insert(_USER).values(**user))
    if rows:
        conn.execute(insert(_EVENT), rows)
    # events that came before their user's group call belong to the account it names
    grouped = {u: v["account_id"] for u, v in changed_users.items() if v.get("account_id")}
    for user_id, account_id in grouped.items():
        conn.execute(
            update(_EVENT)
            .where(_EVENT.c.user_id == user_id, _EVENT.c.account_id.is_(None))
            .values(account_id=account_id)
        )
    # the accounts the file speaks of, also through events stored before (a re-run with an
    # activation event declared since derives what it now can)
    touched: set[int] = {r["account_id"] for r in rows if isinstance(r["account_id"], int)}
    touched |= {a for a in [*grouped.values(), *stored.values()] if isinstance(a, int)}
    onboarded = _derive(conn, sorted(touched), now=now, activation=activation, source=source)
    contacts = _land_contacts(conn, list(changed_users.values()), now=now, source=source)
    return EventsResult(source, len(rows), len(events) - len(rows), len(changed_users), onboarded, contacts)


def _trait(traits: Mapping[str, Any], *names: str, limit: int) -> str | None:
    for name in names:
        value = traits.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:limit]
    return None


def _contact_traits(traits: Mapping[str, Any]) -> dict[str, str]:
    """What an identify call's traits say of a contact: name (or first and last name), title, role."""
    name = _trait(traits, "name", limit=200)
    if name is None:
        parts = [_trait(traits, *keys, limit=100) for keys in (("firstName", "first_name"), ("lastName", "last_name"))]
        name = " ".join(p for p in parts if p) or None
    found = {"name": name, "title": _trait(traits, "title", limit=200), "role": _trait(traits, "role", limit=60)}
    return {k: v for k, v in found.items() if v is not None}


def _land_contacts(conn: Connection, users: Sequence[Mapping[str, Any]], *, now: datetime, source: str) -> int:
    """The contact of each product user with an email and an account: created when the account has
    none with that address (primary when the account has no primary contact), its name, title and
    role updated from the traits. Returns the contacts created or changed; idempotent."""
    wanted: dict[tuple[int, str], dict[str, str]] = {}
    for user in users:
        email, account_id = user.get("email"), user.get("account_id")
        if isinstance(email, str) and email and isinstance(account_id, int):
            wanted[(account_id, email)] = _contact_traits(user.get("traits") or {})
    if not wanted:
        return 0
    accounts = sorted({a for a, _ in wanted})
    existing: dict[tuple[int, str], dict[str, Any]] = {}
    has_primary: set[int] = set()
    for chunk in chunks(accounts, CHUNK):
        columns = (_CONTACT.c.id, _CONTACT.c.account_id, _CONTACT.c.email, _CONTACT.c.name, _CONTACT.c.title,
                   _CONTACT.c.role, _CONTACT.c.is_primary)  # fmt: skip
        for found in conn.execute(select(*columns).where(_CONTACT.c.account_id.in_(chunk))).mappings():
            existing.setdefault((found["account_id"], found["email"].lower()), dict(found))
            if found["is_primary"]:
                has_primary.add(found["account_id"])
    inserts: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    changed = 0
    label = Path(source).name
    for (account_id, email), traits in sorted(wanted.items()):
        old = existing.get((account_id, email))
        if old is None:
            primary = account_id not in has_primary
            has_primary.add(account_id)
            inserts.append(
                {
                    "account_id": account_id, "email": email, "name": traits.get("name"),
                    "title": traits.get("title"), "role": traits.get("role"), "timezone": None,
                    "is_primary": primary, "unsubscribed": False, "unsubscribed_channels": [],
                    "unsubscribed_at": None, "preferences": {}, "slack_user_id": None, "created_at": now,
                }
            )  # fmt: skip
            summary = f"contact {email} added from product events ({label})"
            events.append(import_event(account_id, now, summary, {"email": email, **traits}))
            continue
        updates = {k: v for k, v in traits.items() if old.get(k) != v}
        if updates:
            conn.execute(update(_CONTACT).where(_CONTACT.c.id == old["id"]).values(**updates))
            summary = f"contact {email} updated from product events ({label}): {', '.join(sorted(updates))}"
            events.append(import_event(account_id, now, summary, {"email": email, **updates}))
            changed += 1
    if inserts:
        conn.execute(insert(_CONTACT), inserts)
        apply_suppressions(conn, now, {row["email"] for row in inserts})
    if events:
        conn.execute(insert(_TIMELINE), events)
    return changed + len(inserts)


def _derive(conn: Connection, accounts: list[int], *, now: datetime, activation: str | None, source: str) -> int:
    """last_seen_at and onboarded_at of ``accounts``, from their stored events (set-based)."""
    onboarded = 0
    for chunk in chunks(accounts, CHUNK):
        latest = select(func.max(_EVENT.c.occurred_at)).where(_EVENT.c.account_id == _ACCOUNT.c.id).scalar_subquery()
        conn.execute(update(_ACCOUNT).where(_ACCOUNT.c.id.in_(chunk)).values(last_seen_at=latest))
        if activation is None:
            continue
        first = (
            select(_EVENT.c.account_id, func.min(_EVENT.c.occurred_at))
            .where(_EVENT.c.account_id.in_(chunk), _EVENT.c.type == "track", _EVENT.c.name == activation)
            .group_by(_EVENT.c.account_id)
        )
        firsts = dict(conn.execute(first).all())
        waiting = conn.execute(
            select(_ACCOUNT.c.id).where(_ACCOUNT.c.id.in_(list(firsts)), _ACCOUNT.c.onboarded_at.is_(None))
        ).scalars()
        for account_id in waiting:
            at = firsts[account_id]
            conn.execute(update(_ACCOUNT).where(_ACCOUNT.c.id == account_id).values(onboarded_at=at, updated_at=now))
            summary = f"onboarded: first {activation!r} event at {at:%Y-%m-%d %H:%M} UTC (from {Path(source).name})"
            conn.execute(
                insert(_TIMELINE), import_event(account_id, now, summary, {"event": activation, "at": at.isoformat()})
            )
            onboarded += 1
    return onboarded


def import_events(
    engine: Engine, path: str | Path, *, now: datetime, activation: str | None = None, dry_run: bool = False
) -> EventsResult:
    """Import a file of Segment calls (JSON Lines or CSV; see the module's documentation), all or nothing."""
    records = read_records(path, "events", ["type", "timestamp"])
    events = event_records(records)
    result = EventsResult(records.name)

    def work(conn: Connection) -> None:
        nonlocal result
        result = land_events(conn, records.name, events, now=now, activation=activation, write=not dry_run)

    write_all_or_nothing(engine, records.name, work)
    logger.info("%s", result.line())
    return result


def event_records(records: CsvFile) -> list[EventRecord]:
    """The Segment calls of ``records``; every bad record a problem, raised at once as
    :class:`DataImportError`."""
    rows = validate_rows(records, _EventRow)
    settle_problems(records, skip_invalid=False)
    return [_record(record.line, row) for record, row in rows]


def land_calls(
    engine: Engine, source: str, calls: Sequence[Any], *, now: datetime, activation: str | None
) -> EventsResult:
    """Land Segment calls received over HTTP (``retain web``'s ``/v1/...``) through the same path as
    a file of them: each checked (every bad one a problem, raised at once as
    :class:`DataImportError`, nothing written), stored once by its message id."""
    events = event_records(object_records(source, calls))
    result = EventsResult(source)

    def work(conn: Connection) -> None:
        nonlocal result
        result = land_events(conn, source, events, now=now, activation=activation)

    write_all_or_nothing(engine, source, work)
    logger.info("%s", result.line())
    return result
