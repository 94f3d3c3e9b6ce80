"""What every command shares about output: the ``--format`` choices, and writing for machines.

Machine output (JSON, CSV, Markdown, YAML, Mermaid, the JSON Schema) is written as it is, never
through Rich: Rich wraps lines at the terminal's width, or at 80 columns when stdout is a pipe or
a file, which breaks JSON and CSV for whoever reads them. People's output goes through Rich.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

if TYPE_CHECKING:
    from models import DataImportError

__all__ = ["Format", "MarkdownOrJson", "TableJsonOrCsv", "TableOrJson", "TextOrJson", "echo_json", "echo_text"]


class Format(StrEnum):
    """Every output format; each command offers the ones that fit it (see the aliases below)."""

    table = "table"
    text = "text"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def _option(help: str) -> Any:
    return typer.Option("--format", case_sensitive=False, help=help)


TableOrJson = Annotated[Literal[Format.table, Format.json], _option("table for people, json for scripts.")]
TextOrJson = Annotated[Literal[Format.text, Format.json], _option("text for people, json for editors and scripts.")]
TableJsonOrCsv = Annotated[
    Literal[Format.table, Format.json, Format.csv],
    _option("table for people, json for scripts, csv (the first table) for sheets."),
]
MarkdownOrJson = Annotated[
    Literal[Format.markdown, Format.json], _option("markdown for people, json (every figure) for scripts.")
]


def echo_text(text: str) -> None:
    """Write machine output as it is: never wrapped, never styled."""
    typer.echo(text, nl=not text.endswith("\n"))


def echo_json(document: Any) -> None:
    """A JSON document, indented, as it is (``default=str``: dates and decimals as text)."""
    echo_text(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def refuse_import(exc: DataImportError) -> NoReturn:
    """An all-or-nothing import refused: every problem at its row, then what was (not) written; exit 1."""
    from cli._app import err_console

    for problem in exc.problems:
        err_console.print(problem.format(exc.file), markup=False, soft_wrap=True)
    bad = len({p.row for p in exc.problems})
    err_console.print(
        f"error: nothing was written from {exc.file} ({bad} bad row{'s' * (bad != 1)})",
        style="red",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(1) from None
