"""Retain's command line: one Typer app, one module per command group."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

import typer
from rich.markup import escape
from typer._click import exceptions as typer_click  # Typer vendors its own click

from ._app import app, err_console
from ._installation import installation_problem

__all__ = ["app", "main", "run"]


def _register() -> None:
    # imported for their side effect: each module adds its commands to ``app``
    from . import (  # noqa: F401
        accounts,
        approvals,
        data,
        database,
        demo,
        deployments,
        health,
        outbox,
        playbooks,
        replies,
        report,
        revenue,
        run,
        surveys,
        sync,
        tasks,
        today,
    )
    from . import web as _web  # noqa: F401  (retain web)


_register()


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """The exception ``name`` of the real click too, when something loaded it (Typer has its own)."""
    click_exceptions = sys.modules.get("click.exceptions")
    found = getattr(click_exceptions, name, None)
    return (found,) if isinstance(found, type) and issubclass(found, BaseException) else ()


def _is_retain_error(exc: BaseException) -> bool:
    # a RetainError can only have been raised once `models` was imported: no need to import it here
    errors = sys.modules.get("models.errors")
    retain_error = getattr(errors, "RetainError", None)
    return isinstance(retain_error, type) and isinstance(exc, retain_error)


def _database_trouble(exc: BaseException) -> str | None:
    """What to tell a person when the database itself failed the command (busy, unreachable): not
    their mistake, and not a bug to show a traceback for. The transaction was rolled back."""
    operational = getattr(sys.modules.get("sqlalchemy.exc"), "OperationalError", None)
    if not (isinstance(operational, type) and isinstance(exc, operational)):
        return None
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if "database is locked" in cause or "database is busy" in cause:
        return (
            "the database is busy: another Retain process kept it locked past the wait; nothing of "
            "this command was written, run it again"
        )
    return f"the database failed the command ({cause}); nothing of it was written"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _prefect_signal() -> tuple[type[BaseException], ...]:
    """Prefect's TerminationSignal, when Prefect was loaded (a SIGTERM during a flow run)."""
    found = getattr(sys.modules.get("prefect.exceptions"), "TerminationSignal", None)
    return (found,) if isinstance(found, type) and issubclass(found, BaseException) else ()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Exit codes: 0 ok, 1 a user error (a message, no traceback), 2 usage, 130 Ctrl-C."""
    problem = installation_problem()
    if problem:
        err_console.print(f"[red]error:[/red] {escape(problem)}", soft_wrap=True)
        return 1
    exits: tuple[type[BaseException], ...] = (typer.Exit, *_click_classes("Exit"))
    usage: tuple[type[BaseException], ...] = (typer_click.ClickException, *_click_classes("ClickException"))
    aborts: tuple[type[BaseException], ...] = (typer.Abort, *_click_classes("Abort"), KeyboardInterrupt)
    try:
        result = app(args=argv, standalone_mode=False, prog_name="retain")
    except exits as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except usage as exc:  # a bad option, a missing argument: Typer's click exception, or click's
        exc.show()  # type: ignore[attr-defined]  # both have show() and exit_code
        return int(exc.exit_code)  # type: ignore[attr-defined]
    except (*aborts, *_prefect_signal()):  # Prefect's is known only once a flow ran
        err_console.print("aborted")
        return 130
    except Exception as exc:
        message = str(exc) if _is_retain_error(exc) else _database_trouble(exc)
        if message is None:
            raise
        err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        return 1
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """The ``retain`` console script. SIGTERM stops a command as Ctrl-C does: cleanly, exit 130."""
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())


if __name__ == "__main__":
    run()
