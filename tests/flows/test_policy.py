"""The contact policy decides in the contact's own time zone, across DST changes, weekends,
public holidays, caps across playbooks and survey fatigue."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from flows.engine.policy import ContactPolicy, decide, effective_policy, next_allowed
from models import PlaybookError
from models.playbook import PolicySpec
from playbooks import load_policy

POLICY = ContactPolicy(
    quiet_hours=(time(20, 0), time(8, 0)),
    business_days_only=True,
    holidays=True,
    max_touches=(2, timedelta(days=7)),
    survey_fatigue=timedelta(days=60),
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("moment", "zone", "expected", "why"),
    [
        # 10:00 UTC on a Tuesday is 19:00 in Tokyo (allowed) and 05:00 in New York (quiet until 08:00 EST)
        ("2027-01-12T10:00:00+00:00", "Asia/Tokyo", "2027-01-12T10:00:00+00:00", []),
        (
            "2027-01-12T10:00:00+00:00",
            "America/New_York",
            "2027-01-12T13:00:00+00:00",
            ["quiet hours 20:00-08:00 in America/New_York"],
        ),
        # 21:30 in Berlin on a Tuesday waits for 08:00 Wednesday (07:00 UTC in winter)
        (
            "2027-01-12T20:30:00+00:00",
            "Europe/Berlin",
            "2027-01-13T07:00:00+00:00",
            ["quiet hours 20:00-08:00 in Europe/Berlin"],
        ),
        # Friday evening in New York waits for Monday 08:00
        (
            "2027-01-16T02:00:00+00:00",
            "America/New_York",
            "2027-01-18T13:00:00+00:00",
            ["quiet hours 20:00-08:00 in America/New_York", "weekend in America/New_York"],
        ),
        # DST: clocks go forward on 2027-03-14 in New York; Monday 08:00 EDT is 12:00 UTC, not 13:00
        ("2027-03-13T15:00:00+00:00", "America/New_York", "2027-03-15T12:00:00+00:00", ["weekend in America/New_York"]),
        # DST: Europe goes back on 2027-10-31; Monday 08:00 CET is 07:00 UTC again
        ("2027-10-30T12:00:00+00:00", "Europe/Berlin", "2027-11-01T07:00:00+00:00", ["weekend in Europe/Berlin"]),
        # 03:00 local during the night the clocks go forward (02:00-03:00 does not exist in Berlin)
        (
            "2027-03-29T01:30:00+00:00",
            "Europe/Berlin",
            "2027-03-29T06:00:00+00:00",
            ["quiet hours 20:00-08:00 in Europe/Berlin"],
        ),
    ],
)
def test_next_allowed_in_the_contacts_time_zone(moment: str, zone: str, expected: str, why: list[str]) -> None:
    when, reasons = next_allowed(at(moment), zone, POLICY, None)
    assert when == at(expected)
    assert reasons == why


def test_public_holidays_of_the_accounts_country() -> None:
    # Christmas Day 2026 is a Friday, the 26th a holiday and a Saturday: Monday the 28th it is
    when, reasons = next_allowed(at("2026-12-25T10:00:00+00:00"), "Europe/Berlin", POLICY, "DE")
    assert when == at("2026-12-28T07:00:00+00:00")
    assert reasons == ["public holiday in DE (Christmas Day)", "weekend in Europe/Berlin"]
    # 3 October is German Unity Day; in 2028 it is a Tuesday
    when, reasons = next_allowed(at("2028-10-03T10:00:00+00:00"), "Europe/Berlin", POLICY, "DE")
    assert when == at("2028-10-04T06:00:00+00:00")
    assert reasons == ["public holiday in DE (German Unity Day)"]
    # the same day is an ordinary Tuesday in the United States
    assert next_allowed(at("2028-10-03T15:00:00+00:00"), "America/Chicago", POLICY, "US")[1] == []


def _decide(**overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "as_of": at("2027-01-12T15:00:00+00:00"),
        "created_at": at("2027-01-12T15:00:00+00:00"),
        "policy": POLICY,
        "zone": "Europe/Berlin",
        "country": "DE",
        "kind": "email",
        "unsubscribed": None,
        "recent": [],
        "last_survey_at": None,
    }
    args.update(overrides)
    return decide(**args)  # type: ignore[arg-type]


def test_allowed_touch_is_sent_now() -> None:
    assert _decide().action == "send"


def test_unsubscribed_contact_is_suppressed_with_the_reason() -> None:
    decision = _decide(unsubscribed="unsubscribed from email on 2027-01-02")
    assert (decision.action, decision.reason) == ("suppress", "unsubscribed from email on 2027-01-02")


def test_cap_counts_every_playbook_and_defers_until_the_window_frees() -> None:
    recent = [at("2027-01-08T09:00:00+00:00"), at("2027-01-11T09:00:00+00:00")]
    decision = _decide(recent=recent)
    assert decision.action == "defer"
    # the oldest of the two leaves the 7-day window on 15 January at 09:00 UTC (10:00 in Berlin)
    assert decision.until == at("2027-01-15T09:00:00+00:00")
    assert "touch cap 2 per 7 days reached" in (decision.reason or "")


def test_a_touch_that_could_only_go_much_later_is_suppressed() -> None:
    decision = _decide(created_at=at("2026-12-20T15:00:00+00:00"), recent=[at("2027-01-11T09:00:00+00:00")] * 2)
    assert decision.action == "suppress"
    assert decision.reason is not None and decision.reason.startswith("held back more than 14 days")


def test_survey_fatigue_across_playbooks() -> None:
    recently = _decide(kind="survey", last_survey_at=at("2026-12-01T10:00:00+00:00"))
    assert recently.action == "suppress"
    assert recently.reason == "survey fatigue: surveyed on 2026-12-01, within 60 days"
    assert _decide(kind="survey", last_survey_at=at("2026-10-01T10:00:00+00:00")).action == "send"
    assert _decide(kind="email", last_survey_at=at("2026-12-01T10:00:00+00:00")).action == "send"


def test_playbook_overrides_the_global_policy() -> None:
    merged = effective_policy(
        PolicySpec(quiet_hours="20:00-08:00", max_touches="3 per 7 days"), PolicySpec(max_touches="1 per 14 days")
    )
    assert merged.quiet_hours is not None and merged.max_touches == (1, timedelta(days=14))


def test_shipped_policy_loads() -> None:
    spec = load_policy(Path(__file__).resolve().parents[2] / "playbooks")
    assert spec.max_touches and spec.quiet_hours


def test_bad_policy_file_is_reported_at_its_place(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text('quiet_hours: "25:00-08:00"\nmax_touchs: 3\n', encoding="utf-8")
    with pytest.raises(PlaybookError) as exc:
        load_policy(tmp_path)
    assert [p.format().split("/")[-1] for p in exc.value.problems] == [
        "policy.yaml:1:14: quiet_hours: bad quiet hours '25:00-08:00': use 'HH:MM-HH:MM' like '20:00-08:00'",
        "policy.yaml:2:1: unknown key 'max_touchs' (did you mean 'max_touches'?)",
    ]
