"""Start-up: commands that run no flow never import Prefect, ``--help`` imports none of Retain's
packages, a play imports only what it uses, the choices written out in the CLI equal their
sources, and a package of another project that shadows one of Retain's five is named instead of
failing strangely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

from tests.cli._world import write_world

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("prefect", "sqlmodel", "alembic", "matplotlib", "models", "playbooks", "integrations", "flows")


def _run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``retain ARGS`` in a fresh interpreter; prints the exit code and the loaded top-level modules last."""
    script = (
        "import sys, json, cli\n"
        f"code = cli.main({args!r})\n"
        "print(json.dumps({'code': code, 'modules': sorted({m.split('.')[0] for m in sys.modules})}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _outcome(result: subprocess.CompletedProcess[str]) -> tuple[int, set[str]]:
    assert result.stdout, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    return last["code"], set(last["modules"])


def test_help_imports_none_of_retains_packages_nor_prefect(tmp_path: Path) -> None:
    code, modules = _outcome(_run_cli(["--help"], tmp_path))
    assert code == 0
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def _run_cli_commands(commands: list[list[str]], cwd: Path) -> list[tuple[list[str], int, bool]]:
    """Several ``retain`` commands one after the other in one fresh interpreter (one start-up, not
    one each): for each, its exit code and whether Prefect was imported by then."""
    script = (
        "import sys, json, cli\n"
        f"for args in {commands!r}:\n"
        "    code = cli.main(args)\n"
        "    print(json.dumps({'args': args, 'code': code, 'prefect': 'prefect' in sys.modules}), flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"args"')]
    assert [line["args"] for line in lines] == commands, result.stdout[-2000:] + result.stderr[-2000:]
    return [(line["args"], line["code"], line["prefect"]) for line in lines]


def test_commands_that_run_no_flow_never_import_prefect(tmp_path: Path) -> None:
    commands = [
        ["playbooks", "validate"],
        ["playbooks", "list"],
        ["playbooks", "show", "renewal", "--graph"],
        ["playbooks", "schema"],
        ["health", "validate"],
        ["report", "--help"],
    ]
    for args, code, prefect in _run_cli_commands(commands, tmp_path):
        assert code == 0, args
        assert not prefect, args  # (imported by this command or one before it)


def test_database_commands_never_import_prefect(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    commands = [["init"], ["accounts", "list"], ["status", "--format", "json"], ["revenue", "summary"]]
    for args, code, prefect in _run_cli_commands([["--database-url", url, *a] for a in commands], tmp_path):
        assert code == 0, args
        assert not prefect, args


#: the email step of a play: the file channel writes it to the outbox folder
GREETING = """\
playbook: greet
name: Greet
lifecycle: custom
audience: account.status == "active"
steps:
  - id: hello
    kind: email
    subject: "Hello {{ account.name }}"
    body: "Hi {{ contact.first_name }}, your {{ account.plan }} plan renews {{ account.renewal_date | date }}."
  - id: pause
    kind: wait
    for: 7 days
  - id: done
    kind: exit
"""


def test_a_play_imports_only_what_it_uses(tmp_path: Path) -> None:
    """``retain play`` on a current database, in a fresh process, sending email to the outbox
    folder: no Prefect (a play is no flow run), no Alembic (the schema check reads the version
    table), no httpx (no channel talked HTTP), and of the data importers only the approvals."""
    books = write_world(tmp_path, {"greet": GREETING})
    common = ["--database-url", f"sqlite:///{tmp_path / 'retain.db'}", "--playbooks-dir", str(books)]
    setup = [
        ["init"],
        ["accounts", "import", str(tmp_path / "accounts.csv")],
        ["contacts", "import", str(tmp_path / "contacts.csv")],
    ]
    for args, code, _ in _run_cli_commands([[*common, *a] for a in setup], tmp_path):
        assert code == 0, args
    script = (
        "import sys, json, cli\n"
        f"code = cli.main({[*common, 'play', 'greet', '--account', 'acme']!r})\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    code, modules = _outcome(result)
    assert code == 0, result.stderr
    assert "hello: email to ana@acme.example queued" in result.stdout
    assert "delivered: delivered 1" in result.stdout, result.stdout[:2000]  # (to the outbox folder)
    loaded = {m.split(".")[0] for m in modules}
    assert not loaded & {"prefect", "alembic", "httpx", "fastapi", "matplotlib"}, sorted(loaded)
    assert {m for m in modules if m.startswith("integrations.sources.")} == {"integrations.sources.approvals"}


def test_choices_written_out_in_the_cli_equal_their_sources() -> None:
    from cli.accounts import AccountStatusChoice
    from cli.report import MIN_GROUP
    from cli.revenue import SpreadChoice
    from cli.surveys import Kind
    from flows.analytics import attribution
    from flows.analytics.surveys import KINDS
    from integrations.sources.billing import Spread
    from models import AccountStatus

    assert set(get_args(AccountStatusChoice)) == {s.value for s in AccountStatus}
    assert set(get_args(SpreadChoice)) == {s.value for s in Spread}
    assert MIN_GROUP == attribution.MIN_GROUP
    assert {k.value for k in Kind} == set(KINDS)


def test_this_checkout_is_one_installation() -> None:
    from cli._installation import installation_problem

    assert installation_problem() is None


def test_a_package_that_shadows_retains_is_named(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    (other / "flows").mkdir(parents=True)
    (other / "flows" / "__init__.py").write_text("# another project's flows\n")
    result = _run_cli(["--help"], tmp_path, env={"PYTHONPATH": str(other)})
    code, _ = _outcome(result)
    assert code == 1
    message = result.stderr  # one line, never wrapped
    assert f"the package 'flows' found first is {other / 'flows'}, not Retain's own ({ROOT / 'flows'})" in message
    assert "Install Retain in a virtual environment of its own" in message
    assert "Traceback" not in result.stderr
