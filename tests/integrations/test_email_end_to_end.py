"""A playbook's email through the real SMTP channel to a real SMTP server (aiosmtpd): it arrives
once with its subject, body, headers and Message-ID; a re-run of the tick sends nothing more; an
unsubscribed contact receives nothing."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from integrations.channels.email import message_id
from integrations.channels.registry import build_channels
from models import Account, Contact, Settings, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 2, 15, 0, tzinfo=UTC)  # a Tuesday afternoon in Europe
PLAYBOOK = compile_source(
    textwrap.dedent(
        """
        playbook: renewal_note
        name: Renewal note
        lifecycle: renewal
        audience: account.status == "active"
        entry:
          contacts: contact.role == "champion"
        steps:
          - id: first_note
            kind: email
            subject: "Planning your {{ account.plan }} renewal"
            body: |
              Hi {{ contact.first_name }},

              **{{ account.name }}** renews on {{ account.renewal_date | date }}.
        """
    ),
    "renewal_note.yaml",
)


def _book(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            {"external_id": "acme", "name": "Acme", "plan": "Business", "arr": 12000.0, "currency": "USD",
             "status": "active", "custom": {}, "renewal_date": datetime(2027, 5, 1, tzinfo=UTC).date(),
             "timezone": "Europe/Berlin"},
        )  # fmt: skip
        conn.execute(
            insert(table_of(Contact)),
            [
                {"account_id": 1, "email": "dana@acme.example", "name": "Dana Buyer", "role": "champion", "is_primary": True,
                 "unsubscribed": False, "unsubscribed_channels": [], "preferences": {}},
                {"account_id": 1, "email": "lee@acme.example", "name": "Lee Gone", "role": "champion", "is_primary": False,
                 "unsubscribed": True, "unsubscribed_channels": [], "preferences": {}},
            ],
        )  # fmt: skip


def test_the_email_arrives_once_and_never_to_the_unsubscribed(
    sqlite_engine: Engine, smtp_server: Any, tmp_path: Any
) -> None:
    _book(sqlite_engine)
    settings = Settings(  # type: ignore[call-arg]
        smtp_url=smtp_server.url(query="starttls=false"),
        email_from="Acme Success <success@acme.example>",
        outbox_dir=tmp_path,
    )
    first = tick(sqlite_engine, PLAYBOOK, T0, channels=build_channels(settings), window=None)
    again = tick(sqlite_engine, PLAYBOOK, T0, channels=build_channels(settings), window=None)
    later = tick(sqlite_engine, PLAYBOOK, T0.replace(hour=16), channels=build_channels(settings), window=None)
    assert first.delivered == {"delivered": 1}
    assert again.delivered == {} and again.touches_written == {} and later.touches_written == {}

    [got] = smtp_server.sink.messages
    assert got.rcpt_tos == ["dana@acme.example"]
    msg = got.message
    assert msg["Subject"] == "Planning your Business renewal"
    assert msg["To"] == "Dana Buyer <dana@acme.example>"
    key = msg["X-Retain-Key"]
    assert key.startswith("renewal_note:1:first_note:1:")
    assert msg["Message-ID"] == message_id(key, "acme.example")
    assert "List-Unsubscribe" in msg
    text, html = (part.get_content() for part in msg.iter_parts())
    assert "Hi Dana," in text and "renews on May 1, 2027" in text
    assert "<strong>Acme</strong>" in html
