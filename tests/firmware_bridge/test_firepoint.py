"""The fire point's decisions with an injected clock: every signal raised and restored,
hysteresis around each threshold, debouncing, the silent sensor, the lost serial link, the
siren; then the same through the core with typed fakes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles import protocol
from device_profiles.profiles import DeviceProfile, load_profile
from device_profiles.serial_frames import Reading
from firmware_bridge.core import BridgeCore, Ports
from firmware_bridge.firepoint import (
    SIGNAL_CLASS,
    SIREN_MIN_ON_MS,
    FireInput,
    FirePoint,
    FirePointEvent,
    InputChanged,
    ReadingReceived,
    SerialLost,
    SerialRestored,
    Signal,
)
from tests.firmware_bridge.fakes import (
    FakeClock,
    FakeDiagnostics,
    FakeFetcher,
    FakeLink,
    FakePlayer,
    FakeRelay,
)

T0 = 1_800_000_000_000
PROFILE = load_profile("fire-point-node")  # call point 50 ms, door 100 ms, silent after 120 s
CALL_DEBOUNCE_MS = 50
DOOR_DEBOUNCE_MS = 100
SILENT_MS = 120_000
NORMAL = Reading(seq=0, pressure_bar=7.8, mains_ok=True, battery_v=13.2, temperature_c=30.0)


@dataclass
class Rig:
    """A FirePoint and everything it said, with a clock the test moves."""

    fp: FirePoint
    now: int = T0
    events: list[protocol.Event] = field(default_factory=list)

    def send(self, event: FirePointEvent) -> list[tuple[str, bool]]:
        return self._keep(self.fp.handle(event, self.now))

    def at(self, ms: int) -> list[tuple[str, bool]]:
        """Move the clock to T0 + ms and tick."""
        self.now = T0 + ms
        return self._keep(self.fp.tick(self.now))

    def press(self, fire_input: FireInput, active: bool) -> list[tuple[str, bool]]:
        return self.send(InputChanged(fire_input, active, self.now))

    def reading(self, **values: object) -> list[tuple[str, bool]]:
        return self.send(ReadingReceived(_reading(**values)))

    def _keep(self, events: list[protocol.Event]) -> list[tuple[str, bool]]:
        self.events += events
        return [(e.signal, e.active) for e in events]


def _reading(**values: object) -> Reading:
    fields = {
        "pressure_bar": NORMAL.pressure_bar,
        "mains_ok": NORMAL.mains_ok,
        "battery_v": NORMAL.battery_v,
        "temperature_c": NORMAL.temperature_c,
    }
    fields.update(values)
    return Reading(seq=0, **fields)  # type: ignore[arg-type]


@pytest.fixture
def rig() -> Rig:
    return Rig(FirePoint("fp-t1", PROFILE, T0))


# --- the call point and the siren -------------------------------------------------------


def test_call_point_raises_the_alarm_and_sounds_the_siren_once_debounced(rig: Rig) -> None:
    assert rig.press(FireInput.CALL_POINT, True) == []
    assert rig.fp.next_due_ms() == T0 + CALL_DEBOUNCE_MS
    assert rig.at(CALL_DEBOUNCE_MS - 1) == [] and not rig.fp.siren_on
    assert rig.at(CALL_DEBOUNCE_MS) == [("call_point", True)]
    assert rig.fp.siren_on
    [event] = rig.events
    assert event.signal_class is protocol.SignalClass.ALARM
    assert (event.device_id, event.ts, event.value) == ("fp-t1", T0 + CALL_DEBOUNCE_MS, None)


def test_without_debounce_the_siren_sounds_in_the_same_step() -> None:
    profile = _profile(call_point_debounce_ms=0)
    rig = Rig(FirePoint("fp-t2", profile, T0))
    assert rig.press(FireInput.CALL_POINT, True) == [("call_point", True)]
    assert rig.fp.siren_on


def test_chatter_is_debounced_into_one_alarm(rig: Rig) -> None:
    for ms, level in [(0, True), (5, False), (12, True), (20, False), (30, True)]:
        rig.now = T0 + ms
        assert rig.press(FireInput.CALL_POINT, level) == []
    assert rig.at(30 + CALL_DEBOUNCE_MS - 1) == []
    assert rig.at(30 + CALL_DEBOUNCE_MS) == [("call_point", True)]
    assert rig.at(1000) == []


def test_a_glitch_shorter_than_the_debounce_is_ignored(rig: Rig) -> None:
    rig.press(FireInput.CALL_POINT, True)
    rig.now = T0 + 20
    rig.press(FireInput.CALL_POINT, False)
    assert rig.fp.next_due_ms() == T0 + SILENT_MS  # only the silence check is left
    assert rig.at(10_000) == [] and not rig.fp.siren_on


def test_siren_stays_on_for_its_minimum_after_a_quick_reset(rig: Rig) -> None:
    rig.press(FireInput.CALL_POINT, True)
    rig.at(CALL_DEBOUNCE_MS)
    rig.now = T0 + 1_000
    rig.press(FireInput.CALL_POINT, False)
    assert rig.at(1_000 + CALL_DEBOUNCE_MS) == [("call_point", False)]
    assert rig.fp.siren_on
    off_at = CALL_DEBOUNCE_MS + SIREN_MIN_ON_MS
    assert rig.fp.next_due_ms() == T0 + off_at
    rig.at(off_at - 1)
    assert rig.fp.siren_on
    rig.at(off_at)
    assert not rig.fp.siren_on


def test_siren_sounds_as_long_as_the_call_point_is_pressed(rig: Rig) -> None:
    rig.press(FireInput.CALL_POINT, True)
    rig.at(CALL_DEBOUNCE_MS)
    rig.at(10 * SIREN_MIN_ON_MS)
    assert rig.fp.siren_on
    rig.press(FireInput.CALL_POINT, False)
    assert rig.at(10 * SIREN_MIN_ON_MS + CALL_DEBOUNCE_MS) == [("call_point", False)]
    assert not rig.fp.siren_on


def test_no_other_signal_sounds_the_siren(rig: Rig) -> None:
    rig.press(FireInput.CABINET_DOOR, True)
    rig.at(DOOR_DEBOUNCE_MS)
    rig.reading(pressure_bar=1.0, mains_ok=False, battery_v=10.0, temperature_c=90.0)
    rig.send(SerialLost("gone"))
    assert len(rig.fp.active) == 6 and not rig.fp.siren_on


# --- the cabinet door ---------------------------------------------------------------------


def test_cabinet_door_is_supervisory_with_a_restore(rig: Rig) -> None:
    rig.press(FireInput.CABINET_DOOR, True)
    assert rig.at(DOOR_DEBOUNCE_MS - 1) == []
    assert rig.at(DOOR_DEBOUNCE_MS) == [("cabinet_open", True)]
    rig.press(FireInput.CABINET_DOOR, False)
    assert rig.at(2 * DOOR_DEBOUNCE_MS) == [("cabinet_open", False)]
    assert [e.signal_class for e in rig.events] == [protocol.SignalClass.SUPERVISORY] * 2


def test_the_same_level_reported_again_changes_nothing(rig: Rig) -> None:
    rig.press(FireInput.CABINET_DOOR, True)
    rig.at(60)
    rig.press(FireInput.CABINET_DOOR, True)  # the start-up report and an edge, say
    assert rig.at(DOOR_DEBOUNCE_MS) == [("cabinet_open", True)]
    rig.press(FireInput.CABINET_DOOR, True)
    assert rig.at(10 * DOOR_DEBOUNCE_MS) == []


def test_an_input_the_profile_lacks_is_ignored() -> None:
    profile = _profile(door=False)
    rig = Rig(FirePoint("fp-t3", profile, T0))
    assert rig.press(FireInput.CABINET_DOOR, True) == [] and rig.at(1000) == []


# --- analogue values: thresholds with hysteresis -----------------------------------------


@pytest.mark.parametrize(
    ("field_name", "signal", "steps"),
    [
        # pressure_low: raised below 7.0, restored only above 7.5
        ("pressure_bar", "pressure_low", [
            (7.8, None), (7.0, None), (6.99, True), (6.0, None), (7.2, None), (7.5, None),
            (7.51, False), (7.2, None), (6.5, True),
        ]),
        # battery_low: raised below 11.8 V, restored only above 12.4 V
        ("battery_v", "battery_low", [
            (13.2, None), (11.8, None), (11.79, True), (12.0, None), (12.4, None),
            (12.41, False), (11.9, None), (11.0, True),
        ]),
        # temperature_high: raised above 70 C, restored only below 60 C
        ("temperature_c", "temperature_high", [
            (30.0, None), (70.0, None), (70.1, True), (65.0, None), (60.0, None),
            (59.9, False), (69.0, None), (85.0, True),
        ]),
    ],
)  # fmt: skip
def test_thresholds_have_hysteresis(
    rig: Rig, field_name: str, signal: str, steps: list[tuple[float, bool | None]]
) -> None:
    for value, expected in steps:
        got = rig.reading(**{field_name: value})
        assert got == ([] if expected is None else [(signal, expected)]), f"at {value}"
    assert all(e.value is not None for e in rig.events)
    assert [e.value for e in rig.events] == [v for v, x in steps if x is not None]
    expected_class = SIGNAL_CLASS[Signal(signal)]
    assert {e.signal_class for e in rig.events} == {expected_class}


def test_mains_lost_is_trouble_and_restores(rig: Rig) -> None:
    assert rig.reading(mains_ok=False) == [("mains_lost", True)]
    assert rig.reading(mains_ok=False) == []
    assert rig.reading(mains_ok=True) == [("mains_lost", False)]
    assert {e.signal_class for e in rig.events} == {protocol.SignalClass.TROUBLE}


def test_a_sensor_not_fitted_raises_nothing(rig: Rig) -> None:
    rig.reading(pressure_bar=5.0)
    assert rig.send(ReadingReceived(Reading(seq=1))) == []
    assert set(rig.fp.active) == {Signal.PRESSURE_LOW}  # the last real value stands


def test_without_thresholds_only_mains_and_silence_are_watched() -> None:
    rig = Rig(FirePoint("fp-t4", _profile(thresholds=False), T0))
    assert rig.reading(pressure_bar=0.0, battery_v=0.0, temperature_c=120.0) == []
    assert rig.reading(mains_ok=False) == [("mains_lost", True)]


# --- a silent sensor and the serial link ----------------------------------------------------


def test_a_silent_controller_is_trouble_until_the_next_valid_frame(rig: Rig) -> None:
    assert rig.fp.next_due_ms() == T0 + SILENT_MS
    assert rig.at(SILENT_MS - 1) == []
    assert rig.at(SILENT_MS) == [("sensor_silent", True)]
    assert rig.events[-1].signal_class is protocol.SignalClass.TROUBLE
    assert rig.events[-1].detail == "no valid frame for 120 s"
    assert rig.at(3 * SILENT_MS) == [] and rig.fp.next_due_ms() is None
    assert rig.reading() == [("sensor_silent", False)]
    assert rig.fp.next_due_ms() == rig.now + SILENT_MS


def test_each_valid_frame_restarts_the_silence(rig: Rig) -> None:
    for second in range(1, 300):
        rig.now = T0 + second * 1000
        rig.reading()
        assert rig.at(second * 1000) == []
    assert rig.events == []


def test_serial_link_lost_is_raised_once_and_hides_the_silence(rig: Rig) -> None:
    assert rig.send(SerialLost("cannot open /dev/ttyAMA0")) == [("serial_link_lost", True)]
    assert rig.events[-1].detail == "cannot open /dev/ttyAMA0"
    assert rig.send(SerialLost("still cannot open")) == []  # retries raise nothing new
    assert rig.at(10 * SILENT_MS) == []  # no sensor_silent on top of a lost link
    rig.now = T0 + 10 * SILENT_MS
    assert rig.send(SerialRestored()) == [("serial_link_lost", False)]
    assert rig.at(11 * SILENT_MS - 1) == []  # a whole silence period after the restore
    assert rig.at(11 * SILENT_MS) == [("sensor_silent", True)]


def test_silence_already_raised_outlives_a_lost_link(rig: Rig) -> None:
    rig.at(SILENT_MS)
    rig.send(SerialLost("x"))
    rig.send(SerialRestored())
    assert rig.reading() == [("sensor_silent", False)]
    assert Signal.SERIAL_LINK_LOST not in rig.fp.active


def test_a_clock_set_back_does_not_fake_a_silence(rig: Rig) -> None:
    rig.now = T0 + 5_000
    rig.reading()
    assert rig.at(-3_600_000) == []  # NTP stepped the clock an hour back
    assert rig.fp.next_due_ms() == T0 - 3_600_000 + SILENT_MS


# --- views for the retained state and telemetry ------------------------------------------


def test_state_and_readings_views(rig: Rig) -> None:
    assert rig.fp.state() == protocol.FirePointState(siren_on=False, signals=[])
    assert rig.fp.readings() is None
    rig.press(FireInput.CALL_POINT, True)
    rig.at(CALL_DEBOUNCE_MS)
    rig.reading(pressure_bar=6.0)
    state = rig.fp.state()
    assert state.siren_on
    assert [(s.signal, s.signal_class.value, s.since) for s in state.signals] == [
        ("call_point", "alarm", T0 + CALL_DEBOUNCE_MS),
        ("pressure_low", "supervisory", T0 + CALL_DEBOUNCE_MS),
    ]
    readings = rig.fp.readings()
    assert readings is not None and readings.pressure_bar == 6.0 and readings.at == rig.now


# --- any sequence: raised and restored alternately, the siren with the alarm ---------------

fire_events = st.one_of(
    st.builds(InputChanged, st.sampled_from(FireInput), st.booleans(), st.just(0)),
    st.builds(
        ReadingReceived,
        st.builds(
            Reading,
            seq=st.just(0),
            pressure_bar=st.none() | st.sampled_from([5.0, 7.0, 7.2, 7.5, 8.0]),
            mains_ok=st.none() | st.booleans(),
            battery_v=st.none() | st.sampled_from([11.0, 11.8, 12.0, 12.4, 13.0]),
            temperature_c=st.none() | st.sampled_from([50.0, 60.0, 65.0, 70.0, 80.0]),
        ),
    ),
    st.builds(SerialLost, st.just("lost")),
    st.just(SerialRestored()),
)


@given(st.lists(st.tuples(st.integers(0, 200_000), fire_events), max_size=40))
@settings(max_examples=300, deadline=None)
def test_any_sequence_raises_and_restores_alternately(
    steps: list[tuple[int, FirePointEvent]],
) -> None:
    fp = FirePoint("fp-any", PROFILE, T0)
    now = T0
    published: list[protocol.Event] = []
    for gap_ms, event in steps:
        now += gap_ms
        if isinstance(event, InputChanged):
            event = InputChanged(event.input, event.active, now)
        published += fp.tick(now) + fp.handle(event, now)
        assert fp.siren_on or Signal.CALL_POINT not in fp.active
        due = fp.next_due_ms()
        assert due is None or due > now  # a tick never leaves itself overdue
    last: dict[str, bool] = {}
    for e in published:
        assert last.get(e.signal, False) != e.active, f"{e.signal} {e.active} twice"
        assert e.signal_class is SIGNAL_CLASS[Signal(e.signal)]
        last[e.signal] = e.active
    assert {Signal(s) for s, a in last.items() if a} == set(fp.active)


# --- through the core, with typed fakes ---------------------------------------------------


@dataclass
class CoreRig:
    core: BridgeCore
    clock: FakeClock
    link: FakeLink
    siren: FakeRelay

    def events(self) -> list[tuple[str, str, bool]]:
        return [
            (m.signal_class.value, m.signal, m.active)
            for m in self.link.messages(protocol.Channel.EVENT)
            if isinstance(m, protocol.Event)
        ]


@pytest.fixture
def core_rig() -> CoreRig:
    clock, link, siren = FakeClock(t_ms=T0), FakeLink(), FakeRelay()
    core = BridgeCore(
        "fp-core",
        PROFILE,
        ["thon-fp"],
        Ports(
            link=link,
            player=FakePlayer(),
            relay=None,
            fetcher=FakeFetcher(),
            diagnostics=FakeDiagnostics(),
            siren=siren,
        ),
        clock,
    )
    return CoreRig(core, clock, link, siren)


def test_core_sounds_the_siren_then_publishes_the_alarm(core_rig: CoreRig) -> None:
    rig = core_rig
    rig.core.process(InputChanged(FireInput.CALL_POINT, True, rig.clock.now_ms()))
    assert not rig.siren.is_on
    assert rig.core._next_timer_s() == CALL_DEBOUNCE_MS / 1000
    rig.clock.advance(CALL_DEBOUNCE_MS)
    rig.core.process(None)  # the loop woke up for the fire-point timer
    assert rig.siren.switched == [True]
    assert rig.events() == [("alarm", "call_point", True)]
    state = rig.link.last_state()
    assert state.fire_point is not None and state.fire_point.siren_on
    assert [s.signal for s in state.fire_point.signals] == ["call_point"]


def test_core_switches_the_siren_off_after_reset_and_minimum(core_rig: CoreRig) -> None:
    rig = core_rig
    rig.core.process(InputChanged(FireInput.CALL_POINT, True, rig.clock.now_ms()))
    rig.clock.advance(CALL_DEBOUNCE_MS)
    rig.core.process(None)
    rig.core.process(InputChanged(FireInput.CALL_POINT, False, rig.clock.now_ms()))
    rig.clock.advance(CALL_DEBOUNCE_MS)
    rig.core.process(None)
    assert rig.siren.is_on and rig.events()[-1] == ("alarm", "call_point", False)
    rig.clock.advance(SIREN_MIN_ON_MS)
    rig.core.process(None)
    assert rig.siren.switched == [True, False]
    assert rig.link.last_state().fire_point == protocol.FirePointState(siren_on=False)


def test_core_reports_readings_in_telemetry_and_silence_as_trouble(core_rig: CoreRig) -> None:
    rig = core_rig
    rig.core.process(ReadingReceived(NORMAL))
    readings = rig.core.telemetry_message().fire_point
    assert readings is not None and readings.pressure_bar == 7.8 and readings.mains_ok
    rig.clock.advance(SILENT_MS)
    rig.core.process(None)
    assert rig.events() == [("trouble", "sensor_silent", True)]
    rig.core.process(ReadingReceived(_reading(pressure_bar=6.0)))
    assert rig.events()[1:] == [
        ("trouble", "sensor_silent", False),
        ("supervisory", "pressure_low", True),
    ]


def test_a_speaker_node_ignores_fire_point_events() -> None:
    link = FakeLink()
    core = BridgeCore(
        "loa-nofp",
        load_profile("speaker-node"),
        [],
        Ports(
            link=link,
            player=FakePlayer(),
            relay=FakeRelay(),
            fetcher=FakeFetcher(),
            diagnostics=FakeDiagnostics(),
        ),
        FakeClock(),
    )
    core.process(InputChanged(FireInput.CALL_POINT, True, 0))
    core.process(SerialLost("x"))
    assert link.messages(protocol.Channel.EVENT) == []
    assert link.last_state().fire_point is None and core.counters.get("internal_error", 0) == 0


# --- helpers ----------------------------------------------------------------------------------


def _profile(
    *, call_point_debounce_ms: int = CALL_DEBOUNCE_MS, door: bool = True, thresholds: bool = True
) -> DeviceProfile:
    """The fire-point-node profile with some parts changed."""
    assert PROFILE.gpio.call_point is not None
    call_point = PROFILE.gpio.call_point.model_copy(update={"debounce_ms": call_point_debounce_ms})
    gpio = PROFILE.gpio.model_copy(
        update={
            "call_point": call_point,
            "cabinet_door": PROFILE.gpio.cabinet_door if door else None,
        }
    )
    return PROFILE.model_copy(
        update={"gpio": gpio, "thresholds": PROFILE.thresholds if thresholds else None}
    )
