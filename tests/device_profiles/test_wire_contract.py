"""The v1 wire contract: golden payloads pin the bytes; topics; refusal of bad payloads."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles import protocol as p

FIXTURES = Path(__file__).parent.parent / "fixtures" / "protocol"
KINDS: dict[str, type[p.Message]] = {
    "play_command": p.PlayCommand,
    "emergency_command": p.PlayCommand,
    "emergency_until_stopped_command": p.PlayCommand,  # repeat 0: until a STOP
    "stop_command": p.StopCommand,
    "stop_all_command": p.StopCommand,
    "ack_started": p.Ack,
    "ack_failed": p.Ack,
    "availability_online": p.Availability,
    "availability_offline": p.Availability,
    "state": p.DeviceState,
    "telemetry": p.Telemetry,
    "event_alarm": p.Event,
    "event_restore": p.Event,
    "config": p.DeviceConfig,
}


def test_every_fixture_is_checked() -> None:
    assert {f.stem for f in FIXTURES.glob("*.json")} == set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_golden_payload_round_trips_to_the_same_bytes(name: str) -> None:
    raw = (FIXTURES / f"{name}.json").read_text(encoding="utf-8")
    message = p.decode(KINDS[name], raw.encode())
    compact = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":"))
    assert p.encode(message) == compact.encode("utf-8")


@pytest.mark.parametrize("name", ["play_command", "emergency_command", "stop_command"])
def test_commands_decode_by_their_type(name: str) -> None:
    raw = (FIXTURES / f"{name}.json").read_bytes()
    assert type(p.decode_command(raw)) is KINDS[name]


def test_unknown_fields_are_ignored() -> None:
    data = json.loads((FIXTURES / "ack_started.json").read_text())
    data["added_in_a_later_minor_version"] = {"x": 1}
    ack = p.decode(p.Ack, json.dumps(data))
    assert ack.status is p.AckStatus.STARTED


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2, "id": "x", "ts": 1, "type": "stop"}', "unsupported contract version"),
        (b'{"id": "x", "ts": 1, "type": "stop"}', "unsupported contract version"),
        (b'{"v": 1, "id": "x", "ts": 1, "type": "dance"}', "invalid command"),
        (b'{"v": 1, "id": "x", "ts": -5, "type": "stop"}', "ts"),
        (b'{"v": 1, "id": "a b", "ts": 1, "type": "stop"}', "id"),
        (b'{"v": 1, "id": "x", "ts": 1, "type": "play", "priority": "urgent"}', "priority"),
        (b"{" + b'"a":' * 10 + b"1" + b"}" * 10, "not JSON"),
        (b"[" * 60_000, "nested too deeply"),
        (b" " * (p.MAX_PAYLOAD_BYTES + 1), "exceeds"),
    ],
)
def test_bad_commands_raise_protocol_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(p.ProtocolError, match=fragment):
        p.decode_command(payload)


def test_play_command_needs_a_valid_sha256() -> None:
    data = json.loads((FIXTURES / "play_command.json").read_text())
    data["audio"]["sha256"] = "abc"
    with pytest.raises(p.ProtocolError, match=r"audio\.sha256"):
        p.decode_command(json.dumps(data))


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_bytes_either_decode_or_raise_protocol_error(payload: bytes) -> None:
    with contextlib.suppress(p.ProtocolError):
        p.decode_command(payload)
    for channel in p.UPLINK_CHANNELS:
        with contextlib.suppress(p.ProtocolError):
            p.decode_for_channel(channel, payload)


def test_topics() -> None:
    assert p.zone_command_topic("thon-dong") == "loa/v1/zone/thon-dong/cmd"
    assert p.device_topic("loa-01", p.Channel.ACK) == "loa/v1/dev/loa-01/ack"
    assert p.uplink_subscription(p.Channel.EVENT) == "loa/v1/dev/+/event"
    assert p.parse_device_topic("loa/v1/dev/loa-01/state") == ("loa-01", p.Channel.STATE)
    assert p.parse_zone_command_topic("loa/v1/zone/xa-an-binh/cmd") == "xa-an-binh"


@pytest.mark.parametrize(
    "topic",
    ["loa/v2/dev/a/ack", "loa/v1/dev/a/unknown", "loa/v1/dev/A/ack", "loa/v1/dev/a", "x", ""],
)
def test_bad_device_topics(topic: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_device_topic(topic)


@pytest.mark.parametrize("bad", ["", "A", "a/b", "a+", "#", "-a", "a" * 64, "thôn"])
def test_ids_must_be_topic_safe(bad: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.zone_command_topic(bad)


def test_retention_and_qos_are_declared_for_every_channel() -> None:
    assert set(p.QOS) == set(p.Channel)
    assert p.Channel.CMD not in p.RETAINED_CHANNELS  # never retain commands (ghost switching)
    assert p.Channel.AVAILABILITY in p.RETAINED_CHANNELS


def test_priorities_are_ordered() -> None:
    ranks = [p.Priority.SCHEDULED.rank, p.Priority.LIVE.rank, p.Priority.EMERGENCY.rank]
    assert ranks == sorted(ranks)
