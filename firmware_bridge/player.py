"""Players: ALSA on the Pi (mpg123 in a subprocess), and a simulated one that really takes
the file's duration. Both can be interrupted at once."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from pathlib import Path

from firmware_bridge.ports import PlaybackDone

log = logging.getLogger(__name__)


def media_duration_ms(path: Path) -> int | None:
    """Duration as ffprobe reads it from the file, or None if it cannot tell."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    try:
        out = subprocess.run(
            [ffprobe, "-v", "error", "-print_format", "json", "-show_format", str(path)],
            capture_output=True,
            timeout=30,
            check=False,
        ).stdout
        return round(float(json.loads(out)["format"]["duration"]) * 1000)
    except (subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None


class SimulatedPlayer:
    """Plays nothing aloud but takes exactly as long as the file lasts (for --simulate)."""

    def __init__(self) -> None:
        self._cancel: threading.Event | None = None
        self.played: list[tuple[Path, int]] = []  # what it was asked to play, for diagnostics

    def play(self, path: Path, volume_pct: int, on_done: PlaybackDone) -> None:
        self.stop()
        cancel = threading.Event()
        self._cancel = cancel
        self.played.append((path, volume_pct))
        duration_ms = media_duration_ms(path)

        def run() -> None:
            if duration_ms is None:
                if not cancel.is_set():
                    on_done(f"unreadable audio file {path.name}")
                return
            if not cancel.wait(duration_ms / 1000):
                on_done(None)

        threading.Thread(target=run, name="sim-player", daemon=True).start()

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self._cancel = None


class AlsaPlayer:
    """mpg123 on the Pi's ALSA device; stopping terminates the process at once."""

    def __init__(self, alsa_device: str = "default") -> None:
        self.alsa_device = alsa_device
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def play(self, path: Path, volume_pct: int, on_done: PlaybackDone) -> None:
        self.stop()
        binary = shutil.which("mpg123")
        if binary is None:
            on_done("mpg123 is not installed")
            return
        # mpg123's -f scales output samples: 32768 is unity gain.
        scale = max(0, min(100, volume_pct)) * 32768 // 100
        proc = subprocess.Popen(
            [binary, "-q", "-o", "alsa", "-a", self.alsa_device, "-f", str(scale), str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with self._lock:
            self._proc = proc

        def wait() -> None:
            _out, err = proc.communicate()
            with self._lock:
                stopped = self._proc is not proc
                if not stopped:
                    self._proc = None
            if stopped:
                return
            if proc.returncode == 0:
                on_done(None)
            else:
                on_done(f"mpg123 exited {proc.returncode}: {err.decode(errors='replace')[-200:]}")

        threading.Thread(target=wait, name="alsa-player", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
