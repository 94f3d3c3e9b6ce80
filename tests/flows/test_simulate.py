"""``retain playbooks simulate`` shows entries, steps, touches and what the policy holds back, and
leaves the database byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli import main
from flows.engine.simulate import simulate
from flows.engine.tick import delivery_policy
from models import Account, Contact, make_engine, session
from models.playbook import PolicySpec
from playbooks import compile_source
from tests._sqlite import migrated_sqlite

PLAYBOOK = """
playbook: nudge
name: Nudge
lifecycle: custom
audience: account.status == "active"
entry:
  contacts: contact.role == "champion"
steps:
  - id: hello
    kind: email
    subject: "Hello {{ account.name }}"
    body: "Hi {{ contact.first_name }}"
  - id: pause
    kind: wait
    for: 3 days
  - id: again
    kind: email
    subject: "Still there, {{ contact.first_name }}?"
    body: "Just checking in."
  - id: tell
    kind: slack
    channel: "#cs"
    text: "{{ account.name }} nudged twice"
"""


def _book(url: str) -> None:
    engine = migrated_sqlite(url)
    with session(engine) as s:
        for i, (zone, unsubscribed) in enumerate(
            [("Europe/Berlin", False), ("Asia/Tokyo", False), ("America/New_York", True)]
        ):
            account = Account.model_validate(
                {"external_id": f"acct-{i}", "name": f"Account {i}", "timezone": zone, "status": "active"}
            )
            s.add(account)
            s.flush()
            s.add(
                Contact.model_validate(
                    {
                        "account_id": account.id,
                        "email": f"champ{i}@example.com",
                        "role": "champion",
                        "timezone": zone,
                        "is_primary": True,
                        "unsubscribed": unsubscribed,
                    }
                )
            )
        s.add(Account.model_validate({"external_id": "gone", "name": "Gone", "status": "churned"}))
    engine.dispose()


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_simulation_reports_and_keeps_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    _book(url)
    before = _files(tmp_path)
    pb = compile_source(textwrap.dedent(PLAYBOOK), "nudge.yaml")
    policy = delivery_policy(
        [pb], PolicySpec(quiet_hours="20:00-08:00", business_days_only=True, max_touches="5 per 7 days")
    )
    # Saturday 2027-01-09 12:00 UTC: a weekend for everyone
    result = simulate(make_engine(url), pb, datetime(2027, 1, 9, 12, tzinfo=UTC), 7, policy)
    assert [e["account"] for e in result.entered] == ["acct-0", "acct-1", "acct-2"]
    assert result.steps == {"hello": 3, "pause": 3, "again": 3, "tell": 3}
    assert result.touches["email"] == {"would be delivered": 4, "suppressed": 2}
    assert result.touches["slack"] == {"would be delivered": 3}
    reasons = [h["why"] for h in result.held_back]
    assert "unsubscribed from everything" in reasons
    assert any("weekend in Europe/Berlin" in (r or "") for r in reasons)
    assert _files(tmp_path) == before  # the database file (and its WAL) byte for byte


def test_simulate_command_json_and_no_outbox_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    _book(url)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "nudge.yaml").write_text(textwrap.dedent(PLAYBOOK), encoding="utf-8")
    before = _files(tmp_path)
    code = main(
        [
            "--database-url",
            url,
            "--playbooks-dir",
            str(folder),
            "playbooks",
            "simulate",
            "nudge",
            "--as-of",
            "2027-01-12T10:00:00Z",
            "--days",
            "5",
            "--format",
            "json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["entered"]) == 3 and report["touches"]["email"]["suppressed"] == 2
    assert _files(tmp_path) == before
    assert not (tmp_path / "retain-outbox").exists()
