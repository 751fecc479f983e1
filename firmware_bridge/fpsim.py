"""A simulated fire-point controller: sends "loa-fp-v1" frames on a serial port or pty.

    python -m firmware_bridge.fpsim --port /dev/pts/N [--interval-ms 1000] [--pressure 7.8]
    python -m firmware_bridge.fpsim --fd N            (a file descriptor it inherited)

It reads line commands on stdin and answers each with one line on stdout ("ok ..." or
"error: ..."); it exits when stdin closes, so it never outlives the bridge that started it.
Commands: pressure BAR | mains on|off | battery VOLTS | temp CELSIUS (each also "none":
sensor not fitted), interval MS, silent, resume, send, noise [BYTES], raw BODY, status,
quit. docs/fire-point.md describes them. `fire_adapters.SimulatedController` runs it on a
fresh pty for `--simulate` and the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import selectors
import sys
import termios
import time
import tty
from dataclasses import dataclass, replace

from device_profiles.serial_frames import SEQ_MODULO, FrameError, Reading, encode_reading, frame

DEFAULT_INTERVAL_MS = 1000
NOISE_BYTES = 64


@dataclass
class ControllerState:
    """What the simulated controller measures and how it behaves."""

    reading: Reading
    interval_ms: int = DEFAULT_INTERVAL_MS
    silent: bool = False

    def next_frame(self) -> bytes:
        frame_bytes = encode_reading(self.reading)
        self.reading = replace(self.reading, seq=(self.reading.seq + 1) % SEQ_MODULO)
        return frame_bytes


def _value(text: str) -> float | None:
    return None if text == "none" else float(text)


def apply_command(state: ControllerState, line: str, rng: random.Random) -> tuple[str, bytes]:
    """One stdin command: (the reply line, the bytes to send at once)."""
    words = line.split()
    if not words:
        return "error: empty command", b""
    name, args = words[0].lower(), words[1:]
    try:
        if name in ("pressure", "battery", "temp") and len(args) == 1:
            value = _value(args[0])
            if name == "pressure":
                candidate = replace(state.reading, pressure_bar=value)
            elif name == "battery":
                candidate = replace(state.reading, battery_v=value)
            else:
                candidate = replace(state.reading, temperature_c=value)
            encode_reading(candidate)  # refuse what a sensor could not report
            state.reading = candidate
        elif name == "mains" and len(args) == 1 and args[0] in ("on", "off", "none"):
            mains = None if args[0] == "none" else args[0] == "on"
            state.reading = replace(state.reading, mains_ok=mains)
        elif name == "interval" and len(args) == 1 and 10 <= int(args[0]) <= 3_600_000:
            state.interval_ms = int(args[0])
        elif name in ("silent", "resume") and not args:
            state.silent = name == "silent"
        elif name == "send" and not args:
            return "ok send", state.next_frame()
        elif name == "noise" and len(args) <= 1:
            count = int(args[0]) if args else NOISE_BYTES
            if not 0 <= count <= 4096:
                return "error: noise takes 0..4096 bytes", b""
            good = state.next_frame()
            bad = good[:-4] + (b"00" if good[-4:-2] != b"00" else b"FF") + b"\r\n"
            return f"ok noise {count}", rng.randbytes(count) + bad
        elif name == "raw" and args:
            return "ok raw", frame(" ".join(args))
        elif name == "status" and not args:
            pass
        else:
            return f"error: unknown command {line.strip()!r}", b""
    except (ValueError, FrameError, UnicodeEncodeError) as exc:
        return f"error: {exc}", b""
    return f"ok {describe(state)}", b""


def describe(state: ControllerState) -> str:
    r = state.reading
    return (
        f"seq={r.seq} pressure={r.pressure_bar} mains={r.mains_ok} battery={r.battery_v} "
        f"temp={r.temperature_c} interval_ms={state.interval_ms} silent={state.silent}"
    )


# --- the program --------------------------------------------------------------------------


def _write(fd: int, data: bytes) -> None:
    """Like a UART: what cannot be sent now (no reader on the other end) is lost."""
    if data:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(fd, data)


def run(fd: int, state: ControllerState, stdin_fd: int = 0) -> int:
    rng = random.Random()
    selector = selectors.DefaultSelector()
    selector.register(stdin_fd, selectors.EVENT_READ)
    pending = b""
    next_at = time.monotonic()
    while True:
        timeout = max(0.0, next_at - time.monotonic())
        if selector.select(timeout):
            chunk = os.read(stdin_fd, 4096)
            if not chunk:
                return 0  # stdin closed: whoever drove us is gone
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if line.lower() == "quit":
                    print("ok quit", flush=True)
                    return 0
                reply, data = apply_command(state, line, rng)
                _write(fd, data)
                if line.split()[:1] == ["interval"] and reply.startswith("ok"):
                    next_at = time.monotonic() + state.interval_ms / 1000
                print(reply, flush=True)
        now = time.monotonic()
        if now >= next_at:
            if not state.silent:
                _write(fd, state.next_frame())
            next_at = max(next_at + state.interval_ms / 1000, now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.fpsim", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device or pty to write frames to")
    where.add_argument("--fd", type=int, help="an inherited file descriptor to write to")
    parser.add_argument("--interval-ms", type=int, default=DEFAULT_INTERVAL_MS)
    parser.add_argument("--pressure", type=float, default=7.8, help="bar")
    parser.add_argument("--mains", choices=["on", "off"], default="on")
    parser.add_argument("--battery", type=float, default=13.2, help="volts")
    parser.add_argument("--temp", type=float, default=30.0, help="degrees Celsius")
    args = parser.parse_args(argv)
    reading = Reading(
        seq=0,
        pressure_bar=args.pressure,
        mains_ok=args.mains == "on",
        battery_v=args.battery,
        temperature_c=args.temp,
    )
    try:
        encode_reading(reading)
    except FrameError as exc:
        parser.error(str(exc))
    fd = args.fd if args.fd is not None else os.open(args.port, os.O_RDWR | os.O_NOCTTY)
    with contextlib.suppress(termios.error):
        tty.setraw(fd)  # no echo, no line editing: bytes go out as they are
    os.set_blocking(fd, False)
    try:
        return run(fd, ControllerState(reading, interval_ms=max(10, args.interval_ms)))
    except KeyboardInterrupt:
        return 0
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
