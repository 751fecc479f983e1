"""The "loa-fp-v1" serial frames: round trips, every kind of bad frame, resynchronisation,
and a fuzz of the incremental decoder (it never raises, it counts what it drops)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles import serial_frames as sf
from device_profiles.serial_frames import FrameDecoder, FrameError, Reading


def _with_checksum(body: bytes) -> bytes:
    return b"$" + body + b"*" + f"{sf.checksum(body):02X}".encode() + b"\r\n"


GOOD = Reading(seq=7, pressure_bar=7.8, mains_ok=True, battery_v=13.2, temperature_c=31.5)


def test_a_frame_is_readable_on_a_serial_console() -> None:
    assert sf.encode_reading(GOOD) == b"$FP,7,7.80,1,13.20,31.5*1A\r\n"
    assert sf.checksum(b"FP,7,7.80,1,13.20,31.5") == 0x1A


def test_round_trip() -> None:
    assert sf.parse_frame(sf.encode_reading(GOOD)) == GOOD
    decoder = FrameDecoder()
    assert decoder.feed(sf.encode_reading(GOOD)) == [GOOD]
    assert decoder.frames == 1 and decoder.bad_frames == 0


def test_sensors_not_fitted_are_empty_fields() -> None:
    bare = Reading(seq=0)
    assert sf.encode_reading(bare) == sf.frame("FP,0,,,,")
    assert sf.parse_frame(sf.frame("FP,0,,,,")) == bare


@pytest.mark.parametrize(
    "reading",
    [
        Reading(seq=0, pressure_bar=0.0, mains_ok=False, battery_v=0.0, temperature_c=-40.0),
        Reading(seq=65535, pressure_bar=100.0, mains_ok=True, battery_v=60.0, temperature_c=125.0),
        Reading(seq=12, temperature_c=-0.5),
    ],
)
def test_limits_round_trip(reading: Reading) -> None:
    assert sf.parse_frame(sf.encode_reading(reading)) == reading


def test_lower_case_checksum_and_bare_newline_are_accepted() -> None:
    line = sf.encode_reading(GOOD)
    assert sf.parse_frame(line[:-4] + line[-4:-2].lower() + b"\n") == GOOD


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (sf.encode_reading(GOOD)[:-4] + b"00\r\n", sf.CHECKSUM),
        (b"$FP,7,7.80,1,13.20,31.5\r\n", sf.SYNTAX),  # no checksum
        (b"$FP,7,7.80,1,13.20,31.5*0\r\n", sf.SYNTAX),
        (b"$FP,7,7.80,1,13.20,31.5*ZZ\r\n", sf.SYNTAX),
        (sf.frame("FP,7,7.80,1,13.20"), sf.SYNTAX),  # a field short
        (sf.frame("FP,7,7.80,1,13.20,31.5,9"), sf.SYNTAX),
        (sf.frame("FP,x,7.80,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,7.8.0,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,nan,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,1e1,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,1_0,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7, 7.8,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,7.80,2,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,123456,7.80,1,13.20,31.5"), sf.SYNTAX),
        (sf.frame("FP,7,-1.00,1,13.20,31.5"), sf.RANGE),
        (sf.frame("FP,7,7.80,1,61.00,31.5"), sf.RANGE),
        (sf.frame("FP,7,7.80,1,13.20,-41"), sf.RANGE),
        (sf.frame("FP,70000,7.80,1,13.20,31.5"), sf.RANGE),
        (sf.frame("GP,7,7.80,1,13.20,31.5"), sf.UNKNOWN_TYPE),
        (_with_checksum("FP,7,7.8\u00b0,1,13.20,31.5".encode()), sf.SYNTAX),  # not ASCII
    ],
)
def test_each_bad_frame_is_refused_with_its_kind(line: bytes, kind: str) -> None:
    with pytest.raises(FrameError) as caught:
        sf.parse_frame(line)
    assert caught.value.kind == kind
    decoder = FrameDecoder()
    assert decoder.feed(line + sf.encode_reading(GOOD)) == [GOOD]
    assert decoder.errors == {kind: 1}


def test_encoding_refuses_what_no_sensor_reports() -> None:
    with pytest.raises(FrameError, match="pressure_bar"):
        sf.encode_reading(Reading(seq=1, pressure_bar=101.0))
    with pytest.raises(FrameError, match="seq"):
        sf.encode_reading(Reading(seq=-1))


def test_frames_split_anywhere_are_joined() -> None:
    stream = b"".join(sf.encode_reading(Reading(seq=i, pressure_bar=7.0 + i)) for i in range(3))
    decoder = FrameDecoder()
    got = [r for byte in stream for r in decoder.feed(bytes([byte]))]
    assert [r.seq for r in got] == [0, 1, 2] and decoder.bad_frames == 0


def test_resynchronises_after_noise() -> None:
    decoder = FrameDecoder()
    noise = b"\x00\xff\r\n garbage $$FP,1,2* $FP,7,7.80,1,13"  # the last frame is cut short
    got = decoder.feed(noise + sf.encode_reading(GOOD) + b"\xfe\xfe" + sf.encode_reading(GOOD))
    assert got == [GOOD, GOOD]
    assert decoder.errors[sf.TRUNCATED] == 3  # "$", "$FP,1,2* " and "$FP,7,7.80,1,13"
    assert decoder.noise_bytes == len(b"\x00\xff\r\n garbage ") + 2


def test_an_overlong_line_is_dropped_and_the_buffer_stays_bounded() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"$" + b"9" * 10_000) == []
    assert decoder.errors[sf.OVERLONG] == 1
    assert len(decoder._buffer) <= sf.MAX_FRAME_BYTES
    assert decoder.feed(b"\r\n" + sf.encode_reading(GOOD)) == [GOOD]
    long_line = b"$FP," + b"1" * 100 + b"\r\n"
    assert decoder.feed(long_line + sf.encode_reading(GOOD)) == [GOOD]
    assert decoder.errors[sf.OVERLONG] == 2


def test_sequence_gaps_are_counted() -> None:
    decoder = FrameDecoder()
    for seq in (65534, 65535, 0, 2):  # wraps, then loses frame 1
        decoder.feed(sf.encode_reading(Reading(seq=seq)))
    assert decoder.seq_gaps == 1
    assert decoder.counters() == {"serial_frames": 4, "serial_seq_gaps": 1}


def test_bad_frames_are_logged_without_flooding(caplog: pytest.LogCaptureFixture) -> None:
    decoder = FrameDecoder(source="test-port")
    bad = sf.encode_reading(GOOD)[:-4] + b"00\r\n"
    with caplog.at_level(logging.DEBUG, logger="device_profiles.serial_frames"):
        decoder.feed(bad * 150)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split("#")[1].split(")")[0] for r in warnings] == ["1", "10", "100"]
    assert len(caplog.records) == 150 and "test-port" in warnings[0].getMessage()
    assert decoder.counters()["serial_bad_checksum"] == 150


# --- fuzz ---------------------------------------------------------------------------------


def _hundredths(low: float, high: float) -> st.SearchStrategy[float | None]:
    return st.none() | st.integers(int(low * 100), int(high * 100)).map(lambda n: n / 100)


readings = st.builds(
    Reading,
    seq=st.integers(0, sf.SEQ_MODULO - 1),
    pressure_bar=_hundredths(*sf.PRESSURE_RANGE_BAR),
    mains_ok=st.none() | st.booleans(),
    battery_v=_hundredths(*sf.BATTERY_RANGE_V),
    temperature_c=_hundredths(*sf.TEMPERATURE_RANGE_C),
)
any_readings = st.builds(  # any float in range, rounded on the way
    Reading,
    seq=st.integers(0, sf.SEQ_MODULO - 1),
    pressure_bar=st.none() | st.floats(*sf.PRESSURE_RANGE_BAR),
    battery_v=st.none() | st.floats(*sf.BATTERY_RANGE_V),
    temperature_c=st.none() | st.floats(*sf.TEMPERATURE_RANGE_C),
)


POOL = [  # valid frames to mutate: the mutations are what this fuzz is about
    GOOD,
    Reading(seq=0),
    Reading(seq=65535, pressure_bar=100.0, mains_ok=False, battery_v=60.0, temperature_c=-40.0),
    Reading(seq=42, pressure_bar=6.5, mains_ok=True, battery_v=11.5, temperature_c=75.0),
    Reading(seq=9, pressure_bar=0.0, battery_v=12.41),
]


def _check_invariants(decoder: FrameDecoder, got: list[Reading]) -> None:
    assert all(isinstance(r, Reading) for r in got)
    assert len(decoder._buffer) <= sf.MAX_FRAME_BYTES
    assert set(decoder.errors) <= set(sf.ERROR_KINDS)


@given(st.lists(st.binary(max_size=200), max_size=8))
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_arbitrary_bytes_never_raise(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    got = [r for chunk in chunks for r in decoder.feed(chunk)]
    _check_invariants(decoder, got)


@given(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=5),
    st.lists(st.integers(0, 200), max_size=3),
    st.integers(1, 64),
)
@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_frames_never_raise_and_are_counted(
    frames: list[Reading], flips: list[tuple[int, int]], cuts: list[int], chunk: int
) -> None:
    stream = bytearray(b"".join(sf.encode_reading(r) for r in frames))
    for pos, value in flips:
        if pos < len(stream):
            stream[pos] = value
    for pos in sorted(cuts, reverse=True):
        del stream[pos : pos + 3]
    decoder = FrameDecoder()
    got = [
        r for i in range(0, len(stream), chunk) for r in decoder.feed(bytes(stream[i : i + chunk]))
    ]
    _check_invariants(decoder, got)
    if not flips and not cuts:
        assert len(got) == len(frames) and decoder.bad_frames == 0
    else:  # every frame either decoded, was dropped and counted, or is still incomplete
        assert len(got) + decoder.bad_frames + 1 >= len(frames) - len(cuts) - len(flips)


@given(any_readings)
@settings(max_examples=500, deadline=None)
def test_fuzz_every_reading_round_trips(reading: Reading) -> None:
    [decoded] = FrameDecoder().feed(sf.encode_reading(reading))
    assert decoded == sf.parse_frame(sf.encode_reading(decoded))  # stable after one rounding
    for name in ("pressure_bar", "battery_v", "temperature_c"):
        sent, got = getattr(reading, name), getattr(decoded, name)
        assert (sent is None and got is None) or abs(sent - got) <= 0.05
