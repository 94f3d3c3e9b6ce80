"""``retain demo``: a synthetic book of business and a simulated stretch of days, tick by tick.

Plain functions do the work (``prepare``, ``seed``, ``simulate_day``, ``run_demo``); the Prefect
flow ``demo_flow`` runs the same functions as ONE flow run with one task per simulated week
(tasks per phase, never per account).

Every simulated day, at 14:00 UTC:

1. **the world moves** (customers, driven by a seeded :class:`random.Random`): new sign-ups,
   product usage, onboarding sign-offs, notices of cancellation, renewals at the renewal date
   (more likely after a delivered renewal touch, so the lift is there to measure), churn at the
   end of a term, reactivations of churned accounts (more likely after win-back touches),
   replies to delivered emails, NPS answers to delivered surveys, support tickets;
2. **the five playbooks tick** (``flows.engine.tick.tick``) and their touches are delivered through the
   configured channels: email, Slack and CRM go to JSON-lines files under ``outbox_dir``, and
   webhooks to a receiver on 127.0.0.1 that this module starts (no traffic leaves the machine).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, exists, func, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from flows.engine.outbox import DeliveryPolicy, deliver
from flows.engine.revisions import RevisionCache
from flows.engine.tasks import complete_tasks
from flows.engine.tick import TickReport, delivery_policy, tick
from integrations.channels import CHANNEL_NAMES, Channel, Delivery, Receipt, build_channel, build_channels
from models import (
    Account,
    ConfigError,
    Contact,
    CsmTask,
    Enrollment,
    IntegrationError,
    RevenueEntry,
    Settings,
    SupportTicket,
    SurveyResponse,
    TaskStatus,
    TimelineEvent,
    Touch,
    TouchStatus,
    UsageMetric,
    session,
    table_of,
    upgrade,
)
from models.tables import holdout_bucket
from playbooks import CompiledPlaybook, load_playbooks, load_policy

__all__ = [
    "PLAYBOOK_ORDER",
    "DayReport",
    "DemoConfig",
    "DemoResult",
    "World",
    "account_count",
    "demo_channels",
    "demo_settings",
    "prepare",
    "reset_database",
    "run_demo",
    "sample_timelines",
    "seed",
    "set_progress_hook",
    "simulate_day",
    "webhook_receiver",
]

#: the order the playbooks tick in each simulated day (the contact policy's priority order)
PLAYBOOK_ORDER = ("renewal", "onboarding", "win_back", "farewell", "check_in")
TICK_HOUR = 14  # each simulated day ticks at 14:00 UTC
WEBHOOK_SECRET_ENV = "RETAIN_SECRET_CRM_WEBHOOK_URL"


@dataclass(frozen=True)
class DemoConfig:
    accounts: int = 500
    days: int = 180
    seed: int = 7
    start: date = date(2027, 1, 4)


# --- the database: refuse a book that is already there, or reset it ------------------------------


def account_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table_of(Account))).scalar_one())


def _all_tables() -> list[Any]:
    """Every Retain table, parents first: all of ``models`` imported, so none is missed."""
    import models

    for module in pkgutil.iter_modules(models.__path__):
        if not module.name.startswith("_") and module.name != "migrations":
            importlib.import_module(f"models.{module.name}")
    return list(SQLModel.metadata.sorted_tables)


def reset_database(engine: Engine) -> int:
    """Delete every row of every Retain table, children first. Returns the rows deleted."""
    deleted = 0
    with engine.begin() as conn:
        for table in reversed(_all_tables()):
            deleted += conn.execute(table.delete()).rowcount or 0
    return deleted


def clear_outbox(outbox_dir: Path) -> list[Path]:
    """Remove the file channels' outputs: their keys belong to the rows just deleted, and the file
    channel would drop a new touch that happens to reuse one."""
    removed = []
    for name in CHANNEL_NAMES:
        path = outbox_dir / f"{name}.jsonl"
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def prepare(engine: Engine, settings: Settings, *, reset: bool) -> int:
    """Create or upgrade the schema; refuse a database that holds accounts unless ``reset``.
    Returns the number of rows deleted by the reset (0 when there was nothing)."""
    upgrade(engine)
    existing = account_count(engine)
    deleted = 0
    if existing and not reset:
        raise ConfigError(
            f"the database {engine.url.render_as_string()} already holds {existing} accounts; "
            "the demo needs an empty one: run it in an empty folder, point --database-url elsewhere, "
            "or add --reset to delete every Retain row in this database first"
        )
    if existing or reset:
        deleted = reset_database(engine)
    clear_outbox(settings.outbox_dir)
    return deleted


# --- word lists ----------------------------------------------------------------------------------

_NAME_A = (
    "North", "Blue", "Iron", "Silver", "Bright", "Cedar", "Harbor", "Summit", "Maple", "Granite",
    "Lumen", "Nova", "Orbit", "Pioneer", "Quartz", "River", "Stone", "Terra", "Vertex", "Willow",
    "Apex", "Beacon", "Cobalt", "Delta", "Ember", "Falcon", "Golden", "Horizon", "Juniper", "Kestrel",
    "Lark", "Meridian", "Nimbus", "Oak", "Pine", "Redwood", "Sage", "Tidal", "Union", "Vale",
    "Zephyr", "Aurora", "Brook", "Crest", "Drift", "Evergreen", "Fjord", "Glacier", "Highland", "Indigo",
)  # fmt: skip
_NAME_B = (
    "wind", "peak", "leaf", "field", "line", "works", "stack", "forge", "point", "bridge",
    "gate", "path", "wave", "light", "rock", "spring", "port", "mark", "shore", "view",
)  # fmt: skip
_INDUSTRIES = {
    "Analytics": "Software", "Logistics": "Logistics", "Health": "Healthcare", "Foods": "Food & Beverage",
    "Robotics": "Manufacturing", "Capital": "Financial Services", "Labs": "Software", "Energy": "Energy",
    "Retail": "Retail", "Media": "Media", "Software": "Software", "Systems": "IT Services",
    "Studios": "Media", "Travel": "Travel", "Insurance": "Insurance", "Consulting": "Professional Services",
    "Manufacturing": "Manufacturing", "Learning": "Education", "Bio": "Life Sciences", "Mobility": "Transportation",
}  # fmt: skip
# country, weight, time zones, currency, legal suffixes
_COUNTRIES: tuple[tuple[str, int, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("US", 30, ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"), "USD", ("Inc.", "LLC", "")),
    ("CA", 5, ("America/Toronto", "America/Vancouver"), "USD", ("Inc.", "Ltd.", "")),
    ("BR", 4, ("America/Sao_Paulo",), "USD", ("Ltda.", "S.A.", "")),
    ("MX", 2, ("America/Mexico_City",), "USD", ("S.A. de C.V.", "")),
    ("GB", 10, ("Europe/London",), "GBP", ("Ltd", "plc", "")),
    ("IE", 2, ("Europe/Dublin",), "EUR", ("Ltd", "")),
    ("DE", 9, ("Europe/Berlin",), "EUR", ("GmbH", "AG", "")),
    ("FR", 6, ("Europe/Paris",), "EUR", ("SAS", "SA", "")),
    ("NL", 4, ("Europe/Amsterdam",), "EUR", ("B.V.", "")),
    ("ES", 3, ("Europe/Madrid",), "EUR", ("S.L.", "S.A.", "")),
    ("SE", 3, ("Europe/Stockholm",), "EUR", ("AB", "")),
    ("PL", 2, ("Europe/Warsaw",), "EUR", ("sp. z o.o.", "")),
    ("ZA", 2, ("Africa/Johannesburg",), "USD", ("(Pty) Ltd", "")),
    ("NG", 1, ("Africa/Lagos",), "USD", ("Ltd", "")),
    ("AE", 2, ("Asia/Dubai",), "USD", ("LLC", "FZ-LLC", "")),
    ("IN", 5, ("Asia/Kolkata",), "USD", ("Pvt. Ltd.", "")),
    ("SG", 3, ("Asia/Singapore",), "USD", ("Pte. Ltd.", "")),
    ("JP", 3, ("Asia/Tokyo",), "USD", ("K.K.", "")),
    ("KR", 1, ("Asia/Seoul",), "USD", ("Co., Ltd.", "")),
    ("AU", 5, ("Australia/Sydney", "Australia/Melbourne", "Australia/Brisbane"), "USD", ("Pty Ltd", "")),
    ("NZ", 1, ("Pacific/Auckland",), "USD", ("Ltd", "")),
)  # fmt: skip
_FIRST = (
    "Olivia", "Liam", "Emma", "Noah", "Amara", "Mateo", "Sofia", "Lucas", "Mia", "Elias",
    "Aisha", "Kenji", "Yuki", "Arjun", "Priya", "Chen", "Wei", "Fatima", "Omar", "Leila",
    "Jonas", "Freya", "Lars", "Ingrid", "Pierre", "Camille", "Giulia", "Marco", "Ana", "João",
    "Zanele", "Thabo", "Chloe", "Jack", "Grace", "Ethan", "Hannah", "Ravi", "Mei", "Seo-yeon",
)  # fmt: skip
_LAST = (
    "Smith", "Garcia", "Müller", "Nguyen", "Okafor", "Kowalski", "Johansson", "Dubois", "Rossi", "Silva",
    "Tanaka", "Kim", "Patel", "Sharma", "Chen", "Haddad", "Mensah", "O'Brien", "Novak", "van Dijk",
    "Schmidt", "Martin", "Lopez", "Fischer", "Walker", "Ito", "Singh", "Ndlovu", "Costa", "Berg",
)  # fmt: skip
_TITLES = {
    "champion": ("Operations Lead", "Head of Customer Support", "Team Lead", "Product Manager"),
    "admin": ("IT Administrator", "Systems Administrator", "RevOps Manager"),
    "billing": ("Finance Manager", "Accounts Payable", "Controller"),
    "user": ("Support Agent", "Analyst", "Specialist", "Coordinator"),
    "executive": ("VP Operations", "COO", "CEO", "Director of Customer Experience"),
}
_CSMS = (
    ("Maya Okafor", "maya.okafor"),
    ("Daniel Brandt", "daniel.brandt"),
    ("Priya Raman", "priya.raman"),
    ("Lucas Moreau", "lucas.moreau"),
    ("Hana Sato", "hana.sato"),
    ("Sofia Alvarez", "sofia.alvarez"),
)
CSM_DOMAIN = "retain-demo.example"
# plan: weight, ARR range, seats range, segment
_PLANS = {
    "starter": (34, (1_200, 4_800), (3, 12), "smb"),
    "team": (34, (5_000, 18_000), (10, 45), "smb"),
    "business": (22, (18_000, 60_000), (40, 160), "mid-market"),
    "enterprise": (10, (60_000, 380_000), (150, 1_500), "enterprise"),
}
_TICKETS = (
    "SSO login fails for new users",
    "CSV export times out",
    "Question about invoice",
    "How do I add a workspace admin?",
    "Webhook deliveries delayed",
    "Reports show wrong time zone",
    "Request: bulk edit for tags",
    "API rate limit errors",
    "Billing address change",
    "Mobile app crashes on start",
)
_NPS_COMMENTS = {
    "low": ("Too many outages lately.", "Support takes days to answer.", "Missing the integrations we need."),
    "mid": ("Does the job, a bit pricey.", "Good product, reporting could be better.", None),
    "high": ("Our team relies on it every day.", "Great support, fast answers.", "Setup was painless.", None),
}


# --- the simulated customers -----------------------------------------------------------------------


@dataclass
class Profile:
    """One account's hidden behaviour (the world knows it; Retain only sees its traces)."""

    id: int
    external_id: str
    name: str
    seats: int
    engagement: float  # 0..1: how much the team uses the product
    drift: float  # per day
    status: str
    health: str
    signup: date
    renewal_date: date | None
    arr: float
    plan: str
    currency: str
    onboarded: bool
    stall_until: date | None = None  # a new account that does not get going until then
    trial_until: date | None = None
    churned_on: date | None = None
    renew_on: date | None = None  # a renewal decided at the date but recorded late
    recent: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=7))

    def healthy_usage(self) -> bool:
        return sum(x[0] for x in self.recent) >= 10 and sum(x[1] for x in self.recent) >= 5


@dataclass
class SentTouch:
    id: int
    account_id: int
    contact_id: int | None
    playbook: str
    step_id: str
    kind: str  # email | survey
    day: int


@dataclass
class World:
    """The world's state between simulated days (in memory: the demo runs in one process)."""

    cfg: DemoConfig
    rng: random.Random
    profiles: dict[int, Profile] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    csms: list[tuple[str, str]] = field(default_factory=list)
    next_external: int = 1
    recent_touches: list[SentTouch] = field(default_factory=list)
    touched: dict[tuple[int, str], date] = field(default_factory=dict)  # (account, playbook) -> last delivered
    replied: dict[tuple[int, str], date] = field(default_factory=dict)  # (account, playbook) -> last reply
    answered: set[int] = field(default_factory=set)  # touch ids replied to or answered
    remembered: set[int] = field(default_factory=set)  # delivered touch ids the customers have seen
    open_tickets: list[int] = field(default_factory=list)
    seeded: Counter[str] = field(default_factory=Counter)
    totals: Counter[str] = field(default_factory=Counter)  # world events over the whole run
    webhook_requests: int = 0


@dataclass
class DayReport:
    day: int  # 0-based
    as_of: datetime
    events: Counter[str] = field(default_factory=Counter)
    ticks: dict[str, TickReport] = field(default_factory=dict)
    later_delivered: int = 0  # by the delivery passes after the ticks

    @property
    def enrolled(self) -> int:
        return sum(r.enrolled for r in self.ticks.values())

    @property
    def delivered(self) -> int:
        return sum(r.delivered.get("delivered", 0) for r in self.ticks.values()) + self.later_delivered


@dataclass
class DemoResult:
    seeded: dict[str, int]
    days: int
    world: dict[str, int]
    enrolled: dict[str, int]
    delivered: dict[str, int]
    errors: list[str]
    webhook_requests: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "seeded": self.seeded,
            "days": self.days,
            "world": self.world,
            "enrolled": self.enrolled,
            "delivered": self.delivered,
            "errors": self.errors,
            "webhook_requests": self.webhook_requests,
        }


def _at(day: date, hour: int = TICK_HOUR, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _anniversary(start: date, year: int) -> date:
    try:
        return start.replace(year=year)
    except ValueError:  # 29 February
        return date(year, 2, 28)


def _next_anniversary(signup: date, on_or_after: date) -> date:
    candidate = _anniversary(signup, on_or_after.year)
    if candidate < on_or_after:
        candidate = _anniversary(signup, on_or_after.year + 1)
    if candidate <= signup:
        candidate = _anniversary(signup, signup.year + 1)
    return candidate


def _weighted(rng: random.Random, options: dict[str, float]) -> str:
    return rng.choices(list(options), weights=list(options.values()))[0]


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    # Knuth, fine for the small means used here
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _health_of(engagement: float) -> str:
    return "green" if engagement >= 0.55 else "yellow" if engagement >= 0.32 else "red"


def _engagement_for(rng: random.Random, health: str) -> float:
    low, high = {"green": (0.58, 0.95), "yellow": (0.34, 0.54), "red": (0.08, 0.30)}[health]
    return rng.uniform(low, high)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


# --- building accounts and contacts ------------------------------------------------------------------


def _company(world: World) -> tuple[str, str, str, tuple[str, ...], str]:
    """(name, domain, country, time zones, currency)."""
    rng = world.rng
    country, _, zones, currency, suffixes = rng.choices(_COUNTRIES, weights=[c[1] for c in _COUNTRIES])[0]
    for attempt in range(50):
        base = rng.choice(_NAME_A) + rng.choice(_NAME_B)
        industry = rng.choice(list(_INDUSTRIES))
        core = f"{base} {industry}" if rng.random() < 0.7 else base
        if attempt >= 40:
            core = f"{core} {attempt}"
        if core not in world.names:
            break
    world.names.add(core)
    suffix = rng.choice(suffixes)
    name = f"{core} {suffix}".strip()
    return name, f"{_slug(core)}.example.com", country, zones, currency


def _account_row(world: World, *, signup: date, kind: str, start: date) -> tuple[dict[str, Any], Profile, str]:
    """One account row, its hidden profile and its email domain. ``kind``: established, new,
    cancelling, churned."""
    rng = world.rng
    name, domain, country, zones, currency = _company(world)
    plan = _weighted(rng, {p: v[0] for p, v in _PLANS.items()})
    _, (arr_lo, arr_hi), (seats_lo, seats_hi), segment = _PLANS[plan]
    arr = float(round(rng.uniform(arr_lo, arr_hi) / 100) * 100)
    seats = rng.randint(seats_lo, seats_hi)
    health = {"established": _weighted(rng, {"green": 62, "yellow": 25, "red": 13})}.get(kind, "yellow")
    if kind in ("cancelling", "churned"):
        health = _weighted(rng, {"red": 60, "yellow": 40})
    elif kind == "new":
        health = "green"
    engagement = _engagement_for(rng, health)
    csm = None if plan == "starter" and rng.random() < 0.3 else rng.choice(world.csms)
    external_id = f"acc-{world.next_external:05d}"
    world.next_external += 1
    status = "active"
    onboarded_at: datetime | None = None
    renewed_at: datetime | None = None
    cancelled_at: datetime | None = None
    churned_at: datetime | None = None
    renewal_date: date | None = _next_anniversary(signup, start)
    churned_on: date | None = None
    stall_until: date | None = None
    trial_until: date | None = None
    if kind == "new":
        if rng.random() < 0.3:  # stalls: barely uses the product for two to five weeks
            stall_until = signup + timedelta(days=rng.randint(14, 40))
        if rng.random() < 0.2:
            status, trial_until = "trial", signup + timedelta(days=14)
    else:
        if rng.random() < 0.94:
            onboarded_at = _at(signup + timedelta(days=rng.randint(7, 45)), rng.randint(13, 18))
        if renewal_date is not None and renewal_date - signup > timedelta(days=366):
            renewed_at = _at(_anniversary(signup, renewal_date.year - 1), rng.randint(9, 17))
    if kind == "cancelling":
        status = "cancelling"
        cancelled_at = _at(start - timedelta(days=rng.randint(1, 40)), rng.randint(9, 17))
    elif kind == "churned":
        status = "churned"
        churned_on = renewal_date  # the term ended without a renewal (set by the caller)
    if onboarded_at is not None and onboarded_at.date() >= start:
        onboarded_at = None
    row = {
        "external_id": external_id,
        "name": name,
        "plan": plan,
        "arr": arr,
        "currency": currency,
        "status": status,
        "lifecycle_stage": None,
        "segment": segment,
        "industry": _INDUSTRIES.get(name.split()[1], "Software") if len(name.split()) > 1 else "Software",
        "country": country,
        "timezone": rng.choice(zones),
        "csm_email": f"{csm[1]}@{CSM_DOMAIN}" if csm else None,
        "csm_name": csm[0] if csm else None,
        "signup_date": signup,
        "onboarded_at": onboarded_at,
        "renewal_date": renewal_date,
        "renewed_at": renewed_at,
        "cancelled_at": cancelled_at,
        "churned_at": churned_at,
        "reactivated_at": None,
        "health": health,
        "health_score": round(min(100.0, max(0.0, engagement * 100 + rng.gauss(0, 4))), 1),
        "seats": seats,
        "custom": {},
        "holdout_bucket": holdout_bucket(external_id),
        "created_at": _at(signup, 9),
        "updated_at": _at(min(signup, start), 9),
    }
    profile = Profile(
        id=0,
        external_id=external_id,
        name=name,
        seats=seats,
        engagement=engagement,
        drift=rng.gauss(0, 0.0012),
        status=status,
        health=health,
        signup=signup,
        renewal_date=renewal_date,
        arr=arr,
        plan=plan,
        currency=currency,
        onboarded=onboarded_at is not None,
        stall_until=stall_until,
        trial_until=trial_until,
        churned_on=churned_on,
    )
    return row, profile, domain


def _contact_rows(world: World, account: dict[str, Any], domain: str) -> list[dict[str, Any]]:
    rng = world.rng
    count = rng.choices((1, 2, 3, 4), weights=(20, 35, 30, 15))[0]
    if account["plan"] == "enterprise":
        count = max(count, 3)
    roles = ["champion", *rng.sample(["admin", "billing", "user", "executive"], k=3)]
    if rng.random() < 0.15:  # no champion named: the first contact is an admin
        roles[0] = "admin"
    zones = [z for c in _COUNTRIES for z in c[2]]
    used: set[str] = set()
    rows = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
        local = local.encode("ascii", "ignore").decode() or f"contact{i}"
        while local in used:
            local += str(rng.randint(1, 9))
        used.add(local)
        role = roles[i]
        unsubscribed = rng.random() < 0.03
        rows.append(
            {
                "email": f"{local}@{domain}",
                "name": f"{first} {last}",
                "role": role,
                "title": rng.choice(_TITLES[role]),
                "timezone": account["timezone"] if rng.random() < 0.85 else rng.choice(zones),
                "is_primary": i == 0,
                "unsubscribed": unsubscribed,
                "unsubscribed_channels": [],
                "unsubscribed_at": account["created_at"] + timedelta(days=30) if unsubscribed else None,
                "preferences": {},
                "slack_user_id": None,
                "created_at": account["created_at"],
            }
        )
    return rows


def _insert_accounts(
    engine: Engine, world: World, batch: list[tuple[dict[str, Any], Profile, str]]
) -> list[tuple[dict[str, Any], Profile]]:
    """Insert accounts and their contacts (bulk Core inserts); the profiles learn their ids."""
    if not batch:
        return []
    acct, cont = table_of(Account), table_of(Contact)
    with engine.begin() as conn:
        conn.execute(insert(acct), [row for row, _, _ in batch])
        ids: dict[str, int] = dict(
            conn.execute(
                select(acct.c.external_id, acct.c.id).where(
                    acct.c.external_id.in_([r["external_id"] for r, _, _ in batch])
                )
            ).all()
        )
        contacts = []
        for row, profile, domain in batch:
            profile.id = ids[row["external_id"]]
            world.profiles[profile.id] = profile
            for c in _contact_rows(world, row, domain):
                contacts.append({**c, "account_id": profile.id})
        conn.execute(insert(cont), contacts)
    world.seeded["contacts"] += len(contacts)
    return [(row, profile) for row, profile, _ in batch]


# --- usage -----------------------------------------------------------------------------------------


def _usage(world: World, p: Profile, day: date) -> tuple[int, int] | None:
    """(logins, active users) of one account on one day; None when it has no users (churned)."""
    rng = world.rng
    if p.status == "churned" or day < p.signup:
        return None
    p.engagement = min(0.98, max(0.02, p.engagement + p.drift + rng.gauss(0, 0.004)))
    weekday = 1.0 if day.weekday() < 5 else 0.15
    ramp = min(1.0, ((day - p.signup).days + 1) / 10)
    level = 0.03 if p.stall_until and day < p.stall_until else p.engagement * ramp
    pool = min(p.seats, 400)
    active = max(0, round(pool * level * weekday * rng.uniform(0.7, 1.3)))
    logins = round(active * rng.uniform(1.2, 2.6)) + (1 if rng.random() < level * weekday else 0)
    p.recent.append((logins, active))
    return logins, active


def _usage_rows(world: World, day: date) -> list[dict[str, Any]]:
    rows = []
    for p in world.profiles.values():
        values = _usage(world, p, day)
        if values is None:
            continue
        logins, active = values
        rows.append({"account_id": p.id, "metric": "logins", "day": day, "value": float(logins)})
        rows.append({"account_id": p.id, "metric": "active_users", "day": day, "value": float(active)})
    return rows


def _revenue_rows(world: World, period: date) -> list[dict[str, Any]]:
    return [
        {
            "account_id": p.id,
            "period": period,
            "product": "",
            "mrr_cents": round(p.arr * 100 / 12),
            "currency": p.currency,
        }
        for p in world.profiles.values()
        if p.status in ("active", "cancelling") and p.signup <= period + timedelta(days=27)
    ]


# --- seeding ---------------------------------------------------------------------------------------


def seed(engine: Engine, cfg: DemoConfig) -> World:
    """Insert the synthetic book of business as it stands the day before ``cfg.start``."""
    rng = random.Random(cfg.seed)
    world = World(cfg=cfg, rng=rng)
    world.csms = list(_CSMS[: min(6, max(4, cfg.accounts // 100 + 2))])
    start, n = cfg.start, cfg.accounts
    n_new = max(4, round(n * 0.07))
    n_churned = max(5, round(n * 0.09))
    n_cancelling = max(2, round(n * 0.02))
    n_established = max(1, n - n_new - n_churned - n_cancelling)
    batch: list[tuple[dict[str, Any], Profile, str]] = []
    for _ in range(n_established):
        signup = start - timedelta(days=rng.randint(31, 3 * 365))
        batch.append(_account_row(world, signup=signup, kind="established", start=start))
    for _ in range(n_new):
        signup = start - timedelta(days=rng.randint(0, 29))
        batch.append(_account_row(world, signup=signup, kind="new", start=start))
    for _ in range(n_cancelling):
        renewal = start + timedelta(days=rng.randint(5, 120))
        signup = _anniversary(renewal, renewal.year - rng.randint(1, 3))
        batch.append(_account_row(world, signup=signup, kind="cancelling", start=start))
    for i in range(n_churned):
        # most churned 30-200 days ago (win-back); a couple in the last week (farewell)
        churn_day = start - timedelta(days=rng.randint(1, 6) if i < 2 else rng.randint(30, 200))
        signup = _anniversary(churn_day, churn_day.year - rng.randint(1, 2))
        row, profile, domain = _account_row(world, signup=signup, kind="churned", start=start)
        profile.churned_on = row["renewal_date"] = profile.renewal_date = churn_day
        row["churned_at"] = _at(churn_day, rng.randint(9, 17))
        row["cancelled_at"] = row["churned_at"] - timedelta(days=rng.randint(10, 60))
        if row["onboarded_at"] is not None and row["onboarded_at"] >= row["churned_at"]:
            row["onboarded_at"] = _at(signup + timedelta(days=10))
        if row["renewed_at"] is not None and row["renewed_at"] >= row["churned_at"]:
            row["renewed_at"] = None
        batch.append((row, profile, domain))
    rng.shuffle(batch)
    for i in range(0, len(batch), 500):
        _insert_accounts(engine, world, batch[i : i + 500])
    world.seeded["accounts"] = len(batch)
    for kind, count in (
        ("new sign-ups (last 30 days)", n_new),
        ("churned", n_churned),
        ("cancelling", n_cancelling),
    ):
        world.seeded[kind] = count
    # 30 days of usage, 12 months of revenue, a few tickets
    usage: list[dict[str, Any]] = []
    for back in range(31, 1, -1):  # the first simulated day imports the day before the start
        usage += _usage_rows(world, start - timedelta(days=back))
    revenue: list[dict[str, Any]] = []
    month = date(start.year - 1, start.month, 1)
    while month < start:
        revenue += _revenue_rows(world, month)
        month = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    tickets: list[dict[str, Any]] = []
    for p in world.profiles.values():
        if p.status == "churned":
            continue
        for _ in range(_poisson(rng, 0.6 if p.health != "red" else 1.5)):
            opened = _at(start - timedelta(days=rng.randint(1, 60)), rng.randint(8, 20))
            solved = rng.random() < 0.8
            tickets.append(
                {
                    "account_id": p.id,
                    "external_id": f"T-{10000 + len(tickets)}",
                    "subject": rng.choice(_TICKETS),
                    "status": "solved" if solved else "open",
                    "priority": rng.choice(("low", "normal", "normal", "high")),
                    "opened_at": opened,
                    "closed_at": opened + timedelta(days=rng.randint(1, 5)) if solved else None,
                }
            )
    with engine.begin() as conn:
        for i in range(0, len(usage), 20_000):
            conn.execute(insert(table_of(UsageMetric)), usage[i : i + 20_000])
        if revenue:
            conn.execute(insert(table_of(RevenueEntry)), revenue)
        if tickets:
            conn.execute(insert(table_of(SupportTicket)), tickets)
        ticket = table_of(SupportTicket)
        open_ids = conn.execute(select(ticket.c.id).where(ticket.c.status == "open")).scalars().all()
    world.open_tickets = list(open_ids)
    world.seeded["usage rows"] = len(usage)
    world.seeded["revenue rows"] = len(revenue)
    world.seeded["support tickets"] = len(tickets)
    return world


# --- one simulated day -------------------------------------------------------------------------------

# chance per day (for three days after delivery) that a contact replies to an email of a step
_REPLY_RATES = {
    ("renewal", "first_note"): 0.11,
    ("renewal", "note_60"): 0.08,
    ("renewal", "note_30"): 0.08,
    ("check_in", "risk_call_offer"): 0.10,
    ("check_in", "friendly_check_in"): 0.04,
    ("win_back", "whats_changed"): 0.03,
    ("win_back", "offer_to_talk"): 0.03,
    ("win_back", "last_note"): 0.02,
    ("farewell", "ask_why"): 0.10,
}
_HEALTH_REPLY = {"green": 1.2, "yellow": 1.0, "red": 0.6}
_RENEW_BASE = {"green": 0.93, "yellow": 0.82, "red": 0.60}
_CANCEL_DAILY = {"green": 0.0002, "yellow": 0.0012, "red": 0.004}


class _Events:
    """World events of one day: account updates, timeline lines, counts."""

    def __init__(self, world: World, as_of: datetime) -> None:
        self.world, self.as_of = world, as_of
        self.updates: list[tuple[int, dict[str, Any]]] = []
        self.timeline: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()

    def moment(self) -> datetime:
        """A time this morning, between the previous tick and this one."""
        return self.as_of - timedelta(hours=self.world.rng.randint(2, 12), minutes=self.world.rng.randint(0, 59))

    def account(self, p: Profile, kind: str, summary: str, at: datetime, **values: Any) -> None:
        if values:
            self.updates.append((p.id, {**values, "updated_at": at}))
        self.timeline.append(
            {
                "account_id": p.id,
                "at": at,
                "kind": kind,
                "playbook": None,
                "summary": summary,
                "detail": {"source": "demo"},
            }
        )
        self.counts[kind] += 1

    def flush(self, engine: Engine) -> None:
        acct = table_of(Account)
        # one executemany per set of columns (the weekly health scores touch every account)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for account_id, values in self.updates:
            row = {"account_pk": account_id, **{f"new_{k}": v for k, v in values.items()}}
            groups.setdefault(tuple(sorted(values)), []).append(row)
        with engine.begin() as conn:
            for columns, rows in groups.items():
                stmt = (
                    update(acct)
                    .where(acct.c.id == bindparam("account_pk"))
                    .values({c: bindparam(f"new_{c}") for c in columns})
                )
                conn.execute(stmt, rows)
            if self.timeline:
                conn.execute(insert(table_of(TimelineEvent)), self.timeline)


def _world_day(engine: Engine, world: World, day_index: int, playbooks: dict[str, CompiledPlaybook]) -> Counter[str]:
    """Everything customers do on one simulated day, before the playbooks tick."""
    cfg, rng = world.cfg, world.rng
    day = cfg.start + timedelta(days=day_index)
    as_of = _at(day)
    ev = _Events(world, as_of)

    # new sign-ups (weekdays)
    if day.weekday() < 5:
        batch = [
            _account_row(world, signup=day, kind="new", start=day) for _ in range(_poisson(rng, cfg.accounts / 600))
        ]
        for row, p in _insert_accounts(engine, world, batch):
            at = ev.moment()
            ev.timeline.append(
                {
                    "account_id": p.id,
                    "at": at,
                    "kind": "signup",
                    "playbook": None,
                    "summary": f"signed up for {row['plan']} ({row['seats']} seats)"
                    + (" as a trial" if p.status == "trial" else ""),
                    "detail": {"source": "demo"},
                }
            )
            ev.counts["signup"] += 1

    # revenue for the month
    if day.day == 1 or day_index == 0:
        period = date(day.year, day.month, 1)
        rows = _revenue_rows(world, period)
        if rows:
            rev = table_of(RevenueEntry)
            with engine.begin() as conn:
                done = set(conn.execute(select(rev.c.account_id).where(rev.c.period == period)).scalars().all())
                rows = [r for r in rows if r["account_id"] not in done]
                if rows:
                    conn.execute(insert(rev), rows)

    for p in list(world.profiles.values()):
        # trials convert (or lapse)
        if p.status == "trial" and p.trial_until and day >= p.trial_until:
            if p.healthy_usage() or rng.random() < 0.5:
                p.status, p.trial_until = "active", None
                ev.account(p, "converted", "trial converted to a paid plan", ev.moment(), status="active")
            elif day >= p.trial_until + timedelta(days=16):
                p.status, p.trial_until, p.churned_on = "churned", None, day
                at = ev.moment()
                ev.account(p, "churned", "trial lapsed without converting", at, status="churned", churned_at=at)
        # onboarding sign-off by the CSM once the team really uses it
        if not p.onboarded and p.status in ("active", "trial") and (day - p.signup).days >= 7 and p.healthy_usage():
            chance = 0.08 * (2.5 if (p.id, "onboarding") in world.touched else 1.0)
            if rng.random() < chance:
                p.onboarded = True
                at = ev.moment()
                ev.account(p, "onboarded", "onboarding signed off in the CRM", at, onboarded_at=at)
        # stalled accounts get going, sooner after a personal offer of help
        if p.stall_until and day < p.stall_until and (p.id, "onboarding") in world.touched and rng.random() < 0.06:
            p.stall_until = day
        # notice of cancellation ahead of the renewal date
        if p.status == "active" and p.renewal_date and 0 <= (p.renewal_date - day).days <= 75:
            if rng.random() < _CANCEL_DAILY[p.health] * (0.5 if (p.id, "check_in") in world.replied else 1.0):
                p.status = "cancelling"
                at = ev.moment()
                ev.account(
                    p,
                    "cancelled",
                    f"gave notice: leaves at the end of the term ({p.renewal_date})",
                    at,
                    status="cancelling",
                    cancelled_at=at,
                )
        # a few cancelling accounts change their mind
        elif p.status == "cancelling" and rng.random() < 0.004:
            p.status = "active"
            ev.account(p, "saved", "withdrew the cancellation", ev.moment(), status="active")
        # the renewal date
        if p.renew_on is not None and day >= p.renew_on:
            p.renew_on = None
            _renew(world, p, ev)
        elif p.renewal_date and day >= p.renewal_date and p.status in ("active", "cancelling") and p.renew_on is None:
            if p.status == "cancelling":
                p.status, p.churned_on = "churned", day
                at = ev.moment()
                ev.account(p, "churned", "term ended after notice: churned", at, status="churned", churned_at=at)
            else:
                chance = _RENEW_BASE[p.health]
                if (p.id, "renewal") in world.touched:
                    chance += 0.04
                if (p.id, "renewal") in world.replied:
                    chance += 0.08
                if rng.random() < min(chance, 0.99):
                    if rng.random() < 0.15:  # agreed, but the paperwork lands late
                        p.renew_on = day + timedelta(days=rng.randint(1, 20))
                    else:
                        _renew(world, p, ev)
                else:
                    p.status, p.churned_on = "churned", day
                    at = ev.moment()
                    ev.account(
                        p,
                        "churned",
                        "did not renew: churned at the end of the term",
                        at,
                        status="churned",
                        churned_at=at,
                        cancelled_at=at,
                    )
        # former customers come back, more often after a win-back conversation
        if p.status == "churned" and p.churned_on and (day - p.churned_on).days >= 14:
            chance = 0.0006
            if (p.id, "win_back") in world.touched:
                chance += 0.002
            if (p.id, "win_back") in world.replied:
                chance += 0.02
            if rng.random() < chance:
                p.status, p.renewal_date = "active", day + timedelta(days=365)
                p.engagement, p.recent = rng.uniform(0.45, 0.8), deque(maxlen=7)
                at = ev.moment()
                ev.account(
                    p,
                    "reactivated",
                    "came back: subscription restarted",
                    at,
                    status="active",
                    reactivated_at=at,
                    renewal_date=p.renewal_date,
                )
        # support tickets
        if p.status != "churned" and rng.random() < (0.012 if p.health == "red" else 0.004):
            ev.counts["ticket"] += 1
            _ticket(engine, world, p, ev.moment())

    # usage of the day before (the nightly import), so the ticks see yesterday's numbers
    usage = _usage_rows(world, day - timedelta(days=1))
    # weekly health scores, from usage
    if day.weekday() == 0:
        for p in world.profiles.values():
            if p.status == "churned":
                continue
            health = _health_of(p.engagement)
            score = round(min(100.0, max(0.0, p.engagement * 100 + rng.gauss(0, 4))), 1)
            if health != p.health:
                ev.counts[f"health {p.health}->{health}"] += 1
            p.health = health
            ev.updates.append((p.id, {"health": health, "health_score": score}))
    _replies_and_answers(engine, world, day_index, ev)
    # solve some open tickets
    still_open: list[int] = []
    solved: list[int] = []
    for ticket_id in world.open_tickets:
        (solved if rng.random() < 0.2 else still_open).append(ticket_id)
    world.open_tickets = still_open
    with engine.begin() as conn:
        if usage:
            conn.execute(insert(table_of(UsageMetric)), usage)
        if solved:
            t = table_of(SupportTicket)
            conn.execute(
                update(t).where(t.c.id == bindparam("tid")).values(status="solved", closed_at=bindparam("closed")),
                [{"tid": i, "closed": ev.moment()} for i in solved],
            )
    ev.flush(engine)
    world.totals.update(ev.counts)
    return ev.counts


def _renew(world: World, p: Profile, ev: _Events) -> None:
    rng = world.rng
    old = p.arr
    roll = rng.random()
    if roll < 0.22:
        p.arr = float(round(p.arr * rng.uniform(1.08, 1.45) / 100) * 100)
        p.seats = round(p.seats * rng.uniform(1.1, 1.5))
        kind = "expanded"
    elif roll < 0.30:
        p.arr = float(round(p.arr * rng.uniform(0.7, 0.95) / 100) * 100)
        kind = "contracted"
    else:
        kind = "flat"
    assert p.renewal_date is not None
    p.renewal_date = _anniversary(p.renewal_date, p.renewal_date.year + 1)
    at = ev.moment()
    summary = f"renewed for a year ({kind}: ARR {old:,.0f} -> {p.arr:,.0f} {p.currency})"
    ev.account(p, "renewed", summary, at, renewed_at=at, renewal_date=p.renewal_date, arr=p.arr, seats=p.seats)
    ev.counts[f"renewal {kind}"] += 1


def _ticket(engine: Engine, world: World, p: Profile, at: datetime) -> None:
    rng = world.rng
    with engine.begin() as conn:
        result = conn.execute(
            insert(table_of(SupportTicket)).values(
                account_id=p.id,
                external_id=f"T-{rng.randint(20000, 99999)}",
                subject=rng.choice(_TICKETS),
                status="open",
                priority=rng.choice(("low", "normal", "normal", "high")),
                opened_at=at,
            )
        )
        key = result.inserted_primary_key
        assert key is not None  # a single-row insert always has its primary key
        world.open_tickets.append(int(key[0]))


def _replies_and_answers(engine: Engine, world: World, day_index: int, ev: _Events) -> None:
    """Contacts reply to some delivered emails and answer some delivered surveys."""
    rng = world.rng
    replies: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    keep: list[SentTouch] = []
    for t in world.recent_touches:
        age = day_index - t.day
        if age > 4:
            continue
        keep.append(t)
        p = world.profiles.get(t.account_id)
        if p is None or age < 1:
            continue
        if t.kind == "survey":
            if t.id not in world.answered and rng.random() < 0.12:
                world.answered.add(t.id)
                score = round(min(10, max(0, 3.5 + 6.5 * p.engagement + rng.gauss(0, 1.6))))
                bucket = "low" if score <= 6 else "mid" if score <= 8 else "high"
                at = ev.moment()
                answers.append(
                    {
                        "account_id": p.id,
                        "contact_id": t.contact_id,
                        "touch_id": t.id,
                        "kind": "nps",
                        "score": score,
                        "comment": rng.choice(_NPS_COMMENTS[bucket]),
                        "responded_at": at,
                    }
                )
                ev.timeline.append(
                    {
                        "account_id": p.id,
                        "at": at,
                        "kind": "survey_answer",
                        "playbook": t.playbook,
                        "summary": f"answered NPS: {score}",
                        "detail": {"source": "demo", "touch_id": t.id},
                    }
                )
                ev.counts["nps answer"] += 1
            continue
        rate = _REPLY_RATES.get((t.playbook, t.step_id), 0.015) * _HEALTH_REPLY.get(p.health, 1.0)
        if t.id not in world.answered and rng.random() < rate:
            world.answered.add(t.id)
            at = ev.moment()
            replies.append({"tid": t.id, "replied": at})
            world.replied[(p.id, t.playbook)] = world.cfg.start + timedelta(days=day_index)
            if (t.playbook, t.step_id) == ("check_in", "risk_call_offer"):
                p.engagement = min(0.98, p.engagement + 0.08)  # the conversation helps
                p.drift = max(p.drift, 0.0)
            ev.timeline.append(
                {
                    "account_id": p.id,
                    "at": at,
                    "kind": "reply",
                    "playbook": t.playbook,
                    "summary": f"replied to {t.step_id}",
                    "detail": {"source": "demo", "touch_id": t.id},
                }
            )
            ev.counts["reply"] += 1
    world.recent_touches = keep
    with engine.begin() as conn:
        if replies:
            touches = table_of(Touch)
            conn.execute(
                update(touches).where(touches.c.id == bindparam("tid")).values(replied_at=bindparam("replied")), replies
            )
        if answers:
            conn.execute(insert(table_of(SurveyResponse)), answers)


#: settings that would make ``build_channels`` reach real email, Slack or CRM services
_REAL_CHANNEL_SETTINGS = ("smtp_url", "slack_bot_token", "slack_webhook_url", "crm_token")


def demo_settings(settings: Settings) -> Settings:
    """The settings the demo delivers with: email, Slack and CRM always go to the file channel,
    whatever ``RETAIN_SMTP_URL``, ``RETAIN_SLACK_*`` or ``RETAIN_CRM_TOKEN`` say."""
    clear = {name: None for name in _REAL_CHANNEL_SETTINGS if name in type(settings).model_fields}
    return settings.model_copy(update=clear)


class _LoopbackWebhook:
    """The webhook channel of the demo: delivers to this machine only (the demo's receiver); any
    other URL, say from a playbook edited to call a real system, fails without a request leaving.
    The real channel (and its HTTP client) is built on the first send, so a tick with no webhook
    to deliver costs nothing."""

    name = "webhook"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._inner: Channel | None = None
        self.dedupes_by_key = True

    async def send(self, delivery: Delivery) -> Receipt:
        url = str(delivery.payload.get("url") or "")
        host = urlsplit(url).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise IntegrationError(f"demo: webhooks go to this machine only, not to {host or url!r}")
        if self._inner is None:
            self._inner = build_channel("webhook", self._settings)
        return await self._inner.send(delivery)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()


def demo_channels(settings: Settings) -> dict[str, Channel]:
    """Fresh channels for one delivery run (a run closes them): files for email, Slack and CRM,
    the local receiver for webhooks."""
    safe = demo_settings(settings)
    channels = build_channels(safe, tuple(name for name in CHANNEL_NAMES if name != "webhook"))
    channels["webhook"] = _LoopbackWebhook(safe)
    return channels


def _remember_touches(
    engine: Engine, world: World, day_index: int, as_of: datetime, playbooks: dict[str, CompiledPlaybook]
) -> None:
    """The customer emails and surveys delivered since the last look (also those the contact
    policy deferred from earlier days), as the customers will see them from tomorrow."""
    t = table_of(Touch)
    day = world.cfg.start + timedelta(days=day_index)
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.account_id, t.c.contact_id, t.c.playbook, t.c.step_id)
            .where(
                t.c.created_at > as_of - timedelta(days=21),
                t.c.status == TouchStatus.DELIVERED,
                t.c.channel == "email",
                t.c.contact_id.is_not(None),
            )
            .order_by(t.c.id)
        ).all()
    for touch_id, account_id, contact_id, playbook, step_id in rows:
        if touch_id in world.remembered:
            continue
        world.remembered.add(touch_id)
        world.touched[(account_id, playbook)] = day
        kind = "email"
        pb = playbooks.get(playbook)
        if pb is not None:
            try:
                kind = pb.spec.step(step_id).kind
            except KeyError:
                kind = "email"
        world.recent_touches.append(SentTouch(touch_id, account_id, contact_id, playbook, step_id, kind, day_index))


#: extra delivery passes after each day's tick (hours after it): the playbooks' schedules tick
#: hourly, so a touch the contact policy deferred to 08:00 local goes out that morning; one tick a
#: day at 14:00 UTC alone would never reach Denver, Los Angeles, Dubai or Kolkata in office hours
DELIVERY_PASSES = (4, 16)


def demo_delivery(settings: Settings, playbooks: dict[str, CompiledPlaybook]) -> DeliveryPolicy:
    """The outbox settings of the demo: the contact policy beside the playbooks (policy.yaml)."""
    return delivery_policy(playbooks.values(), load_policy(settings.resolved_playbooks_dir()))


def _due_touches(engine: Engine, moment: datetime) -> int:
    t = table_of(Touch)
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(t)
                .where(t.c.status == TouchStatus.PENDING, or_(t.c.not_before.is_(None), t.c.not_before <= moment))
            ).scalar_one()
        )


def simulate_day(
    engine: Engine,
    settings: Settings,
    world: World,
    playbooks: dict[str, CompiledPlaybook],
    day_index: int,
    cache: RevisionCache | None = None,
    delivery: DeliveryPolicy | None = None,
) -> DayReport:
    """One simulated day: the world first, then one tick of each playbook (with its delivery),
    then the deliveries the contact policy deferred to later that day."""
    as_of = _at(world.cfg.start + timedelta(days=day_index))
    report = DayReport(day_index, as_of)
    report.events = _world_day(engine, world, day_index, playbooks)
    done = _csms_work(engine, world, as_of)
    report.events["task done"] += done
    world.totals["task done"] += done
    cache = cache or RevisionCache()
    delivery = delivery or demo_delivery(settings, playbooks)
    for name in PLAYBOOK_ORDER:
        pb = playbooks.get(name)
        if pb is None:
            continue
        report.ticks[name] = tick(engine, pb, as_of, channels=demo_channels(settings), cache=cache, delivery=delivery)
    for hours in DELIVERY_PASSES:
        moment = as_of + timedelta(hours=hours)
        if _due_touches(engine, moment):
            later = deliver(engine, demo_channels(settings), as_of=moment, policy=delivery)
            report.later_delivered += later.get("delivered", 0)
    _remember_touches(engine, world, day_index, as_of, playbooks)
    return report


#: how likely a CSM gets to an open task on a day once it is due (high priority first)
CSM_DILIGENCE = {"high": 0.6, "normal": 0.4, "low": 0.25}


def _csms_work(engine: Engine, world: World, as_of: datetime) -> int:
    """The CSMs work their queues before the ticks: each open task due by today is done with a
    chance by its priority (a task done lets ``task("…").done`` move its enrollment on)."""
    csm_task = table_of(CsmTask)
    with engine.connect() as conn:
        due = conn.execute(
            select(csm_task.c.id, csm_task.c.priority, csm_task.c.assignee)
            .where(csm_task.c.status == TaskStatus.OPEN, csm_task.c.due_at <= as_of)
            .order_by(csm_task.c.id)
        ).all()
    rng = world.rng
    done = [
        (task_id, assignee or "a CSM")
        for task_id, priority, assignee in due
        if rng.random() < CSM_DILIGENCE.get(priority, 0.4)
    ]
    with session(engine) as s:
        return complete_tasks(s, done, now=as_of - timedelta(hours=rng.randint(1, 4)))


# --- a local webhook receiver (so webhook steps really deliver, to this machine only) ------------------


class _Receiver(BaseHTTPRequestHandler):
    server: _ReceiverServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.received.append({"path": self.path, "key": self.headers.get("Idempotency-Key"), "bytes": len(body)})
        answer = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Request-Id", f"demo-{len(self.server.received)}")
        self.end_headers()
        self.wfile.write(answer)

    do_POST = do_PUT = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return None


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    received: list[dict[str, Any]]


@contextmanager
def webhook_receiver() -> Iterator[_ReceiverServer]:
    """A receiver on 127.0.0.1 that answers 200; ``secrets.crm_webhook_url`` points at it meanwhile."""
    server = _ReceiverServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, name="retain-demo-webhooks", daemon=True)
    thread.start()
    saved = os.environ.get(WEBHOOK_SECRET_ENV)
    os.environ[WEBHOOK_SECRET_ENV] = f"http://127.0.0.1:{server.server_address[1]}/crm/events"
    try:
        yield server
    finally:
        if saved is None:
            os.environ.pop(WEBHOOK_SECRET_ENV, None)
        else:
            os.environ[WEBHOOK_SECRET_ENV] = saved
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the whole demo, as plain functions ---------------------------------------------------------------

ProgressHook = Callable[[DayReport, int], None]  # (the day just simulated, total days)
_progress_hook: ProgressHook | None = None


def set_progress_hook(hook: ProgressHook | None) -> None:
    """Called after every simulated day (in this process), by the plain functions and the flow."""
    global _progress_hook
    _progress_hook = hook


def _notify(report: DayReport, total: int) -> None:
    if _progress_hook is not None:
        _progress_hook(report, total)


def _load_demo_playbooks(settings: Settings) -> dict[str, CompiledPlaybook]:
    playbooks = load_playbooks(settings.resolved_playbooks_dir())
    missing = [name for name in PLAYBOOK_ORDER if name not in playbooks]
    if missing:
        raise ConfigError(
            f"the demo runs the five shipped playbooks; missing from {settings.resolved_playbooks_dir()}: "
            + ", ".join(missing)
        )
    return playbooks


def _result(world: World, reports: list[DayReport]) -> DemoResult:
    enrolled: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    errors: list[str] = []
    for r in reports:
        for name, t in r.ticks.items():
            enrolled[name] += t.enrolled
            delivered[name] += t.delivered.get("delivered", 0)
            errors += t.errors
        delivered["later passes (all playbooks)"] += r.later_delivered
    return DemoResult(
        seeded=dict(world.seeded),
        days=len(reports),
        world=dict(world.totals),
        enrolled=dict(enrolled),
        delivered=dict(delivered),
        errors=errors,
        webhook_requests=world.webhook_requests,
    )


def run_demo(engine: Engine, settings: Settings, cfg: DemoConfig) -> DemoResult:
    """Seed and simulate without Prefect (tests, scripts). The database must be prepared."""
    playbooks = _load_demo_playbooks(settings)
    world = seed(engine, cfg)
    cache = RevisionCache()
    delivery = demo_delivery(settings, playbooks)
    reports = []
    with webhook_receiver() as receiver:
        for day in range(cfg.days):
            reports.append(simulate_day(engine, settings, world, playbooks, day, cache, delivery))
            _notify(reports[-1], cfg.days)
        world.webhook_requests = len(receiver.received)
    return _result(world, reports)


def sample_timelines(engine: Engine, *, accounts: int = 3, lines: int = 12) -> list[tuple[str, list[str]]]:
    """A few stories worth reading (won back after a reply, renewed after a reply, onboarded,
    a detractor, a goodbye): per account, the lines of that playbook and what the customer did."""
    tl, acct, enr = table_of(TimelineEvent), table_of(Account), table_of(Enrollment)
    touch = table_of(Touch)
    replied = exists(select(touch.c.id).where(touch.c.enrollment_id == enr.c.id, touch.c.replied_at.is_not(None)))
    wanted = (
        ("win_back", "won_back", True),
        ("renewal", "renewed", True),
        ("onboarding", "onboarded", False),
        ("check_in", "nps_detractor", False),
        ("renewal", "renewed", False),
        ("farewell", None, False),
    )
    picks: list[tuple[int, str]] = []
    with engine.connect() as conn:
        for playbook, outcome, with_reply in wanted:
            query = select(enr.c.account_id).where(enr.c.playbook == playbook, enr.c.holdout.is_(False))
            if outcome:
                query = query.where(enr.c.outcome == outcome)
            if with_reply:
                query = query.where(replied)
            if picks:
                query = query.where(enr.c.account_id.not_in([a for a, _ in picks]))
            found = conn.execute(query.order_by(enr.c.id).limit(1)).scalar()
            if found is not None and playbook not in {p for _, p in picks}:
                picks.append((found, playbook))
            if len(picks) >= accounts:
                break
        stories = []
        for account_id, playbook in picks:
            name, external_id = conn.execute(
                select(acct.c.name, acct.c.external_id).where(acct.c.id == account_id)
            ).one()
            events = conn.execute(
                select(tl.c.at, tl.c.kind, tl.c.playbook, tl.c.summary)
                .where(
                    tl.c.account_id == account_id,
                    tl.c.kind.not_in(("wait", "wait_for")),
                    or_(tl.c.playbook == playbook, tl.c.playbook.is_(None)),
                )
                .order_by(tl.c.at, tl.c.id)
            ).all()
            shown = list(events) if len(events) <= lines else [*events[: lines - 4], *events[-4:]]
            stories.append(
                (
                    f"{name} ({external_id}), {playbook}",
                    [f"{at:%Y-%m-%d %H:%M}  {kind:<13} {pb or '-':<10} {summary}" for at, kind, pb, summary in shown],
                )
            )
    return stories
