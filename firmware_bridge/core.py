"""The bridge's core: the one object that owns the device's state and decides.

Adapters push events into one queue; `run()` handles them one at a time on one thread, so
the logic needs no locks and is tested with typed fakes, without hardware or a broker.
Priorities: STOP > emergency > live/manual > scheduled. A higher priority preempts at once;
lower or equal ones queue (at most QUEUE_LIMIT; when full, a more urgent item pushes out the
least urgent one). A command id seen before within DEDUPE_WINDOW_MS is ignored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_profiles import protocol
from device_profiles.profiles import DeviceProfile
from firmware_bridge.firepoint import FIRE_POINT_EVENTS, FirePoint, FirePointEvent
from firmware_bridge.ports import (
    Clock,
    Diagnostics,
    FetchDone,
    Fetcher,
    Link,
    Player,
    Relay,
)

log = logging.getLogger(__name__)

QUEUE_LIMIT = 20
DEDUPE_SIZE = 1000
DEDUPE_WINDOW_MS = 10 * 60 * 1000
SOFTWARE_VERSION = "0.1.0"
GONG_PRESET = "gong"  # the preset played before and after a command that asks for a gong
PRESET_RETRY_MS = 60_000
CLOCK_SAMPLES = 20


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandPayload:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class ConfigPayload:
    payload: bytes


@dataclass(frozen=True)
class Fetched:
    command_id: str
    path: Path | None
    error: str | None


@dataclass(frozen=True)
class PlaybackEnded:
    token: int
    error: str | None


@dataclass(frozen=True)
class LinkUp:
    pass


@dataclass(frozen=True)
class PresetFetched:
    name: str
    sha256: str
    path: Path | None
    error: str | None


@dataclass(frozen=True)
class Ping:
    """Answered by the loop itself: the service watchdog is fed only while the loop runs."""

    answered: threading.Event


@dataclass(frozen=True)
class Shutdown:
    pass


Event = (
    CommandPayload
    | ConfigPayload
    | Fetched
    | PresetFetched
    | PlaybackEnded
    | LinkUp
    | Ping
    | FirePointEvent
    | Shutdown
)


@dataclass
class Item:
    command: protocol.PlayCommand
    seq: int
    path: Path | None = None
    plays_left: int = 1
    parts: tuple[Path, ...] = ()  # what one play is: the audio, between gongs if asked
    part: int = 0

    @property
    def rank(self) -> int:
        return self.command.priority.rank


@dataclass
class Ports:
    link: Link
    player: Player
    relay: Relay | None
    fetcher: Fetcher
    diagnostics: Diagnostics
    siren: Relay | None = None  # fire points: an on/off output like the amplifier relay


@dataclass
class Snapshot:
    """What the retained state says; published again whenever it changes."""

    playing: protocol.Playing | None = None
    queued: int = 0
    volume_pct: int = 80
    amplifier_on: bool = False
    zones: tuple[str, ...] = ()
    config_version: int | None = None
    counters: dict[str, int] = field(default_factory=dict)
    fire_point: protocol.FirePointState | None = None


class BridgeCore:
    def __init__(
        self,
        device_id: str,
        profile: DeviceProfile,
        zones: Sequence[str],
        ports: Ports,
        clock: Clock,
    ) -> None:
        self.device_id = device_id
        self.profile = profile
        self.ports = ports
        self.clock = clock
        self.events: queue.Queue[Event] = queue.Queue()
        self.counters: Counter[str] = Counter()
        self.zones: tuple[str, ...] = tuple(zones)
        self.volume_pct = profile.audio.default_volume_pct if profile.audio else 80
        self.config_version: int | None = None
        self.current: Item | None = None
        self.pending: list[Item] = []
        self._started_at_ms: int | None = None
        self._token = 0
        self._seq = 0
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._timers: dict[str, int] = {}  # name -> due epoch ms
        self._amp_ready_ms: int | None = None
        self._amp_on_since_ms: int | None = None
        self._published: Snapshot | None = None
        self.presets: dict[str, protocol.PresetRef] = {}
        self.preset_paths: dict[str, Path] = {}  # name -> verified local file
        self._clock_samples: list[int] = []  # receive time - send time of recent messages
        self.telemetry_interval_ms = profile.telemetry.interval_s * 1000
        self._timer("telemetry", clock.now_ms() + self.telemetry_interval_ms)
        amp = profile.amplifier
        self.warm_up_ms = amp.warm_up_ms if amp else 0
        self.cool_down_ms = amp.cool_down_ms if amp else 0
        self.max_on_ms = amp.max_on_s * 1000 if amp else 0
        self.fire_point: FirePoint | None = None
        if profile.has_fire_point:
            self.fire_point = FirePoint(device_id, profile, clock.now_ms())
            self._fire_point_apply([])

    # --- the loop ----------------------------------------------------------------------

    def post(self, event: Event) -> None:
        """Thread-safe: adapters call this from their own threads."""
        self.events.put(event)

    def run(self) -> None:
        """Handle events until Shutdown; timers wake the loop when they fall due."""
        while True:
            timeout = self._next_timer_s()
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            if isinstance(event, Shutdown):
                self._shutdown()
                return
            self.process(event)

    def process(self, event: Event | None) -> None:
        """Handle one event (None: only timers), then publish the state if it changed."""
        try:
            if event is not None:
                self.handle(event)
            self._fire_timers()
            self._publish_state_if_changed()
        except Exception:  # one bad event must not stop the device
            log.exception("%s: failed to handle %r", self.device_id, event)
            self.counters["internal_error"] += 1

    def _next_timer_s(self) -> float | None:
        if not self._timers:
            return None
        return max(0.0, (min(self._timers.values()) - self.clock.now_ms()) / 1000)

    def _fire_timers(self) -> None:
        now = self.clock.now_ms()
        due = [name for name, at in self._timers.items() if at <= now]
        for name in due:
            del self._timers[name]
            if name == "advance":
                self._advance()
            elif name == "cool_down":
                self._cool_down()
            elif name == "max_on":
                self._max_on_reached()
            elif name == "telemetry":
                self._publish_telemetry()
                self._timer("telemetry", now + self.telemetry_interval_ms)
            elif name == "prefetch":
                self._prefetch_presets()
            elif name == "fire_point" and self.fire_point is not None:
                self._fire_point_apply(self.fire_point.tick(self.clock.now_ms()))

    def _timer(self, name: str, at_ms: int) -> None:
        self._timers[name] = at_ms

    def handle(self, event: Event) -> None:
        if isinstance(event, CommandPayload):
            self._on_command(event)
        elif isinstance(event, ConfigPayload):
            self._on_config(event.payload)
        elif isinstance(event, Fetched):
            self._on_fetched(event)
        elif isinstance(event, PlaybackEnded):
            self._on_playback_ended(event)
        elif isinstance(event, PresetFetched):
            self._on_preset_fetched(event)
        elif isinstance(event, LinkUp):
            self._published = None  # republish the retained state after a reconnect
        elif isinstance(event, Ping):
            event.answered.set()
        elif isinstance(event, FIRE_POINT_EVENTS) and self.fire_point is not None:
            self._fire_point_apply(self.fire_point.handle(event, self.clock.now_ms()))

    # --- the fire point (its decisions are in firepoint.py) -----------------------------

    def _fire_point_apply(self, events: list[protocol.Event]) -> None:
        """Siren first (life safety is local), then the events, then the next tick."""
        assert self.fire_point is not None
        siren = self.ports.siren
        if siren is not None and siren.is_on != self.fire_point.siren_on:
            if self.fire_point.siren_on:
                siren.on()
            else:
                siren.off()
        due = self.fire_point.next_due_ms()
        if due is None:
            self._timers.pop("fire_point", None)
        else:
            self._timer("fire_point", due)
        for event in events:
            self.ports.link.publish(protocol.Channel.EVENT, event)

    # --- commands ----------------------------------------------------------------------

    def _ack(self, command_id: str, status: protocol.AckStatus, reason: str | None = None) -> None:
        self.ports.link.publish(
            protocol.Channel.ACK,
            protocol.Ack(
                id=protocol.new_message_id(),
                ts=self.clock.now_ms(),
                device_id=self.device_id,
                command_id=command_id,
                status=status,
                reason=reason,
            ),
        )

    def _first_time(self, command_id: str) -> bool:
        """True once per command id within the dedupe window (QoS 1 is at least once)."""
        now = self.clock.now_ms()
        while self._seen and (
            len(self._seen) >= DEDUPE_SIZE
            or next(iter(self._seen.values())) < now - DEDUPE_WINDOW_MS
        ):
            self._seen.popitem(last=False)
        if command_id in self._seen:
            self.counters["duplicate_command"] += 1
            return False
        self._seen[command_id] = now
        return True

    def _on_command(self, event: CommandPayload) -> None:
        try:
            command = protocol.decode_command(event.payload)
        except protocol.ProtocolError as exc:
            self.counters["malformed_command"] += 1
            log.warning(
                "%s: dropped malformed command on %s: %s (%r)",
                self.device_id,
                event.topic,
                exc,
                event.payload[:200],
            )
            return
        self._sample_clock(command.ts)
        if not self._first_time(command.id):
            return
        if isinstance(command, protocol.StopCommand):
            self._stop(command.target_id)
        elif self.profile.has_speaker:
            self._accept(command)
        else:
            self.counters["play_without_speaker"] += 1

    def _accept(self, command: protocol.PlayCommand) -> None:
        if command.expires_at <= self.clock.now_ms():
            self._ack(command.id, protocol.AckStatus.FAILED, "expired")
            return
        if len(self.pending) >= QUEUE_LIMIT:
            lowest = self.pending[-1]  # sorted: the lowest priority, newest last
            if command.priority.rank <= lowest.rank:
                self._ack(command.id, protocol.AckStatus.FAILED, "queue full")
                return
            self.pending.pop()  # a more urgent item is never refused for routine ones
            self._ack(lowest.command.id, protocol.AckStatus.FAILED, "queue full")
        self._ack(command.id, protocol.AckStatus.RECEIVED)
        self._seq += 1
        item = Item(command=command, seq=self._seq, plays_left=command.repeat)
        self.pending.append(item)
        self.pending.sort(key=lambda i: (-i.rank, i.seq))
        self.ports.fetcher.fetch(
            command.audio, lambda path, err: self.post(Fetched(command.id, path, err))
        )
        if self.current is not None and item.rank > self.current.rank:
            self._end_current(protocol.AckStatus.PREEMPTED)
        self._advance()

    def _stop(self, target_id: str | None) -> None:
        if self.current is not None and target_id in (None, self.current.command.id):
            self._end_current(protocol.AckStatus.STOPPED)
        for item in [i for i in self.pending if target_id in (None, i.command.id)]:
            self.pending.remove(item)
            self._ack(item.command.id, protocol.AckStatus.STOPPED)
        self._timers.pop("advance", None)
        self._advance()

    def _end_current(self, status: protocol.AckStatus, reason: str | None = None) -> None:
        assert self.current is not None
        self.ports.player.stop()
        self._ack(self.current.command.id, status, reason)
        self.current = None
        self._started_at_ms = None

    def _on_fetched(self, event: Fetched) -> None:
        item = next((i for i in self.pending if i.command.id == event.command_id), None)
        if item is None:
            return  # stopped or preempted meanwhile
        if event.path is None:
            self.pending.remove(item)
            self.counters["fetch_failed"] += 1
            self._ack(item.command.id, protocol.AckStatus.FAILED, event.error or "download failed")
        else:
            item.path = event.path
        self._advance()

    # --- playback and the amplifier ---------------------------------------------------

    def _advance(self) -> None:
        """Start the head of the queue when it is ready, its time has come, the amp is warm."""
        if self.current is not None:
            return
        now = self.clock.now_ms()
        while self.pending and self.pending[0].command.expires_at <= now:
            late = self.pending.pop(0)
            self._ack(late.command.id, protocol.AckStatus.FAILED, "expired")
        if not self.pending:
            self._schedule_cool_down(now)
            return
        head = self.pending[0]
        start_ms = max(now, head.command.play_at or now)
        relay = self.ports.relay
        if relay is not None and not relay.is_on:
            switch_on_ms = start_ms - self.warm_up_ms
            if now < switch_on_ms:
                self._timer("advance", switch_on_ms)
                return
            self._amp_on(now)  # warms up while the audio may still be downloading
        if head.path is None:
            return  # its download reports back
        ready_ms = max(start_ms, self._amp_ready_ms or now)
        if now < ready_ms:
            self._timer("advance", ready_ms)
            return
        self.pending.pop(0)
        self._start(head)

    def _start(self, item: Item) -> None:
        assert item.path is not None
        self._timers.pop("cool_down", None)
        self.current = item
        item.parts = (item.path,)
        if item.command.gong:
            gong = self.preset_paths.get(GONG_PRESET)
            if gong is None:
                self.counters["gong_missing"] += 1  # play the words rather than nothing
            else:
                item.parts = (gong, item.path, gong)
        item.part = 0
        self._started_at_ms = self.clock.now_ms()
        self._play_part(item)
        self._ack(item.command.id, protocol.AckStatus.STARTED)

    def _play_part(self, item: Item) -> None:
        self._token += 1
        token = self._token
        volume = item.command.volume_pct if item.command.volume_pct is not None else self.volume_pct
        self.ports.player.play(
            item.parts[item.part], volume, lambda err: self.post(PlaybackEnded(token, err))
        )

    def _on_playback_ended(self, event: PlaybackEnded) -> None:
        if self.current is None or event.token != self._token:
            return  # a playback that was stopped on purpose
        item = self.current
        if event.error is not None:
            self.counters["playback_failed"] += 1
            self.current = None
            self._ack(item.command.id, protocol.AckStatus.FAILED, event.error)
        elif item.part + 1 < len(item.parts):
            item.part += 1
            self._play_part(item)
            return
        elif item.plays_left != 1 and not self._yields_to_queue(item):
            if item.plays_left > 1:
                item.plays_left -= 1  # 0 stays 0: until a STOP (or the amplifier's max_on_s)
            item.part = 0
            self._play_part(item)
            return
        elif item.plays_left == protocol.REPEAT_UNTIL_STOPPED:
            self.current = None  # a round is over; the newer announcement goes next
            self._ack(item.command.id, protocol.AckStatus.PREEMPTED, "replaced by a newer command")
        else:
            self.current = None
            self._ack(item.command.id, protocol.AckStatus.FINISHED)
        self._started_at_ms = None
        self._advance()

    def _yields_to_queue(self, item: Item) -> bool:
        """Between rounds, an item repeating until a STOP gives way to a newer one of its
        priority whose audio is ready (a higher one has preempted it already)."""
        head = self.pending[0] if self.pending else None
        return (
            item.plays_left == protocol.REPEAT_UNTIL_STOPPED
            and head is not None
            and head.rank >= item.rank
            and head.path is not None
        )

    def _amp_on(self, now: int) -> None:
        assert self.ports.relay is not None
        self.ports.relay.on()
        self._amp_on_since_ms = now
        self._amp_ready_ms = now + self.warm_up_ms
        if self.max_on_ms:
            self._timer("max_on", now + self.max_on_ms)

    def _amp_off(self) -> None:
        if self.ports.relay is not None and self.ports.relay.is_on:
            self.ports.relay.off()
            self.counters["amplifier_on_ms"] += self.clock.now_ms() - (self._amp_on_since_ms or 0)
        self._amp_on_since_ms = None
        self._amp_ready_ms = None
        self._timers.pop("max_on", None)
        self._timers.pop("cool_down", None)

    def _schedule_cool_down(self, now: int) -> None:
        if (
            self.ports.relay is not None
            and self.ports.relay.is_on
            and "cool_down" not in self._timers
        ):
            self._timer("cool_down", now + self.cool_down_ms)

    def _cool_down(self) -> None:
        if self.current is None and not self.pending:
            self._amp_off()

    def _max_on_reached(self) -> None:
        """Never leave the amplifier on longer than the profile allows."""
        log.warning("%s: amplifier on for its maximum; switching off", self.device_id)
        self.counters["amplifier_max_on"] += 1
        if self.current is not None:
            self._end_current(protocol.AckStatus.FAILED, "amplifier maximum on-time reached")
        self._amp_off()

    def _shutdown(self) -> None:
        if self.current is not None:
            self._end_current(protocol.AckStatus.STOPPED)
        self._amp_off()

    # --- config and state -------------------------------------------------------------

    def _on_config(self, payload: bytes) -> None:
        try:
            config = protocol.decode(protocol.DeviceConfig, payload)
        except protocol.ProtocolError as exc:
            self.counters["malformed_config"] += 1
            log.warning("%s: dropped malformed config: %s", self.device_id, exc)
            return
        self._sample_clock(config.ts)
        self.config_version = config.version
        self.volume_pct = config.volume_pct
        if config.zones and tuple(config.zones) != self.zones:
            self.zones = tuple(config.zones)
            self.ports.link.set_zones(self.zones)
        self.presets = {p.name: p for p in config.presets}
        self.preset_paths = {
            name: path
            for name, path in self.preset_paths.items()
            if name in self.presets and path.stem == self.presets[name].sha256
        }
        self._prefetch_presets()

    # --- presets: emergency announcements and the gong, fetched ahead of need -------------

    def _prefetch_presets(self) -> None:
        """Fetch every preset not yet on disk, so an emergency never waits for a download."""
        self._timers.pop("prefetch", None)
        for name, preset in self.presets.items():
            if name in self.preset_paths:
                continue
            self.ports.fetcher.fetch(preset, self._preset_done(name, preset.sha256))

    def _preset_done(self, name: str, sha256: str) -> FetchDone:
        return lambda path, err: self.post(PresetFetched(name, sha256, path, err))

    def _on_preset_fetched(self, event: PresetFetched) -> None:
        preset = self.presets.get(event.name)
        if preset is None or preset.sha256 != event.sha256:
            return  # the config changed meanwhile
        if event.path is None:
            self.counters["preset_fetch_failed"] += 1
            log.warning("%s: preset %s: %s", self.device_id, event.name, event.error)
            if "prefetch" not in self._timers:
                self._timer("prefetch", self.clock.now_ms() + PRESET_RETRY_MS)
        else:
            self.preset_paths[event.name] = event.path

    # --- diagnostics ----------------------------------------------------------------------

    def _sample_clock(self, sent_ms: int) -> None:
        """Receive time minus send time of recent messages: the smallest is the clock offset
        plus the shortest transport delay (a few ms on a healthy link)."""
        self._clock_samples.append(self.clock.now_ms() - sent_ms)
        del self._clock_samples[:-CLOCK_SAMPLES]

    @property
    def clock_offset_ms(self) -> int | None:
        return min(self._clock_samples) if self._clock_samples else None

    def telemetry_message(self) -> protocol.Telemetry:
        health = self.ports.diagnostics.read()
        counters = Counter(self.counters)
        counters.update(self.ports.diagnostics.counters())
        amp_on_ms = counters.pop("amplifier_on_ms", 0)
        if self._amp_on_since_ms is not None:
            amp_on_ms += self.clock.now_ms() - self._amp_on_since_ms
        return protocol.Telemetry(
            id=protocol.new_message_id(),
            ts=self.clock.now_ms(),
            device_id=self.device_id,
            uptime_s=health.uptime_s,
            cpu_temp_c=health.cpu_temp_c,
            disk_free_mb=health.disk_free_mb,
            clock_offset_ms=self.clock_offset_ms,
            link_quality_pct=health.link_quality_pct,
            amplifier_on_s=amp_on_ms / 1000,
            cache_bytes=self.ports.fetcher.usage_bytes(),
            counters=dict(counters),
            fire_point=self.fire_point.readings() if self.fire_point is not None else None,
        )

    def _publish_telemetry(self) -> None:
        self.ports.link.publish(protocol.Channel.TELEMETRY, self.telemetry_message())

    def snapshot(self) -> Snapshot:
        playing = None
        if self.current is not None and self._started_at_ms is not None:
            playing = protocol.Playing(
                command_id=self.current.command.id,
                priority=self.current.command.priority,
                started_at=self._started_at_ms,
            )
        relay = self.ports.relay
        return Snapshot(
            playing=playing,
            queued=len(self.pending),
            volume_pct=self.volume_pct,
            amplifier_on=bool(relay is not None and relay.is_on),
            zones=self.zones,
            config_version=self.config_version,
            counters=dict(self.counters),
            fire_point=self.fire_point.state() if self.fire_point is not None else None,
        )

    def state_message(self, snap: Snapshot) -> protocol.DeviceState:
        return protocol.DeviceState(
            id=protocol.new_message_id(),
            ts=self.clock.now_ms(),
            device_id=self.device_id,
            profile=self.profile.name,
            software_version=SOFTWARE_VERSION,
            config_version=snap.config_version,
            playing=snap.playing,
            queued=snap.queued,
            volume_pct=snap.volume_pct,
            amplifier_on=snap.amplifier_on,
            zones=list(snap.zones),
            counters=snap.counters,
            fire_point=snap.fire_point,
        )

    def _publish_state_if_changed(self) -> None:
        snap = self.snapshot()
        if snap != self._published:
            self.ports.link.publish(protocol.Channel.STATE, self.state_message(snap))
            self._published = snap

    def describe(self) -> dict[str, Any]:
        """For logs and tests: a plain view of the state."""
        snap = self.snapshot()
        return {
            "playing": snap.playing.command_id if snap.playing else None,
            "queued": [i.command.id for i in self.pending],
            "amplifier_on": snap.amplifier_on,
            "counters": snap.counters,
        }
