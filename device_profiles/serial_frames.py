"""The "loa-fp-v1" serial frames between a fire-point controller and the bridge.

Pure bytes in, readings out: no I/O, no clock. One ASCII line per reading, NMEA-like so it
reads well on a serial console:

    $FP,<seq>,<pressure_bar>,<mains 0|1>,<battery_v>,<temperature_c>*<XOR as 2 hex>\\r\\n

The checksum is the XOR of every byte between '$' and '*'. A measurement left empty means
"not fitted". docs/fire-point.md describes the format for the controller's firmware author.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

log = logging.getLogger(__name__)

PROTOCOL = "loa-fp-v1"
FRAME_TYPE = "FP"
MAX_FRAME_BYTES = 82  # '$' to '\n' inclusive, as NMEA 0183
SEQ_MODULO = 65536

PRESSURE_RANGE_BAR = (0.0, 100.0)
BATTERY_RANGE_V = (0.0, 60.0)
TEMPERATURE_RANGE_C = (-40.0, 125.0)

_NUMBER_RE = re.compile(rb"^-?[0-9]{1,3}(?:\.[0-9]{1,3})?$")
_SEQ_RE = re.compile(rb"^[0-9]{1,5}$")
_HEX = b"0123456789ABCDEFabcdef"

# Kinds of bad frame, as counted by FrameDecoder.errors.
CHECKSUM = "checksum"  # the frame arrived, but its checksum does not match
SYNTAX = "syntax"  # not a well-formed frame (missing '*', wrong field count, not a number...)
RANGE = "range"  # well-formed, but a value is outside what a sensor can report
UNKNOWN_TYPE = "unknown_type"  # a well-formed frame of a type this bridge does not know
OVERLONG = "overlong"  # more than MAX_FRAME_BYTES without an end of line
TRUNCATED = "truncated"  # a new '$' arrived before the frame's end of line
ERROR_KINDS = (CHECKSUM, SYNTAX, RANGE, UNKNOWN_TYPE, OVERLONG, TRUNCATED)


class FrameError(ValueError):
    """A frame that cannot be used; `kind` is one of ERROR_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Reading:
    """One report from the fire-point controller; None where a sensor is not fitted."""

    seq: int
    pressure_bar: float | None = None
    mains_ok: bool | None = None
    battery_v: float | None = None
    temperature_c: float | None = None


def checksum(body: bytes) -> int:
    """XOR of the bytes between '$' and '*'."""
    value = 0
    for byte in body:
        value ^= byte
    return value


def frame(body: str) -> bytes:
    """Wrap a body ("FP,1,7.50,1,13.20,31.0") into a whole frame with its checksum."""
    raw = body.encode("ascii")
    return b"$" + raw + b"*" + f"{checksum(raw):02X}".encode("ascii") + b"\r\n"


def _check_range(name: str, value: float | None, bounds: tuple[float, float]) -> None:
    if value is not None and not bounds[0] <= value <= bounds[1]:
        raise FrameError(RANGE, f"{name} {value} outside {bounds[0]}..{bounds[1]}")


def _check_reading(reading: Reading) -> None:
    if not 0 <= reading.seq < SEQ_MODULO:
        raise FrameError(RANGE, f"seq {reading.seq} outside 0..{SEQ_MODULO - 1}")
    _check_range("pressure_bar", reading.pressure_bar, PRESSURE_RANGE_BAR)
    _check_range("battery_v", reading.battery_v, BATTERY_RANGE_V)
    _check_range("temperature_c", reading.temperature_c, TEMPERATURE_RANGE_C)


def _fmt(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


def encode_reading(reading: Reading) -> bytes:
    """The frame a controller sends for `reading`; FrameError if a value is out of range."""
    _check_reading(reading)
    mains = "" if reading.mains_ok is None else ("1" if reading.mains_ok else "0")
    fields = [
        FRAME_TYPE,
        str(reading.seq),
        _fmt(reading.pressure_bar, 2),
        mains,
        _fmt(reading.battery_v, 2),
        _fmt(reading.temperature_c, 1),
    ]
    return frame(",".join(fields))


def _number(name: str, field: bytes) -> float | None:
    if field == b"":
        return None
    if not _NUMBER_RE.match(field):
        raise FrameError(SYNTAX, f"{name} {field!r} is not a number")
    return float(field)


def parse_frame(line: bytes) -> Reading:
    """One whole frame ('$' to end of line) to a Reading; FrameError says why not."""
    line = line.rstrip(b"\n").rstrip(b"\r")
    if not line.startswith(b"$"):
        raise FrameError(SYNTAX, "frame does not start with '$'")
    star = line.rfind(b"*")
    if star < 0 or len(line) - star != 3:
        raise FrameError(SYNTAX, "frame does not end with '*' and two hex digits")
    body, digits = line[1:star], line[star + 1 :]
    if not all(d in _HEX for d in digits):
        raise FrameError(SYNTAX, f"checksum {digits!r} is not hex")
    expected = checksum(body)
    if int(digits, 16) != expected:
        raise FrameError(CHECKSUM, f"checksum {digits!r}, computed {expected:02X}")
    fields = body.split(b",")
    if fields[0] != FRAME_TYPE.encode("ascii"):
        raise FrameError(UNKNOWN_TYPE, f"frame type {fields[0][:8]!r}")
    if len(fields) != 6:
        raise FrameError(SYNTAX, f"{len(fields)} fields, expected 6")
    _, seq, pressure, mains, battery, temperature = fields
    if not _SEQ_RE.match(seq):
        raise FrameError(SYNTAX, f"seq {seq!r} is not a number")
    if mains not in (b"", b"0", b"1"):
        raise FrameError(SYNTAX, f"mains {mains!r} is not 0 or 1")
    reading = Reading(
        seq=int(seq),
        pressure_bar=_number("pressure_bar", pressure),
        mains_ok=None if mains == b"" else mains == b"1",
        battery_v=_number("battery_v", battery),
        temperature_c=_number("temperature_c", temperature),
    )
    _check_reading(reading)
    return reading


class FrameDecoder:
    """Incremental: feed() whatever bytes arrived, get the readings they completed.

    Never raises on any input. Bytes outside a frame are skipped (counted in noise_bytes);
    a bad frame is dropped, counted by kind in `errors` and logged (every one at DEBUG, the
    1st, 10th, 100th... of each kind at WARNING, so a noisy line cannot flood the log).
    The buffer never holds more than MAX_FRAME_BYTES between calls.
    """

    def __init__(self, source: str = "serial") -> None:
        self.source = source
        self.errors: Counter[str] = Counter()
        self.frames = 0
        self.noise_bytes = 0
        self.seq_gaps = 0  # frames lost on the way, or the controller restarted
        self._buffer = bytearray()
        self._last_seq: int | None = None

    @property
    def bad_frames(self) -> int:
        return sum(self.errors.values())

    def feed(self, data: bytes) -> list[Reading]:
        self._buffer += data
        readings: list[Reading] = []
        while self._buffer:
            line = self._next_line()
            if line is None:
                break
            try:
                reading = parse_frame(line)
            except FrameError as exc:
                self._bad(exc.kind, str(exc), line)
                continue
            self._count_good(reading)
            readings.append(reading)
        return readings

    def _next_line(self) -> bytes | None:
        """Cut the next complete candidate frame off the buffer; None: need more bytes."""
        buf = self._buffer
        while buf:
            start = buf.find(b"$")
            if start < 0:
                self.noise_bytes += len(buf)
                buf.clear()
                return None
            if start > 0:
                self.noise_bytes += start
                del buf[:start]
            end = buf.find(b"\n")
            restart = buf.find(b"$", 1)
            if restart >= 0 and (end < 0 or restart < end):
                self._bad(TRUNCATED, "a new frame began before the end of line", buf[:restart])
                del buf[:restart]
                continue
            if end < 0:
                if len(buf) > MAX_FRAME_BYTES:
                    self._bad(OVERLONG, f"no end of line within {MAX_FRAME_BYTES} bytes", buf)
                    buf.clear()
                return None
            if end + 1 > MAX_FRAME_BYTES:
                self._bad(OVERLONG, f"frame of {end + 1} bytes", buf[: end + 1])
                del buf[: end + 1]
                continue
            line = bytes(buf[: end + 1])
            del buf[: end + 1]
            return line
        return None

    def _count_good(self, reading: Reading) -> None:
        self.frames += 1
        if self._last_seq is not None and reading.seq != (self._last_seq + 1) % SEQ_MODULO:
            self.seq_gaps += 1
        self._last_seq = reading.seq

    def _bad(self, kind: str, why: str, raw: bytes | bytearray) -> None:
        self.errors[kind] += 1
        count = self.errors[kind]
        level = logging.WARNING if _is_power_of_ten(count) else logging.DEBUG
        log.log(
            level,
            "%s: dropped bad frame (%s #%d): %s: %r",
            self.source,
            kind,
            count,
            why,
            bytes(raw[:MAX_FRAME_BYTES]),
        )

    def counters(self) -> dict[str, int]:
        """Counts for telemetry, prefixed 'serial_'."""
        out = {f"serial_bad_{kind}": n for kind, n in self.errors.items() if n}
        out["serial_frames"] = self.frames
        if self.noise_bytes:
            out["serial_noise_bytes"] = self.noise_bytes
        if self.seq_gaps:
            out["serial_seq_gaps"] = self.seq_gaps
        return out


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1
