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
