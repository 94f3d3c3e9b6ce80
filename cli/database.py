"""``retain init``: create or upgrade the database schema."""

from __future__ import annotations

import typer

from ._app import app, console, state


@app.command("init")
def init(ctx: typer.Context) -> None:
    """Create Retain's tables in the configured database, or upgrade them to this version."""
    from models import upgrade

    st = state(ctx)
    engine = st.engine(require=False)
    before, after = upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        console.print(f"{where}: schema already current ({after})")
    elif before is None:
        console.print(f"{where}: schema created ({after})")
    else:
        console.print(f"{where}: schema upgraded {before} -> {after}")
