"""``retain sync [SOURCE]`` and ``retain sync status``: the team's SQL sources (``sources.yaml``)
into Retain, incrementally, and where each source stands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ._app import app, console, err_console, state
from ._output import Format, TableOrJson, echo_json

#: ``retain sync status`` shows the sources; a source cannot be named so (sources.yaml says why)
STATUS = "status"


@app.command("sync")
def sync(
    ctx: typer.Context,
    source: Annotated[
        str | None,
        typer.Argument(
            help="The source to run (a name in sources.yaml), or 'status' to show every source. Default: all sources.",
            show_default=False,
        ),
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="Forget the source's cursor and read every row again.")
    ] = False,
    fmt: TableOrJson = Format.table,
) -> None:
    """Run the sources of sources.yaml: the Stripe connector (customers, subscriptions, invoices,
    credit notes) and the SQL sources, each from its cursor (only what changed since the last run),
    in batches, through the same checks as the file imports.

    A batch is written whole or not at all; a bad row stops that source's run before its batch,
    and the cursor stays there until the row is fixed in the source. Exit 1 if any source
    refused rows or failed. 'retain sync status' shows, per source, the last run, the cursor, the
    rows taken in and the rows refused, and why.
    """
    if source == STATUS:
        _status(ctx, fmt)
        return
    from flows.engine.tick import declared_custom_fields
    from flows.sync import source_names, sync_sources
    from integrations.sources import forget_cursor
    from models import utcnow
    from playbooks import load_sources

    st = state(ctx)
    spec = load_sources(st.playbooks_dir)
    if not spec.sources and spec.stripe is None:
        from models import BUNDLED_PLAYBOOKS_DIR

        where = (
            "a sources.yaml in your playbooks folder (./playbooks, or --playbooks-dir / RETAIN_PLAYBOOKS_DIR)"
            if st.playbooks_dir.resolve() == BUNDLED_PLAYBOOKS_DIR.resolve()
            else str(st.playbooks_dir / "sources.yaml")
        )
        err_console.print(
            f"error: no sources: declare them under 'sources:' (or 'stripe:') in {where} "
            "(see README, 'Connect your data')",
            style="red",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    engine = st.engine()
    if from_start:
        for name in [source] if source else source_names(spec):
            forget_cursor(engine, name)
    declared = declared_custom_fields(st.playbooks_dir)
    results = sync_sources(engine, spec, now=utcnow(), only=source, declared=declared)
    if fmt is Format.json:
        echo_json([r.__dict__ for r in results])
    else:
        for result in results:
            style = "green" if result.status == "ok" else "red"
            console.print(result.line(), style=style, markup=False, soft_wrap=True)
            for line in result.problems:
                err_console.print(f"  {line}", markup=False, soft_wrap=True)
            if result.state:
                console.print(f"  {result.state}", markup=False, soft_wrap=True)
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


def _status(ctx: typer.Context, fmt: Format) -> None:
    from integrations.sources import sync_status
    from models import RetainError
    from playbooks import load_sources

    st = state(ctx)
    try:
        spec = load_sources(st.playbooks_dir)
        declared: list[tuple[str, str]] = [(name, s.kind) for name, s in spec.sources.items()]
        declared += [("stripe", "stripe")] if spec.stripe is not None else []
    except RetainError as exc:  # the status of what ran is still worth showing
        err_console.print(f"warning: {exc}", style="yellow", markup=False, soft_wrap=True)
        declared = []
    with st.engine().connect() as conn:
        statuses = sync_status(conn, declared)
    if fmt is Format.json:
        echo_json([s.to_dict() for s in statuses])
        return
    if not statuses:
        console.print("no sources: declare them in sources.yaml, then run retain sync", soft_wrap=True)
        return
    table = Table(title="Sync")
    for column in ("source", "kind", "last run", "cursor", "rows in", "refused"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        when = f"{s.status} {s.started_at:%Y-%m-%d %H:%M}" if s.status and s.started_at else "never"
        table.add_row(s.source, s.kind, when, s.cursor or "-", str(s.rows_in), str(s.rows_refused))
    console.print(table)
    for s in statuses:
        if s.message and s.status != "ok":
            console.print(f"{s.source}: {s.message}", markup=False, soft_wrap=True)
            for line in s.problems[:20]:
                console.print(f"  {line}", markup=False, soft_wrap=True)
            if len(s.problems) > 20:
                console.print(f"  … and {len(s.problems) - 20} more", markup=False, soft_wrap=True)
