"""Ingest: stores facts from devices in batches; malformed or foreign payloads are counted,
never fatal; a message the database refuses costs only itself. Also: the MQTT sockets of the
console and the broker's config send small packets at once (TCP_NODELAY)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from console.db import Database
from console.ingest import DecodedBatch, Incoming, Ingest
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Device,
    DeviceEvent,
    IngestCounter,
    Zone,
    ZoneKind,
)
from console.mqtt_link import ConsoleLink
from device_profiles import protocol as p
from tests.conftest import Broker

NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
SHA = "a" * 64


@pytest.fixture
def seeded(db: Database) -> Database:
    with db.session() as s:
        s.add(Zone(id="xa", name="Xã", kind=ZoneKind.COMMUNE))
        s.add(
            Device(
                id="loa-1", name="Loa 1", profile="speaker-node", zone_id="xa", secret_sha256="x"
            )
        )
        s.add(
            AudioFile(
                sha256=SHA,
                name="a",
                original_name="a.mp3",
                duration_ms=1000,
                size_bytes=1,
                mime="audio/mpeg",
            )
        )
        s.flush()
        s.add(
            Broadcast(
                id="b-1",
                audio_sha256=SHA,
                priority="live",
                zone_ids=["xa"],
                status=BroadcastStatus.SENT,
            )
        )
        s.flush()
        s.add(
            Delivery(
                broadcast_id="b-1", device_id="loa-1", status=DeliveryStatus.PENDING, updated_at=NOW
            )
        )
    return db


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def ack(status: str, at: datetime, device: str = "loa-1", command: str = "b-1") -> Incoming:
    msg = p.Ack(
        id=p.new_message_id(), ts=ms(at), device_id=device, command_id=command, status=status
    )
    return Incoming(p.device_topic(device, p.Channel.ACK), p.encode(msg), at)


def delivery(db: Database) -> Delivery:
    with db.session() as s:
        row = s.scalar(select(Delivery).where(Delivery.broadcast_id == "b-1"))
        assert row is not None
        return row


def counters(db: Database) -> dict[str, int]:
    with db.session() as s:
        return {c.name: c.count for c in s.scalars(select(IngestCounter))}


def test_acks_move_a_delivery_forward_and_never_back(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    t = NOW
    ingest.handle_batch([ack("received", t), ack("started", t + timedelta(seconds=2))])
    assert delivery(seeded).status is DeliveryStatus.STARTED
    # A late, repeated 'received' (QoS 1 redelivery) changes nothing.
    ingest.handle_batch(
        [ack("finished", t + timedelta(seconds=5)), ack("received", t + timedelta(seconds=6))]
    )
    row = delivery(seeded)
    assert row.status is DeliveryStatus.FINISHED
    assert row.received_at == t
    assert row.started_at == t + timedelta(seconds=2)
    assert row.ended_at == t + timedelta(seconds=5)


def test_failed_ack_keeps_its_reason(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    msg = p.Ack(
        id="x1", ts=ms(NOW), device_id="loa-1", command_id="b-1", status="failed", reason="expired"
    )
    ingest.handle_batch([Incoming(p.device_topic("loa-1", p.Channel.ACK), p.encode(msg), NOW)])
    row = delivery(seeded)
    assert (row.status, row.reason) == (DeliveryStatus.FAILED, "expired")


BAD_PAYLOADS = [
    b"",
    b"not json",
    b"\x00\xff\xfe",
    b"[]",
    b'{"v": 9}',
    b'{"v": 1, "id": "x", "ts": 1}',
    json.dumps(
        {"v": 1, "id": "x", "ts": 1, "device_id": "loa-1", "command_id": "b-1", "status": "dancing"}
    ).encode(),
    b"[" * 50_000,
    b"x" * (p.MAX_PAYLOAD_BYTES + 10),
]


def test_malformed_payloads_are_counted_and_good_ones_still_stored(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    topic = p.device_topic("loa-1", p.Channel.ACK)
    batch = [Incoming(topic, payload, NOW) for payload in BAD_PAYLOADS]
    batch.append(Incoming("loa/v1/dev/loa-1/unknown", b"{}", NOW))
    batch.append(Incoming("somewhere/else", b"{}", NOW))
    batch.append(ack("started", NOW))
    ingest.handle_batch(batch)
    assert counters(seeded)["malformed"] == len(BAD_PAYLOADS) + 2
    assert delivery(seeded).status is DeliveryStatus.STARTED


def test_foreign_and_unknown_senders_are_counted(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    spoofed = p.Ack(id="x", ts=ms(NOW), device_id="loa-2", command_id="b-1", status="finished")
    ingest.handle_batch(
        [
            Incoming(p.device_topic("loa-1", p.Channel.ACK), p.encode(spoofed), NOW),
            ack("started", NOW, device="ghost"),
            ack("started", NOW, command="b-unknown"),
        ]
    )
    c = counters(seeded)
    assert (c["device_mismatch"], c["unknown_device"], c["unknown_command"]) == (1, 1, 1)
    assert delivery(seeded).status is DeliveryStatus.PENDING


def test_availability_state_and_events_are_stored_once(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    online = p.Availability(id="a1", ts=ms(NOW), device_id="loa-1", state="online")
    alarm = p.Event(
        id="e1",
        ts=ms(NOW),
        device_id="loa-1",
        signal_class="alarm",
        signal="call_point",
        active=True,
    )
    state = p.DeviceState(
        id="s1",
        ts=ms(NOW),
        device_id="loa-1",
        profile="speaker-node",
        software_version="0.1",
        volume_pct=70,
    )
    items = [
        Incoming(p.device_topic("loa-1", p.Channel.AVAILABILITY), p.encode(online), NOW),
        Incoming(p.device_topic("loa-1", p.Channel.EVENT), p.encode(alarm), NOW),
        Incoming(p.device_topic("loa-1", p.Channel.EVENT), p.encode(alarm), NOW),  # redelivered
        Incoming(p.device_topic("loa-1", p.Channel.STATE), p.encode(state), NOW),
    ]
    ingest.handle_batch(items)
    with seeded.session() as s:
        device = s.get(Device, "loa-1")
        assert device is not None and device.online and device.last_seen_at == NOW
        assert device.state is not None and device.state["volume_pct"] == 70
        events = list(s.scalars(select(DeviceEvent)))
    assert [(e.signal, e.active) for e in events] == [("call_point", True)]
    assert counters(seeded)["duplicate_event"] == 1


def test_writer_thread_survives_bad_input(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    ingest.start()
    try:
        ingest.enqueue(p.device_topic("loa-1", p.Channel.ACK), b"garbage")
        good = ack("received", NOW)
        ingest.enqueue(good.topic, good.payload)
    finally:
        ingest.stop()
    assert delivery(seeded).status is DeliveryStatus.RECEIVED
    assert counters(seeded)["malformed"] == 1


def telemetry(device: str = "loa-1", **fields: Any) -> bytes:
    return p.encode(p.Telemetry(id=p.new_message_id(), ts=ms(NOW), device_id=device, **fields))


def incoming(channel: p.Channel, payload: bytes, at: datetime = NOW) -> Incoming:
    return Incoming(p.device_topic("loa-1", channel), payload, at)


UNSTORABLE = [
    # Python's json reads NaN and Infinity; JSON and PostgreSQL's json do not.
    (p.Channel.TELEMETRY, b'{"v":1,"id":"n","ts":1,"device_id":"loa-1","uptime_s":NaN}'),
    (p.Channel.TELEMETRY, b'{"v":1,"id":"i","ts":1,"device_id":"loa-1","uptime_s":Infinity}'),
    # PostgreSQL's text refuses NUL.
    (
        p.Channel.EVENT,
        b'{"v":1,"id":"z","ts":1,"device_id":"loa-1","signal_class":"trouble",'
        b'"signal":"door","active":true,"detail":"a\\u0000b"}',
    ),
    # A valid wire timestamp (up to 2**53 ms) beyond the years a datetime holds.
    (
        p.Channel.ACK,
        json.dumps(
            {"v": 1, "id": "t", "ts": 2**53, "device_id": "loa-1", "command_id": "b-1",
             "status": "started"}
        ).encode(),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("channel", "payload"), UNSTORABLE)
def test_payloads_the_database_could_not_hold_are_counted_malformed(
    seeded: Database, channel: p.Channel, payload: bytes
) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    ingest.handle_batch([incoming(channel, payload), ack("received", NOW)])
    assert counters(seeded)["malformed"] == 1
    assert delivery(seeded).status is DeliveryStatus.RECEIVED
    with seeded.session() as s:
        assert list(s.scalars(select(DeviceEvent))) == []


def device_row(db: Database) -> Device:
    with db.session() as s:
        device = s.get(Device, "loa-1")
        assert device is not None
        return device


def test_a_batch_keeps_the_last_of_each_kind_and_moves_changed_at_only_for_news(
    seeded: Database,
) -> None:
    now = [NOW]
    ingest = Ingest(seeded, clock=lambda: now[0])

    def state(volume_pct: int) -> Incoming:
        msg = p.DeviceState(
            id=p.new_message_id(), ts=ms(NOW), device_id="loa-1", profile="speaker-node",
            software_version="0.1", volume_pct=volume_pct,
        )  # fmt: skip
        return incoming(p.Channel.STATE, p.encode(msg))

    def online(up: bool) -> Incoming:
        msg = p.Availability(
            id=p.new_message_id(), ts=ms(NOW), device_id="loa-1",
            state="online" if up else "offline",
        )  # fmt: skip
        return incoming(p.Channel.AVAILABILITY, p.encode(msg))

    later = NOW + timedelta(seconds=3)
    ingest.handle_batch(
        [
            online(True),
            state(40),
            incoming(p.Channel.TELEMETRY, telemetry(uptime_s=1, cpu_temp_c=50.0)),
            state(70),
            incoming(p.Channel.TELEMETRY, telemetry(uptime_s=2, cpu_temp_c=51.0), later),
        ]
    )
    row = device_row(seeded)
    assert row.online and row.changed_at == NOW and row.last_seen_at == later
    assert row.state is not None and row.state["volume_pct"] == 70
    assert row.telemetry is not None and row.telemetry["uptime_s"] == 2

    # Telemetry with the same faults (none), a repeated 'online': nothing new for the board.
    now[0] = NOW + timedelta(minutes=1)
    ingest.handle_batch(
        [online(True), incoming(p.Channel.TELEMETRY, telemetry(uptime_s=60, cpu_temp_c=49.0))]
    )
    row = device_row(seeded)
    assert row.changed_at == NOW and row.telemetry is not None and row.telemetry["uptime_s"] == 60

    # Overheating is news; so is going offline.
    now[0] = NOW + timedelta(minutes=2)
    ingest.handle_batch([incoming(p.Channel.TELEMETRY, telemetry(uptime_s=120, cpu_temp_c=85.0))])
    assert device_row(seeded).changed_at == now[0]
    now[0] = NOW + timedelta(minutes=3)
    ingest.handle_batch([online(False)])
    row = device_row(seeded)
    assert not row.online and row.changed_at == now[0]
    # Off and on again within one batch: news, though it ends where it began.
    now[0] = NOW + timedelta(minutes=4)
    ingest.handle_batch([online(True), online(False)])
    assert device_row(seeded).changed_at == now[0]


def test_events_redelivered_in_a_later_batch_are_stored_once(seeded: Database) -> None:
    ingest = Ingest(seeded, clock=lambda: NOW)
    alarm = p.Event(
        id="e-7", ts=ms(NOW), device_id="loa-1", signal_class="alarm", signal="call_point",
        active=True, detail="<b>Cháy</b> ở chợ",
    )  # fmt: skip
    restore = alarm.model_copy(update={"id": "e-8", "active": False})
    ingest.handle_batch([incoming(p.Channel.EVENT, p.encode(alarm))])
    ingest.handle_batch(
        [incoming(p.Channel.EVENT, p.encode(alarm)), incoming(p.Channel.EVENT, p.encode(restore))]
    )
    with seeded.session() as s:
        stored = [(e.message_id, e.active, e.detail) for e in s.scalars(select(DeviceEvent))]
    assert sorted(stored) == [
        ("e-7", True, "<b>Cháy</b> ở chợ"),
        ("e-8", False, "<b>Cháy</b> ở chợ"),
    ]
    assert counters(seeded)["duplicate_event"] == 1


def test_acks_of_a_device_that_joined_after_the_broadcast_add_its_delivery(
    seeded: Database,
) -> None:
    with seeded.session() as s:
        s.add(Device(id="loa-2", name="Loa 2", profile="speaker-node", zone_id="xa",
                     secret_sha256="x"))  # fmt: skip
    ingest = Ingest(seeded, clock=lambda: NOW)
    later = NOW + timedelta(seconds=4)
    ingest.handle_batch([ack("received", NOW, device="loa-2"), ack("started", later, "loa-2")])
    with seeded.session() as s:
        row = s.scalar(select(Delivery).where(Delivery.device_id == "loa-2"))
        assert row is not None
        assert (row.status, row.received_at, row.started_at) == (
            DeliveryStatus.STARTED, NOW, later,
        )  # fmt: skip


class RefusingIngest(Ingest):
    """The database refuses whatever names device 'loa-bad' (as a constraint would)."""

    def _store(self, session: Session, decoded: DecodedBatch, now: datetime) -> Any:
        if "loa-bad" in decoded.devices:
            raise IntegrityError("UPDATE devices", {}, Exception("refused"))
        return super()._store(session, decoded, now)


def test_a_message_the_database_refuses_costs_only_itself(seeded: Database) -> None:
    with seeded.session() as s:
        s.add(Device(id="loa-bad", name="x", profile="speaker-node", zone_id="xa",
                     secret_sha256="x"))  # fmt: skip
    ingest = RefusingIngest(seeded, clock=lambda: NOW)
    # Queued before the writer starts: it takes them all as one batch.
    for item in [ack("received", NOW)] * 3 + [ack("started", NOW, device="loa-bad")]:
        ingest.enqueue(item.topic, item.payload)
    good = ack("started", NOW)
    ingest.enqueue(good.topic, good.payload)
    ingest.start()
    ingest.stop()
    assert delivery(seeded).status is DeliveryStatus.STARTED
    c = counters(seeded)
    assert (c["store_failed"], c["in_ack"]) == (1, 4)


def test_the_console_link_and_the_broker_send_small_packets_at_once(mqtt_broker: Broker) -> None:
    assert "set_tcp_nodelay true" in mqtt_broker.process.settings.config_path.read_text().split(
        "\n"
    )
    link = ConsoleLink(
        mqtt_broker.host,
        mqtt_broker.port,
        mqtt_broker.console_username,
        mqtt_broker.console_password,
        client_name="test-nodelay",
    )
    link.start()
    try:
        sock = link.tcp_socket()
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        link.stop()
