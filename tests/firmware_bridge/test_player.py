"""Players: the simulated one really takes the file's duration and stops at once; the ALSA
one runs the real mpg123 (here on ALSA's null device) and reports its failures."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from firmware_bridge.player import AlsaPlayer, SimulatedPlayer, media_duration_ms


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("player") / "tone.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=0.8",
         "-ac", "1", "-b:a", "64k", "-y", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


class Done:
    def __init__(self) -> None:
        self.results: list[str | None] = []
        self.event = threading.Event()

    def __call__(self, error: str | None) -> None:
        self.results.append(error)
        self.event.set()


def test_the_simulated_player_takes_the_files_duration(tone: Path) -> None:
    duration_ms = media_duration_ms(tone)
    assert duration_ms is not None and 700 <= duration_ms <= 900
    done = Done()
    start = time.monotonic()
    SimulatedPlayer().play(tone, 80, done)
    assert done.event.wait(10)
    assert time.monotonic() - start >= duration_ms / 1000 * 0.9  # it really took that long
    assert done.results == [None]


def test_a_stopped_playback_reports_nothing(tone: Path) -> None:
    player, done = SimulatedPlayer(), Done()
    player.play(tone, 80, done)
    player.stop()
    assert not done.event.wait(1.5)
    assert player.played == [(tone, 80)]


def test_an_unreadable_file_is_a_playback_failure(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all")
    done = Done()
    SimulatedPlayer().play(junk, 80, done)
    assert done.event.wait(10)
    assert done.results == ["unreadable audio file junk.mp3"]


def test_mpg123_plays_to_the_alsa_device(tone: Path) -> None:
    done = Done()
    AlsaPlayer("null").play(tone, 50, done)
    assert done.event.wait(20)
    assert done.results == [None]


def test_a_missing_alsa_device_is_reported_with_mpg123s_words(tone: Path) -> None:
    done = Done()
    AlsaPlayer("no-such-card").play(tone, 50, done)
    assert done.event.wait(20)
    [error] = done.results
    assert error is not None and error.startswith("mpg123 exited") and "failure" in error
