"""Typed fakes of the bridge's I/O ports (firmware_bridge/ports.py), for tests of the core.

Each one does what the real adapter promises and records what it was asked, so a test
drives time and completions by hand instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from device_profiles import protocol
from firmware_bridge.ports import FetchDone, Health, PlaybackDone


@dataclass
class FakeClock:
    """Wall-clock time that moves only when the test says so."""

    t_ms: int = 1_800_000_000_000

    def now_ms(self) -> int:
        return self.t_ms

    def advance(self, ms: int) -> None:
        self.t_ms += ms


@dataclass
class FakeLink:
    published: list[tuple[protocol.Channel, protocol.Message]] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)

    def publish(self, channel: protocol.Channel, message: protocol.Message) -> None:
        self.published.append((channel, message))

    def set_zones(self, zone_ids: Sequence[str]) -> None:
        self.zones = list(zone_ids)

    def acks(self, command_id: str | None = None) -> list[tuple[str, str, str | None]]:
        """(command_id, status, reason) of every ack, in order; optionally of one command."""
        out = []
        for channel, msg in self.published:
            if channel == protocol.Channel.ACK:
                assert isinstance(msg, protocol.Ack)
                if command_id is None or msg.command_id == command_id:
                    out.append((msg.command_id, msg.status.value, msg.reason))
        return out

    def messages(self, channel: protocol.Channel) -> list[protocol.Message]:
        return [m for c, m in self.published if c == channel]

    def last_state(self) -> protocol.DeviceState:
        states = self.messages(protocol.Channel.STATE)
        assert states, "no state published"
        last = states[-1]
        assert isinstance(last, protocol.DeviceState)
        return last


@dataclass
class FakePlayer:
    """Plays until the test calls finish() or fail(); stop() cancels without a callback."""

    played: list[tuple[Path, int]] = field(default_factory=list)
    _on_done: PlaybackDone | None = None

    @property
    def playing(self) -> Path | None:
        return self.played[-1][0] if self._on_done is not None else None

    def play(self, path: Path, volume_pct: int, on_done: PlaybackDone) -> None:
        self.played.append((path, volume_pct))
        self._on_done = on_done

    def stop(self) -> None:
        self._on_done = None

    def finish(self, error: str | None = None) -> None:
        done, self._on_done = self._on_done, None
        assert done is not None, "nothing is playing"
        done(error)


@dataclass
class FakeRelay:
    is_on: bool = False
    switched: list[bool] = field(default_factory=list)
    closed: bool = False

    def on(self) -> None:
        self.is_on = True
        self.switched.append(True)

    def off(self) -> None:
        self.is_on = False
        self.switched.append(False)

    def close(self) -> None:
        self.off()
        self.closed = True


@dataclass
class FakeFetcher:
    """Answers at once from `files` (sha256 -> path), or with a failure for unknown audio;
    with `hold=True` the test answers later through `complete()`."""

    files: dict[str, Path] = field(default_factory=dict)
    hold: bool = False
    requests: list[protocol.AudioRef] = field(default_factory=list)
    _waiting: list[tuple[protocol.AudioRef, FetchDone]] = field(default_factory=list)

    def fetch(self, audio: protocol.AudioRef, on_done: FetchDone) -> None:
        self.requests.append(audio)
        if self.hold:
            self._waiting.append((audio, on_done))
        else:
            self._answer(audio, on_done)

    def _answer(self, audio: protocol.AudioRef, on_done: FetchDone) -> None:
        path = self.files.get(audio.sha256)
        if path is None:
            on_done(None, "download failed: HTTP 404")
        else:
            on_done(path, None)

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values() if p.exists())

    def complete(self) -> None:
        waiting, self._waiting = self._waiting, []
        for audio, on_done in waiting:
            self._answer(audio, on_done)


@dataclass
class FakeDiagnostics:
    health: Health = field(default_factory=lambda: Health(uptime_s=12.5, cpu_temp_c=48.2))
    extra: dict[str, int] = field(default_factory=dict)

    def read(self) -> Health:
        return self.health

    def counters(self) -> dict[str, int]:
        return dict(self.extra)
