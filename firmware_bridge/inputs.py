"""The fire point's contact inputs through gpiozero: callbacks only post raw levels.

Debouncing is done by the core's FirePoint on the posted levels (stable for the profile's
`debounce_ms`), not by gpiozero's `bounce_time`: that one is ignored by MockFactory, and
on real pins it means "drop edges for a while" (RPi.GPIO) or "wait until stable" (lgpio),
so it would be untested here and could drop the final edge of a bounce there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from gpiozero import DigitalInputDevice

from device_profiles.profiles import Gpio
from firmware_bridge.firepoint import FireInput, InputChanged
from firmware_bridge.ports import Clock

log = logging.getLogger(__name__)

# How each contact is wired: the call point's contact closes when it is pressed, the
# cabinet door's when the door is shut; a broken door wire therefore reads "open".
ACTIVE_WHEN_CLOSED = {FireInput.CALL_POINT: True, FireInput.CABINET_DOOR: False}


class GpioInputs:
    """One DigitalInputDevice per configured contact; `pull_up` from the profile says
    whether a closed contact pulls the pin low (True) or high (False)."""

    def __init__(
        self,
        gpio: Gpio,
        post: Callable[[InputChanged], None],
        clock: Clock,
        pin_factory: Any = None,
    ) -> None:
        self._post = post
        self._clock = clock
        self._lock = threading.Lock()
        self.errors = 0
        self._devices: dict[FireInput, DigitalInputDevice] = {}
        try:
            for fire_input in FireInput:
                spec = getattr(gpio, fire_input.value)
                if spec is None:
                    continue
                device = DigitalInputDevice(
                    spec.pin, pull_up=spec.pull_up, bounce_time=None, pin_factory=pin_factory
                )
                self._devices[fire_input] = device
        except Exception:
            self.close()
            raise

    def _callback(self, fire_input: FireInput, *, closed: bool) -> Callable[[], None]:
        def changed() -> None:
            self._report(fire_input, closed)

        return changed

    def _report(self, fire_input: FireInput, closed: bool) -> None:
        """Runs on gpiozero's thread: translate and post, never raise into it."""
        try:
            active = closed == ACTIVE_WHEN_CLOSED[fire_input]
            self._post(InputChanged(fire_input, active, self._clock.now_ms()))
        except Exception:
            with self._lock:
                self.errors += 1
            log.exception("could not report %s", fire_input.value)

    def start(self) -> None:
        """Report changes from now on, and every input's level now (a door already open at
        boot is off-normal)."""
        for fire_input, device in self._devices.items():
            device.when_activated = self._callback(fire_input, closed=True)
            device.when_deactivated = self._callback(fire_input, closed=False)
        for fire_input, device in self._devices.items():
            self._report(fire_input, bool(device.is_active))

    def rest_simulated_contacts(self) -> None:
        """`--simulate` (MockFactory pins): door shut, call point not pressed, as on site."""
        for fire_input, device in self._devices.items():
            if not hasattr(device.pin, "drive_low"):
                continue  # a real pin: it reads what is wired to it
            closed = not ACTIVE_WHEN_CLOSED[fire_input]
            high = closed != device.pull_up  # with a pull-up, a closed contact reads low
            device.pin.drive_high() if high else device.pin.drive_low()

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"gpio_input_error": self.errors} if self.errors else {}

    def close(self) -> None:
        for device in self._devices.values():
            device.close()
        self._devices.clear()
