"""The bridge: every topic it reads (zone commands, its own commands, its retained config)
and the serial line of the fire-point controller. Bad input is dropped and counted
(malformed_command, malformed_config, serial_bad_*), the core's loop keeps running in its
own thread, and a good command or frame afterwards is still handled."""

from __future__ import annotations

import copy
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import serial
from hypothesis import example, given
from hypothesis import strategies as st

from device_profiles import protocol as p
from device_profiles.profiles import load_profile
from device_profiles.serial_frames import MAX_FRAME_BYTES, FrameDecoder, Reading, encode_reading
from firmware_bridge.core import BridgeCore, CommandPayload, ConfigPayload, Ping, Ports, Shutdown
from firmware_bridge.firepoint import FirePointEvent, ReadingReceived
from firmware_bridge.serial_port import SerialReader
from tests.conftest import wait_for
from tests.firmware_bridge.fakes import (
    FakeClock,
    FakeDiagnostics,
    FakeFetcher,
    FakeLink,
    FakePlayer,
    FakeRelay,
)
from tests.fuzz.strategies import json_bytes, json_values, mutated, raw_bytes
from tests.fuzz.tally import Tally, fuzz_settings

SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
DEVICE = "loa-fz1"
ZONE_TOPIC = p.zone_command_topic("thon-fz")
DEVICE_TOPIC = p.device_topic(DEVICE, p.Channel.CMD)
WAIT_S = 30.0  # generous: the machine is shared
_ids = itertools.count()


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@dataclass
class RunningCore:
    """A BridgeCore with typed fakes, running its real loop (`run()`) on its own thread."""

    core: BridgeCore
    clock: FakeClock
    link: FakeLink
    thread: threading.Thread

    def settle(self) -> None:
        """Wait until the loop has handled everything posted so far."""
        answered = threading.Event()
        self.core.post(Ping(answered))
        assert answered.wait(WAIT_S), "the core's loop no longer answers"
        assert self.thread.is_alive()
        wait_s = self.core._next_timer_s()  # what the idle loop will wait: a valid timeout
        assert wait_s is None or 0 <= wait_s <= threading.TIMEOUT_MAX

    def counter(self, name: str) -> int:
        return int(self.core.counters.get(name, 0))

    def play(self, command_id: str) -> bytes:
        now = self.clock.now_ms()
        return p.encode(
            p.PlayCommand(
                id=command_id, ts=now, priority=p.Priority.EMERGENCY,
                audio=p.AudioRef(url=f"http://console/media/{SHA}.mp3", sha256=SHA, duration_ms=1000),
                expires_at=now + 600_000,
            )
        )  # fmt: skip

    def stop_all(self) -> bytes:
        return p.encode(p.StopCommand(id=fresh_id("stop"), ts=self.clock.now_ms()))

    def good_command_still_handled(self) -> None:
        """A STOP clears whatever the bad input queued; then a good emergency is received."""
        command_id = fresh_id("good")
        self.core.post(CommandPayload(ZONE_TOPIC, self.stop_all()))
        self.core.post(CommandPayload(ZONE_TOPIC, self.play(command_id)))
        self.settle()
        statuses = [s for _, s, _ in self.link.acks(command_id)]
        assert "received" in statuses, statuses
        assert self.counter("internal_error") == 0


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningCore]:
    audio = tmp_path / f"{SHA}.mp3"
    audio.write_bytes(b"ID3")
    clock, link = FakeClock(), FakeLink()
    core = BridgeCore(
        DEVICE,
        load_profile("combined-node"),
        ["thon-fz", "xa-fz"],
        Ports(link=link, player=FakePlayer(), relay=FakeRelay(), fetcher=FakeFetcher(files={SHA: audio}),
              diagnostics=FakeDiagnostics(), siren=FakeRelay()),
        clock,
    )  # fmt: skip
    thread = threading.Thread(target=core.run, name="core-fuzz", daemon=True)
    thread.start()
    yield RunningCore(core, clock, link, thread)
    core.post(Shutdown())
    thread.join(WAIT_S)


def valid_command(now_ms: int, name: str) -> dict[str, Any]:
    """A command the core accepts, as the console sends it now."""
    base: dict[str, Any] = {"v": 1, "id": fresh_id("cmd"), "ts": now_ms}
    if name == "stop":
        return {**base, "type": "stop", "target_id": "s12-20261128T000000Z"}
    return {
        **base, "type": "play", "priority": name,
        "audio": {"url": f"http://console/media/{SHA}.mp3", "sha256": SHA, "duration_ms": 41250,
                  "bytes": 330412},
        "volume_pct": 80, "play_at": now_ms + 2000, "expires_at": now_ms + 120_000,
        "gong": True, "repeat": 1, "title": "Bản tin sáng",
    }  # fmt: skip


VALID_CONFIG: dict[str, Any] = {
    "v": 1, "id": "1e9a3b8c7d6f2e0a6b5c4d3e2f1a0b9c", "ts": 1_800_000_000_000, "version": 3,
    "zones": ["thon-fz", "xa-fz"], "volume_pct": 80,
    "presets": [{"url": f"http://console/media/{SHA}.mp3", "sha256": SHA, "duration_ms": 15000,
                 "name": "gong"}],
}  # fmt: skip
NOW_MS = FakeClock().t_ms
# A timer due at the end of the wire's time range: the idle loop must still wait validly
# (the telemetry timer keeps its wait short).
FAR_FUTURE = json.dumps(
    {**valid_command(NOW_MS, "scheduled"), "play_at": 2**53, "expires_at": 2**53}
).encode()

commands = st.one_of(
    raw_bytes,
    json_bytes(json_values()),
    json_bytes(
        st.sampled_from(["scheduled", "live", "emergency", "stop"])
        .map(lambda name: valid_command(NOW_MS, name))
        .flatmap(mutated)
    ),
)


def test_bad_commands_on_zone_and_device_topics_are_counted(
    tally: Tally, running: RunningCore
) -> None:
    @fuzz_settings()
    @given(payload=commands, topic=st.sampled_from([ZONE_TOPIC, DEVICE_TOPIC]))
    @example(payload=FAR_FUTURE, topic=ZONE_TOPIC)
    @example(payload=b'{"v":1,"id":"x","ts":' + b"9" * 5000 + b"}", topic=DEVICE_TOPIC)
    def run(payload: bytes, topic: str) -> None:
        with tally.case(f"bridge: {'zone' if 'zone' in topic else 'device'} command") as case:
            before = running.counter("malformed_command")
            running.core.post(CommandPayload(topic, payload))
            running.settle()
            if running.counter("malformed_command") == before + 1:
                case.dropped()
            else:
                assert running.counter("malformed_command") == before
                case.accepted()
            running.good_command_still_handled()

    run()


def test_bad_retained_config_is_counted(tally: Tally, running: RunningCore) -> None:
    configs = st.one_of(raw_bytes, json_bytes(json_values()), json_bytes(mutated(VALID_CONFIG)))

    @fuzz_settings()
    @given(payload=configs)
    def run(payload: bytes) -> None:
        with tally.case("bridge: config") as case:
            before = running.counter("malformed_config")
            running.core.post(ConfigPayload(payload))
            running.settle()
            if running.counter("malformed_config") == before + 1:
                case.dropped()
            else:
                assert running.counter("malformed_config") == before
                case.accepted()
            running.good_command_still_handled()
        # The good config still applies after the bad one.
        running.core.post(ConfigPayload(json.dumps(VALID_CONFIG).encode()))
        running.settle()
        assert running.core.config_version == VALID_CONFIG["version"]

    run()


# --- the serial line of the fire-point controller -------------------------------------------

readings = st.builds(
    Reading,
    seq=st.integers(0, 65535),
    pressure_bar=st.none() | st.floats(0, 100).map(lambda x: round(x, 2)),
    mains_ok=st.none() | st.booleans(),
    battery_v=st.none() | st.floats(0, 60).map(lambda x: round(x, 2)),
    temperature_c=st.none() | st.floats(-40, 125).map(lambda x: round(x, 1)),
)


@st.composite
def noisy_line(draw: st.DrawFn) -> bytes:
    """Valid frames, mutated the way a noisy serial line does: bytes flipped, dropped,
    inserted, frames cut, glued, overlong, or plain noise."""
    frames = [encode_reading(r) for r in draw(st.lists(readings, min_size=1, max_size=4))]
    data = bytearray(b"".join(frames))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "drop", "insert", "cut", "dollar", "noise", "long"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "drop" and data:
            del data[at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "cut":
            del data[at:]
        elif kind == "dollar":
            data[at:at] = b"$"
        elif kind == "noise":
            data[at:at] = draw(st.binary(max_size=200))
        elif kind == "long":
            data[at:at] = b"$FP," + b"1," * MAX_FRAME_BYTES
    return bytes(data)


def test_noisy_serial_frames_are_counted_and_a_good_frame_still_reads(tally: Tally) -> None:
    """The decoder's own accounting: every frame is either read or counted by kind; noise
    between frames is counted; the buffer stays bounded; the next good frame reads."""
    decoder = FrameDecoder(source="fuzz")
    good_seq = itertools.count()

    @fuzz_settings(scale=2)
    @given(data=noisy_line(), split=st.integers(1, 64))
    def run(data: bytes, split: int) -> None:
        with tally.case("bridge: serial frames (decoder)") as case:
            bad_before, read_before = decoder.bad_frames, decoder.frames
            got: list[Reading] = []
            for start in range(0, len(data), split):
                got += decoder.feed(data[start : start + split])
                assert len(decoder._buffer) <= MAX_FRAME_BYTES + 1
            assert decoder.frames - read_before == len(got)
            if got and decoder.bad_frames == bad_before:
                case.accepted()
            elif decoder.bad_frames > bad_before:
                case.dropped()
            else:
                case.refused()  # noise only, or a frame still waiting for its end of line
        seq = next(good_seq) % 65536
        # End whatever partial frame is pending, then a good frame must read.
        out = decoder.feed(b"\r\n" + encode_reading(Reading(seq=seq, mains_ok=True)))
        assert [r.seq for r in out][-1:] == [seq]

    run()


class LoopPort:
    """pyserial's loop:// port: what the test writes, the reader reads."""

    def __init__(self) -> None:
        self.port = serial.serial_for_url("loop://", timeout=0.2)

    def open(self) -> Any:
        return self.port


def test_the_serial_reader_thread_survives_noise(tally: Tally) -> None:
    """The whole reader: bytes through a real pyserial port into the reader's thread."""
    posted: list[FirePointEvent] = []
    loop = LoopPort()
    reader = SerialReader("loop://", 9600, posted.append, opener=loop.open)
    reader.start()
    seqs = itertools.count(1)
    try:

        @fuzz_settings(scale=0.3)
        @given(data=noisy_line())
        def run(data: bytes) -> None:
            with tally.case("bridge: serial reader thread") as case:
                before = sum(v for k, v in reader.counters().items() if k.startswith("serial_bad_"))
                seq = next(seqs) % 65536
                loop.port.write(data + b"\r\n" + encode_reading(Reading(seq=seq, battery_v=12.5)))

                def arrived() -> bool:
                    return any(
                        isinstance(e, ReadingReceived) and e.reading.seq == seq for e in posted[-8:]
                    )

                wait_for(arrived, WAIT_S, f"the good frame {seq} after the noise")
                counts = reader.counters()
                assert counts.get("serial_internal_error", 0) == 0
                bad = sum(v for k, v in counts.items() if k.startswith("serial_bad_"))
                if bad > before:
                    case.dropped()
                else:
                    case.accepted()

        run()
    finally:
        reader.stop()
        loop.port.close()


def test_any_valid_reading_keeps_the_fire_point_core_working(
    tally: Tally, running: RunningCore
) -> None:
    """What the decoder lets through (any in-range reading) never trips the core."""

    @fuzz_settings()
    @given(reading=readings)
    def run(reading: Reading) -> None:
        with tally.case("bridge: fire-point readings") as case:
            running.core.post(ReadingReceived(copy.copy(reading)))
            running.settle()
            assert running.counter("internal_error") == 0
            case.accepted()

    run()
