"""The contact policy: whether a customer-facing touch may go now, later, or not at all.

One global policy (``playbooks/policy.yaml``), overridable per playbook, decides before every
delivery: unsubscribes, survey fatigue, quiet hours and business days and public holidays in the
contact's own time zone, and a cap of touches per contact across all playbooks. A touch held
back is deferred to the next allowed moment (never dropped) or, when it could only go much later,
suppressed; either way the reason is recorded. Decisions are plain functions of their inputs:
"now" is passed in, and time zones are pendulum's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Literal

import pendulum

from models import Contact
from models.playbook import PolicySpec, parse_max_touches, parse_quiet_hours

__all__ = [
    "ContactPolicy",
    "Decision",
    "decide",
    "effective_policy",
    "next_allowed",
    "unsubscribe_reason",
]

DEFAULT_MAX_DEFER = timedelta(days=14)
_DAY_START = time(9, 0)  # where a moved touch lands when there are no quiet hours


@dataclass(frozen=True)
class ContactPolicy:
    """The rules in force for one playbook's touches (global policy plus the playbook's overrides)."""

    quiet_hours: tuple[time, time] | None = None
    business_days_only: bool = False
    holidays: bool = False
    max_touches: tuple[int, timedelta] | None = None
    survey_fatigue: timedelta | None = None
    max_defer: timedelta = DEFAULT_MAX_DEFER

    def describe(self) -> str:
        parts = []
        if self.quiet_hours:
            parts.append(f"quiet {self.quiet_hours[0]:%H:%M}-{self.quiet_hours[1]:%H:%M}")
        if self.business_days_only:
            parts.append("business days")
        if self.holidays:
            parts.append("no public holidays")
        if self.max_touches:
            parts.append(f"max {self.max_touches[0]} per {self.max_touches[1].days} days")
        if self.survey_fatigue:
            parts.append(f"one survey per {self.survey_fatigue.days} days")
        return ", ".join(parts) or "no limits"


def effective_policy(global_spec: PolicySpec, override: PolicySpec | None) -> ContactPolicy:
    """The global policy with the playbook's own keys taking precedence."""
    merged = {
        **global_spec.model_dump(exclude_none=True),
        **(override.model_dump(exclude_none=True) if override else {}),
    }
    spec = PolicySpec.model_validate(merged)
    return ContactPolicy(
        quiet_hours=parse_quiet_hours(spec.quiet_hours) if spec.quiet_hours else None,
        business_days_only=bool(spec.business_days_only),
        holidays=bool(spec.holidays),
        max_touches=parse_max_touches(spec.max_touches) if spec.max_touches else None,
        survey_fatigue=spec.survey_fatigue,
    )


@dataclass(frozen=True)
class Decision:
    action: Literal["send", "defer", "suppress"]
    until: datetime | None = None
    reason: str | None = None


@cache
def _holidays(country: str, year: int) -> dict[date, str]:
    import holidays as holiday_calendars  # by a policy that checks holidays, on its first date (~20 ms)

    try:
        return dict(holiday_calendars.country_holidays(country.upper(), years=year))
    except NotImplementedError:  # a country the calendar library does not know
        return {}


def _quiet(local: pendulum.DateTime, window: tuple[time, time]) -> bool:
    start, end = window
    t = local.time().replace(tzinfo=None)
    return start <= t < end if start < end else (t >= start or t < end)


def next_allowed(
    moment: datetime, zone: str, policy: ContactPolicy, country: str | None = None
) -> tuple[datetime, list[str]]:
    """The first moment at or after ``moment`` when the policy lets a touch go, in UTC, and the
    reasons it had to move (empty when it may go now)."""
    local = pendulum.instance(moment).in_timezone(zone)
    reasons: list[str] = []
    opening = policy.quiet_hours[1] if policy.quiet_hours else _DAY_START
    for _ in range(60):  # a guard: at most a couple of weeks of holidays and weekends
        if policy.business_days_only and local.isoweekday() > 5:
            reasons.append(f"weekend in {zone}")
            local = _start_of_next_day(local, opening, zone)
            continue
        holiday = _holidays(country, local.year).get(local.date()) if policy.holidays and country else None
        if holiday and country:
            reasons.append(f"public holiday in {country.upper()} ({holiday})")
            local = _start_of_next_day(local, opening, zone)
            continue
        if policy.quiet_hours and _quiet(local, policy.quiet_hours):
            start, end = policy.quiet_hours
            reasons.append(f"quiet hours {start:%H:%M}-{end:%H:%M} in {zone}")
            candidate = pendulum.datetime(local.year, local.month, local.day, end.hour, end.minute, tz=zone)
            local = candidate if candidate > local else _start_of_next_day(local, end, zone)
            continue
        break
    return local.in_timezone("UTC"), list(dict.fromkeys(reasons))


def _start_of_next_day(local: pendulum.DateTime, opening: time, zone: str) -> pendulum.DateTime:
    nxt = local.date().add(days=1)
    return pendulum.datetime(nxt.year, nxt.month, nxt.day, opening.hour, opening.minute, tz=zone)


def decide(
    *,
    as_of: datetime,
    created_at: datetime,
    policy: ContactPolicy,
    zone: str,
    country: str | None,
    kind: str,
    unsubscribed: str | None,
    recent: list[datetime],
    last_survey_at: datetime | None,
) -> Decision:
    """What to do with one contact touch at ``as_of``.

    ``unsubscribed``: why the contact may not be reached on this channel, or None.
    ``recent``: when this contact was last touched (delivered, any playbook).
    ``last_survey_at``: the contact's latest survey sent or answered."""
    if unsubscribed:
        return Decision("suppress", reason=unsubscribed)
    fatigue = policy.survey_fatigue
    if kind == "survey" and fatigue and last_survey_at is not None and as_of - last_survey_at < fatigue:
        return Decision(
            "suppress",
            reason=f"survey fatigue: surveyed on {last_survey_at:%Y-%m-%d}, within {fatigue.days} days",
        )
    when = as_of
    reasons: list[str] = []
    if policy.max_touches:
        cap, window = policy.max_touches
        in_window = sorted(t for t in recent if as_of - window < t <= as_of)
        if len(in_window) >= cap:
            when = in_window[len(in_window) - cap] + window
            reasons.append(f"touch cap {cap} per {window.days} days reached")
    allowed, moved = next_allowed(when, zone, policy, country)
    reasons += moved
    if allowed <= as_of:
        return Decision("send")
    reason = "; ".join(reasons)
    if allowed - created_at > policy.max_defer:
        return Decision("suppress", reason=f"held back more than {policy.max_defer.days} days ({reason})")
    return Decision("defer", until=allowed, reason=f"deferred to {allowed:%Y-%m-%d %H:%M} UTC: {reason}")


def unsubscribe_reason(contact: Contact, kind: str) -> str | None:
    """Why this contact may not receive a message of ``kind`` (email, survey), or None."""
    channels = set(contact.unsubscribed_channels or [])
    since = f" on {contact.unsubscribed_at:%Y-%m-%d}" if contact.unsubscribed_at else ""
    if contact.unsubscribed:
        return f"unsubscribed from everything{since}"
    for name in ("email", kind):
        if name in channels:
            return f"unsubscribed from {name}{since}"
    return None
