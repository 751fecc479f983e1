"""Rules: parsing with clear errors, recurrence, exceptions, holidays and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from scheduler import (
    OnceRule,
    RecurringRule,
    RuleError,
    SchedulerError,
    next_occurrences,
    occurrences_between,
    parse_rule,
)
from scheduler.rules import local_to_utc

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
PRAGUE = ZoneInfo("Europe/Prague")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def recurring(**fields: Any) -> RecurringRule:
    data: dict[str, Any] = {"kind": "recurring", "frequency": "daily", "start_date": "2025-01-01"}
    data.update(fields)
    rule = parse_rule(data)
    assert isinstance(rule, RecurringRule)
    return rule


def local_dates(occurrences: list[datetime], tz: ZoneInfo = HCM) -> list[date]:
    return [o.astimezone(tz).date() for o in occurrences]


# --- once ---------------------------------------------------------------------------------------


def test_once_with_an_offset_is_that_instant() -> None:
    rule = parse_rule({"kind": "once", "at": "2025-01-06T07:00:00+07:00"})
    assert isinstance(rule, OnceRule)
    assert next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=5) == [utc(2025, 1, 6, 0)]


def test_once_naive_means_site_local_time() -> None:
    rule = parse_rule({"kind": "once", "at": "2025-01-06T07:00:00"})
    assert next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=1) == [utc(2025, 1, 6, 0)]
    assert next_occurrences(rule, tz=PRAGUE, after=utc(2025, 1, 1), count=1) == [utc(2025, 1, 6, 6)]


def test_once_in_the_past_or_at_after_has_no_next_occurrence() -> None:
    rule = parse_rule({"kind": "once", "at": "2025-01-06T00:00:00Z"})
    assert next_occurrences(rule, tz=HCM, after=utc(2025, 1, 6), count=1) == []
    assert next_occurrences(rule, tz=HCM, after=utc(2025, 2, 1), count=1) == []


def test_once_drops_fractions_of_a_second() -> None:
    rule = parse_rule({"kind": "once", "at": "2025-01-06T00:00:00.750Z"})
    assert next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=1) == [utc(2025, 1, 6)]


# --- recurring ----------------------------------------------------------------------------------


def test_ho_chi_minh_seven_in_the_morning_is_midnight_utc() -> None:
    rule = recurring(times=["07:00"])
    assert next_occurrences(rule, tz=HCM, after=utc(2024, 12, 31), count=2) == [
        utc(2025, 1, 1, 0),
        utc(2025, 1, 2, 0),
    ]


def test_daily_several_times_a_day_in_order_from_mid_day() -> None:
    rule = recurring(times=["17:00", "06:00", "11:30"])
    after = local_to_utc(datetime(2025, 1, 1, 10, 0), HCM)
    got = next_occurrences(rule, tz=HCM, after=after, count=5)
    assert [o.astimezone(HCM).strftime("%d %H:%M") for o in got] == [
        "01 11:30",
        "01 17:00",
        "02 06:00",
        "02 11:30",
        "02 17:00",
    ]


def test_every_third_day() -> None:
    rule = recurring(times=["07:00"], interval=3)
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 2), count=3)
    assert local_dates(got) == [date(2025, 1, 4), date(2025, 1, 7), date(2025, 1, 10)]


def test_weekly_on_chosen_weekdays() -> None:
    rule = recurring(times=["06:00"], frequency="weekly", weekdays=[4, 0, 2])
    got = next_occurrences(rule, tz=HCM, after=utc(2024, 12, 31), count=5)
    # 2025-01-01 is a Wednesday.
    assert local_dates(got) == [
        date(2025, 1, 1),
        date(2025, 1, 3),
        date(2025, 1, 6),
        date(2025, 1, 8),
        date(2025, 1, 10),
    ]
    assert {d.weekday() for d in local_dates(got)} == {0, 2, 4}


def test_every_two_weeks_counts_weeks_from_the_start_date() -> None:
    # Starts on Wednesday 8 January: that week's Tuesday is before the start, the next
    # Tuesday is in an off week.
    rule = recurring(
        times=["08:00"], frequency="weekly", interval=2, weekdays=[1], start_date="2025-01-08"
    )
    got = next_occurrences(rule, tz=HCM, after=utc(2024, 12, 1), count=3)
    assert local_dates(got) == [date(2025, 1, 21), date(2025, 2, 4), date(2025, 2, 18)]


def test_monthly_day_31_skips_short_months() -> None:
    rule = recurring(times=["07:00"], frequency="monthly", month_day=31)
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=5)
    assert local_dates(got) == [
        date(2025, 1, 31),
        date(2025, 3, 31),
        date(2025, 5, 31),
        date(2025, 7, 31),
        date(2025, 8, 31),
    ]


def test_monthly_first_monday() -> None:
    rule = recurring(times=["07:00"], frequency="monthly", month_weekday=[0, 1])
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=4)
    assert local_dates(got) == [
        date(2025, 1, 6),
        date(2025, 2, 3),
        date(2025, 3, 3),
        date(2025, 4, 7),
    ]


def test_monthly_last_friday() -> None:
    rule = recurring(times=["16:00"], frequency="monthly", month_weekday=[4, -1])
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=4)
    assert local_dates(got) == [
        date(2025, 1, 31),
        date(2025, 2, 28),
        date(2025, 3, 28),
        date(2025, 4, 25),
    ]


def test_every_other_month_on_the_15th() -> None:
    rule = recurring(
        times=["07:00"], frequency="monthly", interval=2, month_day=15, start_date="2025-11-20"
    )
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=3)
    # November's 15th is before the start; then every second month from November.
    assert local_dates(got) == [date(2026, 1, 15), date(2026, 3, 15), date(2026, 5, 15)]


def test_date_range_is_inclusive_and_ends() -> None:
    rule = recurring(times=["07:00"], start_date="2025-03-01", end_date="2025-03-03")
    got = next_occurrences(rule, tz=HCM, after=utc(2025, 1, 1), count=10)
    assert local_dates(got) == [date(2025, 3, 1), date(2025, 3, 2), date(2025, 3, 3)]
    assert next_occurrences(rule, tz=HCM, after=got[-1], count=10) == []


def test_exceptions_and_holidays_remove_whole_days() -> None:
    rule = recurring(times=["07:00", "17:00"], exceptions=["2025-01-02"])
    got = next_occurrences(
        rule, tz=HCM, after=utc(2024, 12, 31), count=4, holidays={date(2025, 1, 3)}
    )
    assert local_dates(got) == [date(2025, 1, 1)] * 2 + [date(2025, 1, 4)] * 2


def test_holidays_do_not_cancel_a_once_rule() -> None:
    rule = parse_rule({"kind": "once", "at": "2025-09-02T07:00:00"})
    got = next_occurrences(
        rule, tz=HCM, after=utc(2025, 1, 1), count=1, holidays={date(2025, 9, 2)}
    )
    assert got == [utc(2025, 9, 2, 0)]


def test_occurrences_between_is_half_open() -> None:
    rule = recurring(times=["07:00"])
    got = occurrences_between(rule, HCM, utc(2025, 1, 2, 0), utc(2025, 1, 4, 0))
    assert got == [utc(2025, 1, 2, 0), utc(2025, 1, 3, 0)]
    assert occurrences_between(rule, HCM, utc(2025, 1, 4), utc(2025, 1, 4)) == []


def test_next_occurrences_needs_an_aware_after() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_occurrences(recurring(times=["07:00"]), tz=HCM, after=datetime(2025, 1, 1), count=1)


# --- daylight saving time -----------------------------------------------------------------------


def test_prague_spring_gap_moves_to_the_first_valid_instant_once() -> None:
    # 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:15, 02:30 and 03:00 all play at 03:00 once.
    rule = recurring(times=["02:15", "02:30", "03:00"], start_date="2024-03-30")
    got = next_occurrences(rule, tz=PRAGUE, after=utc(2024, 3, 30), count=5)
    assert got == [
        utc(2024, 3, 30, 1, 15),
        utc(2024, 3, 30, 1, 30),
        utc(2024, 3, 30, 2, 0),
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST, the end of the gap
        utc(2024, 4, 1, 0, 15),
    ]


def test_prague_autumn_ambiguous_time_fires_once_at_the_first_instant() -> None:
    # 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, it plays at the first.
    rule = recurring(times=["02:30"], start_date="2024-10-26")
    got = next_occurrences(rule, tz=PRAGUE, after=utc(2024, 10, 26), count=3)
    assert got == [utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_new_york_gap_and_overlap() -> None:
    rule = recurring(times=["01:30", "02:30"], start_date="2024-03-10")
    spring = next_occurrences(rule, tz=NEW_YORK, after=utc(2024, 3, 10), count=2)
    assert spring == [utc(2024, 3, 10, 6, 30), utc(2024, 3, 10, 7, 0)]  # 01:30 EST, 03:00 EDT
    autumn = occurrences_between(rule, NEW_YORK, utc(2024, 11, 3), utc(2024, 11, 4))
    assert autumn == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 3, 7, 30)]  # 01:30 EDT, 02:30 EST


def test_a_skipped_day_moves_to_the_next_midnight() -> None:
    # Samoa skipped 30 December 2011 entirely.
    apia = ZoneInfo("Pacific/Apia")
    rule = parse_rule({"kind": "once", "at": "2011-12-30T12:00:00"})
    (got,) = next_occurrences(rule, tz=apia, after=utc(2011, 1, 1), count=1)
    assert got.astimezone(apia).replace(tzinfo=None) == datetime(2011, 12, 31, 0, 0)


# --- parsing ------------------------------------------------------------------------------------


def test_times_and_weekdays_are_sorted_and_deduplicated() -> None:
    rule = recurring(times=["17:00", "07:00", "07:00"], frequency="weekly", weekdays=[4, 0, 4])
    assert rule.times == [time(7), time(17)]
    assert rule.weekdays == [0, 4]


def test_a_stored_rule_parses_back_to_itself() -> None:
    rules = [
        recurring(
            times=["07:00"], frequency="monthly", month_weekday=[4, -1], exceptions=["2025-05-30"]
        ),
        parse_rule({"kind": "once", "at": "2025-01-06T07:00:00+07:00"}),
        parse_rule({"kind": "once", "at": "2025-01-06T07:00:00"}),
    ]
    for rule in rules:
        assert parse_rule(rule.model_dump(mode="json")) == rule


def test_rules_are_frozen() -> None:
    rule = recurring(times=["07:00"])
    with pytest.raises(ValidationError):
        rule.interval = 2  # type: ignore[misc]


BAD_RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"kind": "sometimes"}, "kind", "'once' or 'recurring'"),
    ({}, "kind", "required"),
    ({"kind": "once"}, "at", "required"),
    ({"kind": "once", "at": "tomorrow"}, "at", "datetime"),
    ({"kind": "recurring", "frequency": "daily", "start_date": "2025-01-01"}, "times", "required"),
    ({"times": [], "frequency": "daily"}, "times", "between 1 and 24"),
    ({"times": ["07:00+07:00"], "frequency": "daily"}, "times", "without a UTC offset"),
    ({"times": ["25:00"], "frequency": "daily"}, "times.0", "hour"),
    ({"times": ["07:00"], "frequency": "hourly"}, "frequency", "daily"),
    ({"times": ["07:00"], "frequency": "daily", "interval": 0}, "interval", "between 1"),
    ({"times": ["07:00"], "frequency": "weekly"}, "weekdays", "at least one day"),
    ({"times": ["07:00"], "frequency": "weekly", "weekdays": [7]}, "weekdays", "0 = Monday"),
    ({"times": ["07:00"], "frequency": "daily", "weekdays": [1]}, "weekdays", "weekly rules only"),
    (
        {"times": ["07:00"], "frequency": "daily", "weekday": [1]},
        "weekday",
        "did you mean 'weekdays'",
    ),
    ({"times": ["07:00"], "frequency": "monthly"}, "month_day", "a monthly rule needs"),
    ({"times": ["07:00"], "frequency": "monthly", "month_day": 32}, "month_day", "1 to 31"),
    (
        {"times": ["07:00"], "frequency": "monthly", "month_day": 1, "month_weekday": [0, 1]},
        "month_day",
        "not both",
    ),
    (
        {"times": ["07:00"], "frequency": "monthly", "month_weekday": [0, 0]},
        "month_weekday",
        "week of the month",
    ),
    ({"times": ["07:00"], "frequency": "daily", "month_day": 3}, "month_day", "monthly rules only"),
    (
        {"times": ["07:00"], "frequency": "daily", "end_date": "2024-12-31"},
        "end_date",
        "before the start",
    ),
    (
        {
            "times": ["07:00"],
            "frequency": "monthly",
            "interval": 12,
            "month_day": 31,
            "start_date": "2025-04-01",
        },
        "month_day",
        "never happens",
    ),
    (
        {"times": ["07:00"], "frequency": "weekly", "weekdays": [0], "end_date": "2025-01-05"},
        "end_date",
        "never happens",
    ),
]


@pytest.mark.parametrize(("data", "field", "words"), BAD_RULES)
def test_bad_rules_name_the_field(data: dict[str, Any], field: str, words: str) -> None:
    if data and "kind" not in data:
        data = {"kind": "recurring", "start_date": "2025-01-01", **data}
    with pytest.raises(RuleError) as caught:
        parse_rule(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, SchedulerError)


def test_a_rule_must_be_an_object() -> None:
    with pytest.raises(RuleError, match="object"):
        parse_rule(["once"])  # type: ignore[arg-type]
