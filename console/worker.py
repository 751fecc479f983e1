"""The console worker: the ONE process that runs the scheduler, the ingest and the config push.

It wires `scheduler` (time) to the database (schedules, broadcasts) and MQTT (commands and
retained device configs out, facts in). Web workers never run it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from console.broadcasts import BroadcastRequest, record_missed, send_broadcast
from console.communes import ZoneTree, holidays_by_commune
from console.db import Database
from console.device_config import ConfigPusher
from console.ingest import SUBSCRIPTIONS, Ingest
from console.models import Holiday, Schedule, WorkerState
from console.mqtt_link import ConsoleLink, LinkError
from console.programme import queue_wait, schedule_holidays
from console.settings import Settings
from device_profiles import protocol
from scheduler import Clock, Occurrence, RuleError, SchedulerService, ScheduleSpec, SystemClock
from scheduler.rules import parse_rule

log = logging.getLogger(__name__)

LAST_CHECKED_KEY = "scheduler.last_checked"
FIRE_RETRY_S = 0.5
WORKER_CLIENT_ID = "console-worker"


class DbScheduleSource:
    """The scheduler's view of the database: enabled schedules and its last check time."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def active_schedules(self) -> Iterable[ScheduleSpec]:
        """Enabled schedules, each with its commune's holidays (which silence recurring rules)."""
        specs = []
        with self.db.session() as session:
            tree = ZoneTree.load(session)
            holidays = holidays_by_commune(session)
            for row in session.scalars(select(Schedule).where(Schedule.enabled.is_(True))):
                try:
                    rule = parse_rule(row.rule)
                except RuleError as exc:
                    log.error("schedule %d has an invalid rule, skipped: %s", row.id, exc)
                    continue
                days = schedule_holidays(row.zone_ids, tree, holidays)
                specs.append(ScheduleSpec(id=row.id, rule=rule, holidays=days))
        return specs

    def last_checked(self) -> datetime | None:
        with self.db.session() as session:
            row = session.get(WorkerState, LAST_CHECKED_KEY)
            return datetime.fromisoformat(row.value) if row else None

    def set_last_checked(self, when: datetime) -> None:
        with self.db.session() as session:
            row = session.get(WorkerState, LAST_CHECKED_KEY)
            if row is None:
                session.add(WorkerState(key=LAST_CHECKED_KEY, value=when.isoformat()))
            elif datetime.fromisoformat(row.value) < when:
                row.value = when.isoformat()

    def revision(self) -> tuple[int, datetime | None, int, datetime | None]:
        """Changes whenever a schedule or a holiday is added, edited or removed."""
        with self.db.session() as session:
            count, newest = session.execute(
                select(func.count(Schedule.id), func.max(Schedule.updated_at))
            ).one()
            holidays, newest_holiday = session.execute(
                select(func.count(Holiday.id), func.max(Holiday.created_at))
            ).one()
            return int(count), newest, int(holidays), newest_holiday


class Worker:
    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.ingest = Ingest(db, clock=clock.now)
        self._fire_lock = threading.Lock()
        broker = settings.broker
        self.link = ConsoleLink(
            broker.host,
            broker.port,
            broker.console_username,
            broker.console_password.get_secret_value(),
            client_name=WORKER_CLIENT_ID,
            subscriptions=SUBSCRIPTIONS,
            on_message=self.ingest.enqueue,
            clean_start=False,
        )
        self.source = DbScheduleSource(db)
        self.tz = ZoneInfo(settings.site_timezone)
        self.scheduler = SchedulerService(
            self.source,
            on_fire=self.fire,
            on_missed=self.missed,
            clock=clock,
            tz=self.tz,
            grace_s=settings.misfire_grace_s,
        )
        self.configs = ConfigPusher(db, self.link, settings.public_base_url, clock.now)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def broadcast_request(
        self, occurrence: Occurrence, fire_at: datetime, *, for_play: bool = True
    ) -> BroadcastRequest | None:
        """The broadcast an occurrence becomes (None if its schedule is gone).

        A device drops a command not started `command_ttl_s` after play_at. When the
        occurrence clashes with items staff chose to queue one after the other, it may wait
        behind them on the device: its lifetime is extended by their length.
        """
        with self.db.session() as session:
            schedule = session.get(Schedule, occurrence.schedule_id)
            if schedule is None:
                log.warning("occurrence %s: schedule was deleted", occurrence.id)
                return None
            ttl = timedelta(seconds=self.settings.command_ttl_s)
            if for_play:
                ttl += queue_wait(session, schedule, occurrence.scheduled_at, self.tz)
            return BroadcastRequest(
                broadcast_id=occurrence.id,
                audio_sha256=schedule.audio_sha256,
                zone_ids=list(schedule.zone_ids),
                priority=protocol.Priority(schedule.priority),
                fire_at=fire_at,
                play_lead=timedelta(seconds=self.settings.play_lead_s),
                ttl=ttl,
                volume_pct=schedule.volume_pct,
                gong=schedule.gong,
                title=schedule.name,
                schedule_id=schedule.id,
                scheduled_for=occurrence.scheduled_at,
                created_by=schedule.created_by,
            )

    def fire(self, occurrence: Occurrence) -> None:
        """Send one occurrence; idempotent by its id across restarts and processes.

        Fires run one at a time (SQLite has one writer; concurrent fires starved each other
        past the busy timeout). A database or broker failure is retried until the grace runs
        out; then the occurrence is recorded missed, so it is never lost silently.
        """
        deadline = occurrence.scheduled_at + timedelta(seconds=self.settings.misfire_grace_s)
        with self._fire_lock:
            while True:
                now = self.clock.now()
                req = self.broadcast_request(occurrence, max(now, occurrence.scheduled_at))
                if req is None:
                    return
                try:
                    send_broadcast(self.db, self.link, req, self.settings.public_base_url)
                    return
                except (OperationalError, LinkError) as exc:
                    if now + timedelta(seconds=FIRE_RETRY_S) >= deadline:
                        log.error("occurrence %s could not be sent in time: %s", occurrence.id, exc)
                        break
                    log.warning("occurrence %s: %s; retrying", occurrence.id, exc)
                    if self._stop.wait(FIRE_RETRY_S):
                        break
        self.missed(occurrence)

    def missed(self, occurrence: Occurrence) -> None:
        """Record an occurrence that was too late to play: never played late."""
        req = self.broadcast_request(occurrence, self.clock.now(), for_play=False)
        if req is not None and record_missed(self.db, req):
            log.warning("occurrence %s missed (console was down past the grace)", occurrence.id)

    def _watch_schedules(self, poll_s: float) -> None:
        seen = self.source.revision()
        while not self._stop.wait(poll_s):
            try:
                current = self.source.revision()
                if current != seen:
                    seen = current
                    self.scheduler.reload()
            except Exception:  # keep watching through a database hiccup
                log.exception("could not check schedules for changes")

    def start(self, poll_s: float = 1.0) -> None:
        self.ingest.start()
        self.link.start()
        self.scheduler.start()
        self._threads = [
            threading.Thread(
                target=self._watch_schedules, args=(poll_s,), name="schedule-watch", daemon=True
            ),
            threading.Thread(
                target=self.configs.run, args=(self._stop, poll_s), name="config-push", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info("console worker running")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self.scheduler.shutdown()
        self.link.stop()
        self.ingest.stop()
        log.info("console worker stopped")


def build_worker(
    settings: Settings, *, db: Database | None = None, clock: Clock | None = None
) -> Worker:
    """Composition root of the console worker."""
    return Worker(settings, db or Database(settings.database_url), clock or SystemClock())


def utc_now() -> datetime:
    return datetime.now(UTC)
