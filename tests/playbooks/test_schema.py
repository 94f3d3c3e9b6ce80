"""The committed JSON Schema matches the models, and every shipped playbook points editors at it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from models.playbook import json_schema
from playbooks import playbook_files

ROOT = Path(__file__).resolve().parents[2]
MODELINE = "# yaml-language-server: $schema=../playbook.schema.json"


def test_committed_schema_is_up_to_date() -> None:
    # the copy installed with the `playbooks` package (what `retain playbooks schema` prints), and the
    # repository root's copy that the shipped playbooks' modelines point at
    shipped = resources.files("playbooks").joinpath("playbook.schema.json").read_text(encoding="utf-8")
    fix = (
        "regenerate both: python -c 'import json; from models.playbook import json_schema; "
        "print(json.dumps(json_schema(), indent=2, ensure_ascii=False))' | tee playbooks/playbook.schema.json "
        "> playbook.schema.json"
    )
    assert json.loads(shipped) == json_schema(), fix
    assert shipped == json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", fix
    assert (ROOT / "playbook.schema.json").read_text(encoding="utf-8") == shipped, fix


def test_schema_knows_every_step_kind() -> None:
    kinds = {
        d["properties"]["kind"]["const"] for d in json_schema()["$defs"].values() if "kind" in d.get("properties", {})
    }
    assert kinds == {
        "email",
        "slack",
        "webhook",
        "task",
        "survey",
        "wait",
        "wait_for",
        "branch",
        "update",
        "outcome",
        "exit",
    }


def test_every_shipped_playbook_carries_the_modeline() -> None:
    files = playbook_files(ROOT / "playbooks")
    assert files, "no playbooks shipped"
    for path in files:
        assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE, path.name


def test_editors_schema_accepts_a_valid_playbook_and_flags_a_typo() -> None:
    import jsonschema
    import yaml

    validator = jsonschema.Draft202012Validator(json_schema())
    valid = yaml.safe_load((ROOT / "tests/playbooks/cases/valid.yaml").read_text(encoding="utf-8"))
    assert list(validator.iter_errors(valid)) == []
    typo = {**valid, "audiance": valid["audience"]}
    assert any("audiance" in e.message for e in validator.iter_errors(typo))
