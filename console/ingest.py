"""Ingest: facts from devices (availability, state, telemetry, events, acks) into the database.

The MQTT callback only enqueues. One writer thread drains the queue in batches: it decodes the
whole batch first (no database), then stores it in ONE short transaction of set-based
statements: per device only the last availability, state and telemetry of the batch (one
UPDATE per kind of change, executed for many devices at once), events inserted once per
(device, message id), acks moving deliveries forward. Bad payloads are counted, never fatal;
a database that is briefly locked or away is waited for, and a batch the database refuses
is split until the one message at fault is found and counted. A QoS 1 message is confirmed to
the broker (PUBACK) only once its batch is committed: a worker killed before that gets it again.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from console.db import Database
from console.device_status import telemetry_faults
from console.models import Broadcast, Delivery, DeliveryStatus, Device, DeviceEvent, IngestCounter
from device_profiles import protocol

log = logging.getLogger(__name__)

SUBSCRIPTIONS = [
    (protocol.uplink_subscription(ch), protocol.QOS[ch]) for ch in protocol.UPLINK_CHANNELS
]
MAX_BATCH = 2000  # messages stored in one transaction, at most
QUEUE_SIZE = 100_000
# Waits before trying a batch again while the database is locked or unreachable; then the
# batch is counted as store_failed (the queue meanwhile buffers what keeps arriving).
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
_IN_CHUNK = 400  # rows per IN (...) list: well within SQLite's bound-parameter limit
_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.RECEIVED: 1,
    DeliveryStatus.STARTED: 2,
    DeliveryStatus.FINISHED: 3,
    DeliveryStatus.FAILED: 3,
    DeliveryStatus.PREEMPTED: 3,
    DeliveryStatus.STOPPED: 3,
}
_DEVICES = cast(Table, Device.__table__)
_DELIVERIES = cast(Table, Delivery.__table__)
# A device that goes offline (its Last Will: killed, powered off, cut off) while it had a
# broadcast received or playing cannot be trusted to finish it: the delivery is marked failed
# with this reason, at once, instead of showing "playing" for ever. Should the device still
# send its own final ack (it kept playing through a link cut), that ack replaces it.
OFFLINE_REASON = "device went offline"
_OPEN = (DeliveryStatus.RECEIVED, DeliveryStatus.STARTED)
_COUNTERS = cast(Table, IngestCounter.__table__)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: datetime
    # Tells the broker the message is safe (QoS 1 PUBACK), once it is stored: a worker killed
    # before that gets it again on its persistent session (docs/reliability.md).
    confirm: Callable[[], None] | None = field(default=None, compare=False)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def apply_ack(delivery: Delivery, ack: protocol.Ack) -> None:
    """Move a delivery forward; an older or repeated ack never moves it back."""
    status = DeliveryStatus(ack.status.value)
    when = _from_ms(ack.ts)
    assumed = delivery.status is DeliveryStatus.FAILED and delivery.reason == OFFLINE_REASON
    if status is DeliveryStatus.RECEIVED:
        delivery.received_at = delivery.received_at or when
    elif status is DeliveryStatus.STARTED:
        delivery.started_at = delivery.started_at or when
    elif assumed:  # the device's own final word replaces what the console assumed
        delivery.status, delivery.reason, delivery.ended_at = status, ack.reason, when
    elif delivery.ended_at is None:
        delivery.ended_at = when
    if _RANK[status] > _RANK[delivery.status]:
        delivery.status = status
        if ack.reason:
            delivery.reason = ack.reason
    delivery.updated_at = max(delivery.updated_at, when)


@functools.lru_cache(maxsize=65_536)
def _parse_topic(topic: str) -> tuple[str, protocol.Channel]:
    """The device and channel of a topic; a fleet's topics repeat, so each is parsed once."""
    return protocol.parse_device_topic(topic)


def _collapse(seq: list[Any], value: Any) -> None:
    """Append unless equal to the last: a device's successive values, repeats removed."""
    if not seq or seq[-1] != value:
        seq.append(value)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def unstorable(payload: bytes, message: protocol.Message) -> str | None:
    """Why a well-formed message still cannot be stored as it is (None: it can).

    Python's json reads NaN and Infinity, which JSON (and PostgreSQL's json) does not; a NUL
    character is refused by PostgreSQL's text; a timestamp may be valid on the wire (up to
    2**53 ms) yet beyond the years a datetime holds.
    """
    if b"NaN" in payload or b"Infinity" in payload:  # cheap first: rarely there at all
        try:
            json.loads(payload, parse_constant=_reject_constant)
        except ValueError:
            return "payload holds NaN or Infinity"
    if b"\\u0000" in payload:
        return "payload holds a NUL character"
    try:
        _from_ms(message.ts)
    except (ValueError, OverflowError, OSError):
        return f"timestamp {message.ts} is out of range"
    return None


@dataclass
class DeviceNews:
    """What one device said in a batch: the last of each kind, and how its flags moved."""

    last_seen_at: datetime
    channels: Counter[str] = field(default_factory=Counter)
    online: list[bool] = field(default_factory=list)  # successive values, repeats removed
    state: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    faults: list[list[str]] = field(default_factory=list)  # successive telemetry faults


@dataclass
class DecodedBatch:
    """A batch after decoding, before the database."""

    size: int = 0
    counts: Counter[str] = field(default_factory=Counter)  # malformed, device_mismatch
    devices: dict[str, DeviceNews] = field(default_factory=dict)
    events: list[tuple[protocol.Event, datetime]] = field(default_factory=list)
    acks: list[protocol.Ack] = field(default_factory=list)

    @property
    def valid(self) -> int:
        """Messages that decoded well (the ones a failed store loses)."""
        return sum(sum(news.channels.values()) for news in self.devices.values())


def decode_batch(batch: Sequence[Incoming]) -> DecodedBatch:
    """Parse every message; keep per device only what the database needs."""
    out = DecodedBatch(size=len(batch))
    for item in batch:
        try:
            device_id, channel = _parse_topic(item.topic)
            message = protocol.decode_for_channel(channel, item.payload)
            why = unstorable(item.payload, message)
            if why is not None:
                raise protocol.ProtocolError(why)
        except protocol.ProtocolError as exc:
            out.counts["malformed"] += 1
            log.warning(
                "dropped malformed message on %s: %s (%r)", item.topic, exc, item.payload[:200]
            )
            continue
        if getattr(message, "device_id", device_id) != device_id:
            out.counts["device_mismatch"] += 1
            log.warning("dropped %s: payload names another device", item.topic)
            continue
        news = out.devices.get(device_id)
        if news is None:
            news = out.devices[device_id] = DeviceNews(last_seen_at=item.received_at)
        news.channels[channel.value] += 1
        news.last_seen_at = max(news.last_seen_at, item.received_at)
        if isinstance(message, protocol.Availability):
            _collapse(news.online, message.state is protocol.AvailabilityState.ONLINE)
        elif isinstance(message, protocol.DeviceState):
            news.state = message.model_dump(mode="json")
        elif isinstance(message, protocol.Telemetry):
            news.telemetry = message.model_dump(mode="json")
            _collapse(news.faults, telemetry_faults(news.telemetry))
        elif isinstance(message, protocol.Ack):
            out.acks.append(message)
        elif isinstance(message, protocol.Event):
            out.events.append((message, item.received_at))
    return out


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Ingest:
    """Stores uplink messages; `handle_batch` is the whole logic, testable alone."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.db = db
        self._clock = clock
        self._lock = threading.Lock()  # the counters: paho's thread counts a full queue
        self.counters: Counter[str] = Counter()
        self._unflushed: Counter[str] = Counter()
        self._queue: queue.Queue[Incoming | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.stored = threading.Condition()
        # The faults of each device's stored telemetry, as this writer last stored or read
        # them (the writer thread's own; `forget` when another process may have written).
        self._faults: dict[str, list[str]] = {}

    def forget(self) -> None:
        """Drop what was remembered of stored telemetry (another worker may have written it)."""
        self._faults = {}

    # -- called from paho's thread: only enqueue --
    def enqueue(
        self, topic: str, payload: bytes, confirm: Callable[[], None] | None = None
    ) -> None:
        item = Incoming(topic, payload, self._clock(), confirm)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count({"dropped_queue_full": 1})
            self._confirm([item])  # counted as lost; refusing it would stall the broker

    def _count(self, counts: Counter[str] | dict[str, int]) -> None:
        with self._lock:
            self.counters.update(counts)
            self._unflushed.update(counts)

    # -- the writer thread --
    def start(self) -> None:
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Store what is queued, then end the writer (a database still away is not waited for)."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._closing.set()
        self._thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch: list[Incoming] = []
            done = first is None
            if first is not None:
                batch.append(first)
            while not done and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    done = True
                else:
                    batch.append(item)
            if batch and self._write(batch):
                self._confirm(batch)
            with self.stored:
                self.stored.notify_all()
            if done:
                return

    @staticmethod
    def _confirm(batch: list[Incoming]) -> None:
        """Confirm to the broker, in the order received (as MQTT asks of QoS 1)."""
        for item in batch:
            if item.confirm is not None:
                try:
                    item.confirm()
                except Exception:  # the link's trouble: the broker will send it again
                    log.exception("could not confirm a message on %s", item.topic)

    def _write(self, batch: list[Incoming]) -> bool:
        """Store a batch, waiting out a locked or unreachable database for a while; False
        when it gave up because the writer is stopping (the broker keeps those: unconfirmed).
        A batch that cannot be stored otherwise is counted (store_failed) and confirmed."""
        decoded = decode_batch(batch)
        for delay_s in (*RETRY_DELAYS_S, None):
            try:
                self.store(decoded)
                return True
            except OperationalError as exc:
                if delay_s is None or self._closing.is_set():
                    log.error("could not store %d uplink messages: %s", len(batch), exc)
                    break
                log.warning("database unavailable (%s); retrying in %.1f s", exc, delay_s)
                if self._closing.wait(delay_s):
                    log.error("stopping: %d uplink messages not stored", len(batch))
                    break
            except Exception:  # keep the writer alive, whatever the failure; count the loss
                if len(batch) > 1:  # one message at fault must not sink the rest: halve
                    half = len(batch) // 2
                    first = self._write(batch[:half])
                    return self._write(batch[half:]) and first
                log.exception("could not store a message from %s", batch[0].topic)
                break
        self._count(decoded.counts + Counter(store_failed=decoded.valid))
        return not self._closing.is_set()

    def handle_batch(self, batch: Sequence[Incoming]) -> None:
        """Decode and store one batch in one transaction (a database error raises)."""
        self.store(decode_batch(batch))

    def store(self, decoded: DecodedBatch) -> None:
        """One short transaction; the counters are committed with what they count."""
        # The write lock first: a web or config write committed between this transaction's
        # reads and writes must not make SQLite refuse (and so lose) the batch.
        with self.db.write_session() as session:
            counts = decoded.counts + self._store(session, decoded, self._clock())
            with self._lock:
                flushing = self._unflushed.copy()
            self._write_counters(session, flushing + counts)
        for device_id, news in decoded.devices.items():
            if news.faults and device_id in self._faults:
                self._faults[device_id] = news.faults[-1]  # committed: what is stored now
        with self._lock:
            self.counters.update(counts)
            self._unflushed.subtract(flushing)
            self._unflushed = +self._unflushed  # drop the zeros

    def _store(self, session: Session, decoded: DecodedBatch, now: datetime) -> Counter[str]:
        counts: Counter[str] = Counter()
        known = self._stored_devices(session, decoded.devices)
        for device_id, news in decoded.devices.items():
            if device_id in known:
                counts.update({f"in_{ch}": n for ch, n in news.channels.items()})
            else:
                counts["unknown_device"] += sum(news.channels.values())
        self._update_devices(session, decoded.devices, known, now)
        self._store_events(session, [e for e in decoded.events if e[0].device_id in known], counts)
        self._store_acks(session, [a for a in decoded.acks if a.device_id in known], counts)
        gone = [d for d, news in decoded.devices.items() if d in known and False in news.online]
        self._fail_open_deliveries(session, gone, now)
        playing = {
            d: str(news.state["playing"]["command_id"])
            for d, news in decoded.devices.items()
            if d in known
            and news.state
            and news.state.get("playing")
            and news.online[-1:] != [False]
        }
        self._resume_playing(session, playing, now)
        return counts

    @staticmethod
    def _resume_playing(session: Session, playing: dict[str, str], now: datetime) -> None:
        """A device back online whose state says it still plays a broadcast assumed failed
        when it went offline (a clean broker restart sends every device's Last Will, a link
        cut sends one; the speaker played on): that delivery is playing again."""
        if not playing:
            return
        session.flush()  # after the batch's acks and failures, like _fail_open_deliveries
        session.execute(
            update(_DELIVERIES)
            .where(
                _DELIVERIES.c.device_id == bindparam("_device"),
                _DELIVERIES.c.broadcast_id == bindparam("_broadcast"),
                _DELIVERIES.c.status == DeliveryStatus.FAILED,
                _DELIVERIES.c.reason == OFFLINE_REASON,
            )
            .values(status=DeliveryStatus.STARTED, reason=None, ended_at=None, updated_at=now),
            [{"_device": d, "_broadcast": b} for d, b in playing.items()],
        )

    @staticmethod
    def _fail_open_deliveries(session: Session, device_ids: list[str], now: datetime) -> None:
        """Deliveries received or playing on devices that went offline: failed (see
        OFFLINE_REASON). After the acks of the batch, which came before the will."""
        if device_ids:
            session.flush()  # the acks' changes first: this UPDATE is not the ORM's
        for chunk in _chunks(device_ids):
            session.execute(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.device_id.in_(chunk), _DELIVERIES.c.status.in_(_OPEN))
                .values(
                    status=DeliveryStatus.FAILED,
                    reason=OFFLINE_REASON,
                    ended_at=func.coalesce(_DELIVERIES.c.ended_at, now),
                    updated_at=now,
                )
            )

    def _stored_devices(
        self, session: Session, devices: dict[str, DeviceNews]
    ) -> dict[str, tuple[bool, list[str]]]:
        """Registered devices among those of the batch: whether online, and the faults of
        their stored telemetry (remembered from earlier batches: read once per device)."""
        online: dict[str, bool] = {}
        for chunk in _chunks(list(devices)):
            stmt = select(Device.id, Device.online).where(Device.id.in_(chunk))
            online.update((device_id, bool(flag)) for device_id, flag in session.execute(stmt))
        unknown_faults = [
            d for d in online if devices[d].telemetry is not None and d not in self._faults
        ]
        for chunk in _chunks(unknown_faults):
            stored = select(Device.id, Device.telemetry).where(Device.id.in_(chunk))
            for device_id, telemetry in session.execute(stored):
                self._faults[device_id] = telemetry_faults(telemetry)
        return {d: (flag, self._faults.get(d, [])) for d, flag in online.items()}

    @staticmethod
    def _update_devices(
        session: Session,
        devices: dict[str, DeviceNews],
        known: dict[str, tuple[bool, list[str]]],
        now: datetime,
    ) -> None:
        """One executemany UPDATE per set of changed columns (a handful per batch).

        changed_at (the live board's cursor) moves when the board would show something new:
        online flipped, a new state, or telemetry whose faults differ.
        """
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for device_id, news in devices.items():
            if device_id not in known:
                continue
            online, faults = known[device_id]
            row: dict[str, Any] = {"_id": device_id, "last_seen_at": news.last_seen_at}
            changed = False
            if news.online:
                row["online"] = news.online[-1]
                changed |= news.online != [online]
            if news.state is not None:
                row["state"] = news.state
                changed = True
            if news.telemetry is not None:
                row["telemetry"] = news.telemetry
                changed |= news.faults != [faults]
            if changed:
                row["changed_at"] = now
            groups.setdefault(tuple(sorted(row)), []).append(row)
        for rows in groups.values():
            # Keys other than _id name the columns to SET; the types come from the table.
            session.execute(update(_DEVICES).where(_DEVICES.c.id == bindparam("_id")), rows)

    def _store_events(
        self,
        session: Session,
        events: list[tuple[protocol.Event, datetime]],
        counts: Counter[str],
    ) -> None:
        """Insert each event once per (device, message id): QoS 1 redelivers."""
        if not events:
            return
        seen: set[tuple[str, str]] = set()
        for chunk in _chunks([(e.device_id, e.id) for e, _ in events]):
            stmt = select(DeviceEvent.device_id, DeviceEvent.message_id).where(
                tuple_(DeviceEvent.device_id, DeviceEvent.message_id).in_(chunk)
            )
            seen.update((d, m) for d, m in session.execute(stmt))
        rows = []
        for event, received_at in events:
            key = (event.device_id, event.id)
            if key in seen:
                counts["duplicate_event"] += 1
                continue
            seen.add(key)
            rows.append(
                {
                    "message_id": event.id,
                    "device_id": event.device_id,
                    "occurred_at": _from_ms(event.ts),
                    "received_at": received_at,
                    "signal_class": event.signal_class.value,
                    "signal": event.signal,
                    "active": event.active,
                    "value": event.value,
                    "detail": event.detail,
                }
            )
        if rows:
            session.execute(self._insert_ignoring_duplicates(session), rows)

    @staticmethod
    def _insert_ignoring_duplicates(session: Session) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING where the database has it (SQLite, PostgreSQL)."""
        table = cast(Table, DeviceEvent.__table__)
        keys = ["device_id", "message_id"]
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
        if dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
        return insert(table)  # only the ingest inserts events: the check above suffices

    def _store_acks(self, session: Session, acks: list[protocol.Ack], counts: Counter[str]) -> None:
        """Move each delivery forward with its acks, in the order they came."""
        if not acks:
            return
        pairs = list(dict.fromkeys((a.command_id, a.device_id) for a in acks))
        deliveries: dict[tuple[str, str], Delivery] = {}
        for chunk in _chunks(pairs):
            stmt = select(Delivery).where(
                tuple_(Delivery.broadcast_id, Delivery.device_id).in_(chunk)
            )
            deliveries.update({(d.broadcast_id, d.device_id): d for d in session.scalars(stmt)})
        missing = sorted({c for c, d in pairs if (c, d) not in deliveries})
        sent: set[str] = set()
        for chunk in _chunks(missing):
            sent.update(session.scalars(select(Broadcast.id).where(Broadcast.id.in_(chunk))))
        for ack in acks:
            key = (ack.command_id, ack.device_id)
            delivery = deliveries.get(key)
            if delivery is None:
                if ack.command_id not in sent:
                    counts["unknown_command"] += 1
                    continue
                # A device that joined the zone after the broadcast was recorded.
                delivery = deliveries[key] = Delivery(
                    broadcast_id=ack.command_id,
                    device_id=ack.device_id,
                    status=DeliveryStatus.PENDING,
                    updated_at=_from_ms(ack.ts),
                )
                session.add(delivery)
            apply_ack(delivery, ack)

    @staticmethod
    def _write_counters(session: Session, counts: Counter[str]) -> None:
        """Add to the stored counters: one UPDATE for those present, one INSERT for new ones."""
        items = sorted((name, n) for name, n in counts.items() if n)
        if not items:
            return
        names = [name for name, _ in items]
        stmt = select(IngestCounter.name).where(IngestCounter.name.in_(names))
        present = set(session.scalars(stmt))
        bumps = [{"_name": name, "n": n} for name, n in items if name in present]
        if bumps:
            session.execute(
                update(_COUNTERS)
                .where(_COUNTERS.c.name == bindparam("_name"))
                .values(count=_COUNTERS.c.count + bindparam("n")),
                bumps,
            )
        new = [{"name": name, "count": n} for name, n in items if name not in present]
        if new:
            session.execute(insert(_COUNTERS), new)
