"""``integrations.sources`` imports a module of its own on the first use of one of its names: each
name it lists is that module's, and the imports mypy reads list the same names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from integrations import sources


def test_each_name_is_the_one_of_its_module() -> None:
    listed = [name for names in sources._EXPORTS.values() for name in names.split()]
    assert sorted(listed) == sorted(sources.__all__)
    for module, names in sources._EXPORTS.items():
        home = importlib.import_module(f"integrations.sources.{module}")
        for name in names.split():
            assert getattr(sources, name) is getattr(home, name), name


def test_the_imports_for_type_checking_list_the_same_names() -> None:
    tree = ast.parse(Path(sources.__file__).read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
    )
    imported = {
        node.module.removeprefix("integrations.sources."): [alias.name for alias in node.names]
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported == {module: names.split() for module, names in sources._EXPORTS.items()}


def test_another_name_is_not_there() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'read_cvs'"):
        sources.read_cvs  # noqa: B018
    with pytest.raises(ImportError):
        from integrations.sources import read_cvs  # noqa: F401
