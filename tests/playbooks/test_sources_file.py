"""sources.yaml: validated like playbooks (every error at once, at file:line:col), with a JSON
Schema for editors, and checked by `retain playbooks validate` with the folder's playbooks."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

import cli
from models import PlaybookError
from models.sources import SOURCE_COLUMNS, sources_json_schema
from playbooks import load_sources, load_sources_file

ROOT = Path(__file__).resolve().parents[2]

BAD = """\
activation_event: Onboarding Completed
sources:
  crm:
    kind: acounts
    url: postgresql://reader:hunter2@db/warehouse
    query: SELECT * FROM accounts
    cursor: updated_at
  billing:
    kind: revenue
    url: {env: WAREHOUSE_URL}
    query: DELETE FROM invoices
    columns: {customer: cust, amout: total}
    cursor: changed_at
    sheduel: x
  status:
    kind: usage
    url: {secret: warehouse, user: x}
    query: SELECT 1;
    cursor: day
"""


def test_every_error_of_a_sources_file_at_its_place(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(PlaybookError) as caught:
        load_sources_file(path)
    assert [p.format().removeprefix(f"{path}:") for p in caught.value.problems] == [
        "4:11: sources.crm.kind: 'acounts' is not one of: 'accounts', 'contacts', 'revenue', 'usage', 'tickets' "
        "or 'events'",
        "5:10: sources.crm.url: the URL holds a password: credentials never go in this file; keep the URL in an "
        "environment variable (url: {env: WAREHOUSE_URL}) or a secret (url: {secret: warehouse})",
        "11:12: sources.billing.query: the query must be a SELECT (or WITH ... SELECT): a sync only reads",
        "12:31: sources.billing.columns: unknown column of revenue 'amout' (did you mean 'amount'?); use: customer, "
        "date, amount, service_start, service_end, product, plan, currency, invoice, credits",
        "14:5: sources.billing: unknown key 'sheduel' (did you mean 'schedule'?); use: kind, url, query, columns, "
        "cursor, batch_size, schedule, create_accounts",
        "17:30: sources.status.url: unknown key 'user' (did you mean 'secret'?); use: env, secret",
    ]


def test_a_valid_sources_file_and_the_folder_without_one(tmp_path: Path) -> None:
    assert load_sources(tmp_path).sources == {}
    (tmp_path / "sources.yaml").write_text(
        "sources:\n  crm:\n    kind: accounts\n    url: {secret: warehouse}\n"
        "    query: SELECT id, name, updated_at FROM accounts;\n    columns: {external_id: id}\n"
        "    cursor: updated_at\n    schedule: {cron: '*/15 * * * *', timezone: Europe/Berlin}\n",
        encoding="utf-8",
    )
    crm = load_sources(tmp_path).sources["crm"]
    assert (crm.query, crm.query_column("external_id"), crm.query_column("name"), crm.batch_size) == (
        "SELECT id, name, updated_at FROM accounts", "id", "name", 5000,
    )  # fmt: skip


def test_retain_playbooks_validate_checks_the_sources_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sources.yaml").write_text("sources:\n  crm:\n    kind: accounts\n", encoding="utf-8")
    assert cli.main(["playbooks", "validate", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'sources.yaml'}:3:5: sources.crm: missing required key 'url'" in out
    assert cli.main(["playbooks", "validate", str(tmp_path / "sources.yaml")]) == 1


def test_committed_sources_schema_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    shipped = resources.files("playbooks").joinpath("sources.schema.json").read_text(encoding="utf-8")
    fix = (
        "regenerate both: python -c 'import json; from models.sources import sources_json_schema; "
        "print(json.dumps(sources_json_schema(), indent=2, ensure_ascii=False))' | tee playbooks/sources.schema.json "
        "> sources.schema.json"
    )
    assert shipped == json.dumps(sources_json_schema(), indent=2, ensure_ascii=False) + "\n", fix
    assert (ROOT / "sources.schema.json").read_text(encoding="utf-8") == shipped, fix
    assert cli.main(["playbooks", "schema", "--sources"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Retain sources"


def test_each_kind_maps_onto_its_import_columns() -> None:
    from integrations.sources import ACCOUNT_COLUMNS, CONTACT_COLUMNS

    assert SOURCE_COLUMNS["accounts"] == ACCOUNT_COLUMNS
    assert SOURCE_COLUMNS["contacts"] == CONTACT_COLUMNS
