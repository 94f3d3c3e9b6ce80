"""Migrated SQLite databases for tests, fast: Alembic migrates one template per process (about
half a second, more under coverage), and every database a test asks for is a copy of it (a few
milliseconds). The copy is what ``upgrade`` makes: the same schema and the same revision."""

from __future__ import annotations

import atexit
import shutil
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy.engine import Engine

from models import make_engine, upgrade

__all__ = ["migrated_sqlite"]

_template: Path | None = None


def _the_template() -> Path:
    global _template
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="retain-test-template-"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        _template = path
    return _template


def migrated_sqlite(path: Path | str) -> Engine:
    """An engine on a new SQLite file at ``path`` (or a ``sqlite:///`` URL) with Retain's schema at
    the newest migration."""
    if isinstance(path, str):
        path = Path(path.removeprefix("sqlite:///"))
    source, target = sqlite3.connect(_the_template()), sqlite3.connect(path)
    try:
        source.backup(target)  # a consistent copy, whatever the template's journal holds
    finally:
        source.close()
        target.close()
    return make_engine(f"sqlite:///{path}")
