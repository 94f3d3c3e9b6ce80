"""The sync runs and cursors every source writes: a cursor moves only with its batch's rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine

from integrations.sources import commit_batch, finish_run, read_cursor, start_run, sync_status
from integrations.sources.sync_state import decode_cursor, encode_cursor

NOW = datetime(2027, 3, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [None, 7, 2.5, Decimal("10.25"), datetime(2027, 1, 2, 3, 4, 5),  # noqa: DTZ001 - a naive warehouse cursor
     datetime(2027, 1, 2, tzinfo=UTC),
     date(2027, 1, 2), "abc"],
)  # fmt: skip
def test_cursors_keep_their_type(value: object) -> None:
    assert decode_cursor(*encode_cursor(value)) == value


def test_a_cursor_moves_only_with_its_batch(engine: Engine) -> None:
    run = start_run(engine, "crm", "accounts", now=NOW)
    with engine.begin() as conn:
        commit_batch(conn, run, "crm", "accounts", 10, 500, now=NOW)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        commit_batch(conn, run, "crm", "accounts", 20, 500, now=NOW)
        raise RuntimeError("the batch's write failed")
    finish_run(engine, run, "refused", now=NOW, refused=1, message="bad rows", problems=["row 3: bad"])
    with engine.connect() as conn:
        assert read_cursor(conn, "crm") == 10
        (status,) = sync_status(conn, [("crm", "accounts"), ("never", "usage")])[:1]
        never = sync_status(conn, [("never", "usage")])[1]
    assert (status.cursor, status.status, status.rows_in, status.rows_refused) == ("10", "refused", 500, 1)
    assert status.problems == ("row 3: bad",) and status.runs == 1
    assert (never.source, never.status, never.cursor) == ("never", None, None)
