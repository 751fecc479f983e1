"""Ingest: facts from devices (availability, state, telemetry, events, acks) into the database.

The MQTT callback only enqueues; one writer thread decodes and stores in batches, so the
database has a single writer and bad payloads are counted, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from console.db import Database
from console.models import Broadcast, Delivery, DeliveryStatus, Device, DeviceEvent, IngestCounter
from device_profiles import protocol

log = logging.getLogger(__name__)

SUBSCRIPTIONS = [
    (protocol.uplink_subscription(ch), protocol.QOS[ch]) for ch in protocol.UPLINK_CHANNELS
]
_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.RECEIVED: 1,
    DeliveryStatus.STARTED: 2,
    DeliveryStatus.FINISHED: 3,
    DeliveryStatus.FAILED: 3,
    DeliveryStatus.PREEMPTED: 3,
    DeliveryStatus.STOPPED: 3,
}


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: datetime


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def apply_ack(delivery: Delivery, ack: protocol.Ack) -> None:
    """Move a delivery forward; an older or repeated ack never moves it back."""
    status = DeliveryStatus(ack.status.value)
    when = _from_ms(ack.ts)
    if status is DeliveryStatus.RECEIVED:
        delivery.received_at = delivery.received_at or when
    elif status is DeliveryStatus.STARTED:
        delivery.started_at = delivery.started_at or when
    elif delivery.ended_at is None:
        delivery.ended_at = when
    if _RANK[status] > _RANK[delivery.status]:
        delivery.status = status
        if ack.reason:
            delivery.reason = ack.reason
    delivery.updated_at = max(delivery.updated_at, when)


class Ingest:
    """Stores decoded uplink messages; `handle_batch` is the whole logic, testable alone."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.db = db
        self._clock = clock
        self.counters: Counter[str] = Counter()
        self._unflushed: Counter[str] = Counter()
        self._queue: queue.Queue[Incoming | None] = queue.Queue(maxsize=100_000)
        self._thread: threading.Thread | None = None
        self.stored = threading.Condition()

    # -- called from paho's thread: only enqueue --
    def enqueue(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait(Incoming(topic, payload, self._clock()))
        except queue.Full:
            self._count("dropped_queue_full")

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n
        self._unflushed[name] += n

    # -- the writer thread --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[Incoming] = []
            done = first is None
            if first is not None:
                batch.append(first)
            while not done and len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                else:
                    batch.append(item)
            if batch:
                try:
                    self.handle_batch(batch)
                except Exception:  # the database failed: keep the process, log the loss
                    log.exception("could not store %d uplink messages", len(batch))
                    self._count("store_failed", len(batch))
            with self.stored:
                self.stored.notify_all()
            if done:
                return

    def handle_batch(self, batch: list[Incoming]) -> None:
        # The write lock first: a web or config write committed while a message is being
        # stored must not make SQLite refuse (and so lose) it.
        with self.db.write_session() as session:
            for item in batch:
                try:
                    with session.begin_nested():
                        self._handle(session, item)
                except SQLAlchemyError:
                    log.exception("could not store a message from %s", item.topic)
                    self._count("store_failed")
            self._flush_counters(session)

    def _flush_counters(self, session: Session) -> None:
        for name, n in self._unflushed.items():
            row = session.get(IngestCounter, name)
            if row is None:
                session.add(IngestCounter(name=name, count=n))
            else:
                row.count += n
        self._unflushed.clear()

    def _handle(self, session: Session, item: Incoming) -> None:
        try:
            device_id, channel = protocol.parse_device_topic(item.topic)
            message = protocol.decode_for_channel(channel, item.payload)
        except protocol.ProtocolError as exc:
            self._count("malformed")
            log.warning(
                "dropped malformed message on %s: %s (%r)", item.topic, exc, item.payload[:200]
            )
            return
        if getattr(message, "device_id", device_id) != device_id:
            self._count("device_mismatch")
            log.warning("dropped %s: payload names another device", item.topic)
            return
        device = session.get(Device, device_id)
        if device is None:
            self._count("unknown_device")
            return
        self._count(f"in_{channel.value}")
        if channel is not protocol.Channel.AVAILABILITY:
            device.last_seen_at = item.received_at
        if isinstance(message, protocol.Availability):
            device.online = message.state is protocol.AvailabilityState.ONLINE
            device.last_seen_at = item.received_at
        elif isinstance(message, protocol.DeviceState):
            device.state = message.model_dump(mode="json")
        elif isinstance(message, protocol.Telemetry):
            device.telemetry = message.model_dump(mode="json")
        elif isinstance(message, protocol.Ack):
            self._store_ack(session, message)
        elif isinstance(message, protocol.Event):
            self._store_event(session, message, item.received_at)

    def _store_ack(self, session: Session, ack: protocol.Ack) -> None:
        delivery = session.scalar(
            select(Delivery).where(
                Delivery.broadcast_id == ack.command_id, Delivery.device_id == ack.device_id
            )
        )
        if delivery is None:
            if session.get(Broadcast, ack.command_id) is None:
                self._count("unknown_command")
                return
            # A device that joined the zone after the broadcast was recorded.
            delivery = Delivery(
                broadcast_id=ack.command_id,
                device_id=ack.device_id,
                status=DeliveryStatus.PENDING,
                updated_at=_from_ms(ack.ts),
            )
            session.add(delivery)
        apply_ack(delivery, ack)

    def _store_event(self, session: Session, event: protocol.Event, received_at: datetime) -> None:
        seen = session.scalar(
            select(DeviceEvent.id).where(
                DeviceEvent.device_id == event.device_id, DeviceEvent.message_id == event.id
            )
        )
        if seen is not None:
            self._count("duplicate_event")
            return
        session.add(
            DeviceEvent(
                message_id=event.id,
                device_id=event.device_id,
                occurred_at=_from_ms(event.ts),
                received_at=received_at,
                signal_class=event.signal_class.value,
                signal=event.signal,
                active=event.active,
                value=event.value,
                detail=event.detail,
            )
        )
