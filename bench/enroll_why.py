"""What the enrolled line's "why" costs: ``enroll()`` with the audience's clause values (computed
in the same batched query as the new enrollments, written on their timeline lines) against the
same statement without them. Every account has its own ARR and renewal date, the worst case for
the sharing of identical clause lines.

Run: ``python bench/enroll_why.py [N] [DATABASE_URL]`` (default 50,000 accounts, a temporary SQLite
file). Prints three runs of each and the ratio of the best; no asserts.
"""

import sys
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, insert

import flows.engine.enroll as en
from models import Account, Enrollment, TimelineEvent, make_engine, session, table_of, upgrade
from playbooks import compile_source

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
AS_OF = datetime(2027, 3, 1, 12, tzinfo=UTC)
pb = compile_source(
    textwrap.dedent("""
    playbook: why
    name: Why
    lifecycle: custom
    audience: account.status == "active" and account.arr >= 1000 and days_until(account.renewal_date) <= 90
    steps:
      - id: bye
        kind: exit
    """),
    "why.yaml",
)
url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{tempfile.mkdtemp()}/b.db"
engine = make_engine(url)
upgrade(engine)
rows = [
    {
        "external_id": f"a{i}",
        "name": f"A {i}",
        "status": "active",
        "arr": 1000.0 + (i * 37) % 50000,
        "currency": "USD",
        "renewal_date": date(2027, 3, 2) + timedelta(days=i % 89),
        "custom": {},
        "created_at": AS_OF,
        "updated_at": AS_OF,
    }
    for i in range(N)
]
with engine.begin() as c:
    c.execute(insert(table_of(Account)), rows)


def run(label: str) -> float:
    with engine.begin() as c:
        c.execute(delete(table_of(TimelineEvent)))
        c.execute(delete(table_of(Enrollment)))
    t = time.perf_counter()
    with session(engine) as s:
        n, _ = en.enroll(s, pb, AS_OF)
    took = time.perf_counter() - t
    print(f"{label}: {n} enrolled in {took:.2f}s ({took / n * 1e6:.1f} us per enrollment)")
    return took


with_why = [run("with the clause values") for _ in range(3)]
cc, rc = en.clause_columns, en.read_clauses
en.clause_columns = lambda *a, **k: []
en.read_clauses = lambda e, rows, start=0: [[] for _ in rows]
without = [run("without") for _ in range(3)]
print(f"best of 3: with {min(with_why):.2f}s, without {min(without):.2f}s, ratio {min(with_why) / min(without):.2f}")
