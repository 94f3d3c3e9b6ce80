"""An enrollment's state (waits begun, ``wait_for`` start times, visits) is written on every
change: a step that reads data (and so flushes the session) never makes a later wait forget it
began. A property test over generated step sequences and tick times holds every due time equal
to what the playbook says."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from models import Account, Enrollment, table_of
from playbooks import CompiledPlaybook, compile_source
from tests._sqlite import migrated_sqlite

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ENR = table_of(Enrollment)
_ids = itertools.count()


def add_account(engine: Engine, external_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            {"external_id": external_id, "name": external_id, "status": "active", "arr": 10.0, "custom": {}},
        )


def enrollment(engine: Engine, playbook: str) -> tuple[str | None, datetime | None, str]:
    with engine.connect() as conn:
        row = conn.execute(
            select(ENR.c.step_id, ENR.c.next_due_at, ENR.c.status).where(ENR.c.playbook == playbook)
        ).one()
    return row.step_id, row.next_due_at.astimezone(UTC) if row.next_due_at else None, row.status


def compiled(playbook_id: str, external_id: str, steps: str) -> CompiledPlaybook:
    source = (
        f"playbook: {playbook_id}\nname: {playbook_id}\nlifecycle: custom\n"
        f'audience: account.external_id == "{external_id}"\nsteps:\n' + textwrap.indent(steps, "  ")
    )
    return compile_source(source, f"{playbook_id}.yaml")


@pytest.mark.parametrize("condition", ["open_tickets() >= 0", "account.arr >= 0"])
def test_a_wait_after_a_branch_that_reads_data_waits_what_it_says(sqlite_engine: Engine, condition: str) -> None:
    add_account(sqlite_engine, "acme")
    pb = compiled(
        "branchy",
        "acme",
        textwrap.dedent(
            f"""\
            - id: hello
              kind: email
              to: csm
              subject: "hello"
              body: "hello"
            - id: check
              kind: branch
              if: {condition}
              then: pause
            - id: pause
              kind: wait
              for: 1 day
            - id: done
              kind: exit
            """
        ),
    )
    tick(sqlite_engine, pb, T0)
    assert enrollment(sqlite_engine, "branchy") == ("pause", T0 + timedelta(days=1), "active")
    tick(sqlite_engine, pb, T0 + timedelta(days=1))
    assert enrollment(sqlite_engine, "branchy")[2] == "completed"  # one day, not two


def test_a_wait_for_times_out_on_time_after_a_step_that_reads_data(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "acme")
    pb = compiled(
        "waiter",
        "acme",
        textwrap.dedent(
            """\
            - id: hello
              kind: email
              to: csm
              subject: "hello"
              body: "hello"
            - id: check
              kind: branch
              if: open_tickets() >= 0
              then: green
            - id: green
              kind: wait_for
              condition: open_tickets() < 0
              timeout: 1 day
              check_every: 18 hours
            - id: done
              kind: exit
            """
        ),
    )
    tick(sqlite_engine, pb, T0)
    assert enrollment(sqlite_engine, "waiter") == ("green", T0 + timedelta(hours=18), "active")
    tick(sqlite_engine, pb, T0 + timedelta(hours=18))
    assert enrollment(sqlite_engine, "waiter") == ("green", T0 + timedelta(days=1), "active")
    tick(sqlite_engine, pb, T0 + timedelta(days=1))
    assert enrollment(sqlite_engine, "waiter")[2] == "completed"  # at the timeout, not 6 hours late


# --- the property --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wait:
    hours: int


@dataclass(frozen=True)
class WaitFor:
    timeout_hours: int
    check_every_hours: int


@dataclass(frozen=True)
class Branch:
    reads_data: bool


@dataclass(frozen=True)
class Email:
    pass


Step = Wait | WaitFor | Branch | Email

steps_strategy = st.lists(
    st.one_of(
        st.builds(Wait, st.integers(1, 96)),
        st.builds(WaitFor, st.integers(2, 96), st.integers(1, 48)),
        st.builds(Branch, st.booleans()),
        st.just(Email()),
    ),
    min_size=1,
    max_size=7,
)
ticks_strategy = st.lists(st.integers(1, 24 * 30), min_size=1, max_size=14, unique=True).map(sorted)


def yaml_of(steps: list[Step]) -> str:
    lines = []
    for i, step in enumerate(steps):
        lines.append(f"- id: s{i}")
        match step:
            case Wait(hours):
                lines += ["  kind: wait", f"  for: {hours} hours"]
            case WaitFor(timeout, every):
                # never holds, and reads data: only the timeout moves it on
                lines += ["  kind: wait_for", "  condition: open_tickets() < 0"]
                lines += [f"  timeout: {timeout} hours", f"  check_every: {every} hours"]
            case Branch(reads_data):
                condition = "open_tickets() >= 0" if reads_data else "account.arr >= 0"
                lines += ["  kind: branch", f"  if: {condition}", f"  then: s{i + 1}"]
            case Email():
                lines += ["  kind: email", "  to: csm", '  subject: "hello"', '  body: "hello"']
    lines += [f"- id: s{len(steps)}", "  kind: exit"]
    return "\n".join(lines) + "\n"


class Model:
    """What the playbook says: each tick runs steps until a wait; a wait begun at a tick's time
    ends that long after it; a wait_for times out ``timeout`` after the tick that reached it."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.at = 0
        self.due: datetime | None = None
        self.until: datetime | None = None  # of the wait begun at step ``at``
        self.done = False

    def wake(self, now: datetime) -> None:
        if self.done or (self.due is not None and now < self.due):
            return
        while self.at < len(self.steps):
            step = self.steps[self.at]
            if isinstance(step, Wait | WaitFor):
                if self.until is None:
                    length = step.hours if isinstance(step, Wait) else step.timeout_hours
                    self.until = now + timedelta(hours=length)
                if now < self.until:
                    every = step.check_every_hours if isinstance(step, WaitFor) else None
                    self.due = self.until if every is None else min(now + timedelta(hours=every), self.until)
                    return
                self.until = None
            self.at += 1
        self.done, self.due = True, None

    def expected(self) -> tuple[str | None, datetime | None, str]:
        if self.done:
            return None, None, "completed"
        return f"s{self.at}", self.due, "active"


@pytest.fixture(scope="module")
def shared_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("state") / "retain.db"
    engine = migrated_sqlite(path)
    yield engine
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps_strategy, ticks=ticks_strategy)
def test_every_due_time_is_what_the_playbook_says(shared_engine: Engine, steps: list[Step], ticks: list[int]) -> None:
    n = next(_ids)
    playbook_id, external_id = f"prop{n}", f"prop-{n}"  # each example its own playbook and account
    add_account(shared_engine, external_id)
    pb = compiled(playbook_id, external_id, yaml_of(steps))
    model = Model(steps)
    for moment in [T0, *(T0 + timedelta(hours=h) for h in ticks)]:
        tick(shared_engine, pb, moment)
        model.wake(moment)
        assert enrollment(shared_engine, playbook_id) == model.expected(), (moment, yaml_of(steps))
