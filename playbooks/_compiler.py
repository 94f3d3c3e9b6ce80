"""The compiler: a playbook file -> a checked, executable :class:`CompiledPlaybook`.

Validation reports every problem at once, each at ``file:line:col``: YAML, structure (pydantic),
expressions (parsed and type-checked against the data model), templates (sandboxed Jinja, unknown
variables and fields), and rules across steps (duplicate ids, unknown targets, loops that never
wait). The revision is a hash of the playbook's source and of the templates it uses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from models import ExpressionError, NotFoundError, PlaybookError, Problem
from models.playbook import EventTrigger, ExprField, PlaybookSpec, TemplateField, step_problems
from playbooks._expr import AUDIENCE, CONTACTS, DECLARED_TYPES, ENROLLMENT, EVENT, Expr, Scope, compile_expression
from playbooks._loader import STEP_MODELS, model_at, step_label, validate_document, value_at
from playbooks._templates import MAX_TEMPLATE_CHARS, check_template, variables_for
from playbooks._yaml import Document, Position, load_document
from playbooks._yaml import Path as DataPath

__all__ = [
    "MAX_PLAYBOOK_CHARS",
    "MAX_STEPS",
    "CompiledPlaybook",
    "compile_file",
    "compile_source",
    "load_playbook",
    "load_playbooks",
    "playbook_files",
    "validate_paths",
]

#: a playbook file's size: the biggest shipped playbook is about 6,000 characters
MAX_PLAYBOOK_CHARS = 500_000
#: steps in one playbook
MAX_STEPS = 200

_SCOPES = {"audience": AUDIENCE, "contacts": CONTACTS, "enrollment": ENROLLMENT, "event": EVENT}
TEMPLATES_FOLDER = "templates"


@dataclass(frozen=True)
class CompiledPlaybook:
    """A validated playbook, ready to run: its typed spec, compiled expressions and templates."""

    spec: PlaybookSpec
    revision: str
    source: str
    file: str
    templates: dict[str, str] = field(default_factory=dict)  # template path -> source
    expressions: dict[DataPath, Expr] = field(default_factory=dict)  # YAML path -> compiled expression

    @property
    def id(self) -> str:
        return self.spec.playbook

    def expression(self, *path: str | int) -> Expr:
        return self.expressions[tuple(path)]

    def step_expression(self, step_id: str, key: str) -> Expr:
        for i, step in enumerate(self.spec.steps):
            if step.id == step_id:
                return self.expressions[("steps", i, key)]
        raise KeyError((step_id, key))

    def step_index(self, step_id: str) -> int:
        for i, step in enumerate(self.spec.steps):
            if step.id == step_id:
                return i
        raise KeyError(step_id)


def compile_source(
    source: str,
    file: str = "<playbook>",
    *,
    templates_dir: Path | None = None,
    templates: dict[str, str] | None = None,
) -> CompiledPlaybook:
    """Compile one playbook's YAML text. Template files come from ``templates`` (as stored with a
    revision) or are read from ``templates_dir``. Raises :class:`PlaybookError` with every problem."""
    if len(source) > MAX_PLAYBOOK_CHARS:
        raise PlaybookError([_too_long(file, len(source))])
    doc, problems = load_document(source, file)
    if doc is None:
        raise PlaybookError(problems)
    steps = doc.data.get("steps") if isinstance(doc.data, dict) else None
    if isinstance(steps, list) and len(steps) > MAX_STEPS:
        # checked first: every later check costs time per step
        raise PlaybookError(
            [doc.problem(("steps",), f"steps: {len(steps):,} steps (the limit is {MAX_STEPS}): split the playbook")]
        )
    spec, problems = validate_document(doc)
    expressions: dict[DataPath, Expr] = {}
    used: dict[str, str] = {}
    problems += _check_fields(doc, expressions)
    problems += _check_template_files(doc, templates_dir, templates, used)
    if spec is not None:
        for path, message in step_problems(spec):
            _, step_id = step_label(doc.data, path[1]) if len(path) > 1 and isinstance(path[1], int) else ("", None)
            problems.append(doc.problem(path, message, step_id=step_id))
    if problems or spec is None:
        raise PlaybookError(problems)
    return CompiledPlaybook(spec, _revision(source, used), source, file, used, expressions)


def compile_file(path: Path) -> CompiledPlaybook:
    """Compile a playbook file; its templates are read from ``templates/`` beside it."""
    try:
        source = _read_bounded(path, MAX_PLAYBOOK_CHARS)
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError([Problem(f"cannot read the playbook: {exc}", str(path))]) from exc
    if len(source) > MAX_PLAYBOOK_CHARS:
        raise PlaybookError([_too_long(str(path), None)])
    return compile_source(source, str(path), templates_dir=path.parent / TEMPLATES_FOLDER)


def _read_bounded(path: Path, limit: int) -> str:
    """At most ``limit + 1`` characters: enough to know a file is too long without holding it."""
    with path.open(encoding="utf-8") as f:
        return f.read(limit + 1)


def _too_long(file: str, size: int | None) -> Problem:
    if size is None:  # read only up to the limit
        return Problem(f"the playbook file is longer than {MAX_PLAYBOOK_CHARS:,} characters (the limit)", file, 1, 1)
    return Problem(
        f"the playbook file is {size:,} characters (the limit is {MAX_PLAYBOOK_CHARS:,} characters)", file, 1, 1
    )


def playbook_files(folder: Path) -> list[Path]:
    """The playbook files of a folder (``*.yaml``/``*.yml``; policy, health and sources.yaml are not playbooks)."""
    skip = {"policy.yaml", "policy.yml", "health.yaml", "health.yml", "sources.yaml", "sources.yml"}
    return sorted(p for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if p.name not in skip)


def validate_paths(paths: Iterable[Path]) -> tuple[list[CompiledPlaybook], list[Problem]]:
    """Compile every file (folders: their playbooks); collect every problem of every file.

    Two files declaring the same playbook id is a problem too."""
    compiled: list[CompiledPlaybook] = []
    problems: list[Problem] = []
    for path in _expand(paths):
        try:
            compiled.append(compile_file(path))
        except PlaybookError as exc:
            problems += exc.problems
    owners: dict[str, CompiledPlaybook] = {}
    for pb in compiled:
        if pb.id in owners:
            problems.append(Problem(f"playbook id {pb.id!r} is also used by {owners[pb.id].file}", pb.file, 1, 1))
        owners.setdefault(pb.id, pb)
    return compiled, problems


def load_playbooks(folder: Path) -> dict[str, CompiledPlaybook]:
    """Every playbook of a folder, by id. Raises :class:`PlaybookError` if any does not validate."""
    compiled, problems = validate_paths([folder])
    if problems:
        raise PlaybookError(problems)
    return {pb.id: pb for pb in compiled}


def load_playbook(folder: Path, name: str) -> CompiledPlaybook:
    """Playbook ``name`` (its id or file name) of ``folder``, compiling only the files that may
    hold it: the others are only searched for their ``playbook:`` line, so a broken (or hostile)
    sibling can neither stop nor slow this one. Raises :class:`PlaybookError` with the located
    problems of its own file, :class:`NotFoundError` when no file holds it."""
    declared = {path: _declared_id(path) for path in playbook_files(folder)}
    candidates = [path for path, pid in declared.items() if name in (path.stem, pid)]
    compiled: list[CompiledPlaybook] = []
    problems: list[Problem] = []
    for path in candidates:
        try:
            compiled.append(compile_file(path))
        except PlaybookError as exc:
            problems += exc.problems
    by_id = [pb for pb in compiled if pb.id == name]
    if len(by_id) > 1:
        raise PlaybookError(
            [Problem(f"playbook id {name!r} is also used by {by_id[0].file}", pb.file, 1, 1) for pb in by_id[1:]]
        )
    found = by_id or [pb for pb in compiled if Path(pb.file).stem == name]
    if found:
        return found[0]
    if problems:
        raise PlaybookError(problems)
    known = ", ".join(sorted({pid for pid in declared.values() if pid})) or "none"
    raise NotFoundError(f"no playbook {name!r} in {folder} (playbooks: {known})")


_DECLARED_ID = re.compile(r"""^playbook:[ \t]*(["']?)([^"'\s#]+)\1[ \t]*(?:#.*)?$""", re.MULTILINE)


def _declared_id(path: Path) -> str | None:
    """The id a file declares on its top-level ``playbook:`` line, read as text (not parsed)."""
    try:
        found = _DECLARED_ID.search(_read_bounded(path, MAX_PLAYBOOK_CHARS))
    except (OSError, UnicodeDecodeError):
        return None
    return found.group(2) if found else None


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from playbook_files(path)
        else:
            yield path


# --- expressions and inline templates, found through the models' field markers -----------------


def _marked_fields(model: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    for name, info in model.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, ExprField | TemplateField):
                yield info.alias or name, marker
        # Optional[Annotated[...]] keeps the marker one level down
        for arg in getattr(info.annotation, "__args__", ()):
            for marker in getattr(arg, "__metadata__", ()):
                if isinstance(marker, ExprField | TemplateField):
                    yield info.alias or name, marker


def _check_fields(doc: Document, expressions: dict[DataPath, Expr]) -> list[Problem]:
    """Check every expression and inline template where it is written, even if other parts of the
    file are broken, so that one run shows everything."""
    data = doc.data if isinstance(doc.data, dict) else {}
    places: list[DataPath] = [(), *[(k,) for k in ("schedule", "entry", "goal", "policy")]]
    steps = data.get("steps")
    if isinstance(steps, list):
        places += [("steps", i) for i in range(len(steps))]
    # the event conditions, one level down: entry.on_event and a wait_for's event
    events: list[DataPath] = [("entry", "on_event")]
    if isinstance(steps, list):
        events += [("steps", i, "event") for i in range(len(steps))]
    places += events
    problems: list[Problem] = []
    for place in places:
        model = EventTrigger if place in events else model_at(data, place)
        mapping = value_at(data, place)
        if model is None or not isinstance(mapping, dict):
            continue
        label, step_id = (
            step_label(data, cast(int, place[1]))
            if place and place[0] == "steps"
            else (".".join(map(str, place)), None)
        )
        for key, marker in _marked_fields(model):
            if key not in mapping:
                continue
            path = (*place, key)
            where = f"{label}: {key}" if label else key
            if isinstance(marker, ExprField):
                value = mapping[key]
                if isinstance(value, str):
                    problems += _check_expression(doc, path, value, marker, where, step_id, expressions)
            else:
                allowed = variables_for(mapping.get("kind") if place and place[0] == "steps" else None)
                problems += _check_inline_templates(doc, path, mapping[key], where, step_id, allowed)
    return problems


def _check_expression(
    doc: Document,
    path: DataPath,
    text: str,
    marker: ExprField,
    where: str,
    step_id: str | None,
    out: dict[DataPath, Expr],
) -> list[Problem]:
    try:
        out[path] = compile_expression(text, _scope(doc, path, marker), expect=marker.expect)
    except ExpressionError as exc:
        line, col = _text_position(doc, doc.position(path), text, exc.offset)
        return [doc.problem_at(line, col, f"{where}: {exc.message}", step_id=step_id)]
    return []


def _declarations(value: Any) -> dict[str, str]:
    """Declared fields (name -> type) as written; wrong ones are the model's to report."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str) and v in DECLARED_TYPES}


def _scope(doc: Document, path: DataPath, marker: ExprField) -> Scope:
    """The scope of an expression, with the fields the playbook declares (custom fields, and the
    properties of the event an event condition reads)."""
    data = doc.data if isinstance(doc.data, dict) else {}
    scope = _SCOPES[marker.scope].with_declared("custom", _declarations(data.get("custom_fields")))
    if marker.scope == "event":
        scope = scope.with_declared("properties", _declarations(value_at(data, (*path[:-1], "properties"))))
    return scope


def _check_inline_templates(
    doc: Document, path: DataPath, value: Any, where: str, step_id: str | None, allowed: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(value, str):
        pos = doc.position(path)
        for lineno, message in check_template(value, allowed=allowed):
            line = pos.line + (lineno - 1 if pos.style in ("|", ">") or "\n" in value else 0)
            if pos.style in ("|", ">"):
                line += 1  # block scalars start on the line after the indicator
            text = doc.line_text(line)
            col = pos.col if line == pos.line else len(text) - len(text.lstrip()) + 1
            problems.append(doc.problem_at(line, col, f"{where}: {message}", step_id=step_id))
    elif isinstance(value, dict):
        for k, v in value.items():
            problems += _check_inline_templates(doc, (*path, k), v, f"{where}.{k}", step_id, allowed)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problems += _check_inline_templates(doc, (*path, i), v, f"{where}[{i}]", step_id, allowed)
    return problems


def _check_template_files(
    doc: Document, templates_dir: Path | None, stored: dict[str, str] | None, used: dict[str, str]
) -> list[Problem]:
    """Email steps may name a template file; it must exist and compile."""
    data = doc.data if isinstance(doc.data, dict) else {}
    problems: list[Problem] = []
    for i, step in enumerate(data.get("steps") or []):
        if (
            not isinstance(step, dict)
            or STEP_MODELS.get(step.get("kind")) is None  # type: ignore[arg-type]
            or not isinstance(step.get("template"), str)
        ):
            continue
        name = step["template"]
        label, step_id = step_label(data, i)
        path = ("steps", i, "template")
        source = _read_template(name, templates_dir, stored)
        if source is None:
            where = templates_dir / name if templates_dir else name
            problems.append(doc.problem(path, f"{label}: template: no template file {str(where)!r}", step_id=step_id))
            continue
        used[name] = source
        shown = str(templates_dir / name) if templates_dir else name
        for lineno, message in check_template(source, allowed=variables_for(step.get("kind"))):
            problems.append(
                Problem(f"{label}: {message}", shown, lineno, 1, step_id=step_id, snippet=_line(source, lineno))
            )
    return problems


def _read_template(name: str, templates_dir: Path | None, stored: dict[str, str] | None) -> str | None:
    if stored is not None and name in stored:
        return stored[name]
    if templates_dir is None or ".." in Path(name).parts or Path(name).is_absolute():
        return None
    try:
        # one character past the limit is enough for check_template to refuse it, by name
        return _read_bounded(templates_dir / name, MAX_TEMPLATE_CHARS)
    except (OSError, UnicodeDecodeError):
        return None


def _line(source: str, lineno: int) -> str:
    lines = source.splitlines()
    return lines[lineno - 1] if 0 < lineno <= len(lines) else ""


def _text_position(doc: Document, pos: Position, text: str, offset: int) -> tuple[int, int]:
    """Where character ``offset`` of a scalar's value stands in the file.

    The value's non-blank characters appear in the source in the same order, whatever the
    scalar's style (plain, quoted, folded, literal), so they are matched one by one."""
    segment = doc.source[pos.index : pos.end_index]
    cursor = 1 if pos.style in ("'", '"') else 0
    if pos.style in ("|", ">"):
        cursor = segment.find("\n") + 1
    offset = max(0, min(offset, len(text)))
    target = None
    for k, ch in enumerate(text):
        if ch.isspace():
            continue
        found = segment.find(ch, cursor)
        if found < 0:
            break
        if k >= offset:
            target = found
            break
        cursor = found + 1
    index = pos.index + (target if target is not None else cursor)
    line = doc.source.count("\n", 0, index) + 1
    col = index - (doc.source.rfind("\n", 0, index) + 1) + 1
    return line, col


def _revision(source: str, templates: dict[str, str]) -> str:
    digest = hashlib.sha256(source.encode())
    for name in sorted(templates):
        digest.update(b"\0" + name.encode() + b"\0" + templates[name].encode())
    return digest.hexdigest()[:12]
