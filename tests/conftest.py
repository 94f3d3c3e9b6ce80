"""Fixtures shared by every test package: real databases, migrated by Alembic.

PostgreSQL tests run against the server at ``RETAIN_TEST_PG_URL`` (default: the local
``postgresql://postgres@127.0.0.1:5432/postgres``) in a database made for this session. When no
server answers they skip with the reason, except under ``CI=true``: there PostgreSQL missing or
down FAILS them, so the multi-worker tests can never silently vanish from a CI run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine, make_url

from models import make_engine, upgrade

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
    """The session's PostgreSQL engine with every Retain table emptied."""
    from sqlalchemy import text
    from sqlmodel import SQLModel

    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with pg_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    return pg_engine


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'retain.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    """A migrated SQLite file database, new for each test."""
    engine = make_engine(sqlite_url)
    upgrade(engine)
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


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One temporary Prefect server (``prefect_test_harness``) for every test of the session."""
    import prefect.settings as ps
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    mp = pytest.MonkeyPatch()
    # the server runs as a subprocess and reads the environment; this process reads settings
    for name, value in {**PREFECT_HERMETIC, "PREFECT_HOME": str(home)}.items():
        mp.setenv(name, value)
    updates = {
        ps.PREFECT_HOME: str(home),
        ps.PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90,
        ps.PREFECT_LOGGING_LEVEL: "WARNING",
        ps.PREFECT_SERVER_ANALYTICS_ENABLED: False,
    }
    try:
        with ps.temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=None):
            yield
    finally:
        mp.undo()
