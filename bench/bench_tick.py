"""How a tick's cost grows with the book: enroll + advance + deliver for N accounts.

Prints milliseconds per account for each N and the ratio to a baseline measured in the same
process: writing the same number of enrollment rows with one plain executemany, the least any
engine must do. Run: ``python bench/bench_tick.py [--sizes 1000 10000] [--database-url URL]``.
No asserts: figures for people to compare between changes.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import insert, text

from flows.engine.tick import tick
from integrations.channels import FileChannel
from models import Account, Contact, Enrollment, make_engine, table_of, upgrade
from playbooks import compile_source

PLAYBOOK = textwrap.dedent(
    """
    playbook: bench
    name: Bench
    lifecycle: custom
    audience: account.status == "active" and account.arr >= 1000
    entry: {holdout: 10%}
    steps:
      - id: note
        kind: email
        subject: "Hello {{ account.name }}"
        body: "Hi {{ contact.first_name }}, your {{ account.plan }} plan renews {{ account.renewal_date | date }}."
      - id: task
        kind: task
        title: "Call {{ account.name }}"
      - id: pause
        kind: wait
        for: 7 days
      - id: check
        kind: branch
        if: touches("note").replied
        then: done
      - id: done
        kind: exit
    """
)
AS_OF = datetime(2027, 3, 1, 12, tzinfo=UTC)


def _book(url: str, n: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        for table in ("timeline_event", "touch", "csm_task", "outcome", "enrollment", "contact", "account"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(
            insert(table_of(Account)),
            [
                {
                    "external_id": f"a{i}",
                    "name": f"Account {i}",
                    "plan": "team",
                    "arr": 5000.0,
                    "currency": "USD",
                    "status": "active",
                    "custom": {},
                    "renewal_date": date(2027, 6, 1),
                    "timezone": "UTC",
                }
                for i in range(n)
            ],
        )
        ids = [row[0] for row in conn.execute(text("SELECT id FROM account ORDER BY id"))]
        conn.execute(
            insert(table_of(Contact)),
            [
                {
                    "account_id": i,
                    "email": f"c{i}@example.com",
                    "name": f"Pat {i}",
                    "is_primary": True,
                    "unsubscribed": False,
                    "unsubscribed_channels": [],
                    "preferences": {},
                    "timezone": "UTC",
                }
                for i in ids
            ],
        )
    engine.dispose()


def _baseline(url: str, n: int) -> float:
    """Seconds to write n enrollment rows with one executemany: the floor for any engine."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM enrollment"))
        ids = [row[0] for row in conn.execute(text("SELECT id FROM account ORDER BY id LIMIT :n"), {"n": n})]
        started = time.perf_counter()
        conn.execute(
            insert(table_of(Enrollment)),
            [
                {
                    "playbook": "base",
                    "revision": "r",
                    "account_id": i,
                    "status": "done",
                    "holdout": False,
                    "started_at": AS_OF,
                    "source": "bench",
                    "state": {},
                }
                for i in ids
            ],
        )
        elapsed = time.perf_counter() - started
        conn.execute(text("DELETE FROM enrollment"))
    engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--database-url", default=None, help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()
    pb = compile_source(PLAYBOOK, "bench.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        print(f"{'accounts':>9} {'baseline ms':>12} {'tick ms':>10} {'ms/account':>11} {'x baseline':>11}  phases")
        for n in args.sizes:
            _book(url, n)
            base = _baseline(url, n)
            engine = make_engine(url)
            channels = {"email": FileChannel("email", Path(tmp) / f"outbox-{n}")}
            started = time.perf_counter()
            report = tick(engine, pb, AS_OF, channels=channels)  # type: ignore[dict-item]
            elapsed = time.perf_counter() - started
            engine.dispose()
            phases = f"enrolled {report.enrolled}, advanced {report.advanced}, delivered {report.delivered.get('delivered', 0)}"
            print(
                f"{n:>9} {base * 1000:>12.1f} {elapsed * 1000:>10.0f} {elapsed * 1000 / n:>11.3f} {elapsed / base:>11.1f}  {phases}"
            )


if __name__ == "__main__":
    main()
