"""The scheduler service: one APScheduler job per schedule's next occurrence, catch-up after
downtime, and each occurrence fired or reported missed at most once per process.

Locking: `_lock` guards the plan. APScheduler is called only with `_lock` held and only after
checking `_stopped`, and `shutdown()` sets `_stopped` under `_lock` before it stops APScheduler;
the misfire listener never takes `_lock` (APScheduler may call it holding its own lock) but
hands the event to a one-thread pool. Callbacks always run without `_lock`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.clock import Clock, require_aware
from scheduler.errors import SchedulerError
from scheduler.occurrence import Occurrence, parse_occurrence_id
from scheduler.rules import iter_occurrences
from scheduler.source import ScheduleSource, ScheduleSpec

__all__ = ["ScheduleSource", "ScheduleSpec", "SchedulerService"]

log = logging.getLogger(__name__)

SWEEP_JOB_ID = "scheduler-sweep"
# Catch-up after a very long outage stops at this many occurrences per schedule.
MAX_CATCH_UP_PER_SCHEDULE = 10_000
_TICK = timedelta(microseconds=1)


class SchedulerService:
    """Fires schedule occurrences on time, and reports those it was too late for as missed.

    `horizon_s` is the longest the service goes without re-reading the source, catching up
    and re-planning by itself (a sweep job), so a lost wake-up or a clock jump delays nothing
    longer than that; it also refreshes `last_checked` while nothing is due.
    """

    def __init__(
        self,
        source: ScheduleSource,
        on_fire: Callable[[Occurrence], None],
        on_missed: Callable[[Occurrence], None],
        *,
        clock: Clock,
        tz: ZoneInfo,
        grace_s: float = 60.0,
        horizon_s: float = 3600.0,
    ) -> None:
        if not grace_s > 0:
            raise ValueError(f"grace_s must be positive, got {grace_s}")
        if not horizon_s > 0:
            raise ValueError(f"horizon_s must be positive, got {horizon_s}")
        self._source = source
        self._on_fire = on_fire
        self._on_missed = on_missed
        self._clock = clock
        self._tz = tz
        self._grace_s = float(grace_s)
        self._horizon_s = float(horizon_s)
        self._lock = threading.Lock()
        self._reload_lock = threading.RLock()
        self._persist_lock = threading.Lock()
        self._specs: dict[int, ScheduleSpec] = {}
        self._pending: dict[int, Occurrence] = {}  # schedule id -> its next planned occurrence
        self._handled: dict[str, datetime] = {}  # occurrence id -> time, fired or missed
        self._watermark: datetime | None = None
        self._persisted: datetime | None = None
        self._scheduler: Any = None
        self._missed_pool: ThreadPoolExecutor | None = None
        self._stopped = False

    # --- public --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        with self._lock:
            return self._scheduler is not None and not self._stopped

    def pending(self) -> list[Occurrence]:
        """The next planned occurrence of each schedule, earliest first."""
        with self._lock:
            return sorted(self._pending.values(), key=_order)

    def start(self) -> None:
        """Start APScheduler (UTC), catch up on what was due while down, plan the next jobs."""
        with self._lock:
            if self._stopped:
                raise SchedulerError("this scheduler service was shut down; build a new one")
            if self._scheduler is not None:
                raise SchedulerError("the scheduler service is already running")
            scheduler = BackgroundScheduler(
                timezone=UTC,
                job_defaults={
                    "coalesce": False,
                    "max_instances": 1,
                    "misfire_grace_time": self._job_grace_s,
                },
            )
            scheduler.add_listener(self._on_job_missed, EVENT_JOB_MISSED)
            self._missed_pool = ThreadPoolExecutor(1, thread_name_prefix="scheduler-missed")
            scheduler.start()
            scheduler.add_job(
                self._sweep,
                IntervalTrigger(seconds=self._horizon_s, timezone=UTC),
                id=SWEEP_JOB_ID,
                name="re-read schedules, catch up, re-plan",
                coalesce=True,
                misfire_grace_time=None,
                replace_existing=True,
            )
            self._scheduler = scheduler
        try:
            self.reload()
        except BaseException:
            self.shutdown(wait=False)
            raise
        log.info("scheduler running: %d schedules, grace %.0f s", len(self._specs), self._grace_s)

    def reload(self) -> None:
        """Re-read the source, catch up, and replace the jobs; safe from any thread.

        Does nothing before start() (which does it) or after shutdown().
        """
        with self._reload_lock:
            if not self.running:
                return
            now = self._clock.now()
            fire, missed = self.due(now)
            with self._lock:
                if self._stopped:
                    return
                self._replan(now)
            for occ in missed:
                self._deliver(occ, missed=True)
            for occ in fire:
                self._deliver(occ, missed=False)

    def shutdown(self, wait: bool = True) -> None:
        """Stop for good: nothing fires afterwards; waits for running callbacks if `wait`."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            scheduler, pool = self._scheduler, self._missed_pool
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=wait)
        log.info("scheduler stopped")

    def due(self, now: datetime) -> tuple[list[Occurrence], list[Occurrence]]:
        """(to fire, missed) since last_checked up to `now`; each occurrence is returned once.

        Late by at most grace_s: fire. Later: missed, never played late. Advances last_checked
        to `now`. With no last_checked (first run ever) nothing is due.
        """
        now = require_aware(now, "now").astimezone(UTC)
        specs = list(self._source.active_schedules())
        stored = self._source.last_checked()
        with self._lock:
            self._specs = {spec.id: spec for spec in specs}
            self._pending = {
                sid: occ
                for sid, occ in self._pending.items()
                if sid in self._specs and occ.scheduled_at > now
            }
            marks = [m.astimezone(UTC) for m in (stored, self._watermark) if m is not None]
            since = max(marks) if marks else now
            fire: list[Occurrence] = []
            missed: list[Occurrence] = []
            for occ in self._occurrences_between(since, now):
                if occ.id in self._handled:
                    continue
                self._handled[occ.id] = occ.scheduled_at
                late_s = (now - occ.scheduled_at).total_seconds()
                (fire if late_s <= self._grace_s else missed).append(occ)
            mark = self._advance_watermark(now)
        if mark is not None:
            self._persist(mark)
        return fire, missed

    # --- planning (with _lock held) ----------------------------------------------------------

    @property
    def _job_grace_s(self) -> int:
        # APScheduler wants whole seconds; the exact grace is applied in _take().
        return max(1, math.ceil(self._grace_s))

    def _occurrences_between(self, since: datetime, now: datetime) -> list[Occurrence]:
        found: list[Occurrence] = []
        for spec in self._specs.values():
            for n, at in enumerate(iter_occurrences(spec.rule, self._tz, since, spec.holidays)):
                if at > now:
                    break
                if n == MAX_CATCH_UP_PER_SCHEDULE:
                    log.warning("schedule %d: catch-up stopped after %d occurrences", spec.id, n)
                    break
                found.append(Occurrence(spec.id, at))
        return sorted(found, key=_order)

    def _next_for(self, spec: ScheduleSpec, after: datetime) -> Occurrence | None:
        for at in iter_occurrences(spec.rule, self._tz, after, spec.holidays):
            occ = Occurrence(spec.id, at)
            if occ.id not in self._handled:
                return occ
        return None

    def _replan(self, now: datetime) -> None:
        plan: dict[int, Occurrence] = {}
        for spec in self._specs.values():
            nxt = self._next_for(spec, now)
            if nxt is not None:
                plan[spec.id] = nxt
        self._pending = plan
        if self._scheduler is None:
            return
        keep = {occ.id for occ in plan.values()}
        for job in self._scheduler.get_jobs():
            if job.id != SWEEP_JOB_ID and job.id not in keep:
                self._remove_job(job.id)
        for occ in plan.values():
            self._add_job(occ)

    def _plan_after(self, occ: Occurrence) -> None:
        spec = self._specs.get(occ.schedule_id)
        nxt = self._next_for(spec, occ.scheduled_at) if spec is not None else None
        if nxt is None:
            self._pending.pop(occ.schedule_id, None)
            return
        self._pending[occ.schedule_id] = nxt
        if self._scheduler is not None:
            self._add_job(nxt)

    def _add_job(self, occ: Occurrence) -> None:
        self._scheduler.add_job(
            self._run_job,
            DateTrigger(run_date=occ.scheduled_at, timezone=UTC),
            args=(occ,),
            id=occ.id,
            name=f"schedule {occ.schedule_id}",
            misfire_grace_time=self._job_grace_s,
            coalesce=False,
            max_instances=1,
            replace_existing=True,
        )

    def _remove_job(self, job_id: str) -> None:
        with contextlib.suppress(JobLookupError):  # it ran (or missed) meanwhile
            self._scheduler.remove_job(job_id)

    def _advance_watermark(self, now: datetime) -> datetime | None:
        """Everything up to the returned instant is accounted for (None: no progress)."""
        mark = now
        waiting = [o.scheduled_at for o in self._pending.values() if o.id not in self._handled]
        if waiting:
            mark = min(mark, min(waiting) - _TICK)
        if self._watermark is not None and mark <= self._watermark:
            return None
        self._watermark = mark
        # Older ids can never come back: due() starts after the watermark, and a job runs
        # only while it is its schedule's pending occurrence.
        cutoff = mark - timedelta(seconds=self._grace_s + self._horizon_s)
        for key in [k for k, at in self._handled.items() if at < cutoff]:
            del self._handled[key]
        return mark

    def _take(self, occ: Occurrence) -> tuple[bool, bool, datetime | None]:
        """Claim a job's occurrence: (claimed, too late, new watermark)."""
        now = self._clock.now()
        with self._lock:
            current = self._pending.get(occ.schedule_id)
            if self._stopped or current != occ or occ.id in self._handled:
                return False, False, None  # stale job, or due() already handled it
            self._handled[occ.id] = occ.scheduled_at
            too_late = (now - occ.scheduled_at).total_seconds() > self._grace_s
            self._plan_after(occ)
            return True, too_late, self._advance_watermark(now)

    # --- APScheduler threads -----------------------------------------------------------------

    def _run_job(self, occ: Occurrence) -> None:
        claimed, too_late, mark = self._take(occ)
        if claimed:
            self._deliver(occ, missed=too_late)
        if mark is not None:
            self._persist(mark)

    def _on_job_missed(self, event: Any) -> None:
        # May run inside APScheduler's job store lock: hand over, never block here.
        pool = self._missed_pool
        if pool is None or self._stopped:
            return
        with contextlib.suppress(RuntimeError):  # the pool is shutting down
            pool.submit(self._handle_missed_job, str(event.job_id))

    def _handle_missed_job(self, job_id: str) -> None:
        try:
            schedule_id, at = parse_occurrence_id(job_id)
        except ValueError:
            log.warning("APScheduler missed job %r, which is not an occurrence", job_id)
            return
        occ = Occurrence(schedule_id, at)
        claimed, _, mark = self._take(occ)
        if claimed:
            self._deliver(occ, missed=True)
        if mark is not None:
            self._persist(mark)

    def _sweep(self) -> None:
        try:
            self.reload()
        except Exception:  # the source may be briefly unavailable; the next sweep retries
            log.exception("periodic schedule reload failed; retrying in %.0f s", self._horizon_s)

    # --- callbacks and persistence (without _lock) -------------------------------------------

    def _deliver(self, occ: Occurrence, *, missed: bool) -> None:
        if self._stopped:
            log.info("occurrence %s not delivered: the scheduler is shut down", occ.id)
            return
        if missed:
            log.warning("occurrence %s missed: later than the %.0f s grace", occ.id, self._grace_s)
        callback = self._on_missed if missed else self._on_fire
        try:
            callback(occ)
        except Exception:  # a callback's failure must not stop the scheduler
            log.exception("occurrence %s: %s failed", occ.id, "on_missed" if missed else "on_fire")

    def _persist(self, mark: datetime) -> None:
        with self._persist_lock:
            if self._persisted is not None and mark <= self._persisted:
                return
            try:
                self._source.set_last_checked(mark)
            except Exception:  # keep scheduling; the next advance writes it again
                log.exception("could not store last_checked %s", mark.isoformat())
                return
            self._persisted = mark


def _order(occ: Occurrence) -> tuple[datetime, int]:
    return occ.scheduled_at, occ.schedule_id
