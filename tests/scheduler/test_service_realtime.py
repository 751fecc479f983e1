"""SchedulerService with a real BackgroundScheduler: a few seconds of wall-clock time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent

from scheduler import (
    FakeClock,
    InMemoryScheduleSource,
    Occurrence,
    SchedulerError,
    SchedulerService,
    ScheduleSpec,
    SystemClock,
    parse_rule,
)
from scheduler.clock import Clock

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
WAIT_S = 5.0


def once(schedule_id: int, at: datetime) -> ScheduleSpec:
    return ScheduleSpec(schedule_id, parse_rule({"kind": "once", "at": at.isoformat()}))


def soon(seconds: int = 2) -> datetime:
    """A whole second between seconds-1 and seconds from now."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)


class Recorder:
    """Callbacks that remember what they were given and when, and can be waited for."""

    def __init__(self, clock: Clock, fail_for: frozenset[int] = frozenset()) -> None:
        self.clock = clock
        self.fail_for = fail_for
        self.fired: list[tuple[Occurrence, datetime]] = []
        self.missed: list[Occurrence] = []
        self.changed = threading.Condition()

    def on_fire(self, occ: Occurrence) -> None:
        with self.changed:
            self.fired.append((occ, self.clock.now()))
            self.changed.notify_all()
        if occ.schedule_id in self.fail_for:
            raise RuntimeError("broker unreachable")

    def on_missed(self, occ: Occurrence) -> None:
        with self.changed:
            self.missed.append(occ)
            self.changed.notify_all()

    def fired_ids(self) -> list[str]:
        with self.changed:
            return [occ.id for occ, _ in self.fired]

    def wait_for(self, n_fired: int = 0, n_missed: int = 0, timeout: float = WAIT_S) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: len(self.fired) >= n_fired and len(self.missed) >= n_missed, timeout
            )


@pytest.fixture
def services() -> Iterator[list[SchedulerService]]:
    """Every service a test builds is shut down, even when the test fails."""
    built: list[SchedulerService] = []
    yield built
    for svc in built:
        svc.shutdown(wait=False)


def build(
    services: list[SchedulerService],
    source: InMemoryScheduleSource,
    recorder: Recorder,
    clock: Clock | None = None,
) -> SchedulerService:
    svc = SchedulerService(
        source,
        recorder.on_fire,
        recorder.on_missed,
        clock=clock or recorder.clock,
        tz=HCM,
        grace_s=60,
    )
    services.append(svc)
    return svc


def test_a_once_rule_fires_on_time_once_and_a_failing_callback_harms_nothing(
    services: list[SchedulerService], caplog: pytest.LogCaptureFixture
) -> None:
    at = soon()
    source = InMemoryScheduleSource(
        [once(1, at), once(2, at)], last_checked=at - timedelta(hours=1)
    )
    recorder = Recorder(SystemClock(), fail_for=frozenset({1}))
    svc = build(services, source, recorder)
    svc.start()
    assert [o.id for o in svc.pending()] == [Occurrence(1, at).id, Occurrence(2, at).id]

    assert recorder.wait_for(n_fired=2)
    assert svc.running and svc.pending() == []
    svc.reload()  # a reload after the fact finds nothing new
    svc.shutdown(wait=True)  # lets the jobs finish: log, store last_checked
    assert sorted(recorder.fired_ids()) == [Occurrence(1, at).id, Occurrence(2, at).id]
    assert recorder.missed == []
    assert all(when >= at for _, when in recorder.fired)
    assert f"occurrence {Occurrence(1, at).id}: on_fire failed" in caplog.text
    stored = source.last_checked()
    assert stored is not None and stored >= at


def test_reload_replaces_the_jobs(services: list[SchedulerService]) -> None:
    at = soon()
    source = InMemoryScheduleSource([once(1, at)])
    recorder = Recorder(SystemClock())
    svc = build(services, source, recorder)
    svc.start()
    source.replace([once(2, at), once(3, at + timedelta(hours=1))])
    svc.reload()
    assert [o.schedule_id for o in svc.pending()] == [2, 3]

    assert recorder.wait_for(n_fired=1)
    # Schedule 1's job was due at the same instant; give it a moment to (wrongly) run.
    assert not recorder.wait_for(n_fired=2, timeout=0.5)
    assert recorder.fired_ids() == [Occurrence(2, at).id]


def test_a_shut_down_service_fires_nothing(services: list[SchedulerService]) -> None:
    at = soon(1)
    source = InMemoryScheduleSource([once(1, at)])
    recorder = Recorder(SystemClock())
    svc = build(services, source, recorder)
    svc.start()
    svc.shutdown()
    assert not svc.running
    svc.reload()  # harmless
    assert not recorder.wait_for(n_fired=1, timeout=(at - datetime.now(UTC)).total_seconds() + 1)
    with pytest.raises(SchedulerError, match="shut down"):
        svc.start()


def test_start_catches_up_and_plans_the_rest(services: list[SchedulerService]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    late, too_late, later = (
        now - timedelta(seconds=30),
        now - timedelta(minutes=5),
        now + timedelta(hours=1),
    )
    source = InMemoryScheduleSource(
        [once(1, late), once(2, too_late), once(3, later)], last_checked=now - timedelta(minutes=10)
    )
    recorder = Recorder(SystemClock())
    svc = build(services, source, recorder)
    svc.start()  # catch-up callbacks run before start() returns
    assert recorder.fired_ids() == [Occurrence(1, late).id]
    assert recorder.missed == [Occurrence(2, too_late)]
    assert svc.pending() == [Occurrence(3, later)]
    with pytest.raises(SchedulerError, match="already running"):
        svc.start()


def test_a_job_later_than_the_grace_is_reported_missed(services: list[SchedulerService]) -> None:
    # The injected clock decides lateness: it says ten minutes passed before the job ran.
    at = soon()
    clock = FakeClock(datetime.now(UTC))
    source = InMemoryScheduleSource([once(1, at)])
    recorder = Recorder(clock)
    svc = build(services, source, recorder)
    svc.start()
    clock.advance(timedelta(minutes=10))
    assert recorder.wait_for(n_missed=1)
    assert recorder.missed == [Occurrence(1, at)] and recorder.fired == []


def test_an_apscheduler_misfire_is_reported_missed_once(
    services: list[SchedulerService], caplog: pytest.LogCaptureFixture
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    local = (now + timedelta(hours=3)).astimezone(HCM)
    rule = parse_rule(
        {
            "kind": "recurring",
            "frequency": "daily",
            "times": [local.time().isoformat()],
            "start_date": local.date().isoformat(),
        }
    )
    clock = FakeClock(now)
    recorder = Recorder(clock)
    svc = build(services, InMemoryScheduleSource([ScheduleSpec(7, rule)]), recorder, clock)
    svc.start()
    (first,) = svc.pending()
    # What APScheduler's listener receives when a job's run time was missed.
    event = JobExecutionEvent(EVENT_JOB_MISSED, first.id, "default", first.scheduled_at)
    with caplog.at_level(logging.WARNING, logger="scheduler.service"):
        svc._on_job_missed(event)
        assert recorder.wait_for(n_missed=1)
    svc._on_job_missed(event)  # a repeat changes nothing
    assert not recorder.wait_for(n_missed=2, timeout=0.3)
    assert recorder.missed == [first] and recorder.fired == []
    assert svc.pending() == [Occurrence(7, first.scheduled_at + timedelta(days=1))]
    assert f"occurrence {first.id} missed" in caplog.text
