"""Retain's command line: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape
from typer._click import exceptions as typer_click  # Typer vendors its own click

from models import RetainError

from ._app import app, err_console

__all__ = ["app", "main", "run"]


def _register() -> None:
    # imported for their side effect: each module adds its commands to ``app``
    from . import accounts, database, demo, deployments, health, outbox, playbooks, report, revenue, run, surveys  # noqa: F401


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Exit codes: 0 ok, 1 a user error (a message, no traceback), 2 usage, 130 Ctrl-C."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="retain")
    except (typer.Exit, click.exceptions.Exit) as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except (typer_click.ClickException, click.ClickException) as exc:  # usage: bad option, missing argument
        exc.show()
        return int(exc.exit_code)
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except RetainError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """The ``retain`` console script."""
    sys.exit(main())
