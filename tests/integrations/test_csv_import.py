"""CSV import of accounts and contacts: parsing, validation, upsert and all-or-nothing writes."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from integrations.sources import accounts as csv_import
from integrations.sources.accounts import ImportResult, import_accounts, import_contacts
from models import Account, ConfigError, Contact, DataImportError, RowProblem, TimelineEvent, make_engine, upgrade
from models.tables import holdout_bucket

DATA = Path(__file__).parent / "data"
NOW = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once for this module; tests get copies (faster than migrating each)."""
    path = tmp_path_factory.mktemp("template") / "retain.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_db(migrated_sqlite: Path, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, migrated SQLite file database (a copy of the module's template)."""
    path = tmp_path / "retain.db"
    shutil.copyfile(migrated_sqlite, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Engine:
    """Both databases, as the shared ``engine`` fixture, with SQLite from the template."""
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_clean")


def write(folder: Path, text: str, name: str = "accounts.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def table(*rows: list[str]) -> str:
    """CSV text for rows of cells, quoted as a spreadsheet would."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def accounts(engine: Engine) -> dict[str, Account]:
    with Session(engine) as s:
        return {a.external_id: a for a in s.exec(select(Account))}


def contacts(engine: Engine) -> dict[tuple[str, str], Contact]:
    with Session(engine) as s:
        rows = s.exec(select(Contact, Account.external_id).join(Account)).all()
    return {(external_id, c.email): c for c, external_id in rows}


def count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


def timeline(engine: Engine, external_id: str) -> list[TimelineEvent]:
    with Session(engine) as s:
        query = select(TimelineEvent).join(Account).where(Account.external_id == external_id)
        return list(s.exec(query.order_by(TimelineEvent.id)))


# --------------------------------------------------------------------------------------------
# accounts: a good file


def test_accounts_file_is_imported_with_every_value_parsed(db):
    result = import_accounts(db, DATA / "accounts.csv", now=NOW)

    assert result == ImportResult(
        file=str(DATA / "accounts.csv"), kind="accounts", inserted=3, custom_columns=("owner_region",)
    )
    acme = accounts(db)["acme"]
    assert acme.model_dump(exclude={"id", "created_at", "updated_at"}) == {
        "external_id": "acme",
        "name": "Acme Corp",
        "plan": "enterprise",
        "arr": 120000.5,
        "currency": "USD",
        "status": "active",
        "renewal_date": date(2027, 3, 31),
        "csm_email": "dana@example.com",
        "csm_name": "Dana Scully",
        "timezone": "Europe/Berlin",
        "country": "DE",
        "segment": "enterprise",
        "industry": "Manufacturing",
        "lifecycle_stage": "adopted",
        "signup_date": date(2024, 1, 15),
        "seats": 1200,
        "health": "green",
        "health_score": None,
        "health_trend": None,
        "onboarded_at": None,
        "renewed_at": None,
        "cancelled_at": None,
        "churned_at": None,
        "reactivated_at": None,
        "last_seen_at": None,
        "mrr": 0.0,
        "expanded_at": None,
        "contracted_at": None,
        "custom": {"owner_region": "EMEA"},
        "holdout_bucket": holdout_bucket("acme"),
    }
    assert (acme.created_at, acme.updated_at) == (NOW, NOW)
    globex = accounts(db)["globex"]
    assert (globex.arr, globex.status, globex.renewal_date) == (9000.0, "trial", date(2027, 2, 1))
    assert [(e.kind, e.summary, e.at, e.detail) for e in timeline(db, "acme")] == [
        ("import", "created from accounts.csv", NOW, {"file": "accounts.csv"})
    ]


@pytest.mark.parametrize(
    ("cell", "arr"),
    [
        ("12000", 12000.0),
        ("12,000.50", 12000.5),
        ("$12000", 12000.0),
        ("12 000 €", 12000.0),
        ("1'200'000", 1200000.0),
        ("0", 0.0),
        ("", 0.0),  # blank on a new account: the default
    ],
)
def test_arr_formats(sqlite_db, tmp_path, cell, arr):
    import_accounts(sqlite_db, write(tmp_path, table(["external_id", "name", "arr"], ["a", "A", cell])), now=NOW)
    assert accounts(sqlite_db)["a"].arr == arr


def test_header_names_ignore_case_spaces_and_punctuation_and_semicolons_work(sqlite_db, tmp_path):
    path = write(tmp_path, " EXTERNAL-ID ;Name ;renewal date\nacme;Acme;2027-01-31\n")
    import_accounts(sqlite_db, path, now=NOW)
    assert accounts(sqlite_db)["acme"].renewal_date == date(2027, 1, 31)


def test_a_byte_order_mark_is_not_part_of_the_first_column(sqlite_db, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffexternal_id,name\r\nacme,Äcme GmbH\r\n".encode())
    result = import_accounts(sqlite_db, path, now=NOW)
    assert (result.inserted, result.custom_columns) == (1, ())
    assert accounts(sqlite_db)["acme"].name == "Äcme GmbH"


def test_a_file_with_only_a_header_imports_nothing(sqlite_db, tmp_path):
    result = import_accounts(sqlite_db, write(tmp_path, "external_id,name\n\n"), now=NOW)
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 0)


def test_dry_run_counts_and_writes_nothing(sqlite_db):
    result = import_accounts(sqlite_db, DATA / "accounts.csv", dry_run=True, now=NOW)
    assert (result.inserted, result.dry_run) == (3, True)
    assert count(sqlite_db, Account) == 0
    assert count(sqlite_db, TimelineEvent) == 0


# --------------------------------------------------------------------------------------------
# accounts: importing again


def test_reimport_updates_changed_fields_and_leaves_absent_columns_and_blank_cells_alone(db, tmp_path):
    import_accounts(db, DATA / "accounts.csv", now=NOW)
    # no arr, currency, ... columns; plan blank for acme; a new custom column; one new account
    update = table(
        ["external_id", "name", "plan", "status", "owner_region", "tier"],
        ["acme", "Acme Corporation", "", "active", "EMEA", "1"],
        ["globex", "Globex", "pro", "trial", "AMER", ""],
        ["initech", "Initech", "starter", "churned", "EMEA", ""],
        ["hooli", "Hooli", "pro", "", "", ""],
    )
    result = import_accounts(db, write(tmp_path, update), now=LATER)

    assert (result.inserted, result.updated, result.unchanged) == (1, 2, 1)
    assert count(db, Account) == 4
    rows = accounts(db)
    acme = rows["acme"]
    assert (acme.name, acme.plan, acme.arr, acme.currency, acme.seats) == (
        "Acme Corporation",
        "enterprise",  # blank cell: unchanged
        120000.5,  # no arr column: unchanged
        "USD",
        1200,
    )
    assert acme.custom == {"owner_region": "EMEA", "tier": "1"}  # merged, key by key
    assert (acme.created_at, acme.updated_at) == (NOW, LATER)
    assert rows["globex"].updated_at == NOW  # unchanged rows keep their stamp
    assert rows["initech"].status == "churned"
    assert (rows["hooli"].status, rows["hooli"].arr) == ("active", 0.0)

    events = timeline(db, "acme")
    assert [e.summary for e in events] == [
        "created from accounts.csv",
        "updated from accounts.csv: name 'Acme Corp' → 'Acme Corporation', custom.tier (none) → '1'",
    ]
    assert events[-1].detail == {
        "file": "accounts.csv",
        "changes": {"name": ["Acme Corp", "Acme Corporation"], "custom.tier": [None, "1"]},
    }
    assert [e.summary for e in timeline(db, "initech")][
        -1
    ] == "updated from accounts.csv: status 'cancelling' → 'churned'"


def test_reimporting_the_same_file_changes_nothing(db):
    import_accounts(db, DATA / "accounts.csv", now=NOW)
    result = import_accounts(db, DATA / "accounts.csv", now=LATER)
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 3)
    assert count(db, TimelineEvent) == 3  # only the three "created" events


def test_external_ids_are_matched_exactly(sqlite_db, tmp_path):
    # 15-character Salesforce ids differ only in case
    import_accounts(sqlite_db, write(tmp_path, "external_id,name\n001A,Upper\n001a,Lower\n"), now=NOW)
    assert sorted(accounts(sqlite_db)) == ["001A", "001a"]


# --------------------------------------------------------------------------------------------
# accounts: bad rows

BAD_CELLS = [
    ("arr", "12,00", "'12,00' is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50"),
    ("arr", "twelve", "'twelve' is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50"),
    ("arr", "-500", "'-500' is negative; ARR cannot be"),
    ("renewal_date", "01/31/2027", "'01/31/2027' is not a date: write YYYY-MM-DD, e.g. 2027-01-31"),
    ("signup_date", "2027-02-30", "'2027-02-30' is not a date: write YYYY-MM-DD, e.g. 2027-01-31"),
    ("status", "customer", "'customer' is not a status: use one of trial, active, paused, cancelling, churned"),
    ("timezone", "Berlin", "'Berlin' is not an IANA time zone such as 'Europe/Berlin'; did you mean 'Europe/Berlin'?"),
    ("timezone", "CET+5", "'CET+5' is not an IANA time zone such as 'Europe/Berlin'; did you mean 'CET'?"),
    ("country", "UK", "'UK' is not an ISO 3166 two-letter country code such as 'DE' (the United Kingdom is 'GB')"),
    ("country", "Germany", "'Germany' is not an ISO 3166 two-letter country code such as 'DE'"),
    ("csm_email", "dana@", "'dana@' is not an email address"),
    ("csm_email", "dana scully@example.com", "'dana scully@example.com' is not an email address"),
    ("csm_email", "dana@example", "'dana@example' is not an email address"),
    ("seats", "1.5", "'1.5' is not a whole number of seats"),
    ("health", "amber", "'amber' is not a health: use green, yellow or red"),
    ("health_score", "101", "'101' is not a number from 0 to 100"),
    ("currency", "dollars", "'dollars' is not a three-letter currency code such as USD or EUR"),
    ("plan", "p" * 101, "is 101 characters long; at most 100 fit"),
    ("name", "", "a value is required"),
]


@pytest.mark.parametrize(("column", "cell", "message"), BAD_CELLS, ids=[f"{c}={v[:12]!r}" for c, v, _ in BAD_CELLS])
def test_a_bad_cell_is_reported_with_row_and_column(sqlite_db, tmp_path, column, cell, message):
    header = ["external_id", "name"] + ([column] if column != "name" else [])
    good = ["ok", "OK"] + ([""] if column != "name" else [])
    bad = ["bad", cell if column == "name" else "Bad"] + ([cell] if column != "name" else [])
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, write(tmp_path, table(header, good, bad)), now=NOW)
    assert raised.value.problems == [RowProblem(3, message, column)]
    assert count(sqlite_db, Account) == 0


def test_every_bad_row_is_reported_at_once_and_nothing_is_written(db, tmp_path):
    import_accounts(db, DATA / "accounts.csv", now=NOW)
    text = (
        "External ID,Name,ARR,Renewal Date,Country\n"
        "acme,Acme renamed,5,2027-01-01,DE\n"  # 2: good, an update
        'new,"New,\nInc.",1,,\n'  # 3-4: good, a name over two lines
        "bad-arr,Bad,12;5,,\n"  # 5
        "acme,Acme again,1,,\n"  # 6: duplicate of row 2
        ",No id,1,,\n"  # 7
        "bad-many,Bad,1,1/2/27,XX\n"  # 8: two problems
        "too-many,Bad,1,,,,surplus\n"  # 9
    )
    with pytest.raises(DataImportError) as raised:
        import_accounts(db, write(tmp_path, text), now=LATER)

    path = str(tmp_path / "accounts.csv")
    assert [p.format(raised.value.file) for p in raised.value.problems] == [
        f"{path}: row 5, column 'ARR': '12;5' is not an amount: write digits with '.' for decimals, e.g. 12000.50 or 12,000.50",
        f"{path}: row 6, column 'External ID': duplicate: external_id 'acme' is already on row 2",
        f"{path}: row 7, column 'External ID': a value is required",
        f"{path}: row 8, column 'Renewal Date': '1/2/27' is not a date: write YYYY-MM-DD, e.g. 2027-01-31",
        f"{path}: row 8, column 'Country': 'XX' is not an ISO 3166 two-letter country code such as 'DE'",
        f"{path}: row 9: the row has 7 values but the header has 5 columns (a value with a ',' in it needs double quotes)",
    ]
    assert str(raised.value).splitlines()[0] == raised.value.problems[0].format(path)
    # nothing written: not the update of row 2, not the new account of row 3, no timeline
    rows = accounts(db)
    assert sorted(rows) == ["acme", "globex", "initech"]
    assert (rows["acme"].name, rows["acme"].arr) == ("Acme Corp", 120000.5)
    assert count(db, TimelineEvent) == 3


def test_skip_invalid_writes_the_good_rows_and_returns_the_bad_ones(db, tmp_path):
    text = table(
        ["external_id", "name", "arr"],
        ["acme", "Acme", "100"],
        ["bad", "Bad", "lots"],
        ["acme", "Acme twice", "1"],
        ["globex", "Globex", "$2,500"],
    )
    result = import_accounts(db, write(tmp_path, text), skip_invalid=True, now=NOW)

    assert (result.inserted, result.updated, result.unchanged, result.skipped) == (2, 0, 0, 2)
    assert [(p.row, p.column) for p in result.problems] == [(3, "arr"), (4, "external_id")]
    rows = accounts(db)
    assert sorted(rows) == ["acme", "globex"]
    assert rows["acme"].name == "Acme"  # the first of two duplicates stands
    assert rows["globex"].arr == 2500.0


# --------------------------------------------------------------------------------------------
# files that cannot be read as a table


def test_missing_required_columns_are_named_with_the_columns_found(sqlite_db, tmp_path):
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, write(tmp_path, "Account ID,Company,ARR\n1,Acme,5\n"), now=NOW)
    assert raised.value.problems == [
        RowProblem(1, "missing required columns 'external_id', 'name'; the header has 'Account ID', 'Company', 'ARR'")
    ]


def test_one_missing_column_is_named_in_the_singular(sqlite_db, tmp_path):
    with pytest.raises(DataImportError) as raised:
        import_contacts(sqlite_db, write(tmp_path, "email,name\nj@x.io,J\n", "contacts.csv"), now=NOW)
    assert raised.value.problems == [
        RowProblem(1, "missing required column 'account_external_id'; the header has 'email', 'name'")
    ]


def test_a_column_named_twice_is_refused(sqlite_db, tmp_path):
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, write(tmp_path, "external_id,Name,ARR,name\na,A,1,B\n"), now=NOW)
    assert raised.value.problems == [RowProblem(1, "columns 2 ('Name') and 4 ('name') are the same column 'name'")]


def test_a_file_that_is_not_utf8_is_refused_with_its_line(sqlite_db, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("external_id,name\nacme,Acme\nmuller,Müller GmbH\n".encode("latin-1"))
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, path, now=NOW)
    assert raised.value.problems == [
        RowProblem(3, "the file is not UTF-8 text (byte 0xfc on this line); save it as UTF-8 ('CSV UTF-8' in Excel)")
    ]


def test_a_utf16_file_is_named_as_such(sqlite_db, tmp_path):
    path = tmp_path / "utf16.csv"
    path.write_bytes("external_id,name\nacme,Acme\n".encode("utf-16"))
    with pytest.raises(DataImportError, match="the file is UTF-16 text; save it as UTF-8"):
        import_accounts(sqlite_db, path, now=NOW)


def test_quotes_that_do_not_pair_up_are_a_row_problem(sqlite_db, tmp_path):
    path = write(tmp_path, 'external_id,name\nacme,"Acme" Inc\nglobex,Globex\n')
    result = import_accounts(sqlite_db, path, skip_invalid=True, now=NOW)
    assert [p.row for p in result.problems] == [2]
    assert result.problems[0].message.startswith("the quotes on this row do not pair up")
    assert sorted(accounts(sqlite_db)) == ["globex"]


def test_values_under_a_column_without_a_name_are_a_problem(sqlite_db, tmp_path):
    # trailing empty columns, as spreadsheets export them, are fine
    import_accounts(sqlite_db, write(tmp_path, "external_id,name,,\nacme,Acme,,\n"), now=NOW)
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, write(tmp_path, "external_id,name,\nacme,Acme,oops\n"), now=NOW)
    assert raised.value.problems == [
        RowProblem(1, "column 3 has values but no name in the header; name it or delete it")
    ]


def test_an_empty_file_says_what_the_header_needs(sqlite_db, tmp_path):
    with pytest.raises(DataImportError) as raised:
        import_accounts(sqlite_db, write(tmp_path, "\n\n"), now=NOW)
    assert raised.value.problems == [RowProblem(1, "the file is empty; the header must name external_id, name")]


def test_a_missing_file_is_a_config_error(sqlite_db, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the accounts file .*nope\.csv: No such file or directory"):
        import_accounts(sqlite_db, tmp_path / "nope.csv", now=NOW)


# --------------------------------------------------------------------------------------------
# contacts


def test_contacts_are_imported_onto_their_accounts(db):
    import_accounts(db, DATA / "accounts.csv", now=NOW)
    result = import_contacts(db, DATA / "contacts.csv", now=NOW)

    assert (result.inserted, result.updated, result.ignored_columns) == (3, 0, ("Phone",))
    rows = contacts(db)
    assert sorted(rows) == [
        ("acme", "jane@acme.example"),
        ("acme", "ops@acme.example"),
        ("globex", "hank@globex.example"),
    ]
    jane = rows[("acme", "jane@acme.example")]
    assert (jane.name, jane.role, jane.title, jane.timezone, jane.is_primary, jane.unsubscribed) == (
        "Jane Doe",
        "champion",
        "VP Operations",
        "Europe/Berlin",
        True,
        False,
    )
    assert rows[("acme", "ops@acme.example")].title is None
    assert [e.summary for e in timeline(db, "acme")][1:] == [
        "contact jane@acme.example added from contacts.csv",
        "contact ops@acme.example added from contacts.csv",
    ]


def test_contacts_reimport_matches_email_in_any_case_and_updates_what_changed(db, tmp_path):
    import_accounts(db, DATA / "accounts.csv", now=NOW)
    import_contacts(db, DATA / "contacts.csv", now=NOW)
    text = table(
        ["account_external_id", "email", "role"],
        ["acme", "JANE@acme.example", "executive"],
        ["acme", "ops@acme.example", "admin"],
        ["globex", "jane@acme.example", "user"],  # same email, another account: another contact
    )
    result = import_contacts(db, write(tmp_path, text, "contacts.csv"), now=LATER)

    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 1)
    rows = contacts(db)
    assert len(rows) == 4
    jane = rows[("acme", "jane@acme.example")]
    assert (jane.role, jane.name, jane.is_primary) == ("executive", "Jane Doe", True)
    assert rows[("globex", "jane@acme.example")].role == "user"
    assert timeline(db, "acme")[-1].summary == (
        "contact jane@acme.example updated from contacts.csv: role 'champion' → 'executive'"
    )


def test_an_import_unsubscribes_and_resubscribes_but_never_undoes_the_contact_s_own_act(db, tmp_path):
    from integrations.sources import unsubscribe

    import_accounts(db, DATA / "accounts.csv", now=NOW)
    header = ["account_external_id", "email", "unsubscribed"]
    rows = [["acme", "a@acme.example", "no"], ["acme", "b@acme.example", "no"], ["acme", "c@acme.example", "no"]]
    import_contacts(db, write(tmp_path, table(header, *rows), "c.csv"), now=NOW)
    off = [[r[0], r[1], "yes"] for r in rows[:2]]
    import_contacts(db, write(tmp_path, table(header, *off), "c.csv"), now=LATER)
    contact = contacts(db)[("acme", "a@acme.example")]
    assert (contact.unsubscribed, contact.unsubscribed_at) == (True, LATER)
    unsubscribe(db, "c@acme.example", source="link", now=LATER)  # the contact's own act
    unsubscribe(db, "b@acme.example", source="manual", now=LATER)  # a person's, at the CLI

    result = import_contacts(db, write(tmp_path, table(header, *rows), "c.csv"), now=NOW)
    assert (result.updated, result.unchanged) == (2, 1)
    assert result.notes == (
        "2 contact(s) resubscribed (the file says unsubscribed=false)",
        "stays unsubscribed: c@acme.example: the contact unsubscribed through the link in an email",
    )
    after = contacts(db)
    assert [after[("acme", f"{x}@acme.example")].unsubscribed for x in "abc"] == [False, False, True]
    assert timeline(db, "acme")[-1].summary == "contact b@acme.example resubscribed to everything (import of c.csv)"


def test_contacts_of_unknown_accounts_and_bad_rows_are_all_reported(sqlite_db, tmp_path):
    import_accounts(sqlite_db, DATA / "accounts.csv", now=NOW)
    text = table(
        ["account_external_id", "email", "is_primary", "timezone"],
        ["acme", "jane@acme.example", "yes", ""],
        ["acme-x", "x@acme.example", "", ""],
        ["acme", "Jane@ACME.example", "", ""],
        ["globex", "hank@", "maybe", "Mars/Base"],
    )
    with pytest.raises(DataImportError) as raised:
        import_contacts(sqlite_db, write(tmp_path, text, "contacts.csv"), now=NOW)

    assert raised.value.problems == [
        RowProblem(3, "unknown account 'acme-x'", "account_external_id"),
        RowProblem(4, "duplicate: contact 'jane@acme.example' of account 'acme' is already on row 2", "email"),
        RowProblem(5, "'hank@' is not an email address", "email"),
        RowProblem(5, "'maybe' is not yes or no: write true/false, yes/no or 1/0", "is_primary"),
        RowProblem(5, "'Mars/Base' is not an IANA time zone such as 'Europe/Berlin'", "timezone"),
    ]
    assert count(sqlite_db, Contact) == 0


def test_contacts_skip_invalid_writes_the_known_accounts_contacts(sqlite_db, tmp_path):
    import_accounts(sqlite_db, DATA / "accounts.csv", now=NOW)
    text = table(["account_external_id", "email"], ["acme-x", "x@acme.example"], ["acme", "a@acme.example"])
    result = import_contacts(sqlite_db, write(tmp_path, text, "contacts.csv"), skip_invalid=True, now=NOW)
    assert (result.inserted, result.problems) == (
        1,
        (RowProblem(2, "unknown account 'acme-x'", "account_external_id"),),
    )
    assert list(contacts(sqlite_db)) == [("acme", "a@acme.example")]


# --------------------------------------------------------------------------------------------
# set-based: the number of statements does not grow with the number of rows


def statements_for(engine: Engine, run) -> int:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return len(seen)


def test_the_number_of_statements_does_not_grow_with_the_rows(db, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_import, "CHUNK", 100)  # several lookup chunks, without thousands of rows
    n = 450
    first = table(["external_id", "name", "arr"], *([f"acct-{i}", f"Account {i}", str(i)] for i in range(n)))
    again = table(["external_id", "name", "arr"], *([f"acct-{i}", f"Account {i}", f"{i}.5"] for i in range(n)))
    people = table(["account_external_id", "email"], *([f"acct-{i}", f"cs{i}@example.com"] for i in range(n)))

    inserted = statements_for(db, lambda: import_accounts(db, write(tmp_path, first), now=NOW))
    updated = statements_for(db, lambda: import_accounts(db, write(tmp_path, again), now=LATER))
    added = statements_for(db, lambda: import_contacts(db, write(tmp_path, people, "c.csv"), now=NOW))

    assert count(db, Account) == n
    assert count(db, Contact) == n
    assert accounts(db)[f"acct-{n - 1}"].arr == n - 0.5
    assert count(db, TimelineEvent) == 3 * n
    # at most two lookups per chunk of 100 keys, plus a few batched writes; per row would be hundreds
    chunks = -(-n // 100)
    assert max(inserted, updated, added) <= 2 * chunks + 4, (inserted, updated, added)
