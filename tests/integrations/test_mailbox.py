"""Replies from a mailbox, against a real IMAP server (dovecot on 127.0.0.1, mail delivered into it
by SMTP through LMTP): the shipped renewal playbook on data brought in by ``retain … import``, its
first note sent by SMTP, and the customer's answers read by ``retain replies poll``."""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

import cli
from cli._app import console
from integrations.sources import automatic_reason, imap_utf7, parse_mailbox_url, poll_mailbox, sync_status
from models import (
    Account,
    ConfigError,
    Enrollment,
    InboundMessage,
    SyncCursor,
    TimelineEvent,
    Touch,
    make_engine,
    table_of,
)
from tests.integrations.conftest import MAILBOX_PASSWORD, MAILBOX_USER, Dovecot, SmtpServer, Tls

SAMPLES = Path(__file__).resolve().parents[2] / "docs" / "samples"
Retain = Callable[..., str]


def _message(**headers: str) -> EmailMessage:
    message = EmailMessage()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Thanks, see you on the call.\n")
    return message


def _send(relay: SmtpServer, message: EmailMessage) -> None:
    """The customer's mail client: SMTP to their server, which delivers into the mailbox."""
    with smtplib.SMTP(relay.host, relay.port, timeout=10) as smtp:
        smtp.send_message(message)


@pytest.fixture
def retain(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    smtp_server: SmtpServer,
    mailbox: Dovecot,
) -> Retain:
    """``retain ARGS…`` on a new SQLite file, email sent through a real SMTP server and replies read
    from the dovecot mailbox; returns stdout and asserts the command succeeded."""
    url = f"sqlite:///{tmp_path / 'retain.db'}"
    monkeypatch.setenv("RETAIN_DATABASE_URL", url)
    monkeypatch.setenv("RETAIN_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("RETAIN_SMTP_URL", smtp_server.url(query="starttls=false"))
    monkeypatch.setenv("RETAIN_EMAIL_FROM", "Acme Success <success@acme.example>")
    monkeypatch.setenv("RETAIN_MAILBOX_URL", mailbox.url())
    monkeypatch.setenv("RETAIN_SECRET_MAILBOX_PASSWORD", MAILBOX_PASSWORD)
    monkeypatch.setattr(console, "width", 200)

    def run(*args: str | Path) -> str:
        code = cli.main(list(map(str, args)))
        out = capsys.readouterr()
        assert code == 0, (args, out.out, out.err)
        return out.out

    run("init")
    return run


def _engine() -> Engine:
    return make_engine(os.environ["RETAIN_DATABASE_URL"])


def _newest(mailbox: Dovecot) -> str:
    """``UIDVALIDITY:UID`` of the newest message in the mailbox, as the server says."""
    with imaplib.IMAP4("127.0.0.1", mailbox.imap_port) as imap:
        imap.login(MAILBOX_USER, MAILBOX_PASSWORD)
        imap.select("INBOX", readonly=True)
        validity = int(imap.response("UIDVALIDITY")[1][0])
        return f"{validity}:{max(map(int, imap.uid('SEARCH', 'ALL')[1][0].split()))}"


def _as_if_rebuilt(engine: Engine, source: str, mailbox: Dovecot) -> None:
    """The mailbox's cursor as if its folder had had another UIDVALIDITY (a rebuilt folder)."""
    with engine.begin() as conn:
        cursor = conn.execute(select(SyncCursor.cursor).where(SyncCursor.source == source)).scalar_one()
        assert cursor == _newest(mailbox)  # UIDVALIDITY:UID of the last message read
        rebuilt = update(table_of(SyncCursor)).where(SyncCursor.source == source)
        conn.execute(rebuilt.values(cursor="1:" + cursor.split(":")[1]))


def test_a_reply_ends_the_renewal_silence_branch_and_an_out_of_office_does_not(
    retain: Retain, smtp_server: SmtpServer, mail_relay: SmtpServer, mailbox: Dovecot
) -> None:
    retain("accounts", "import", SAMPLES / "accounts.csv")
    retain("contacts", "import", SAMPLES / "contacts.csv")
    # umbrella renews in 51 days: kickoff, then the first note after three days, then the silence
    # branch (wait_for a reply, 10 days at most)
    retain("run", "renewal", "--as-of", "2027-03-10T15:00:00Z", "--no-prefect")
    retain("run", "renewal", "--as-of", "2027-03-14T13:31:00Z", "--no-prefect")
    retain("run", "renewal", "--as-of", "2027-03-15T14:00:00Z", "--no-prefect")
    [note] = [m.message for m in smtp_server.sink.messages if m.rcpt_tos == ["uma@umbrella.example"]]
    sent_id = note["Message-ID"]
    engine = _engine()

    def enrollment() -> Enrollment:
        with Session(engine) as s:
            umbrella = s.execute(select(Account).where(Account.external_id == "umbrella")).scalar_one()
            return s.execute(select(Enrollment).where(Enrollment.account_id == umbrella.id)).scalar_one()

    assert enrollment().step_id == "first_reply"

    # Uma is away: her mail system answers by itself; a newsletter arrives too, and a colleague
    # writes in the thread from the team's own address
    _send(mail_relay, _message(From="Uma Ullmann <uma@umbrella.example>", To="success@acme.example",
                               Subject=f"Automatic reply: {note['Subject']}", In_Reply_To=sent_id,
                               Auto_Submitted="auto-replied", Message_ID=make_msgid(domain="umbrella.example")))  # fmt: skip
    _send(mail_relay, _message(From="news@vendor.example", To="success@acme.example", Subject="Our spring news",
                               Message_ID=make_msgid(domain="vendor.example")))  # fmt: skip
    _send(mail_relay, _message(From="Acme Success <success@acme.example>", To="uma@umbrella.example",
                               Subject=f"Re: {note['Subject']}", In_Reply_To=sent_id,
                               Message_ID=make_msgid(domain="acme.example")))  # fmt: skip
    out = retain("replies", "poll")
    assert (
        "3 new messages, 0 replies, 1 automatic replies, 1 not about a Retain email (left alone), 0 processed "
        "before, 1 from the team's side (not counted)"
    ) in out
    retain("run", "renewal", "--as-of", "2027-03-15T18:00:00Z", "--no-prefect")
    assert enrollment().step_id == "first_reply"  # still waiting: neither is the customer's answer

    # back at her desk, she answers
    reply = _message(From="Uma Ullmann <uma@umbrella.example>", To="success@acme.example",
                     Subject=f"Re: {note['Subject']}", In_Reply_To=sent_id, References=sent_id,
                     Message_ID=make_msgid(domain="umbrella.example"))  # fmt: skip
    _send(mail_relay, reply)
    assert "1 new messages, 1 replies, 0 automatic replies, 0 not about a Retain email" in retain("replies", "poll")
    again = json.loads(retain("replies", "poll", "--format", "json"))  # polling again finds nothing new
    assert (again["read"], again["replies"], again["touches"]) == (0, 0, [])
    assert mail_relay.sink.delivered == 4  # type: ignore[attr-defined]

    # the next tick ends the silence branch: on track, no escalation; the 60-day note goes out
    retain("run", "renewal", "--as-of", "2027-03-15T20:00:00Z", "--no-prefect")
    assert enrollment().step_id == "breathing_room"
    with Session(engine) as s:
        touch = s.execute(select(Touch).where(Touch.step_id == "first_note")).scalar_one()
        assert touch.provider_id == sent_id and touch.replied_at == touch.sent_at  # the reply came "now"
        steps = ["first_note", "first_reply", "on_track"]
        timeline = s.execute(select(TimelineEvent).where(col(TimelineEvent.step_id).in_(steps))).scalars().all()
    said = [(e.kind, e.summary) for e in timeline]
    assert ("auto_reply", "automatic reply to first_note from uma@umbrella.example (Auto-Submitted: auto-replied): not counted as a reply") in said  # fmt: skip
    assert ("replied", "reply to first_note from uma@umbrella.example (mailbox)") in said
    assert ("wait_for", 'first_reply: condition met: touches("first_note").replied') in said
    assert ("branch", "on_track: yes -> until_60") in said

    # the folder rebuilt (a new UIDVALIDITY): everything is read again, and nothing counted twice
    source = parse_mailbox_url(os.environ["RETAIN_MAILBOX_URL"]).source
    _as_if_rebuilt(engine, source, mailbox)
    out = retain("replies", "poll")
    assert "(its UIDVALIDITY changed: read from the start): 4 new messages, 0 replies, 0 automatic replies, 1 not about a Retain email (left alone), 2 processed before, 1 from the team's side" in out  # fmt: skip
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table_of(InboundMessage))).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(table_of(TimelineEvent)).where(TimelineEvent.kind == "replied")).scalar_one() == 1  # fmt: skip
    # each poll is a sync run of the mailbox, which retain sync status shows: 4 so far, the last one ok
    [status] = json.loads(retain("sync", "status", "--format", "json"))
    assert (status["source"], status["kind"], status["last_run"], status["runs"]) == (source, "mailbox", "ok", 4)
    assert "2 processed before" in status["message"] and status["cursor"] == _newest(mailbox)  # the folder's own again
    engine.dispose()


def test_over_tls_a_wrong_password_is_a_clear_error_kept_for_status(
    dovecot: Dovecot, tls: Tls, sqlite_engine: Engine
) -> None:
    mailbox = parse_mailbox_url(dovecot.url(tls=True))
    now = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    result = poll_mailbox(sqlite_engine, mailbox, now=now, password=MAILBOX_PASSWORD, ssl_context=tls.client)
    assert result.uidvalidity is not None and result.line().startswith(
        "mailbox imaps://success%40acme.example@127.0.0.1:"
    )
    with pytest.raises(
        ConfigError, match=r"refused the login of 'success@acme.example'.*RETAIN_SECRET_MAILBOX_PASSWORD"
    ):
        poll_mailbox(sqlite_engine, mailbox, now=now, password="wrong", ssl_context=tls.client)
    with sqlite_engine.connect() as conn:
        [status] = sync_status(conn)
    assert status.status == "failed" and status.message is not None and "refused the login" in status.message
    # a server whose certificate the client does not trust is refused, not read
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        poll_mailbox(sqlite_engine, mailbox, now=now, password=MAILBOX_PASSWORD)


# --- what a message is, what a URL says -----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Subject": "Re: Planning your renewal"}, None),
        ({"Subject": "Re: Planning your renewal", "Auto-Submitted": "no"}, None),
        (
            {"Subject": "Re: renewal", "Auto-Submitted": "auto-replied; owner-email=uma@umbrella.example"},
            "Auto-Submitted: auto-replied",
        ),
        ({"Subject": "Re: renewal", "Auto-Submitted": "auto-generated"}, "Auto-Submitted: auto-generated"),
        ({"Subject": "Re: renewal", "X-Autoreply": "yes"}, "X-Autoreply"),
        ({"Subject": "Re: renewal", "X-Autorespond": "vacation"}, "X-Autorespond"),
        ({"Subject": "Re: renewal", "Precedence": "auto_reply"}, "Precedence: auto_reply"),
        ({"Subject": "Re: renewal", "Precedence": "Bulk"}, "Precedence: bulk"),
        ({"Subject": "Re: renewal", "Precedence": "junk"}, "Precedence: junk"),
        ({"Subject": "Re: renewal", "Precedence": "list"}, None),
        ({"Subject": "Re: renewal", "X-Auto-Response-Suppress": "DR, OOF"}, "X-Auto-Response-Suppress: OOF"),
        ({"Subject": "Re: renewal", "Return-Path": "<>"}, "a null sender (Return-Path: <>)"),
        ({"Subject": "Re: renewal", "Return-Path": "<uma@umbrella.example>"}, None),
        (
            {
                "Subject": "Delivery Status Notification",
                "Content-Type": "multipart/report; report-type=delivery-status",
            },
            "a delivery report",
        ),
        ({"Subject": "Out of Office: Planning your renewal"}, "out-of-office subject ('out of office')"),
        ({"Subject": "Automatic reply: Planning your renewal"}, "out-of-office subject ('automatic reply')"),
        ({"Subject": "Abwesenheitsnotiz: Ihre Verlängerung"}, "out-of-office subject ('abwesenheitsnotiz')"),
        ({"Subject": "Réponse automatique : votre renouvellement"}, "out-of-office subject ('réponse automatique')"),
    ],
)
def test_automatic_replies_are_told_apart(headers: dict[str, str], reason: str | None) -> None:
    message = EmailMessage()
    for name, value in headers.items():
        message[name] = value
    assert automatic_reason(message) == reason


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("pop3://me@host/INBOX", "RETAIN_MAILBOX_URL must start with imaps://"),
        ("imaps://me:hunter2@host/INBOX", "RETAIN_MAILBOX_URL holds a password: take it out of the URL"),
        ("imaps://host/INBOX", "RETAIN_MAILBOX_URL names no user"),
        ("imaps://me@host:nine/INBOX", "RETAIN_MAILBOX_URL: the port is not a number"),
        ("imaps://me@host/INBOX?starttls=true", "imaps:// is TLS already"),
        ("imap://me@host/INBOX?folder=x", "the options are starttls=true|false|auto and secret=<name>, not 'folder'"),
    ],
)
def test_a_bad_mailbox_url_says_what_is_wrong_and_never_repeats_a_password(url: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mailbox_url(url)
    assert error in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_mailbox_url_names_the_folder_and_the_secret() -> None:
    mailbox = parse_mailbox_url("imap://cs%40acme.example@mail.acme.example/Customer%20replies?secret=cs_mailbox")
    assert (mailbox.username, mailbox.port, mailbox.folder, mailbox.secret) == (
        "cs@acme.example",
        143,
        "Customer replies",
        "cs_mailbox",
    )
    assert mailbox.use_tls is False and mailbox.start_tls is None
    assert str(mailbox) == "imap://cs%40acme.example@mail.acme.example:143/Customer%20replies"
    assert str(parse_mailbox_url("imaps://me@host")) == "imaps://me@host:993/INBOX"


# --- two pollers at once (PostgreSQL), and the scheduled flow (Prefect) ------------------------------

SENT_AT = datetime(2027, 3, 15, 14, 0, tzinfo=UTC)


def _sent_note(engine: Engine, *, id_kept: bool = True) -> str:
    """An account and an email touch delivered to it (as the outbox leaves them; without its
    Message-ID kept, as a send in doubt resolved by hand leaves it); its Message-ID."""
    from sqlalchemy import insert

    from integrations.channels.email import message_id

    key = "renewal:1:first_note:1:4"
    sent_id = message_id(key, "acme.example")
    with engine.begin() as conn:
        conn.execute(insert(table_of(Account)), {"external_id": "umbrella", "name": "Umbrella Corp", "custom": {}})
        conn.execute(
            insert(table_of(Touch)),
            {"key": key, "account_id": 1, "playbook": "renewal", "step_id": "first_note", "channel": "email",
             "status": "delivered", "payload": {}, "provider_id": sent_id if id_kept else None, "sent_at": SENT_AT,
             "delivered_at": SENT_AT},
        )  # fmt: skip
    return sent_id


def test_two_pollers_at_once_record_each_reply_once(mailbox: Dovecot, pg_clean: Engine) -> None:
    """Two workers poll the same mailbox into the same PostgreSQL database at the same moment: each
    reply is recorded once (the unique Message-ID), whichever poller wins each batch."""
    from concurrent.futures import ThreadPoolExecutor

    engine = pg_clean
    sent_id = _sent_note(engine)
    replies = 6
    for n in range(replies):
        reply = _message(From="uma@umbrella.example", To="success@acme.example", Subject=f"Re: note ({n})",
                         In_Reply_To=sent_id, Message_ID=make_msgid(domain="umbrella.example"))  # fmt: skip
        mailbox.deliver(reply.as_bytes(), "uma@umbrella.example")
    where = parse_mailbox_url(mailbox.url())
    now = datetime(2027, 3, 16, 9, 0, tzinfo=UTC)

    def poll() -> int:
        return poll_mailbox(engine, where, now=now, password=MAILBOX_PASSWORD, batch=2).replies

    with ThreadPoolExecutor(2) as pool:
        counted = list(pool.map(lambda _: poll(), range(2)))
    assert sum(counted) == replies, counted
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(table_of(InboundMessage))).scalar_one() == replies
        replied = conn.execute(select(func.count()).select_from(table_of(TimelineEvent))).scalar_one()
        assert replied == replies
        assert conn.execute(select(Touch.replied_at)).scalar_one() == SENT_AT  # the first reply's time
        runs = sync_status(conn)
    assert [(s.kind, s.status, s.runs) for s in runs] == [("mailbox", "ok", 2)]


def test_the_scheduled_flow_reads_the_mailbox_through_prefect(
    prefect_api: None, mailbox: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``replies`` deployment's flow: without a mailbox configured a run that says so; with one,
    the reply read and its touch marked; an unreachable mailbox a Failed run with the reason (no
    traceback), kept as a failed sync run of the mailbox."""
    from flows.orchestration.replies import poll_replies
    from flows.orchestration.runtime import prefect_environment
    from models import Settings
    from tests._sqlite import migrated_sqlite
    from tests.integrations.conftest import free_port

    url = f"sqlite:///{tmp_path / 'replies.db'}"
    engine = migrated_sqlite(url)
    sent_id = _sent_note(engine)
    settings = Settings(database_url=url, outbox_dir=tmp_path / "outbox")  # type: ignore[call-arg]
    monkeypatch.setenv("RETAIN_DATABASE_URL", url)
    monkeypatch.delenv("RETAIN_MAILBOX_URL", raising=False)
    with prefect_environment(settings):
        state = poll_replies(return_state=True)
    assert state.is_completed() and state.result() == {"mailbox": None}

    reply = _message(From="uma@umbrella.example", To="success@acme.example", Subject="Re: note",
                     In_Reply_To=sent_id, Message_ID=make_msgid(domain="umbrella.example"))  # fmt: skip
    mailbox.deliver(reply.as_bytes(), "uma@umbrella.example")
    monkeypatch.setenv("RETAIN_MAILBOX_URL", mailbox.url())
    monkeypatch.setenv("RETAIN_SECRET_MAILBOX_PASSWORD", MAILBOX_PASSWORD)
    with prefect_environment(settings):
        state = poll_replies(return_state=True)
    assert state.is_completed(), state
    found = state.result()
    assert (found["replies"], found["touches"]) == (1, ["renewal:1:first_note:1:4"])
    with engine.connect() as conn:
        assert conn.execute(select(Touch.replied_at)).scalar_one() == SENT_AT

    port = free_port()  # nothing listens there
    monkeypatch.setenv("RETAIN_MAILBOX_URL", f"imap://cs@127.0.0.1:{port}/INBOX?starttls=false")
    with prefect_environment(settings):
        state = poll_replies(return_state=True)
    assert state.is_failed() and f"mailbox imap://cs@127.0.0.1:{port}/INBOX: " in str(state.message)
    assert "refused" in str(state.message).lower() and "Traceback" not in str(state.message)
    with engine.connect() as conn:
        failed = {s.source: s.status for s in sync_status(conn)}
    assert failed[f"mailbox:cs@127.0.0.1:{port}/INBOX"] == "failed"
    engine.dispose()


def test_a_reply_to_a_send_resolved_by_hand_is_found_by_its_key(mailbox: Dovecot, sqlite_engine: Engine) -> None:
    """A send in doubt that a person resolved as delivered (``retain outbox resolve --delivered``)
    kept no Message-ID: its reply is still matched, by the hash of the key the id carries."""
    sent_id = _sent_note(sqlite_engine, id_kept=False)
    reply = _message(From="uma@umbrella.example", To="success@acme.example", Subject="Re: note",
                     References=f"<older@umbrella.example> {sent_id}", Message_ID=make_msgid(domain="umbrella.example"))  # fmt: skip
    mailbox.deliver(reply.as_bytes(), "uma@umbrella.example")
    mailbox.deliver(b"Subject: no headers to speak of\r\n\r\nText.\r\n")  # no Message-ID, no reference
    result = poll_mailbox(sqlite_engine, parse_mailbox_url(mailbox.url()), now=SENT_AT, password=MAILBOX_PASSWORD)
    assert (result.read, result.replies, result.unknown, result.touches) == (2, 1, 1, ["renewal:1:first_note:1:4"])
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(Touch.replied_at)).scalar_one() == SENT_AT


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Réponses", "R&AOk-ponses"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's own example
        ("Sales & Renewals", "Sales &- Renewals"),
    ],
)
def test_folder_names_travel_in_modified_utf7(name: str, encoded: str) -> None:
    assert imap_utf7(name) == encoded


def test_a_folder_with_any_name_and_a_password_with_any_characters(mailbox: Dovecot, sqlite_engine: Engine) -> None:
    """A folder named outside ASCII is read; a missing folder and a refused non-ASCII password
    (sent with AUTHENTICATE PLAIN: LOGIN carries ASCII only) are clear errors."""
    with imaplib.IMAP4("127.0.0.1", mailbox.imap_port) as imap:
        imap.login(MAILBOX_USER, MAILBOX_PASSWORD)
        imap.create(f'"{imap_utf7("Réponses clients")}"')
    now = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)
    folder = parse_mailbox_url(mailbox.url().replace("/INBOX", "/R%C3%A9ponses%20clients"))
    result = poll_mailbox(sqlite_engine, folder, now=now, password=MAILBOX_PASSWORD)
    assert result.read == 0 and result.uidvalidity is not None
    missing = parse_mailbox_url(mailbox.url().replace("/INBOX", "/Archive"))
    with pytest.raises(ConfigError, match="no folder 'Archive'"):
        poll_mailbox(sqlite_engine, missing, now=now, password=MAILBOX_PASSWORD)
    with pytest.raises(ConfigError, match="refused the login"):
        poll_mailbox(sqlite_engine, folder, now=now, password="pässwörd")
