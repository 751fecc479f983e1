"""Ingest: stores facts from devices; malformed or foreign payloads are counted, never fatal."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from console.db import Database
from console.ingest import Incoming, Ingest
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
from device_profiles import protocol as p

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
