"""An emergency repeated until stopped (`repeat: 0`): plays round after round until a STOP,
gives way between rounds to a newer command of its priority, never outlives the amplifier's
max_on_s without saying so, and is refused by nothing older in the contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles import protocol
from device_profiles.profiles import load_profile
from firmware_bridge.core import BridgeCore, Ports
from tests.firmware_bridge.fakes import (
    FakeClock,
    FakeDiagnostics,
    FakeFetcher,
    FakeLink,
    FakePlayer,
    FakeRelay,
)
from tests.firmware_bridge.test_core import MAX_ON_MS, WARM_UP_MS, A, B, Rig, play, stop


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    """A speaker node's core with typed fakes, as in test_core.py."""
    files = {}
    for sha in (A, B):
        files[sha] = tmp_path / f"{sha}.mp3"
        files[sha].write_bytes(b"ID3" + sha.encode())
    clock = FakeClock()
    link, player, relay = FakeLink(), FakePlayer(), FakeRelay()
    fetcher, diagnostics = FakeFetcher(files=files), FakeDiagnostics()
    ports = Ports(link=link, player=player, relay=relay, fetcher=fetcher, diagnostics=diagnostics)
    core = BridgeCore("loa-u1", load_profile("speaker-node"), ["thon-a", "xa-t"], ports, clock)
    return Rig(core, clock, link, player, relay, fetcher, diagnostics)


EMERGENCY = protocol.Priority.EMERGENCY
UNTIL_STOPPED = protocol.REPEAT_UNTIL_STOPPED


def test_it_plays_round_after_round_until_a_stop(rig: Rig) -> None:
    rig.send(play(rig, "e1", EMERGENCY, repeat=UNTIL_STOPPED, volume_pct=100))
    rig.advance(WARM_UP_MS)
    for _ in range(25):  # more rounds than any finite repeat a schedule would ask for
        rig.finish()
    assert rig.statuses("e1") == ["received", "started"]
    assert len(rig.player.played) == 26 and rig.player.playing is not None
    rig.send(stop(rig, "s1", target="e1"))
    assert rig.statuses("e1") == ["received", "started", "stopped"]
    assert rig.player.playing is None


def test_a_stop_of_everything_ends_it_too(rig: Rig) -> None:
    rig.send(play(rig, "e1", EMERGENCY, repeat=UNTIL_STOPPED))
    rig.advance(WARM_UP_MS)
    rig.finish()
    rig.send(stop(rig, "s1"))
    assert rig.statuses("e1")[-1] == "stopped"


def test_a_newer_emergency_takes_over_at_the_end_of_a_round(rig: Rig) -> None:
    rig.send(play(rig, "fire", EMERGENCY, repeat=UNTIL_STOPPED))
    rig.advance(WARM_UP_MS)
    rig.send(play(rig, "flood", EMERGENCY, sha=B))
    assert rig.statuses("flood") == ["received"]  # the round in progress is not cut
    rig.finish()
    assert rig.link.acks("fire")[-1] == ("fire", "preempted", "replaced by a newer command")
    assert rig.statuses("flood") == ["received", "started"]


def test_routine_items_wait_behind_it(rig: Rig) -> None:
    rig.send(play(rig, "e1", EMERGENCY, repeat=UNTIL_STOPPED))
    rig.advance(WARM_UP_MS)
    rig.send(play(rig, "morning", sha=B))
    rig.finish()
    rig.finish()
    assert rig.statuses("morning") == ["received"]
    assert rig.statuses("e1") == ["received", "started"]


def test_the_amplifier_cap_ends_it_with_a_reason_the_console_shows(rig: Rig) -> None:
    rig.send(play(rig, "e1", EMERGENCY, repeat=UNTIL_STOPPED))
    rig.advance(WARM_UP_MS)
    rig.finish()
    rig.advance(MAX_ON_MS)
    assert rig.link.acks("e1")[-1] == ("e1", "failed", "amplifier maximum on-time reached")
    assert not rig.relay.is_on and rig.player.playing is None


def test_the_contract_takes_0_to_100_only() -> None:
    base = {"v": 1, "id": "x", "ts": 1, "type": "play", "priority": "emergency",
            "audio": {"url": "http://c/a.mp3", "sha256": B, "duration_ms": 1},
            "expires_at": 2}  # fmt: skip
    for bad in (-1, 101, "forever"):
        payload = protocol.PlayCommand.model_validate({**base, "repeat": 0}).model_dump()
        payload["repeat"] = bad
        try:
            protocol.PlayCommand.model_validate(payload)
        except ValueError:
            continue
        raise AssertionError(f"repeat {bad!r} was accepted")
    assert protocol.PlayCommand.model_validate({**base, "repeat": 0}).repeat == UNTIL_STOPPED
