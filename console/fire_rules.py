"""The automatic fire announcement: a call point's alarm played on the speakers of its zone.

Runs in the console worker. It reads the alarm events the ingest stored (DeviceEvent rows,
signal class "alarm", raised) after a cursor kept in WorkerState, so a restart neither
repeats nor loses one. For each, when the device's commune has a `fire_announce_preset`,
it sends an emergency broadcast of that preset to the device's own zone (its hamlet or
cluster), with a broadcast id derived from the event: sending it twice is impossible
(console/broadcasts.py refuses a second id). An alarm first seen more than MAX_AGE after it
happened is not announced late; the audit log says why.

The ingest is the one writer of device_events, so their ids grow in commit order and the
cursor (the last id handled) never skips an event.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from console import audit
from console.broadcasts import BroadcastError, BroadcastRequest, send_broadcast
from console.communes import ZoneTree
from console.db import Database
from console.models import AuditEntry, CommuneSettings, Device, DeviceEvent, Preset, WorkerState
from console.mqtt_link import ConsoleLink, LinkError
from console.settings import Settings
from console.zones import ZoneError
from device_profiles import protocol

log = logging.getLogger(__name__)

CURSOR_KEY = "fire_rules.last_event_id"
MAX_AGE = timedelta(minutes=5)  # older when first seen: the announcement would mislead
REPEAT = 3  # an announcement nobody starts by hand: said three times, then silence
BATCH = 200
ANNOUNCED = "fire_announcement"
SKIPPED = "fire_announcement_skipped"


def broadcast_id_for(device_id: str, message_id: str) -> str:
    """The same alarm always gives the same broadcast id (a device's message ids are its own)."""
    digest = hashlib.sha256(f"{device_id}/{message_id}".encode()).hexdigest()[:24]
    return f"fire-{digest}"


@dataclass(frozen=True)
class Alarm:
    event_id: int
    message_id: str
    device_id: str
    zone_id: str
    signal: str
    occurred_at: datetime


class FireRules:
    """One pass (`check`) handles every new alarm event; `run` repeats it until stopped."""

    def __init__(
        self, db: Database, link: ConsoleLink, settings: Settings, now: Callable[[], datetime]
    ) -> None:
        self.db, self.link, self.settings, self.now = db, link, settings, now

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Check every `poll_s` until `stop` is set (the worker runs it while it leads)."""
        while not stop.wait(poll_s):
            try:
                self.check()
            except Exception:  # keep watching through a database or broker hiccup
                log.exception("fire announcements: check failed; retrying")

    # --- one pass ------------------------------------------------------------------------

    def check(self) -> list[str]:
        """Announce the alarms stored since the cursor; the broadcast ids sent."""
        sent: list[str] = []
        for alarm in self._new_alarms():
            try:
                broadcast_id = self._handle(alarm)
            except (LinkError, OperationalError) as exc:
                # Not done: the cursor stays before it, the next pass tries again (until
                # the alarm is too old, which is then recorded).
                log.warning("fire announcement for event %d not sent yet: %s", alarm.event_id, exc)
                break
            if broadcast_id is not None:
                sent.append(broadcast_id)
            self._set_cursor(alarm.event_id)
        return sent

    def _cursor(self) -> int:
        """The last event id handled; on the very first run, every event older than MAX_AGE
        counts as handled (history is not announced, nor recorded one by one)."""
        with self.db.session() as session:
            row = session.get(WorkerState, CURSOR_KEY)
            if row is not None:
                return int(row.value)
            start = session.scalar(
                select(func.max(DeviceEvent.id)).where(
                    DeviceEvent.received_at < self.now() - MAX_AGE
                )
            )
            session.add(WorkerState(key=CURSOR_KEY, value=str(start or 0)))
            return start or 0

    def _set_cursor(self, event_id: int) -> None:
        with self.db.session() as session:
            row = session.get(WorkerState, CURSOR_KEY)
            if row is None:
                session.add(WorkerState(key=CURSOR_KEY, value=str(event_id)))
            elif int(row.value) < event_id:
                row.value = str(event_id)

    def _new_alarms(self) -> list[Alarm]:
        cursor = self._cursor()
        with self.db.session() as session:
            rows = session.execute(
                select(DeviceEvent, Device.zone_id)
                .join(Device, DeviceEvent.device_id == Device.id)
                .where(DeviceEvent.id > cursor)
                .order_by(DeviceEvent.id)
                .limit(BATCH)
            ).all()
        alarms = []
        last = cursor
        for event, zone_id in rows:
            last = event.id
            if event.signal_class == "alarm" and event.active:
                alarms.append(
                    Alarm(
                        event.id,
                        event.message_id,
                        event.device_id,
                        zone_id,
                        event.signal,
                        event.occurred_at,
                    )
                )
        if not alarms and last > cursor:
            self._set_cursor(last)  # restores, supervisory and trouble signals: nothing to do
        return alarms

    def _handle(self, alarm: Alarm) -> str | None:
        """Send the announcement for one alarm; its broadcast id, or None when none is due."""
        broadcast_id = broadcast_id_for(alarm.device_id, alarm.message_id)
        with self.db.session() as session:
            try:
                commune = ZoneTree.load(session).commune_of(alarm.zone_id)
            except ZoneError:
                log.error("fire announcement: device %s has no commune", alarm.device_id)
                return None
            rule = session.get(CommuneSettings, commune)
            preset_key = rule.fire_announce_preset if rule else None
            if preset_key is None:
                return None  # no rule: the alarm shows in the console only
            preset = session.get(Preset, preset_key)
            already = session.scalar(
                select(AuditEntry.id).where(
                    AuditEntry.action.in_([ANNOUNCED, SKIPPED]), AuditEntry.target == broadcast_id
                )
            )
            if already is not None:
                return None  # handled before a crash that kept the cursor back
        age = self.now() - alarm.occurred_at
        if age > MAX_AGE:
            self._skip(alarm, broadcast_id, preset_key, f"alarm first seen {age} late")
            return None
        if preset is None:
            self._skip(alarm, broadcast_id, preset_key, "the preset is missing")
            return None
        req = BroadcastRequest(
            broadcast_id=broadcast_id,
            audio_sha256=preset.audio_sha256,
            zone_ids=[alarm.zone_id],
            priority=protocol.Priority.EMERGENCY,
            fire_at=self.now(),
            play_lead=timedelta(seconds=self.settings.play_lead_s),
            ttl=timedelta(seconds=self.settings.command_ttl_s),
            volume_pct=100,
            repeat=REPEAT,
            title=preset.title,
        )
        try:
            broadcast = send_broadcast(self.db, self.link, req, self.settings.public_base_url)
        except BroadcastError as exc:
            self._skip(alarm, broadcast_id, preset_key, str(exc))
            return None
        self._record(ANNOUNCED, alarm, broadcast_id, preset_key, sent=broadcast is not None)
        log.warning(
            "FIRE: %s raised %s; announced %r on zone %s (%s)",
            alarm.device_id, alarm.signal, preset_key, alarm.zone_id, broadcast_id,
        )  # fmt: skip
        return broadcast_id

    def _skip(self, alarm: Alarm, broadcast_id: str, preset_key: str, why: str) -> None:
        """Recorded, so the duty officer can see why the speakers stayed silent."""
        log.warning(
            "fire announcement for %s (%s, event %d) not sent: %s",
            alarm.device_id, alarm.signal, alarm.event_id, why,
        )  # fmt: skip
        self._record(SKIPPED, alarm, broadcast_id, preset_key, reason=why)

    def _record(
        self, action: str, alarm: Alarm, broadcast_id: str, preset_key: str, **detail: Any
    ) -> None:
        """Audited as done by the system itself (no user)."""
        try:
            with self.db.session() as session:
                audit.record(
                    session, action, broadcast_id, event_id=alarm.event_id,
                    device_id=alarm.device_id, zone_id=alarm.zone_id, signal=alarm.signal,
                    preset_key=preset_key, **detail,
                )  # fmt: skip
        except SQLAlchemyError:
            log.exception("could not audit %s for event %d", action, alarm.event_id)
