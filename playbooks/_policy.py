"""The global contact policy file (``policy.yaml``): loaded and validated with located errors."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from models import PlaybookError, Problem
from models.playbook import PolicySpec
from playbooks._loader import located_problems
from playbooks._yaml import load_document

__all__ = ["POLICY_FILE", "load_policy", "policy_problems"]

POLICY_FILE = "policy.yaml"


def load_policy(playbooks_dir: Path) -> PolicySpec:
    """The global policy of a playbooks folder (an empty policy when the file does not exist)."""
    path = playbooks_dir / POLICY_FILE
    if not path.exists():
        return PolicySpec()
    doc, problems = load_document(path.read_text(encoding="utf-8"), str(path))
    if doc is None:
        raise PlaybookError(problems)
    try:
        return PolicySpec.model_validate(doc.data)
    except ValidationError as exc:
        raise PlaybookError(located_problems(doc, exc, PolicySpec)) from exc


def policy_problems(path: Path) -> list[Problem]:
    """Validation problems of a policy file, for ``retain playbooks validate``."""
    try:
        load_policy(path.parent)
    except PlaybookError as exc:
        return exc.problems
    return []
