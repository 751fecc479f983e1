"""Catch-up with an injected clock: fire within the grace, report later ones missed, once."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler import (
    FakeClock,
    InMemoryScheduleSource,
    Occurrence,
    SchedulerService,
    ScheduleSpec,
    parse_rule,
)

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
T = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)  # 07:00 in Ho Chi Minh City


def once(schedule_id: int, at: datetime) -> ScheduleSpec:
    return ScheduleSpec(schedule_id, parse_rule({"kind": "once", "at": at.isoformat()}))


def daily(schedule_id: int, *times: str, holidays: frozenset[date] = frozenset()) -> ScheduleSpec:
    rule = parse_rule(
        {
            "kind": "recurring",
            "frequency": "daily",
            "start_date": "2025-01-01",
            "times": list(times),
        }
    )
    return ScheduleSpec(schedule_id, rule, holidays)


def service(source: InMemoryScheduleSource, clock: FakeClock) -> SchedulerService:
    def never(occ: Occurrence) -> None:
        raise AssertionError(f"due() must not call back ({occ.id})")

    return SchedulerService(source, never, never, clock=clock, tz=HCM, grace_s=60)


def test_first_run_ever_has_nothing_due_and_records_the_check() -> None:
    source = InMemoryScheduleSource([once(1, T - timedelta(minutes=5))])
    fire, missed = service(source, FakeClock(T)).due(T)
    assert (fire, missed) == ([], [])
    assert source.last_checked() == T


def test_within_the_grace_it_is_fired() -> None:
    source = InMemoryScheduleSource([once(1, T)], last_checked=T - timedelta(minutes=10))
    now = T + timedelta(seconds=60)  # exactly the grace: still played
    fire, missed = service(source, FakeClock(now)).due(now)
    assert fire == [Occurrence(1, T)] and missed == []
    assert fire[0].id == "s1-20250106T000000Z"
    assert source.last_checked() == now


def test_beyond_the_grace_it_is_missed_never_played_late() -> None:
    source = InMemoryScheduleSource([once(1, T)], last_checked=T - timedelta(minutes=10))
    now = T + timedelta(seconds=61)
    fire, missed = service(source, FakeClock(now)).due(now)
    assert fire == [] and missed == [Occurrence(1, T)]


def test_calling_due_twice_with_the_same_now_returns_nothing_new() -> None:
    source = InMemoryScheduleSource([once(1, T), daily(2, "06:59:45")], T - timedelta(hours=1))
    now = T + timedelta(seconds=30)
    svc = service(source, FakeClock(now))
    fire, missed = svc.due(now)
    assert [o.id for o in fire] == ["s2-20250105T235945Z", "s1-20250106T000000Z"]
    assert missed == []
    assert svc.due(now) == ([], [])
    # Even if the stored check time goes back (a failed write, a restored backup), the
    # process never hands out the same occurrence twice.
    source.set_last_checked(T - timedelta(hours=1))
    assert svc.due(now) == ([], [])


def test_a_long_outage_reports_each_missed_occurrence_in_order() -> None:
    source = InMemoryScheduleSource(
        [daily(1, "07:00", "17:00", holidays=frozenset({date(2025, 1, 4)}))],
        last_checked=T - timedelta(days=3),  # 2025-01-03 07:00 local
    )
    now = T + timedelta(seconds=10)
    fire, missed = service(source, FakeClock(now)).due(now)
    assert [o.scheduled_at.astimezone(HCM).strftime("%d %H:%M") for o in missed] == [
        "03 17:00",
        "05 07:00",
        "05 17:00",
    ]
    assert fire == [Occurrence(1, T)]


def test_an_occurrence_at_last_checked_was_already_accounted_for() -> None:
    source = InMemoryScheduleSource([once(1, T)], last_checked=T)
    now = T + timedelta(seconds=5)
    assert service(source, FakeClock(now)).due(now) == ([], [])


def test_removed_schedules_are_not_caught_up() -> None:
    source = InMemoryScheduleSource([once(1, T)], last_checked=T - timedelta(minutes=1))
    svc = service(source, FakeClock(T))
    source.replace([])
    assert svc.due(T + timedelta(seconds=1)) == ([], [])


def test_a_failing_store_is_logged_and_due_still_answers(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenStore(InMemoryScheduleSource):
        def set_last_checked(self, when: datetime) -> None:
            raise OSError("database is locked")

    source = BrokenStore([once(1, T)], last_checked=T - timedelta(minutes=1))
    now = T + timedelta(seconds=1)
    with caplog.at_level(logging.ERROR, logger="scheduler.service"):
        fire, _ = service(source, FakeClock(now)).due(now)
    assert fire == [Occurrence(1, T)]
    assert "could not store last_checked" in caplog.text


def test_due_needs_an_aware_now() -> None:
    svc = service(InMemoryScheduleSource(), FakeClock(T))
    with pytest.raises(ValueError, match="timezone-aware"):
        svc.due(datetime(2025, 1, 6))


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(T)
    assert clock.now() == T
    assert clock.advance(1.5) == T + timedelta(seconds=1.5)
    clock.set(T + timedelta(days=1))
    assert clock.now() == T + timedelta(days=1)
