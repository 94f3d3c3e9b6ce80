"""The reliability run: kill ticks and outbox runs with SIGKILL at random moments, let them finish,
and count what reached the receivers.

A playbook writes, each day for ``--days`` days, one email (to a local aiosmtpd server) and one
webhook (to a local HTTP receiver) per account. Jobs run one after the other in child processes
(the SIGKILL harness of ``tests/flows/test_outbox_crash.py``): a tick of the day or an outbox run
alone, each killed at a random moment, until ``--kills`` of them died by SIGKILL; the simulated day
moves on as the kills go. Then the ticks and outbox runs finish undisturbed, and the run prints::

    expected touches, delivered, duplicates, lost, unknown

*duplicates*: an email received twice, or two different touches for one enrollment and step (an
enrollment advanced twice). A webhook repeated with the same ``Idempotency-Key`` after a kill is
not one: the receiver drops it (counted apart). *lost*: a touch that never reached its receiver
and is not ``unknown`` (shown to people) or failed for good by a 4xx. *unknown*: emails whose send
a kill interrupted (SMTP cannot drop a repeat): a person resolves them (``retain outbox resolve``).

``--vendor-faults``: the webhook receiver answers 10% 429 (``Retry-After: 1``), 10% 5xx and 10%
slowly (1-2 s); one account in 20 has an endpoint that answers 400 for good. The run then also
prints the faults seen, whether Retry-After was honoured, the most attempts one touch took (the cap
is 8) and whether a touch answered 400 was ever asked again without a kill in between.

Run: ``python bench/reliability.py --kills 50 [--vendor-faults] [--accounts 30] [--seed 7]``.
The test group ``pytest -m reliability`` runs it small.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from flows.engine.outbox import DeliveryPolicy, deliver  # noqa: E402
from flows.engine.tick import delivery_policy, tick  # noqa: E402
from integrations.channels import SmtpEmailChannel, WebhookChannel  # noqa: E402
from models import Account, Contact, Touch, make_engine, table_of, upgrade  # noqa: E402
from models.playbook import PolicySpec  # noqa: E402
from playbooks import compile_source  # noqa: E402
from tests.flows.test_outbox_crash import CHILD, SECRET, Receiver  # noqa: E402  (the SIGKILL harness)
from tests.integrations.conftest import SmtpSink, free_port  # noqa: E402

T0 = datetime(2027, 3, 2, 10, 0, tzinfo=UTC)  # a Tuesday morning
SENDER = "Retain <cs@retain.test>"
SMTP_PAUSE = 0.03  # seconds the SMTP server takes per message: kills land mid-send
HOOK_PAUSE = (0.01, 0.05)  # seconds the webhook receiver takes per request
#: a 429's wait is written on the touch a few milliseconds after the answer arrives; a kill inside
#: that moment leaves nothing to honour (the next run cannot know), so such a 429 is counted apart
RECORD_WINDOW = 0.5


def playbook_source(days: int) -> str:
    steps = []
    for day in range(days):
        steps += [
            f"""
  - id: mail_{day}
    kind: email
    subject: "Day {day} for {{{{ account.name }}}}"
    body: "Hello {{{{ contact.name }}}}, this is day {day}."
  - id: hook_{day}
    kind: webhook
    url: "{{{{ account.custom.url }}}}"
    json:
      account: "{{{{ account.external_id }}}}"
      step: hook_{day}
  - id: wait_{day}
    kind: wait
    for: 1 day"""
        ]
    head = """playbook: reliable
name: Reliable
lifecycle: custom
audience: account.status == "active"
steps:"""
    return head + "".join(steps) + "\n"


# --- the receivers ------------------------------------------------------------------------------


class SlowSmtpSink(SmtpSink):
    """Keeps every message (with the time it came), after a short pause."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(SMTP_PAUSE)
        return await super().handle_DATA(server, session, envelope)


@dataclass
class Receivers:
    hooks: Receiver
    smtp: SlowSmtpSink
    smtp_url: str


@contextmanager
def receivers(rng: random.Random, vendor_faults: bool, bad_paths: set[str]) -> Iterator[Receivers]:
    hooks = Receiver()
    lock = threading.Lock()

    def pause(path: str) -> float:
        with lock:
            if vendor_faults and rng.random() < 0.10:
                return rng.uniform(1.0, 2.0)  # a slow answer (the client waits up to 10 s)
            return rng.uniform(*HOOK_PAUSE)

    hooks.pause = pause
    if vendor_faults:
        hooks.retry_after = "1"
    threading.Thread(target=hooks.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    sink = SlowSmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), ready_timeout=5)
    controller.start()
    try:
        yield Receivers(hooks, sink, f"smtp://127.0.0.1:{controller.port}?starttls=false")
    finally:
        controller.stop()
        hooks.release.set()
        hooks.shutdown()
        hooks.server_close()


def fault_script(rng: random.Random, path: str, bad: bool) -> list[int]:
    """Answers to a key's successive requests: 10% 429, 10% 5xx, else 200; 400 for good on a bad path."""
    if bad:
        return [400] * 50
    answers = []
    for _ in range(12):
        draw = rng.random()
        answers.append(429 if draw < 0.10 else rng.choice([500, 502, 503]) if draw < 0.20 else 200)
    return answers


# --- the book ------------------------------------------------------------------------------------


def make_book(db: Path, url: str, accounts: int, bad_every: int | None) -> set[str]:
    """Accounts with one primary contact each, and their webhook paths; returns the paths that 400."""
    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    bad: set[str] = set()
    with engine.begin() as conn:
        rows = []
        for i in range(accounts):
            path = f"/hook/a{i:03d}"
            if bad_every and i % bad_every == bad_every - 1:
                path = f"/bad/a{i:03d}"
                bad.add(path)
            rows.append(
                {
                    "external_id": f"a{i:03d}",
                    "name": f"Account {i}",
                    "status": "active",
                    "custom": {"url": url + path},
                    "timezone": "UTC",
                    "created_at": T0,
                    "updated_at": T0,
                }
            )
        conn.execute(insert(table_of(Account)), rows)
        ids = [row[0] for row in conn.execute(select(table_of(Account).c.id).order_by(table_of(Account).c.id))]
        conn.execute(
            insert(table_of(Contact)),
            [
                {
                    "account_id": account_id,
                    "email": f"pat{n}@customer.test",
                    "name": f"Pat {n}",
                    "is_primary": True,
                    "unsubscribed": False,
                    "unsubscribed_channels": [],
                    "preferences": {},
                    "timezone": "UTC",
                }
                for n, account_id in enumerate(ids)
            ],
        )
    engine.dispose()
    return bad


# --- the kills -----------------------------------------------------------------------------------


@dataclass
class Kills:
    jobs: Counter[str] = field(default_factory=Counter)  # mode -> jobs started
    killed: Counter[str] = field(default_factory=Counter)  # mode -> died by SIGKILL
    at: list[float] = field(default_factory=list)  # monotonic times of the kills

    @property
    def total(self) -> int:
        return sum(self.killed.values())


class Harness:
    """The SIGKILL harness's child process: it imported Retain once and forks one process per job."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, job: dict[str, Any], kill_after: float | None, kills: Kills) -> int:
        """One job; SIGKILL it after ``kill_after`` seconds. Returns its exit code."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({**job, "wait": True}) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]  # forked: the job runs from now on
        kills.jobs[job["mode"]] += 1
        killed_at = None
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
            except ProcessLookupError:
                pass
        exit_code = int(json.loads(self.proc.stdout.readline())["exit"])
        if exit_code == -signal.SIGKILL:
            kills.killed[job["mode"]] += 1
            kills.at.append(killed_at or time.monotonic())
        return exit_code

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


# --- the figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    expected: int
    delivered: int
    duplicates: int
    lost: int
    unknown: int
    unknown_arrived: int
    failed: int
    failed_4xx: int
    pending: int
    same_key_repeats: int  # webhook requests repeated with the same key after a kill (dropped by key)
    kills: Kills
    accounts: int
    days: int
    vendor: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        k = self.kills
        out = [
            f"reliability run: {k.total} kills by SIGKILL ({k.killed['tick']} ticks, {k.killed['outbox']} outbox runs; "
            f"{sum(k.jobs.values())} jobs), {self.accounts} accounts x {self.days} days, {self.seconds:.0f} s",
            f"expected touches {self.expected}, delivered {self.delivered}, duplicates {self.duplicates}, "
            f"lost {self.lost}, unknown {self.unknown}",
            f"  unknown: {self.unknown_arrived} had reached the SMTP server, {self.unknown - self.unknown_arrived} "
            f"had not (a person resolves them); failed {self.failed} ({self.failed_4xx} answered 4xx for good, "
            f"{self.failed - self.failed_4xx} cut short or out of retries 8 times); still pending: {self.pending}",
            f"  webhook requests repeated with the same Idempotency-Key after a kill (dropped by the receiver): "
            f"{self.same_key_repeats}",
        ]
        if self.vendor:
            v = self.vendor
            out.append(
                f"  vendor: {v['requests']} requests, 429 {v['429']}, 5xx {v['5xx']}, slow {v['slow']}; "
                f"Retry-After honoured {v['retry_after_honoured']}/{v['retry_after_followed']}"
                + (
                    f" ({v['retry_after_unrecorded']} more 429s met a kill within {RECORD_WINDOW:g} s, before "
                    "their wait was written down)"
                    if v["retry_after_unrecorded"]
                    else ""
                )
            )
            out.append(
                f"  failed after the retry cap ({v['cap']} attempts): {v['capped']}; most attempts for one touch "
                f"{v['max_attempts']} (a send cut short by a kill counts as one), most faults it rode out "
                f"{v['max_faults']}"
            )
            out.append(
                f"  permanent 4xx: {v['bad_touches']} touches failed with the answer recorded; asked again after "
                f"the 400 without a kill in between: {v['asked_again_4xx']}"
            )
        return out


def figures(
    db: Path, rec: Receivers, bad_paths: set[str], accounts: int, days: int, kills: Kills, slow: int
) -> Figures:
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = list(conn.execute(select(table_of(Touch))))
    engine.dispose()
    expected = accounts * days * 2
    by_key = {r.key: r for r in rows}
    bad_keys = {r.key for r in rows if r.channel == "webhook" and any(r.payload["url"].endswith(p) for p in bad_paths)}

    def slot(key: str) -> tuple[str, str]:
        _, enrollment, step, *_ = key.split(":")
        return enrollment, step

    # what reached the receivers
    mails = Counter(str(m.message["X-Retain-Key"]) for m in rec.smtp.messages)
    seen = rec.hooks.snapshot()
    accepted = Counter(s.key for s in seen if 200 <= s.status < 300)
    effects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key in list(mails) + [k for k in accepted if k]:
        effects[slot(key)].add(key)
    duplicates = sum(n - 1 for n in mails.values()) + sum(len(keys) - 1 for keys in effects.values())
    same_key = sum(n - 1 for n in accepted.values())
    unknown = [r for r in rows if r.status == "unknown"]
    lost = expected - len(rows)  # touches never written
    for r in rows:
        arrived = mails[r.key] > 0 if r.channel == "email" else accepted[r.key] > 0
        if not arrived and r.status not in ("unknown",) and r.key not in bad_keys:
            lost += 1
    figs = Figures(
        expected=expected,
        delivered=sum(1 for r in rows if r.status == "delivered"),
        duplicates=duplicates,
        lost=lost,
        unknown=len(unknown),
        unknown_arrived=sum(1 for r in unknown if mails[r.key] > 0),
        failed=sum(1 for r in rows if r.status == "failed"),
        failed_4xx=sum(1 for r in rows if r.status == "failed" and r.key in bad_keys),
        pending=sum(1 for r in rows if r.status in ("pending", "sending")),
        same_key_repeats=same_key,
        kills=kills,
        accounts=accounts,
        days=days,
    )
    if bad_paths or rec.hooks.retry_after != "0":
        followed = honoured = asked_again = unrecorded = 0
        requests: dict[str | None, list[Any]] = defaultdict(list)
        for s in seen:
            requests[s.key].append(s)
        for reqs in requests.values():
            for first, after in itertools.pairwise(reqs):
                if first.status == 429:
                    kept = after.at - first.at >= 0.95
                    if not kept and any(first.at <= t <= first.at + RECORD_WINDOW for t in kills.at):
                        unrecorded += 1  # killed before it could write the wait down: nothing to honour
                        continue
                    followed += 1
                    honoured += kept
                if first.status == 400 and not any(first.at <= t <= after.at for t in kills.at):
                    asked_again += 1
        figs.vendor = {
            "requests": len(seen),
            "429": sum(1 for s in seen if s.status == 429),
            "5xx": sum(1 for s in seen if s.status >= 500),
            "slow": slow,
            "retry_after_followed": followed,
            "retry_after_honoured": honoured,
            "retry_after_unrecorded": unrecorded,
            "max_attempts": max((r.attempts for r in rows if r.channel == "webhook"), default=0),
            "max_faults": max(Counter(s.key for s in seen if s.status == 429 or s.status >= 500).values(), default=0),
            "capped": sum(1 for r in rows if r.status == "failed" and r.key not in bad_keys),
            "cap": DeliveryPolicy().max_attempts,
            "bad_touches": sum(1 for k in bad_keys if by_key[k].status == "failed"),
            "asked_again_4xx": asked_again,
        }
    return figs


# --- the run -------------------------------------------------------------------------------------


def _kill_jobs(
    job: Callable[[str, int], dict[str, Any]],
    record: Kills,
    rng: random.Random,
    *,
    kills: int,
    days: int,
    max_kill_delay: float,
    say: Callable[[str], None],
) -> None:
    """Run ticks and outbox runs one at a time, each SIGKILLed at a random moment, until ``kills``
    of them died. A job that ends before its kill moment teaches how long that kind of job runs
    here: later kill moments are drawn within it, so kills land whatever the machine's speed. A
    kill that lands widens the reach again (up to ``max_kill_delay``): a job with little to do must
    not pin every later kill to the first moments of the next jobs, where the same first touches
    are always in flight (8 sends cut short fail a touch, see ``recover_interrupted``)."""
    attempts = 0
    reach = {"tick": max_kill_delay, "outbox": max_kill_delay}
    harness = Harness()
    try:
        while record.total < kills and attempts < kills * 4:
            day = min(days - 1, record.total * days // max(kills, 1))
            mode = "tick" if rng.random() < 0.6 else "outbox"
            began = time.monotonic()
            if harness.run(job(mode, day), rng.uniform(0.0, reach[mode]), record) != -signal.SIGKILL:
                reach[mode] = min(reach[mode], 0.8 * (time.monotonic() - began))
            else:
                reach[mode] = min(max_kill_delay, reach[mode] * 1.5)
            attempts += 1
            if attempts % 10 == 0:
                say(f"  {record.total} kills of {kills} ({attempts} jobs), day {day}")
    finally:
        harness.close()


def run(
    *,
    kills: int,
    accounts: int = 30,
    days: int = 4,
    vendor_faults: bool = False,
    seed: int = 7,
    max_kill_delay: float = 1.5,
    workdir: Path | None = None,
    say: Callable[[str], None] = print,
) -> Figures:
    started = time.monotonic()
    rng = random.Random(seed)
    folder = Path(workdir or tempfile.mkdtemp(prefix="retain-reliability-"))
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "reliable.yaml"
    source.write_text(playbook_source(days))
    db = folder / "reliability.db"
    slow = Counter[str]()
    with receivers(rng, vendor_faults, set()) as rec:
        bad_paths = make_book(db, rec.hooks.url, accounts, 20 if vendor_faults else None)
        if vendor_faults:
            rec.hooks.script = {
                f"/{kind}/a{i:03d}": fault_script(rng, f"/{kind}/a{i:03d}", f"/{kind}/a{i:03d}" in bad_paths)
                for i in range(accounts)
                for kind in ("hook", "bad")
            }
            base_pause = rec.hooks.pause
            assert base_pause is not None

            def counted(path: str) -> float:
                seconds = base_pause(path)
                if seconds >= 1.0:
                    slow["slow"] += 1
                return seconds

            rec.hooks.pause = counted
        record = Kills()

        def job(mode: str, day: int) -> dict[str, Any]:
            return {
                "name": f"{mode}-{sum(record.jobs.values())}",
                "db": f"sqlite:///{db}",
                "playbook": str(source),
                "as_of": (T0 + timedelta(days=day)).isoformat(),
                "secret": SECRET,
                "die": "none",
                "log": str(folder / "child.log"),
                "smtp": rec.smtp_url,
                "mode": mode,
            }

        _kill_jobs(job, record, rng, kills=kills, days=days, max_kill_delay=max_kill_delay, say=say)
        # then everything runs to its end, undisturbed: the last day's tick, and outbox runs later on
        # until nothing is waiting (a touch that keeps failing is retried a quarter of an hour later)
        engine = make_engine(f"sqlite:///{db}")
        pb = compile_source(source.read_text(), str(source))
        policy = delivery_policy([pb], PolicySpec())

        def channels() -> dict[str, Any]:
            return {
                "webhook": WebhookChannel(signing_secret=SECRET),
                "email": SmtpEmailChannel(rec.smtp_url, sender=SENDER),
            }

        # (a day whose ticks all died is caught up by a later one: its waits then end a day later)
        last = T0 + timedelta(days=2 * days)
        for day in range(2 * days + 1):
            tick(engine, pb, T0 + timedelta(days=day), channels=channels(), delivery=policy)
        t = table_of(Touch)
        for hour in range(1, 25):
            deliver(engine, channels(), as_of=last + timedelta(hours=hour), policy=policy)
            with engine.connect() as conn:
                waiting = conn.execute(
                    select(func.max(t.c.retry_not_before), func.count()).where(t.c.status.in_(["pending", "sending"]))
                ).one()
            if waiting[1] == 0:
                break
            if waiting[0] is not None:  # a Retry-After or back-off a killed run wrote down: wall clock
                time.sleep(max(0.0, (waiting[0].replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()))
        engine.dispose()
        time.sleep(SMTP_PAUSE * 4)  # the SMTP server's last messages
        figs = figures(db, rec, bad_paths, accounts, days, record, slow["slow"])
    figs.seconds = time.monotonic() - started
    return figs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs to land (default 50)")
    parser.add_argument("--accounts", type=int, default=30)
    parser.add_argument("--days", type=int, default=4, help="days of the playbook (an email and a webhook each)")
    parser.add_argument("--vendor-faults", action="store_true", help="the webhook vendor answers 429/5xx/slowly")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-kill-delay", type=float, default=1.5, help="seconds: kills land in [0, this]")
    args = parser.parse_args(argv)
    figs = run(
        kills=args.kills,
        accounts=args.accounts,
        days=args.days,
        vendor_faults=args.vendor_faults,
        seed=args.seed,
        max_kill_delay=args.max_kill_delay,
    )
    print("\n".join(figs.lines()))
    return 0 if figs.duplicates == 0 and figs.lost == 0 and figs.pending == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
