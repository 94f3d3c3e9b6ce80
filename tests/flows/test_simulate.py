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


# --- a past window: each tick reads the book as it stood then -------------------------------------

BACKTEST_ACCOUNTS = """\
external_id,name,status,signup_date,onboarded_at,churned_at,reactivated_at
early,Early,churned,2025-01-01,2025-02-01,2025-09-01,
late,Late,churned,2025-01-01,2025-02-01,2026-02-01,
back,Back,active,2025-01-01,2025-02-01,2025-08-01,2026-02-01
newbie,Newbie,active,2026-03-01,,,
"""
BACKTEST_TICKETS = """\
external_id,account_external_id,subject,status,priority,opened_at,closed_at
T-1,early,Export broken,solved,high,2025-12-05T10:00:00Z,2026-01-20T10:00:00Z
T-2,late,Later problem,open,normal,2026-01-10T10:00:00Z,
"""
BACKTEST_SURVEYS = """\
account_external_id,kind,score,responded_at
early,nps,9,2025-11-01T10:00:00Z
early,nps,2,2026-01-15T10:00:00Z
"""
BACKTEST_USAGE = """\
account_external_id,metric,day,value
late,logins,2025-12-04,5
late,logins,2026-01-20,100
"""
# payer's billing stops after November: December, the first month without revenue, is its churn,
# read once December is over (the export runs through March)
BACKTEST_REVENUE = """\
customer,date,amount
payer,2025-09-05,100.00
payer,2025-10-05,100.00
payer,2025-11-05,100.00
"""
BACKTEST_EVENTS = """\
{"type": "group", "messageId": "g-1", "userId": "u-1", "groupId": "late", "timestamp": "2025-12-03T08:00:00Z"}
{"type": "track", "messageId": "t-1", "userId": "u-1", "event": "Login", "timestamp": "2025-12-03T08:00:01Z"}
{"type": "track", "messageId": "t-2", "userId": "u-1", "event": "Login", "timestamp": "2026-01-30T08:00:00Z"}
"""


def _backtest_playbook(name: str, audience: str) -> str:
    return textwrap.dedent(f"""\
        playbook: {name}
        name: {name}
        lifecycle: custom
        schedule: {{cron: "0 12 * * *", timezone: UTC}}
        audience: '{audience}'
        steps:
          - id: hold
            kind: wait
            for: 90 days
        """)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_simulation_over_a_past_window_reads_each_tick_as_of_its_moment(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Imported lifecycle dates and status, product events, tickets, survey answers and usage, all
    dated after a window, are not read in it: a backtest from 2025-12-01 over 40 days sees the book
    of then."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'retain.db'}"
        assert main(["--database-url", url, "init"]) == 0
    else:
        url = request.getfixturevalue("pg_clean").url.render_as_string(hide_password=False)
    folder = tmp_path / "playbooks"
    folder.mkdir()
    audiences = {
        "churned": 'account.status == "churned"',
        "active": 'account.status == "active"',
        "came_back": "account.reactivated_at is not none",
        "seen": "account.last_seen_at is not none",
        "ticket": "open_tickets() > 0",
        "promoter": 'last_survey("nps").score >= 9',
        "detractor": 'last_survey("nps").score <= 6',
        "used": 'usage("logins", 30) > 0',
        "busy": 'usage("logins", 30) > 50',
    }
    for name, audience in audiences.items():
        (folder / f"{name}.yaml").write_text(_backtest_playbook(name, audience), encoding="utf-8")
    files = (
        ("accounts", BACKTEST_ACCOUNTS),
        ("tickets", BACKTEST_TICKETS),
        ("events", BACKTEST_EVENTS),
        ("surveys", BACKTEST_SURVEYS),
        ("usage", BACKTEST_USAGE),
    )
    for kind, text in files:
        path = tmp_path / (f"{kind}.jsonl" if kind == "events" else f"{kind}.csv")
        path.write_text(text, encoding="utf-8")
        assert main(["--database-url", url, kind, "import", str(path)]) == 0
    revenue = tmp_path / "revenue.csv"
    revenue.write_text(BACKTEST_REVENUE, encoding="utf-8")
    assert main(["--database-url", url, "revenue", "import", str(revenue), "--create-accounts",
                 "--data-through", "2026-03-01"]) == 0  # fmt: skip
    # a real tick after the window: its enrollments did not exist in it, so they block no one there
    assert main(["--database-url", url, "--playbooks-dir", str(folder), "run", "churned", "--as-of",
                 "2026-03-01T12:00:00Z", "--no-prefect"]) == 0  # fmt: skip
    capsys.readouterr()

    def entered(name: str) -> dict[str, str]:
        args = ["--database-url", url, "--playbooks-dir", str(folder), "playbooks", "simulate", name]
        assert main([*args, "--as-of", "2025-12-01", "--days", "40", "--format", "json"]) == 0
        return {e["account"]: e["on"] for e in json.loads(capsys.readouterr().out)["entered"]}

    # late churned only in February; back churned in August and came back only in February;
    # newbie signed up in March: it did not exist yet
    # payer paid through November: active on the first day, churned once December is over
    assert entered("churned") == {"early": "2025-12-01", "back": "2025-12-01", "payer": "2025-12-31"}
    assert entered("active") == {"late": "2025-12-01", "payer": "2025-12-01"}
    assert entered("came_back") == {}
    # late's first product event is on 2025-12-03 (its last one, stored on the row, in January)
    assert entered("seen") == {"late": "2025-12-03"}
    # early's ticket was opened on 2025-12-05 (and closed in January); late's opens in January
    assert entered("ticket") == {"early": "2025-12-05"}
    # early's latest answer by then is a 9 (its 2 comes in January)
    assert (entered("promoter"), entered("detractor")) == ({"early": "2025-12-01"}, {})
    # late's first logins are on 2025-12-04; the 100 come in January
    assert (entered("used"), entered("busy")) == ({"late": "2025-12-04"}, {})
