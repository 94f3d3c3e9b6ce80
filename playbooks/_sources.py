"""The sources file (``sources.yaml``): loaded and validated with located errors, like playbooks."""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from models import ConfigError, PlaybookError, Problem
from models.sources import SOURCE_COLUMNS, SourcesSpec, SqlSource
from playbooks._loader import validated
from playbooks._yaml import Document, load_document
from playbooks._yaml import Path as DataPath

__all__ = ["SOURCES_FILE", "load_sources", "sources_file", "sources_problems"]

SOURCES_FILE = "sources.yaml"


def sources_file(playbooks_dir: Path) -> Path | None:
    """The sources file of a playbooks folder, or None when it has none."""
    for name in (SOURCES_FILE, "sources.yml"):
        if (playbooks_dir / name).exists():
            return playbooks_dir / name
    return None


def load_sources(playbooks_dir: Path) -> SourcesSpec:
    """The sources of a playbooks folder (none when it has no ``sources.yaml``).
    :class:`PlaybookError` lists every problem, each at its file:line:col."""
    path = sources_file(playbooks_dir)
    return SourcesSpec() if path is None else load_sources_file(path)


def load_sources_file(path: Path) -> SourcesSpec:
    """Read and validate one sources file."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the sources file {path}: {exc}") from exc
    doc, problems = load_document(source, str(path))
    if doc is None:
        raise PlaybookError(problems)
    if doc.data is None:  # an empty file declares nothing
        return SourcesSpec()
    known = _prune(doc, doc.data, SourcesSpec, (), problems)
    return validated(doc, known, SourcesSpec, problems)


def sources_problems(path: Path) -> list[Problem]:
    """Validation problems of a sources file, for ``retain playbooks validate``."""
    try:
        load_sources_file(path)
    except PlaybookError as exc:
        return exc.problems
    return []


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation admits (``Schedule | None``: Schedule; ``str | UrlFrom``: UrlFrom)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is dict:
        return []
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def _unknown(doc: Document, path: DataPath, key: Any, known: list[str], what: str, problems: list[Problem]) -> None:
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = ".".join(str(p) for p in path)
    message = f"{where + ': ' if where else ''}unknown {what} {key!r}{hint}; use: {', '.join(known)}"
    problems.append(doc.problem((*path, key), message, key=True))


def _prune(doc: Document, data: Any, model: type[BaseModel], path: DataPath, problems: list[Problem]) -> Any:
    """``data`` without the keys ``model`` does not know (each one a problem at its key, with a
    guess at what was meant); a source's ``columns`` are checked against its kind's columns."""
    if not isinstance(data, dict):
        return data
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    kept: dict[str, Any] = {}
    for key, value in data.items():
        info = fields.get(key)
        if info is None:
            _unknown(doc, path, key, list(fields), "key", problems)
            continue
        if model is SourcesSpec and key == "sources" and isinstance(value, dict):
            kept[key] = {name: _prune(doc, v, SqlSource, (*path, key, name), problems) for name, v in value.items()}
            continue
        if model is SqlSource and key == "columns" and isinstance(value, dict) and data.get("kind") in SOURCE_COLUMNS:
            kind = str(data["kind"])
            columns = list(SOURCE_COLUMNS[kind])
            kept[key] = {}
            for column, mapped in value.items():
                if column in columns:
                    kept[key][column] = mapped
                else:
                    _unknown(doc, (*path, key), column, columns, f"column of {kind}", problems)
            continue
        inner = _models_in(info.annotation)
        kept[key] = _prune(doc, value, inner[0], (*path, key), problems) if len(inner) == 1 else value
    return kept
