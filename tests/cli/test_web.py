"""``retain web`` as a user runs it: a process on a port, answering until Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_retain_web_serves_until_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    assert cli.main(["--database-url", url, "init"]) == 0
    port = _free_port()
    env = {**os.environ, "RETAIN_DATABASE_URL": url, "RETAIN_WEB_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-c", "import cli; cli.run()", "web"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "retain web never answered"
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.json() == {"ok": True}
        assert httpx.get(f"http://127.0.0.1:{port}/unsubscribe?t=forged", timeout=5).status_code == 400
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert f"retain web on http://127.0.0.1:{port}" in out
    assert "Traceback" not in err


def test_retain_serve_web_runs_the_web_app_beside_the_schedules(tmp_path: Path, prefect_server: str) -> None:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    assert cli.main(["--database-url", url, "init"]) == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETAIN_"))}
    env.update({"RETAIN_DATABASE_URL": url, "RETAIN_WEB_PORT": str(port), "PREFECT_API_URL": prefect_server,
                "PREFECT_HOME": str(tmp_path / "prefect-home"), "DO_NOT_TRACK": "1",
                "RETAIN_OUTBOX_DIR": str(tmp_path / "outbox")})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", "import cli; cli.run()", "serve", "--web"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "retain serve --web never answered"
                time.sleep(0.25)
        assert answer.json() == {"ok": True}
    finally:
        process.send_signal(signal.SIGINT)
        out = process.communicate(timeout=120)[0]
    assert process.returncode == 130, out
    assert "Traceback" not in out, out
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        stopped = False
    except httpx.TransportError:
        stopped = True
    assert stopped, "the web app outlived retain serve"
