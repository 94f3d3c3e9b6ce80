"""README's "Bring your own data": the sample files of docs/samples loaded ONLY through the CLI (no
direct database writes), then one tick of each shipped playbook, also through the CLI; each
enrolls exactly the accounts the sample was built for."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

import cli
from cli._app import console
from models import BUNDLED_PLAYBOOKS_DIR, Account, Contact, Enrollment, Touch, make_engine

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
AS_OF = "2027-03-10T15:00:00Z"  # a Wednesday, 10:00 in New York

#: why each account is in the sample, and the one playbook it must enter (or none)
EXPECTED: dict[str, set[str]] = {
    # trial, signed up 18 days ago, not onboarded (globex signed up too, but its activation event
    # onboarded it: the events import keeps it out)
    "onboarding": {"northwind"},
    # active, onboarded long ago; initech is small (ARR 2,400), hooli renews in 175 days. Umbrella
    # is in its renewal window, wayne came back 9 days ago, globex onboarded 5 days ago
    "check_in": {"initech", "hooli"},
    # active, ARR 48,000, renews in 51 days; stark would qualify but has given notice
    "renewal": {"umbrella"},
    # churned 64 days ago after onboarding; duff's revenue stopped in January (churned 68 days ago,
    # known from revenue alone). Soylent churned 3 days ago, acme 282 days ago; krusty's revenue
    # stopped too, but its product events show it never went live (no activation event)
    "win_back": {"vandelay", "duff"},
    # churned 3 days ago, and gave notice (cancelling)
    "farewell": {"soylent", "stark"},
}

LOAD = [
    ("accounts", "import", "accounts.csv"),
    ("contacts", "import", "contacts.csv"),
    ("usage", "import", "usage.csv"),
    ("usage", "import", "usage_events.jsonl"),
    ("tickets", "import", "tickets.csv"),
    ("events", "import", "events.jsonl"),
]
#: the billing export runs through the day before the tick; the state is derived as of the tick
REVENUE = [
    "revenue",
    "import",
    "revenue.csv",
    "--data-through",
    "2027-03-09",
    "--as-of",
    "2027-03-10",
]


def test_each_shipped_playbook_enrolls_exactly_the_accounts_it_should(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    # the declared activation event, where a team keeps it: sources.yaml in its playbooks folder
    # (here the shipped playbooks, copied beside the sample's sources.yaml)
    folder = tmp_path / "playbooks"
    shutil.copytree(BUNDLED_PLAYBOOKS_DIR, folder)
    shutil.copy(SAMPLES / "sources.yaml", folder / "sources.yaml")
    monkeypatch.setenv("RETAIN_PLAYBOOKS_DIR", str(folder))
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setattr(console, "width", 200)

    def retain(*args: str | Path) -> str:
        code = cli.main(["--database-url", url, *map(str, args)])
        out = capsys.readouterr()
        assert code == 0, (args, out.out, out.err)
        return out.out

    retain("init")
    for *command, name in LOAD:
        retain(*command, SAMPLES / name)
    retain(*REVENUE[:2], SAMPLES / REVENUE[2], *REVENUE[3:])
    again = retain("events", "import", SAMPLES / "events.jsonl")  # idempotent: nothing new
    assert "0 new" in again and "0 accounts onboarded" in again and "0 contacts added or updated" in again
    for playbook in EXPECTED:
        retain("run", playbook, "--as-of", AS_OF, "--no-prefect")

    engine = make_engine(url)
    with Session(engine) as s:
        names = {a.id: a.external_id for a in s.exec(select(Account)).all()}
        entered: dict[str, set[str]] = {playbook: set() for playbook in EXPECTED}
        for enrollment in s.exec(select(Enrollment)).all():
            entered[enrollment.playbook].add(names[enrollment.account_id])
        globex = s.exec(select(Account).where(Account.external_id == "globex")).one()
        # a user known only from product events (an identify naming its account in its context)
        nina = s.exec(select(Contact).where(Contact.email == "nina@northwind.example")).one()
        northwind = s.exec(select(Account).where(Account.external_id == "northwind")).one()
        welcomed = {
            t.contact_id
            for t in s.exec(select(Touch).where(Touch.playbook == "onboarding", Touch.step_id == "welcome")).all()
        }
        duff = s.exec(select(Account).where(Account.external_id == "duff")).one()
    engine.dispose()
    with capsys.disabled():
        print(f"\n{'playbook':<12} {'should enter':<36} {'entered':<36}")
        for playbook, expected in EXPECTED.items():
            should, did = sorted(expected), sorted(entered[playbook])
            print(f"{playbook:<12} {len(should)}: {', '.join(should):<33} {len(did)}: {', '.join(did):<33}")
    assert entered == EXPECTED
    assert globex.onboarded_at is not None  # from the activation event in sources.yaml
    assert (duff.status, duff.churned_at, duff.onboarded_at) == ("churned", datetime(2027, 1, 1, tzinfo=UTC), None)
    assert (nina.account_id, nina.name, nina.title, nina.role) == (
        northwind.id,
        "Nina Nakamura",
        "Operations lead",
        "admin",
    )
    assert not nina.is_primary  # northwind has its primary contact from contacts.csv
    assert nina.id in welcomed  # onboarding's first email reaches her
