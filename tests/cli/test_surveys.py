"""``retain surveys record|import|summary`` through the real CLI, on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert, select

import cli
from cli._app import console
from flows.analytics.surveys import survey_token
from models import Account, Contact, SurveyResponse, Touch, make_engine, utcnow
from tests._sqlite import migrated_sqlite


@dataclass
class Run:
    code: int
    out: str
    err: str


Retain = Callable[..., Run]
SECRET = "cli-test-secret"
TOUCH_KEY = "check_in:1:ask_nps:1:1"


@pytest.fixture
def retain(sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Retain:
    """``retain --database-url <a database with acme (contact ana, a sent NPS survey) and globex>``."""
    engine = migrated_sqlite(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Account),
            [
                {"external_id": "acme", "name": "Acme", "segment": "enterprise", "custom": {}},
                {"external_id": "globex", "name": "Globex", "segment": "smb", "custom": {}},
            ],
        )
        acme = conn.execute(select(Account.id).where(Account.external_id == "acme")).scalar_one()
        conn.execute(
            insert(Contact),
            [{"account_id": acme, "email": "ana@acme.test", "unsubscribed_channels": [], "preferences": {}}],
        )
        contact = conn.execute(select(Contact.id)).scalar_one()
        conn.execute(
            insert(Touch),
            [
                {
                    "key": TOUCH_KEY,
                    "account_id": acme,
                    "contact_id": contact,
                    "channel": "email",
                    "status": "delivered",
                    "payload": {"kind": "survey", "survey": "nps"},
                    "created_at": utcnow(),
                }
            ],
        )
    engine.dispose()
    monkeypatch.setenv("RETAIN_SURVEY_SECRET", SECRET)
    monkeypatch.setattr(console, "width", 200)
    capsys.readouterr()

    def run(*args: str | Path) -> Run:
        code = cli.main(["--database-url", sqlite_url, *map(str, args)])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def _scores(retain: Retain, sqlite_url: str) -> list[tuple[str, int]]:
    engine = make_engine(sqlite_url)
    with engine.connect() as conn:
        rows = conn.execute(select(SurveyResponse.kind, SurveyResponse.score).order_by(SurveyResponse.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_record_an_answer(retain: Retain, sqlite_url: str) -> None:
    run = retain(
        "surveys", "record", "--account", "acme", "--contact", "ana@acme.test", "--kind", "nps", "--score", "9",
        "--comment", "great onboarding", "--at", "2024-03-01T10:00:00Z",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert run.out.strip() == "recorded NPS 9 (promoter) at 2024-03-01 10:00 UTC"
    assert _scores(retain, sqlite_url) == [("nps", 9)]


def test_record_through_the_token_of_a_survey_link(retain: Retain) -> None:
    run = retain("surveys", "record", "--token", survey_token(TOUCH_KEY, SECRET), "--score", "10")
    assert run.code == 0, run.err
    assert "recorded NPS 10 (promoter)" in run.out
    assert "(linked to its survey email)" in run.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "acme", "--kind", "csat", "--score", "6"], "error: 6 is out of range for CSAT: use a whole number from 1 to 5"),
        (["--account", "acme", "--score", "6"], "error: name the account and the kind of survey"),
        (["--account", "acmee", "--kind", "nps", "--score", "6"], "error: no account with external id 'acmee'; did you mean 'acme'?"),
        (["--token", "abc.def", "--score", "6"], "error: the survey token is not valid"),
    ],
)  # fmt: skip
def test_a_bad_answer_is_a_message_not_a_traceback(
    retain: Retain, sqlite_url: str, args: list[str], message: str
) -> None:
    run = retain("surveys", "record", *args)
    assert run.code == 1
    assert message in run.err
    assert "Traceback" not in run.out + run.err
    assert _scores(retain, sqlite_url) == []


def test_import_reports_every_bad_row_and_writes_nothing(retain: Retain, sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text(
        "account_external_id,kind,score,comment\nacme,nps,9,\nacme,nps,12,\nnobody,csat,4,\n", encoding="utf-8"
    )
    run = retain("surveys", "import", path)
    assert run.code == 1
    assert run.err.splitlines() == [
        f"{path}: row 3, column 'score': 12 is out of range for NPS: use a whole number from 0 to 10",
        f"{path}: row 4, column 'account_external_id': unknown account 'nobody'",
        f"error: nothing was written from {path} (2 bad rows)",
    ]
    assert _scores(retain, sqlite_url) == []

    path.write_text("account_external_id,kind,score,comment\nacme,nps,9,\nglobex,csat,4,meh\n", encoding="utf-8")
    run = retain("surveys", "import", path, "--dry-run")
    assert run.out.strip() == f"{path} (dry run, nothing written): 2 to insert, 0 to replace, 0 unchanged"
    assert _scores(retain, sqlite_url) == []
    run = retain("surveys", "import", path)
    assert run.out.strip() == f"{path}: 2 inserted, 0 replaced, 0 unchanged"
    assert _scores(retain, sqlite_url) == [("nps", 9), ("csat", 4)]


def test_summary_as_a_table_and_as_json(retain: Retain) -> None:
    for account, kind, score in [("acme", "nps", 10), ("acme", "nps", 9), ("globex", "nps", 3), ("globex", "ces", 6)]:
        assert retain("surveys", "record", "-a", account, "--kind", kind, "--score", str(score)).code == 0

    run = retain("surveys", "summary")
    assert run.code == 0
    lines = run.out.splitlines()
    nps = next(line for line in lines if line.startswith("│ NPS"))
    assert "│       3 │        2 │ +33.3" in nps
    assert "promoters 2 (66.7%) · passives 0 (0%) · detractors 1 (33.3%)" in nps
    assert "6 average" in next(line for line in lines if line.startswith("│ CES"))

    run = retain("surveys", "summary", "--kind", "nps", "--segment", "enterprise", "--format", "json")
    [summary] = json.loads(run.out)
    assert (summary["responses"], summary["accounts"], summary["score"]) == (2, 1, 100.0)

    run = retain("surveys", "summary", "--kind", "nps", "--since", "2020-01-01")
    assert "answers by score: 0: 0" in run.out and "9: 1  10: 1" in run.out
