"""SMTP email against a real SMTP server (aiosmtpd on 127.0.0.1): composition, headers, TLS, AUTH,
connection reuse, and how SMTP replies map to retryable and permanent errors."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from integrations.channels.base import Delivery, Receipt
from integrations.channels.email import (
    SmtpEmailChannel,
    SmtpServer,
    message_id,
    parse_smtp_url,
    unsubscribe_token,
    verify_unsubscribe_token,
)
from models import ConfigError, IntegrationError, RetryableError

from .conftest import SMTP_PASSWORD, SMTP_USER, Tls
from .conftest import SmtpServer as LocalSmtp

SENDER = "Acme Success <success@acme.com>"
UNSUBSCRIBE_URL = "https://retain.example.com/unsubscribe"
UNSUBSCRIBE_SECRET = "unsubscribe-key-S3CRET"
USERINFO = f"{quote(SMTP_USER, safe='')}:{quote(SMTP_PASSWORD, safe='')}"


def email_delivery(key: str = "renewal:7:remind:42:r1", **payload: Any) -> Delivery:
    body = {
        "kind": "email",
        "to": "Dana Buyer <dana@customer.io>",
        "subject": "Your renewal is coming up",
        "text": "Hi Dana,\n\nYour renewal is on 2027-02-01.\n",
        "html": "<p>Hi Dana,</p><p>Your renewal is on <b>2027-02-01</b>.</p>",
        "cc": "csm@acme.com",
    }
    body.update(payload)
    return Delivery(key, "email", {k: v for k, v in body.items() if v is not None}, meta={"contact_id": 42})


def channel_for(url: str, **options: Any) -> SmtpEmailChannel:
    options.setdefault("unsubscribe_url", UNSUBSCRIBE_URL)
    options.setdefault("unsubscribe_secret", UNSUBSCRIBE_SECRET)
    return SmtpEmailChannel(url, sender=SENDER, **options)


def send(channel: SmtpEmailChannel, *deliveries: Delivery) -> list[Receipt]:
    """Sends on one event loop, one after the other, then closes the channel."""

    async def main() -> list[Receipt]:
        try:
            return [await channel.send(d) for d in deliveries]
        finally:
            await channel.aclose()

    return asyncio.run(main())


def send_error(channel: SmtpEmailChannel, delivery: Delivery) -> IntegrationError:
    with pytest.raises(IntegrationError) as info:
        send(channel, delivery)
    assert SMTP_PASSWORD not in str(info.value)
    assert quote(SMTP_PASSWORD, safe="") not in str(info.value)
    return info.value


# --- RETAIN_SMTP_URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.acme.com", SmtpServer("mail.acme.com", 587)),
        ("smtp://u%40acme.com:p%3Aw%2Fd@mail.acme.com:587", SmtpServer("mail.acme.com", 587, "u@acme.com", "p:w/d")),
        ("smtps://u:p@mail.acme.com", SmtpServer("mail.acme.com", 465, "u", "p", use_tls=True, start_tls=False)),
        ("smtp://127.0.0.1:1025?starttls=false", SmtpServer("127.0.0.1", 1025, start_tls=False)),
        ("smtp://mail.acme.com:25?starttls=true", SmtpServer("mail.acme.com", 25, start_tls=True)),
    ],
)
def test_smtp_urls(url: str, expected: SmtpServer) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://u:hunter22@mail.acme.com", "RETAIN_SMTP_URL must start with smtp:// or smtps://"),
        ("smtp://u:hun/ter22@mail.acme.com", "RETAIN_SMTP_URL: the port is not a number (URL-encode"),
        ("smtp://u:hunter22@mail.acme.com?tls=1", "RETAIN_SMTP_URL: the only option is starttls=true|false|auto"),
        ("smtps://u:hunter22@mail.acme.com?starttls=true", "RETAIN_SMTP_URL: smtps:// is TLS already"),
    ],
)
def test_bad_smtp_urls_are_named_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_smtp_url(url)
    assert str(info.value).startswith(message)
    assert "hunter22" not in str(info.value) and "ter22" not in str(info.value)


def test_server_never_shows_its_password() -> None:
    server = parse_smtp_url("smtps://u:hunter22@mail.acme.com")
    assert str(server) == "smtps://mail.acme.com:465"
    assert "hunter22" not in repr(server)


# --- the message ------------------------------------------------------------------------------


def test_a_message_arrives_once_with_its_parts_and_headers(smtp_server: LocalSmtp) -> None:
    delivery = email_delivery()
    [receipt] = send(channel_for(smtp_server.url(query="starttls=false")), delivery)

    [got] = smtp_server.sink.messages
    assert got.mail_from == "success@acme.com"
    assert got.rcpt_tos == ["dana@customer.io", "csm@acme.com"]
    msg = got.message
    assert msg["From"] == SENDER
    assert msg["To"] == "Dana Buyer <dana@customer.io>"
    assert msg["Cc"] == "csm@acme.com"
    assert msg["Subject"] == "Your renewal is coming up"
    assert msg["Date"]
    assert msg["X-Retain-Key"] == delivery.key
    assert msg["Message-ID"] == message_id(delivery.key, "acme.com") == receipt.provider_id
    assert msg.get_content_type() == "multipart/alternative"
    text, html = (part.get_content() for part in msg.iter_parts())
    assert text.replace("\r\n", "\n") == delivery.payload["text"]
    assert html.strip() == delivery.payload["html"]
    assert receipt.detail == "2.0.0 Ok: queued"


def test_message_id_is_derived_from_the_touch_key() -> None:
    channel = channel_for("smtp://127.0.0.1:1")
    first = channel.compose(email_delivery("k1"))["Message-ID"]
    assert first == channel.compose(email_delivery("k1"))["Message-ID"]
    assert first != channel.compose(email_delivery("k2"))["Message-ID"]
    assert first == message_id("k1", "acme.com")
    assert len(first) == len("<@acme.com>") + 32


def test_one_click_unsubscribe_headers(smtp_server: LocalSmtp) -> None:
    send(channel_for(smtp_server.url(query="starttls=false")), email_delivery())
    # checked in the raw bytes too: one line each, no encoded words (receivers do not decode them there)
    raw_headers = smtp_server.sink.messages[0].raw.split(b"\r\n\r\n")[0].decode("ascii")
    [unsubscribe] = [h for h in raw_headers.split("\r\n") if h.startswith("List-Unsubscribe:")]
    token = unsubscribe_token(UNSUBSCRIBE_SECRET, "email|contact:42")
    assert unsubscribe == (
        f"List-Unsubscribe: <{UNSUBSCRIBE_URL}?t={token}>, <mailto:unsubscribe@acme.com?subject=unsubscribe>"
    )
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw_headers.split("\r\n")
    assert verify_unsubscribe_token(UNSUBSCRIBE_SECRET, token) == "email|contact:42"


def test_the_touch_s_own_unsubscribe_link_is_the_header_s() -> None:
    channel = channel_for("smtp://127.0.0.1:1")
    link = "https://retain.acme.com/unsubscribe?t=abc.20270601.xyz"
    msg = channel.compose(Delivery("k", "email", email_delivery().payload | {"unsubscribe_url": link}))
    assert msg["List-Unsubscribe"] == f"<{link}>, <mailto:unsubscribe@acme.com?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    local = Delivery("k", "email", email_delivery().payload | {"unsubscribe_url": "http://localhost:8000/u?t=x"})
    assert channel.compose(local)["List-Unsubscribe-Post"] is None  # RFC 8058 one-click: https only


def test_unsubscribe_tokens_cannot_be_forged() -> None:
    token = unsubscribe_token("key", "email|email:dana@customer.io")
    assert verify_unsubscribe_token("key", token) == "email|email:dana@customer.io"
    assert verify_unsubscribe_token("other key", token) is None
    forged = unsubscribe_token("guess", "email|contact:1").split(".")[0] + "." + token.split(".", 1)[1]
    assert verify_unsubscribe_token("key", forged) is None
    assert verify_unsubscribe_token("key", "!!!") is None


def test_without_a_contact_the_token_names_the_address_and_without_a_link_only_mailto() -> None:
    with_link = channel_for("smtp://127.0.0.1:1")
    delivery = Delivery("k", "email", email_delivery().payload | {"to": "CSM@Acme.com"})
    token = unsubscribe_token(UNSUBSCRIBE_SECRET, "email|email:csm@acme.com")
    assert f"?t={token}>" in with_link.compose(delivery)["List-Unsubscribe"]

    mailto_only = channel_for("smtp://127.0.0.1:1", unsubscribe_url=None, unsubscribe_secret=None)
    msg = mailto_only.compose(delivery)
    assert msg["List-Unsubscribe"] == "<mailto:unsubscribe@acme.com?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] is None  # RFC 8058 one-click needs an https link


def test_non_ascii_text_and_a_multi_line_subject(smtp_server: LocalSmtp) -> None:
    delivery = email_delivery(subject="Ihre Verlängerung\n  steht an — 2027", text="Grüße, Zoë ✓\n", html=None, cc=None)
    send(channel_for(smtp_server.url(query="starttls=false")), delivery)
    [got] = smtp_server.sink.messages
    assert got.raw.isascii()  # 7-bit clean whatever the server supports
    assert got.message["Subject"] == "Ihre Verlängerung steht an — 2027"
    assert got.message.get_content_type() == "text/plain"
    assert got.message.get_content().replace("\r\n", "\n") == "Grüße, Zoë ✓\n"
    assert got.rcpt_tos == ["dana@customer.io"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"to": None}, "email: the payload has no recipient ('to')"),
        ({"text": None, "html": None}, "email: the payload has neither text nor html"),
        ({"kind": "slack"}, "email: cannot send a 'slack' payload"),
        ({"cc": 7}, "email: cc must be an address or a list of addresses, not 7"),
    ],
)
def test_payloads_that_cannot_be_sent(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(IntegrationError) as info:
        channel_for("smtp://127.0.0.1:1").compose(email_delivery(**payload))
    assert str(info.value) == message
    assert not isinstance(info.value, RetryableError)


def test_a_recipient_that_is_not_an_address(smtp_server: LocalSmtp) -> None:
    channel = channel_for(smtp_server.url(query="starttls=false"))
    with pytest.raises(IntegrationError) as info:
        send(channel, email_delivery(to="Dana Buyer", cc=None))
    assert str(info.value) == "email: not an email address: 'Dana Buyer'"
    assert not smtp_server.sink.messages


def test_settings_that_cannot_work() -> None:
    with pytest.raises(ConfigError, match="RETAIN_EMAIL_FROM is not an email address"):
        SmtpEmailChannel("smtp://127.0.0.1:1", sender="Acme Success")
    with pytest.raises(ConfigError, match="needs RETAIN_UNSUBSCRIBE_SECRET"):
        SmtpEmailChannel("smtp://127.0.0.1:1", sender=SENDER, unsubscribe_url=UNSUBSCRIBE_URL)


# --- connections ------------------------------------------------------------------------------


def test_one_connection_carries_many_messages_and_quits_on_close(smtp_server: LocalSmtp) -> None:
    channel = channel_for(smtp_server.url(query="starttls=false"), connections=1)
    send(channel, *(email_delivery(f"k{i}") for i in range(3)))
    peers = {m.peer for m in smtp_server.sink.messages}
    assert len(smtp_server.sink.messages) == 3 and len(peers) == 1
    assert smtp_server.sink.quits == 1
    # a closed channel opens a new connection on its next use (the outbox closes channels after each run)
    send(channel, email_delivery("k9"))
    assert len({m.peer for m in smtp_server.sink.messages}) == 2


def test_concurrent_sends_share_a_small_pool(smtp_server: LocalSmtp) -> None:
    channel = channel_for(smtp_server.url(query="starttls=false"), connections=2)

    async def main() -> None:
        try:
            await asyncio.gather(*(channel.send(email_delivery(f"k{i}")) for i in range(6)))
        finally:
            await channel.aclose()

    asyncio.run(main())
    assert sorted(m.message["X-Retain-Key"] for m in smtp_server.sink.messages) == [f"k{i}" for i in range(6)]
    assert len({m.peer for m in smtp_server.sink.messages}) <= 2


# --- TLS and AUTH -----------------------------------------------------------------------------


def test_starttls_when_offered_then_login(start_smtp: Callable[..., LocalSmtp], tls: Tls) -> None:
    server = start_smtp(auth=True, starttls=True)
    send(channel_for(server.url(userinfo=USERINFO), tls_context=tls.client), email_delivery())
    [got] = server.sink.messages
    assert got.tls and got.login == SMTP_USER


def test_implicit_tls(start_smtp: Callable[..., LocalSmtp], tls: Tls) -> None:
    server = start_smtp(auth=True, implicit_tls=True)
    send(channel_for(server.url("smtps", USERINFO), tls_context=tls.client), email_delivery())
    [got] = server.sink.messages
    assert got.tls and got.login == SMTP_USER


def test_login_without_tls_to_a_relay_that_is_said_to_be_trusted(start_smtp: Callable[..., LocalSmtp]) -> None:
    server = start_smtp(auth=True)
    send(channel_for(server.url(userinfo=USERINFO, query="starttls=false")), email_delivery())
    [got] = server.sink.messages
    assert not got.tls and got.login == SMTP_USER


def test_the_password_is_not_sent_in_clear_unless_asked(start_smtp: Callable[..., LocalSmtp]) -> None:
    server = start_smtp(auth=True)
    error = send_error(channel_for(server.url(userinfo=USERINFO)), email_delivery())
    assert str(error) == (
        f"smtp://127.0.0.1:{server.port} did not offer STARTTLS: not sending the password unencrypted "
        "(use smtps://, or add ?starttls=false for a trusted local relay)"
    )
    assert not server.sink.messages


def test_a_wrong_password_is_permanent_and_not_repeated(start_smtp: Callable[..., LocalSmtp], tls: Tls) -> None:
    server = start_smtp(auth=True, starttls=True)
    wrong = f"{SMTP_USER}:{quote(SMTP_PASSWORD + 'x', safe='')}"
    with pytest.raises(IntegrationError) as info:
        send(channel_for(server.url(userinfo=wrong), tls_context=tls.client), email_delivery())
    assert not isinstance(info.value, RetryableError)
    assert info.value.status_code == 535
    assert "login refused 535" in str(info.value)
    assert SMTP_PASSWORD not in str(info.value) and quote(SMTP_PASSWORD, safe="") not in str(info.value)


# --- SMTP replies and failures ------------------------------------------------------------------


def test_a_4xx_reply_is_retryable(smtp_server: LocalSmtp) -> None:
    smtp_server.sink.data_reply = "451 4.3.0 Mail server temporarily rejected message"
    error = send_error(channel_for(smtp_server.url(query="starttls=false")), email_delivery())
    assert isinstance(error, RetryableError)
    assert error.status_code == 451
    assert str(error) == (
        f"email to dana@customer.io, csm@acme.com via smtp://127.0.0.1:{smtp_server.port}: "
        "SMTP 451 4.3.0 Mail server temporarily rejected message"
    )
    assert not smtp_server.sink.messages


def test_a_5xx_reply_is_permanent_with_the_servers_answer(smtp_server: LocalSmtp) -> None:
    smtp_server.sink.data_reply = "554 5.7.1 Message rejected as spam"
    error = send_error(channel_for(smtp_server.url(query="starttls=false")), email_delivery())
    assert not isinstance(error, RetryableError)
    assert error.status_code == 554 and error.response == "5.7.1 Message rejected as spam"
    assert str(error).endswith(": SMTP 554 5.7.1 Message rejected as spam")


def test_refused_recipients(smtp_server: LocalSmtp) -> None:
    channel = channel_for(smtp_server.url(query="starttls=false"))
    smtp_server.sink.rcpt_replies = {"dana@customer.io": "550 5.1.1 No such user"}
    error = send_error(channel, email_delivery(cc=None))
    assert not isinstance(error, RetryableError)
    assert str(error).endswith("recipients refused: dana@customer.io: 550 5.1.1 No such user")

    smtp_server.sink.rcpt_replies = {"dana@customer.io": "452 4.2.2 Mailbox full"}
    assert isinstance(send_error(channel, email_delivery(cc=None)), RetryableError)

    # the message still goes to whoever accepts it; the receipt says who did not
    smtp_server.sink.rcpt_replies = {"csm@acme.com": "550 5.1.1 No such user"}
    [receipt] = send(channel, email_delivery())
    assert receipt.detail == "2.0.0 Ok: queued; refused: csm@acme.com (550 5.1.1 No such user)"
    assert smtp_server.sink.messages[0].rcpt_tos == ["dana@customer.io"]


def test_no_server_is_retryable(closed_port: int) -> None:
    error = send_error(channel_for(f"smtp://{USERINFO}@127.0.0.1:{closed_port}"), email_delivery())
    assert isinstance(error, RetryableError)
    assert f"via smtp://127.0.0.1:{closed_port}: SMTPConnectError" in str(error)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_silent_server_times_out_as_retryable(silent_port: int) -> None:
    channel = channel_for(f"smtp://{USERINFO}@127.0.0.1:{silent_port}", timeout=0.2)
    error = send_error(channel, email_delivery())
    assert isinstance(error, RetryableError)
    assert "Timeout" in str(error)
