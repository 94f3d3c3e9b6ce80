"""``retain deployments sync`` (prefect.yaml from the playbooks) and ``retain serve`` (run every
schedule on this machine, with no setup)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

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
    work_pool: Annotated[
        str | None,
        typer.Option(
            "--work-pool",
            envvar="RETAIN_WORK_POOL",
            help="The Prefect work pool of every deployment. Default: the file's own, else 'retain'.",
        ),
    ] = None,
    code_dir: Annotated[
        str | None,
        typer.Option(
            "--code-dir",
            help="Where the code and the playbooks are on every worker's machine: a path, or '{{ $VAR }}' read "
            "from the worker's environment. Default: the file's own, else '{{ $RETAIN_CODE_DIR }}' (start each "
            "worker with RETAIN_CODE_DIR set to its checkout).",
        ),
    ] = None,
    git_repository: Annotated[
        str | None,
        typer.Option(
            "--git-repository",
            envvar="RETAIN_GIT_REPOSITORY",
            help="Instead of --code-dir: a git repository every flow run clones its code from.",
        ),
    ] = None,
    git_branch: Annotated[
        str | None, typer.Option("--git-branch", envvar="RETAIN_GIT_BRANCH", help="The branch to clone.")
    ] = None,
) -> None:
    """Write prefect.yaml: one deployment per playbook, with the cron and time zone of its schedule,
    and one per scheduled SQL source of sources.yaml (sync-<source>), on a work pool, with a pull
    step that finds the code on the worker's machine.

    What a person added to the file (a pool per deployment, job variables, a concurrency limit)
    is kept. Then: `prefect work-pool create retain --type process`, `prefect --no-prompt deploy
    --all`, and `RETAIN_CODE_DIR=<checkout> prefect worker start --pool retain` on each machine
    (docs/workers.md)."""
    from flows.orchestration.deployments import prefect_yaml_problems, pull_steps, render_prefect_yaml
    from playbooks import load_playbooks, load_sources

    playbooks = load_playbooks(state(ctx).playbooks_dir)
    sources = load_sources(state(ctx).playbooks_dir).every_source()
    pull = None  # the file's own, unless one of these says otherwise
    if code_dir is not None or git_repository is not None or git_branch is not None:
        pull = pull_steps(code_dir, repository=git_repository, branch=git_branch)
    current = file.read_text(encoding="utf-8") if file.exists() else None
    text = render_prefect_yaml(
        playbooks.values(),
        work_pool=work_pool,
        pull=pull,
        current=current,
        sources=sources,
        settings=state(ctx).settings,
    )
    if check:
        problems = prefect_yaml_problems(current) if current is not None else []
        for problem in problems:
            err_console.print(f"{file}: {problem}", markup=False, soft_wrap=True)
        if current != text:
            given = " with the same options" if work_pool is not None or pull is not None else ""
            err_console.print(
                f"{file} is out of date with the playbooks or the settings: run `retain deployments sync`{given}",
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        if problems:
            raise typer.Exit(1)
        console.print(f"{file} is up to date ({_count(text)} deployments)", markup=False, soft_wrap=True)
        return
    if current == text:
        console.print(f"{file} is up to date ({_count(text)} deployments)", markup=False, soft_wrap=True)
        return
    file.write_text(text, encoding="utf-8")
    console.print(
        f"wrote {file}: {len(playbooks)} playbook deployments ({', '.join(sorted(playbooks))}), the outbox, health scores, reports, replies from the mailbox, the daily digest and CRM tasks",
        markup=False,
        soft_wrap=True,
    )


def port_option(what: str) -> Any:
    """``--port`` of the local Prefect server (``retain serve``, ``retain demo``)."""
    return typer.Option(
        "--port",
        min=1,
        max=65535,
        help=f"The port of the local Prefect server {what} on 127.0.0.1 (its dashboard and API). "
        "Default: a free one. Not with PREFECT_API_URL set.",
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
    port: Annotated[int | None, port_option("started for serving")] = None,
) -> None:
    """Run every playbook on its schedule, on this machine, until Ctrl-C.

    Uses the Prefect server at PREFECT_API_URL when one is configured; otherwise starts a local
    one on 127.0.0.1 (on --port) for as long as this runs (Prefect's ephemeral API has no
    scheduler). With --web, the inbound web app (unsubscribe and survey links, webhooks) runs
    beside them."""
    from prefect.settings import PREFECT_API_URL

    from flows.engine.tick import valid_playbooks
    from flows.orchestration.deployments import (
        local_prefect_api,
        not_served,
        runner_deployments,
        serve_until_stopped,
    )
    from flows.orchestration.runtime import prefect_environment
    from models import ConfigError

    st = state(ctx)
    configured = PREFECT_API_URL.value()
    if configured and port is not None:
        raise ConfigError(f"--port is for a local Prefect server, but PREFECT_API_URL is set ({configured})")
    st.engine()  # fail now, with the fix to run, if the database has no schema
    playbooks, problems = valid_playbooks(st.playbooks_dir)
    for problem in problems:  # a broken playbook is not served; the others are
        err_console.print(f"not served: {problem.format()}", markup=False, soft_wrap=True)
    if not playbooks:
        console.print(f"no playbooks in {st.playbooks_dir}: nothing to serve", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    from playbooks import load_sources

    skipped = not_served(st.settings)
    deployments = runner_deployments(
        playbooks.values(), load_sources(st.playbooks_dir).every_source(), without=skipped, settings=st.settings
    )
    for reason in skipped.values():
        console.print(reason, markup=False, soft_wrap=True)
    names = ", ".join(sorted(playbooks))
    beside: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if web:
        from integrations.web.server import WebThread, web_server
        from playbooks import load_sources

        settings = st.settings
        activation = load_sources(st.playbooks_dir).activation_event
        inbound = web_server(
            st.engine(), settings, host=settings.web_host, port=settings.web_port, activation_event=activation
        )
        beside = WebThread(inbound)
        console.print(f"retain web on http://{settings.web_host}:{settings.web_port}", markup=False)
    with beside, prefect_environment(st.settings, start_temporary_server=False):
        if configured:
            console.print(f"serving {names} against {configured} (Ctrl-C stops)", markup=False, soft_wrap=True)
            serve_until_stopped(deployments, limit=limit)
        else:
            console.print(f"starting a local Prefect server on 127.0.0.1{f':{port}' if port else ''} …", markup=False)
            with local_prefect_api(port) as server:
                console.print(
                    f"serving {names}; Prefect server at {server.api_url.removesuffix('/api')} (Ctrl-C stops both)",
                    markup=False,
                    soft_wrap=True,
                )
                serve_until_stopped(deployments, limit=limit)
            console.print("stopped the local Prefect server", markup=False)
    # serving ends only when stopped (Ctrl-C or SIGTERM): runs in flight were cancelled
    err_console.print("stopped")
    raise typer.Exit(130)


def _count(text: str) -> int:
    """How many deployments a ``prefect.yaml`` text has."""
    import yaml

    return len(yaml.safe_load(text).get("deployments") or [])
