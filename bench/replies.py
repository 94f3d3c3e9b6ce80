"""Replies from a mailbox, timed: a real dovecot on 127.0.0.1 (as the tests start it) holding
``--replies`` replies to as many delivered email touches, as many automatic replies and as many
messages about nothing Retain sent; one poll reads them all, a second finds nothing new.

Prints one JSON line per figure (name, value, unit, size). No asserts: the machine's load moves
the figures. Run: ``python bench/replies.py [--replies N] [--postgres URL]`` (needs dovecot:
``apt-get install dovecot-imapd dovecot-lmtpd``).
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: Retain's packages live at the root
    sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from integrations.channels.email import message_id  # noqa: E402
from integrations.sources import parse_mailbox_url, poll_mailbox  # noqa: E402
from models import Account, InboundMessage, Touch, make_engine, table_of, upgrade  # noqa: E402
from tests.integrations.conftest import MAILBOX_PASSWORD, MAILBOX_USER, Dovecot, run_dovecot  # noqa: E402

SENT = datetime(2027, 3, 15, 14, 0, tzinfo=UTC)


def figure(name: str, value: float, unit: str, size: int) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "size": size}), flush=True)


def book(engine: Engine, touches: int) -> list[str]:
    """``touches`` accounts, each with one delivered email touch; their Message-IDs."""
    keys = [f"renewal:{i}:first_note:1:4" for i in range(1, touches + 1)]
    with engine.begin() as conn:
        conn.execute(
            insert(table_of(Account)),
            [{"external_id": f"acct-{i:06d}", "name": f"Account {i}", "custom": {}} for i in range(1, touches + 1)],
        )
        conn.execute(
            insert(table_of(Touch)),
            [
                {"key": key, "account_id": i, "playbook": "renewal", "step_id": "first_note", "channel": "email",
                 "status": "delivered", "payload": {}, "provider_id": message_id(key, "acme.example"),
                 "sent_at": SENT, "delivered_at": SENT}
                for i, key in enumerate(keys, start=1)
            ],
        )  # fmt: skip
    return [message_id(key, "acme.example") for key in keys]


def fill(dovecot: Dovecot, sent_ids: list[str]) -> int:
    """Per sent message: a reply, an out-of-office, and a message about nothing Retain sent; all
    delivered over one LMTP connection. How many messages."""
    count = 0
    with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port, timeout=30) as lmtp:
        for n, sent in enumerate(sent_ids):
            for kind, extra in (("Re", ""), ("Automatic reply", "Auto-Submitted: auto-replied\r\n"), ("News", None)):
                refs = "" if extra is None else f"In-Reply-To: {sent}\r\n{extra}"
                raw = (
                    f"From: person{n}@customer.example\r\nTo: {MAILBOX_USER}\r\nSubject: {kind}: note {n}\r\n"
                    f"Message-ID: <{uuid.uuid4().hex}@customer.example>\r\n{refs}\r\nText.\r\n"
                ).encode()
                lmtp.sendmail(f"person{n}@customer.example", [MAILBOX_USER], raw)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=500)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a database is made for the run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, run_dovecot() as dovecot:
        if args.postgres:
            import psycopg

            name = f"retain_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        sent_ids = book(engine, args.replies)
        started = time.perf_counter()
        messages = fill(dovecot, sent_ids)
        figure("deliver into the mailbox (LMTP)", messages / (time.perf_counter() - started), "messages/s", messages)
        mailbox = parse_mailbox_url(dovecot.url())
        now = SENT + timedelta(days=1)
        started = time.perf_counter()
        first = poll_mailbox(engine, mailbox, now=now, password=MAILBOX_PASSWORD)
        took = time.perf_counter() - started
        figure("first poll", took, "s", messages)
        figure("first poll", messages / took, "messages/s", messages)
        started = time.perf_counter()
        again = poll_mailbox(engine, mailbox, now=now, password=MAILBOX_PASSWORD)
        figure("second poll (nothing new)", time.perf_counter() - started, "s", messages)
        with engine.connect() as conn:
            kept = conn.execute(select(func.count()).select_from(table_of(InboundMessage))).scalar_one()
            replied = conn.execute(select(func.count()).select_from(table_of(Touch)).where(Touch.replied_at.is_not(None))).scalar_one()  # type: ignore[union-attr]  # fmt: skip
        print(json.dumps({"first": first.counts(), "again": again.counts(), "kept": kept, "replied": replied}))
        engine.dispose()
        if args.postgres:
            with psycopg.connect(args.postgres, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
