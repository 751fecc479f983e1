"""Coverage-guided fuzzing (atheris, libFuzzer) of the pure byte decoders both sides share:
the wire contract's payloads and topics, and the fire-point controller's serial frames.

    python -m tests.fuzz.atheris_targets wire -runs=100000
    python -m tests.fuzz.atheris_targets serial -max_total_time=600

Anything but the decoder's own error is a crash: libFuzzer stops, prints the input and
saves it as crash-<sha1> in the working folder. tests/fuzz/test_atheris.py runs a bounded
number of runs of each target (atheris is optional: `pip install atheris`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris
import pydantic  # noqa: F401  (imported first: only the project's modules are instrumented)

with atheris.instrument_imports():
    from device_profiles import protocol
    from device_profiles.serial_frames import FrameDecoder, FrameError, parse_frame


def wire(data: bytes) -> None:
    """Every channel's decoder and the command decoder, on the same bytes."""
    for decode in [protocol.decode_command] + [
        (lambda payload, ch=ch: protocol.decode_for_channel(ch, payload))
        for ch in protocol.UPLINK_MODELS
    ]:
        try:
            message = decode(data)
        except protocol.ProtocolError:
            continue
        protocol.encode(message)
    text = data.decode("utf-8", "replace")
    for parse in (protocol.parse_device_topic, protocol.parse_zone_command_topic):
        with contextlib.suppress(protocol.ProtocolError):
            parse(text)


def serial(data: bytes) -> None:
    """Whole frames, and the same bytes fed to the incremental decoder in two pieces."""
    with contextlib.suppress(FrameError):
        parse_frame(data)
    decoder = FrameDecoder(source="atheris")
    cut = data[0] if data else 0
    decoder.feed(data[:cut])
    decoder.feed(data[cut:])
    assert len(decoder._buffer) <= 83, "the decoder's buffer outgrew a frame"


TARGETS: dict[str, Callable[[bytes], None]] = {"wire": wire, "serial": serial}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(
            f"usage: python -m tests.fuzz.atheris_targets {{{','.join(TARGETS)}}} [libFuzzer options]"
        )
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
