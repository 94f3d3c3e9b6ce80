"""Safe YAML with positions: every value and key of a document keeps its line and column.

YAML 1.1 traps are closed: only ``true``/``false`` are booleans (not ``yes``, ``no``, ``on``,
``off``), ``1:30`` is text (not the number 90), dates stay text, duplicate keys are errors, and an
unquoted ``{{ … }}`` is reported with the advice to quote it instead of becoming a mapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from models import Problem

__all__ = ["MAX_YAML_DEPTH", "MAX_YAML_VALUES", "Document", "Position", "load_document"]

#: values (keys, scalars, lists, mappings) one file may hold, also once aliases are expanded (a
#: YAML "billion laughs" is refused, not expanded); a playbook of 200 steps holds about 2,000
MAX_YAML_VALUES = 20_000
#: how deeply lists and mappings may nest
MAX_YAML_DEPTH = 50

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based
    index: int  # 0-based character offset in the source
    end_index: int
    style: str | None = None  # the scalar's style: None (plain), "'", '"', "|", ">"


@dataclass
class Document:
    """A parsed YAML file: plain data, and where each part of it was written."""

    file: str
    source: str
    data: Any
    values: dict[Path, Position] = field(default_factory=dict)  # the node at a path
    keys: dict[Path, Position] = field(default_factory=dict)  # the key that names a path

    def position(self, path: Path, *, key: bool = False) -> Position:
        """The best place for ``path``: itself, or the closest enclosing node that was written."""
        table = self.keys if key else self.values
        for cut in range(len(path), -1, -1):
            prefix = path[:cut]
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return Position(1, 1, 0, 0)

    def line_text(self, line: int) -> str:
        lines = self.source.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def problem(self, path: Path, message: str, *, key: bool = False, step_id: str | None = None) -> Problem:
        pos = self.position(path, key=key)
        return self.problem_at(pos.line, pos.col, message, step_id=step_id)

    def problem_at(self, line: int, col: int, message: str, *, step_id: str | None = None) -> Problem:
        return Problem(message, self.file, line, col, step_id=step_id, snippet=self.line_text(line))


class _TooBig(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        self.line, self.col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.message = message


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-like scalars (see the module docstring), that stops composing as
    soon as a file holds too many values or nests too deeply (PyYAML would build them all first)."""

    _nodes = 0
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > MAX_YAML_VALUES or self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooBig(mark, _too_big(self._nodes > MAX_YAML_VALUES))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _too_big(values: bool) -> str:
    what = (
        f"more than {MAX_YAML_VALUES:,} values (YAML aliases expand where they are used)"
        if values
        else f"lists or mappings nested more than {MAX_YAML_DEPTH} deep"
    )
    return f"the file holds {what}"


_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$", "-+0123456789."),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN\0"),
):
    for _ch in _first:
        _Loader.yaml_implicit_resolvers.setdefault(_ch if _ch != "\0" else "", []).append((_tag, re.compile(_regexp)))
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


class _Fatal(Exception):
    def __init__(self, line: int, col: int, message: str) -> None:
        self.line, self.col, self.message = line, col, message


def _pos(node: yaml.Node) -> Position:
    start, end = node.start_mark, node.end_mark
    style = getattr(node, "style", None)
    return Position(start.line + 1, start.column + 1, start.index, end.index, style)


def load_document(source: str, file: str) -> tuple[Document | None, list[Problem]]:
    """Parse ``source``. Returns the document, or None and the problems that stopped parsing."""
    doc = Document(file, source, None)
    if "\t" in source:
        tabs = [
            doc.problem_at(n, line.index("\t") + 1, "tab character: indent YAML with spaces, not tabs")
            for n, line in enumerate(source.splitlines(), 1)
            if "\t" in line[: len(line) - len(line.lstrip(" \t"))] or line.lstrip().startswith("\t")
        ]
        if tabs:
            return None, tabs
    try:
        nodes = list(yaml.compose_all(source, Loader=_Loader))
    except _TooBig as exc:
        return None, [doc.problem_at(exc.line, exc.col, exc.message)]
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(doc, exc)]
    except yaml.YAMLError as exc:  # e.g. a character YAML does not accept, found by the reader
        return None, [doc.problem_at(1, 1, f"YAML: {exc}")]
    except RecursionError:
        return None, [
            doc.problem_at(1, 1, f"YAML: lists or mappings nested too deeply (the limit is {MAX_YAML_DEPTH})")
        ]
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return None, [
            doc.problem_at(
                1, 1, "the file is empty: a playbook is a mapping with 'playbook', 'name', 'audience' and 'steps'"
            )
        ]
    if len(nodes) > 1:
        second = _pos(nodes[1])
        return None, [
            doc.problem_at(second.line, second.col, "more than one YAML document: one file holds one playbook")
        ]
    root = nodes[0]
    if not isinstance(root, yaml.MappingNode):
        p = _pos(root)
        return None, [
            doc.problem_at(p.line, p.col, f"a playbook must be a mapping of keys to values, not {_kind(root)}")
        ]
    loader = _Loader("")
    problems: list[Problem] = []
    doc.values[()] = _pos(root)
    try:
        doc.data = _build(root, (), doc, loader, problems, _Count())
    except _Fatal as exc:
        return None, [doc.problem_at(exc.line, exc.col, exc.message)]
    return (None if problems else doc), problems


class _Count:
    """Values built so far: aliases are expanded as they are met, so this bounds the expansion."""

    def __init__(self) -> None:
        self.values = 0


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.ScalarNode):
        return "a single value"
    return "a mapping"


def _build(node: yaml.Node, path: Path, doc: Document, loader: _Loader, problems: list[Problem], count: _Count) -> Any:
    count.values += 1
    if count.values > MAX_YAML_VALUES or len(path) > MAX_YAML_DEPTH:
        p = _pos(node)
        raise _Fatal(p.line, p.col, _too_big(count.values > MAX_YAML_VALUES))
    doc.values[path] = _pos(node)
    if isinstance(node, yaml.MappingNode):
        if node.flow_style and node.value and isinstance(node.value[0][0], yaml.MappingNode):
            p = _pos(node)
            problems.append(
                doc.problem_at(
                    p.line, p.col, "unquoted '{{ … }}': YAML reads it as a mapping; put the whole value in quotes"
                )
            )
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kp = _pos(key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(
                    doc.problem_at(kp.line, kp.col, "YAML merge keys ('<<') are not supported in playbooks")
                )
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(doc.problem_at(kp.line, kp.col, "a key must be a plain name"))
                continue
            key = str(key_node.value)
            if key in result:
                first = doc.keys[(*path, key)]
                problems.append(doc.problem_at(kp.line, kp.col, f"duplicate key {key!r} (first at line {first.line})"))
                continue
            doc.keys[(*path, key)] = kp
            result[key] = _build(value_node, (*path, key), doc, loader, problems, count)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, loader, problems, count) for i, item in enumerate(node.value)]
    if node.tag not in _SCALAR_TAGS:
        p = _pos(node)
        problems.append(
            doc.problem_at(
                p.line, p.col, f"unsupported YAML tag {node.tag!r}: a value starting with '!' must be quoted"
            )
        )
        return None
    return loader.construct_object(node)


def _syntax_problem(doc: Document, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    text = doc.line_text(line)
    if "{{" in text and _unquoted_braces(text):
        return doc.problem_at(
            line, text.index("{{") + 1, "unquoted '{{ … }}': YAML reads it as a mapping; put the whole value in quotes"
        )
    problem = (exc.problem or "").strip()
    if "found character '\\t'" in problem:
        return doc.problem_at(line, col, "tab character: indent YAML with spaces, not tabs")
    if "could not find expected ':'" in problem or "mapping values are not allowed here" in problem:
        problem += " (check the indentation and that a ': ' follows each key; quote values that contain ': ')"
    context = f" ({exc.context.strip()})" if exc.context and exc.context_mark is not mark else ""
    return doc.problem_at(line, col, f"YAML syntax: {problem}{context}")


def _unquoted_braces(line: str) -> bool:
    _, _, value = line.partition(":")
    value = value.strip() or line.strip().lstrip("- ")
    return value.startswith("{{") or value.startswith("{ {")
