"""Properties over random rules, zones and instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from device_profiles.protocol import Priority
from scheduler import (
    FakeClock,
    InMemoryScheduleSource,
    Occurrence,
    QuietHours,
    QuietHoursError,
    RecurringRule,
    RuleError,
    SchedulerService,
    ScheduleSpec,
    next_occurrences,
    occurrences_between,
    parse_rule,
)
from scheduler.rules import local_to_utc, wall_time

ZONES = st.sampled_from(
    [ZoneInfo("Asia/Ho_Chi_Minh"), ZoneInfo("Europe/Prague"), ZoneInfo("America/New_York")]
)
TIMES = st.builds(
    time, st.integers(0, 23), st.sampled_from([0, 15, 30, 59]), st.sampled_from([0, 30])
)
INSTANTS = st.datetimes(datetime(2023, 1, 1), datetime(2027, 12, 31), timezones=st.just(UTC))


@st.composite
def recurring_rules(draw: st.DrawFn) -> RecurringRule:
    start = draw(st.dates(date(2023, 1, 1), date(2026, 12, 31)))
    frequency = draw(st.sampled_from(["daily", "weekly", "monthly"]))
    data: dict[str, Any] = {
        "kind": "recurring",
        "frequency": frequency,
        "times": [t.isoformat() for t in draw(st.lists(TIMES, min_size=1, max_size=6))],
        "interval": draw(st.integers(1, 4)),
        "start_date": start.isoformat(),
        "exceptions": [
            (start + timedelta(days=n)).isoformat()
            for n in draw(st.lists(st.integers(0, 90), max_size=8))
        ],
    }
    end_days = draw(st.none() | st.integers(0, 900))
    if end_days is not None:
        data["end_date"] = (start + timedelta(days=end_days)).isoformat()
    if frequency == "weekly":
        data["weekdays"] = draw(st.lists(st.integers(0, 6), min_size=1, max_size=7))
    elif frequency == "monthly":
        if draw(st.booleans()):
            data["month_day"] = draw(st.integers(1, 31))
        else:
            data["month_weekday"] = [
                draw(st.integers(0, 6)),
                draw(st.sampled_from([1, 2, 3, 4, 5, -1, -2])),
            ]
    try:
        rule = parse_rule(data)
    except RuleError:  # e.g. a rule that never happens in its short date range
        assume(False)
        raise
    assert isinstance(rule, RecurringRule)
    return rule


@settings(max_examples=150, deadline=None)
@given(rule=recurring_rules(), tz=ZONES, after=INSTANTS, count=st.integers(1, 30))
def test_next_occurrences_properties(
    rule: RecurringRule, tz: ZoneInfo, after: datetime, count: int
) -> None:
    got = next_occurrences(rule, tz=tz, after=after, count=count)
    assert len(got) <= count
    assert all(a < b for a, b in pairwise(got)), "strictly increasing"
    assert all(o > after and o.tzinfo is UTC and o.microsecond == 0 for o in got)
    local_days = [wall_time(o, tz).date() for o in got]
    assert not set(local_days) & set(rule.exceptions)
    assert all(rule.start_date <= d for d in local_days)
    assert rule.end_date is None or all(d <= rule.end_date for d in local_days)
    try:
        QuietHours().check_rule(rule, tz, Priority.SCHEDULED, after)
    except QuietHoursError:
        pass
    else:
        assert not any(QuietHours().contains(wall_time(o, tz).time()) for o in got)
    if got:
        # The service plans one occurrence at a time: "next after the last" continues the list.
        assert next_occurrences(rule, tz=tz, after=got[0], count=count - 1) == got[1:]
        end = got[-1] + timedelta(microseconds=1)
        assert occurrences_between(rule, tz, after + timedelta(microseconds=1), end) == got


@settings(max_examples=300, deadline=None)
@given(
    local=st.datetimes(datetime(2020, 1, 1), datetime(2030, 12, 31)).map(
        lambda d: d.replace(microsecond=0)
    ),
    tz=ZONES,
)
def test_local_times_land_on_themselves_or_just_after_a_gap(local: datetime, tz: ZoneInfo) -> None:
    at = local_to_utc(local, tz)
    wall = wall_time(at, tz)
    if wall != local:  # only in a gap: the first instant after it
        assert wall > local
        assert wall_time(at - timedelta(seconds=1), tz) < local
    else:  # an ambiguous time takes its first instant (these zones fall back by one hour)
        assert wall_time(at - timedelta(hours=1), tz) != local


@settings(max_examples=60, deadline=None)
@given(
    rule=recurring_rules(),
    tz=ZONES,
    start=INSTANTS,
    steps_s=st.lists(st.integers(0, 3 * 86400), min_size=1, max_size=6),
)
def test_due_hands_out_every_occurrence_exactly_once(
    rule: RecurringRule, tz: ZoneInfo, start: datetime, steps_s: list[int]
) -> None:
    source = InMemoryScheduleSource([ScheduleSpec(5, rule)], last_checked=start)

    def never(occ: Occurrence) -> None:
        raise AssertionError

    clock = FakeClock(start)
    svc = SchedulerService(source, never, never, clock=clock, tz=tz, grace_s=60)
    handed: list[Occurrence] = []
    for step in steps_s:
        now = clock.advance(step)
        fire, missed = svc.due(now)
        assert all((now - o.scheduled_at).total_seconds() <= 60 for o in fire)
        assert all((now - o.scheduled_at).total_seconds() > 60 for o in missed)
        handed += fire + missed
        assert source.last_checked() == now
    tick = timedelta(microseconds=1)
    expected = occurrences_between(rule, tz, start + tick, clock.now() + tick)
    assert sorted(o.scheduled_at for o in handed) == expected
