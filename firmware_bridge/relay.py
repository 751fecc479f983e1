"""The amplifier relay through gpiozero: off at start, off on close, whatever happened."""

from __future__ import annotations

from typing import Any

from gpiozero import OutputDevice

from device_profiles.profiles import OutputPin


class GpioRelay:
    """`initial_value=False`: the relay is off from the moment the pin is claimed."""

    def __init__(self, spec: OutputPin, pin_factory: Any = None) -> None:
        self._device = OutputDevice(
            spec.pin, active_high=spec.active_high, initial_value=False, pin_factory=pin_factory
        )

    @property
    def is_on(self) -> bool:
        return bool(self._device.value)

    def on(self) -> None:
        self._device.on()

    def off(self) -> None:
        self._device.off()

    def close(self) -> None:
        self._device.off()
        self._device.close()
