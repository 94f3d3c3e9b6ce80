"""A template that goes past a limit at render time fails that enrollment's step with a clear
message, quickly; the tick goes on, and other playbooks run as if nothing happened (issue 10)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

import cli
from flows.engine.tick import tick
from models import Account, Enrollment, Touch, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 2, 15, 0, tzinfo=UTC)


def playbook(pid: str, text: str) -> str:
    return (
        f'playbook: {pid}\nname: {pid}\nlifecycle: custom\naudience: account.status == "active"\n'
        f"steps:\n  - id: hello\n    kind: slack\n    channel: \"#cs\"\n    text: '{text}'\n"
    )


#: templates that validate (nothing in them is constant) and would hang or eat gigabytes in a tick
HOSTILE = {
    "loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "repeat": "{{ account.name * (account.seats * 100000000) }}",
    "lipsum": "{{ lipsum(account.seats * 1000000) }}",
    "recursion": "{% macro m(k) %}{% if k %}{{ m(k - 1) }}{{ m(k - 1) }}{% endif %}{% endmacro %}{{ m(account.seats * 40) }}",
}


def _accounts(engine: Engine, n: int = 3) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {"external_id": f"a{i}", "name": f"Account {i}", "status": "active", "seats": 1, "custom": {},
                 "csm_email": "csm@vendor.example"}
                for i in range(n)
            ],
        )  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_a_render_past_a_limit_fails_only_that_step(sqlite_engine: Engine, name: str) -> None:
    _accounts(sqlite_engine)
    hostile = compile_source(playbook(f"hostile_{name}", HOSTILE[name]), "hostile.yaml")
    harmless = compile_source(playbook("harmless", "Hello {{ account.name }}"), "harmless.yaml")
    started = time.monotonic()
    report = tick(sqlite_engine, hostile, T0, channels={})
    spent = time.monotonic() - started
    assert len(report.errors) == 3  # one per account: each enrollment fails on its own
    assert all("template" in error for error in report.errors), report.errors
    assert spent < 30  # three renders, each stopped by its limits (before: no end, or gigabytes)
    with sqlite_engine.connect() as conn:
        states = conn.execute(select(table_of(Enrollment).c.state).where(table_of(Enrollment).c.playbook == hostile.id))
        errors = [state["last_error"] for (state,) in states]
    assert len(errors) == 3 and all(e.startswith(("template stopped: ", "template failed to render: ")) for e in errors)

    other = tick(sqlite_engine, harmless, T0, channels={})
    assert other.errors == [] and other.touches_written == {"slack:pending": 3}
    with sqlite_engine.connect() as conn:
        texts = [p["text"] for (p,) in conn.execute(select(table_of(Touch).c.payload))]
    assert sorted(texts) == ["Hello Account 0", "Hello Account 1", "Hello Account 2"]


def test_run_of_one_playbook_ignores_a_hostile_sibling(
    tmp_path: Path, sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retain run`` compiles only the playbook it runs: a sibling that would take gigabytes to
    validate, or that does not validate, costs it nothing."""
    _accounts(sqlite_engine, 1)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "harmless.yaml").write_text(playbook("harmless", "Hello {{ account.name }}"))
    (folder / "hostile.yaml").write_text(playbook("hostile", '{{ "x" * 10**9 }}{{ 9 ** (9 ** 9) }}'))
    (folder / "huge.yaml").write_text("playbook: huge\n" + "#" * 10_000_000)
    code = cli.main(
        ["--database-url", sqlite_url, "--playbooks-dir", str(folder), "run", "harmless", "--no-prefect",
         "--as-of", T0.isoformat()]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    with sqlite_engine.connect() as conn:
        assert [p["text"] for (p,) in conn.execute(select(table_of(Touch).c.payload))] == ["Hello Account 0"]
    code = cli.main(["--database-url", sqlite_url, "--playbooks-dir", str(folder), "run", "hostile", "--no-prefect"])
    out = capsys.readouterr()
    assert code == 1
    assert "hostile.yaml:9:11: step 'hello': text: template: '*' would make 1,000,000,000 characters" in out.err
    assert "Traceback" not in out.out + out.err
