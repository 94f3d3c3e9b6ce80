"""Files of records, CSV or JSON Lines, read into the one shape the importers validate.

A ``.jsonl`` / ``.ndjson`` file holds one JSON object per line; its keys are matched like CSV
headers (``messageId``, ``message_id`` and ``Message ID`` are one column), nested objects and
lists are kept as JSON text (``properties``, ``traits``, ``context``), other values as text, so
every importer validates a JSON line exactly as it validates a CSV row. Row numbers are lines.
Anything else is read as CSV by :func:`read_csv`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from integrations.sources._csv import (
    MAX_IMPORT_ROWS,
    MAX_ROW_CHARS,
    CsvFile,
    CsvRecord,
    column_key,
    long_row,
    read_bounded,
    read_csv,
    too_many_rows,
)
from models import DataImportError, RowProblem

__all__ = ["JSONL_SUFFIXES", "object_records", "read_records"]

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _key(name: str) -> str:
    return column_key(_CAMEL.sub(r"_\1", name))


def _cell(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def _cells(data: dict[str, Any], headers: dict[str, str]) -> dict[str, str]:
    """One JSON object's cells by column key (the headers seen are noted in ``headers``)."""
    cells: dict[str, str] = {}
    for written, value in data.items():
        key = _key(str(written))
        headers.setdefault(key, str(written))
        cell = _cell(value)
        if key and cell is not None:
            cells[key] = cell
    return cells


def object_records(name: str, objects: Sequence[Any]) -> CsvFile:
    """The records of JSON objects already parsed (the calls of a request), numbered from 1 as a
    file's lines are, read as :func:`read_records` reads a JSON Lines file."""
    records: list[CsvRecord] = []
    problems: list[RowProblem] = []
    headers: dict[str, str] = {}
    for line, data in enumerate(objects, start=1):
        if not isinstance(data, dict):
            problems.append(RowProblem(line, f"not a JSON object but a {type(data).__name__}"))
            continue
        records.append(CsvRecord(line, _cells(data, headers)))
    return CsvFile(name, headers, records, problems)


def read_records(path: str | Path, kind: str, required: Sequence[str]) -> CsvFile:
    """The records of a CSV or JSON Lines file (by its suffix), with the problems of its shape. A
    JSON line without a required key is refused by the row model, naming the key."""
    if Path(path).suffix.lower() not in JSONL_SUFFIXES:
        return read_csv(path, kind, required)
    name = str(path)
    try:
        text = read_bounded(path, kind).decode("utf-8-sig")  # the size limit first: docs/security.md
    except UnicodeDecodeError as exc:
        raise DataImportError(name, [RowProblem(1, "the file is not UTF-8 text; save it as UTF-8")]) from exc
    records: list[CsvRecord] = []
    problems: list[RowProblem] = []
    headers: dict[str, str] = {}
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(records) + len(problems) >= MAX_IMPORT_ROWS:
            raise too_many_rows(name, line)
        if len(raw) > MAX_ROW_CHARS:
            problems.append(RowProblem(line, long_row(len(raw))))
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(RowProblem(line, f"not a JSON object: {exc.msg} at character {exc.colno}"))
            continue
        except RecursionError:
            problems.append(RowProblem(line, "not a JSON object: nested too deeply"))
            continue
        if not isinstance(data, dict):
            problems.append(RowProblem(line, f"not a JSON object but a {type(data).__name__}"))
            continue
        records.append(CsvRecord(line, _cells(data, headers)))
    if not records and not problems:
        raise DataImportError(name, [RowProblem(1, "the file holds no records")])
    logger.info("%s: %d records read", name, len(records))
    return CsvFile(name, headers, records, problems)
