"""Retain's exception tree.

Every error a person can act on derives from :class:`RetainError`; the CLI prints its message and
exits 1, without a traceback. Third-party errors are translated where they enter (``raise ... from``)::

    RetainError
    +-- ConfigError            settings, database URL, missing files
    +-- NotFoundError          an unknown account, contact, playbook
    +-- PlaybookError          a playbook that does not validate (carries every Problem at once)
    +-- ExpressionError        an expression that does not parse or type-check (one Problem)
    +-- TemplateError          a template that does not compile or render
    +-- DataImportError        a CSV file with bad rows (carries every RowProblem at once)
    +-- IntegrationError       a channel or outside system that failed
        +-- RetryableError     429, 5xx, timeouts: worth another attempt
            +-- MaybeDeliveredError  the request left, and its fate is unknown (a timeout
                                     waiting for the answer, a connection dropped mid-reply)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "DataImportError",
    "ExpressionError",
    "IntegrationError",
    "MaybeDeliveredError",
    "NotFoundError",
    "PlaybookError",
    "Problem",
    "RetainError",
    "RetryableError",
    "RowProblem",
    "TemplateError",
]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a playbook, at a place a person can go to."""

    message: str
    file: str = "<playbook>"
    line: int = 0  # 1-based; 0 when the place is the whole file
    col: int = 0  # 1-based
    step_id: str | None = None
    snippet: str | None = None  # the source line, when known

    def format(self, *, with_snippet: bool = False) -> str:
        where = f"{self.file}:{self.line}:{self.col}" if self.line else f"{self.file}:1:1"
        text = f"{where}: {self.message}"
        if with_snippet and self.snippet is not None and self.line:
            gutter = f"{self.line:>5} | "
            caret = " " * (len(gutter) - 2) + "| " + " " * max(self.col - 1, 0) + "^"
            text += f"\n{gutter}{self.snippet}\n{caret}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line or 1,
            "col": self.col or 1,
            "step": self.step_id,
            "message": self.message,
        }


@dataclass(frozen=True)
class RowProblem:
    """One bad row of an imported file. ``row`` is the line number in the file (header = 1)."""

    row: int
    message: str
    column: str | None = None

    def format(self, file: str) -> str:
        where = f"{file}: row {self.row}"
        if self.column:
            where += f", column {self.column!r}"
        return f"{where}: {self.message}"


_E = TypeVar("_E", bound="RetainError")


def _restore(cls: type[_E], args: tuple[Any, ...], state: dict[str, Any]) -> _E:
    """Rebuild a pickled error without calling its ``__init__`` (whose parameters differ from
    ``args``, the message): the message goes back into ``args``, the attributes into ``__dict__``."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class RetainError(Exception):
    """Root of every error Retain reports to a person.

    Errors survive a pickle round trip with their message and attributes (``problems``,
    ``status_code``, ``retry_after``...): Prefect moves exceptions between processes, and the
    default pickling calls ``__init__`` again with the message alone, which most subclasses refuse.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigError(RetainError):
    """A setting, URL or file Retain was pointed at is not usable."""


class NotFoundError(RetainError):
    """Something named by the user does not exist (an account, a contact, a playbook)."""


class PlaybookError(RetainError):
    """A playbook does not validate. ``problems`` holds every error found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.col, p.message))
        super().__init__("\n".join(p.format() for p in self.problems))


class ExpressionError(RetainError):
    """An expression that does not parse or type-check.

    ``offset`` is the 0-based character offset inside the expression text, so the caller can
    turn it into a file position.
    """

    def __init__(self, message: str, offset: int = 0) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message)


class TemplateError(RetainError):
    """A template that does not compile, refers to unknown variables, or failed to render."""

    def __init__(self, message: str, *, lineno: int | None = None, name: str | None = None) -> None:
        self.message = message
        self.lineno = lineno
        self.name = name
        super().__init__(message)


class DataImportError(RetainError):
    """An imported file has bad rows; nothing of it was written."""

    def __init__(self, file: str, problems: list[RowProblem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.format(file) for p in problems))


class IntegrationError(RetainError):
    """A channel or outside system failed in a way that another attempt will not fix."""

    def __init__(self, message: str, *, status_code: int | None = None, response: str | None = None) -> None:
        self.status_code = status_code
        self.response = response
        super().__init__(message)


class RetryableError(IntegrationError):
    """A transient failure (429, 5xx, timeout, connection reset). ``retry_after`` in seconds."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, response=response)
        self.retry_after = retry_after


class MaybeDeliveredError(RetryableError):
    """The message left but no answer came back: it may have been delivered.

    The outbox tries again only through a channel whose receiver drops a repeat of the same key;
    otherwise the touch is marked ``unknown`` rather than risk sending it twice."""
