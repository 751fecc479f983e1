"""The machine's health figures for telemetry, read from /proc and /sys where they exist."""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

from firmware_bridge.ports import Health

log = logging.getLogger(__name__)

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # millidegrees C on a Pi
WIRELESS = Path("/proc/net/wireless")  # link quality of Wi-Fi interfaces, where there is one
WIRELESS_QUALITY_MAX = 70  # the scale most Wi-Fi drivers (brcmfmac on the Pi) report on

CounterSource = Callable[[], dict[str, int]]


def read_cpu_temp_c(path: Path = THERMAL_ZONE) -> float | None:
    try:
        return round(int(path.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def read_link_quality_pct(path: Path = WIRELESS) -> int | None:
    """Best link quality among wireless interfaces, in percent; None without Wi-Fi."""
    try:
        lines = path.read_text().splitlines()[2:]  # two header lines
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        try:
            quality = float(fields[2].rstrip("."))
        except ValueError:
            continue
        pct = max(0, min(100, round(quality * 100 / WIRELESS_QUALITY_MAX)))
        best = pct if best is None else max(best, pct)
    return best


class SystemDiagnostics:
    """Uptime since the bridge started, CPU temperature, free disk where its state lives,
    Wi-Fi link quality; plus counters kept by adapters outside the core."""

    def __init__(self, state_dir: Path, counter_sources: Iterable[CounterSource] = ()) -> None:
        self.state_dir = state_dir
        self._started = time.monotonic()
        self._sources = list(counter_sources)

    def add_counter_source(self, source: CounterSource) -> None:
        self._sources.append(source)

    def read(self) -> Health:
        try:
            free_mb: float | None = round(shutil.disk_usage(self.state_dir).free / 2**20, 1)
        except OSError:
            free_mb = None
        return Health(
            uptime_s=round(time.monotonic() - self._started, 1),
            cpu_temp_c=read_cpu_temp_c(),
            disk_free_mb=free_mb,
            link_quality_pct=read_link_quality_pct(),
        )

    def counters(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for source in self._sources:
            try:
                total.update(source())
            except Exception:  # a broken adapter must not silence the telemetry
                log.exception("diagnostics: a counter source failed")
        return dict(total)
