"""prefect.yaml: current with the playbooks, deterministic, and made only of keys Prefect's loader
reads (it ignores unknown keys silently, so we check the names ourselves); ``retain deployments
sync``; and the local Prefect server helper behind ``retain serve`` (with a stand-in server: the
real one takes many seconds to start)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import main
from flows.orchestration.deployments import (
    DEFAULT_PULL,
    DEFAULT_WORK_POOL,
    ENTRYPOINT,
    HEALTH_CRON,
    OUTBOX_CRON,
    OUTBOX_ENTRYPOINT,
    REPLIES_CRON,
    REPORTS_CRON,
    deployment_specs,
    local_prefect_server,
    not_served,
    prefect_yaml_problems,
    pull_steps,
    render_prefect_yaml,
    runner_deployments,
    stop_process,
)
from models import BUNDLED_PLAYBOOKS_DIR, ConfigError, Settings
from playbooks import load_playbooks

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict[str, object]:
    return load_playbooks(BUNDLED_PLAYBOOKS_DIR)  # type: ignore[return-value]


def test_prefect_yaml_is_up_to_date(shipped: dict[str, object]) -> None:
    expected = render_prefect_yaml(shipped.values())  # type: ignore[arg-type]
    assert PREFECT_YAML.exists(), "prefect.yaml is missing: run `retain deployments sync`"
    assert PREFECT_YAML.read_text(encoding="utf-8") == expected, (
        "prefect.yaml is out of date with the playbooks: run `retain deployments sync`"
    )


def test_the_text_is_deterministic(shipped: dict[str, object]) -> None:
    forward = render_prefect_yaml(shipped.values())  # type: ignore[arg-type]
    backward = render_prefect_yaml(reversed(list(shipped.values())))  # type: ignore[arg-type]
    assert forward == backward


def test_one_deployment_per_playbook_with_its_schedule(shipped: dict[str, object]) -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    deployments = {d["name"]: d for d in data["deployments"]}
    assert set(deployments) == {*shipped, "outbox", "health", "replies", "digest", "tasks-sync", "reports"}
    outbox = deployments["outbox"]
    assert outbox["entrypoint"] == OUTBOX_ENTRYPOINT and outbox["parameters"] == {}
    assert outbox["schedules"] == [{"cron": OUTBOX_CRON, "timezone": "UTC", "active": True}]
    for pid, pb in shipped.items():
        dep = deployments[pid]
        assert dep["entrypoint"] == ENTRYPOINT
        assert dep["parameters"] == {"playbook": pid}
        schedule = pb.spec.schedule  # type: ignore[attr-defined]
        assert dep["schedules"] == [{"cron": schedule.cron, "timezone": schedule.timezone, "active": True}]


def test_every_key_is_one_prefects_loader_reads() -> None:
    assert prefect_yaml_problems(PREFECT_YAML.read_text(encoding="utf-8"), root=ROOT) == []


def test_prefects_own_loader_reads_every_deployment_and_schedule(shipped: dict[str, object]) -> None:
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from rich.console import Console

    configs, actions = _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(quiet=True))
    assert sorted(c["name"] for c in configs) == sorted(
        [*shipped, "outbox", "health", "replies", "digest", "tasks-sync", "reports"]
    )
    assert {c["work_pool"]["name"] for c in configs} == {DEFAULT_WORK_POOL}
    assert actions["pull"] == DEFAULT_PULL
    for config in configs:
        if config["name"] == "digest":  # 08:00 UTC unless RETAIN_DIGEST_TIME/_TIMEZONE say otherwise
            (schedule,) = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
            assert (schedule["schedule"].cron, schedule["schedule"].timezone) == ("0 8 * * *", "UTC")
            continue
        if config["name"] == "tasks-sync":  # every 15 minutes unless RETAIN_TASKS_SYNC_MINUTES says otherwise
            (schedule,) = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
            assert schedule["schedule"].interval.total_seconds() == 900
            continue
        if config["name"] in ("outbox", "health", "replies", "reports"):
            (schedule,) = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
            crons = {"outbox": OUTBOX_CRON, "health": HEALTH_CRON, "replies": REPLIES_CRON, "reports": REPORTS_CRON}
            assert schedule["schedule"].cron == crons[config["name"]]
            continue
        assert config["entrypoint"] == ENTRYPOINT and config["parameters"] == {"playbook": config["name"]}
        (schedule,) = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
        pb = shipped[config["name"]]
        assert schedule["schedule"].cron == pb.spec.schedule.cron  # type: ignore[attr-defined]
        assert schedule["schedule"].timezone == pb.spec.schedule.timezone  # type: ignore[attr-defined]
        assert schedule["active"] is True


def test_typos_prefect_would_ignore_are_reported() -> None:
    text = textwrap.dedent(
        """
        name: retain
        deploymnets: []
        deployments:
          - name: renewal
            entrypoint: flows/orchestration/playbook.py:run_playbook
            paramaters:
              playbook: renewal
            schedules:
              - cron: "0 9 * * *"
                timezone: Europe/Berlinn
          - name: renewal
            entrypoint: flows/orchestration/playbook.py:run_playbook
            parameters:
              playbok: renewal
            schedules:
              - cron: "61 * * * *"
        """
    )
    # Prefect's loader takes the misspelt keys and the time zone without a word ...
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(yaml.safe_load(text))
    text = text.replace("timezone: Europe/Berlinn", "timezone: Europe/Berlinn\n        actve: true")
    # ... we do not
    problems = prefect_yaml_problems(text, root=ROOT)
    expected = [
        "top level: unknown key 'deploymnets' (did you mean 'deployments'?)",
        "deployment 'renewal': unknown key 'paramaters' (did you mean 'parameters'?)",
        "deployment 'renewal': missing 'parameters'",
        "unknown key 'actve' (did you mean 'active'?)",
        "unknown time zone 'Europe/Berlinn'",
        "the name is used twice",
        "bad cron expression '61 * * * *'",
        "the flow has no parameter 'playbok'",
        "the flow needs parameter 'playbook'",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)


def test_playbooks_without_a_schedule_get_a_deployment_without_schedules(shipped: dict[str, object]) -> None:
    from playbooks import compile_source

    pb = compile_source(
        "playbook: manual\nname: Manual\nlifecycle: custom\naudience: 'true'\nsteps:\n  - id: done\n    kind: exit\n"
    )
    spec, *others = deployment_specs([pb])
    assert spec["schedules"] == [] and [o["name"] for o in others] == [
        "outbox",
        "health",
        "replies",
        "digest",
        "tasks-sync",
        "reports",
    ]
    assert prefect_yaml_problems(render_prefect_yaml([pb]), root=ROOT) == []


def test_runner_deployments_carry_cron_and_time_zone(shipped: dict[str, object]) -> None:
    deployments = {d.name: d for d in runner_deployments(shipped.values())}  # type: ignore[arg-type]
    assert set(deployments) == {*shipped, "outbox", "health", "replies", "digest", "tasks-sync", "reports"}
    assert deployments["outbox"].entrypoint.endswith("playbook.py:deliver_outbox")  # type: ignore[union-attr]
    assert deployments["health"].entrypoint.endswith("health.py:health")  # type: ignore[union-attr]
    assert deployments["reports"].entrypoint.endswith("reports.py:report_flow")  # type: ignore[union-attr]
    assert deployments["replies"].entrypoint.endswith("replies.py:poll_replies")  # type: ignore[union-attr]
    # without a mailbox configured, `retain serve` leaves the replies deployment out
    assert "replies" not in {d.name for d in runner_deployments(shipped.values(), without=("replies",))}  # type: ignore[arg-type]
    renewal = deployments["renewal"]
    assert renewal.parameters == {"playbook": "renewal"}
    assert renewal.entrypoint is not None and renewal.entrypoint.endswith("playbook.py:run_playbook")
    (schedule,) = renewal.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("*/30 * * * *", "America/New_York")


# --- the command ---------------------------------------------------------------------------------


def test_sync_writes_and_check_fails_when_out_of_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "prefect.yaml"
    args = ["--playbooks-dir", str(BUNDLED_PLAYBOOKS_DIR), "deployments", "sync", "--file", str(target)]
    assert main([*args, "--check"]) == 1  # missing
    assert main(args) == 0
    assert target.read_text(encoding="utf-8") == PREFECT_YAML.read_text(encoding="utf-8")
    assert main([*args, "--check"]) == 0
    target.write_text(target.read_text(encoding="utf-8").replace("*/30", "*/15"), encoding="utf-8")
    assert main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def _sync(target: Path, *options: str) -> int:
    return main(["--playbooks-dir", str(BUNDLED_PLAYBOOKS_DIR), "deployments", "sync", "--file", str(target), *options])


def test_every_deployment_names_its_pool_and_the_file_a_pull_step_of_no_ones_machine() -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    assert {d["name"]: d["work_pool"] for d in data["deployments"]} == {
        d["name"]: {"name": DEFAULT_WORK_POOL} for d in data["deployments"]
    }
    # read from each worker's environment when its run starts: nothing of the machine that wrote the file
    assert (
        data["pull"]
        == DEFAULT_PULL
        == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $RETAIN_CODE_DIR }}"}}]
    )
    assert str(ROOT) not in PREFECT_YAML.read_text(encoding="utf-8")


def test_sync_options_set_the_pool_and_the_code_and_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "prefect.yaml"
    assert _sync(target, "--work-pool", "big-pool", "--code-dir", "/srv/retain") == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert {d["work_pool"]["name"] for d in data["deployments"]} == {"big-pool"}
    assert data["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv/retain"}}]
    assert prefect_yaml_problems(target.read_text(encoding="utf-8"), root=ROOT) == []
    # CI checks with no options: the file's own pool and pull step are what it should say
    assert _sync(target, "--check") == 0
    written = target.read_text(encoding="utf-8")
    assert _sync(target) == 0 and target.read_text(encoding="utf-8") == written
    # a git repository instead of a directory
    repo = "https://git.example.com/acme/retain.git"
    assert _sync(target, "--git-repository", repo, "--git-branch", "release") == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert data["pull"] == [{"prefect.deployments.steps.git_clone": {"repository": repo, "branch": "release"}}]
    assert {d["work_pool"]["name"] for d in data["deployments"]} == {"big-pool"}
    assert prefect_yaml_problems(target.read_text(encoding="utf-8"), root=ROOT) == []
    assert _sync(target, "--check") == 0


def test_sync_options_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "prefect.yaml"
    monkeypatch.setenv("RETAIN_WORK_POOL", "from-env")
    monkeypatch.setenv("RETAIN_GIT_REPOSITORY", "https://git.example.com/acme/retain.git")
    # the worker's variable is not an option of the file: it is read by the worker, not written here
    monkeypatch.setenv("RETAIN_CODE_DIR", "/home/deployer/retain")
    assert _sync(target) == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert {d["work_pool"]["name"] for d in data["deployments"]} == {"from-env"}
    assert data["pull"] == [
        {"prefect.deployments.steps.git_clone": {"repository": "https://git.example.com/acme/retain.git"}}
    ]
    monkeypatch.delenv("RETAIN_GIT_REPOSITORY")
    assert _sync(target, "--code-dir", "{{ $CHECKOUT }}") == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert data["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $CHECKOUT }}"}}]
    assert "/home/deployer" not in target.read_text(encoding="utf-8")


def test_check_accepts_a_hand_set_work_pool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "prefect.yaml"
    assert _sync(target) == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    for dep in data["deployments"]:
        if dep["name"] == "outbox":  # the outbox on its own pool, with a queue and an environment
            dep["work_pool"] = {"name": "senders", "work_queue_name": "mail", "job_variables": {"env": {"A": "1"}}}
    text = render_prefect_yaml(load_playbooks(BUNDLED_PLAYBOOKS_DIR).values(), current=yaml.safe_dump(data))
    target.write_text(text, encoding="utf-8")
    assert _sync(target, "--check") == 0
    assert _sync(target) == 0 and target.read_text(encoding="utf-8") == text
    kept = {d["name"]: d["work_pool"] for d in yaml.safe_load(text)["deployments"]}
    assert kept["outbox"] == {"name": "senders", "work_queue_name": "mail", "job_variables": {"env": {"A": "1"}}}
    assert kept["renewal"] == {"name": "retain"}
    # --work-pool moves every deployment and keeps the rest of each one's pool settings
    assert _sync(target, "--work-pool", "one") == 0
    kept = {d["name"]: d["work_pool"] for d in yaml.safe_load(target.read_text(encoding="utf-8"))["deployments"]}
    assert kept["outbox"] == {"name": "one", "work_queue_name": "mail", "job_variables": {"env": {"A": "1"}}}
    assert _sync(target, "--check", "--work-pool", "two") == 1
    assert "with the same options" in capsys.readouterr().err


def test_what_a_person_adds_is_kept_and_typos_still_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "prefect.yaml"
    assert _sync(target) == 0
    data = yaml.safe_load(target.read_text(encoding="utf-8"))
    data["prefect-version"] = "3.9.1"
    for dep in data["deployments"]:
        if dep["name"] == "outbox":
            dep["concurrency_limit"] = 1
        if dep["name"] == "health":
            dep["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv/health"}}]
        if dep["name"] == "renewal":
            dep["schedules"] = [{"cron": "0 1 * * *", "timezone": "UTC", "active": True}]  # Retain's to write
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert _sync(target) == 0
    assert _sync(target, "--check") == 0
    kept = yaml.safe_load(target.read_text(encoding="utf-8"))
    deps = {d["name"]: d for d in kept["deployments"]}
    assert kept["prefect-version"] == "3.9.1"
    assert deps["outbox"]["concurrency_limit"] == 1
    assert deps["health"]["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "/srv/health"
    assert deps["renewal"]["schedules"] == [{"cron": "*/30 * * * *", "timezone": "America/New_York", "active": True}]
    # a misspelt key is kept too, and --check says so: Prefect would ignore it
    text = target.read_text(encoding="utf-8").replace("concurrency_limit: 1", "concurency_limit: 1")
    target.write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert _sync(target, "--check") == 1
    assert "deployment 'outbox': unknown key 'concurency_limit' (did you mean 'concurrency_limit'?)" in (
        capsys.readouterr().err
    )


def test_contradictory_code_places_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "prefect.yaml"
    assert _sync(target, "--code-dir", "/srv/retain", "--git-repository", "https://git.example.com/r.git") == 1
    assert "not both" in capsys.readouterr().err
    assert _sync(target, "--git-branch", "main") == 1
    assert "needs a git repository" in capsys.readouterr().err
    assert not target.exists()


def test_a_file_without_pool_or_pull_or_with_a_broken_step_is_reported() -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    del data["pull"]
    for dep in data["deployments"]:
        del dep["work_pool"]
    problems = prefect_yaml_problems(yaml.safe_dump(data))
    assert any(p.startswith("no work_pool name in check_in, farewell") and "ask for one" in p for p in problems)
    assert any(p.startswith("no pull step for check_in") and "deployer's own directory" in p for p in problems)
    data["pull"] = [
        {"prefect.deployments.steps.set_working_directry": {"directory": "."}},
        {"prefect.deployments.steps.git_clone": {"repo": "x"}},
        {"prefect.deployments.steps.set_working_directory": {"directory": ".", "id": "here"}},
    ]
    problems = prefect_yaml_problems(yaml.safe_dump(data))
    assert "pull[0]: unknown step 'prefect.deployments.steps.set_working_directry'" in problems
    assert any(p.startswith("pull[1]: prefect.deployments.steps.git_clone:") and "repo" in p for p in problems)
    assert not any(p.startswith("pull[2]") for p in problems)


@pytest.mark.usefixtures("prefect_api")  # Prefect's step runner asks its API for variables
def test_the_pull_steps_run_as_a_worker_runs_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's own step runner, on this machine: the default goes to ``$RETAIN_CODE_DIR`` of the
    worker's environment, or ``{{ $VAR }}``; git_clone clones a real repository."""
    import asyncio
    import os

    from prefect.deployments.steps.core import run_step

    def run_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:  # as a flow run does, without its events
        output: dict[str, Any] = {}
        for step in steps:
            output.update(asyncio.run(run_step(step, output)))
        return output

    work = tmp_path / "worker"
    work.mkdir()
    monkeypatch.chdir(work)
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setenv("RETAIN_CODE_DIR", str(code))
    assert run_steps(pull_steps()) == {"directory": str(code)}
    assert Path.cwd() == code
    monkeypatch.delenv("RETAIN_CODE_DIR")  # a worker started without it: the run fails, not elsewhere
    with pytest.raises(FileNotFoundError):
        run_steps(pull_steps())
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.setenv("RETAIN_CHECKOUT", str(checkout))
    run_steps(pull_steps("{{ $RETAIN_CHECKOUT }}"))
    assert Path.cwd() == checkout
    source = tmp_path / "source"
    source.mkdir()
    (source / "marker.txt").write_text("retain")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for argv in (["init", "-q", "-b", "release"], ["add", "marker.txt"], ["commit", "-q", "-m", "x"]):
        subprocess.run([*git, *argv], cwd=source, check=True)
    monkeypatch.chdir(work)
    output = run_steps(pull_steps(repository=f"file://{source}", branch="release"))
    assert (Path(output["directory"]) / "marker.txt").read_text() == "retain"
    assert Path(output["directory"]).resolve().parent == work.resolve()
    os.chdir(work)


# --- the local server helper ----------------------------------------------------------------------

HEALTHY = """
import http.server, sys

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/api/health"
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""

STUBBORN = HEALTHY.replace(
    "import http.server, sys", "import http.server, signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)"
)


def _script(tmp_path: Path, name: str, source: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return [sys.executable, str(path), "{port}"]


def test_local_server_waits_for_health_and_stops_on_exit(tmp_path: Path) -> None:
    import urllib.request

    with local_prefect_server(command=_script(tmp_path, "healthy", HEALTHY), startup_timeout=20) as server:
        assert server.api_url.startswith("http://127.0.0.1:") and server.api_url.endswith("/api")
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=5) as answer:
            assert answer.read() == b"true"
        process = server.process
    assert process.poll() == -signal.SIGTERM  # terminated, not killed


def test_local_server_on_the_port_asked_for_and_a_taken_port_refused(tmp_path: Path) -> None:
    import socket

    from flows.orchestration.deployments import free_port

    port = free_port()
    with local_prefect_server(port=port, command=_script(tmp_path, "healthy", HEALTHY), startup_timeout=20) as server:
        assert server.api_url == f"http://127.0.0.1:{port}/api"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with (
            pytest.raises(ConfigError, match=rf"port {busy} on 127.0.0.1 is taken: choose another --port"),
            local_prefect_server(port=busy, command=_script(tmp_path, "healthy", HEALTHY)),
        ):
            pytest.fail("never reached")


def test_port_with_a_configured_server_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["serve", "--port", "4999"]) == 1
        assert "--port is for a local Prefect server, but PREFECT_API_URL is set" in capsys.readouterr().err
        assert main(["demo", "--port", "4999"]) == 1
        assert "--port is for a local Prefect server, but PREFECT_API_URL is set" in capsys.readouterr().err


def test_local_server_is_killed_when_it_ignores_terminate(tmp_path: Path) -> None:
    started = time.monotonic()
    with local_prefect_server(command=_script(tmp_path, "stubborn", STUBBORN), stop_timeout=0.5) as server:
        process = server.process
    assert process.poll() == -signal.SIGKILL
    assert time.monotonic() - started < 15


def test_local_server_that_fails_to_start_says_why(tmp_path: Path) -> None:
    broken = _script(tmp_path, "broken", "import sys\nprint('cannot bind: address in use')\nsys.exit(3)\n")
    with pytest.raises(ConfigError, match=r"exited with code 3:\n.*cannot bind"), local_prefect_server(command=broken):
        pytest.fail("never reached")


def test_local_server_stopped_on_ctrl_c(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), local_prefect_server(command=_script(tmp_path, "ctrlc", HEALTHY)) as server:
        process = server.process
        raise KeyboardInterrupt
    assert process.poll() is not None


def test_stop_process_on_a_finished_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert stop_process(process, 1) == 0


# --- SQL sources ---------------------------------------------------------------------------------


def test_one_deployment_per_scheduled_sql_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    folder = tmp_path / "playbooks"
    shutil.copytree(BUNDLED_PLAYBOOKS_DIR, folder, ignore=shutil.ignore_patterns("*.json"))
    (folder / "sources.yaml").write_text(
        textwrap.dedent("""\
            sources:
              crm:
                kind: accounts
                url: {env: WAREHOUSE_URL}
                query: SELECT id AS external_id, name, updated_at FROM accounts
                cursor: updated_at
                schedule: {cron: "*/15 * * * *", timezone: Europe/Berlin}
              by_hand:
                kind: usage
                url: {env: WAREHOUSE_URL}
                query: SELECT * FROM usage_daily
                cursor: updated_at
        """),
        encoding="utf-8",
    )
    target = tmp_path / "prefect.yaml"
    assert main(["--playbooks-dir", str(folder), "deployments", "sync", "--file", str(target)]) == 0
    text = target.read_text(encoding="utf-8")
    assert prefect_yaml_problems(text, root=ROOT) == []
    deployments = {d["name"]: d for d in yaml.safe_load(text)["deployments"]}
    assert "sync-by_hand" not in deployments  # no schedule: run by hand with `retain sync by_hand`
    crm = deployments["sync-crm"]
    assert (crm["entrypoint"], crm["parameters"], crm["work_pool"]) == (
        "flows/orchestration/sync.py:sync_flow", {"source": "crm"}, {"name": DEFAULT_WORK_POOL},
    )  # fmt: skip
    assert crm["schedules"] == [{"cron": "*/15 * * * *", "timezone": "Europe/Berlin", "active": True}]
    from playbooks import load_sources

    served = {d.name: d for d in runner_deployments(load_playbooks(folder).values(), load_sources(folder).sources)}
    (schedule,) = served["sync-crm"].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("*/15 * * * *", "Europe/Berlin")
    assert served["sync-crm"].parameters == {"source": "crm"}


def test_digest_and_tasks_sync_follow_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The digest's local time and time zone and the CRM sync's interval come from the settings;
    `--check` passes with the same settings and fails when they change."""
    monkeypatch.setenv("RETAIN_DIGEST_TIME", "7:30")
    monkeypatch.setenv("RETAIN_DIGEST_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("RETAIN_TASKS_SYNC_MINUTES", "10")
    target = tmp_path / "prefect.yaml"
    assert _sync(target) == 0
    assert "the daily digest and CRM tasks" in capsys.readouterr().out
    assert _sync(target, "--check") == 0
    total = len(load_playbooks(BUNDLED_PLAYBOOKS_DIR)) + 6  # outbox, health, replies, digest, tasks-sync, reports
    assert f"is up to date ({total} deployments)" in capsys.readouterr().out
    assert prefect_yaml_problems(target.read_text(encoding="utf-8"), root=ROOT) == []
    deployments = {d["name"]: d for d in yaml.safe_load(target.read_text(encoding="utf-8"))["deployments"]}
    assert deployments["digest"]["entrypoint"] == "flows/orchestration/digest.py:daily_digest"
    assert deployments["digest"]["schedules"] == [{"cron": "30 7 * * *", "timezone": "Europe/Berlin", "active": True}]
    assert deployments["tasks-sync"]["entrypoint"] == "flows/orchestration/crm_tasks.py:sync_crm_tasks"
    assert deployments["tasks-sync"]["schedules"] == [{"interval": 600, "timezone": "UTC", "active": True}]

    served = {
        d.name: d for d in runner_deployments(load_playbooks(BUNDLED_PLAYBOOKS_DIR).values(), settings=Settings())
    }
    (digest,) = served["digest"].schedules
    assert (digest.schedule.cron, digest.schedule.timezone) == ("30 7 * * *", "Europe/Berlin")
    (every,) = served["tasks-sync"].schedules
    assert every.schedule.interval.total_seconds() == 600

    monkeypatch.setenv("RETAIN_DIGEST_TIME", "09:00")
    assert _sync(target, "--check") == 1
    assert "out of date" in capsys.readouterr().err

    monkeypatch.setenv("RETAIN_DIGEST_TIME", "25:00")
    assert _sync(target) != 0
    assert "'25:00' is not a time of day as HH:MM" in capsys.readouterr().err
    monkeypatch.setenv("RETAIN_DIGEST_TIME", "08:00")
    monkeypatch.setenv("RETAIN_DIGEST_TIMEZONE", "Europe/Berlinn")
    assert _sync(target) != 0
    assert "unknown time zone 'Europe/Berlinn'" in capsys.readouterr().err


def test_serve_leaves_out_replies_without_a_mailbox_and_tasks_sync_without_a_crm() -> None:
    assert set(not_served(Settings(mailbox_url=None, crm_token=None))) == {"replies", "tasks-sync"}
    assert set(not_served(Settings(mailbox_url="imaps://cs@mail.example/INBOX", crm_token=None))) == {"tasks-sync"}
    assert not_served(Settings(mailbox_url="imaps://cs@mail.example/INBOX", crm_token="pat-1")) == {}
    served = {
        d.name
        for d in runner_deployments(
            load_playbooks(BUNDLED_PLAYBOOKS_DIR).values(), without=not_served(Settings(crm_token=None))
        )
    }
    assert "tasks-sync" not in served and "digest" in served
