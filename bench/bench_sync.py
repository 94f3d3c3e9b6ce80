"""SQL sources at scale: rows per second and peak memory of ``retain sync`` reading a warehouse.

Builds a warehouse (a SQLite file; with ``--postgres URL`` also a PostgreSQL database made for the
run and dropped after it) holding ``--accounts`` accounts and ``--rows`` daily usage values, then
syncs both sources into a fresh Retain SQLite file: the first run (every row), then a run after
1% of the usage rows changed (only those are read). Prints one JSON line per figure; no asserts.

The memory figure is the peak of Python's traced allocations while every row is read again from
the start: with streamed batches it stays near one batch's worth whatever ``--rows`` is (compare
two sizes).

Run: ``python bench/bench_sync.py [--rows 1000000] [--accounts 1000] [--batch 5000] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from flows.sync import sync_sources  # noqa: E402
from integrations.sources import forget_cursor  # noqa: E402
from models import make_engine, upgrade  # noqa: E402
from models.sources import SourcesSpec  # noqa: E402

START = date(2024, 1, 1)


def fill(engine: Engine, accounts: int, rows: int) -> None:
    """Accounts, and ``rows`` daily values spread over them (one metric), each with an updated_at."""
    days = max(1, rows // accounts)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE crm_accounts (id VARCHAR(20), name VARCHAR(50), updated_at TIMESTAMP)"))
        conn.execute(
            text("CREATE TABLE usage_daily (account VARCHAR(20), metric VARCHAR(20), day DATE, value INTEGER, "
                 "updated_at TIMESTAMP)")
        )  # fmt: skip
        t0 = datetime(2024, 1, 1)  # noqa: DTZ001 - the warehouse's naive timestamps
        conn.execute(
            text("INSERT INTO crm_accounts VALUES (:id, :name, :at)"),
            [{"id": f"acc-{a:06d}", "name": f"Account {a}", "at": t0} for a in range(accounts)],
        )
        batch: list[dict[str, object]] = []
        for d in range(days):
            day = START + timedelta(days=d)
            for a in range(accounts):
                batch.append({"a": f"acc-{a:06d}", "d": day, "v": (a * 7 + d) % 50, "at": t0 + timedelta(days=d)})
            if len(batch) >= 50_000:
                conn.execute(text("INSERT INTO usage_daily VALUES (:a, 'logins', :d, :v, :at)"), batch)
                batch = []
        if batch:
            conn.execute(text("INSERT INTO usage_daily VALUES (:a, 'logins', :d, :v, :at)"), batch)


def spec(url: str, batch: int) -> SourcesSpec:
    return SourcesSpec.model_validate(
        {
            "sources": {
                "crm": {"kind": "accounts", "url": url, "query": "SELECT id AS external_id, name, updated_at FROM crm_accounts",
                        "cursor": "updated_at", "batch_size": batch},
                "product": {"kind": "usage", "url": url, "cursor": "updated_at", "batch_size": batch,
                            "query": "SELECT account AS account_external_id, metric, day, value, updated_at FROM usage_daily"},
            }
        }
    )  # fmt: skip


def emit(name: str, value: float, unit: str, size: int, warehouse: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 2), "unit": unit, "size": size, "warehouse": warehouse}))


def run(url: str, warehouse: str, args: argparse.Namespace, folder: Path) -> None:
    source = create_engine(url)
    fill(source, args.accounts, args.rows)
    retain = make_engine(f"sqlite:///{folder / f'retain-{warehouse}.db'}")
    upgrade(retain)
    sources = spec(url, args.batch)
    now = datetime.now(UTC)
    sync_sources(retain, sources, now=now, only="crm")
    started, cpu = time.perf_counter(), time.process_time()
    (first,) = sync_sources(retain, sources, now=now, only="product")
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert first.status == "ok", first
    emit("sync usage, first run", first.rows_in / seconds, "rows/s", first.rows_in, warehouse)
    emit("sync usage, first run, per CPU second", first.rows_in / cpu, "rows/s", first.rows_in, warehouse)
    # the same rows read again from the start (nothing changes), Python's allocations traced
    forget_cursor(retain, "product")
    tracemalloc.start()
    sync_sources(retain, sources, now=now, only="product")
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    emit("sync usage, peak traced memory", peak, "MB", first.rows_in, warehouse)
    with source.begin() as conn:  # 1% of the rows change
        conn.execute(
            text("UPDATE usage_daily SET value = value + 1, updated_at = :at WHERE day = :d"),
            {"at": datetime(2030, 1, 1), "d": START + timedelta(days=0)},  # noqa: DTZ001
        )
    started = time.perf_counter()
    (second,) = sync_sources(retain, sources, now=now, only="product")
    emit("sync usage, changed rows only", second.rows_in, "rows read", args.rows, warehouse)
    emit("sync usage, second run", time.perf_counter() - started, "s", second.rows_in, warehouse)
    retain.dispose()
    source.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--postgres", help="an admin URL of a PostgreSQL server (a database is made for the run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run(f"sqlite:///{folder / 'warehouse.db'}", "sqlite", args, folder)
        if args.postgres:
            import psycopg

            admin_url = make_url(args.postgres)
            name = f"retain_bench_wh_{uuid.uuid4().hex[:8]}"
            dsn = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = admin_url.set(drivername="postgresql+psycopg", database=name).render_as_string(
                    hide_password=False
                )
                run(url, "postgresql", args, folder)
            finally:
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
