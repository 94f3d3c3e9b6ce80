"""Unsubscribes and suppression lists: kept by address, applied to every contact with it (also
ones imported later), all or nothing, and honoured before every delivery."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from cli import main
from flows.engine.tick import tick
from integrations.channels.file import FileChannel
from integrations.sources.accounts import import_contacts
from integrations.sources.suppression import import_suppression_list, unsubscribe
from models import Account, Contact, DataImportError, Suppression, TimelineEvent, table_of
from playbooks import compile_source

NOW = datetime(2027, 3, 1, 12, tzinfo=UTC)


def _book(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [
                {"external_id": x, "name": x, "arr": 1.0, "currency": "USD", "status": "active", "custom": {}}
                for x in ("acme", "globex")
            ],
        )
        conn.execute(
            insert(table_of(Contact)),
            [
                {
                    "account_id": 1,
                    "email": "pat@example.com",
                    "is_primary": True,
                    "unsubscribed": False,
                    "unsubscribed_channels": [],
                    "preferences": {},
                },
                {
                    "account_id": 2,
                    "email": "Pat@Example.com",
                    "is_primary": True,
                    "unsubscribed": False,
                    "unsubscribed_channels": [],
                    "preferences": {},
                },
                {
                    "account_id": 2,
                    "email": "sam@example.com",
                    "is_primary": False,
                    "unsubscribed": False,
                    "unsubscribed_channels": [],
                    "preferences": {},
                },
            ],
        )


def _contacts(engine: Engine) -> dict[tuple[int, str], tuple[bool, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Contact.account_id, Contact.email, Contact.unsubscribed, Contact.unsubscribed_channels)
        ).all()
    return {(a, e.lower()): (u, list(c)) for a, e, u, c in rows}


def test_unsubscribe_reaches_every_contact_with_the_address(engine: Engine) -> None:
    _book(engine)
    result = unsubscribe(engine, " PAT@example.com ", reason="asked by phone", now=NOW)
    assert (result.addresses, result.contacts) == (1, 2)
    contacts = _contacts(engine)
    assert contacts[(1, "pat@example.com")] == (True, []) and contacts[(2, "pat@example.com")] == (True, [])
    assert contacts[(2, "sam@example.com")] == (False, [])
    with engine.connect() as conn:
        summaries = [
            r[0] for r in conn.execute(select(TimelineEvent.summary).where(TimelineEvent.kind == "unsubscribed"))
        ]
    assert summaries == ["contact pat@example.com unsubscribed from everything (asked by phone)"] * 2
    assert unsubscribe(engine, "pat@example.com", now=NOW).contacts == 0  # once is enough


def test_a_contact_imported_later_arrives_unsubscribed(engine: Engine, tmp_path: Path) -> None:
    _book(engine)
    unsubscribe(engine, "new@example.com", channel="survey", now=NOW)
    (tmp_path / "c.csv").write_text("account_external_id,email\nacme,new@example.com\n", encoding="utf-8")
    import_contacts(engine, tmp_path / "c.csv", now=NOW)
    assert _contacts(engine)[(1, "new@example.com")] == (False, ["survey"])


def test_suppression_list_is_all_or_nothing(engine: Engine, tmp_path: Path) -> None:
    _book(engine)
    bad = tmp_path / "bad.csv"
    bad.write_text("email,channel\nsam@example.com,email\nnot-an-address,all\nx@example.com,sms\n", encoding="utf-8")
    with pytest.raises(DataImportError) as exc:
        import_suppression_list(engine, bad)
    assert [p.format("bad.csv") for p in exc.value.problems] == [
        "bad.csv: row 3, column 'email': 'not-an-address' is not an email address",
        "bad.csv: row 4, column 'channel': 'sms' is not a channel: use all, email or survey",
    ]
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.email)).all() == []
    good = tmp_path / "good.csv"
    good.write_text("email,channel,reason\nsam@example.com,email,bounced\nghost@example.com,,\n", encoding="utf-8")
    assert import_suppression_list(engine, good, dry_run=True).contacts == 1
    assert _contacts(engine)[(2, "sam@example.com")] == (False, [])  # the dry run kept nothing
    result = import_suppression_list(engine, good)
    assert (result.addresses, result.contacts) == (2, 1)
    assert _contacts(engine)[(2, "sam@example.com")] == (False, ["email"])


def test_an_unsubscribed_contact_receives_nothing(sqlite_engine: Engine, tmp_path: Path) -> None:
    _book(sqlite_engine)
    unsubscribe(sqlite_engine, "pat@example.com", now=NOW)
    pb = compile_source(
        textwrap.dedent(
            """
            playbook: hello
            name: Hello
            lifecycle: custom
            audience: account.status == "active"
            steps:
              - id: hi
                kind: email
                subject: Hi
                body: Hello
            """
        ),
        "hello.yaml",
    )
    tick(sqlite_engine, pb, NOW, channels={"email": FileChannel("email", tmp_path)})  # type: ignore[dict-item]
    assert not (tmp_path / "email.jsonl").exists()


def test_cli(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", sqlite_url, "init"]) == 0
    assert (
        main(["--database-url", sqlite_url, "contacts", "unsubscribe", "pat@example.com", "--channel", "survey"]) == 0
    )
    assert "unsubscribed from survey messages" in capsys.readouterr().out
    assert main(["--database-url", sqlite_url, "contacts", "unsubscribe", "not an address"]) == 2
    (tmp_path / "s.csv").write_text("email\nbad\n", encoding="utf-8")
    assert main(["--database-url", sqlite_url, "contacts", "suppress", str(tmp_path / "s.csv")]) == 1
    out = capsys.readouterr()
    assert "row 2, column 'email'" in out.err and "Traceback" not in out.err + out.out
