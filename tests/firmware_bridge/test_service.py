"""The bridge as systemd runs it: `python -m firmware_bridge`, READY and watchdog pings over
$NOTIFY_SOCKET, a clean stop on SIGTERM, and `--safe-off` leaving every output OFF."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from device_profiles import protocol
from device_profiles.profiles import load_profile
from firmware_bridge.relay import GpioRelay, switch_off_outputs
from tests.conftest import Broker
from tests.firmware_bridge.conftest import write_bridge_config
from tests.firmware_bridge.mqtt_tools import Listener, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)  # a cold start imports a lot
    yield path, sock
    sock.close()


def bridge_process(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_systemd_sees_ready_watchdog_pings_and_a_clean_stop(
    mqtt_broker: Broker, tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    path, sock = notify_socket
    config = write_bridge_config(mqtt_broker, tmp_path, "loa-svc1", ["thon-svc"], "speaker-node")
    listener = Listener(mqtt_broker)
    proc = bridge_process(
        ["--simulate", "--config", str(config)],
        # systemd passes WATCHDOG_PID too; left out here, as it cannot know the child's pid
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"},
    )
    try:
        received = [sock.recv(256).decode() for _ in range(3)]
        assert received[0] == "READY=1"
        assert received[1:] == ["WATCHDOG=1", "WATCHDOG=1"]  # every 0.5 s: half the timeout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        while (note := sock.recv(256).decode()) == "WATCHDOG=1":
            pass
        assert note == "STOPPING=1"
        wait_for(
            lambda: [
                a for a in listener.decoded("loa-svc1", protocol.Channel.AVAILABILITY)
                if a.state == "offline"
            ],
            10,
            "offline said on the way out",
        )  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        print(proc.stderr.read().decode(errors="replace"))  # shown if the test fails
        proc.stderr.close()
        listener.close()


def test_safe_off_switches_the_outputs_off_after_a_crash() -> None:
    """A killed bridge leaves its pins as they were; systemd's ExecStopPost runs --safe-off."""
    factory = MockFactory()
    profile = load_profile("combined-node")
    left_on = []
    for spec in (profile.gpio.amplifier, profile.gpio.siren):
        assert spec is not None
        pin = factory.pin(spec.pin)
        pin.function = "output"
        pin.state = True  # as the dead process left it
        left_on.append(pin)
    assert switch_off_outputs(profile, factory) == [17, 27]
    assert [pin.state for pin in left_on] == [False, False]


def test_safe_off_from_the_command_line(mqtt_broker: Broker, tmp_path: Path) -> None:
    config = write_bridge_config(mqtt_broker, tmp_path, "loa-svc2", ["thon-svc"], "combined-node")
    done = subprocess.run(
        [sys.executable, "-m", "firmware_bridge", "--simulate", "--safe-off", "--config",
         str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "loa-svc2: outputs off on GPIO [17, 27]" in done.stderr


def test_the_relay_is_off_from_the_moment_its_pin_is_claimed() -> None:
    factory = MockFactory()
    spec = load_profile("speaker-node").gpio.amplifier
    assert spec is not None
    relay = GpioRelay(spec, factory)
    pin = factory.pin(spec.pin)
    assert not relay.is_on and pin.state is False
    relay.on()
    assert pin.state is True
    relay.close()
    assert pin.state is False


def test_a_bad_config_file_is_refused_with_its_name_and_key(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    good = write_bridge_config(mqtt_broker, tmp_path, "loa-svc3", ["thon-svc"], "speaker-node")
    bad = tmp_path / "bridge.toml"
    bad.write_text(good.read_text().replace("zones = ", "zone = "))
    done = subprocess.run(
        [sys.executable, "-m", "firmware_bridge", "--config", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "bridge.toml: zone: unknown key; did you mean 'zones'?" in done.stderr
