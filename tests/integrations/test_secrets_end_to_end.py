"""A secret never reaches a customer (issue 10): account and contact text holding every form of
secret marker comes in through the real CLI import, a tick delivers email to a real SMTP server
(aiosmtpd) and Slack, a webhook and a CRM task to a real local HTTP server, and no secret value is
found in any delivered message, vendor request, database row or CLI output; the secret reference
the playbook's author wrote (the webhook's URL) still works. Failures are stored redacted."""

from __future__ import annotations

import csv
import json
import sqlite3
import textwrap
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine, make_url

import cli
from flows.engine.tick import tick
from integrations.channels.registry import build_channels
from models import Settings, Touch, table_of
from playbooks import compile_source

T0 = datetime(2027, 3, 2, 15, 0, tzinfo=UTC)  # a Tuesday afternoon in Europe
PARTNER_KEY = "pk-3ad9dd67c181"
HOOK_PATH = "/hooks/renewal-d0ac9ff7"  # the secret part of the author's webhook URL
SLACK_PATH = "/slack/T000/B000/slacksecret9f3"
CRM_TOKEN = "crm-tok-77aa11bb"
SIGNING = "sign-0f0f0f0f"

#: every form of marker customer text might try: today's, a guessed token, the template syntax,
#: the sealed JSON form, other spellings
MARKERS = [
    "⟦secret:partner_key⟧",
    "⟦secret:crm_webhook_url⟧",
    "⟦secret:partner_key:000000000000000000000000⟧",
    "{{ secrets.partner_key }}",
    "{{ secrets['partner_key'] }}",
    "${secrets.partner_key}",
    '{"$text": [{"$secret": "partner_key"}]}',
    '{"$secret": "partner_key"}',
    "⟦secret:PARTNER_KEY⟧",
]
HOSTILE = " ".join(MARKERS)

PLAYBOOK = textwrap.dedent(
    """
    playbook: hostile_data
    name: Hostile data
    lifecycle: custom
    audience: account.status == "active"
    steps:
      - id: note
        kind: email
        subject: "Hello {{ account.name }}"
        body: |
          Hi {{ contact.first_name }} ({{ contact.name }}, {{ contact.title }}),

          {{ account.name }} / {{ account.plan }} / {{ account.segment }} / {{ account.industry }} / {{ csm.name }}
          {{ account.custom }}
      - id: tell_team
        kind: slack
        text: "{{ account.name }} {{ account.custom }} {{ csm.name }}"
      - id: crm_hook
        kind: webhook
        url: "{{ secrets.crm_webhook_url }}"
        json: {account: "{{ account.external_id }}", name: "{{ account.name }}", notes: "{{ account.custom }}"}
      - id: follow_up
        kind: task
        title: "Follow up {{ account.name }}"
        body: "{{ account.custom }} {{ csm.name }}"
        crm: true
        due_in: 3 days
    """
)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_cli(url: str, *args: str | Path, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["--database-url", url, *map(str, args)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    return captured.out + captured.err


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch, http_server: Any) -> dict[str, str]:
    values = {
        "RETAIN_SECRET_PARTNER_KEY": PARTNER_KEY,
        "RETAIN_SECRET_CRM_WEBHOOK_URL": f"{http_server.url}{HOOK_PATH}",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def crm_answers(request: Any) -> tuple[int, dict[str, str], Any]:
    """Enough of HubSpot's API for one task: the company is found, the owner is not."""
    if request.path.endswith("/companies/search"):
        return 200, {}, {"results": [{"id": "501"}]}
    if request.path.startswith("/crm/v3/owners"):
        return 200, {}, {"results": []}
    if request.path.endswith("/objects/tasks"):
        return 201, {}, {"id": "t-1"}
    return 200, {}, {"ok": True}


def all_rows(url: str) -> Iterator[str]:
    """Every row of every table of the SQLite file, as text."""
    with closing(sqlite3.connect(make_url(url).database or "")) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            for row in db.execute(f'SELECT * FROM "{table}"'):
                yield f"{table}: {row!r}"


def settings_for(smtp_server: Any, http_server: Any, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        smtp_url=smtp_server.url(query="starttls=false"),
        email_from="Acme Success <success@acme.example>",
        outbox_dir=tmp_path / "outbox",
        slack_webhook_url=f"{http_server.url}{SLACK_PATH}",
        crm_url=http_server.url,
        crm_token=CRM_TOKEN,
        webhook_signing_secret=SIGNING,
    )


def test_customer_text_never_pulls_a_secret(
    sqlite_url: str,
    sqlite_engine: Engine,
    smtp_server: Any,
    http_server: Any,
    secrets_set: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    accounts = write_csv(
        tmp_path / "accounts.csv",
        [
            {
                "external_id": "acme ⟦secret:partner_key⟧",
                "name": "Acme ⟦secret:partner_key⟧ Ltd",
                "plan": "⟦secret:crm_webhook_url⟧",
                "status": "active",
                "csm_email": "csm@vendor.example",
                "csm_name": "Sam {{ secrets.partner_key }}",
                "timezone": "Europe/Berlin",
                "segment": MARKERS[2],
                "industry": MARKERS[6],
                "notes": HOSTILE,
            }
        ],
    )
    contacts = write_csv(
        tmp_path / "contacts.csv",
        [
            {
                "account_external_id": "acme ⟦secret:partner_key⟧",
                "email": "dana@acme.example",
                "name": "⟦secret:partner_key⟧ Buyer",
                "title": " ".join(MARKERS[:5]),
                "is_primary": "yes",
            }
        ],
    )
    outputs = [
        run_cli(sqlite_url, "accounts", "import", accounts, capsys=capsys),
        run_cli(sqlite_url, "contacts", "import", contacts, capsys=capsys),
    ]
    http_server.respond = crm_answers
    pb = compile_source(PLAYBOOK, "hostile_data.yaml")
    settings = settings_for(smtp_server, http_server, tmp_path)
    report = tick(sqlite_engine, pb, T0, channels=build_channels(settings))
    assert report.errors == []
    # a later tick delivers what was held back (an email may wait a few minutes before it goes)
    assert tick(sqlite_engine, pb, T0 + timedelta(hours=1), channels=build_channels(settings)).errors == []
    with sqlite_engine.connect() as conn:
        statuses = dict(conn.execute(select(table_of(Touch).c.channel, table_of(Touch).c.status)).all())
    assert statuses == {"email": "delivered", "slack": "delivered", "webhook": "delivered", "crm": "delivered"}

    # the author's reference still works: the webhook went to the secret URL
    [hook] = [r for r in http_server.requests if r.path == HOOK_PATH]
    assert hook.json()["name"] == "Acme ⟦secret:partner_key⟧ Ltd"  # customer text, printed as it is
    [slack] = [r for r in http_server.requests if r.path == SLACK_PATH]
    [task] = [r for r in http_server.requests if r.path.endswith("/objects/tasks")]
    assert task.json()["properties"]["hs_task_subject"] == "Follow up Acme ⟦secret:partner_key⟧ Ltd"
    assert task.headers["authorization"] == f"Bearer {CRM_TOKEN}"  # the token only where it belongs

    [got] = smtp_server.sink.messages
    message = got.message
    assert message["Subject"] == "Hello Acme ⟦secret:partner_key⟧ Ltd"
    delivered = [message.as_string(), *(str(part.get_content()) for part in message.iter_parts())]

    # no secret value anywhere: messages, vendor requests (but for where the author put it), rows, output
    outputs += [
        run_cli(sqlite_url, "accounts", "show", "acme ⟦secret:partner_key⟧", "--format", "json", capsys=capsys),
        run_cli(sqlite_url, "accounts", "list", capsys=capsys),
    ]
    requests = [
        f"{r.method} {r.path} {r.query} {json.dumps({k: v for k, v in r.headers.items() if k != 'authorization'})} "
        f"{r.body.decode()}"
        for r in http_server.requests
    ]
    requests = [
        text.replace(HOOK_PATH, "<the hook>", 1) if text.startswith(f"POST {HOOK_PATH} ") else text for text in requests
    ]
    requests = [
        text.replace(SLACK_PATH, "<slack>", 1) if text.startswith(f"POST {SLACK_PATH} ") else text for text in requests
    ]
    places = {"delivered": delivered, "requests": requests, "rows": list(all_rows(sqlite_url)), "cli": outputs}
    for where, texts in places.items():
        for text in texts:
            for secret in (PARTNER_KEY, HOOK_PATH, "renewal-d0ac9ff7", "slacksecret9f3", CRM_TOKEN, SIGNING):
                assert secret not in text, f"{secret!r} found in {where}: {text[:300]}"
    assert any("⟦secret:partner_key⟧" in text for text in delivered)  # the data did arrive, as written
    assert "Acme ⟦secret:partner_key⟧ Ltd {" in slack.json()["text"]
    assert slack.json()["text"].endswith("Sam {{ secrets.partner_key }}")


REDACTION_PLAYBOOK = textwrap.dedent(
    """
    playbook: failing_hooks
    name: Failing hooks
    lifecycle: custom
    audience: account.status == "active"
    steps:
      - id: no_scheme
        kind: webhook
        url: "{{ secrets.bad_url }}"
      - id: echoed
        kind: webhook
        url: "{{ secrets.vendor_url }}"
        json: {api_key: "{{ secrets.partner_key }}", account: "{{ account.external_id }}"}
    """
)


def test_failures_are_stored_redacted_and_bounded(
    sqlite_url: str,
    sqlite_engine: Engine,
    http_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's two leaks: a scheme-less secret URL echoed in the error, and a vendor's 422 that
    echoed the request's api_key, stored on the touch, the timeline and ``accounts show``."""
    monkeypatch.setenv("RETAIN_SECRET_PARTNER_KEY", PARTNER_KEY)
    monkeypatch.setenv("RETAIN_SECRET_BAD_URL", "hooks.example/badurl-d0ac9ff7")
    monkeypatch.setenv("RETAIN_SECRET_VENDOR_URL", f"{http_server.url}/vendor?sig=s1gn4ture")

    def echo(request: Any) -> tuple[int, dict[str, str], Any]:
        sent = request.json()
        return 422, {}, {"error": "invalid", "request": sent, "token": "vendor-session-77", "padding": "x" * 5000}

    http_server.respond = echo
    write = write_csv(
        tmp_path / "accounts.csv",
        [{"external_id": "acme", "name": "Acme", "status": "active", "timezone": "Europe/Berlin"}],
    )
    run_cli(sqlite_url, "accounts", "import", write, capsys=capsys)
    pb = compile_source(REDACTION_PLAYBOOK, "failing_hooks.yaml")
    settings = Settings(outbox_dir=tmp_path / "outbox")  # type: ignore[call-arg]
    tick(sqlite_engine, pb, T0, channels=build_channels(settings))

    [sent] = http_server.requests
    assert sent.json()["api_key"] == PARTNER_KEY  # the vendor did get the key the author sent it
    with sqlite_engine.connect() as conn:
        reasons = dict(conn.execute(select(table_of(Touch).c.step_id, table_of(Touch).c.reason)).all())
    assert reasons["no_scheme"] == "webhook: the step's url is not an http(s) URL (29 characters, not shown)"
    echoed = reasons["echoed"]
    assert echoed.startswith("webhook POST http://127.0.0.1: HTTP 422 Unprocessable Entity: {")
    assert '"api_key": "[redacted]"' in echoed and '"token": "[redacted]"' in echoed
    assert len(echoed) < 700  # the vendor's body is cut to 500 characters, after redaction

    shown = run_cli(sqlite_url, "accounts", "show", "acme", "--format", "json", capsys=capsys)
    for text in [shown, *all_rows(sqlite_url)]:
        for secret in (PARTNER_KEY, "badurl-d0ac9ff7", "vendor-session-77", "s1gn4ture"):
            assert secret not in text


def test_a_secret_reference_changed_by_the_template_fails_that_touch_only(tmp_path: Path) -> None:
    """``{{ secrets.x | upper }}`` cannot work (the value is only known when the message leaves):
    the render fails with a clear message instead of sending a mangled marker."""
    from flows.engine.render import render_value
    from integrations.channels.secrets import SecretMarkers
    from models import TemplateError

    with pytest.raises(TemplateError, match=r"a secret reference was changed \(by a filter, a slice, ...\)"):
        render_value("{{ secrets.token | upper }}", {"secrets": SecretMarkers()})
    sealed = render_value("https://{{ secrets.token }}/x", {"secrets": SecretMarkers()})
    assert sealed == {"$text": ["https://", {"$secret": "token"}, "/x"]}


def test_secrets_are_refused_in_messages_to_people() -> None:
    from models import PlaybookError

    source = textwrap.dedent(
        """
        playbook: leaky
        name: Leaky
        lifecycle: custom
        audience: account.status == "active"
        steps:
          - id: note
            kind: email
            subject: "Your key: {{ secrets.partner_key }}"
            body: hi
          - id: remember
            kind: task
            title: "{{ secrets.partner_key }}"
        """
    )
    with pytest.raises(PlaybookError) as exc:
        compile_source(source, "leaky.yaml")
    assert [p.format() for p in exc.value.problems] == [
        "leaky.yaml:9:14: step 'note': subject: secrets are only for webhook and slack steps: "
        "a secret must never reach a customer or a stored record",
        "leaky.yaml:13:12: step 'remember': title: secrets are only for webhook and slack steps: "
        "a secret must never reach a customer or a stored record",
    ]


def test_old_markers_in_stored_payloads_are_never_resolved(tmp_path: Path) -> None:
    from integrations.channels.secrets import resolve_secrets

    payload = {"subject": "Hello ⟦secret:partner_key⟧", "json": {"a": ["⟦secret:x⟧"]}}
    assert resolve_secrets(payload, lambda name: pytest.fail(f"looked up {name}")) == payload


def test_a_missing_secret_without_a_prefect_server_is_refused_without_starting_one(tmp_path: Path) -> None:
    """With no RETAIN_SECRET_* value and no Prefect server configured, there is no block to read:
    the command says where to set the secret and starts no Prefect server to find nothing (that
    server would make its database under PREFECT_HOME and cost half a minute on a busy machine)."""
    import os
    import subprocess
    import sys

    from tests._sqlite import migrated_sqlite

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RETAIN_"))}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "RETAIN_DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    migrated_sqlite(tmp_path / "r.db").dispose()  # the schema (what `retain init` makes); the command below is the test
    code = "import sys, cli; sys.exit(cli.main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "replies", "poll", "--mailbox", "imap://cs@127.0.0.1:9/INBOX"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done
    assert "RETAIN_SECRET_MAILBOX_PASSWORD" in done.stderr
    assert "none is configured, so no block was read" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not list((tmp_path / "prefect").glob("*.db")), "a Prefect server was started"
