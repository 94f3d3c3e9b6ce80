"""``retain deployments sync`` (prefect.yaml from the playbooks) and ``retain serve`` (run every
schedule on this machine, with no setup)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from ._app import app, console, err_console, state

deployments_app = typer.Typer(help="Prefect deployments: one per playbook, on its schedule.", no_args_is_help=True)
app.add_typer(deployments_app, name="deployments")


@deployments_app.command("sync")
def sync(
    ctx: typer.Context,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 if the file is out of date (for CI).")
    ] = False,
    file: Annotated[Path, typer.Option("--file", help="The file to write.", dir_okay=False)] = Path("prefect.yaml"),
) -> None:
    """Write prefect.yaml: one deployment per playbook, with the cron and time zone of its schedule."""
    from flows.orchestration.deployments import prefect_yaml_problems, render_prefect_yaml
    from playbooks import load_playbooks

    playbooks = load_playbooks(state(ctx).playbooks_dir)
    text = render_prefect_yaml(playbooks.values())
    current = file.read_text(encoding="utf-8") if file.exists() else None
    if check:
        problems = prefect_yaml_problems(current) if current is not None else []
        for problem in problems:
            err_console.print(f"{file}: {problem}", markup=False, soft_wrap=True)
        if current != text:
            err_console.print(
                f"{file} is out of date with the playbooks: run `retain deployments sync`", markup=False, soft_wrap=True
            )
            raise typer.Exit(1)
        if problems:
            raise typer.Exit(1)
        console.print(f"{file} is up to date ({len(playbooks)} deployments)", markup=False, soft_wrap=True)
        return
    if current == text:
        console.print(f"{file} is up to date ({len(playbooks)} deployments)", markup=False, soft_wrap=True)
        return
    file.write_text(text, encoding="utf-8")
    console.print(
        f"wrote {file}: {len(playbooks)} playbook deployments ({', '.join(sorted(playbooks))}), the outbox, health scores and reports",
        markup=False,
        soft_wrap=True,
    )


@app.command("serve")
def serve(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many flow runs at once.")] = None,
    web: Annotated[
        bool,
        typer.Option(
            "--web", help="Also run `retain web` (on RETAIN_WEB_HOST:RETAIN_WEB_PORT) for as long as this runs."
        ),
    ] = False,
) -> None:
    """Run every playbook on its schedule, on this machine, until Ctrl-C.

    Uses the Prefect server at PREFECT_API_URL when one is configured; otherwise starts a local
    one on 127.0.0.1 for as long as this runs (Prefect's ephemeral API has no scheduler). With
    --web, the inbound web app (unsubscribe and survey links, webhooks) runs beside them."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.engine.tick import valid_playbooks
    from flows.orchestration.deployments import (
        drain_prefect_workers,
        local_prefect_server,
        runner_deployments,
        serve_until_stopped,
    )
    from flows.orchestration.runtime import prefect_environment

    st = state(ctx)
    st.engine()  # fail now, with the fix to run, if the database has no schema
    playbooks, problems = valid_playbooks(st.playbooks_dir)
    for problem in problems:  # a broken playbook is not served; the others are
        err_console.print(f"not served: {problem.format()}", markup=False, soft_wrap=True)
    if not playbooks:
        console.print(f"no playbooks in {st.playbooks_dir}: nothing to serve", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    deployments = runner_deployments(playbooks.values())
    names = ", ".join(sorted(playbooks))
    configured = PREFECT_API_URL.value()
    beside: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if web:
        from integrations.web.server import WebThread, web_server

        settings = st.settings
        beside = WebThread(web_server(st.engine(), settings, host=settings.web_host, port=settings.web_port))
        console.print(f"retain web on http://{settings.web_host}:{settings.web_port}", markup=False)
    with beside, prefect_environment(st.settings, start_temporary_server=False):
        if configured:
            console.print(f"serving {names} against {configured} (Ctrl-C stops)", markup=False, soft_wrap=True)
            serve_until_stopped(deployments, limit=limit)
        else:
            console.print("starting a local Prefect server on 127.0.0.1 …", markup=False)
            saved = os.environ.get("PREFECT_API_URL")
            try:
                with local_prefect_server() as server:
                    # flow runs are subprocesses: they read the environment; this process reads settings
                    os.environ["PREFECT_API_URL"] = server.api_url
                    console.print(
                        f"serving {names}; Prefect server at {server.api_url.removesuffix('/api')} (Ctrl-C stops both)",
                        markup=False,
                        soft_wrap=True,
                    )
                    try:
                        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                            serve_until_stopped(deployments, limit=limit)
                    finally:
                        drain_prefect_workers()
            finally:
                if saved is None:
                    os.environ.pop("PREFECT_API_URL", None)
                else:
                    os.environ["PREFECT_API_URL"] = saved
            console.print("stopped the local Prefect server", markup=False)
    # serving ends only when stopped (Ctrl-C or SIGTERM): runs in flight were cancelled
    err_console.print("stopped")
    raise typer.Exit(130)
