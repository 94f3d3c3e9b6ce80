"""A message step may name its own recipients; otherwise the playbook's entry.contacts, otherwise
the primary contact."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.tick import tick
from models import Account, Contact, Touch, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 2, 12, tzinfo=UTC)
PLAYBOOK = compile_source(
    textwrap.dedent(
        """
        playbook: setup
        name: Setup
        lifecycle: onboarding
        audience: account.status == "active"
        entry:
          contacts: contact.role in ["champion", "admin"]
        steps:
          - id: hello
            kind: email
            subject: Welcome
            body: Hello
          - id: admin_setup
            kind: email
            contacts: contact.role == "admin"
            subject: Setup
            body: Three things
          - id: ask
            kind: survey
            survey: nps
            contacts: contact.is_primary
        """
    ),
    "setup.yaml",
)


def test_each_step_reaches_its_own_recipients(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            {"external_id": "acme", "name": "Acme", "arr": 1.0, "currency": "USD", "status": "active", "custom": {}},
        )
        conn.execute(
            insert(table_of(Contact)),
            [
                {"account_id": 1, "email": f"{role}@acme.example", "role": role, "is_primary": role == "champion",
                 "unsubscribed": False, "unsubscribed_channels": [], "preferences": {}}
                for role in ("champion", "admin", "user")
            ],
        )  # fmt: skip
    tick(engine, PLAYBOOK, T0)
    with engine.connect() as conn:
        rows = conn.execute(select(Touch.step_id, Touch.payload).order_by(Touch.id)).all()
    sent = {(step, payload["to"]) for step, payload in rows}
    assert sent == {
        ("hello", "champion@acme.example"),
        ("hello", "admin@acme.example"),
        ("admin_setup", "admin@acme.example"),
        ("ask", "champion@acme.example"),
    }


def test_a_step_rule_is_checked_like_any_expression() -> None:
    from models import PlaybookError

    source = PLAYBOOK.source.replace('contact.role == "admin"', 'contact.rol == "admin"')
    try:
        compile_source(source, "setup.yaml")
    except PlaybookError as exc:
        assert [p.format() for p in exc.problems] == [
            "setup.yaml:15:15: step 'admin_setup': contacts: unknown field 'contact.rol' (did you mean 'contact.role'?)"
        ]
    else:
        raise AssertionError("a misspelt field must not validate")
