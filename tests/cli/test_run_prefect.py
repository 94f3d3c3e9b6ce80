"""``retain run`` through Prefect, as real processes: a broken playbook stops only itself, with a
located message and no traceback; several server-less runs sharing a fresh ``PREFECT_HOME`` do
not race on the temporary server's migrations; unsupported database URLs are named as such."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from models import BUNDLED_PLAYBOOKS_DIR, Account, Touch, make_engine, table_of
from tests._sqlite import migrated_sqlite

RETAIN = str(Path(sys.executable).parent / "retain")
HERMETIC = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


@pytest.fixture
def broken_farewell(tmp_path: Path) -> Path:
    """The shipped playbooks, with a typo in farewell.yaml (a step's ``kind`` spelled ``kindd``)."""
    folder = tmp_path / "playbooks"
    shutil.copytree(BUNDLED_PLAYBOOKS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "_expr", "__pycache__"))
    text = (folder / "farewell.yaml").read_text(encoding="utf-8")
    (folder / "farewell.yaml").write_text(text.replace("kind: slack", "kindd: slack", 1), encoding="utf-8")
    return folder


@pytest.fixture
def env(tmp_path: Path, broken_farewell: Path) -> Iterator[dict[str, str]]:
    database = tmp_path / "retain.db"
    engine = migrated_sqlite(database)
    engine.dispose()
    values = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETAIN_"))}
    values.update(HERMETIC)
    values.update(
        {
            "PREFECT_HOME": str(tmp_path / "prefect-home"),  # fresh: the first runs migrate it
            "RETAIN_DATABASE_URL": f"sqlite:///{database}",
            "RETAIN_PLAYBOOKS_DIR": str(broken_farewell),
            "RETAIN_OUTBOX_DIR": str(tmp_path / "outbox"),
            "COLUMNS": "200",
        }
    )
    yield values


def _started(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_parallel_runs_with_a_broken_other_playbook_and_a_fresh_prefect_home(env: dict[str, str]) -> None:
    # two runs started together are the race on a fresh PREFECT_HOME (a third adds a server start, not a race)
    runs = [_started([RETAIN, "run", "renewal", "--as-of", "2027-03-01T12:00:00Z"], env) for _ in range(2)]
    outputs = [(run.communicate(timeout=300)[0], run.returncode) for run in runs]
    for output, code in outputs:
        assert "Traceback" not in output and "no such table" not in output and "database is locked" not in output
        assert code == 0, output
        assert "renewal@" in output and "as of 2027-03-01T12:00:00+00:00" in output


def test_the_broken_playbook_fails_its_own_prefect_run_with_a_located_message(
    env: dict[str, str], prefect_server: str
) -> None:
    # what a scheduled run of the broken playbook does: the flow run fails with the place of the typo
    # (against the session's Prefect server: a fresh temporary server is the test above's subject)
    env = {**env, "PREFECT_API_URL": prefect_server}
    script = (
        "from flows.orchestration.runtime import run_flow_in_process\n"
        "from models import RetainError, Settings\n"
        "try:\n"
        "    run_flow_in_process(Settings(), 'farewell', '2027-03-01T12:00:00Z', False)\n"
        "except RetainError as exc:\n"
        "    print('refused:', exc)\n"
    )
    flow = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # the command line names the same place, before any Prefect run (started beside the flow's process)
    cli = subprocess.Popen(
        [RETAIN, "run", "farewell"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        output = "".join(flow.communicate(timeout=300))
        cli_out, cli_err = cli.communicate(timeout=120)
    finally:
        for proc in (flow, cli):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert flow.returncode == 0, output
    assert "Traceback" not in output and "NoneType: None" not in output
    assert "refused: " in output and "farewell.yaml:37:5: step 'tell_the_team': missing required key 'kind'" in output
    assert cli.returncode == 1
    assert "farewell.yaml:37:5" in cli_err and "Traceback" not in cli_out + cli_err


def test_unsupported_database_urls_name_what_is_supported(env: dict[str, str]) -> None:
    urls = {
        "bogus://x": "'bogus' is not supported",
        "mysql://retain:secret@db.example/retain": "'mysql' is not supported",
    }
    commands = [
        ["--database-url", url, *command]
        for url in urls
        for command in (["status"], ["init"], ["run", "renewal", "--no-prefect"])
    ]
    # one interpreter runs the six commands (one start-up, not six), each with its own output
    script = (
        "import contextlib, io, json, cli\n"
        f"for args in {commands!r}:\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        code = cli.main(args)\n"
        "    print(json.dumps({'args': args, 'code': code, 'out': out.getvalue(), 'err': err.getvalue()}), flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"args"')]
    assert [r["args"] for r in results] == commands, done.stdout + done.stderr
    for r in results:
        named = urls[r["args"][1]]
        assert r["code"] == 1, r
        assert named in r["err"] and "use SQLite (sqlite:///" in r["err"] and "PostgreSQL" in r["err"], r
        assert "Traceback" not in r["out"] + r["err"]
        assert "secret" not in r["err"]  # the password is never shown


HOOK = """\
playbook: hook
name: Hook
lifecycle: custom
audience: account.status == "active"
steps:
  - id: notify
    kind: webhook
    url: "http://127.0.0.1:9/hook"
    headers:
      Authorization: "Bearer {{ secrets.crm_token }}"
"""


def test_a_run_without_prefect_never_touches_prefect(env: dict[str, str], tmp_path: Path) -> None:
    """Not even a secret lookup: a Prefect Secret block would start Prefect's temporary server."""
    folder = tmp_path / "hooks"
    folder.mkdir()
    (folder / "hook.yaml").write_text(HOOK, encoding="utf-8")
    engine = make_engine(env["RETAIN_DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(insert(table_of(Account)), {"external_id": "acme", "name": "Acme", "custom": {}})
    engine.dispose()
    script = (
        "import sys\n"
        "from cli import main\n"
        f"code = main(['--playbooks-dir', {str(folder)!r}, 'run', 'hook', '--no-prefect'])\n"
        "print('exit', code, 'prefect imported:', 'prefect' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "exit 0 prefect imported: False" in output, output
    assert "temporary server" not in output and "Traceback" not in output
    with engine.connect() as conn:
        (status, reason) = conn.execute(select(table_of(Touch).c.status, table_of(Touch).c.reason)).one()
    assert status == "failed" and "secret 'crm_token' is not set: set RETAIN_SECRET_CRM_TOKEN" in reason
