"""``retain web``: the inbound web app (unsubscribe, survey pages, provider events, replies,
product events) on a host and port."""

from __future__ import annotations

from typing import Annotated

import typer

from ._app import app, console, state

HOST = typer.Option("--host", help="The address to listen on (default RETAIN_WEB_HOST, 127.0.0.1).", show_default=False)
PORT = typer.Option("--port", min=1, max=65535, help="The port (default RETAIN_WEB_PORT, 8000).", show_default=False)


@app.command("web")
def web(
    ctx: typer.Context,
    host: Annotated[str | None, HOST] = None,
    port: Annotated[int | None, PORT] = None,
) -> None:
    """Serve the links in emails and the webhooks of providers, until Ctrl-C.

    People: /unsubscribe (one-click, RFC 8058) and /survey (NPS, CSAT, CES) from the signed links
    in emails. Providers: /webhooks/events (generic JSON), /webhooks/sendgrid, /webhooks/inbound
    (replies). The product: /v1/identify, /v1/group, /v1/track, /v1/page, /v1/screen, /v1/alias,
    /v1/batch (Segment spec).
    Set RETAIN_PUBLIC_URL to where people reach it (https://…)."""
    from integrations.web.server import web_server
    from playbooks import load_sources

    st = state(ctx)
    settings = st.settings
    chosen_host = host or settings.web_host
    chosen_port = port or settings.web_port
    activation = load_sources(st.playbooks_dir).activation_event
    server = web_server(st.engine(), settings, host=chosen_host, port=chosen_port, activation_event=activation)
    console.print(
        f"retain web on http://{chosen_host}:{chosen_port} (links point to {settings.public_url}; Ctrl-C stops)",
        markup=False,
        soft_wrap=True,
    )
    server.run()
