"""User mistakes in Prefect runs: a located message, never a traceback.

Prefect logs the traceback of every exception a task or flow raises. A user's mistake (a
:class:`RetainError`: a playbook that does not compile, a database without Retain's schema, a bad
``as_of``) is not a bug: :func:`plainly` ends the run Failed with the message instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from prefect.exceptions import FailedRun
from prefect.states import Failed, State

from models import RetainError

__all__ = ["check", "plainly"]

P = ParamSpec("P")
R = TypeVar("R")


def plainly(fn: Callable[P, R]) -> Callable[P, R]:
    """Under ``@task`` or ``@flow``: a user's mistake (a :class:`RetainError`, or a task that failed
    for one) ends the run Failed with the message, where a raised one would make Prefect log a
    traceback. Anything else is a bug and is raised as usual."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (RetainError, FailedRun) as exc:
            return cast(R, Failed(message=str(exc)))

    return run


def check(value: R) -> R:
    """A task's result; a task that failed :func:`plainly` fails its flow with the same message."""
    if isinstance(value, State):
        raise FailedRun(value.message or "a task failed")
    return value


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a task that returned a Failed state "with exc_info" while no exception is being
    handled: the log would end in a stray ``NoneType: None``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is not None and record.exc_info[0] is None:
            record.exc_info = None
        return True


logging.getLogger("prefect.task_runs").addFilter(_NoEmptyTraceback())
