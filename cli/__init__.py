"""Retain's command line: one Typer app, one module per command group."""

from __future__ import annotations

import sys

import click

from models import RetainError

from ._app import app, err_console

__all__ = ["app", "main", "run"]


def _register() -> None:
    # imported for their side effect: each module adds its commands to ``app``
    from . import accounts, database, playbooks  # noqa: F401


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI. Exit codes: 0 ok, 1 a user error (a message, no traceback), 2 usage, 130 Ctrl-C."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="retain")
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        exc.show()
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        return 130
    except RetainError as exc:
        err_console.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
        return 1
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def run() -> None:
    """The ``retain`` console script."""
    sys.exit(main())
