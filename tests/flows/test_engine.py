"""The engine as plain functions (no Prefect): enroll, settle, advance, and the outbox's view of
what it wrote. Playbooks are written inline; the ``engine`` fixture runs a test on SQLite and on
PostgreSQL where the two could behave differently (set-based SQL, claims, unique keys)."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy.engine import Engine

from flows.engine.advance import MAX_ERRORS
from flows.engine.enroll import enroll
from flows.engine.outbox import deliver
from flows.engine.revisions import RevisionCache, holdout_salt
from flows.engine.settle import settle
from flows.engine.tick import tick
from integrations.channels.base import Delivery, Receipt
from models import (
    Account,
    Contact,
    CsmTask,
    Enrollment,
    HealthScore,
    Outcome,
    PlaybookRevision,
    TimelineEvent,
    Touch,
    session,
    table_of,
)
from models.tables import HOLDOUT_BUCKETS, holdout_bucket
from playbooks import CompiledPlaybook, compile_source

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC

ACC = table_of(Account)
CON = table_of(Contact)
ENR = table_of(Enrollment)
TOUCH = table_of(Touch)
TL = table_of(TimelineEvent)


# --- helpers ------------------------------------------------------------------------------------


def playbook(source: str) -> CompiledPlaybook:
    return compile_source(textwrap.dedent(source).lstrip(), "test.yaml")


def add_accounts(engine: Engine, n: int, *, prefix: str = "acct", contacts: bool = True, **fields: Any) -> list[int]:
    """``n`` accounts (bulk Core insert), each with one primary contact; returns their ids."""
    rows = [
        {
            "external_id": f"{prefix}-{i:05d}",
            "name": f"{prefix.title()} {i}",
            "status": "active",
            "arr": 10_000.0,
            "currency": "USD",
            "custom": {},
            "created_at": T0 - timedelta(days=400),
            "updated_at": T0 - timedelta(days=400),
            **fields,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(insert(ACC), rows)
        ids = [
            r[0]
            for r in conn.execute(
                select(ACC.c.id).where(ACC.c.external_id.in_([r["external_id"] for r in rows])).order_by(ACC.c.id)
            )
        ]
        if contacts:
            conn.execute(
                insert(CON),
                [
                    {
                        "account_id": a,
                        "email": f"c{a}@example.com",
                        "name": f"Pat {a}",
                        "is_primary": True,
                        "unsubscribed": False,
                        "unsubscribed_channels": [],
                        "preferences": {},
                        "created_at": T0,
                    }
                    for a in ids
                ],
            )
    return ids


def set_account(engine: Engine, account_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(ACC).where(ACC.c.id == account_id).values(**values))


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def enrollments(engine: Engine, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(ENR).where(*where).order_by(ENR.c.account_id)))


def touches(engine: Engine, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(TOUCH).where(*where).order_by(TOUCH.c.id)))


def timeline(engine: Engine, *where: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(TL).where(*where).order_by(TL.c.id)))


def snapshot(engine: Engine) -> dict[str, int]:
    tables = {
        "enrollment": ENR,
        "touch": TOUCH,
        "timeline": TL,
        "task": CsmTask.__table__,  # type: ignore[attr-defined]
        "outcome": Outcome.__table__,  # type: ignore[attr-defined]
    }
    return {name: count(engine, table) for name, table in tables.items()}


class Recorder:
    """A channel that records what it is asked to send."""

    def __init__(self, name: str = "email", *, dedupes_by_key: bool = True) -> None:
        self.name = name
        self.dedupes_by_key = dedupes_by_key
        self.sent: list[Delivery] = []

    async def send(self, delivery: Delivery) -> Receipt:
        self.sent.append(delivery)
        return Receipt(provider_id=f"id-{len(self.sent)}")

    async def aclose(self) -> None:
        return None


def utc(value: Any) -> datetime:
    """A timestamp read back with Core (SQLite hands back what was stored), as aware UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


SIMPLE = """
playbook: simple
name: Simple
lifecycle: custom
audience: account.status == "active" and account.arr >= 5000
entry:
  reentry: {reentry}
  holdout: {holdout}
steps:
  - id: hello
    kind: email
    subject: "Hello {{{{ account.name }}}}"
    body: "Hi {{{{ contact.first_name }}}}, welcome."
  - id: ping
    kind: slack
    channel: "#cs"
    text: "{{{{ account.name }}}} was greeted"
  - id: todo
    kind: task
    title: "Call {{{{ account.name }}}}"
  - id: pause
    kind: wait
    for: 3 days
  - id: bye
    kind: exit
    outcome: greeted
"""


def simple(reentry: str = "never", holdout: str = "0%") -> CompiledPlaybook:
    return playbook(SIMPLE.format(reentry=reentry, holdout=holdout))


# --- enroll -------------------------------------------------------------------------------------


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_enroll_is_one_statement_and_respects_the_audience(engine: Engine, statements: list[str]) -> None:
    eligible = add_accounts(engine, 30, prefix="big")
    add_accounts(engine, 10, prefix="small", arr=100.0)
    add_accounts(engine, 10, prefix="gone", status="churned")
    pb = simple()
    with session(engine) as s:
        statements.clear()
        enrolled, holdout = enroll(s, pb, T0)
    # one INSERT ... SELECT, no row-by-row loop (on PostgreSQL inside the statement that also
    # writes the new enrollments' timeline lines: WITH new AS (INSERT INTO enrollment ...) ...)
    inserts = [st for st in statements if "INSERT INTO ENROLLMENT" in st.upper()]
    assert len(inserts) == 1, inserts
    assert "SELECT" in inserts[0].upper()
    assert (enrolled, holdout) == (30, 0)
    assert [e.account_id for e in enrollments(engine)] == eligible
    assert all(e.revision == pb.revision and e.step_id == "hello" for e in enrollments(engine))
    assert count(engine, TL, TL.c.kind == "enrolled") == 30


def test_the_enrolled_line_says_which_audience_clauses_held_and_their_values(engine: Engine) -> None:
    big = add_accounts(engine, 3, prefix="big", arr=12_000.0, renewal_date=date(2027, 4, 15))
    add_accounts(engine, 2, prefix="small", arr=100.0)
    pb = playbook(
        """
        playbook: why
        name: Why
        lifecycle: custom
        audience: account.status == "active" and account.arr >= 5000 and days_until(account.renewal_date) <= 90
        steps:
          - id: bye
            kind: exit
        """
    )
    with session(engine) as s:
        assert enroll(s, pb, T0) == (3, 0)
    rows = timeline(engine, TL.c.kind == "enrolled")
    assert sorted(r.account_id for r in rows) == big
    expected = [
        {"clause": 'account.status == "active"', "held": True, "values": {"account.status": "active"}},
        {"clause": "account.arr >= 5000", "held": True, "values": {"account.arr": 12000}},
        {
            "clause": "days_until(account.renewal_date) <= 90",
            "held": True,
            "values": {"days_until(account.renewal_date)": 45},
        },
    ]
    assert all(r.detail["audience"] == expected for r in rows)
    assert rows[0].summary == (
        'enrolled in Why: account.status == "active" (account.status = "active"); '
        "account.arr >= 5000 (account.arr = 12000); "
        "days_until(account.renewal_date) <= 90 (days_until(account.renewal_date) = 45)"
    )


def test_reentry_never(engine: Engine) -> None:
    add_accounts(engine, 5)
    pb = simple("never")
    tick(engine, pb, T0)
    tick(engine, pb, T0 + timedelta(days=4))  # the wait ends: everybody completes
    assert {e.status for e in enrollments(engine)} == {"completed"}
    report = tick(engine, pb, T0 + timedelta(days=400))
    assert report.enrolled == 0
    assert count(engine, ENR) == 5


def test_reentry_after_a_duration_counts_from_the_previous_start(engine: Engine) -> None:
    add_accounts(engine, 5)
    pb = simple("after 30 days")
    tick(engine, pb, T0)
    assert tick(engine, pb, T0 + timedelta(days=1)).enrolled == 0  # never while one is active
    tick(engine, pb, T0 + timedelta(days=4))
    assert {e.status for e in enrollments(engine)} == {"completed"}
    assert tick(engine, pb, T0 + timedelta(days=29)).enrolled == 0
    assert tick(engine, pb, T0 + timedelta(days=31)).enrolled == 5
    assert count(engine, ENR) == 10
    assert count(engine, ENR, ENR.c.status == "active") == 5


def test_holdout_is_stable_and_about_the_configured_share(engine: Engine) -> None:
    ids = add_accounts(engine, 400)
    pb = simple(holdout="25%")
    with session(engine) as s:
        enrolled, holdout = enroll(s, pb, T0)
    assert enrolled == 400
    assert 70 <= holdout <= 130, holdout  # 100 expected; a binomial sd is ~9
    first = {e.account_id for e in enrollments(engine) if e.holdout}
    assert len(first) == holdout
    # the same accounts again, from scratch and at another time
    with engine.begin() as conn:
        conn.execute(delete(TL))
        conn.execute(delete(ENR))
    with session(engine) as s:
        enroll(s, pb, T0 + timedelta(days=3))
    again = {e.account_id for e in enrollments(engine) if e.holdout}
    assert again == first
    # and exactly those a stable hash of the external id puts there
    with engine.connect() as conn:
        ext = dict(conn.execute(select(ACC.c.id, ACC.c.external_id)).all())
    salt = holdout_salt(pb.id)
    expected = {a for a in ids if (holdout_bucket(ext[a]) + salt) % HOLDOUT_BUCKETS < 0.25 * HOLDOUT_BUCKETS}
    assert again == expected
    # another playbook holds out other accounts
    other = playbook(SIMPLE.format(reentry="never", holdout="25%").replace("playbook: simple", "playbook: other"))
    with session(engine) as s:
        enroll(s, other, T0)
    theirs = {e.account_id for e in enrollments(engine, ENR.c.playbook == "other") if e.holdout}
    assert theirs != first


def test_holdouts_are_never_contacted(sqlite_engine: Engine) -> None:
    add_accounts(sqlite_engine, 60)
    pb = simple(holdout="50%")
    tick(sqlite_engine, pb, T0)
    held = {e.id for e in enrollments(sqlite_engine) if e.holdout}
    assert held
    assert not [t for t in touches(sqlite_engine) if t.enrollment_id in held]
    assert {e.step_id for e in enrollments(sqlite_engine) if e.holdout} == {None}


# --- idempotence ----------------------------------------------------------------------------------


def test_the_same_tick_twice_adds_nothing(engine: Engine) -> None:
    add_accounts(engine, 20)
    pb = simple(holdout="20%")
    email = Recorder("email")
    channels = {"email": email, "slack": Recorder("slack")}
    first = tick(engine, pb, T0, channels=channels)
    assert first.enrolled == 20 and first.advanced > 0
    after_first = snapshot(engine)
    sent = len(email.sent)
    second = tick(engine, pb, T0, channels=channels)
    assert second.enrolled == 0 and second.advanced == 0
    assert snapshot(engine) == after_first
    assert len(email.sent) == sent


def test_a_later_tick_with_nothing_due_adds_nothing(engine: Engine) -> None:
    add_accounts(engine, 10)
    pb = simple()
    tick(engine, pb, T0)
    before = snapshot(engine)
    report = tick(engine, pb, T0 + timedelta(hours=5))
    assert (report.enrolled, report.advanced) == (0, 0)
    assert snapshot(engine) == before


# --- revisions ------------------------------------------------------------------------------------

REV = """
playbook: revised
name: Revised
lifecycle: custom
audience: account.status == "active"
steps:
  - id: {a}
    kind: email
    subject: "first"
    body: "first"
  - id: pause
    kind: wait
    for: 1 day
  - id: {b}
    kind: email
    subject: "second"
    body: "second"
"""


def test_a_changed_playbook_does_not_move_enrollments_in_flight(engine: Engine) -> None:
    old = playbook(REV.format(a="old_first", b="old_second"))
    new = playbook(REV.format(a="new_first", b="new_second"))
    assert old.revision != new.revision
    early = add_accounts(engine, 4, prefix="early")
    tick(engine, old, T0)
    late = add_accounts(engine, 3, prefix="late")
    tick(engine, new, T0 + timedelta(days=2))  # the file changed; a fresh process (no cache)
    by_account = {e.account_id: e for e in enrollments(engine)}
    assert {by_account[a].revision for a in early} == {old.revision}
    assert {by_account[a].revision for a in late} == {new.revision}
    early_steps = [t.step_id for t in touches(engine, TOUCH.c.account_id.in_(early))]
    assert sorted(set(early_steps)) == ["old_first", "old_second"]
    assert {t.revision for t in touches(engine, TOUCH.c.account_id.in_(early))} == {old.revision}
    assert {t.step_id for t in touches(engine, TOUCH.c.account_id.in_(late))} == {"new_first"}
    assert count(engine, table_of(PlaybookRevision)) == 2
    # a revision that is neither current nor stored cannot be advanced: an error, not a guess
    with session(engine) as s, pytest.raises(Exception, match="not stored"):
        RevisionCache().get(s, "revised", "000000000000")


# --- waits ----------------------------------------------------------------------------------------

WAITS = """
playbook: waits
name: Waits
lifecycle: custom
schedule:
  cron: "0 * * * *"
  timezone: America/New_York
audience: account.status == "active"
steps:
  - id: nap
    kind: wait
    for: 2 days
    at: "09:00"
  - id: after_nap
    kind: slack
    text: "awake"
  - id: until_renewal
    kind: wait
    until: account.renewal_date - days(10)
    at: "09:30"
  - id: before_renewal
    kind: slack
    text: "renewal soon"
"""


def test_waits_for_a_duration_and_until_a_date_at_local_time(engine: Engine) -> None:
    pb = playbook(WAITS)
    (tokyo,) = add_accounts(engine, 1, prefix="tokyo", timezone="Asia/Tokyo", renewal_date=date(2027, 6, 20))
    (berlin,) = add_accounts(engine, 1, prefix="berlin", timezone="Europe/Berlin", renewal_date=date(2027, 6, 20))
    (nozone,) = add_accounts(engine, 1, prefix="nozone", renewal_date=date(2027, 6, 20))  # the schedule's zone
    tick(engine, pb, T0)  # 2027-03-01 12:00 UTC; +2 days = 03-03 12:00 UTC
    due = {e.account_id: utc(e.next_due_at) for e in enrollments(engine)}
    assert due[tokyo] == datetime(2027, 3, 4, 0, 0, tzinfo=UTC)  # 21:00 in Tokyo: 09:00 the next day
    assert due[berlin] == datetime(2027, 3, 4, 8, 0, tzinfo=UTC)  # 13:00 in Berlin: 09:00 the next day
    assert due[nozone] == datetime(2027, 3, 3, 14, 0, tzinfo=UTC)  # 07:00 in New York: 09:00 that day
    # a minute early: nothing moves
    assert tick(engine, pb, datetime(2027, 3, 3, 13, 59, tzinfo=UTC)).advanced == 0
    report = tick(engine, pb, datetime(2027, 3, 3, 14, 0, tzinfo=UTC))
    assert report.advanced == 1 and report.steps.get("after_nap") == 1
    tick(engine, pb, datetime(2027, 3, 4, 8, 0, tzinfo=UTC))
    due = {e.account_id: utc(e.next_due_at) for e in enrollments(engine)}
    # renewal 2027-06-20 minus 10 days = 06-10, 09:30 local (summer time)
    assert due[tokyo] == datetime(2027, 6, 10, 0, 30, tzinfo=UTC)
    assert due[berlin] == datetime(2027, 6, 10, 7, 30, tzinfo=UTC)
    assert due[nozone] == datetime(2027, 6, 10, 13, 30, tzinfo=UTC)
    tick(engine, pb, datetime(2027, 6, 10, 7, 30, tzinfo=UTC))
    assert {t.account_id for t in touches(engine, TOUCH.c.step_id == "before_renewal")} == {tokyo, berlin}
    assert {e.account_id for e in enrollments(engine, ENR.c.status == "completed")} == {tokyo, berlin}


WAIT_FOR = """
playbook: wait_for
name: Wait for
lifecycle: custom
audience: account.status == "active"
steps:
  - id: green
    kind: wait_for
    condition: account.health == "green"
    timeout: 5 days
    check_every: 1 day
    on_timeout: late
  - id: in_time
    kind: outcome
    outcome: turned_green
  - id: done
    kind: exit
  - id: late
    kind: slack
    text: "{{ account.name }} is still not green"
  - id: late_done
    kind: exit
    outcome: never_green
"""


def test_wait_for_goes_on_when_the_condition_holds_and_to_on_timeout_after_the_timeout(engine: Engine) -> None:
    pb = playbook(WAIT_FOR)
    fast, slow = add_accounts(engine, 2, health="red")
    tick(engine, pb, T0)
    assert {utc(e.next_due_at) for e in enrollments(engine)} == {T0 + timedelta(days=1)}
    set_account(engine, fast, health="green")
    tick(engine, pb, T0 + timedelta(days=1))
    by = {e.account_id: e for e in enrollments(engine)}
    assert by[fast].status == "completed" and by[slow].status == "active"
    for day in (2, 3, 4):
        tick(engine, pb, T0 + timedelta(days=day))
        assert enrollments(engine, ENR.c.account_id == slow)[0].status == "active"
    tick(engine, pb, T0 + timedelta(days=5))
    by = {e.account_id: e for e in enrollments(engine)}
    assert (by[slow].status, by[slow].outcome) == ("completed", "never_green")
    with engine.connect() as conn:
        outcomes = dict(conn.execute(select(Outcome.account_id, Outcome.kind)).all())
    assert outcomes == {fast: "turned_green", slow: "never_green"}
    assert [t.step_id for t in touches(engine)] == ["late"]
    # the wait's start is written to the timeline once, not at every check
    assert count(engine, TL, TL.c.account_id == slow, TL.c.kind == "wait_for", TL.c.summary.like("%waiting%")) == 1


# --- branch, update, outcome, exit ---------------------------------------------------------------

STEPS = """
playbook: steps
name: Steps
lifecycle: custom
audience: account.status == "active"
steps:
  - id: size
    kind: branch
    if: account.arr >= 50000
    then: big
    else: small
  - id: big
    kind: update
    set:
      segment: enterprise
      custom.tier: gold
  - id: big_outcome
    kind: outcome
    outcome: expanded
    note: "{{ account.name }} is big"
  - id: big_exit
    kind: exit
    outcome: big_done
  - id: small
    kind: update
    set:
      segment: smb
  - id: small_exit
    kind: exit
"""


def test_branch_update_outcome_and_exit(engine: Engine) -> None:
    pb = playbook(STEPS)
    (big,) = add_accounts(engine, 1, prefix="big", arr=80_000.0, custom={"keep": 1})
    (small,) = add_accounts(engine, 1, prefix="small", arr=1_000.0)
    report = tick(engine, pb, T0)
    assert report.steps == {"size": 2, "big": 1, "big_outcome": 1, "big_exit": 1, "small": 1, "small_exit": 1}
    with engine.connect() as conn:
        accounts = {r.id: r for r in conn.execute(select(ACC))}
        outcomes = list(conn.execute(select(table_of(Outcome)).order_by(Outcome.id)))
    assert (accounts[big].segment, accounts[big].custom) == ("enterprise", {"keep": 1, "tier": "gold"})
    assert accounts[small].segment == "smb"
    assert [(o.account_id, o.kind, o.source) for o in outcomes] == [
        (big, "expanded", "step"),
        (big, "big_done", "step"),
    ]
    assert outcomes[0].note == "Big 0 is big"
    by = {e.account_id: e for e in enrollments(engine)}
    assert (by[big].status, by[big].outcome) == ("completed", "big_done")
    assert (by[small].status, by[small].outcome) == ("completed", None)
    kinds = [(r.kind, r.summary) for r in timeline(engine, TL.c.account_id == big)]
    assert ("branch", "size: yes -> big") in kinds
    assert any(k == "update" and "segment: None -> 'enterprise'" in s for k, s in kinds)


# --- goal and exit_when ---------------------------------------------------------------------------

GOAL = """
playbook: goal
name: Goal
lifecycle: custom
audience: account.status == "active" and account.health == "red"
entry:
  holdout: {holdout}
goal:
  when: account.health == "green"
  within: 30 days
  outcome: recovered
exit_when: account.status == "churned"
steps:
  - id: nudge
    kind: slack
    text: "help {{{{ account.name }}}}"
  - id: pause
    kind: wait
    for: 60 days
"""


def test_goal_reached_completes_with_an_outcome_and_exit_when_exits(engine: Engine) -> None:
    pb = playbook(GOAL.format(holdout="0%"))
    recovered, churned, missed = add_accounts(engine, 3, health="red")
    tick(engine, pb, T0)
    set_account(engine, recovered, health="green")
    set_account(engine, churned, status="churned")
    report = tick(engine, pb, T0 + timedelta(days=2))
    assert report.settled == {"goal": 1, "exited": 1, "goal_missed": 0}
    by = {e.account_id: e for e in enrollments(engine)}
    assert (by[recovered].status, by[recovered].outcome) == ("completed", "recovered")
    assert (by[churned].status, by[churned].outcome) == ("exited", "exited")
    assert by[missed].status == "active"
    with engine.connect() as conn:
        outcomes = list(conn.execute(select(table_of(Outcome))))
    assert [(o.account_id, o.kind, o.source, o.enrollment_id) for o in outcomes] == [
        (recovered, "recovered", "goal", by[recovered].id)
    ]
    # the goal window passes: goal_missed
    report = tick(engine, pb, T0 + timedelta(days=31))
    by = {e.account_id: e for e in enrollments(engine)}
    assert (by[missed].status, by[missed].outcome) == ("exited", "goal_missed")
    assert count(engine, table_of(Outcome)) == 1


def test_goal_checked_on_wake_up_before_any_step(sqlite_engine: Engine) -> None:
    pb = playbook(GOAL.format(holdout="0%").replace('account.health == "red"\n', "true\n", 1))
    (account,) = add_accounts(sqlite_engine, 1, health="green")
    tick(sqlite_engine, pb, T0)
    e = enrollments(sqlite_engine)[0]
    assert (e.account_id, e.status, e.outcome) == (account, "completed", "recovered")
    assert touches(sqlite_engine) == []
    assert count(sqlite_engine, table_of(Outcome)) == 1


def test_holdouts_reach_the_goal_too(sqlite_engine: Engine) -> None:
    pb = playbook(GOAL.format(holdout="100%"))
    first, _ = add_accounts(sqlite_engine, 2, health="red")
    tick(sqlite_engine, pb, T0)
    assert all(e.holdout for e in enrollments(sqlite_engine))
    set_account(sqlite_engine, first, health="green")
    tick(sqlite_engine, pb, T0 + timedelta(days=1))
    by = {e.account_id: e for e in enrollments(sqlite_engine)}
    assert by[first].outcome == "recovered"
    assert touches(sqlite_engine) == []


def test_many_enrollments_end_a_batch_at_a_time_each_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """More enrollments end at once than one statement takes (END_BATCH, made small here; at a
    million accounts 100,000 holdouts ended at once overflowed PostgreSQL's 65,535 parameters):
    each ends once, with its outcome and one timeline line."""
    monkeypatch.setattr("flows.engine.settle.END_BATCH", 4)
    pb = playbook(GOAL.format(holdout="0%"))
    ids = add_accounts(engine, 11, health="red")
    tick(engine, pb, T0)
    for account in ids[:9]:
        set_account(engine, account, health="green")
    report = tick(engine, pb, T0 + timedelta(days=2))
    assert report.settled["goal"] == 9
    assert count(engine, table_of(Outcome)) == 9
    assert count(engine, TL, TL.c.kind == "completed") == 9
    assert sorted(e.account_id for e in enrollments(engine) if e.status == "active") == ids[9:]
    assert tick(engine, pb, T0 + timedelta(days=3)).settled["goal"] == 0


# --- unsubscribes ---------------------------------------------------------------------------------

UNSUB = """
playbook: unsub
name: Unsubscribes
lifecycle: custom
audience: account.status == "active"
entry:
  contacts: contact.role == "champion" or contact.is_primary
steps:
  - id: note
    kind: email
    subject: "hello"
    body: "hello {{ contact.first_name }}"
  - id: survey
    kind: survey
    survey: nps
"""


def test_unsubscribed_contacts_get_a_suppressed_touch_and_nothing_is_delivered_to_them(engine: Engine) -> None:
    pb = playbook(UNSUB)
    (account,) = add_accounts(engine, 1, contacts=False)
    people = {
        "ok@example.com": {"role": "champion"},
        "all@example.com": {"role": "champion", "unsubscribed": True},
        "email@example.com": {"role": "champion", "unsubscribed_channels": ["email"]},
        "other@example.com": {"role": "user"},  # not selected at all
    }
    with engine.begin() as conn:
        for email_, extra in people.items():
            conn.execute(
                insert(CON).values(
                    account_id=account,
                    email=email_,
                    is_primary=False,
                    unsubscribed=extra.get("unsubscribed", False),
                    unsubscribed_channels=extra.get("unsubscribed_channels", []),
                    role=extra["role"],
                    preferences={},
                    created_at=T0,
                )
            )
    email = Recorder("email")
    tick(engine, pb, T0, channels={"email": email}, window=None)  # delivered in the tick itself
    rows = touches(engine)
    status = {(t.step_id, t.payload["to"]): (t.status, t.reason) for t in rows}
    assert status == {
        ("note", "ok@example.com"): ("delivered", None),
        ("note", "all@example.com"): ("suppressed", "unsubscribed from everything"),
        ("note", "email@example.com"): ("suppressed", "unsubscribed from email"),
        ("survey", "ok@example.com"): ("delivered", None),
        ("survey", "all@example.com"): ("suppressed", "unsubscribed from everything"),
        ("survey", "email@example.com"): ("suppressed", "unsubscribed from email"),
    }
    assert sorted(d.payload["to"] for d in email.sent) == ["ok@example.com", "ok@example.com"]
    assert count(engine, TL, TL.c.kind == "suppressed") == 4
    # a later delivery run does not pick suppressed touches up
    assert deliver(engine, {"email": email}, as_of=T0 + timedelta(days=1)) == {}
    assert len(email.sent) == 2


# --- errors -------------------------------------------------------------------------------------

FAILING = """
playbook: failing
name: Failing
lifecycle: custom
audience: account.status == "active"
steps:
  - id: note
    kind: slack
    text: "{{ account.name }}: {{ FAILING }}"
  - id: pause
    kind: wait
    for: 10 days
"""


@pytest.mark.parametrize(
    ("template", "bad"),
    [
        pytest.param("{{ account.custom.greeting | upper }}", {"custom": {}}, id="undefined-field"),
        pytest.param("{{ 100 // account.seats }} per seat", {"seats": 0}, id="division-by-zero"),
        pytest.param("{{ account.industry | date }}", {"industry": "not a date"}, id="filter-raises"),
    ],
)
def test_a_failing_template_on_one_enrollment_does_not_block_the_batch(
    engine: Engine, template: str, bad: dict[str, Any]
) -> None:
    pb = playbook(FAILING.replace("{{ FAILING }}", template))
    good = add_accounts(engine, 5, prefix="good", seats=10, industry="2027-01-01", custom={"greeting": "hi"})
    (broken,) = add_accounts(engine, 1, prefix="broken", seats=10, industry="2027-01-01", custom={"greeting": "hi"})
    set_account(engine, broken, **bad)
    report = tick(engine, pb, T0)
    assert report.advanced == 6
    assert (
        len(report.errors) == 1
        and f"enrollment {enrollments(engine, ENR.c.account_id == broken)[0].id}" in report.errors[0]
    )
    assert {t.account_id for t in touches(engine)} == set(good)
    by = {e.account_id: e for e in enrollments(engine)}
    assert {by[a].step_id for a in good} == {"pause"}
    assert by[broken].step_id == "note" and utc(by[broken].next_due_at) == T0 + timedelta(hours=1)
    errors = timeline(engine, TL.c.kind == "error")
    assert [(e.account_id, e.step_id) for e in errors] == [(broken, "note")]
    assert "attempt 1 of" in errors[0].summary
    # it is retried later, and ended after MAX_ERRORS attempts
    for hour in range(1, MAX_ERRORS):
        tick(engine, pb, T0 + timedelta(hours=hour))
    e = enrollments(engine, ENR.c.account_id == broken)[0]
    assert (e.status, e.outcome) == ("exited", "error")
    assert count(engine, TL, TL.c.kind == "error") == MAX_ERRORS


def test_settle_reads_each_revision_once(sqlite_engine: Engine) -> None:
    """settle is set-based: an enrollment count does not change the number of statements."""
    pb = playbook(GOAL.format(holdout="0%"))
    add_accounts(sqlite_engine, 50, health="red")
    tick(sqlite_engine, pb, T0)
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(sqlite_engine, "before_cursor_execute", record)
    try:
        with session(sqlite_engine) as s:
            settle(s, RevisionCache(current={pb.id: pb}), pb.id, T0 + timedelta(days=1))
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", record)
    assert len(seen) < 10, seen


def test_touch_keys_are_unique_per_enrollment_step_visit_and_contact(sqlite_engine: Engine) -> None:
    add_accounts(sqlite_engine, 3)
    tick(sqlite_engine, simple(), T0)
    keys = [t.key for t in touches(sqlite_engine)]
    assert len(keys) == len(set(keys)) == 6  # an email and a Slack post for each account
    assert all(k.startswith("simple:") for k in keys)


def test_delivery_runs_without_an_event_loop_of_its_own(sqlite_engine: Engine) -> None:
    # deliver() is sync and owns its loop: it must also work when called from a worker thread
    add_accounts(sqlite_engine, 2)
    tick(sqlite_engine, simple(), T0, window=None)  # due at T0, not held for the priority window
    email = Recorder("email")

    async def main() -> Any:
        return await asyncio.to_thread(deliver, sqlite_engine, {"email": email, "slack": Recorder("slack")}, as_of=T0)

    assert asyncio.run(main())["delivered"] == 4


# --- dry runs -------------------------------------------------------------------------------------


def test_a_dry_run_keeps_nothing_and_sends_nothing(engine: Engine) -> None:
    add_accounts(engine, 10)
    before = snapshot(engine)
    email = Recorder("email")
    report = tick(engine, simple(), T0, dry_run=True, channels={"email": email, "slack": Recorder("slack")})
    assert report.enrolled == 10 and report.touches_written  # the work was done ...
    assert email.sent == []
    assert count(engine, table_of(PlaybookRevision)) == 0
    assert snapshot(engine) == before  # ... and none of it kept


def test_a_step_failing_on_bad_account_data_does_not_block_the_batch(engine: Engine) -> None:
    """An account time zone that is not an IANA name makes ``wait … at`` fail for that account only."""
    pb = playbook(WAITS)
    good = add_accounts(engine, 3, prefix="good", timezone="Europe/Paris", renewal_date=date(2027, 6, 20))
    (bad,) = add_accounts(engine, 1, prefix="bad", timezone="Mars/Olympus_Mons", renewal_date=date(2027, 6, 20))
    report = tick(engine, pb, T0)
    assert report.advanced == 4 and len(report.errors) == 1
    by = {e.account_id: e for e in enrollments(engine)}
    assert {utc(by[a].next_due_at) for a in good} == {datetime(2027, 3, 4, 8, 0, tzinfo=UTC)}
    assert by[bad].step_id == "nap" and by[bad].status == "active"
    (error,) = timeline(engine, TL.c.kind == "error")
    assert error.account_id == bad and "Mars/Olympus_Mons" in error.summary


# --- a CSM's side: tasks closed when their enrollment ends, approval deadlines -------------------


def test_tasks_close_with_their_enrollment_and_deadlines_settle_set_based(engine: Engine) -> None:
    from flows.engine.approvals import settle_approvals
    from flows.engine.tasks import close_tasks_of_ended

    ids = add_accounts(engine, 3, csm_email="sam@csm.example")
    pb = playbook(
        """
        playbook: side
        name: Side
        lifecycle: custom
        audience: account.status == "active"
        exit_when: account.status == "churned"
        steps:
          - id: call
            kind: task
            title: "Call {{ account.name }}"
          - id: later
            kind: task
            title: "Later {{ account.name }}"
            keep_open: true
          - id: offer
            kind: email
            subject: "Offer"
            body: "Hi"
            approve: {by: csm, deadline: 1 day, at_deadline: send}
          - id: pause
            kind: wait
            for: 30 days
        """
    )
    tick(engine, pb, T0, window=None)
    assert count(engine, table_of(CsmTask)) == 6
    assert [t.status for t in touches(engine)] == ["draft"] * 3
    set_account(engine, ids[0], status="churned")
    tick(
        engine, pb, T0 + timedelta(hours=1), window=None
    )  # exit: its "call" closes, "later" stays, its draft is dropped
    tasks = table_of(CsmTask)
    with engine.connect() as conn:
        rows = conn.execute(select(tasks.c.account_id, tasks.c.step_id, tasks.c.status, tasks.c.closed_reason)).all()
    assert sorted((a, s, st) for a, s, st, _ in rows if a == ids[0]) == [
        (ids[0], "call", "closed"),
        (ids[0], "later", "open"),
    ]
    assert {r for a, s, st, r in rows if st == "closed"} == {"its enrollment in side ended: exited (exited)"}
    with session(engine) as s:
        assert close_tasks_of_ended(s, T0 + timedelta(hours=2)) == 0  # nothing twice
    tick(engine, pb, T0 + timedelta(days=2), window=None)  # the deadline: the two others are sent as drafted
    statuses = sorted(t.status for t in touches(engine))
    assert statuses == ["pending", "pending", "rejected"]
    with session(engine) as s:
        assert settle_approvals(s, T0 + timedelta(days=3)) == {"send": 0, "skip": 0, "escalate": 0, "ended": 0}


def test_the_csm_morning_reads_red_health_and_replies_in_both_databases(engine: Engine) -> None:
    from flows.reports.today import csm_today

    red, stays, other = add_accounts(engine, 3, csm_email="sam@csm.example")
    health = table_of(HealthScore)
    scores = [
        (red, T0 - timedelta(days=3), "green", 80.0),
        (red, T0 - timedelta(hours=3), "red", 20.0),
        (stays, T0 - timedelta(days=3), "red", 30.0),
        (stays, T0 - timedelta(hours=3), "red", 25.0),  # red before too: not "turned" red
        (other, T0 - timedelta(hours=3), "yellow", 50.0),
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(health),
            [{"account_id": a, "scored_at": at, "band": b, "score": v, "components": {}} for a, at, b, v in scores],
        )
        conn.execute(
            insert(TOUCH),
            {"key": "k1", "account_id": other, "channel": "email", "status": "delivered", "payload": {"subject": "Hi"},
             "replied_at": T0 - timedelta(hours=1), "created_at": T0 - timedelta(days=1)},
        )  # fmt: skip
    today = csm_today(engine, "SAM@csm.example", now=T0)
    assert [(r.account, r.was, r.score) for r in today.red] == [("acct-00000", "green", 20.0)]
    assert [(r.account, r.subject) for r in today.replies] == [("acct-00002", "Hi")]
    assert csm_today(engine, "sam@csm.example", now=T0 + timedelta(days=2)).red == []  # since: one day
