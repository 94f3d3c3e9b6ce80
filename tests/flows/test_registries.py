"""Each list once: the step kinds are the members of the ``Step`` union, and everything else that
names step kinds or channels is derived from it or held equal to it here: the validator's models,
the engine's handlers, the outline, the channel registry, the committed JSON Schema and the docs."""

from __future__ import annotations

import json
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from flows.engine.advance import advance
from flows.engine.enroll import enroll
from flows.engine.revisions import RevisionCache, sync_revision
from flows.engine.steps import HANDLERS
from integrations.channels.registry import CHANNEL_NAMES
from models import Account, Contact, Touch, session, table_of
from models.playbook import STEP_KINDS, STEP_MODELS, WAITING_KINDS, Step, json_schema
from playbooks import CompiledPlaybook, compile_source, step_summary
from playbooks._loader import STEP_MODELS as LOADER_STEP_MODELS

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
ACC, CON, TOUCH = table_of(Account), table_of(Contact), table_of(Touch)

#: channels no step writes to: reports post their digest there (``retain report weekly --post file``)
NOT_FOR_STEPS = {"file"}


def union_kinds() -> list[str]:
    members = get_args(get_args(Step)[0])
    return [get_args(model.model_fields["kind"].annotation)[0] for model in members]


def test_the_union_is_the_one_list_of_step_kinds() -> None:
    kinds = union_kinds()
    assert len(kinds) == len(set(kinds)), "two step models share a kind"
    assert list(STEP_KINDS) == kinds
    assert list(STEP_MODELS) == kinds
    assert LOADER_STEP_MODELS is STEP_MODELS  # the validator uses the same mapping
    assert set(WAITING_KINDS) == {"wait", "wait_for"}


def test_every_step_kind_has_one_engine_handler_for_its_model() -> None:
    assert list(HANDLERS) == list(STEP_KINDS)
    for kind, handler in HANDLERS.items():
        assert handler.model is STEP_MODELS[kind], kind


def test_every_step_model_says_what_it_does() -> None:
    missing = [kind for kind, model in STEP_MODELS.items() if "summary" not in vars(model)]
    assert missing == [], f"step models without their own summary(): {missing}"


def test_the_outline_line_of_every_step_kind() -> None:
    pb = every_kind()
    assert sorted({step.kind for step in pb.spec.steps}) == sorted(STEP_KINDS), "add a step of each kind to EVERY_KIND"
    assert {step.id: step_summary(step) for step in pb.spec.steps} == {
        "hello": "email contacts: 'Hello {{ account.name }}'",
        "ask": "NPS survey",
        "ping": "slack to the CSM: '{{ account.name }} was greeted'",
        "call": "webhook POST https://hooks.example.com/retain",
        "todo": "task for the CSM (high, due in 2 days): 'Call {{ account.name }}'",
        "note": "record outcome greeted",
        "tier": "update custom.tier = 'gold', health = 'green'",
        "big": "if account.arr >= 5000 then pause else check",
        "pause": "wait for 3 days at 09:00",
        "check": 'wait for account.health == "red" (at most 1 week, then bye)',
        "bye": "exit with outcome done",
    }


def test_channels_named_by_handlers_are_the_registered_channels() -> None:
    named = {channel for handler in HANDLERS.values() for channel in handler.channels}
    unknown = named - set(CHANNEL_NAMES)
    assert unknown == set(), f"handlers write touches to channels that are not registered: {unknown}"
    assert set(CHANNEL_NAMES) - named == NOT_FOR_STEPS


def test_the_committed_schema_knows_exactly_the_step_kinds() -> None:
    committed = json.loads((ROOT / "playbook.schema.json").read_text(encoding="utf-8"))
    for schema in (committed, json_schema()):
        kinds = [
            d["properties"]["kind"]["const"]
            for d in schema["$defs"].values()
            if "const" in d.get("properties", {}).get("kind", {})
        ]
        assert sorted(kinds) == sorted(STEP_KINDS)
        mapping = schema["properties"]["steps"]["items"]["discriminator"]["mapping"]
        assert sorted(mapping) == sorted(STEP_KINDS)


def test_the_docs_table_lists_exactly_the_step_kinds() -> None:
    text = (ROOT / "docs/playbooks.md").read_text(encoding="utf-8")
    section = text.split("## Steps", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert documented == list(STEP_KINDS)


EVERY_KIND = """
playbook: every_kind
name: Every kind of step
lifecycle: custom
audience: account.status == "active"
steps:
  - id: hello
    kind: email
    subject: "Hello {{ account.name }}"
    body: "Hi {{ contact.first_name }}"
  - id: ask
    kind: survey
    survey: nps
  - id: ping
    kind: slack
    text: "{{ account.name }} was greeted"
  - id: call
    kind: webhook
    url: "https://hooks.example.com/retain"
  - id: todo
    kind: task
    title: "Call {{ account.name }}"
    priority: high
    due_in: 2 days
    crm: true
  - id: note
    kind: outcome
    outcome: greeted
  - id: tier
    kind: update
    set: {custom.tier: gold, health: green}
  - id: big
    kind: branch
    if: account.arr >= 5000
    then: pause
    else: check
  - id: pause
    kind: wait
    for: 3 days
    at: "09:00"
  - id: check
    kind: wait_for
    condition: account.health == "red"
    timeout: 1 week
    on_timeout: bye
  - id: bye
    kind: exit
    outcome: done
"""


def every_kind() -> CompiledPlaybook:
    return compile_source(textwrap.dedent(EVERY_KIND).lstrip(), "every_kind.yaml")


def test_each_handler_writes_touches_only_to_the_channels_it_declares(sqlite_engine: Engine) -> None:
    pb = every_kind()
    kind_of = {step.id: step.kind for step in pb.spec.steps}
    with_channels = {kind for kind, handler in HANDLERS.items() if handler.channels}
    assert with_channels <= set(kind_of.values()), "add a step of each kind that writes touches to EVERY_KIND"
    with sqlite_engine.begin() as conn:
        conn.execute(
            insert(ACC),
            {
                "external_id": "acme",
                "name": "Acme",
                "status": "active",
                "csm_email": "csm@example.com",
                "custom": {},
                "created_at": T0 - timedelta(days=30),
                "updated_at": T0 - timedelta(days=30),
            },
        )
        account_id = conn.execute(select(ACC.c.id)).scalar_one()
        conn.execute(
            insert(CON),
            {
                "account_id": account_id,
                "email": "dana@acme.example",
                "name": "Dana Buyer",
                "is_primary": True,
                "unsubscribed": False,
                "unsubscribed_channels": [],
                "preferences": {},
                "created_at": T0,
            },
        )
    with session(sqlite_engine) as s:
        sync_revision(s, pb)
        assert enroll(s, pb, T0) == (1, 0)
    result = advance(sqlite_engine, RevisionCache(current={pb.id: pb}), pb.id, T0)
    assert result.errors == []
    with sqlite_engine.connect() as conn:
        written: list[Any] = list(conn.execute(select(TOUCH.c.step_id, TOUCH.c.channel)))
    assert sorted(written) == sorted(
        [("hello", "email"), ("ask", "email"), ("ping", "slack"), ("call", "webhook"), ("todo", "crm")]
    )
    for step_id, channel in written:
        assert channel in HANDLERS[kind_of[step_id]].channels, (step_id, channel)
    assert {kind_of[step_id] for step_id, _ in written} == with_channels
