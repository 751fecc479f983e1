"""The amplifier relay through gpiozero: off at start, off on close, whatever happened."""

from __future__ import annotations

from typing import Any

from gpiozero import OutputDevice

from device_profiles.profiles import DeviceProfile, OutputPin


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


def switch_off_outputs(profile: DeviceProfile, pin_factory: Any = None) -> list[int]:
    """Drive every output of the profile (amplifier relay, siren) to OFF and release it.

    Run by systemd after the bridge ended however it ended (`--safe-off`); returns the pins.
    """
    pins = []
    for spec in (profile.gpio.amplifier, profile.gpio.siren):
        if spec is not None:
            GpioRelay(spec, pin_factory).close()
            pins.append(spec.pin)
    return pins
