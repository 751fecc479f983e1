"""The wire contract's decoders (device_profiles/protocol.py), both sides' first line: any
bytes on any topic either decode into a valid message or raise ProtocolError, never
anything else; a topic either parses or raises ProtocolError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from device_profiles import protocol as p
from tests.fuzz.strategies import (
    NASTY_TEXT,
    ODD_IDS,
    json_bytes,
    json_values,
    mutated,
    raw_bytes,
)
from tests.fuzz.tally import Tally, fuzz_settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "protocol"
# Per channel (and the command topics): a valid payload to mutate and to send afterwards.
VALID = {
    "cmd": ["play_command", "emergency_until_stopped_command", "stop_command"],
    p.Channel.ACK: ["ack_started", "ack_failed"],
    p.Channel.AVAILABILITY: ["availability_online"],
    p.Channel.STATE: ["state"],
    p.Channel.TELEMETRY: ["telemetry"],
    p.Channel.EVENT: ["event_alarm", "event_restore"],
    p.Channel.CONFIG: ["config"],
}
DEVICE_CHANNELS = [c for c in VALID if isinstance(c, p.Channel)]
# The regression: an integer of more than 4300 digits made json.loads raise a plain
# ValueError, which escaped decode() (the console's ingest writer thread died of it).
HUGE_INT_PAYLOAD = b'{"v":1,"id":"x","ts":' + b"9" * 5000 + b"}"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def bad_payloads(names: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        raw_bytes,
        json_bytes(json_values()),
        json_bytes(st.sampled_from(names).map(fixture).flatmap(mutated)),
    )


def decode(channel: p.Channel | str, payload: bytes) -> p.Message | p.PlayCommand | p.StopCommand:
    if channel == "cmd":
        return p.decode_command(payload)
    assert isinstance(channel, p.Channel)
    return p.decode_for_channel(channel, payload)


@pytest.mark.parametrize("channel", list(VALID), ids=lambda c: str(c))
def test_any_payload_decodes_or_raises_protocol_error(
    tally: Tally, channel: p.Channel | str
) -> None:
    names = VALID[channel]
    good = json.dumps(fixture(names[0])).encode()

    @fuzz_settings()
    @given(payload=bad_payloads(names))
    @example(payload=HUGE_INT_PAYLOAD)
    @example(payload=b"[" * 100_000)
    @example(payload=b'{"v":1,"id":"x","ts":1,"device_id":"loa-1","state":"online","x":"\\ud800"}')
    def run(payload: bytes) -> None:
        with tally.case(f"wire: {channel} payload") as case:
            try:
                message = decode(channel, payload)
            except p.ProtocolError as exc:
                assert str(exc)
                case.refused()
            else:
                p.encode(message)  # whatever is accepted can be logged and sent on
                case.accepted()
        assert decode(channel, good) is not None  # a good payload still decodes

    run()


@given(topic=st.one_of(
    st.text(max_size=80),
    st.builds("loa/v1/dev/{}/{}".format, st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True),
              st.sampled_from([*p.Channel, "x"])),
    st.builds("loa/v1/zone/{}/cmd".format, st.from_regex(r"[a-z0-9-]{0,70}", fullmatch=True)),
    st.sampled_from(NASTY_TEXT[:-3]).map(lambda s: f"loa/v1/dev/{s}/ack"),
    st.builds(
        "/".join,
        st.lists(st.sampled_from(["loa", "v1", "dev", "zone", "cmd", "ack", "+", "#", "", *ODD_IDS]),
                 max_size=7),
    ),
))  # fmt: skip
@fuzz_settings()
def test_topics_parse_or_raise_protocol_error(tally: Tally, topic: str) -> None:
    for name, parse in (
        ("wire: device topic", p.parse_device_topic),
        ("wire: zone command topic", p.parse_zone_command_topic),
    ):
        with tally.case(name) as case:
            try:
                parsed = parse(topic)
            except p.ProtocolError:
                case.refused()
            else:
                ids = parsed if isinstance(parsed, str) else parsed[0]
                assert "/" not in ids and "+" not in ids and "#" not in ids and ".." not in ids
                case.accepted()
    assert p.parse_device_topic("loa/v1/dev/loa-01/ack") == ("loa-01", p.Channel.ACK)
