"""Usage, tickets and product events in (CSV and JSON Lines), replies logged by hand, and plays that
enter on an event or wait for one: through the real CLI on a real SQLite file where a person
would use it, on SQLite and PostgreSQL where the engine reads it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import cli
from cli._app import console
from flows.engine.tick import tick
from integrations.sources import import_accounts, import_events
from models import (
    Account,
    Contact,
    Enrollment,
    ProductEvent,
    ProductUser,
    SupportTicket,
    TimelineEvent,
    Touch,
    UsageMetric,
    make_engine,
)
from playbooks import ENROLLMENT, compile_expression, compile_file, env_for, evaluate
from tests._sqlite import migrated_sqlite

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
NOW = datetime(2027, 3, 10, 15, 0, tzinfo=UTC)

Retain = Callable[..., tuple[int, str, str]]


@pytest.fixture
def retain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Retain:
    """``retain ARGS…`` on a new, initialised SQLite file; returns (exit code, stdout, stderr)."""
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setattr(console, "width", 200)
    assert cli.main(["--database-url", url, "init"]) == 0
    capsys.readouterr()

    def run(*args: str | Path) -> tuple[int, str, str]:
        code = cli.main(["--database-url", url, *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    run.engine = make_engine(url)  # type: ignore[attr-defined]
    return run


def _load_accounts(retain: Retain) -> None:
    assert retain("accounts", "import", SAMPLES / "accounts.csv")[0] == 0
    assert retain("contacts", "import", SAMPLES / "contacts.csv")[0] == 0


def _engine(retain: Retain) -> Engine:
    return retain.engine  # type: ignore[attr-defined,no-any-return]


# --- accounts: the lifecycle moments are real columns -------------------------------------------


def test_lifecycle_moments_of_an_accounts_file_are_columns_not_custom_fields(retain: Retain) -> None:
    code, out, _ = retain("accounts", "import", SAMPLES / "accounts.csv")
    assert code == 0
    assert "custom fields: tier" in out  # and nothing else
    with Session(_engine(retain)) as s:
        soylent = s.exec(select(Account).where(Account.external_id == "soylent")).one()
        assert soylent.churned_at == datetime(2027, 3, 7, 9, 0, tzinfo=UTC)
        assert soylent.cancelled_at == datetime(2027, 2, 20, tzinfo=UTC)  # a bare date: its midnight UTC
        wayne = s.exec(select(Account).where(Account.external_id == "wayne")).one()
        assert wayne.reactivated_at == datetime(2027, 3, 1, tzinfo=UTC)
        assert wayne.onboarded_at == datetime(2025, 6, 1, tzinfo=UTC)
        umbrella = s.exec(select(Account).where(Account.external_id == "umbrella")).one()
        assert umbrella.renewed_at == datetime(2026, 4, 28, 14, 0, tzinfo=UTC)
        assert umbrella.custom == {"tier": "enterprise"}


def test_a_bad_moment_is_refused_with_its_row(retain: Retain, tmp_path: Path) -> None:
    bad = tmp_path / "accounts.csv"
    bad.write_text("external_id,name,churned_at\nx,X,2027-13-01\ny,Y,03/01/2027\n", encoding="utf-8")
    code, _, err = retain("accounts", "import", bad)
    assert code == 1
    assert "row 2, column 'churned_at': '2027-13-01' is not a date or time" in err
    assert "row 3, column 'churned_at': '03/01/2027' is not a date or time" in err


# --- usage ---------------------------------------------------------------------------------------


def test_usage_daily_and_raw_events_land_once(retain: Retain) -> None:
    _load_accounts(retain)
    code, out, _ = retain("usage", "import", SAMPLES / "usage.csv")
    assert (code, out.strip()) == (0, f"{SAMPLES / 'usage.csv'}: usage: 5 new, 0 changed, 0 unchanged")
    code, out, _ = retain("usage", "import", SAMPLES / "usage_events.jsonl")
    assert code == 0 and "usage: 2 new, 0 changed, 0 unchanged" in out
    # again: nothing changes
    assert "usage: 0 new, 0 changed, 5 unchanged" in retain("usage", "import", SAMPLES / "usage.csv")[1]
    assert "usage: 0 new, 0 changed, 2 unchanged" in retain("usage", "import", SAMPLES / "usage_events.jsonl")[1]
    with Session(_engine(retain)) as s:
        exports = s.exec(
            select(UsageMetric).where(UsageMetric.metric == "exports").order_by(col(UsageMetric.day))
        ).all()
        # raw events summed per UTC day: one on the 8th (value 3), two on the 9th
        assert [(u.day, u.value) for u in exports] == [(date(2027, 3, 8), 3.0), (date(2027, 3, 9), 2.0)]
        assert len(s.exec(select(UsageMetric)).all()) == 7


def test_usage_file_with_bad_rows_writes_nothing_and_lists_every_one(retain: Retain, tmp_path: Path) -> None:
    _load_accounts(retain)
    bad = tmp_path / "usage.csv"
    bad.write_text(
        "account_external_id,metric,day,value,timestamp\n"
        "initech,logins,2027-03-08,4,\n"
        "nobody,logins,2027-03-08,4,\n"
        "initech,logins,2027-03-08,5,\n"
        "hooli,logins,2027-03-08,-1,\n"
        "hooli,logins,2027-03-08,1,2027-03-08T10:00:00Z\n",
        encoding="utf-8",
    )
    code, _, err = retain("usage", "import", bad)
    assert code == 1
    assert "row 4, column 'day': duplicate: account 'initech', metric 'logins' on 2027-03-08 is already on row 2" in err
    assert "row 5, column 'value': '-1' is not a number of 0 or more" in err
    assert "row 6: give either 'day' (a daily value) or 'timestamp' (one raw event), not both or neither" in err
    assert "nothing was written" in err
    # the cells are fine once fixed, but an unknown account still stops the whole file
    bad.write_text("account_external_id,metric,day,value\ninitech,logins,2027-03-08,4\nnobody,logins,2027-03-08,4\n")
    code, _, err = retain("usage", "import", bad)
    assert code == 1
    assert "row 3, column 'account_external_id': unknown account 'nobody'" in err
    with Session(_engine(retain)) as s:
        assert s.exec(select(UsageMetric)).all() == []


# --- tickets -------------------------------------------------------------------------------------


def test_tickets_upsert_by_external_id(retain: Retain, tmp_path: Path) -> None:
    _load_accounts(retain)
    assert "tickets: 3 new, 0 changed, 0 unchanged" in retain("tickets", "import", SAMPLES / "tickets.csv")[1]
    assert "tickets: 0 new, 0 changed, 3 unchanged" in retain("tickets", "import", SAMPLES / "tickets.csv")[1]
    update = tmp_path / "tickets.jsonl"
    update.write_text(
        json.dumps(
            {"externalId": "ZD-1002", "accountExternalId": "hooli", "openedAt": "2027-03-08T14:30:00Z",
             "status": "solved", "closedAt": "2027-03-10T09:00:00Z", "satisfaction": 5}
        )
        + "\n",
        encoding="utf-8",
    )  # fmt: skip
    assert "tickets: 0 new, 1 changed, 0 unchanged" in retain("tickets", "import", update)[1]
    with Session(_engine(retain)) as s:
        ticket = s.exec(select(SupportTicket).where(SupportTicket.external_id == "ZD-1002")).one()
        assert (ticket.status, ticket.satisfaction, ticket.subject) == ("solved", 5, "SSO login fails for new users")
        assert ticket.closed_at == datetime(2027, 3, 10, 9, 0, tzinfo=UTC)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "external_id,account_external_id,opened_at,status,satisfaction\n"
        "T1,hooli,2027-03-01,closed,\nT2,hooli,2027-03-01,open,9\n"
    )
    code, _, err = retain("tickets", "import", bad)
    assert code == 1
    assert "row 2, column 'status': 'closed' is not a ticket status: use one of open, pending, solved" in err
    assert "row 3, column 'satisfaction': '9' is not a satisfaction rating" in err


# --- product events ------------------------------------------------------------------------------


def test_events_land_once_tie_users_to_accounts_and_set_onboarded_and_last_seen(retain: Retain) -> None:
    _load_accounts(retain)
    code, out, _ = retain("events", "import", SAMPLES / "events.jsonl", "--activation-event", "Onboarding Completed")
    assert code == 0, out
    assert "events: 10 new, 0 already stored; 4 users added or changed; 1 accounts onboarded" in out
    assert "1 contacts added or updated" in out  # nina, of northwind (gary is a contact already)
    code, out, _ = retain("events", "import", SAMPLES / "events.jsonl", "--activation-event", "Onboarding Completed")
    assert "events: 0 new, 10 already stored; 0 users added or changed; 0 accounts onboarded" in out
    assert "0 contacts added or updated" in out
    with Session(_engine(retain)) as s:
        accounts = {a.external_id: a for a in s.exec(select(Account)).all()}
        assert accounts["globex"].onboarded_at == datetime(2027, 3, 5, 15, 30, tzinfo=UTC)
        assert accounts["globex"].last_seen_at == datetime(2027, 3, 5, 15, 30, tzinfo=UTC)
        assert accounts["hooli"].onboarded_at == datetime(2025, 5, 1, tzinfo=UTC)  # already set: kept
        assert accounts["hooli"].last_seen_at == datetime(2027, 3, 9, 9, 0, tzinfo=UTC)
        # the Login came before hank's group call: it belongs to hooli all the same
        login = s.exec(select(ProductEvent).where(ProductEvent.name == "Login", ProductEvent.user_id == "u-hank")).one()
        assert login.account_id == accounts["hooli"].id
        gary = s.get(ProductUser, "u-gary")
        assert gary is not None and (gary.email, gary.account_id) == ("gary@globex.example", accounts["globex"].id)
        onboarded = s.exec(select(TimelineEvent).where(col(TimelineEvent.summary).startswith("onboarded"))).all()
        assert [e.account_id for e in onboarded] == [accounts["globex"].id]


def test_an_identify_with_an_email_is_the_contact_of_its_account(retain: Retain, tmp_path: Path) -> None:
    """A user known only from product events becomes a contact of the account its group call (or
    its identify's groupId) names, with the name, title and role its traits give; a later identify
    updates them; a suppressed address is never contactable; a re-run changes nothing."""
    _load_accounts(retain)
    suppressed = tmp_path / "suppressed.csv"
    suppressed.write_text("email,reason\nzed@duff.example,asked us not to write\n", encoding="utf-8")
    assert retain("contacts", "suppress", suppressed)[0] == 0
    lines = [
        {"type": "identify", "messageId": "i-1", "userId": "u-ann", "timestamp": "2027-03-01T10:00:00Z",
         "traits": {"email": "Ann@Duff.example", "first_name": "Ann", "last_name": "Archer"}},
        {"type": "group", "messageId": "g-1", "userId": "u-ann", "groupId": "duff", "timestamp": "2027-03-01T10:00:01Z"},
        {"type": "identify", "messageId": "i-2", "userId": "u-zed", "groupId": "duff",
         "timestamp": "2027-03-01T11:00:00Z", "traits": {"email": "zed@duff.example", "name": "Zed"}},
    ]  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    code, out, err = retain("events", "import", events)
    assert code == 0, (out, err)
    assert "2 contacts added or updated" in out
    assert "0 contacts added or updated" in retain("events", "import", events)[1]
    later = tmp_path / "later.jsonl"
    later.write_text(
        json.dumps({"type": "identify", "messageId": "i-3", "userId": "u-ann", "timestamp": "2027-03-05T10:00:00Z",
                    "traits": {"title": "Head of Support", "role": "champion"}}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    assert "1 contacts added or updated" in retain("events", "import", later)[1]
    with Session(_engine(retain)) as s:
        duff = s.exec(select(Account).where(Account.external_id == "duff")).one()
        contacts = {c.email: c for c in s.exec(select(Contact).where(Contact.account_id == duff.id)).all()}
        timeline = [e.summary for e in s.exec(select(TimelineEvent).where(TimelineEvent.account_id == duff.id)).all()]
    ann, zed = contacts["ann@duff.example"], contacts["zed@duff.example"]
    assert (ann.name, ann.title, ann.role) == ("Ann Archer", "Head of Support", "champion")
    assert ann.is_primary and not zed.is_primary  # duff had no contact: the first one is its primary
    assert zed.unsubscribed and not ann.unsubscribed  # zed's address is suppressed
    assert any("contact ann@duff.example added from product events" in t for t in timeline)
    assert any("contact ann@duff.example updated from product events (later.jsonl): role, title" in t for t in timeline)


def test_events_csv_with_bad_lines_writes_nothing(retain: Retain, tmp_path: Path) -> None:
    _load_accounts(retain)
    bad = tmp_path / "events.csv"
    bad.write_text(
        "type,user_id,timestamp,event,group_id,properties\n"
        "track,u1,2027-03-01T10:00:00Z,Login,,{}\n"
        "group,u1,2027-03-01T10:00:00Z,,nobody,\n"
        "track,u1,2027-03-01T10:00:00Z,,,\n"
        "purchase,u1,2027-03-01T10:00:00Z,,,\n"
        'track,u1,yesterday,Login,,"[1]"\n',
        encoding="utf-8",
    )
    code, _, err = retain("events", "import", bad)
    assert code == 1
    assert "row 4: a track call needs 'event'" in err
    assert "row 5, column 'type': 'purchase' is not a Segment call: use track, identify, group, page" in err
    assert "row 6, column 'timestamp': 'yesterday' is not a date or time" in err
    assert "row 6, column 'properties': '[1]' is not a JSON object" in err
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        '{"type": "group", "userId": "u1", "groupId": "nobody", "timestamp": "2027-03-01T10:00:00Z"}\n{"type": \n'
    )
    code, _, err = retain("events", "import", jsonl)
    assert code == 1 and "row 2: not a JSON object" in err
    with Session(_engine(retain)) as s:
        assert s.exec(select(ProductEvent)).all() == []


# --- replies -------------------------------------------------------------------------------------


def test_a_reply_logged_by_hand_is_what_touches_replied_reads(retain: Retain) -> None:
    _load_accounts(retain)
    assert retain("run", "onboarding", "--as-of", NOW.isoformat(), "--no-prefect")[0] == 0
    # the contact policy spreads the first notes by a few minutes: the next tick delivers them
    assert retain("run", "onboarding", "--as-of", "2027-03-10T15:10:00Z", "--no-prefect")[0] == 0
    engine = _engine(retain)
    with Session(engine) as s:
        northwind = s.exec(select(Account).where(Account.external_id == "northwind")).one()
        sent = select(Touch).where(
            Touch.account_id == northwind.id, col(Touch.contact_id).is_not(None), col(Touch.sent_at).is_not(None)
        )
        touch = s.exec(sent).one()  # the welcome note to the admin
        step = touch.step_id
    assert step is not None
    code, out, _ = retain(
        "touches", "reply", "--account", "northwind", "--playbook", "onboarding", "--at", "2027-03-11T09:00:00Z"
    )
    assert (
        code == 0 and f"touch {touch.key} (northwind, onboarding/{step}) marked replied at 2027-03-11 09:00 UTC" in out
    )
    code, out, _ = retain("touches", "reply", touch.key)
    assert code == 0 and "was already marked replied at 2027-03-11 09:00 UTC" in out
    with Session(engine) as s:
        enrollment = s.exec(select(Enrollment).where(Enrollment.account_id == northwind.id)).one()
        account = s.get(Account, enrollment.account_id)
        expr = compile_expression(f'touches("{step}").replied', ENROLLMENT)
        assert evaluate(expr, env_for(s, account, now=NOW, today=NOW.date(), enrollment=enrollment)) is True
        assert s.exec(select(TimelineEvent).where(TimelineEvent.kind == "replied")).one().step_id == step
    code, _, err = retain("touches", "reply", "--account", "hooli", "--playbook", "onboarding")
    assert code == 1 and "playbook 'onboarding' has sent no message to account 'hooli'" in err
    code, _, err = retain("touches", "reply", "no-such-key")
    assert code == 1 and "no touch with key 'no-such-key'" in err


# --- entering on an event, waiting for one ---------------------------------------------------------

ESCALATION = """\
playbook: escalation
name: Escalated ticket
lifecycle: custom
custom_fields: {tier: text}
audience: account.status == "active"
entry:
  reentry: always
  on_event:
    track: Ticket Escalated
    properties: {priority: text}
    when: event.properties.priority == "urgent" and account.custom.tier != "smb"
steps:
  - id: call_booked
    kind: wait_for
    event:
      track: Meeting Booked
      properties: {host: text}
      when: event.properties.host == "csm"
    timeout: 7 days
    on_timeout: no_call
  - id: done
    kind: exit
    outcome: call_booked
  - id: no_call
    kind: exit
    outcome: no_call
"""


def _event(i: int, user: str, name: str, at: str, **properties: object) -> str:
    return json.dumps({"type": "track", "messageId": f"e{i}", "userId": user, "event": name, "timestamp": at,
                       "properties": properties})  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    if request.param == "sqlite":
        engine = migrated_sqlite(tmp_path / "retain.db")
        return engine
    return request.getfixturevalue("pg_clean")  # type: ignore[no-any-return]


def test_a_playbook_enters_once_per_event_at_the_tick_and_waits_for_another(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "escalation.yaml").write_text(ESCALATION, encoding="utf-8")
    shutil.copy(SAMPLES / "accounts.csv", tmp_path / "accounts.csv")
    import_accounts(engine, tmp_path / "accounts.csv", now=NOW)
    pb = compile_file(folder / "escalation.yaml")
    groups = "\n".join(
        json.dumps({"type": "group", "messageId": f"g-{who}", "userId": who, "groupId": account, "timestamp": "2027-03-01T00:00:00Z"})
        for who, account in [("u-hank", "hooli"), ("u-irene", "initech"), ("u-uma", "umbrella")]
    )  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                groups,
                _event(1, "u-hank", "Ticket Escalated", "2027-03-10T09:00:00Z", priority="urgent"),  # hooli (mid)
                _event(2, "u-hank", "Ticket Escalated", "2027-03-10T10:00:00Z", priority="urgent"),  # hooli again
                _event(3, "u-irene", "Ticket Escalated", "2027-03-10T09:00:00Z", priority="urgent"),  # initech is smb
                _event(4, "u-uma", "Ticket Escalated", "2027-03-10T09:00:00Z", priority="low"),  # not urgent
                _event(5, "u-uma", "Ticket Escalated", "2027-02-01T09:00:00Z", priority="urgent"),  # too old (7 days)
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    import_events(engine, events, now=NOW)
    first = tick(engine, pb, NOW, channels={})
    assert (first.enrolled, first.errors) == (1, [])
    with Session(engine) as s:
        rows = s.exec(select(Enrollment)).all()
        hooli = s.exec(select(Account).where(Account.external_id == "hooli")).one()
        assert [(e.account_id, e.status, e.step_id) for e in rows] == [(hooli.id, "active", "call_booked")]
        e1 = s.exec(select(ProductEvent).where(ProductEvent.message_id == "e1")).one()
        assert rows[0].trigger_event_id == e1.id  # the earliest event
    # the same tick again, and a later one: an active enrollment blocks, nothing doubles
    assert tick(engine, pb, NOW, channels={}).enrolled == 0
    # a meeting with someone else does not end the wait; one with the CSM does
    more = tmp_path / "more.jsonl"
    more.write_text(
        _event(6, "u-hank", "Meeting Booked", "2027-03-10T16:00:00Z", host="sales") + "\n",
        encoding="utf-8",
    )
    import_events(engine, more, now=NOW)
    tick(engine, pb, datetime(2027, 3, 10, 17, 0, tzinfo=UTC), channels={})
    with Session(engine) as s:
        assert s.exec(select(Enrollment)).one().status == "active"
    more.write_text(
        _event(7, "u-hank", "Meeting Booked", "2027-03-10T18:00:00Z", host="csm") + "\n",
        encoding="utf-8",
    )
    import_events(engine, more, now=NOW)
    tick(engine, pb, datetime(2027, 3, 10, 19, 0, tzinfo=UTC), channels={})
    with Session(engine) as s:
        done = s.exec(select(Enrollment).where(Enrollment.trigger_event_id == e1.id)).one()
        assert (done.status, done.outcome) == ("completed", "call_booked")
        # hooli's second escalation (e2) was never used: the next tick enrolls it, once (reentry: always)
    later = tick(engine, pb, datetime(2027, 3, 10, 20, 0, tzinfo=UTC), channels={})
    assert later.enrolled == 1
    assert tick(engine, pb, datetime(2027, 3, 10, 21, 0, tzinfo=UTC), channels={}).enrolled == 0
    with Session(engine) as s:
        triggers = sorted(e.trigger_event_id or 0 for e in s.exec(select(Enrollment)).all())
        e2 = s.exec(select(ProductEvent).where(ProductEvent.message_id == "e2")).one()
        assert triggers == sorted([e1.id or 0, e2.id or 0])


def test_undeclared_event_properties_are_refused_where_written(tmp_path: Path) -> None:
    from models import PlaybookError

    path = tmp_path / "escalation.yaml"
    path.write_text(ESCALATION.replace("properties: {priority: text}", "properties: {}"), encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        compile_file(path)
    message = str(info.value)
    assert "entry.on_event: when: undeclared field 'event.properties.priority'" in message
    assert "declare it under entry.on_event.properties: (priority: text, number or bool)" in message
