"""``retain web``, timed through its ASGI interface (in process, httpx's ASGI transport): provider
events in batches (SendGrid's shape, ECDSA-verified), the same batches sent again (all repeats),
Segment calls through ``/v1/batch``, and survey answers (one click each).

Prints one JSON line per figure (name, value, unit, size). No asserts: the machine's load moves
the figures. Run: ``python bench/web.py [--touches N] [--batch N] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere: Retain's packages live at the root
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from integrations.channels.email import message_id  # noqa: E402
from integrations.links import LinkConfig, survey_link_of  # noqa: E402
from integrations.web import create_app  # noqa: E402
from models import Account, Contact, Settings, Touch, make_engine, table_of, upgrade  # noqa: E402

NOW = datetime(2027, 3, 2, 15, 0, tzinfo=UTC)
LINKS = LinkConfig(public_url="https://retain.bench", unsubscribe_secret="u" * 32, survey_secret="s" * 32)


def figure(name: str, value: float, unit: str, size: int) -> None:
    print(json.dumps({"name": name, "value": round(value, 4), "unit": unit, "size": size}), flush=True)


def book(engine: Engine, touches: int) -> None:
    """``touches`` accounts with one contact and one delivered survey email each."""
    with engine.begin() as conn:
        conn.execute(insert(table_of(Account)), [{"external_id": f"a{i}", "name": f"A {i}", "custom": {}}
                                                 for i in range(1, touches + 1)])  # fmt: skip
        conn.execute(insert(table_of(Contact)), [{"account_id": i, "email": f"c{i}@x.example",
                     "unsubscribed_channels": [], "preferences": {}} for i in range(1, touches + 1)])  # fmt: skip
        conn.execute(
            insert(table_of(Touch)),
            [{"key": f"k:{i}", "account_id": i, "contact_id": i, "channel": "email", "status": "delivered",
              "payload": {"kind": "survey", "survey": "nps"}, "provider_id": message_id(f"k:{i}", "acme.example"),
              "sent_at": NOW, "delivered_at": NOW} for i in range(1, touches + 1)],
        )  # fmt: skip


@contextmanager
def database(postgres: str | None) -> Iterator[Engine]:
    if postgres is None:
        with tempfile.TemporaryDirectory() as folder:
            engine = make_engine(f"sqlite:///{folder}/bench.db")
            upgrade(engine)
            yield engine
            engine.dispose()
        return
    import psycopg

    name = f"retain_bench_web_{uuid.uuid4().hex[:8]}"
    admin = make_url(postgres)
    with psycopg.connect(admin.set(drivername="postgresql").render_as_string(False), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(admin.set(database=name).render_as_string(hide_password=False))
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(admin.set(drivername="postgresql").render_as_string(False), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(engine: Engine, touches: int, batch: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    settings = Settings(sendgrid_verification_key=public, segment_write_key="w", web_rate_limit=10**9,  # type: ignore[call-arg]
                        web_max_body=50_000_000)  # fmt: skip
    app = create_app(engine, settings, links=LINKS, now=lambda: NOW)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="https://retain.bench") as client:

        async def sendgrid(events: list[dict[str, Any]]) -> None:
            raw = json.dumps(events).encode()
            stamp = str(int(NOW.timestamp()))
            signature = base64.b64encode(key.sign(stamp.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()
            answer = await client.post("/webhooks/sendgrid", content=raw, headers={
                "X-Twilio-Email-Event-Webhook-Signature": signature,
                "X-Twilio-Email-Event-Webhook-Timestamp": stamp})  # fmt: skip
            answer.raise_for_status()

        events = [{"email": f"c{i}@x.example", "timestamp": int(NOW.timestamp()), "event": kind,
                   "sg_event_id": f"{kind}-{i}", "smtp-id": message_id(f"k:{i}", "acme.example")}
                  for i in range(1, touches + 1) for kind in ("delivered", "open")]  # fmt: skip
        batches = [events[i : i + batch] for i in range(0, len(events), batch)]
        for label in ("provider events, new", "provider events, sent again (all repeats)"):
            began = time.perf_counter()
            for chunk in batches:
                await sendgrid(chunk)
            took = time.perf_counter() - began
            figure(f"{label}: per event", took / len(events) * 1000, "ms", len(events))
            figure(f"{label}: events per second", len(events) / took, "events/s", len(events))

        calls = [{"type": "group", "userId": f"u{i}", "groupId": f"a{i}", "messageId": f"g{i}",
                  "timestamp": NOW.isoformat()} for i in range(1, touches + 1)]  # fmt: skip
        calls += [{"type": "track", "userId": f"u{i}", "event": "Report Shared", "messageId": f"t{i}",
                   "timestamp": NOW.isoformat()} for i in range(1, touches + 1)]  # fmt: skip
        began = time.perf_counter()
        for i in range(0, len(calls), batch):
            answer = await client.post("/v1/batch", json={"batch": calls[i : i + batch]}, auth=("w", ""))
            answer.raise_for_status()
        took = time.perf_counter() - began
        figure("Segment calls via /v1/batch: per call", took / len(calls) * 1000, "ms", len(calls))

        answers = min(touches, 500)
        links = [survey_link_of(LINKS, f"k:{i}", NOW).removeprefix(LINKS.public_url) for i in range(1, answers + 1)]
        began = time.perf_counter()
        for link in links:
            (await client.post(link, data={"score": "9"})).raise_for_status()
        took = time.perf_counter() - began
        figure("survey answer (one click, page rendered): per answer", took / answers * 1000, "ms", answers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--touches", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--postgres", help="a PostgreSQL server URL to run against (a database is made)")
    args = parser.parse_args()
    with database(args.postgres) as engine:
        book(engine, args.touches)
        asyncio.run(run(engine, args.touches, args.batch))


if __name__ == "__main__":
    main()
