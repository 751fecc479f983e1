"""The database: the truth for users, zones, devices, audio, presets, schedules, broadcasts.

The schema is owned by Alembic (console/migrations); these classes mirror it.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _values(enum_cls: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in enum_cls]


def str_enum(enum_cls: type[enum.Enum]) -> Enum:
    """Store an enum by its value, as a plain string column (portable, readable)."""
    return Enum(enum_cls, native_enum=False, length=16, values_callable=_values)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {"viewer": 1, "operator": 2, "admin": 3}[self.value]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class WebSession(Base):
    """One browser's login: the session cookie carries a random key, only its hash is here.

    Deleting the row ends that login at once (logout, password change, deactivation), even
    for a copy of the cookie taken before.
    """

    __tablename__ = "web_sessions"

    key_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ZoneKind(enum.StrEnum):
    COMMUNE = "commune"
    HAMLET = "hamlet"
    CLUSTER = "cluster"


class Zone(Base):
    """Commune -> hamlet (thôn / khu phố) -> cluster; ids are MQTT topic levels."""

    __tablename__ = "zones"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[ZoneKind] = mapped_column(str_enum(ZoneKind))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("zones.id"), index=True)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    profile: Mapped[str] = mapped_column(String(100))
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id"), index=True)
    latitude: Mapped[float | None] = mapped_column()
    longitude: Mapped[float | None] = mapped_column()
    # sha256 of the device's random secret (its MQTT password), for media downloads.
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the ingest learnt last.
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    telemetry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When anything the live board shows last changed (a cursor for live updates).
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Decommissioned: its broker login revoked, shown nowhere live (board, lists, counts,
    # broadcasts, configs); the row stays so the history still names it. None: in service.
    decommissioned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    zone: Mapped[Zone] = relationship()


def in_service() -> ColumnElement[bool]:
    """SQL: the device is not decommissioned (every live list and count selects on it)."""
    return Device.decommissioned_at.is_(None)


class AudioFile(Base):
    """A processed announcement, stored content-addressed under media_dir."""

    __tablename__ = "audio_files"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    original_name: Mapped[str] = mapped_column(String(255))
    duration_ms: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str] = mapped_column(String(50))
    loudness_lufs: Mapped[float | None] = mapped_column()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Deleted by staff while the broadcast history still names it: hidden from the library,
    # kept (row and file) so history and reports can still play it. None: in the library.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Preset(Base):
    """An emergency announcement (or the gong) kept on every device, named by a stable key."""

    __tablename__ = "presets"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    # The Vietnamese text the audio was spoken from; None for the gong and for staff audio.
    text: Mapped[str | None] = mapped_column(Text)
    # No cascade: audio a preset plays cannot be deleted (as for schedules).
    audio_sha256: Mapped[str] = mapped_column(ForeignKey("audio_files.sha256"), index=True)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    audio: Mapped[AudioFile] = relationship()


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    audio_sha256: Mapped[str] = mapped_column(ForeignKey("audio_files.sha256"), index=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)
    zone_ids: Mapped[list[str]] = mapped_column(JSON)
    priority: Mapped[str] = mapped_column(String(16), default="scheduled")
    volume_pct: Mapped[int | None] = mapped_column(Integer)
    gong: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # What staff chose when it was saved over another item: "refuse" or "queue_after".
    on_conflict: Mapped[str] = mapped_column(String(16), default="refuse", server_default="refuse")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    audio: Mapped[AudioFile] = relationship()


class CommuneSettings(Base):
    """A commune's own scheduling rules; no row means the defaults (quiet 22:00–05:00)."""

    __tablename__ = "commune_settings"

    zone_id: Mapped[str] = mapped_column(
        ForeignKey("zones.id", ondelete="CASCADE"), primary_key=True
    )
    # Site-local wall-clock span [start, end), wrapping midnight; equal means none.
    quiet_start: Mapped[time] = mapped_column(Time)
    quiet_end: Mapped[time] = mapped_column(Time)
    # The preset announced on the speakers of a call point's zone when it raises an alarm;
    # None: no automatic announcement (the alarm still shows in the console).
    fire_announce_preset: Mapped[str | None] = mapped_column(String(32))
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Holiday(Base):
    """A day of a commune's holiday calendar: its routine recurring schedules stay silent."""

    __tablename__ = "holidays"
    __table_args__ = (UniqueConstraint("zone_id", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    zone_id: Mapped[str] = mapped_column(ForeignKey("zones.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)  # site-local date
    name: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class BroadcastStatus(enum.StrEnum):
    SENT = "sent"  # published to the broker
    MISSED = "missed"  # the console was down past the grace: never played late
    STOPPED = "stopped"


class Broadcast(Base):
    """One command sent to zones; its id is the command id (occurrence id for schedules)."""

    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("schedules.id"), index=True)
    audio_sha256: Mapped[str] = mapped_column(ForeignKey("audio_files.sha256"))
    priority: Mapped[str] = mapped_column(String(16))
    zone_ids: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[BroadcastStatus] = mapped_column(str_enum(BroadcastStatus))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    play_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Times each device plays it; None in broadcasts stored before it was recorded.
    repeat: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="broadcast", order_by="Delivery.device_id"
    )


class DeliveryStatus(enum.StrEnum):
    """Per device; 'pending' until the first ack, so silence shows as no answer."""

    PENDING = "pending"
    RECEIVED = "received"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    PREEMPTED = "preempted"
    STOPPED = "stopped"


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("broadcast_id", "device_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    broadcast_id: Mapped[str] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), index=True
    )
    # No cascade: a device's deliveries are evidence; a decommissioned device keeps its row.
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)
    status: Mapped[DeliveryStatus] = mapped_column(str_enum(DeliveryStatus))
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    broadcast: Mapped[Broadcast] = relationship(back_populates="deliveries")


class DeviceEvent(Base):
    """An alarm, supervisory or trouble signal (or its restore) reported by a device."""

    __tablename__ = "device_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), index=True)  # no cascade
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    signal_class: Mapped[str] = mapped_column(String(16))
    signal: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean)
    value: Mapped[float | None] = mapped_column()
    detail: Mapped[str | None] = mapped_column(Text)
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("device_id", "message_id"),)


class WorkerState(Base):
    """Small key/value facts the console worker keeps (e.g. the scheduler's last check)."""

    __tablename__ = "worker_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class IngestCounter(Base):
    """Counts of what the ingest dropped (malformed payloads, unknown devices, ...)."""

    __tablename__ = "ingest_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


class DeviceConfigRecord(Base):
    """The retained config the worker keeps for one device: its version and what it holds.

    Not a foreign key to devices: the record outlives a decommissioned device, so its
    retained config is cleared and a re-registered id carries on from the same version.
    """

    __tablename__ = "device_configs"

    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    # Goes up by one whenever the content changes (or is cleared): monotonic per device.
    version: Mapped[int] = mapped_column(Integer)
    # sha256 of the content (zones, volume, presets); "" once cleared.
    digest: Mapped[str] = mapped_column(String(64))
    # The version the broker last confirmed (None: never published).
    published_version: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """Who did what, when: logins, broadcasts, emergencies, stops, schedule and device changes.

    Append-only. The actor's name is copied so the entry outlives a renamed or removed user.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(64))  # "" for the system itself
    action: Mapped[str] = mapped_column(String(48), index=True)
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64))


class WorkerLease(Base):
    """A named lease one console worker holds at a time (the leader), renewed while it lives."""

    __tablename__ = "worker_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
