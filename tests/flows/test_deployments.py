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

import pytest
import yaml

from cli import main
from flows.orchestration.deployments import (
    ENTRYPOINT,
    HEALTH_CRON,
    OUTBOX_CRON,
    OUTBOX_ENTRYPOINT,
    REPORTS_CRON,
    deployment_specs,
    local_prefect_server,
    prefect_yaml_problems,
    render_prefect_yaml,
    runner_deployments,
    stop_process,
)
from models import BUNDLED_PLAYBOOKS_DIR, ConfigError
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
    assert set(deployments) == {*shipped, "outbox", "health", "reports"}
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

    configs, _ = _load_deploy_configs_and_actions(PREFECT_YAML, console=Console(quiet=True))
    assert sorted(c["name"] for c in configs) == sorted([*shipped, "outbox", "health", "reports"])
    for config in configs:
        if config["name"] in ("outbox", "health", "reports"):
            (schedule,) = [_schedule_config_to_deployment_schedule(s) for s in config["schedules"]]
            crons = {"outbox": OUTBOX_CRON, "health": HEALTH_CRON, "reports": REPORTS_CRON}
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
    assert spec["schedules"] == [] and [o["name"] for o in others] == ["outbox", "health", "reports"]
    assert prefect_yaml_problems(render_prefect_yaml([pb]), root=ROOT) == []


def test_runner_deployments_carry_cron_and_time_zone(shipped: dict[str, object]) -> None:
    deployments = {d.name: d for d in runner_deployments(shipped.values())}  # type: ignore[arg-type]
    assert set(deployments) == {*shipped, "outbox", "health", "reports"}
    assert deployments["outbox"].entrypoint.endswith("playbook.py:deliver_outbox")  # type: ignore[union-attr]
    assert deployments["health"].entrypoint.endswith("health.py:health")  # type: ignore[union-attr]
    assert deployments["reports"].entrypoint.endswith("reports.py:report_flow")  # type: ignore[union-attr]
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
