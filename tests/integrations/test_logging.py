"""Retries, back-offs and imports say what they do through the standard ``logging`` module, so
they show in Prefect's run logs (and anywhere else a handler listens)."""

from __future__ import annotations

import logging
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.outbox import DeliveryPolicy
from flows.engine.tick import tick
from integrations.channels import WebhookChannel
from integrations.sources import import_accounts
from models import Account, DataImportError, Touch, table_of
from playbooks import CompiledPlaybook, compile_source

from .conftest import HttpServer

T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
FAST = DeliveryPolicy(backoff_base=0.01, backoff_cap=0.05)


def _hook(url: str) -> CompiledPlaybook:
    source = f"""
        playbook: hook
        name: Hook
        lifecycle: custom
        audience: account.status == "active"
        steps:
          - id: notify
            kind: webhook
            url: "{url}"
        """
    return compile_source(textwrap.dedent(source), "hook.yaml")


def _one_account(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [{"external_id": "acme", "name": "Acme", "arr": 1.0, "currency": "USD", "status": "active", "custom": {}}],
        )


def _messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger]


def test_a_retry_of_a_429_is_logged_with_its_wait(
    sqlite_engine: Engine, http_server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    _one_account(sqlite_engine)
    http_server.queue.append((429, {"Retry-After": "0"}, "slow down"))
    caplog.set_level(logging.INFO)

    tick(sqlite_engine, _hook(f"{http_server.url}/hook"), T0, channels={"webhook": WebhookChannel()}, delivery=FAST)

    with sqlite_engine.connect() as conn:
        (touch,) = conn.execute(select(table_of(Touch))).all()
    assert touch.status == "delivered"
    assert len(http_server.requests) == 2  # the 429, then the retry

    channel_lines = _messages(caplog, "integrations.channels._http")
    what = "webhook POST http://127.0.0.1"  # the host only: a webhook's path may hold a token
    assert channel_lines == [(logging.INFO, f"{what}: HTTP 429, worth another attempt (Retry-After 0 s)")]
    outbox_lines = _messages(caplog, "flows.engine.outbox")
    assert outbox_lines == [
        (
            logging.WARNING,
            f"touch {touch.key} (webhook): try 1 failed, retrying in 0.0 s (Retry-After): "
            f"{what}: HTTP 429 Too Many Requests: slow down",
        )
    ]


def test_a_failed_connection_retry_is_logged_with_its_back_off(
    sqlite_engine: Engine, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    _one_account(sqlite_engine)
    caplog.set_level(logging.INFO)

    tick(
        sqlite_engine,
        _hook(f"http://127.0.0.1:{closed_port}/hook"),
        T0,
        channels={"webhook": WebhookChannel()},
        delivery=FAST,
    )

    with sqlite_engine.connect() as conn:
        (touch,) = conn.execute(select(table_of(Touch))).all()
    assert touch.status == "pending"  # tried again by a later run
    outbox = [message for _, message in _messages(caplog, "flows.engine.outbox")]
    assert len(outbox) == FAST.attempts_now
    assert all(m.startswith(f"touch {touch.key} (webhook): try ") for m in outbox)
    assert "(back-off)" in outbox[0] and "retrying in a later run" in outbox[-1]
    channel = _messages(caplog, "integrations.channels._http")
    assert channel and all("(not sent: worth another attempt)" in message for _, message in channel)


def test_an_import_logs_the_rows_it_read_and_refused(
    sqlite_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = tmp_path / "accounts.csv"
    good.write_text("external_id,name,arr\nacme,Acme,1200\nglobex,Globex,300\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("external_id,name,arr\ninitech,Initech,12,50\numbrella,Umbrella,-5\nhooli,Hooli,7\n")
    caplog.set_level(logging.INFO)

    import_accounts(sqlite_engine, good, now=T0)
    with pytest.raises(DataImportError):
        import_accounts(sqlite_engine, bad, now=T0)

    assert _messages(caplog, "integrations.sources._csv") == [
        (logging.INFO, f"{good}: 2 rows read, 3 columns (delimiter ',')"),
        (logging.INFO, f"{bad}: 2 rows read, 3 columns (delimiter ',')"),
        (logging.WARNING, f"{bad}: 2 rows refused, so nothing is written"),
    ]
    assert _messages(caplog, "integrations.sources.accounts") == [
        (logging.INFO, f"{good}: accounts 2 inserted, 0 updated, 0 unchanged, 0 rows skipped"),
    ]
