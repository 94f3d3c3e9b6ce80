"""From a parsed YAML document to a typed :class:`~models.playbook.PlaybookSpec`, or to every
problem in it, each at its place."""

from __future__ import annotations

import difflib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from models import PlaybookError, Problem
from models.playbook import STEP_KINDS, STEP_MODELS, Entry, Goal, PlaybookSpec, PolicySpec, Schedule
from playbooks._yaml import Document, Path

__all__ = ["STEP_MODELS", "located_problems", "model_at", "step_label", "validate_document", "validated", "value_at"]

_SECTIONS: dict[str, type[BaseModel]] = {"schedule": Schedule, "entry": Entry, "goal": Goal, "policy": PolicySpec}


def validate_document(doc: Document) -> tuple[PlaybookSpec | None, list[Problem]]:
    """Validate the document's data against the playbook model; every error is located."""
    try:
        return PlaybookSpec.model_validate(doc.data), []
    except ValidationError as exc:
        return None, located_problems(doc, exc)


_M = TypeVar("_M", bound=BaseModel)


def validated(doc: Document, known: Any, model: type[_M], problems: list[Problem]) -> _M:
    """``known`` (a document's data with its unknown keys pruned into ``problems``) as ``model``: a
    :class:`PlaybookError` lists every problem, pruned and invalid alike, each at its place."""
    try:
        spec = model.model_validate(known)
    except ValidationError as exc:
        problems += located_problems(doc, exc, model)
        raise PlaybookError(problems) from exc
    if problems:
        raise PlaybookError(problems)
    return spec


def model_at(data: Any, path: Path, root: type[BaseModel] = PlaybookSpec) -> type[BaseModel] | None:
    """The model that describes the mapping at ``path`` (a top-level section or a step)."""
    if path == ():
        return root
    if root is not PlaybookSpec:
        return None
    if len(path) == 1 and isinstance(path[0], str):
        return _SECTIONS.get(path[0])
    if len(path) == 2 and path[0] == "steps":
        step = value_at(data, path)
        if isinstance(step, dict):
            return STEP_MODELS.get(step.get("kind"))  # type: ignore[arg-type]
    return None


def step_label(data: Any, index: int) -> tuple[str, str | None]:
    """How to name step ``index`` in a message: ``step 'first_note'`` or ``steps[3]``."""
    step = value_at(data, ("steps", index))
    step_id = step.get("id") if isinstance(step, dict) else None
    if isinstance(step_id, str) and step_id:
        return f"step {step_id!r}", step_id
    return f"steps[{index}]", None


def value_at(data: Any, path: Path) -> Any:
    """The value at ``path`` in the YAML data, or None when the path is not there."""
    for part in path:
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        ):
            data = data[part]  # type: ignore[index]  # a dict's key, or an int within a list
        else:
            return None
    return data


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path, Any]:
    """Turn pydantic's ``loc`` into a path through the YAML data (dropping union tags)."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if part < len(node) else None
        elif isinstance(node, dict):
            if part in node:
                path.append(part)
                node = node[part]
            elif part in STEP_KINDS and node.get("kind") == part:
                continue  # the discriminated union's tag
            else:
                path.append(part)
                return tuple(path), loc[i + 1 :]
        else:
            path.append(part)
    return tuple(path), ()


_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "text", int: "a number", float: "a number", bool: "true/false"}


def located_problems(doc: Document, exc: ValidationError, root: type[BaseModel] = PlaybookSpec) -> list[Problem]:
    """A validation error of a document against ``root``, as located problems."""
    return _dedupe([_problem(doc, err, root) for err in exc.errors(include_url=False)])


def _problem(doc: Document, err: Any, root: type[BaseModel] = PlaybookSpec) -> Problem:
    path, _rest = _data_path(doc.data, err["loc"])
    kind = err["type"]
    parent, last = path[:-1], (path[-1] if path else None)
    label, step_id = _where(doc.data, path)

    if kind == "missing":
        return doc.problem(
            parent, _join(_where(doc.data, parent)[0], f"missing required key {last!r}"), step_id=step_id
        )
    if kind == "extra_forbidden":
        model = model_at(doc.data, parent, root)
        hint = _did_you_mean(str(last), _keys_of(model)) if model else ""
        return doc.problem(
            path, _join(_where(doc.data, parent)[0], f"unknown key {last!r}{hint}"), key=True, step_id=step_id
        )
    if kind == "union_tag_invalid":
        tag = err["ctx"]["tag"]
        hint = _did_you_mean(str(tag), STEP_KINDS)
        return doc.problem(
            (*path, "kind"),
            _join(label, f"unknown step kind {tag!r}{hint}; kinds are: {', '.join(STEP_KINDS)}"),
            step_id=step_id,
        )
    if kind == "union_tag_not_found":
        return doc.problem(
            path, _join(label, f"missing required key 'kind' (one of: {', '.join(STEP_KINDS)})"), step_id=step_id
        )
    if kind == "too_short" and path == ("steps",):
        return doc.problem(path, "steps: a playbook needs at least one step", key=True)
    if kind == "literal_error":
        message = f"{err['input']!r} is not one of: {err['ctx']['expected']}"
    elif kind in ("value_error", "assertion_error"):
        message = str(err["ctx"]["error"]) if "ctx" in err else err["msg"].removeprefix("Value error, ")
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        expected = {
            "string": "text",
            "int": "a whole number",
            "float": "a number",
            "bool": "true or false",
            "dict": "a mapping",
            "list": "a list",
            "model": "a mapping",
            "model_attributes": "a mapping",
        }.get(kind.removesuffix("_type").removesuffix("_parsing"), kind)
        got = _TYPE_NAMES.get(type(err["input"]), "nothing" if err["input"] is None else type(err["input"]).__name__)
        message = f"expected {expected}, got {got}"
    else:
        message = err["msg"]
    return doc.problem(path, _join(label, message), step_id=step_id)


def _where(data: Any, path: Path) -> tuple[str, str | None]:
    """A short name for the place: ``step 'x'``, ``step 'x': subject``, ``entry.holdout``."""
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
        label, step_id = step_label(data, path[1])
        rest = ".".join(str(p) for p in path[2:])
        return (f"{label}: {rest}" if rest else label), step_id
    return ".".join(str(p) for p in path), None


def _join(label: str, message: str) -> str:
    return f"{label}: {message}" if label else message


def _keys_of(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for p in problems:
        if (p.line, p.col, p.message) not in seen:
            seen.add((p.line, p.col, p.message))
            out.append(p)
    return out
