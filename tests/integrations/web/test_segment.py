"""Product events over HTTP in the Segment spec (``/v1/identify``, ``/v1/group``, ``/v1/track``,
``/v1/page``, ``/v1/screen``, ``/v1/alias``, ``/v1/batch``) through the ASGI app, with a write key, on accounts brought in by ``retain accounts
import``: they land exactly where ``retain events import`` lands the same calls from a file; a
call sent again changes nothing; a bad call or key changes nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from integrations.sources import import_events
from integrations.web import create_app
from models import Account, ProductEvent, ProductUser, Settings, make_engine, upgrade

from ._book import book
from .conftest import LINKS, T0, Client, Clock, make_client

KEY = "segment-write-key"
AUTH = (KEY, "")
CALLS: list[dict[str, Any]] = [
    {"type": "group", "userId": "u1", "groupId": "acme", "traits": {"name": "Acme"}, "messageId": "m1",
     "timestamp": "2027-03-01T10:00:00Z"},
    {"type": "identify", "userId": "u1", "traits": {"email": "Dana@Acme.example", "name": "Dana"}, "messageId": "m2",
     "timestamp": "2027-03-01T10:00:05Z"},
    {"type": "track", "userId": "u1", "event": "Report Shared", "properties": {"pages": 3}, "messageId": "m3",
     "timestamp": "2027-03-01T11:00:00Z", "context": {"ip": "203.0.113.1"}},
    {"type": "track", "userId": "u1", "event": "Onboarding Completed", "messageId": "m4",
     "timestamp": "2027-03-02T09:30:00Z"},
]  # fmt: skip


@pytest.fixture
def client(sqlite_engine: Engine, clock: Clock, tmp_path: Path) -> Client:
    book(sqlite_engine, tmp_path)
    return make_client_with_key(sqlite_engine, clock)


def make_client_with_key(engine: Engine, clock: Clock) -> Client:
    app = create_app(engine, Settings(segment_write_key=KEY), links=LINKS, now=clock.now,  # type: ignore[call-arg]
                     rate_clock=clock.tick, activation_event="Onboarding Completed")  # fmt: skip
    return Client(app)


def _stored(engine: Engine) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...]]:
    with engine.connect() as conn:
        events = conn.execute(
            select(ProductEvent.message_id, ProductEvent.type, ProductEvent.name, ProductEvent.user_id,
                   ProductEvent.occurred_at, ProductEvent.properties, Account.external_id)
            .join(Account, Account.id == ProductEvent.account_id, isouter=True)
            .order_by(ProductEvent.message_id)
        ).all()  # fmt: skip
        users = conn.execute(
            select(ProductUser.user_id, ProductUser.email, ProductUser.traits, Account.external_id).join(
                Account, Account.id == ProductUser.account_id, isouter=True
            )
        ).all()
        acme = conn.execute(
            select(Account.last_seen_at, Account.onboarded_at).where(Account.external_id == "acme")
        ).one()
    return [tuple(e) for e in events], [tuple(u) for u in users], tuple(acme)


def test_single_calls_and_a_batch_land_where_the_file_import_lands_them(
    sqlite_engine: Engine, client: Client, tmp_path: Path
) -> None:
    group, identify, *tracks = CALLS
    for path, call in [("group", group), ("identify", identify)]:
        body = {k: v for k, v in call.items() if k != "type"}  # the path says which call it is
        answer = client.post(f"/v1/{path}", json=body, auth=AUTH)
        assert answer.status_code == 200 and answer.json()["stored"] == 1, answer.text
    answer = client.post("/v1/batch", json={"batch": tracks}, auth=AUTH)
    assert answer.json() == {"success": True, "stored": 2, "already_stored": 0, "onboarded": 1}
    over_http = _stored(sqlite_engine)
    assert over_http[2] == (T0.replace(day=2, hour=9, minute=30), T0.replace(day=2, hour=9, minute=30))

    other = make_engine(f"sqlite:///{tmp_path / 'file.db'}")
    upgrade(other)
    (tmp_path / "second").mkdir()
    book(other, tmp_path / "second")
    (tmp_path / "calls.jsonl").write_text("\n".join(json.dumps(c) for c in CALLS) + "\n", encoding="utf-8")
    import_events(other, tmp_path / "calls.jsonl", now=T0, activation="Onboarding Completed")
    assert _stored(other) == over_http  # one definition of what an event means
    other.dispose()


def test_a_call_sent_again_changes_nothing(sqlite_engine: Engine, client: Client) -> None:
    assert client.post("/v1/batch", json={"batch": CALLS}, auth=AUTH).json()["stored"] == 4
    before = _stored(sqlite_engine)
    again = client.post("/v1/batch", json={"batch": CALLS}, auth=AUTH)
    assert again.json() == {"success": True, "stored": 0, "already_stored": 4, "onboarded": 0}
    assert _stored(sqlite_engine) == before


def test_a_call_without_a_timestamp_happened_when_it_was_received(sqlite_engine: Engine, client: Client) -> None:
    client.post("/v1/group", json={"userId": "u9", "groupId": "kraft"}, auth=AUTH)
    answer = client.post("/v1/track", json={"userId": "u9", "event": "Login", "writeKey": KEY})  # the key in the body
    assert answer.status_code == 200
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(ProductEvent.occurred_at).where(ProductEvent.name == "Login")).scalar_one() == T0


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ProductEvent)).scalar_one())


@pytest.mark.parametrize(
    ("body", "auth", "status", "words"),
    [
        ({"batch": CALLS}, None, 401, "a write key is required"),
        ({"batch": CALLS}, ("guessed-key", ""), 401, "a write key is required"),
        ({"batch": CALLS, "writeKey": "guessed"}, None, 401, "a write key is required"),
        ({"batch": []}, AUTH, 400, "a batch is"),
        ({"batch": [*CALLS, {"type": "track", "userId": "u1", "messageId": "m5"}]}, AUTH, 400,
         "batch[4]: a track call needs 'event'"),
        ({"batch": [{"type": "group", "userId": "u2", "groupId": "acme-x", "messageId": "m6"}, *CALLS]}, AUTH, 400,
         "unknown account 'acme-x'"),
        ({"batch": [{"type": "purchase", "userId": "u1", "messageId": "m7"}]}, AUTH, 400, "not a Segment call"),
        ({"batch": [{"type": "track", "event": "Login", "messageId": "m8"}]}, AUTH, 400,
         "batch[0]: a call needs 'userId' or 'anonymousId'"),
        ({"batch": [{"type": "alias", "userId": "u1", "messageId": "m9"}]}, AUTH, 400, "needs 'previousId'"),
        ({"batch": ["not an object"]}, AUTH, 400, "batch[0]: not a JSON object"),
    ],
)  # fmt: skip
def test_a_bad_key_or_a_bad_call_stores_nothing(
    sqlite_engine: Engine, client: Client, body: dict[str, Any], auth: Any, status: int, words: str
) -> None:
    answer = client.post("/v1/batch", json=body, auth=auth)
    assert answer.status_code == status, answer.text
    assert words in json.dumps(answer.json()), answer.json()
    assert _count(sqlite_engine) == 0


def test_not_json_and_an_unconfigured_key(sqlite_engine: Engine, client: Client, clock: Clock) -> None:
    assert client.post("/v1/track", content=b"{oops", auth=AUTH).status_code == 400
    unconfigured = make_client(sqlite_engine, clock).post("/v1/track", json=CALLS[2], auth=AUTH)
    assert unconfigured.status_code == 503 and "RETAIN_SEGMENT_WRITE_KEY" in unconfigured.json()["error"]


# what a web site's Segment library sends: a page view before sign-up (an anonymous id only), the
# sign-up (identify with both ids, and an alias), the account (group), then an app screen
SITE: list[dict[str, Any]] = [
    {"type": "page", "anonymousId": "anon-7", "name": "Pricing", "properties": {"path": "/pricing"},
     "messageId": "s1", "timestamp": "2027-02-27T09:00:00Z"},
    {"type": "identify", "userId": "u5", "anonymousId": "anon-7", "traits": {"email": "lee@acme.example"},
     "messageId": "s2", "timestamp": "2027-02-27T09:05:00Z"},
    {"type": "alias", "previousId": "anon-7", "userId": "u5", "messageId": "s3", "timestamp": "2027-02-27T09:05:01Z"},
    {"type": "group", "userId": "u5", "groupId": "acme", "messageId": "s4", "timestamp": "2027-02-27T09:06:00Z"},
    {"type": "screen", "userId": "u5", "name": "Dashboard", "messageId": "s5", "timestamp": "2027-02-28T10:00:00Z"},
]  # fmt: skip


def test_page_views_anonymous_users_and_aliases_land_as_the_file_import_lands_them(
    sqlite_engine: Engine, client: Client, tmp_path: Path
) -> None:
    answer = client.post("/v1/batch", json={"batch": SITE}, auth=AUTH)
    assert answer.json() == {"success": True, "stored": 5, "already_stored": 0, "onboarded": 0}, answer.text
    events, users, (last_seen, _) = _stored(sqlite_engine)
    # the anonymous page view belongs to acme: its id is the same user as u5 (alias), grouped with acme
    assert [(e[0], e[1], e[2], e[3], e[6]) for e in events] == [
        ("s1", "page", "Pricing", "anon-7", "acme"),
        ("s2", "identify", None, "u5", "acme"),
        ("s3", "alias", None, "u5", "acme"),
        ("s4", "group", None, "u5", "acme"),
        ("s5", "screen", "Dashboard", "u5", "acme"),
    ]
    assert sorted((u[0], u[3]) for u in users) == [("anon-7", "acme"), ("u5", "acme")]
    assert last_seen == T0.replace(month=2, day=28, hour=10)  # a screen view is the user being seen

    other = make_engine(f"sqlite:///{tmp_path / 'file.db'}")
    upgrade(other)
    (tmp_path / "second").mkdir()
    book(other, tmp_path / "second")
    (tmp_path / "site.jsonl").write_text("\n".join(json.dumps(c) for c in SITE) + "\n", encoding="utf-8")
    import_events(other, tmp_path / "site.jsonl", now=T0)
    assert _stored(other) == _stored(sqlite_engine)
    other.dispose()


def test_an_alias_before_the_group_call_gives_the_account_to_the_earlier_id(
    sqlite_engine: Engine, client: Client
) -> None:
    first, _, alias, group, _ = SITE
    assert client.post("/v1/batch", json={"batch": [first, alias]}, auth=AUTH).json()["stored"] == 2
    assert [e[6] for e in _stored(sqlite_engine)[0]] == [None, None]  # no account known yet
    assert client.post("/v1/group", json=group, auth=AUTH).json()["stored"] == 1  # later, another request
    assert [(e[0], e[6]) for e in _stored(sqlite_engine)[0]] == [("s1", "acme"), ("s3", "acme"), ("s4", "acme")]


def test_a_devices_clock_is_corrected_by_sent_at(sqlite_engine: Engine, client: Client) -> None:
    """Segment's rule: timestamp = received - (sentAt - timestamp). The device's clock is an hour
    fast; the batch was received at T0."""
    client.post("/v1/group", json={"userId": "u9", "groupId": "kraft"}, auth=AUTH)
    fast = {"type": "track", "userId": "u9", "event": "Login", "messageId": "c1",
            "timestamp": "2027-03-01T12:50:00Z"}  # fmt: skip
    batch = {"batch": [fast], "sentAt": "2027-03-01T13:00:00Z"}
    assert client.post("/v1/batch", json=batch, auth=AUTH).json()["stored"] == 1
    single = {**fast, "messageId": "c2", "sentAt": "2027-03-01T13:00:00Z"}
    single.pop("type")
    assert client.post("/v1/track", json=single, auth=AUTH).json()["stored"] == 1
    with sqlite_engine.connect() as conn:
        moments = conn.execute(select(ProductEvent.occurred_at).where(ProductEvent.name == "Login")).scalars().all()
    assert moments == [T0 - timedelta(minutes=10)] * 2
