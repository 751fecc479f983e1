"""A whole simulated fire-point bridge: MockFactory pins, the controller simulator on a pty,
the real broker. The call point sounds the siren with or without the network."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.broker import free_port
from device_profiles import protocol
from device_profiles.profiles import PROFILES_DIR
from firmware_bridge import build_bridge
from firmware_bridge.bridge import Bridge
from firmware_bridge.config import BridgeConfig
from firmware_bridge.fire_adapters import SimulatedController
from tests.conftest import Broker
from tests.firmware_bridge.conftest import MakeConfig
from tests.firmware_bridge.mqtt_tools import Listener, wait_for

CALL_POINT_PIN, DOOR_PIN, SIREN_PIN = 23, 22, 27  # as in fire-point-node.toml
SILENT_S = 5  # the shortest a profile allows


@pytest.fixture
def fast_profile(tmp_path: Path) -> str:
    """fire-point-node, but a controller is silent after SILENT_S instead of 120 s."""
    text = (PROFILES_DIR / "fire-point-node.toml").read_text(encoding="utf-8")
    assert "sensor_silent_s = 120" in text
    path = tmp_path / "fire-point-fast.toml"
    path.write_text(text.replace("sensor_silent_s = 120", f"sensor_silent_s = {SILENT_S}"))
    return str(path)


@pytest.fixture
def listener(mqtt_broker: Broker) -> Iterator[Listener]:
    lst = Listener(mqtt_broker)
    yield lst
    lst.close()
    del lst


@pytest.fixture
def bridges() -> Iterator[list[Bridge]]:
    started: list[Bridge] = []
    yield started
    for bridge in started:
        bridge.stop()
    started.clear()


def start(bridges: list[Bridge], config: BridgeConfig, *, door_open: bool = False) -> Bridge:
    bridge = build_bridge(config, simulate=True)
    bridges.append(bridge)
    if door_open:
        bridge.pin_factory.pin(DOOR_PIN).drive_high()  # contact open: the door is open
    bridge.start()
    return bridge


def simulator(bridge: Bridge) -> SimulatedController:
    assert bridge.fire_point is not None and bridge.fire_point.simulator is not None
    return bridge.fire_point.simulator


def events(listener: Listener, device_id: str, signal: str) -> list[protocol.Event]:
    return [e for e in listener.decoded(device_id, protocol.Channel.EVENT) if e.signal == signal]


def test_call_point_sounds_the_siren_at_once_without_the_network(
    bridges: list[Bridge], make_config: MakeConfig, fast_profile: str
) -> None:
    config = make_config("fp-off1", ["thon-fpo1"], profile=fast_profile)
    nowhere = config.mqtt.model_copy(update={"port": free_port()})  # nothing listens there
    bridge = start(bridges, config.model_copy(update={"mqtt": nowhere}))
    siren = bridge.pin_factory.pin(SIREN_PIN)
    assert not siren.state
    pressed = time.monotonic()
    bridge.pin_factory.pin(CALL_POINT_PIN).drive_low()
    while not siren.state and time.monotonic() - pressed < 10:
        time.sleep(0.001)
    latency_s = time.monotonic() - pressed
    assert siren.state, "the siren did not sound"
    print(f"call point -> siren: {latency_s * 1000:.1f} ms")  # debounce 50 ms + the loop
    assert not bridge.link.connected.is_set()
    state = bridge.core.snapshot().fire_point
    assert state is not None and state.siren_on
    assert [s.signal for s in state.signals] == ["call_point"]
    bridges.remove(bridge)
    bridge.stop()
    assert not siren.state, "the siren must be off once the bridge stopped"
    del bridge


def test_call_point_alarm_reaches_the_console(
    bridges: list[Bridge], make_config: MakeConfig, fast_profile: str, listener: Listener
) -> None:
    bridge = start(bridges, make_config("fp-n1", ["thon-fpn1"], profile=fast_profile))
    assert bridge.link.connected.wait(10)
    call_point, siren = bridge.pin_factory.pin(CALL_POINT_PIN), bridge.pin_factory.pin(SIREN_PIN)
    call_point.drive_low()
    [alarm] = wait_for(lambda: events(listener, "fp-n1", "call_point"), 10, "the alarm event")
    assert alarm.signal_class is protocol.SignalClass.ALARM and alarm.active
    assert siren.state
    wait_for(
        lambda: any(
            s.fire_point is not None and s.fire_point.siren_on
            for s in listener.decoded("fp-n1", protocol.Channel.STATE)
        ),
        10,
        "the retained state to show the siren on",
    )
    call_point.drive_high()  # reset with its key
    wait_for(lambda: len(events(listener, "fp-n1", "call_point")) == 2, 10, "the restore")
    assert [e.active for e in events(listener, "fp-n1", "call_point")] == [True, False]
    assert siren.state  # still within its minimum on-time


def test_door_open_at_boot_is_supervisory(
    bridges: list[Bridge], make_config: MakeConfig, fast_profile: str, listener: Listener
) -> None:
    bridge = start(
        bridges, make_config("fp-n2", ["thon-fpn2"], profile=fast_profile), door_open=True
    )
    [opened] = wait_for(lambda: events(listener, "fp-n2", "cabinet_open"), 10, "cabinet_open")
    assert opened.signal_class is protocol.SignalClass.SUPERVISORY and opened.active
    bridge.pin_factory.pin(DOOR_PIN).drive_low()
    wait_for(lambda: len(events(listener, "fp-n2", "cabinet_open")) == 2, 10, "the restore")
    assert not bridge.pin_factory.pin(SIREN_PIN).state


def test_the_simulated_controller_over_a_pty(
    bridges: list[Bridge], make_config: MakeConfig, fast_profile: str, listener: Listener
) -> None:
    bridge = start(bridges, make_config("fp-n3", ["thon-fpn3"], profile=fast_profile))
    assert bridge.link.connected.wait(10)
    sim = simulator(bridge)

    def signal(name: str, count: int) -> list[protocol.Event]:
        return wait_for(
            lambda: (found := events(listener, "fp-n3", name)) and len(found) >= count and found,
            SILENT_S + 10,
            f"{count} {name} event(s)",
        )

    assert sim.command("pressure 6.5").startswith("ok")
    sim.command("send")
    [low] = signal("pressure_low", 1)
    assert (low.signal_class, low.active, low.value) == (
        protocol.SignalClass.SUPERVISORY,
        True,
        6.5,
    )
    sim.command("pressure 7.8")
    sim.command("send")
    assert [(e.active, e.value) for e in signal("pressure_low", 2)] == [(True, 6.5), (False, 7.8)]

    assert sim.command("noise 300").startswith("ok noise")  # garbage and a bad checksum
    sim.command("mains off")
    sim.command("send")
    [mains] = signal("mains_lost", 1)
    assert mains.signal_class is protocol.SignalClass.TROUBLE
    assert bridge.fire_point is not None
    counters = bridge.fire_point.counters()
    assert counters.get("serial_bad_checksum", 0) >= 1 and counters["serial_frames"] >= 3

    sim.command("silent")
    [silent] = signal("sensor_silent", 1)
    assert silent.signal_class is protocol.SignalClass.TROUBLE and silent.active
    sim.command("resume")
    assert [e.active for e in signal("sensor_silent", 2)] == [True, False]

    assert sim.command("quit") == "ok quit"  # the controller goes away: the pty hangs up
    [lost] = signal("serial_link_lost", 1)
    assert lost.signal_class is protocol.SignalClass.TROUBLE and lost.active
    assert len(events(listener, "fp-n3", "pressure_low")) == 2  # nothing raised twice
    assert bridge.core.counters.get("internal_error", 0) == 0
