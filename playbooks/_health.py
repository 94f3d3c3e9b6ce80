"""The health model file (``health.yaml``): loaded and validated with located errors."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from models import BUNDLED_PLAYBOOKS_DIR, ConfigError, PlaybookError, Problem
from models.health import MEASURES, HealthSpec
from playbooks._loader import validated
from playbooks._yaml import Document, load_document
from playbooks._yaml import Path as DataPath

__all__ = ["HEALTH_FILE", "health_file", "health_problems", "load_health"]

HEALTH_FILE = "health.yaml"


def health_file(playbooks_dir: Path) -> Path:
    """The health definition of a playbooks folder; the bundled one when the folder has none."""
    for name in (HEALTH_FILE, "health.yml"):
        if (playbooks_dir / name).exists():
            return playbooks_dir / name
    return BUNDLED_PLAYBOOKS_DIR / HEALTH_FILE


def load_health(path: Path) -> HealthSpec:
    """Read and validate a health definition. :class:`PlaybookError` lists every problem, each at
    its file:line:col."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the health definition {path}: {exc}") from exc
    doc, problems = load_document(source, str(path))
    if doc is None:
        raise PlaybookError(problems)
    known = _prune(doc, doc.data, HealthSpec, (), problems)
    return validated(doc, known, HealthSpec, problems)


def health_problems(path: Path) -> list[Problem]:
    """Validation problems of a health definition, for ``retain playbooks validate``."""
    try:
        load_health(path)
    except PlaybookError as exc:
        return exc.problems
    return []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _prune(doc: Document, data: Any, model: type[BaseModel], path: DataPath, problems: list[Problem]) -> Any:
    """``data`` without the keys ``model`` does not know; each one a problem at its key, with a
    guess at what was meant (pydantic's own message cannot guess)."""
    if not isinstance(data, dict):
        return data
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    kept: dict[str, Any] = {}
    for key, value in data.items():
        info = fields.get(key)
        if info is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if path == ("measures",):
                message = f"measures: unknown measure {key!r}{hint}; measures are: {', '.join(MEASURES)}"
            else:
                where = ".".join(str(p) for p in path)
                message = f"{where + ': ' if where else ''}unknown key {key!r}{hint}; use: {', '.join(fields)}"
            problems.append(doc.problem((*path, key), message, key=True))
            continue
        inner = _model_in(info.annotation)
        kept[key] = _prune(doc, value, inner, (*path, key), problems) if inner else value
    return kept
