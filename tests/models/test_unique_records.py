"""Migration 0005: the digest's posted-once record and the revenue outcomes' key are rows with
unique keys, on SQLite and PostgreSQL alike; an upgraded database keeps its outcomes, keyed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models import Account, Outcome, make_engine, table_of, upgrade
from models.db import alembic_config, head_revision
from models.tables import DigestPost

AT = datetime(2027, 3, 1, tzinfo=UTC)


def _account(engine: Engine) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                insert(table_of(Account)).returning(table_of(Account).c.id),
                {"external_id": "acme", "name": "Acme", "custom": {}},
            ).scalar_one()
        )


def _outcome(account_id: int, key: str | None, enrollment_id: int | None = None) -> dict[str, object]:
    return {
        "account_id": account_id,
        "enrollment_id": enrollment_id,
        "kind": "renewed",
        "source": "revenue",
        "key": key,
        "occurred_at": AT,
    }


def test_a_revenue_outcome_is_kept_once_per_account_key_and_enrollment(engine: Engine) -> None:
    acme = _account(engine)
    with engine.begin() as conn:
        conn.execute(insert(table_of(Outcome)), _outcome(acme, "revenue:renewed:2027-03"))
    # the same key without an enrollment again: refused (NULL enrollments count as one value)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(table_of(Outcome)), _outcome(acme, "revenue:renewed:2027-03"))
    with engine.begin() as conn:
        # a person's outcomes have no key: as many as they record
        conn.execute(insert(table_of(Outcome)), [_outcome(acme, None), _outcome(acme, None)])
        conn.execute(insert(table_of(Outcome)), _outcome(acme, "revenue:renewed:2027-04"))
        assert len(conn.execute(select(table_of(Outcome).c.id)).all()) == 4


def test_a_digest_key_is_posted_once(engine: Engine) -> None:
    row = {"key": "weekly:2027-W09:slack:#cs", "channel": "slack", "status": "sending", "started_at": AT}
    with engine.begin() as conn:
        conn.execute(insert(table_of(DigestPost)), row)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(table_of(DigestPost)), row)


def test_upgrade_keys_the_revenue_outcomes_of_older_versions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        conn.execute(
            text(
                "INSERT INTO account (external_id, name, arr, currency, status, custom, created_at, updated_at, "
                "holdout_bucket) VALUES ('acme', 'Acme', 1, 'USD', 'active', '{}', '2027-01-01 00:00:00', "
                "'2027-01-01 00:00:00', 7)"
            )
        )
        for note, source, recorded_by in [
            ("revenue:renewed:2027-03 renewed on 2027-03-01", "revenue", "retain:revenue"),
            ("revenue:renewed:2027-03 renewed on 2027-03-01", "revenue", "retain:revenue"),  # a racing copy
            ("revenue:expanded:2027-04 expanded", "revenue", "retain:revenue"),
            ("called them: happy", "manual", "dana@vendor.example"),
        ]:
            conn.execute(
                text(
                    "INSERT INTO outcome (account_id, kind, source, note, recorded_by, occurred_at) "
                    "VALUES (1, 'renewed', :source, :note, :by, '2027-03-01 00:00:00')"
                ),
                {"note": note, "source": source, "by": recorded_by},
            )
    assert upgrade(engine) == ("0004", head_revision())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT key, note FROM outcome ORDER BY id")).all()
    assert [key for key, _ in rows] == ["revenue:renewed:2027-03", "revenue:expanded:2027-04", None]
    assert rows[2][1] == "called them: happy"
    engine.dispose()
