"""The bridge's I/O boundaries: small protocols the core talks to, each with a real adapter.

Adapters never decide anything: they translate between the world and the core's events.
Every callback they are given posts an event into the core's queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from device_profiles import protocol

PlaybackDone = Callable[[str | None], None]  # None: played to the end; else the failure
FetchDone = Callable[[Path | None, str | None], None]  # (file, None) or (None, reason)


class Clock(Protocol):
    def now_ms(self) -> int:
        """UTC wall-clock time in epoch milliseconds (commands are timed on it)."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class Link(Protocol):
    def publish(self, channel: protocol.Channel, message: protocol.Message) -> None:
        """Send one of this device's uplink messages (retained where the contract says)."""
        ...

    def set_zones(self, zone_ids: Sequence[str]) -> None:
        """Listen to exactly these zones' command topics from now on."""
        ...


class Player(Protocol):
    def play(self, path: Path, volume_pct: int, on_done: PlaybackDone) -> None:
        """Start playing at once and return; `on_done` is called once, unless stopped."""
        ...

    def stop(self) -> None:
        """Stop at once; the stopped playback's `on_done` is not called."""
        ...


class Relay(Protocol):
    @property
    def is_on(self) -> bool: ...

    def on(self) -> None: ...

    def off(self) -> None: ...

    def close(self) -> None:
        """Leave the relay off and release the pin."""
        ...


class Fetcher(Protocol):
    def fetch(self, audio: protocol.AudioRef, on_done: FetchDone) -> None:
        """Make the audio available locally (cache or download), off the caller's thread."""
        ...

    def usage_bytes(self) -> int:
        """Bytes the cached audio takes on disk."""
        ...


@dataclass(frozen=True)
class Health:
    """The machine's own figures; None where this hardware cannot tell."""

    uptime_s: float
    cpu_temp_c: float | None = None
    disk_free_mb: float | None = None
    link_quality_pct: int | None = None


class Diagnostics(Protocol):
    def read(self) -> Health:
        """Read the figures now (cheap: files under /proc and /sys, one statvfs)."""
        ...

    def counters(self) -> dict[str, int]:
        """Counters kept by the adapters (outbox, serial link...), merged into telemetry."""
        ...
