"""The fire point's adapters on their own: the serial reader on `loop://`, the contact inputs
on gpiozero's MockFactory, the controller simulator's commands and its program on a pty."""

from __future__ import annotations

import os
import queue
import random
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

import pytest
import serial
from gpiozero.pins.mock import MockFactory

from device_profiles import serial_frames as sf
from device_profiles.profiles import load_profile
from device_profiles.serial_frames import FrameDecoder, Reading
from firmware_bridge import fpsim
from firmware_bridge.fire_adapters import SimulatedController
from firmware_bridge.firepoint import (
    FireInput,
    FirePointEvent,
    InputChanged,
    ReadingReceived,
    SerialLost,
    SerialRestored,
)
from firmware_bridge.inputs import GpioInputs
from firmware_bridge.serial_port import SerialReader
from tests.firmware_bridge.fakes import FakeClock

PROFILE = load_profile("fire-point-node")
FRAME = sf.encode_reading(Reading(seq=1, pressure_bar=7.8, mains_ok=True, battery_v=13.2))


class Posted:
    """What an adapter posted to the core, waited for without sleeping blindly."""

    def __init__(self) -> None:
        self.queue: queue.Queue[FirePointEvent] = queue.Queue()

    def __call__(self, event: FirePointEvent) -> None:
        self.queue.put(event)

    def next(self, timeout_s: float = 5.0) -> FirePointEvent:
        return self.queue.get(timeout=timeout_s)

    def none_within(self, seconds: float) -> bool:
        try:
            event = self.queue.get(timeout=seconds)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected {event!r}")


class LoopPorts:
    """An opener of `loop://` ports (what is written is read back), keeping each it opened."""

    def __init__(self, fail_first: int = 0) -> None:
        self.opened: list[Any] = []
        self.fail_first = fail_first
        self.calls = 0
        self.ready = threading.Event()

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise serial.SerialException("could not open port /dev/ttyAMA0: no such device")
        port = serial.serial_for_url("loop://", timeout=0.05)
        self.opened.append(port)
        self.ready.set()
        return port


@pytest.fixture
def posted() -> Posted:
    return Posted()


def reader(posted: Posted, opener: Any) -> SerialReader:
    return SerialReader("loop://", 9600, posted, opener=opener, retry_min_s=0.01, retry_max_s=0.05)


# --- the serial reader -----------------------------------------------------------------------


def test_readings_are_posted_and_bad_frames_counted(posted: Posted) -> None:
    ports = LoopPorts()
    r = reader(posted, ports)
    r.start()
    try:
        assert ports.ready.wait(5)
        ports.opened[0].write(b"\x00garbage" + FRAME[:-4] + b"00\r\n" + FRAME)
        event = posted.next()
        assert isinstance(event, ReadingReceived) and event.reading.pressure_bar == 7.8
        assert r.counters() == {
            "serial_frames": 1,
            "serial_bad_checksum": 1,
            "serial_noise_bytes": 8,
        }
    finally:
        r.stop()


def test_a_port_that_will_not_open_is_lost_once_then_restored_by_data(posted: Posted) -> None:
    ports = LoopPorts(fail_first=5)
    r = reader(posted, ports)
    r.start()
    try:
        lost = posted.next()
        assert isinstance(lost, SerialLost) and "no such device" in lost.detail
        assert ports.ready.wait(5)  # opened at the sixth attempt...
        assert posted.none_within(0.2)  # ...but nothing is restored before bytes arrive
        ports.opened[0].write(FRAME)
        assert isinstance(posted.next(), SerialRestored)
        assert isinstance(posted.next(), ReadingReceived)
        assert r.counters()["serial_open_failed"] == 5
        assert r.counters()["serial_link_lost"] == 1
    finally:
        r.stop()


def test_a_read_failure_is_a_lost_link_and_the_port_is_reopened(posted: Posted) -> None:
    ports = LoopPorts()
    r = reader(posted, ports)
    r.start()
    try:
        assert ports.ready.wait(5)
        ports.opened[0].write(FRAME)
        assert isinstance(posted.next(), ReadingReceived)
        ports.ready.clear()
        ports.opened[0].close()  # the USB adapter was pulled out, say
        assert isinstance(posted.next(), SerialLost)
        assert ports.ready.wait(5)
        ports.opened[1].write(FRAME)
        assert isinstance(posted.next(), SerialRestored)
        assert isinstance(posted.next(), ReadingReceived)
    finally:
        r.stop()


class FailingPort:
    """Opens, then fails every read: what a pty whose other end died looks like."""

    def read(self, size: int = 1) -> bytes:
        raise serial.SerialException("device reports readiness to read but returned no data")

    def close(self) -> None:
        pass


def test_a_port_that_opens_but_cannot_be_read_does_not_flap(posted: Posted) -> None:
    r = reader(posted, FailingPort)
    r.start()
    try:
        assert isinstance(posted.next(), SerialLost)
        assert posted.none_within(0.3)  # no restored/lost pair on every retry
    finally:
        r.stop()


def test_a_bug_in_the_reader_is_logged_and_counted(
    posted: Posted, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("bug")

    r = reader(posted, broken)
    r.start()
    try:
        assert isinstance(posted.next(), SerialLost)
        deadline = time.monotonic() + 5
        while r.counters().get("serial_internal_error", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.counters()["serial_internal_error"] >= 2  # and the thread carries on
    finally:
        r.stop()
    assert "reader failed" in caplog.text


def test_the_real_opener_reaches_a_pty(posted: Posted) -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    r = SerialReader(os.ttyname(slave), 9600, posted)
    r.start()
    try:
        for _ in range(50):  # like a controller, send on: pyserial flushes input when opening
            os.write(master, FRAME)
            if not posted.queue.empty():
                break
            time.sleep(0.1)
        event = posted.next()
        assert isinstance(event, ReadingReceived) and event.reading.seq == 1
    finally:
        r.stop()
        os.close(master)
        os.close(slave)


# --- the contact inputs -------------------------------------------------------------------


def test_contacts_are_reported_with_their_meaning(posted: Posted) -> None:
    factory = MockFactory()
    clock = FakeClock()
    inputs = GpioInputs(PROFILE.gpio, posted, clock, factory)
    try:
        factory.pin(22).drive_low()  # door shut before start: nothing posted yet
        assert posted.none_within(0.01)
        inputs.start()  # the levels now: door shut, call point not pressed
        assert {posted.next(), posted.next()} == {
            InputChanged(FireInput.CABINET_DOOR, False, clock.t_ms),
            InputChanged(FireInput.CALL_POINT, False, clock.t_ms),
        }
        factory.pin(23).drive_low()  # pull-up: a closed contact reads low
        assert posted.next() == InputChanged(FireInput.CALL_POINT, True, clock.t_ms)
        factory.pin(22).drive_high()
        assert posted.next() == InputChanged(FireInput.CABINET_DOOR, True, clock.t_ms)
    finally:
        inputs.close()


def test_without_pull_up_a_closed_contact_reads_high(posted: Posted) -> None:
    assert PROFILE.gpio.call_point is not None
    call_point = PROFILE.gpio.call_point.model_copy(update={"pull_up": False})
    gpio = PROFILE.gpio.model_copy(update={"call_point": call_point, "cabinet_door": None})
    factory = MockFactory()
    inputs = GpioInputs(gpio, posted, FakeClock(), factory)
    try:
        inputs.start()
        assert posted.next() == InputChanged(FireInput.CALL_POINT, False, FakeClock().t_ms)
        factory.pin(23).drive_high()
        event = posted.next()
        assert isinstance(event, InputChanged) and event.active
    finally:
        inputs.close()


def test_an_error_while_posting_never_reaches_gpiozero(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(event: InputChanged) -> None:
        raise RuntimeError("queue gone")

    factory = MockFactory()
    inputs = GpioInputs(PROFILE.gpio, refuse, FakeClock(), factory)
    try:
        inputs.start()
        factory.pin(23).drive_low()
        assert inputs.counters() == {"gpio_input_error": 3}
        assert "could not report call_point" in caplog.text
    finally:
        inputs.close()


# --- the simulator ------------------------------------------------------------------------------


@pytest.fixture
def state() -> fpsim.ControllerState:
    return fpsim.ControllerState(Reading(seq=0, pressure_bar=7.8, mains_ok=True, battery_v=13.2))


@pytest.mark.parametrize(
    ("command", "field_name", "value"),
    [
        ("pressure 6.5", "pressure_bar", 6.5),
        ("pressure none", "pressure_bar", None),
        ("battery 11.5", "battery_v", 11.5),
        ("temp 75", "temperature_c", 75.0),
        ("mains off", "mains_ok", False),
        ("mains none", "mains_ok", None),
    ],
)
def test_simulator_commands_set_the_next_frame(
    state: fpsim.ControllerState, command: str, field_name: str, value: object
) -> None:
    reply, data = fpsim.apply_command(state, command, random.Random(1))
    assert reply.startswith("ok ") and data == b""
    [reading] = FrameDecoder().feed(state.next_frame())
    assert getattr(reading, field_name) == value


@pytest.mark.parametrize(
    "command", ["", "pressure", "pressure x", "pressure 500", "mains maybe", "interval 1", "dance",
                "noise 99999", "raw FP,\u00e9"],
)  # fmt: skip
def test_simulator_refuses_bad_commands(state: fpsim.ControllerState, command: str) -> None:
    before = state.reading
    reply, data = fpsim.apply_command(state, command, random.Random(1))
    assert reply.startswith("error:") and data == b"" and state.reading == before


def test_simulator_send_noise_and_raw(state: fpsim.ControllerState) -> None:
    rng = random.Random(7)
    decoder = FrameDecoder()
    _, sent = fpsim.apply_command(state, "send", rng)
    assert [r.seq for r in decoder.feed(sent)] == [0]
    _, noise = fpsim.apply_command(state, "noise 200", rng)
    assert decoder.feed(noise + state.next_frame()) != []  # it resynchronises at once
    assert decoder.errors[sf.CHECKSUM] >= 1
    _, raw = fpsim.apply_command(state, "raw FP,9,500,1,13.2,30", rng)
    assert decoder.feed(raw) == [] and decoder.errors[sf.RANGE] == 1
    assert fpsim.apply_command(state, "silent", rng)[0].endswith("silent=True")


def test_the_simulator_program_on_a_pty_port() -> None:
    """What a human runs: `python -m firmware_bridge.fpsim --port /dev/pts/N`."""
    master, slave = os.openpty()
    tty.setraw(master)
    port = os.ttyname(slave)
    process = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.fpsim", "--port", port, "--interval-ms", "20"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("pressure 6.25\n")
        process.stdin.flush()
        assert process.stdout.readline().startswith("ok seq=")
        decoder = FrameDecoder()
        readings: list[Reading] = []
        deadline = time.monotonic() + 10
        while not any(r.pressure_bar == 6.25 for r in readings) and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                readings += decoder.feed(os.read(master, 1024))
        assert any(r.pressure_bar == 6.25 for r in readings) and decoder.bad_frames == 0
        process.stdin.write("quit\n")
        process.stdin.flush()
        assert process.stdout.readline() == "ok quit\n"
        _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0 and stderr == ""  # no warning, no traceback
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(master)
        os.close(slave)


def test_simulated_controller_exits_with_its_parent_side() -> None:
    sim = SimulatedController(50)
    try:
        assert sim.command("status").startswith("ok seq=")
        assert sim.command("nonsense").startswith("error: unknown command")
        assert sim.running
    finally:
        sim.close()
    assert not sim.running
