"""The schema is created and upgraded by Alembic on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models import Account, ConfigError, Enrollment, make_engine, require_schema
from models.db import alembic_config, current_revision, head_revision, listed_head


def test_require_schema_says_what_to_run(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(ConfigError, match=r"run `retain init`"):
        require_schema(engine)


def test_migrated_database_is_at_head(engine):
    assert current_revision(engine) == head_revision()
    require_schema(engine)


def test_the_migration_files_name_alembics_head():
    """The schema check reads the newest migration off the files' revision lines, not Alembic."""
    assert listed_head() == head_revision()


def test_a_database_behind_says_what_to_run(tmp_path):
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert current_revision(engine) == "0001"
    with pytest.raises(ConfigError, match=rf"is at schema 0001, Retain needs {head_revision()}: run `retain init`"):
        require_schema(engine)


def test_timestamps_come_back_aware_utc(engine):
    berlin = timezone(timedelta(hours=2))
    signed = datetime(2027, 3, 1, 12, 30, tzinfo=berlin)
    with Session(engine) as s:
        s.add(Account.model_validate({"external_id": "acme", "name": "Acme", "onboarded_at": signed}))
        s.commit()
        s.expunge_all()
        acme = s.exec(select(Account).where(Account.external_id == "acme")).one()
    assert acme.onboarded_at == signed
    assert acme.onboarded_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(sqlite_engine):
    with Session(sqlite_engine) as s:
        s.add(Account.model_validate({"external_id": "x", "name": "X"}))
        s.commit()
        acme = s.exec(select(Account)).one()
        acme.onboarded_at = datetime(2027, 1, 1)  # noqa: DTZ001 - the point of the test
        s.add(acme)
        with pytest.raises(Exception, match="naive datetime refused"):
            s.commit()


def test_one_active_enrollment_per_playbook_and_account(engine):
    with Session(engine) as s:
        acme = Account.model_validate({"external_id": "acme", "name": "Acme"})
        s.add(acme)
        s.commit()
        s.add(
            Enrollment.model_validate(
                {"playbook": "renewal", "revision": "r1", "account_id": acme.id, "status": "completed"}
            )
        )
        s.add(Enrollment.model_validate({"playbook": "renewal", "revision": "r1", "account_id": acme.id}))
        s.commit()
        s.add(Enrollment.model_validate({"playbook": "renewal", "revision": "r2", "account_id": acme.id}))
        with pytest.raises(IntegrityError):
            s.commit()


def test_upgrade_keeps_existing_rows(tmp_path):
    """A database made by an older version upgrades in place (Alembic), keeping its data."""
    from alembic import command
    from sqlalchemy import text

    from models.db import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO account (external_id, name, arr, currency, status, custom, created_at, updated_at, holdout_bucket) "
                "VALUES ('acme', 'Acme', 1, 'USD', 'active', '{}', '2027-01-01 00:00:00', '2027-01-01 00:00:00', 7)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO touch (key, account_id, channel, status, payload, attempts, created_at) "
                "VALUES ('k1', 1, 'email', 'pending', '{}', 0, '2027-01-01 00:00:00')"
            )
        )
    assert upgrade(engine) == ("0001", head_revision())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT priority FROM touch WHERE key = 'k1'")).scalar_one() == 50
        assert conn.execute(text("SELECT name FROM account")).scalar_one() == "Acme"
