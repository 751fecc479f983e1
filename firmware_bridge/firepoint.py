"""The fire point's decisions: debounced inputs, thresholds with hysteresis, a silent sensor,
the serial link, and the siren. Pure logic: time comes in as `now_ms`; no GPIO, no serial.

The core owns one FirePoint, hands it the adapters' events and publishes what it returns.
Signals (docs/fire-point.md has the table):

- alarm: call_point (contact closed). Sounds the siren at once; nothing of the network is
  involved in switching the siren on or off.
- supervisory: cabinet_open, pressure_low, temperature_high.
- trouble: mains_lost, battery_low, sensor_silent, serial_link_lost.

Each signal is raised once and restored once: repeated readings on the same side of a
threshold, or repeated link-lost reports while retrying, publish nothing.

The siren sounds while any alarm is active, and for at least SIREN_MIN_ON_MS after it
started, so a call point reset at once still gives an audible warning.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from device_profiles import protocol
from device_profiles.profiles import DeviceProfile, HighThreshold, LowThreshold, Thresholds
from device_profiles.serial_frames import Reading

SIREN_MIN_ON_MS = 30_000


class FireInput(enum.StrEnum):
    """The fire point's contact inputs, named as in the profile's [gpio] table."""

    CALL_POINT = "call_point"
    CABINET_DOOR = "cabinet_door"


class Signal(enum.StrEnum):
    CALL_POINT = "call_point"
    CABINET_OPEN = "cabinet_open"
    PRESSURE_LOW = "pressure_low"
    TEMPERATURE_HIGH = "temperature_high"
    MAINS_LOST = "mains_lost"
    BATTERY_LOW = "battery_low"
    SENSOR_SILENT = "sensor_silent"
    SERIAL_LINK_LOST = "serial_link_lost"


_ALARM = protocol.SignalClass.ALARM
_SUPERVISORY = protocol.SignalClass.SUPERVISORY
_TROUBLE = protocol.SignalClass.TROUBLE

SIGNAL_CLASS: dict[Signal, protocol.SignalClass] = {
    Signal.CALL_POINT: _ALARM,
    Signal.CABINET_OPEN: _SUPERVISORY,
    Signal.PRESSURE_LOW: _SUPERVISORY,
    # A cabinet's temperature sensor in the sun is no listed heat detector: too hot for the
    # extinguishers is off-normal, not a fire. A heat detector is wired as an alarm input.
    Signal.TEMPERATURE_HIGH: _SUPERVISORY,
    Signal.MAINS_LOST: _TROUBLE,
    Signal.BATTERY_LOW: _TROUBLE,
    Signal.SENSOR_SILENT: _TROUBLE,
    Signal.SERIAL_LINK_LOST: _TROUBLE,
}

_INPUT_SIGNAL = {
    FireInput.CALL_POINT: Signal.CALL_POINT,
    FireInput.CABINET_DOOR: Signal.CABINET_OPEN,
}


# --- the core's events from the fire-point adapters ------------------------------------


@dataclass(frozen=True)
class InputChanged:
    """A raw (not yet debounced) level seen on an input: call point pressed / door open."""

    input: FireInput
    active: bool
    at_ms: int


@dataclass(frozen=True)
class ReadingReceived:
    reading: Reading


@dataclass(frozen=True)
class SerialLost:
    detail: str


@dataclass(frozen=True)
class SerialRestored:
    pass


FirePointEvent = InputChanged | ReadingReceived | SerialLost | SerialRestored
FIRE_POINT_EVENTS = (InputChanged, ReadingReceived, SerialLost, SerialRestored)


# --- the state machine ------------------------------------------------------------------


@dataclass
class _Debounced:
    """Accepts a level once it has been stable for `debounce_ms` (a glitch is ignored)."""

    debounce_ms: int
    stable: bool = False  # the accepted level; inputs are assumed inactive at boot
    raw: bool = False
    raw_since_ms: int = 0

    def observe(self, level: bool, at_ms: int) -> None:
        if level != self.raw:
            self.raw = level
            self.raw_since_ms = at_ms

    def due_ms(self) -> int | None:
        return self.raw_since_ms + self.debounce_ms if self.raw != self.stable else None

    def settle(self, now_ms: int) -> bool | None:
        """The newly accepted level, or None when nothing changed."""
        due = self.due_ms()
        if due is None or now_ms < due:
            return None
        self.stable = self.raw
        return self.stable


class FirePoint:
    """Every method takes the time and returns the events to publish, in order; the wanted
    siren state is `siren_on`, the next time `tick()` is due is `next_due_ms()`."""

    def __init__(
        self,
        device_id: str,
        profile: DeviceProfile,
        now_ms: int,
        *,
        siren_min_on_ms: int = SIREN_MIN_ON_MS,
    ) -> None:
        self.device_id = device_id
        self.thresholds = profile.thresholds or Thresholds()
        self.silent_ms = self.thresholds.sensor_silent_s * 1000
        self.siren_min_on_ms = siren_min_on_ms
        self.inputs: dict[FireInput, _Debounced] = {}
        for fire_input in FireInput:
            spec = getattr(profile.gpio, fire_input.value)
            if spec is not None:
                self.inputs[fire_input] = _Debounced(spec.debounce_ms)
        self.active: dict[Signal, int] = {}  # raised signal -> since (epoch ms)
        self.siren_on = False
        self._siren_since_ms = 0
        self.link_up = True
        self._last_frame_ms = now_ms  # silence is measured from the start
        self.last_reading: Reading | None = None
        self.last_reading_ms: int | None = None

    # --- inputs ----------------------------------------------------------------------------

    def handle(self, event: FirePointEvent, now_ms: int) -> list[protocol.Event]:
        if isinstance(event, InputChanged):
            debounced = self.inputs.get(event.input)
            if debounced is not None:
                debounced.observe(event.active, min(event.at_ms, now_ms))
            return self.tick(now_ms)
        if isinstance(event, ReadingReceived):
            return self._on_reading(event.reading, now_ms) + self.tick(now_ms)
        if isinstance(event, SerialLost):
            self.link_up = False
            return self._set(Signal.SERIAL_LINK_LOST, True, now_ms, detail=event.detail)
        self.link_up = True
        self._last_frame_ms = now_ms  # the controller gets a full silence period again
        return self._set(Signal.SERIAL_LINK_LOST, False, now_ms)

    def tick(self, now_ms: int) -> list[protocol.Event]:
        """Settle debounced inputs, check for silence, let the siren stop when it may."""
        out: list[protocol.Event] = []
        for fire_input, debounced in self.inputs.items():
            level = debounced.settle(now_ms)
            if level is not None:
                out += self._set(_INPUT_SIGNAL[fire_input], level, now_ms)
        self._last_frame_ms = min(self._last_frame_ms, now_ms)  # the clock was set back
        if (
            self.link_up
            and Signal.SENSOR_SILENT not in self.active
            and now_ms >= self._last_frame_ms + self.silent_ms
        ):
            silent_s = (now_ms - self._last_frame_ms) // 1000
            out += self._set(
                Signal.SENSOR_SILENT, True, now_ms, detail=f"no valid frame for {silent_s} s"
            )
        self._update_siren(now_ms)
        return out

    def next_due_ms(self) -> int | None:
        """When tick() must run next (None: only when an event arrives)."""
        due = [d for d in (i.due_ms() for i in self.inputs.values()) if d is not None]
        if self.link_up and Signal.SENSOR_SILENT not in self.active:
            due.append(self._last_frame_ms + self.silent_ms)
        if self.siren_on and not self._alarm_active():
            due.append(self._siren_since_ms + self.siren_min_on_ms)
        return min(due) if due else None

    def _on_reading(self, reading: Reading, now_ms: int) -> list[protocol.Event]:
        self._last_frame_ms = now_ms
        self.last_reading = reading
        self.last_reading_ms = now_ms
        out = self._set(Signal.SENSOR_SILENT, False, now_ms)
        if reading.mains_ok is not None:
            out += self._set(Signal.MAINS_LOST, not reading.mains_ok, now_ms)
        t = self.thresholds
        out += self._low(Signal.PRESSURE_LOW, reading.pressure_bar, t.pressure_low_bar, now_ms)
        out += self._low(Signal.BATTERY_LOW, reading.battery_v, t.battery_low_v, now_ms)
        out += self._high(
            Signal.TEMPERATURE_HIGH, reading.temperature_c, t.temperature_high_c, now_ms
        )
        return out

    def _low(
        self, signal: Signal, value: float | None, limit: LowThreshold | None, now_ms: int
    ) -> list[protocol.Event]:
        """Raised below the trigger, restored only above the restore level."""
        if value is None or limit is None:
            return []
        if value < limit.trigger:
            return self._set(signal, True, now_ms, value=value)
        if value > limit.restore:
            return self._set(signal, False, now_ms, value=value)
        return []

    def _high(
        self, signal: Signal, value: float | None, limit: HighThreshold | None, now_ms: int
    ) -> list[protocol.Event]:
        """Raised above the trigger, restored only below the restore level."""
        if value is None or limit is None:
            return []
        if value > limit.trigger:
            return self._set(signal, True, now_ms, value=value)
        if value < limit.restore:
            return self._set(signal, False, now_ms, value=value)
        return []

    # --- signals and the siren --------------------------------------------------------------

    def _set(
        self,
        signal: Signal,
        active: bool,
        now_ms: int,
        *,
        value: float | None = None,
        detail: str | None = None,
    ) -> list[protocol.Event]:
        """Raise or restore `signal`; nothing when it already is so (no event storm)."""
        if active == (signal in self.active):
            return []
        if active:
            self.active[signal] = now_ms
        else:
            del self.active[signal]
        self._update_siren(now_ms)
        return [
            protocol.Event(
                id=protocol.new_message_id(),
                ts=now_ms,
                device_id=self.device_id,
                signal_class=SIGNAL_CLASS[signal],
                signal=signal.value,
                active=active,
                value=value,
                detail=detail,
            )
        ]

    def _alarm_active(self) -> bool:
        return any(SIGNAL_CLASS[s] is _ALARM for s in self.active)

    def _update_siren(self, now_ms: int) -> None:
        if self._alarm_active():
            if not self.siren_on:
                self.siren_on = True
                self._siren_since_ms = now_ms
        elif self.siren_on and now_ms >= self._siren_since_ms + self.siren_min_on_ms:
            self.siren_on = False

    # --- views for the retained state and telemetry ------------------------------------------

    def state(self) -> protocol.FirePointState:
        """Changes only when a signal or the siren does (the retained state is republished)."""
        return protocol.FirePointState(
            siren_on=self.siren_on,
            signals=[
                protocol.ActiveSignal(signal_class=SIGNAL_CLASS[s], signal=s.value, since=since)
                for s, since in sorted(self.active.items(), key=lambda item: item[0].value)
            ],
        )

    def readings(self) -> protocol.FirePointReadings | None:
        """The last valid reading, for telemetry; None before the first one."""
        r = self.last_reading
        if r is None or self.last_reading_ms is None:
            return None
        return protocol.FirePointReadings(
            at=self.last_reading_ms,
            pressure_bar=r.pressure_bar,
            mains_ok=r.mains_ok,
            battery_v=r.battery_v,
            temperature_c=r.temperature_c,
        )
