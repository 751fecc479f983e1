"""The console worker: the ONE process that runs the scheduler, the ingest and the config push.

It wires `scheduler` (time) to the database (schedules, broadcasts) and MQTT (commands and
retained device configs out, facts in). Web workers never run it.

Should two be started (by mistake, or one kept as a standby), only the holder of the leader
lease (console/lease.py) connects to the broker and runs the scheduler and the loops that
publish; the other waits and takes over when the leader stops or dies. Loops that must run
on the leader only are registered with `add_leader_loop`; `is_leader()` guards a publish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from console.broadcasts import BroadcastRequest, record_missed, send_broadcast
from console.communes import ZoneTree, holidays_by_commune
from console.db import Database
from console.device_config import ConfigPusher
from console.fire_rules import FireRules
from console.ingest import SUBSCRIPTIONS, Ingest
from console.lease import LEASE_S, MARGIN_S, RENEW_S, LeaderElector, Lease
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
_TICK = timedelta(microseconds=1)

# A loop that runs while this worker leads: called with (stop, poll_s) on its own thread,
# it returns once `stop` is set (when the worker stops leading or stops).
LeaderLoop = Callable[[threading.Event, float], None]


class DbScheduleSource:
    """The scheduler's view of the database: enabled schedules and its last check time."""

    def __init__(self, db: Database, may_write: Callable[[], bool] = lambda: True) -> None:
        self.db = db
        # Only the leader moves last_checked: a worker that lost the lead mid-fire must not
        # mark as handled what it never sent.
        self._may_write = may_write

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
        if not self._may_write():
            log.info("not the leader: last_checked stays where the leader left it")
            return
        with self.db.write_session() as session:
            row = session.get(WorkerState, LAST_CHECKED_KEY)
            if row is None:
                session.add(WorkerState(key=LAST_CHECKED_KEY, value=when.isoformat()))
            elif datetime.fromisoformat(row.value) < when:
                row.value = when.isoformat()

    def rewind(self, before: datetime) -> None:
        """Move last_checked back to just before `before`, so that whoever leads next looks
        at that occurrence again (fires it within the grace, else records it missed)."""
        mark = before - _TICK
        with self.db.write_session() as session:
            row = session.get(WorkerState, LAST_CHECKED_KEY)
            if row is not None and datetime.fromisoformat(row.value) > mark:
                row.value = mark.isoformat()

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
    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        margin_s: float = MARGIN_S,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.elector = LeaderElector(
            Lease(db),
            clock,
            lease_s=lease_s,
            renew_s=renew_s,
            margin_s=margin_s,
            on_elected=self._lead,
            on_deposed=self._follow,
        )
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
            ack_when_done=True,  # the broker keeps each QoS 1 fact until the ingest stored it
        )
        self.source = DbScheduleSource(db, may_write=self.is_leader)
        self.tz = ZoneInfo(settings.site_timezone)
        self.scheduler = self._new_scheduler()
        self.configs = ConfigPusher(db, self.link, settings.public_base_url, clock.now)
        self.fire_rules = FireRules(db, self.link, settings, clock.now)
        self._stop = threading.Event()  # the worker stops
        self._term_stop = threading.Event()  # the current term as leader ends
        self._terms = 0
        # The schedules revision the current term started from.
        self._term_revision: tuple[int, datetime | None, int, datetime | None] | None = None
        self._poll_s = 1.0
        self._elector_thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._leader_loops: list[tuple[str, LeaderLoop]] = []
        self.add_leader_loop("schedule-watch", self._watch_schedules)
        self.add_leader_loop("config-push", self.configs.run)
        self.add_leader_loop("fire-rule", self.fire_rules.run)

    def _new_scheduler(self) -> SchedulerService:
        return SchedulerService(
            self.source,
            on_fire=self.fire,
            on_missed=self.missed,
            clock=self.clock,
            tz=self.tz,
            grace_s=self.settings.misfire_grace_s,
        )

    def add_leader_loop(self, name: str, loop: LeaderLoop) -> None:
        """Run `loop(stop, poll_s)` on a thread of its own whenever this worker leads."""
        self._leader_loops.append((name, loop))

    def is_leader(self) -> bool:
        """This worker holds the leader lease: it alone may publish."""
        return self.elector.is_leader()

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
        out; then the occurrence is recorded missed, so it is never lost silently. A worker
        that is no longer the leader sends nothing: it hands the occurrence back to the next.
        """
        deadline = occurrence.scheduled_at + timedelta(seconds=self.settings.misfire_grace_s)
        with self._fire_lock:
            while True:
                if not self.is_leader() or self._term_stop.is_set():
                    self._hand_back(occurrence)
                    return
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
                    self._term_stop.wait(FIRE_RETRY_S)  # then: still leading? (loop top)
        self.missed(occurrence)

    def _hand_back(self, occurrence: Occurrence) -> None:
        """Leave an occurrence to whoever leads next: its catch-up fires it or records it
        missed (the claim keeps a second send out, should it have gone through after all)."""
        log.warning("occurrence %s not sent here: this worker no longer leads", occurrence.id)
        try:
            self.source.rewind(occurrence.scheduled_at)
        except SQLAlchemyError as exc:
            log.error("occurrence %s: could not hand it back: %s", occurrence.id, exc)

    def missed(self, occurrence: Occurrence) -> None:
        """Record an occurrence that was too late to play: never played late."""
        req = self.broadcast_request(occurrence, self.clock.now(), for_play=False)
        if req is not None and record_missed(self.db, req):
            log.warning("occurrence %s missed (console was down past the grace)", occurrence.id)

    def _watch_schedules(self, stop: threading.Event, poll_s: float) -> None:
        # The revision the scheduler loaded from (read before it started): a schedule saved
        # while the term was starting is reloaded, not missed.
        seen = self._term_revision
        while not stop.wait(poll_s):
            try:
                current = self.source.revision()
                if current != seen:
                    seen = current
                    self.scheduler.reload()
            except Exception:  # keep watching through a database hiccup
                log.exception("could not check schedules for changes")

    def start(self, poll_s: float = 1.0) -> None:
        """Start the ingest writer and the lease: lead at once if no other worker does."""
        self._poll_s = poll_s
        self.ingest.start()
        self.elector.tick()
        self._elector_thread = threading.Thread(
            target=self.elector.run, args=(self._stop,), name="lease", daemon=True
        )
        self._elector_thread.start()
        log.info("console worker running (%s)", "leader" if self.is_leader() else "standby")

    def _lead(self) -> None:
        """Elected: connect (and so subscribe the ingest), start the scheduler and the loops."""
        if self._terms:  # a scheduler service runs once; a new term gets a new one
            self.scheduler = self._new_scheduler()
        self._terms += 1
        self._term_stop = threading.Event()
        self.ingest.forget()  # the previous leader may have stored telemetry since
        try:
            self.link.start()
            self._term_revision = self.source.revision()
            self.scheduler.start()
        except BaseException:
            self._follow()
            raise
        self._threads = [
            threading.Thread(
                target=loop, args=(self._term_stop, self._poll_s), name=name, daemon=True
            )
            for name, loop in self._leader_loops
        ]
        for thread in self._threads:
            thread.start()

    def _follow(self) -> None:
        """Deposed (or stopping): stop all that publishes; the ingest stores what it has."""
        self._term_stop.set()
        for thread in self._threads:
            thread.join(5)
        self._threads = []
        self.scheduler.shutdown()
        self.link.stop()

    def stop(self) -> None:
        """Stop; a leader releases the lease, so a standby takes over without waiting."""
        self._stop.set()
        if self._elector_thread is not None:
            self._elector_thread.join(self.elector.lease_s)
        self.elector.resign()
        self.ingest.stop()
        log.info("console worker stopped")


def build_worker(
    settings: Settings,
    *,
    db: Database | None = None,
    clock: Clock | None = None,
    lease_s: float = LEASE_S,
    renew_s: float = RENEW_S,
    margin_s: float = MARGIN_S,
) -> Worker:
    """Composition root of the console worker."""
    return Worker(
        settings,
        db or Database(settings.database_url),
        clock or SystemClock(),
        lease_s=lease_s,
        renew_s=renew_s,
        margin_s=margin_s,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
