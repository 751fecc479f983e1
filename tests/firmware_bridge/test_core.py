"""The bridge core with typed fakes: priorities, preemption, dedupe, timing, the amplifier,
presets and the gong, telemetry, and bad input. Time moves only when a test moves it."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles import protocol
from device_profiles.profiles import load_profile
from firmware_bridge.core import (
    QUEUE_LIMIT,
    BridgeCore,
    CommandPayload,
    ConfigPayload,
    Ping,
    Ports,
    Shutdown,
)
from tests.firmware_bridge.fakes import (
    FakeClock,
    FakeDiagnostics,
    FakeFetcher,
    FakeLink,
    FakePlayer,
    FakeRelay,
)

A = "a" * 64
B = "b" * 64
GONG = "9" * 64
ZONE_TOPIC = protocol.zone_command_topic("thon-a")
WARM_UP_MS = 1500  # speaker-node profile
COOL_DOWN_MS = 5000
MAX_ON_MS = 3600 * 1000


@dataclass
class Rig:
    core: BridgeCore
    clock: FakeClock
    link: FakeLink
    player: FakePlayer
    relay: FakeRelay
    fetcher: FakeFetcher
    diagnostics: FakeDiagnostics

    def pump(self) -> None:
        """Handle everything the adapters posted, then whatever timers fell due."""
        while True:
            try:
                event = self.core.events.get_nowait()
            except queue.Empty:
                self.core.process(None)
                if self.core.events.empty():
                    return
                continue
            self.core.process(event)

    def send(self, message: protocol.Message | bytes, topic: str = ZONE_TOPIC) -> None:
        payload = message if isinstance(message, bytes) else protocol.encode(message)
        self.core.post(CommandPayload(topic, payload))
        self.pump()

    def configure(self, config: protocol.DeviceConfig) -> None:
        self.core.post(ConfigPayload(protocol.encode(config)))
        self.pump()

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.pump()

    def finish(self, error: str | None = None) -> None:
        self.player.finish(error)
        self.pump()

    def statuses(self, command_id: str) -> list[str]:
        return [status for _, status, _ in self.link.acks(command_id)]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    files = {}
    for sha in (A, B, GONG):
        path = tmp_path / f"{sha}.mp3"
        path.write_bytes(b"ID3" + sha.encode())
        files[sha] = path
    clock = FakeClock()
    link, player, relay = FakeLink(), FakePlayer(), FakeRelay()
    fetcher, diagnostics = FakeFetcher(files=files), FakeDiagnostics()
    core = BridgeCore(
        "loa-t1",
        load_profile("speaker-node"),
        ["thon-a", "xa-t"],
        Ports(link=link, player=player, relay=relay, fetcher=fetcher, diagnostics=diagnostics),
        clock,
    )
    return Rig(core, clock, link, player, relay, fetcher, diagnostics)


def play(
    rig: Rig,
    command_id: str,
    priority: protocol.Priority = protocol.Priority.SCHEDULED,
    *,
    sha: str = A,
    play_at_in_ms: int | None = None,
    expires_in_ms: int = 600_000,
    **fields: object,
) -> protocol.PlayCommand:
    now = rig.clock.now_ms()
    return protocol.PlayCommand(
        id=command_id,
        ts=now,
        priority=priority,
        audio=protocol.AudioRef(url=f"http://console/media/{sha}.mp3", sha256=sha, duration_ms=1000),
        play_at=None if play_at_in_ms is None else now + play_at_in_ms,
        expires_at=now + expires_in_ms,
        **fields,  # type: ignore[arg-type]
    )


def stop(rig: Rig, command_id: str, target: str | None = None) -> protocol.StopCommand:
    return protocol.StopCommand(id=command_id, ts=rig.clock.now_ms(), target_id=target)


def started(rig: Rig, command_id: str) -> Rig:
    """Send a play command and let the amplifier warm up until it plays."""
    rig.send(play(rig, command_id))
    rig.advance(WARM_UP_MS)
    assert rig.statuses(command_id)[-1] == "started"
    return rig


# --- one item, the amplifier ---------------------------------------------------------------


def test_an_item_warms_the_amplifier_plays_and_cools_down(rig: Rig) -> None:
    rig.send(play(rig, "c1"))
    assert rig.statuses("c1") == ["received"]
    assert rig.relay.is_on and rig.player.playing is None  # warming up
    rig.advance(WARM_UP_MS - 1)
    assert rig.player.playing is None
    rig.advance(1)
    assert rig.statuses("c1") == ["received", "started"]
    assert rig.player.playing == rig.fetcher.files[A]
    assert rig.link.last_state().playing is not None
    rig.finish()
    assert rig.statuses("c1") == ["received", "started", "finished"]
    assert rig.relay.is_on  # cool-down: a next item would not wait for the warm-up again
    rig.advance(COOL_DOWN_MS)
    assert not rig.relay.is_on
    state = rig.link.last_state()
    assert state.playing is None and not state.amplifier_on
    assert state.counters["amplifier_on_ms"] == WARM_UP_MS + COOL_DOWN_MS


def test_back_to_back_items_keep_the_amplifier_on(rig: Rig) -> None:
    rig.send(play(rig, "c1"))
    rig.send(play(rig, "c2", sha=B))
    rig.advance(WARM_UP_MS)
    rig.finish()
    assert rig.statuses("c2") == ["received", "started"]
    rig.advance(COOL_DOWN_MS - 1)
    rig.finish()
    rig.advance(COOL_DOWN_MS)
    assert rig.relay.switched == [True, False]


def test_an_item_arriving_during_cool_down_starts_at_once(rig: Rig) -> None:
    started(rig, "c1").finish()
    rig.advance(COOL_DOWN_MS // 2)
    rig.send(play(rig, "c2"))
    assert rig.statuses("c2") == ["received", "started"]
    rig.advance(COOL_DOWN_MS)
    assert rig.relay.is_on  # the cool-down was cancelled by the new item
    assert rig.relay.switched == [True]


def test_the_amplifier_is_never_on_longer_than_the_profile_allows(rig: Rig) -> None:
    started(rig, "c1")
    rig.advance(MAX_ON_MS)
    assert rig.statuses("c1")[-1] == "failed"
    assert rig.link.acks("c1")[-1][2] == "amplifier maximum on-time reached"
    assert not rig.relay.is_on and rig.player.playing is None
    assert rig.core.counters["amplifier_max_on"] == 1


def test_shutdown_stops_playback_and_leaves_the_amplifier_off(rig: Rig) -> None:
    started(rig, "c1")
    rig.core.post(Shutdown())
    rig.core.run()  # returns at Shutdown
    assert rig.statuses("c1")[-1] == "stopped"
    assert not rig.relay.is_on


# --- priorities, queueing, stop -------------------------------------------------------------


def test_emergency_preempts_a_scheduled_item_at_once(rig: Rig) -> None:
    started(rig, "routine")
    rig.send(play(rig, "fire", protocol.Priority.EMERGENCY, sha=B))
    assert rig.statuses("routine") == ["received", "started", "preempted"]
    assert rig.statuses("fire") == ["received", "started"]  # amplifier already warm
    assert rig.player.playing == rig.fetcher.files[B]
    playing = rig.link.last_state().playing
    assert playing is not None and playing.command_id == "fire"


def test_live_preempts_scheduled_and_emergency_preempts_live(rig: Rig) -> None:
    started(rig, "routine")
    rig.send(play(rig, "mic", protocol.Priority.LIVE))
    rig.send(play(rig, "storm", protocol.Priority.EMERGENCY))
    assert rig.statuses("routine")[-1] == "preempted"
    assert rig.statuses("mic")[-1] == "preempted"
    assert rig.statuses("storm")[-1] == "started"


def test_lower_and_equal_priorities_queue_in_order(rig: Rig) -> None:
    rig.send(play(rig, "storm", protocol.Priority.EMERGENCY))
    rig.advance(WARM_UP_MS)
    rig.send(play(rig, "news", protocol.Priority.SCHEDULED))
    rig.send(play(rig, "notice", protocol.Priority.LIVE))
    rig.send(play(rig, "flood", protocol.Priority.EMERGENCY))
    assert rig.core.describe()["queued"] == ["flood", "notice", "news"]
    assert rig.link.last_state().queued == 3
    order = []
    for _ in range(4):
        order.append(rig.link.last_state().playing.command_id)  # type: ignore[union-attr]
        rig.finish()
    assert order == ["storm", "flood", "notice", "news"]
    for command_id in order:
        assert rig.statuses(command_id) == ["received", "started", "finished"]


def test_the_queue_is_bounded(rig: Rig) -> None:
    started(rig, "playing")
    for n in range(QUEUE_LIMIT):
        rig.send(play(rig, f"q{n}"))
    rig.send(play(rig, "one-too-many"))
    assert rig.link.acks("one-too-many") == [("one-too-many", "failed", "queue full")]
    # an emergency is never refused for a full queue of routine items
    rig.send(play(rig, "fire", protocol.Priority.EMERGENCY))
    assert rig.statuses("fire") == ["received", "started"]


def test_stop_all_ends_the_playing_and_the_queued(rig: Rig) -> None:
    started(rig, "c1")
    rig.send(play(rig, "c2"))
    rig.send(stop(rig, "s1"))
    assert rig.statuses("c1")[-1] == "stopped"
    assert rig.statuses("c2") == ["received", "stopped"]
    assert rig.player.playing is None
    rig.advance(COOL_DOWN_MS)
    assert not rig.relay.is_on


def test_stop_of_one_command_leaves_the_others(rig: Rig) -> None:
    started(rig, "c1")
    rig.send(play(rig, "c2"))
    rig.send(stop(rig, "s1", target="c2"))
    assert rig.statuses("c2") == ["received", "stopped"]
    assert rig.statuses("c1") == ["received", "started"]
    rig.send(stop(rig, "s2", target="c1"))
    assert rig.statuses("c1")[-1] == "stopped"


def test_the_same_command_is_played_once(rig: Rig) -> None:
    command = play(rig, "c1")
    rig.send(command)
    rig.send(command, topic=protocol.device_topic("loa-t1", protocol.Channel.CMD))
    rig.advance(WARM_UP_MS)
    rig.finish()
    rig.send(command)  # a late QoS 1 redelivery
    rig.advance(WARM_UP_MS + COOL_DOWN_MS)
    assert rig.statuses("c1") == ["received", "started", "finished"]
    assert len(rig.player.played) == 1
    assert rig.core.counters["duplicate_command"] == 2


def test_repeat_plays_the_item_again_and_reports_once(rig: Rig) -> None:
    rig.send(play(rig, "c1", repeat=3))
    rig.advance(WARM_UP_MS)
    rig.finish()
    rig.finish()
    rig.finish()
    assert rig.statuses("c1") == ["received", "started", "finished"]
    assert len(rig.player.played) == 3


# --- time: play_at, expires_at ----------------------------------------------------------------


def test_play_at_starts_together_with_the_amplifier_warmed_before(rig: Rig) -> None:
    rig.send(play(rig, "c1", play_at_in_ms=10_000))
    assert not rig.relay.is_on
    rig.advance(10_000 - WARM_UP_MS)
    assert rig.relay.is_on and rig.player.playing is None
    rig.advance(WARM_UP_MS - 1)
    assert rig.player.playing is None
    rig.advance(1)
    assert rig.statuses("c1") == ["received", "started"]


def test_a_command_already_expired_is_dropped_and_reported(rig: Rig) -> None:
    rig.send(play(rig, "late", expires_in_ms=0))
    assert rig.link.acks("late") == [("late", "failed", "expired")]
    assert not rig.relay.is_on


def test_a_queued_command_that_expires_is_dropped_and_reported(rig: Rig) -> None:
    started(rig, "long")
    rig.send(play(rig, "short-lived", expires_in_ms=1000))
    rig.advance(2000)
    rig.finish()
    assert rig.link.acks("short-lived") == [
        ("short-lived", "received", None),
        ("short-lived", "failed", "expired"),
    ]
    assert len(rig.player.played) == 1


def test_audio_that_cannot_be_fetched_is_reported_failed(rig: Rig) -> None:
    rig.send(play(rig, "c1", sha="c" * 64))
    assert rig.link.acks("c1")[-1] == ("c1", "failed", "download failed: HTTP 404")
    assert rig.core.counters["fetch_failed"] == 1


def test_an_item_waits_for_its_download(rig: Rig) -> None:
    rig.fetcher.hold = True
    rig.send(play(rig, "c1"))
    assert rig.relay.is_on  # the amplifier warms up while the audio downloads
    rig.advance(WARM_UP_MS * 2)
    assert rig.player.playing is None
    rig.fetcher.complete()
    rig.pump()
    assert rig.statuses("c1") == ["received", "started"]


def test_a_player_failure_is_reported(rig: Rig) -> None:
    started(rig, "c1")
    rig.finish("mpg123 exited 1: no such device")
    assert rig.link.acks("c1")[-1] == ("c1", "failed", "mpg123 exited 1: no such device")


# --- volume, config, presets and the gong ------------------------------------------------------


def config(rig: Rig, version: int, **fields: object) -> protocol.DeviceConfig:
    return protocol.DeviceConfig(id=f"cfg{version}", ts=rig.clock.now_ms(), version=version, **fields)  # type: ignore[arg-type]


def preset(name: str, sha: str) -> protocol.PresetRef:
    return protocol.PresetRef(
        name=name, url=f"http://console/media/{sha}.mp3", sha256=sha, duration_ms=1000
    )


def test_config_is_applied_and_its_version_echoed(rig: Rig) -> None:
    rig.configure(config(rig, 7, zones=["thon-b", "xa-t"], volume_pct=55))
    state = rig.link.last_state()
    assert state.config_version == 7 and state.volume_pct == 55
    assert state.zones == ["thon-b", "xa-t"]
    assert rig.link.zones == ["thon-b", "xa-t"]  # subscriptions follow the zones


def test_volume_per_device_and_per_command(rig: Rig) -> None:
    rig.configure(config(rig, 1, volume_pct=40))
    started(rig, "c1").finish()
    rig.send(play(rig, "c2", protocol.Priority.EMERGENCY, volume_pct=100))
    assert [v for _, v in rig.player.played] == [40, 100]


def test_presets_are_prefetched_and_the_gong_framed_around_the_words(rig: Rig) -> None:
    rig.configure(config(rig, 2, presets=[preset("gong", GONG), preset("fire", B)]))
    assert {a.sha256 for a in rig.fetcher.requests} == {GONG, B}
    assert set(rig.core.preset_paths) == {"gong", "fire"}
    rig.send(play(rig, "c1", gong=True))
    rig.advance(WARM_UP_MS)
    rig.finish()
    rig.finish()
    assert rig.statuses("c1") == ["received", "started"]
    rig.finish()
    assert rig.statuses("c1") == ["received", "started", "finished"]
    files = rig.fetcher.files
    assert [p for p, _ in rig.player.played] == [files[GONG], files[A], files[GONG]]


def test_without_a_gong_preset_the_words_still_play(rig: Rig) -> None:
    rig.send(play(rig, "c1", gong=True))
    rig.advance(WARM_UP_MS)
    rig.finish()
    assert rig.statuses("c1")[-1] == "finished"
    assert rig.core.counters["gong_missing"] == 1


def test_a_preset_that_fails_to_download_is_retried(rig: Rig) -> None:
    missing = "d" * 64
    rig.configure(config(rig, 3, presets=[preset("storm", missing)]))
    assert rig.core.counters["preset_fetch_failed"] == 1
    rig.fetcher.files[missing] = rig.fetcher.files[A]
    rig.advance(60_000)
    assert rig.core.preset_paths == {"storm": rig.fetcher.files[A]}


# --- diagnostics -------------------------------------------------------------------------------


def test_telemetry_is_sent_every_interval_with_the_health_figures(rig: Rig) -> None:
    rig.diagnostics.extra = {"outbox_queued": 3}
    rig.clock.advance(250)  # the command below was sent 250 ms ago by the console's clock
    rig.send(protocol.StopCommand(id="s0", ts=rig.clock.now_ms() - 250))
    assert not rig.link.messages(protocol.Channel.TELEMETRY)
    rig.advance(60_000)
    [telemetry] = rig.link.messages(protocol.Channel.TELEMETRY)
    assert isinstance(telemetry, protocol.Telemetry)
    assert telemetry.uptime_s == 12.5 and telemetry.cpu_temp_c == 48.2
    assert telemetry.clock_offset_ms == 250
    assert telemetry.cache_bytes > 0
    assert telemetry.counters["outbox_queued"] == 3
    rig.advance(60_000)
    assert len(rig.link.messages(protocol.Channel.TELEMETRY)) == 2


def test_a_ping_is_answered_by_the_loop(rig: Rig) -> None:
    answered = threading.Event()
    rig.core.post(Ping(answered))
    rig.pump()
    assert answered.is_set()


# --- bad input ---------------------------------------------------------------------------------

BAD_COMMANDS = [
    b"",
    b"not json",
    b"[]",
    b'{"v": 2, "type": "play"}',
    b'{"v": 1, "type": "dance", "id": "x", "ts": 1}',
    b'{"v": 1, "type": "play", "id": "x", "ts": 1}',
    b'{"v": 1, "type": "play", "id": "x", "ts": 1, "priority": "urgent"}',
    b"\xff\xfe\x00garbage",
    b'{"v": 1' + b" " * 70_000 + b"}",
    b"[" * 5000 + b"]" * 5000,
]


def test_malformed_commands_are_counted_and_the_core_keeps_working(rig: Rig) -> None:
    for payload in BAD_COMMANDS:
        rig.send(payload)
    rig.core.post(ConfigPayload(b'{"v": 1, "version": -1}'))
    rig.pump()
    assert rig.core.counters["malformed_command"] == len(BAD_COMMANDS)
    assert rig.core.counters["malformed_config"] == 1
    assert rig.core.counters["internal_error"] == 0
    assert not rig.link.acks()
    started(rig, "c1")
    assert rig.link.last_state().counters["malformed_command"] == len(BAD_COMMANDS)


def _json_values() -> st.SearchStrategy[object]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    )


VALID = {
    "v": 1,
    "type": "play",
    "id": "fz",
    "ts": 1,
    "priority": "emergency",
    "audio": {"url": "http://c/a.mp3", "sha256": A, "duration_ms": 1},
    "expires_at": 2**40,
}


@settings(max_examples=2000, deadline=None)
@given(
    raw=st.binary(max_size=200),
    key=st.sampled_from([*VALID, "audio", "play_at", "volume_pct", "repeat", "target_id"]),
    value=_json_values(),
    kind=st.sampled_from(["play", "stop"]),
)
def test_fuzzed_commands_never_break_the_core(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes, key: str, value: object, kind: str
) -> None:
    import json

    rig_ = _fresh_rig(tmp_path_factory)
    mutated = {**VALID, "type": kind, key: value}
    for payload in (raw, json.dumps(mutated, default=str).encode()):
        rig_.send(payload)
    assert rig_.core.counters["internal_error"] == 0
    handled = rig_.core.counters["malformed_command"] + len(rig_.core._seen)
    assert handled == 2


_RIG_FILES: dict[str, Path] = {}


def _fresh_rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    if not _RIG_FILES:
        path = tmp_path_factory.mktemp("fuzz") / f"{A}.mp3"
        path.write_bytes(b"ID3")
        _RIG_FILES[A] = path
    clock = FakeClock()
    link, player, relay = FakeLink(), FakePlayer(), FakeRelay()
    fetcher, diagnostics = FakeFetcher(files=dict(_RIG_FILES)), FakeDiagnostics()
    core = BridgeCore(
        "loa-fz",
        load_profile("speaker-node"),
        ["thon-a"],
        Ports(link=link, player=player, relay=relay, fetcher=fetcher, diagnostics=diagnostics),
        clock,
    )
    return Rig(core, clock, link, player, relay, fetcher, diagnostics)
