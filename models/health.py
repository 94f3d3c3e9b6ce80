"""The health model: what ``playbooks/health.yaml`` means, checked field by field.

A health score is a weighted average of *measures* (usage trend, active users per seat, open
tickets, the latest NPS answer, days since the last touch). Each measure turns its raw value into
0-100 points along a piecewise-linear curve (``points: [[raw, points], ...]``); the score is the
weighted average of the points of the measures an account has data for, and its *band* (green,
yellow, red) comes from two thresholds. Models are pydantic v2, frozen, and refuse unknown keys,
like the playbook models.
"""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, model_validator

from .playbook import Duration, Percentage

__all__ = [
    "BANDS",
    "MEASURES",
    "ActiveUsers",
    "Bands",
    "DaysSinceLastTouch",
    "HealthSpec",
    "Measure",
    "Measures",
    "Nps",
    "OpenTickets",
    "UsageTrend",
    "points_for",
]

#: the measures a health definition may weigh, in the order they are shown
MEASURES = ("usage_trend", "active_users", "open_tickets", "nps", "days_since_last_touch")
BANDS = ("green", "yellow", "red")

Band = Literal["green", "yellow", "red"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _points(value: float) -> float:
    if not 0 <= value <= 100:
        raise ValueError(f"points go from 0 to 100, not {value:g}")
    return value


def _threshold(value: float) -> float:
    if not 0 <= value <= 100:
        raise ValueError(f"a band starts at a score from 0 to 100, not {value:g}")
    return value


def _weight(value: float) -> float:
    if value < 0:
        raise ValueError(f"a weight cannot be negative ({value:g}); 0 shows the measure without counting it")
    return value


def _curve(curve: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    if len(curve) < 2:
        raise ValueError("a curve needs at least two [raw, points] pairs, like [[0, 0], [10, 100]]")
    for n, ((before, _), (raw, _)) in enumerate(pairwise(curve), start=2):
        if raw <= before:
            raise ValueError(
                f"the raw values must increase from pair to pair: pair {n} has {raw:g}, "
                f"not above {before:g} of the pair before"
            )
    return curve


Points = Annotated[StrictFloat, AfterValidator(_points)]
Threshold = Annotated[StrictFloat, AfterValidator(_threshold)]
Weight = Annotated[StrictFloat, AfterValidator(_weight)]
#: ``[[raw, points], ...]``: raw values increasing, points from 0 to 100
Curve = Annotated[tuple[tuple[StrictFloat, Points], ...], AfterValidator(_curve)]


def points_for(curve: tuple[tuple[float, float], ...], raw: float) -> float:
    """Points of ``raw`` on a piecewise-linear curve: straight lines between the pairs, flat
    beyond the first and the last raw value."""
    if raw <= curve[0][0]:
        return curve[0][1]
    for (x0, y0), (x1, y1) in pairwise(curve):
        if raw <= x1:
            return y0 + (y1 - y0) * (raw - x0) / (x1 - x0)
    return curve[-1][1]


class Measure(_Strict):
    """What every measure has: its weight and the curve from raw value to points."""

    weight: Weight
    points: Curve
    description: str | None = None

    def points_for(self, raw: float) -> float:
        return points_for(self.points, raw)


def _whole_days(value: timedelta) -> timedelta:
    if value < timedelta(days=1) or value % timedelta(days=1):
        raise ValueError("usage is counted by the day: use a whole number of days, like '30 days'")
    return value


Days = Annotated[Duration, AfterValidator(_whole_days)]


class UsageTrend(Measure):
    """Usage of the last ``window`` against the ``window`` before, as a change in percent
    (-100: none at all any more; +50: half as much again)."""

    metric: str = Field(default="logins", min_length=1, max_length=60)
    window: Days = timedelta(days=30)


class ActiveUsers(Measure):
    """The average daily active users over the last ``window`` (days with a usage row), as a
    percentage of the account's seats."""

    metric: str = Field(default="active_users", min_length=1, max_length=60)
    window: Days = timedelta(days=30)


class OpenTickets(Measure):
    """Support tickets open at the time of scoring (not solved), counted."""


class Nps(Measure):
    """The latest NPS answer (0-10) of anyone at the account, if it is no older than ``within``."""

    within: Duration | None = timedelta(days=365)


class DaysSinceLastTouch(Measure):
    """Whole days since the latest delivered touch (email or survey) to any contact of the account."""


class Measures(_Strict):
    """The measures that make up the score; a measure left out does not count."""

    usage_trend: UsageTrend | None = None
    active_users: ActiveUsers | None = None
    open_tickets: OpenTickets | None = None
    nps: Nps | None = None
    days_since_last_touch: DaysSinceLastTouch | None = None

    @model_validator(mode="after")
    def _some_weight(self) -> Measures:
        if not self.used():
            raise ValueError(f"name at least one measure: {', '.join(MEASURES)}")
        if sum(m.weight for m in self.used().values()) <= 0:
            raise ValueError("the weights of the measures add up to 0: give at least one measure a weight above 0")
        return self

    def used(self) -> dict[str, Measure]:
        """The measures given, by name, in :data:`MEASURES` order."""
        return {name: m for name in MEASURES if (m := getattr(self, name)) is not None}


class Bands(_Strict):
    """A score at or above ``green`` is green, at or above ``yellow`` yellow, below it red."""

    green: Threshold
    yellow: Threshold

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if self.yellow >= self.green:
            raise ValueError(f"yellow ({self.yellow:g}) must be below green ({self.green:g})")
        return self

    def band(self, score: float) -> Band:
        if score >= self.green:
            return "green"
        if score >= self.yellow:
            return "yellow"
        return "red"


class HealthSpec(_Strict):
    """The health definition, as written in ``health.yaml``."""

    description: str = ""
    measures: Measures
    bands: Bands
    #: the trend compares with the latest score at least this long ago
    trend_window: Duration = timedelta(days=30)
    #: an account is scored only when the measures it has data for carry at least this share of
    #: the total weight: a score made of "no open tickets" alone would read as perfect health
    min_coverage: Percentage = 0.5
