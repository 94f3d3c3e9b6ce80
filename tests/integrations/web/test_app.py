"""The app's skeleton: the signed links, the guards every route has (body size, rate per
address), the health check, and ``retain web`` served by uvicorn for real."""

from __future__ import annotations

import asyncio
import socket
from datetime import date

import httpx
import pytest
from sqlalchemy.engine import Engine

import cli
from integrations.links import ExpiredLink, InvalidLink, LinkConfig, sign, verify
from integrations.web.server import WebThread, check_exposure, web_server
from models import ConfigError, Settings

from .conftest import Client, Clock, make_client

DAY = date(2027, 3, 2)


def test_a_link_token_names_its_subject_until_its_last_day() -> None:
    token = sign("s3cret", "survey", "check_in:1:ask:1:2", date(2027, 4, 1))
    assert verify("s3cret", "survey", token, DAY) == ("check_in:1:ask:1:2", date(2027, 4, 1))
    assert verify("s3cret", "survey", token, date(2027, 4, 1))[0] == "check_in:1:ask:1:2"  # its last day
    assert sign("s3cret", "survey", "check_in:1:ask:1:2", date(2027, 4, 1)) == token  # the same link
    with pytest.raises(ExpiredLink, match="valid through 2027-04-01"):
        verify("s3cret", "survey", token, date(2027, 4, 2))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.replace(t.split(".")[1], "20991231"),  # a later last day
        lambda t: sign("s3cret", "survey", "someone:else", date(2027, 4, 1)).split(".")[0] + t[t.index(".") :],
        lambda t: t[:-3],  # cut short
        lambda t: t + "x",
        lambda t: "!!!",
        lambda t: "",
        lambda t: sign("another secret", "survey", "check_in:1:ask:1:2", date(2027, 4, 1)),
        lambda t: sign("s3cret", "unsubscribe", "check_in:1:ask:1:2", date(2027, 4, 1)),  # made for another use
    ],
)
def test_an_altered_or_forged_token_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    token = sign("s3cret", "survey", "check_in:1:ask:1:2", date(2027, 4, 1))
    with pytest.raises(InvalidLink) as refused:
        verify("s3cret", "survey", tamper(token), DAY)
    assert not isinstance(refused.value, ExpiredLink)


def test_health_says_the_database_answers(client: Client) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    home = client.get("/")
    assert home.status_code == 200 and '<html lang="en">' in home.text
    assert 'name="viewport"' in home.text and home.headers["cache-control"] == "no-store"


def test_a_body_over_the_limit_is_refused_before_any_route_reads_it(sqlite_engine: Engine, clock: Clock) -> None:
    client = make_client(sqlite_engine, clock, web_max_body=2048)
    declared = client.post("/healthz", content=b"x" * 4096)
    assert declared.status_code == 413 and "larger than 2048 bytes" in declared.json()["error"]

    async def streamed():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield b"score=" + b"9" * 506

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    undeclared = client.post("/survey/comment", content=streamed(), headers=form)  # chunked: no Content-Length
    assert undeclared.status_code == 413
    assert client.post("/healthz", content=b"z" * 100).status_code == 405  # within the limit: the route answers
    # an inbound-parse webhook carries whole emails: its own limit (RETAIN_WEB_MAX_INBOUND_BODY)
    assert client.post("/webhooks/inbound", content=b"x" * 4096).status_code == 503  # not configured, not too large
    small = make_client(sqlite_engine, clock, web_max_body=2048, web_max_inbound_body=2048)
    assert small.post("/webhooks/inbound", content=b"x" * 4096).status_code == 413


def test_each_address_is_limited_to_its_rate(sqlite_engine: Engine, clock: Clock) -> None:
    client = make_client(sqlite_engine, clock, web_rate_limit=5)
    other = Client(client.app, address="198.51.100.9")
    assert [client.get("/healthz").status_code for _ in range(5)] == [200] * 5
    refused = client.get("/healthz")
    assert refused.status_code == 429 and refused.headers["retry-after"] == "12"
    assert other.get("/healthz").status_code == 200  # another address has its own allowance
    clock.travel(seconds=12)
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz").status_code == 429


def test_beyond_this_machine_the_default_link_secrets_are_refused() -> None:
    local = LinkConfig()
    check_exposure("127.0.0.1", local)
    check_exposure("::1", local)
    with pytest.raises(ConfigError, match="RETAIN_UNSUBSCRIBE_SECRET and RETAIN_SURVEY_SECRET"):
        check_exposure("0.0.0.0", local)
    check_exposure("0.0.0.0", LinkConfig(unsubscribe_secret="a" * 32, survey_secret="b" * 32))


def test_retain_web_refuses_to_listen_everywhere_with_default_secrets(
    sqlite_url: str, sqlite_engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RETAIN_UNSUBSCRIBE_SECRET", raising=False)
    monkeypatch.delenv("RETAIN_SURVEY_SECRET", raising=False)
    code = cli.main(["--database-url", sqlite_url, "web", "--host", "0.0.0.0", "--port", "8999"])
    assert code == 1
    assert "set RETAIN_UNSUBSCRIBE_SECRET and RETAIN_SURVEY_SECRET" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uvicorn_serves_the_app_on_its_host_and_port(sqlite_engine: Engine) -> None:
    port = _free_port()
    server = web_server(sqlite_engine, Settings(), host="127.0.0.1", port=port, log_level="warning")
    with WebThread(server):
        for _ in range(100):
            if server.started:
                break
            asyncio.run(asyncio.sleep(0.05))
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert "server" not in answer.headers  # no server banner


def test_the_access_log_never_holds_a_link_s_token() -> None:
    import logging

    from integrations.web.server import TokensOutOfLogs

    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.7:5000", "GET", "/survey?t=a2V5.20270401.c2ln&score=9", "1.1", 200), None,
    )  # fmt: skip
    assert TokensOutOfLogs().filter(record)
    assert record.getMessage() == '203.0.113.7:5000 - "GET /survey?t=[redacted]&score=9 HTTP/1.1" 200'
