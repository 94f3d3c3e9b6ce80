"""Fixtures shared by every test package: real databases, migrated by Alembic.

PostgreSQL tests run against the server at ``RETAIN_TEST_PG_URL`` (default: the local
``postgresql://postgres@127.0.0.1:5432/postgres``) in a database made for this session. When no
server answers they skip with the reason, except under ``CI=true``: there PostgreSQL missing or
down FAILS them, so the multi-worker tests can never silently vanish from a CI run.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine, make_url

from models import make_engine, upgrade
from tests._sqlite import migrated_sqlite

PG_ADMIN_URL = os.environ.get("RETAIN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def in_ci() -> bool:
    """``CI`` set to true (GitHub Actions, GitLab, and ``.ci/run`` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pg_unavailable(reason: str) -> None:
    """Skip a PostgreSQL test with the reason, or, under ``CI=true``, fail it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def _pg_admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    url = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database or "postgres",
        autocommit=True,
        connect_timeout=3,
    )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session (dropped afterwards)."""
    try:
        admin = _pg_admin_connect()
    except Exception as exc:  # any reason the server cannot be reached, psycopg missing included
        pg_unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"retain_test_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with _pg_admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """A migrated PostgreSQL engine shared by the session. Tests clean up what they write,
    or use :func:`pg_clean` to truncate every table first."""
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_clean(pg_engine: Engine) -> Engine:
    """The session's PostgreSQL engine with every Retain table emptied and its ids restarting at 1.

    ``DELETE`` children first, not ``TRUNCATE``: a test's tables hold a few rows, and TRUNCATE's
    new files cost 0.6-0.9 s per test here against 15 ms."""
    from sqlalchemy import text
    from sqlmodel import SQLModel

    with pg_engine.begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(text(f'DELETE FROM "{table.name}"'))
        conn.execute(
            text(
                "SELECT setval(format('%I.%I', sequence_schema, sequence_name)::regclass, 1, false) "
                "FROM information_schema.sequences"
            )
        )
    return pg_engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'retain.db'}"


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite file database (``sqlite_url``), new for each test: a copy of one template."""
    engine = migrated_sqlite(tmp_path / "retain.db")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Both databases: the test runs once on SQLite and once on PostgreSQL (cleaned)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_engine")
    return request.getfixturevalue("pg_clean")


#: settings that keep a test's Prefect to itself: quiet, no analytics, time to start on 2 cores
PREFECT_HERMETIC = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


class _PrefectServer:
    """``prefect server start`` on a free loopback port, started as soon as the session knows a
    test needs it (:func:`pytest_collection_finish`), so that its start overlaps the tests that
    run before; stopped at the end of the session, after this process's clients drained."""

    def __init__(self, home: Path) -> None:
        import socket
        import subprocess
        import sys
        import tempfile

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.api_url = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HERMETIC, PREFECT_HOME=str(home), PREFECT_SERVER_LOGGING_LEVEL="WARNING")
        self.log = Path(tempfile.mkstemp(prefix="retain-test-prefect-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole
            )

    def wait_healthy(self, timeout: float = 240) -> str:
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the test Prefect server exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self.api_url
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the test Prefect server did not answer within {timeout:g} s")
            time.sleep(0.2)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.unlink(missing_ok=True)


def pytest_configure(config: pytest.Config) -> None:
    # Prefect sets up its logging the first time it is imported: a console handler on the root
    # logger, bound to sys.stderr as it is then. Imported first inside a test, that is the test's
    # captured stream, closed when the test ends, and every later log record of the session prints
    # "--- Logging error ---" into some other test's output. Set it up now, while pytest's
    # session-wide capture is sys.stderr; later imports only update it.
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


class ManyWorkersRun:
    """``bench/many_workers.py`` small (see tests/flows/test_many_workers.py), started as soon as
    the session knows that test is selected, as the Prefect server is: it spends half a minute
    mostly starting processes (a Prefect server, two workers, four flow runs), which runs beside
    the tests before it instead of adding to the session. Its test reads what it printed."""

    ROOT = Path(__file__).resolve().parents[1]

    def __init__(self) -> None:
        import subprocess
        import sys

        from flows.orchestration.deployments import free_port

        self.port = free_port()  # the server on a port named in advance, as `retain serve --port` does
        self.stdout = Path(tempfile.mkstemp(prefix="retain-test-many-workers-", suffix=".out")[1])
        self.stderr = Path(tempfile.mkstemp(prefix="retain-test-many-workers-", suffix=".err")[1])
        argv = [sys.executable, str(self.ROOT / "bench" / "many_workers.py"), "--accounts", "40", "--runs", "4"]
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [*argv, "--port", str(self.port), "--pg", PG_ADMIN_URL],
                cwd=self.ROOT,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def result(self, timeout: float = 600) -> tuple[int, str, str]:
        """Its exit code, stdout and stderr, once it has finished (a test failure after ``timeout``)."""
        import subprocess

        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bench/many_workers.py did not finish within {timeout:g} s")
        return code, self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")

    def stop(self) -> None:
        """Stop it if it still runs: SIGINT, so that it stops its server and workers and drops its
        databases on the way out, as after Ctrl-C."""
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stdout.unlink(missing_ok=True)
        self.stderr.unlink(missing_ok=True)


_prefect_server: _PrefectServer | None = None
_many_workers: ManyWorkersRun | None = None
_PREFECT_FIXTURES = {"prefect_server", "prefect_api"}


def pytest_collection_finish(session: pytest.Session) -> None:
    global _prefect_server, _many_workers
    if any(_PREFECT_FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items):
        home = Path(tempfile.mkdtemp(prefix="retain-test-prefect-home-"))
        _prefect_server = _PrefectServer(home)
    wanted = not session.config.option.collectonly
    if wanted and any("many_workers_run" in getattr(item, "fixturenames", ()) for item in session.items):
        _many_workers = ManyWorkersRun()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _many_workers is not None:
        _many_workers.stop()
    if _prefect_server is not None:
        _prefect_server.stop()


@pytest.fixture(scope="session")
def many_workers_run() -> ManyWorkersRun:
    """The session's run of ``bench/many_workers.py`` small (started after the collection)."""
    global _many_workers
    if _many_workers is None:  # (asked for by a test the collection did not see: start it now)
        _many_workers = ManyWorkersRun()
    return _many_workers


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The API URL of one real local Prefect server shared by every test of the session."""
    global _prefect_server
    if _prefect_server is None:  # (asked for by a test the collection did not see: start it now)
        _prefect_server = _PrefectServer(tmp_path_factory.mktemp("prefect-server-home"))
    return _prefect_server.wait_healthy()


@pytest.fixture(scope="session")
def prefect_api(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This process's Prefect client pointed at the session's server, with hermetic settings; its
    log and event workers are drained at the end (stopping a server first makes the exit hang)."""
    import prefect.settings as ps

    home = tmp_path_factory.mktemp("prefect-home")
    mp = pytest.MonkeyPatch()
    for name, value in {**PREFECT_HERMETIC, "PREFECT_HOME": str(home)}.items():
        mp.setenv(name, value)
    updates = {
        ps.PREFECT_HOME: str(home),
        ps.PREFECT_API_URL: prefect_server,
        ps.PREFECT_LOGGING_LEVEL: "WARNING",
        ps.PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    try:
        with ps.temporary_settings(updates=updates), _global_settings():
            yield
            _drain_prefect_workers()
    finally:
        mp.undo()


@contextlib.contextmanager
def _global_settings() -> Iterator[None]:
    """These settings for threads whose context was copied before (as ``prefect_test_harness``)."""
    import prefect.context

    with prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(RuntimeError):  # never started
        APILogWorker.instance().drain()
    EventsWorker.drain_all()


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives, and Retain's email
    settings pointed at it (``RETAIN_SMTP_URL``, ``RETAIN_EMAIL_FROM``)."""
    from aiosmtpd.controller import Controller

    from tests.integrations.conftest import SmtpSink, free_port

    sink = SmtpSink()
    server = Controller(sink, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    server.start()
    monkeypatch.setenv("RETAIN_SMTP_URL", f"smtp://127.0.0.1:{server.port}?starttls=false")
    monkeypatch.setenv("RETAIN_EMAIL_FROM", "Success <cs@retain.test>")
    yield sink
    server.stop()
