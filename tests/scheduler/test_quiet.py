"""Quiet hours: routine broadcasts refused at night, emergencies always allowed."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from device_profiles.protocol import Priority
from scheduler import QuietHours, QuietHoursError, RuleError, parse_rule

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2025, 1, 1, tzinfo=UTC)
ROUTINE = [Priority.SCHEDULED, Priority.LIVE]


def daily(*times: str, **fields: Any) -> Any:
    return parse_rule(
        {
            "kind": "recurring",
            "frequency": "daily",
            "start_date": "2025-01-01",
            "times": list(times),
        }
        | fields
    )


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(21, 59, 59), False),
        (time(22, 0), True),
        (time(23, 59), True),
        (time(0, 0), True),
        (time(4, 59, 59), True),
        (time(5, 0), False),
        (time(12, 0), False),
    ],
)
def test_default_quiet_hours_wrap_midnight(local: time, quiet: bool) -> None:
    assert QuietHours().contains(local) is quiet


def test_quiet_hours_within_a_day_and_empty() -> None:
    lunch = QuietHours(time(11, 30), time(13, 30))
    assert lunch.contains(time(12)) and not lunch.contains(time(13, 30))
    assert not lunch.contains(time(23))
    assert not QuietHours(time(22), time(22)).contains(time(22))


@pytest.mark.parametrize("priority", ROUTINE)
def test_a_routine_rule_at_half_past_ten_at_night_is_refused(priority: Priority) -> None:
    with pytest.raises(QuietHoursError) as caught:
        QuietHours().check_rule(daily("07:00", "22:30"), HCM, priority, NOW)
    assert caught.value.local_time == time(22, 30)
    assert caught.value.field == "times"
    assert "22:30" in str(caught.value) and "22:00–05:00" in str(caught.value)
    assert isinstance(caught.value, RuleError)


def test_an_emergency_may_play_at_night() -> None:
    QuietHours().check_rule(daily("22:30", "03:00"), HCM, Priority.EMERGENCY, NOW)


def test_the_first_offending_time_is_named() -> None:
    with pytest.raises(QuietHoursError, match=r"^times: 04:59 "):
        QuietHours().check_rule(daily("23:00", "04:59", "06:00"), HCM, Priority.SCHEDULED, NOW)


def test_five_in_the_morning_is_allowed() -> None:
    QuietHours().check_rule(daily("05:00", "21:59"), HCM, Priority.SCHEDULED, NOW)


def test_a_once_rule_is_checked_in_site_local_time() -> None:
    # 15:30 UTC is 22:30 in Ho Chi Minh City.
    rule = parse_rule({"kind": "once", "at": "2025-01-06T15:30:00Z"})
    with pytest.raises(QuietHoursError, match=r"^at: 22:30 ") as caught:
        QuietHours().check_rule(rule, HCM, Priority.LIVE, NOW)
    assert caught.value.local_time == time(22, 30)
    morning = parse_rule({"kind": "once", "at": "2025-01-06T07:30:00"})
    QuietHours().check_rule(morning, HCM, Priority.SCHEDULED, NOW)


def test_a_time_a_clock_change_moves_into_quiet_hours_is_refused() -> None:
    # On 11 October 1975 Easter Island moved its clocks from 21:00 to 22:00: 21:30 played at 22:00.
    easter = ZoneInfo("Pacific/Easter")
    rule = daily("21:30", start_date="1975-01-01")
    with pytest.raises(QuietHoursError, match="clocks go forward") as caught:
        QuietHours().check_rule(rule, easter, Priority.SCHEDULED, datetime(1975, 1, 1, tzinfo=UTC))
    assert caught.value.local_time == time(22, 0)
    QuietHours().check_rule(
        daily("20:30", start_date="1975-01-01"),
        easter,
        Priority.SCHEDULED,
        datetime(1975, 1, 1, tzinfo=UTC),
    )
