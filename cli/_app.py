"""The Typer app, its global options, and what every command group shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer._click.core import Context as ClickContext
from typer._click.globals import get_current_context

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from models import Settings

# Nothing of Retain's own is imported here, nor at the top of the command modules: `retain --help`
# and the commands that need neither the database nor Prefect start in a fraction of a second.
# Each command imports what it uses.

__all__ = ["State", "app", "console", "err_console", "state"]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="retain",
    help="Retain: customer-success playbooks as code, run by Prefect, never sent twice.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # never print locals (they may hold secrets)
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def playbooks_dir(self) -> Path:
        return self.settings.resolved_playbooks_dir()

    def engine(self, *, require: bool = True) -> Engine:
        """The configured database; with ``require``, it must hold the current schema."""
        from models import make_engine, require_schema

        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
            context = click_context()
            if context is not None:  # close connections when the command ends (SQLite tidies its WAL)
                context.call_on_close(self._engine.dispose)
        if require:
            require_schema(self._engine)
        return self._engine


def click_context() -> ClickContext | None:
    return get_current_context(silent=True)


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State(read_settings())
    return root.obj


def read_settings(**updates: Any) -> Settings:
    """The settings from the environment (and ``updates``); a bad ``RETAIN_*`` value is a
    :class:`ConfigError` naming the variable, not a traceback."""
    from pydantic import ValidationError

    from models import ConfigError, Settings

    try:
        return Settings(**updates)
    except ValidationError as exc:
        lines = [
            f"RETAIN_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ConfigError("bad setting: " + "; ".join(lines)) from None


@app.callback()
def _global_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="RETAIN_DATABASE_URL",
            help="Where Retain keeps its data. SQLite file by default; postgresql://… for several workers.",
            show_default="sqlite:///retain.db",
        ),
    ] = None,
    playbooks_dir: Annotated[
        Path | None,
        typer.Option(
            "--playbooks-dir",
            envvar="RETAIN_PLAYBOOKS_DIR",
            help="The playbooks folder. Default: ./playbooks if it exists, else the bundled playbooks.",
            file_okay=False,
        ),
    ] = None,
) -> None:
    updates: dict[str, object] = {}
    if database_url:
        updates["database_url"] = database_url
    if playbooks_dir:
        updates["playbooks_dir"] = playbooks_dir
    ctx.obj = State(read_settings(**updates))
