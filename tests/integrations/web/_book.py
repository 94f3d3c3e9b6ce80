"""A small book of accounts and contacts brought in through Retain's own imports (CSV files)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from integrations.sources import import_accounts, import_contacts
from models import Contact, TimelineEvent

ACCOUNTS = """external_id,name,plan,arr,status,renewal_date,timezone,language
acme,Acme,Business,12000,active,2027-05-01,Europe/Berlin,en
kraft,Kraft GmbH,Business,9000,active,2027-05-01,Europe/Berlin,de
"""
CONTACTS = """account_external_id,email,name,role,is_primary
acme,dana@acme.example,Dana Buyer,champion,yes
kraft,jo@kraft.example,Jo Kraft,champion,yes
"""


def book(engine: Engine, folder: Path) -> dict[str, int]:
    """Imports the accounts and contacts; returns contact ids by address."""
    (folder / "accounts.csv").write_text(ACCOUNTS, encoding="utf-8")
    (folder / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    import_accounts(engine, folder / "accounts.csv")
    import_contacts(engine, folder / "contacts.csv")
    with engine.connect() as conn:
        return {email: id_ for id_, email in conn.execute(select(Contact.id, Contact.email))}


def contact(engine: Engine, email: str) -> Contact:
    with engine.connect() as conn:
        row = conn.execute(select(Contact).where(Contact.email == email)).one()
    return Contact.model_validate(row._mapping)


def timeline(engine: Engine, kind: str | None = None) -> list[str]:
    query = select(TimelineEvent.summary).order_by(TimelineEvent.id)
    if kind is not None:
        query = query.where(TimelineEvent.kind == kind)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())
