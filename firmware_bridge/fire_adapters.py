"""The fire point's hardware adapters, built and closed together by the composition root:
siren output, contact inputs, serial reader and, when simulating, the controller simulator
(firmware_bridge/fpsim.py) running on the far side of a pty."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_profiles.profiles import DeviceProfile
from firmware_bridge.firepoint import FirePointEvent
from firmware_bridge.inputs import GpioInputs
from firmware_bridge.ports import Clock
from firmware_bridge.relay import GpioRelay
from firmware_bridge.serial_port import SerialReader

log = logging.getLogger(__name__)

SIMULATOR_INTERVAL_MS = 1000  # the simulated controller reports once a second


class SimulatedController:
    """Starts the simulator on the master side of a new pty; the bridge opens `url`, the
    slave side, like any serial port. close() stops it."""

    def __init__(self, interval_ms: int = SIMULATOR_INTERVAL_MS, *extra_args: str) -> None:
        master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)
            self.url = os.ttyname(self._slave)
            project_root = str(Path(__file__).resolve().parent.parent)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (project_root, env.get("PYTHONPATH")) if p
            )
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "firmware_bridge.fpsim", "--fd", str(master)),
                    *("--interval-ms", str(interval_ms), *extra_args),
                ],
                pass_fds=(master,),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        except BaseException:
            os.close(self._slave)
            raise
        finally:
            os.close(master)
        self._lock = threading.Lock()

    def command(self, line: str) -> str:
        """Send one command and return the simulator's answer ("ok ..." / "error: ...")."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        with self._lock:
            stdin.write(line.strip() + "\n")
            stdin.flush()
            reply = stdout.readline()
        if not reply:
            raise RuntimeError(f"the fire-point simulator has exited ({self._process.poll()})")
        return reply.strip()

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def close(self, timeout_s: float = 5.0) -> None:
        process = self._process
        try:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the simulator exits when its stdin closes
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()
            with contextlib.suppress(OSError):
                os.close(self._slave)


@dataclass
class FirePointAdapters:
    siren: GpioRelay  # an on/off output like the amplifier relay: off when claimed and closed
    inputs: GpioInputs
    serial: SerialReader
    simulator: SimulatedController | None = None
    closed: bool = False

    def start(self) -> None:
        self.inputs.start()
        self.serial.start()

    def counters(self) -> dict[str, int]:
        """Counts for telemetry (bad serial frames, link losses, input errors)."""
        return self.serial.counters() | self.inputs.counters()

    def close(self) -> None:
        """Stop reading, stop the simulator, release the inputs; the siren ends up off."""
        if self.closed:
            return
        self.closed = True
        try:
            self.serial.stop()
            if self.simulator is not None:
                self.simulator.close()
            self.inputs.close()
        finally:
            self.siren.close()


def build_fire_point_adapters(
    profile: DeviceProfile,
    post: Callable[[FirePointEvent], None],
    clock: Clock,
    pin_factory: Any,
    *,
    simulate: bool,
) -> FirePointAdapters:
    """`simulate`: the serial port is a pty with the controller simulator on its other end."""
    assert profile.gpio.siren is not None and profile.serial is not None  # a validated profile
    siren = GpioRelay(profile.gpio.siren, pin_factory)
    simulator: SimulatedController | None = None
    try:
        inputs = GpioInputs(profile.gpio, post, clock, pin_factory)
        try:
            if simulate:
                inputs.rest_simulated_contacts()
            simulator = SimulatedController() if simulate else None
            url = simulator.url if simulator is not None else profile.serial.url
            serial = SerialReader(url, profile.serial.baudrate, post)
        except BaseException:
            inputs.close()
            raise
    except BaseException:
        if simulator is not None:
            simulator.close()
        siren.close()
        raise
    if simulator is not None:
        log.info("fire point: simulated controller on %s", simulator.url)
    return FirePointAdapters(siren, inputs, serial, simulator)
