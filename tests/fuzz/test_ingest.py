"""The console's ingest, per topic it reads (availability, state, telemetry, event, ack of
every device): bad payloads and bad topics are dropped and counted (malformed,
device_mismatch, unknown_device, unknown_command) by the real writer thread, which keeps
storing good messages; nothing it stores is corrupted."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select

from console.db import Database
from console.ingest import Ingest
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Device,
    DeviceEvent,
    Zone,
    ZoneKind,
)
from device_profiles import protocol as p
from tests.fuzz.strategies import ODD_IDS, json_bytes, json_values, mutated, raw_bytes
from tests.fuzz.tally import Tally, fuzz_settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "protocol"
DEVICE = "loa-fz-in"
SHA = "a" * 64
BROADCAST = "b-fz-1"
WAIT_S = 30.0
CHANNELS = {
    p.Channel.AVAILABILITY: "availability_online",
    p.Channel.STATE: "state",
    p.Channel.TELEMETRY: "telemetry",
    p.Channel.EVENT: "event_alarm",
    p.Channel.ACK: "ack_started",
}
DROPS = ("malformed", "device_mismatch", "unknown_device", "unknown_command", "duplicate_event")
_ids = itertools.count()


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def valid(channel: p.Channel) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{CHANNELS[channel]}.json").read_text())
    data.update(device_id=DEVICE, ts=now_ms())
    if channel is p.Channel.ACK:
        data["command_id"] = BROADCAST
    return data


@pytest.fixture
def ingest(db: Database) -> Iterator[Ingest]:
    with db.session() as s:
        s.add(Zone(id="xa-fz", name="Xã", kind=ZoneKind.COMMUNE))
        s.add(
            Device(
                id=DEVICE, name="Loa", profile="speaker-node", zone_id="xa-fz", secret_sha256="x"
            )
        )
        s.add(AudioFile(sha256=SHA, name="a", original_name="a.mp3", duration_ms=1000, size_bytes=1,
                        mime="audio/mpeg"))  # fmt: skip
        s.flush()
        s.add(Broadcast(id=BROADCAST, audio_sha256=SHA, priority="live", zone_ids=["xa-fz"],
                        status=BroadcastStatus.SENT))  # fmt: skip
        s.flush()
        s.add(Delivery(broadcast_id=BROADCAST, device_id=DEVICE, status=DeliveryStatus.PENDING,
                       updated_at=datetime.now(UTC)))  # fmt: skip
    running = Ingest(db)
    running.start()
    yield running
    running.stop()


def good_telemetry() -> bytes:
    return p.encode(
        p.Telemetry(id=f"good-{next(_ids)}", ts=now_ms(), device_id=DEVICE, uptime_s=10.0)
    )


def drops(ingest: Ingest) -> int:
    return sum(ingest.counters[name] for name in DROPS)


def send_and_wait(ingest: Ingest, topic: str, payload: bytes) -> None:
    """Enqueue the input, then a good telemetry; wait until the writer stored the latter."""
    wanted = ingest.counters["in_telemetry"] + 1
    ingest.enqueue(topic, payload)
    ingest.enqueue(p.device_topic(DEVICE, p.Channel.TELEMETRY), good_telemetry())
    with ingest.stored:
        ok = ingest.stored.wait_for(lambda: ingest.counters["in_telemetry"] >= wanted, WAIT_S)
    assert ok, f"the writer stored nothing more: {dict(ingest.counters)}"
    assert ingest._thread is not None and ingest._thread.is_alive()


def check_nothing_corrupted(db: Database) -> None:
    """What is stored still reads back as the contract says."""
    with db.session() as s:
        device = s.get(Device, DEVICE)
        assert device is not None
        for column, model in ((device.state, p.DeviceState), (device.telemetry, p.Telemetry)):
            if column is not None:
                model.model_validate(column)
                assert column["device_id"] == DEVICE
        delivery = s.scalar(select(Delivery).where(Delivery.broadcast_id == BROADCAST))
        assert delivery is not None and isinstance(delivery.status, DeliveryStatus)
        for event in s.scalars(select(DeviceEvent)):
            assert event.device_id == DEVICE and event.signal and "\x00" not in (event.detail or "")


# The regression: an integer of more than 4300 digits ended the writer thread (json.loads
# raised a plain ValueError that decode_batch did not expect).
HUGE_INT = b'{"v":1,"id":"x","ts":' + b"9" * 5000 + b"}"


@pytest.mark.parametrize("channel", list(CHANNELS), ids=str)
def test_bad_payloads_on_each_uplink_topic_are_counted(
    tally: Tally, ingest: Ingest, db: Database, channel: p.Channel
) -> None:
    topic = p.device_topic(DEVICE, channel)
    payloads = st.one_of(
        raw_bytes,
        json_bytes(json_values()),
        json_bytes(st.just(None).map(lambda _: valid(channel)).flatmap(mutated)),
    )

    @fuzz_settings(scale=0.5)
    @given(payload=payloads)
    @example(payload=HUGE_INT)
    def run(payload: bytes) -> None:
        with tally.case(f"console ingest: {channel}") as case:
            before, stored_before = drops(ingest), ingest.counters[f"in_{channel}"]
            send_and_wait(ingest, topic, payload)
            if drops(ingest) > before:
                case.dropped()
            else:
                extra = 1 if channel is p.Channel.TELEMETRY else 0
                assert ingest.counters[f"in_{channel}"] == stored_before + 1 + extra, dict(
                    ingest.counters
                )
                case.accepted()
            check_nothing_corrupted(db)

    run()
    assert ingest.counters["store_failed"] == 0


topics = st.one_of(
    st.text(max_size=60),
    st.sampled_from(ODD_IDS).map(lambda d: f"loa/v1/dev/{d}/state"),
    st.builds("loa/v1/dev/{}/{}".format, st.sampled_from([DEVICE, "loa-ghost", *ODD_IDS]),
              st.sampled_from([*p.Channel, "", "+", "#", "x"])),
)  # fmt: skip


def test_bad_topics_are_counted(tally: Tally, ingest: Ingest) -> None:
    @fuzz_settings(scale=0.5)
    @given(topic=topics, channel=st.sampled_from(list(CHANNELS)))
    def run(topic: str, channel: p.Channel) -> None:
        with tally.case("console ingest: topic") as case:
            before = drops(ingest)
            send_and_wait(ingest, topic, json.dumps(valid(channel)).encode())
            if drops(ingest) > before:
                case.dropped()
            else:
                assert topic.startswith(f"loa/v1/dev/{DEVICE}/")
                case.accepted()

    run()
