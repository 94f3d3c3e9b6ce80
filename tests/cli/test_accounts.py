"""``retain accounts …`` and ``retain contacts …`` through the real CLI, on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

import cli
from cli._app import console
from models import Account, CsmTask, Enrollment, Outcome, TimelineEvent, make_engine, utcnow

DATA = Path(__file__).parent.parent / "integrations" / "data"


@dataclass
class Run:
    code: int
    out: str
    err: str


Retain = Callable[..., Run]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database made by ``retain init``, once per module; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("init") / "retain.db"
    assert cli.main(["--database-url", f"sqlite:///{path}", "init"]) == 0
    return path


@pytest.fixture
def retain(
    initialised: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Retain:
    """``retain --database-url <a new, initialised SQLite file> ARGS…``: exit code and output."""
    # the backup API copies what is still in the write-ahead log too
    with (
        closing(sqlite3.connect(initialised)) as source,
        closing(sqlite3.connect(make_url(sqlite_url).database or "")) as copy,
    ):
        source.backup(copy)
    monkeypatch.setattr(console, "width", 200)  # tables as wide as their content, as on a wide terminal
    capsys.readouterr()

    def run(*args: str | Path) -> Run:
        code = cli.main(["--database-url", sqlite_url, *map(str, args)])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def imported(retain: Retain) -> Retain:
    """The CLI over a database holding the sample accounts and contacts."""
    assert retain("accounts", "import", DATA / "accounts.csv").code == 0
    assert retain("contacts", "import", DATA / "contacts.csv").code == 0
    return retain


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.out + run.err


# --------------------------------------------------------------------------------------------
# import


def test_accounts_import_reports_counts_and_custom_fields(retain):
    first = retain("accounts", "import", DATA / "accounts.csv")
    assert (first.code, first.err) == (0, "")
    assert first.out.splitlines() == [
        f"{DATA / 'accounts.csv'}: 3 inserted, 0 updated, 0 unchanged",
        "custom fields: owner_region",
    ]

    again = retain("accounts", "import", DATA / "accounts.csv")
    assert again.out.splitlines()[0] == f"{DATA / 'accounts.csv'}: 0 inserted, 0 updated, 3 unchanged"


def test_bad_rows_exit_1_listing_every_row_and_nothing_is_written(retain, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("external_id,name,arr,status\nacme,Acme,12;0,active\nglobex,Globex,5,customer\nok,OK,1,trial\n")
    run = retain("accounts", "import", path)

    assert run.code == 1
    no_traceback(run)
    assert run.err.splitlines() == [
        f"{path}: row 2, column 'arr': '12;0' is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50",
        f"{path}: row 3, column 'status': 'customer' is not a status: use one of trial, active, paused, cancelling, churned",
        f"error: nothing was written from {path} (2 bad rows; fix them, or use --skip-invalid to import the good rows)",
    ]
    assert json.loads(retain("accounts", "list", "--format", "json").out) == []


def test_skip_invalid_imports_the_good_rows_and_lists_the_bad(retain, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("external_id,name,renewal_date\nacme,Acme,2027-01-31\nglobex,Globex,31.01.2027\n")
    run = retain("accounts", "import", path, "--skip-invalid")

    assert run.code == 0
    assert run.out.splitlines() == [f"{path}: 1 inserted, 0 updated, 0 unchanged"]
    assert run.err.splitlines() == [
        f"{path}: row 3, column 'renewal_date': '31.01.2027' is not a date: write YYYY-MM-DD, e.g. 2027-01-31",
        "1 bad row skipped",
    ]
    assert [a["external_id"] for a in json.loads(retain("accounts", "list", "--format", "json").out)] == ["acme"]


def test_dry_run_writes_nothing(retain):
    run = retain("accounts", "import", DATA / "accounts.csv", "--dry-run")
    assert run.code == 0
    assert run.out.splitlines()[0] == (
        f"{DATA / 'accounts.csv'} (dry run, nothing written): 3 to insert, 0 to update, 0 unchanged"
    )
    assert json.loads(retain("accounts", "list", "--format", "json").out) == []


def test_a_file_without_the_required_columns_is_one_clear_error(retain, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Id,Company\n1,Acme\n")
    run = retain("accounts", "import", path)
    assert run.code == 1
    no_traceback(run)
    assert run.err.splitlines() == [
        f"{path}: row 1: missing required columns 'external_id', 'name'; the header has 'Id', 'Company'",
        f"error: nothing was written from {path}",
    ]


def test_a_file_with_a_byte_order_mark_imports(retain, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfexternal_id,name\r\nacme,Acme\r\n")
    run = retain("accounts", "import", path)
    assert (run.code, run.out.splitlines()[0]) == (0, f"{path}: 1 inserted, 0 updated, 0 unchanged")


def usage_error(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Run:
    # through cli.main, as the `retain` script runs: the message is plain text, never boxed and
    # wrapped at the terminal's width (a long temporary path would split "does not exist")
    code = cli.main([*map(str, args)])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def test_a_missing_file_is_a_usage_error(tmp_path, capsys):
    result = usage_error(capsys, "accounts", "import", tmp_path / "nope.csv")
    assert result.code == 2
    assert f"'{tmp_path / 'nope.csv'}' does not exist" in result.err


def test_contacts_import_reports_unknown_accounts(retain, tmp_path):
    assert retain("accounts", "import", DATA / "accounts.csv").code == 0
    path = tmp_path / "people.csv"
    path.write_text("account_external_id,email,phone\nacme,jane@acme.example,1\nacme-x,x@acme.example,2\n")

    refused = retain("contacts", "import", path)
    assert refused.code == 1
    no_traceback(refused)
    assert refused.err.splitlines()[0] == f"{path}: row 3, column 'account_external_id': unknown account 'acme-x'"

    skipped = retain("contacts", "import", path, "--skip-invalid")
    assert skipped.code == 0
    assert skipped.out.splitlines() == [f"{path}: 1 inserted, 0 updated, 0 unchanged", "ignored columns: 'phone'"]


def test_import_help_documents_the_columns_and_all_or_nothing(retain):
    run = retain("accounts", "import", "--help")
    assert run.code == 0
    text = " ".join(run.out.split())
    for words in [
        "required external_id, name",
        "renewal_date",
        "custom field",
        "All or nothing",
        "--skip-invalid",
        "--dry-run",
    ]:
        assert words in text
    contacts_help = " ".join(retain("contacts", "import", "--help").out.split())
    assert "required account_external_id" in contacts_help
    assert "unsubscribed=no resubscribes a contact a file or a person unsubscribed, never one that" in contacts_help


def test_commands_say_to_run_init_on_a_new_database(tmp_path, capsys):
    code = cli.main(["--database-url", f"sqlite:///{tmp_path / 'new.db'}", "accounts", "list"])
    captured = capsys.readouterr()
    assert code == 1
    assert "run `retain init`" in captured.err
    assert "Traceback" not in captured.err


# --------------------------------------------------------------------------------------------
# list


def test_list_shows_a_table_of_accounts(imported):
    run = imported("accounts", "list")
    assert run.code == 0
    lines = run.out.splitlines()
    assert lines[0].strip() == "Accounts"
    for header in ["external id", "name", "plan", "ARR", "status", "renewal", "health", "CSM"]:
        assert header in lines[2]
    acme = next(line for line in lines if "acme" in line)
    for cell in [
        "Acme Corp",
        "enterprise",
        "120,000.50 USD",
        "active",
        "2027-03-31",
        "green",
        "Dana Scully <dana@example.com>",
    ]:
        assert cell in acme
    assert [line.split()[1] for line in lines[4:7]] == ["acme", "globex", "initech"]  # by name


def test_list_filters_by_status_and_csm_and_limits(imported):
    by_status = json.loads(imported("accounts", "list", "--status", "TRIAL", "--format", "json").out)
    assert [a["external_id"] for a in by_status] == ["globex"]
    by_csm = json.loads(imported("accounts", "list", "--csm", "DANA@example.com", "--format", "json").out)
    assert [a["external_id"] for a in by_csm] == ["acme", "initech"]

    limited = imported("accounts", "list", "--limit", "2")
    assert "initech" not in limited.out
    assert limited.out.splitlines()[-1] == "2 of 3 accounts shown; --limit 0 shows all"

    nobody = imported("accounts", "list", "--csm", "nobody@example.com")
    assert (nobody.code, nobody.out) == (0, "no accounts match\n")


def test_list_json_holds_every_field(imported):
    acme = json.loads(imported("accounts", "list", "--format", "json").out)[0]
    assert list(acme)[:2] == ["external_id", "name"]
    assert (acme["arr"], acme["renewal_date"], acme["custom"]) == (120000.5, "2027-03-31", {"owner_region": "EMEA"})


def test_list_refuses_an_unknown_status(capsys):
    result = usage_error(capsys, "accounts", "list", "--status", "gone")
    assert result.code == 2
    assert "'gone' is not one of" in result.err


# --------------------------------------------------------------------------------------------
# show


def test_show_an_unknown_account_suggests_close_ids(imported):
    run = imported("accounts", "show", "acmee")
    assert run.code == 1
    assert run.err.strip() == "error: no account with external id 'acmee'; did you mean 'acme'?"
    no_traceback(run)

    by_name = imported("accounts", "show", "Globex")
    assert by_name.err.strip() == "error: no account with external id 'Globex'; did you mean 'globex'?"

    far = imported("accounts", "show", "zzz")
    assert far.err.strip() == "error: no account with external id 'zzz' (`retain accounts list` shows them)"


@pytest.fixture
def story(imported: Retain, sqlite_url: str) -> Retain:
    """acme, enrolled in a playbook, with a task, outcomes and a long timeline."""
    engine = make_engine(sqlite_url)
    now = utcnow()
    with Session(engine) as s:
        acme = s.exec(select(Account).where(Account.external_id == "acme")).one()
        enrollment = Enrollment.model_validate(
            {
                "playbook": "renewal",
                "revision": "r1",
                "account_id": acme.id,
                "step_id": "call_champion",
                "next_due_at": now + timedelta(days=3),
            }
        )
        s.add(enrollment)
        s.add(
            Enrollment.model_validate(
                {"playbook": "onboarding", "revision": "r1", "account_id": acme.id, "status": "completed"}
            )
        )
        s.commit()
        s.add(
            CsmTask.model_validate(
                {"account_id": acme.id, "title": "Book the QBR", "priority": "high", "assignee": "dana@example.com"}
            )
        )
        s.add(CsmTask.model_validate({"account_id": acme.id, "title": "Old task", "status": "done"}))
        s.add(
            Outcome.model_validate(
                {
                    "account_id": acme.id,
                    "kind": "expanded",
                    "arr_delta_cents": 1_250_000,
                    "occurred_at": now - timedelta(days=40),
                }
            )
        )
        s.add(
            Outcome.model_validate(
                {
                    "account_id": acme.id,
                    "kind": "renewed",
                    "playbook": "renewal",
                    "occurred_at": now - timedelta(days=2),
                }
            )
        )
        for day in range(25, 0, -1):
            s.add(
                TimelineEvent.model_validate(
                    {
                        "account_id": acme.id,
                        "kind": "step",
                        "playbook": "renewal",
                        "summary": f"event {day} days ago",
                        "at": now - timedelta(days=day),
                    }
                )
            )
        s.commit()
    engine.dispose()
    return imported


def test_show_lays_out_the_account_and_what_surrounds_it(story):
    run = story("accounts", "show", "acme")
    assert run.code == 0
    out = run.out
    assert out.splitlines()[0] == "Acme Corp (acme) · active"
    for fact in ["120,000.50 USD", "2027-03-31", "green", "Dana Scully <dana@example.com>", "owner_region", "EMEA"]:
        assert fact in out
    assert "jane@acme.example" in out and "ops@acme.example" in out and "hank@globex.example" not in out
    enrollments = out[out.index("Active enrollments") : out.index("Open CSM tasks")]
    assert "renewal" in enrollments and "call_champion" in enrollments and "(in 2 days" in enrollments
    assert "onboarding" not in enrollments  # completed
    tasks = out[out.index("Open CSM tasks") : out.index("Recent outcomes")]
    assert "Book the QBR" in tasks and "Old task" not in tasks
    outcomes = out[out.index("Recent outcomes") : out.index("Timeline")]
    assert outcomes.index("expanded") < outcomes.index("renewed")
    assert "+12,500.00" in outcomes
    timeline = out[out.index("Timeline") :]
    assert "the last 20 of 28 events" in timeline
    # newest last: the import of today comes after the step of yesterday
    assert (
        timeline.index("event 17 days ago")
        < timeline.index("event 1 days ago")
        < timeline.index("created from accounts.csv")
    )
    assert "event 18 days ago" not in timeline


def test_show_json_has_every_section(story):
    run = story("accounts", "show", "acme", "--format", "json", "--events", "3")
    view = json.loads(run.out)
    assert view["account"]["external_id"] == "acme"
    assert [c["email"] for c in view["contacts"]] == ["jane@acme.example", "ops@acme.example"]  # primary first
    assert [(e["playbook"], e["step_id"]) for e in view["active_enrollments"]] == [("renewal", "call_champion")]
    assert [t["title"] for t in view["open_tasks"]] == ["Book the QBR"]
    assert [o["kind"] for o in view["recent_outcomes"]] == ["expanded", "renewed"]
    assert [t["summary"] for t in view["timeline"]] == [
        "created from accounts.csv",
        "contact jane@acme.example added from contacts.csv",
        "contact ops@acme.example added from contacts.csv",
    ]


def test_show_an_account_with_nothing_around_it(retain, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("external_id,name\nsolo,Solo [Ltd]\n")
    assert retain("accounts", "import", path).code == 0
    out = retain("accounts", "show", "solo").out
    assert out.splitlines()[0] == "Solo [Ltd] (solo) · active"  # brackets are text, not markup
    for line in ["Contacts: none", "Active enrollments: none", "Open CSM tasks: none", "Recent outcomes: none"]:
        assert line in out


def test_contacts_resubscribe_lifts_an_unsubscribe_and_keeps_a_bounce_unless_forced(imported, sqlite_url):
    from integrations.sources import unsubscribe

    email = "jane@acme.example"
    assert imported("contacts", "unsubscribe", email, "--channel", "survey").code == 0
    run = imported("contacts", "resubscribe", email.upper(), "--by", "Dana (CSM)")
    assert run.code == 0 and run.out.strip() == f"{email}: resubscribed to everything; 1 contact(s) updated"
    with Session(make_engine(sqlite_url)) as s:
        events = s.exec(select(TimelineEvent.summary).where(TimelineEvent.kind == "resubscribed")).all()
    assert events == [f"contact {email} resubscribed to everything (Dana (CSM))"]

    unsubscribe(make_engine(sqlite_url), email, source="bounce", reason="550 mailbox unavailable")
    kept = imported("contacts", "resubscribe", email)
    assert kept.code == 1
    assert (
        "stays unsubscribed: jane@acme.example: the email provider reported a bounce (550 mailbox unavailable)"
        in kept.err
    )
    forced = imported("contacts", "resubscribe", email, "--force")
    assert forced.code == 0 and "1 contact(s) updated" in forced.out
    assert imported("contacts", "resubscribe", "not-an-address").code == 2
