"""Engines, sessions and the schema's migrations (Alembic), for SQLite and PostgreSQL alike.

Alembic is imported only to migrate (and to name the newest migration when a quick look cannot):
checking that a database is current, which every command does, reads the version table and the
migration files' revision lines itself, and so starts a command without Alembic's import."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, CursorResult, Engine, Result, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session as SqlAlchemySession
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.util.typing import TupleAny, Unpack
from sqlmodel import Session, create_engine

from .errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "alembic_config",
    "current_revision",
    "execute",
    "head_revision",
    "make_engine",
    "require_schema",
    "session",
    "upgrade",
]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


#: the databases Retain runs on, by SQLAlchemy driver name (a bare ``postgresql://`` means psycopg 3)
SUPPORTED_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
SUPPORTED = "SQLite (sqlite:///retain.db) or PostgreSQL (postgresql://user:password@host:5432/retain)"


def _normalise_url(url: str) -> str:
    """The URL SQLAlchemy gets; a :class:`ConfigError` naming what is supported for any other."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {url!r} is not a database URL: use {SUPPORTED}") from exc
    driver = SUPPORTED_DRIVERS.get(parsed.drivername)
    if driver is None:
        shown = parsed.render_as_string(hide_password=True)
        raise ConfigError(f"database URL {shown!r}: {parsed.drivername!r} is not supported; use {SUPPORTED}")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite gets WAL, foreign keys and a busy timeout; ``postgresql://``
    means psycopg 3."""
    url = _normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite opens transactions lazily, on its own: then a savepoint can open the outer
            # transaction and "releasing" it commits, so a dry run would keep its writes. Let
            # SQLAlchemy's BEGIN (below) open every transaction instead (SQLAlchemy's own recipe).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


@contextmanager
def session(bind: Engine | Connection) -> Iterator[Session]:
    """A session that commits on success and rolls back on error.

    Bound to a :class:`Connection` inside a transaction (a dry run), its commits are savepoints and
    the caller's rollback undoes everything."""
    with Session(bind, expire_on_commit=False, join_transaction_mode="create_savepoint") as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


@overload
def execute(s: Session, statement: UpdateBase) -> CursorResult[Unpack[TupleAny]]: ...
@overload
def execute(s: Session, statement: Executable) -> Result[Unpack[TupleAny]]: ...
def execute(s: Session, statement: Executable) -> Result[Unpack[TupleAny]]:
    """Run a SQLAlchemy statement (a ``select`` of columns or tables, an insert, an update) in the
    session, as ``s.exec`` does. SQLModel types ``Session.exec`` for its own ``select`` only; this is
    the very call ``exec`` makes (SQLAlchemy's ``Session.execute``), typed for every statement: an
    insert or update gives a ``CursorResult`` (``rowcount``, ``returning`` rows)."""
    return SqlAlchemySession.execute(s, statement)


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


_REVISION_LINE = re.compile(
    r"""^(down_revision|revision)\b[^=\n]*=[ \t]*(None|'[^'\n]*'|"[^"\n]*")[ \t]*$""", re.MULTILINE
)


@cache
def listed_head() -> str | None:
    """The newest migration as the files of ``versions/`` name it: the one revision no other file
    revises. ``None`` unless every file declares its ``revision`` and ``down_revision`` on one
    plain line each (as Alembic writes them) and exactly one head results: then ask Alembic."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        if path.name.startswith("_"):
            continue
        found = dict((m.group(1), m.group(2)) for m in _REVISION_LINE.finditer(path.read_text(encoding="utf-8")))
        if found.get("revision", "None") == "None" or "down_revision" not in found:
            return None
        revisions.add(found["revision"][1:-1])
        if found["down_revision"] != "None":
            revised.add(found["down_revision"][1:-1])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision (Alembic's version table), ``None`` when it has none."""
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            if len(versions) > 1:  # branches: Alembic says what that means
                from alembic.runtime.migration import MigrationContext

                return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise ConfigError(f"cannot open the database {engine.url.render_as_string()}: {exc.orig}") from exc
    return str(versions[0]) if versions else None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Create or upgrade Retain's schema to the newest migration. Returns (before, after)."""
    from alembic import command

    before = current_revision(engine)
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()


def require_schema(engine: Engine) -> None:
    """Raise a ConfigError that says what to run when the database is missing or behind."""
    current = current_revision(engine)
    if current is None:
        raise ConfigError(f"the database {engine.url.render_as_string()} has no Retain schema yet: run `retain init`")
    if current == listed_head():
        return
    if current != head_revision():
        raise ConfigError(
            f"the database {engine.url.render_as_string()} is at schema {current}, Retain needs "
            f"{head_revision()}: run `retain init` to upgrade it"
        )
