"""Each device's retained config (zones, volume, presets): computed from the database,
versioned per device, published by the console worker only.

Whatever changes what a config holds (a preset replaced, a device registered or removed)
bumps the config revision in its own transaction; the worker polls that revision and brings
every device's retained config up to date. The web never publishes configs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel
from sqlalchemy import Integer, Table, Text, bindparam, cast, select, update
from sqlalchemy.orm import Session

from console.broadcasts import has_speaker, media_url
from console.db import Database
from console.models import AudioFile, Device, DeviceConfigRecord, Preset, WorkerState, in_service
from console.mqtt_link import LinkError
from console.zones import ZoneError, ancestors_of, zone_parents
from device_profiles import protocol

log = logging.getLogger(__name__)

CONFIG_REVISION_KEY = "config.revision"  # the row is created by migration 0002
DEFAULT_VOLUME_PCT = 80  # no per-device volume is stored yet
CLEARED = ""  # the digest of a record whose device was removed
CONFIG_QOS = protocol.QOS[protocol.Channel.CONFIG]
_CONFIGS = typing.cast(Table, DeviceConfigRecord.__table__)
CONFIRM_BATCH = 500  # rows per UPDATE when recording what the broker confirmed
LOGGED_NAMES = 20  # device names in the "published" log line; the rest are counted


class RetainedPublisher(Protocol):
    """What the push needs of the broker link (ConsoleLink; a fake in tests)."""

    connected: threading.Event

    def publish(
        self,
        topic: str,
        message: BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 5.0,
    ) -> None: ...

    def clear_retained(self, topic: str, *, qos: int = 1, timeout_s: float = 5.0) -> None: ...


def bump_config_revision(session: Session) -> None:
    """Tell the worker that some device's config may have changed; commits with the caller."""
    stmt = select(WorkerState.key).where(WorkerState.key == CONFIG_REVISION_KEY)
    if session.scalar(stmt) is None:
        session.add(WorkerState(key=CONFIG_REVISION_KEY, value="1"))
        return
    # The database adds one itself, so two web workers bumping at once never lose a bump.
    session.execute(
        update(WorkerState)
        .where(WorkerState.key == CONFIG_REVISION_KEY)
        .values(value=cast(cast(WorkerState.value, Integer) + 1, Text))
        .execution_options(synchronize_session=False)
    )


def config_revision(session: Session) -> int:
    value = session.scalar(select(WorkerState.value).where(WorkerState.key == CONFIG_REVISION_KEY))
    return int(value) if value is not None else 0


def preset_refs(session: Session, base_url: str) -> list[protocol.PresetRef]:
    """Every preset as a device fetches it (URL built like a broadcast's), in key order."""
    rows = session.execute(select(Preset.key, AudioFile).join(AudioFile).order_by(Preset.key)).all()
    return [
        protocol.PresetRef(
            name=key,
            url=media_url(base_url, audio.sha256),
            sha256=audio.sha256,
            duration_ms=audio.duration_ms,
            bytes=audio.size_bytes,
        )
        for key, audio in rows
    ]


@dataclass(frozen=True)
class ConfigContent:
    """What a device is told; its digest changes exactly when the device must be told again."""

    zones: tuple[str, ...]
    volume_pct: int
    presets: tuple[protocol.PresetRef, ...]

    def message(self, version: int, message_id: str, ts_ms: int) -> protocol.DeviceConfig:
        return protocol.DeviceConfig(
            id=message_id,
            ts=ts_ms,
            version=version,
            zones=list(self.zones),
            volume_pct=self.volume_pct,
            presets=list(self.presets),
        )

    @property
    def digest(self) -> str:
        return hashlib.sha256(protocol.encode(self.message(0, "digest", 0))).hexdigest()


def device_content(
    device: Device, parents: dict[str, str | None], presets: Sequence[protocol.PresetRef]
) -> ConfigContent:
    """The device's zone and its ancestors (as provisioning gives them); presets if it plays."""
    return ConfigContent(
        zones=tuple(ancestors_of(device.zone_id, parents)),
        volume_pct=DEFAULT_VOLUME_PCT,
        presets=tuple(presets) if has_speaker(device.profile) else (),
    )


@dataclass(frozen=True)
class Outgoing:
    device_id: str
    version: int
    config: protocol.DeviceConfig | None  # None: clear the retained config


def _advance(record: DeviceConfigRecord, digest: str, now: datetime) -> None:
    if record.digest != digest:
        record.version += 1
        record.digest = digest
        record.updated_at = now


class ConfigPusher:
    """Keeps every device's retained config in step with the database (console worker only)."""

    def __init__(
        self, db: Database, link: RetainedPublisher, base_url: str, clock: Callable[[], datetime]
    ) -> None:
        self.db = db
        self.link = link
        self.base_url = base_url
        self._clock = clock

    def plan(self, republish: bool = False) -> list[Outgoing]:
        """Advance the version of every config whose content changed (committed) and list
        what must be published: changed or never confirmed ones, or all when republishing.

        The contents are computed from a read; the write lock is taken only to store the
        versions that moved, so the ingest beside it is not held up by a whole fleet."""
        now = self._clock()
        ts_ms = int(now.timestamp() * 1000)
        with self.db.session() as session:
            parents = zone_parents(session)
            presets = preset_refs(session, self.base_url)
            known = {r.device_id: r.digest for r in session.scalars(select(DeviceConfigRecord))}
            contents: dict[str, ConfigContent] = {}
            # A decommissioned device has none: its retained config is cleared.
            for device in session.scalars(select(Device).where(in_service()).order_by(Device.id)):
                try:
                    contents[device.id] = device_content(device, parents, presets)
                except ZoneError as exc:
                    log.error("no config for %s: %s", device.id, exc)
        digests = {device_id: content.digest for device_id, content in contents.items()}
        digests.update({d: CLEARED for d in known if d not in contents and known[d] != CLEARED})
        moved = sorted(d for d, digest in digests.items() if known.get(d) != digest)
        due: list[tuple[str, int, ConfigContent | None]] = []
        with self.db.write_session() as session:
            records = {r.device_id: r for r in session.scalars(select(DeviceConfigRecord))}
            for device_id in moved:
                record = records.get(device_id)
                if record is None:
                    record = DeviceConfigRecord(device_id=device_id, version=0, digest=CLEARED)
                    session.add(record)
                    records[device_id] = record
                _advance(record, digests[device_id], now)
            for device_id, record in sorted(records.items()):
                content = contents.get(device_id)
                if content is None:
                    if record.digest == CLEARED and record.published_version != record.version:
                        due.append((device_id, record.version, None))
                elif republish or record.published_version != record.version:
                    due.append((device_id, record.version, content))
        return [
            Outgoing(d, v, c.message(v, protocol.new_message_id(), ts_ms) if c else None)
            for d, v, c in due
        ]

    def publish(self, outgoing: Sequence[Outgoing]) -> bool:
        """Publish each retained (QoS 1) and record what the broker confirmed; False: retry."""
        done: list[Outgoing] = []
        failed = False
        for item in outgoing:
            topic = protocol.device_topic(item.device_id, protocol.Channel.CONFIG)
            try:
                if item.config is None:
                    self.link.clear_retained(topic, qos=CONFIG_QOS)
                else:
                    self.link.publish(topic, item.config, qos=CONFIG_QOS, retain=True)
            except LinkError as exc:
                log.warning("config of %s not published, will retry: %s", item.device_id, exc)
                failed = True
                break
            done.append(item)
        if done:
            self._confirm(done)
            names = [f"{i.device_id} v{i.version}" + ("" if i.config else " cleared") for i in done]
            shown = ", ".join(names[:LOGGED_NAMES])
            more = f" and {len(names) - LOGGED_NAMES} more" if len(names) > LOGGED_NAMES else ""
            log.info("published %d device configs: %s%s", len(done), shown, more)
        return not failed

    def _confirm(self, done: Sequence[Outgoing]) -> None:
        """Record what the broker confirmed, in one statement per batch: a short write
        transaction even for a whole province's devices (the ingest writes beside it)."""
        table = _CONFIGS
        statement = (
            update(table)
            .where(table.c.device_id == bindparam("b_device"))
            .where(table.c.version == bindparam("b_version"))
            .values(published_version=bindparam("b_version"))
        )
        rows = [{"b_device": i.device_id, "b_version": i.version} for i in done]
        with self.db.session() as session:
            for start in range(0, len(rows), CONFIRM_BATCH):
                session.connection().execute(statement, rows[start : start + CONFIRM_BATCH])

    def sync(self, republish: bool = False) -> bool:
        """Bring every retained config up to date; False when some must be retried."""
        return self.publish(self.plan(republish))

    def run(self, stop: threading.Event, poll_s: float) -> None:
        """Republish every config at start and after each reconnect; then sync whenever the
        revision moves, and until everything the broker did not confirm has gone through."""
        seen: int | None = None
        republish = pending = True
        was_connected = True
        while True:
            connected = self.link.connected.is_set()
            republish = republish or (connected and not was_connected)
            was_connected = connected
            if connected:
                try:
                    with self.db.session() as session:
                        revision = config_revision(session)
                    if republish or pending or revision != seen:
                        seen = revision
                        pending = not self.sync(republish)
                        republish = republish and pending
                except Exception:  # keep the configs flowing through a database hiccup
                    log.exception("could not bring device configs up to date")
                    pending = True
            if stop.wait(poll_s):
                return
