"""Durations as CS ops write them: ``3 days``, ``2 weeks``, ``12 hours``, ``90 minutes`` or ISO 8601 ``P3D``."""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["DURATION_PATTERN", "format_duration", "parse_duration"]

_UNITS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_WORDS = re.compile(r"^\s*(\d+)\s*(minute|hour|day|week)s?\s*$", re.IGNORECASE)
_ISO = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")
#: for the JSON Schema: what a duration looks like
DURATION_PATTERN = r"^(\s*\d+\s*(minute|hour|day|week)s?\s*|P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?)?)$"


def parse_duration(text: object) -> timedelta:
    """Parse a duration. Months and years are refused: their length depends on the calendar."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '3 days', got {text!r}")
    m = _WORDS.match(text)
    if m:
        count, unit = int(m.group(1)), m.group(2).lower()
        return count * _UNITS[unit]
    m = _ISO.match(text.strip())
    if m and any(m.groups()):
        w, d, h, mi = (int(g) if g else 0 for g in m.groups())
        return timedelta(weeks=w, days=d, hours=h, minutes=mi)
    hint = (
        " (months and years vary in length: use days or weeks)" if re.search(r"month|year|\d+[YM]", text, re.I) else ""
    )
    raise ValueError(
        f"bad duration {text!r}: use '3 days', '2 weeks', '12 hours', '30 minutes' or ISO 8601 like 'P3D'{hint}"
    )


def format_duration(value: timedelta) -> str:
    """The shortest readable form: ``2 weeks``, ``3 days``, ``36 hours``."""
    seconds = int(value.total_seconds())
    for name, unit in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % unit == 0:
            n = seconds // unit
            return f"{n} {name}{'s' if n != 1 else ''}"
    return f"{seconds // 60} minutes" if seconds else "0 minutes"
