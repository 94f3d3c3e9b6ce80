"""``retain demo``: a synthetic book of business, run tick by tick through the five playbooks."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ._app import app, console, state
from ._output import Format
from .deployments import port_option
from .run import status


@contextmanager
def _quiet_prefect() -> Iterator[None]:
    """While the progress bar runs: Prefect's own console lines at WARNING and up only (its logs
    still reach the Prefect API), and no usage analytics from the temporary Prefect server."""
    env = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    # a cold start of the temporary server takes ~15 s on a small machine; the default limit is 20 s
    if not os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "90"
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(x for x in logging.root.manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    handlers = list({id(h): h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}.values())
    levels = [h.level for h in handlers]
    for h in handlers:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        yield
    finally:
        for h, level in zip(handlers, levels, strict=True):
            h.setLevel(level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_date(value: str) -> date:
    from models import ConfigError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start {value!r} is not a date like 2027-01-04") from None


@app.command("demo")
def demo(
    ctx: typer.Context,
    accounts: Annotated[int, typer.Option("--accounts", min=10, max=20_000, help="Accounts in the book.")] = 500,
    days: Annotated[int, typer.Option("--days", min=1, max=1_000, help="Days to simulate, one tick a day.")] = 180,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic customers' behaviour.")] = 7,
    start: Annotated[str, typer.Option("--start", help="The first simulated day (ISO date).")] = "2027-01-04",
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete every Retain row in the database first (and the file outbox).")
    ] = False,
    port: Annotated[int | None, port_option("to watch the demo in (instead of Prefect's temporary API)")] = None,
) -> None:
    """Seed a synthetic book of business and run the five playbooks over it, day by day.

    Every simulated day the customers act first (usage, sign-ups, renewals, cancellations, churn,
    replies, NPS answers), then each playbook ticks at 14:00 UTC. The run is one Prefect flow run
    (retain-demo, a task per simulated week) on Prefect's temporary local API. Email, Slack and CRM
    go to JSON-lines files in the outbox folder; webhooks go to a receiver on 127.0.0.1 started for
    the demo. Nothing leaves this machine."""
    from prefect.settings import PREFECT_API_URL

    from flows import demo as demo_flows
    from flows.orchestration.demo import demo_flow
    from flows.orchestration.deployments import local_prefect_api
    from flows.orchestration.runtime import prefect_environment
    from models import ConfigError

    st = state(ctx)
    first_day = _start_date(start)
    configured = PREFECT_API_URL.value()
    if configured and port is not None:
        raise ConfigError(f"--port is for a local Prefect server, but PREFECT_API_URL is set ({configured})")
    engine = st.engine(require=False)
    deleted = demo_flows.prepare(engine, st.settings, reset=reset)
    where = engine.url.render_as_string(hide_password=True)
    if deleted:
        console.print(f"reset: deleted {deleted} rows from {where}", markup=False, soft_wrap=True)
    console.print(
        f"demo: {accounts} accounts, {days} days from {first_day} (seed {seed}) in {where}; "
        f"outbox: {st.settings.outbox_dir}/",
        markup=False,
        soft_wrap=True,
    )
    server = ExitStack()
    if port is not None:
        console.print(f"starting a local Prefect server on 127.0.0.1:{port} …", markup=False)
        api = server.enter_context(local_prefect_api(port))
        console.print(
            f"Prefect server at {api.api_url.removesuffix('/api')} until the demo ends", markup=False, soft_wrap=True
        )
    began = time.perf_counter()
    totals = {"enrolled": 0, "delivered": 0}
    with (
        server,
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress,
    ):
        bar = progress.add_task("starting Prefect", total=days, detail="")

        def on_day(report: demo_flows.DayReport, total: int) -> None:
            totals["enrolled"] += report.enrolled
            totals["delivered"] += report.delivered
            progress.update(
                bar,
                completed=report.day + 1,
                description=f"{report.as_of:%Y-%m-%d}",
                detail=f"enrolled {totals['enrolled']}, delivered {totals['delivered']}",
            )

        demo_flows.set_progress_hook(on_day)
        try:
            with _quiet_prefect(), prefect_environment(st.settings):
                result = demo_flow(accounts=accounts, days=days, seed=seed, start=first_day.isoformat())
        except RuntimeError as exc:
            if "Prefect API server" not in str(exc):
                raise
            raise ConfigError(
                f"{exc} Set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or PREFECT_API_URL to a "
                "running Prefect server (`prefect server start`), and run the demo again."
            ) from exc
        finally:
            demo_flows.set_progress_hook(None)
    elapsed = time.perf_counter() - began

    seeded = result["seeded"]
    console.print(
        f"\nseeded {seeded.get('accounts', 0)} accounts, {seeded.get('contacts', 0)} contacts, "
        f"{seeded.get('usage rows', 0)} usage rows, {seeded.get('support tickets', 0)} tickets; "
        f"simulated {result['days']} days in {elapsed:.0f} s as the Prefect flow run {result.get('flow_run')!r}",
        markup=False,
        soft_wrap=True,
    )
    world = result["world"]
    happened = ", ".join(
        f"{k} {world[k]}"
        for k in ("signup", "onboarded", "renewed", "cancelled", "churned", "reactivated", "reply", "nps answer")
        if world.get(k)
    )
    console.print(f"the customers: {happened}", markup=False, soft_wrap=True)
    console.print(
        f"the CSMs: {world.get('task done', 0)} tasks done; tasks of ended enrollments are closed with the reason",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"webhooks received by the local receiver: {result['webhook_requests']}", markup=False, soft_wrap=True
    )
    for error in result["errors"][:10]:
        console.print(Text.assemble(("error:", "yellow"), f" {error}"), soft_wrap=True)
    console.print()
    status(ctx, Format.table)
    for title, lines in demo_flows.sample_timelines(engine):
        console.print(f"\n[bold]{title}[/bold]")
        for line in lines:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    console.print(
        "\nnext: `retain status`, `retain accounts list`, `retain accounts show ID`, "
        f"and the messages in {st.settings.outbox_dir}/",
        markup=False,
        soft_wrap=True,
    )
