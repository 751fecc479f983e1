"""What the live board says about a device, derived from what the ingest stored.

Pure functions of a device's stored `state` and `telemetry` (JSON as the ingest keeps them),
shared by the ingest (which moves `Device.changed_at` when any of it changes) and the API.
The API's SQL filters (console/api_devices.py) select the same devices as these functions;
a test keeps the two in step.
"""

from __future__ import annotations

from typing import Any, Literal

Json = dict[str, Any] | None
FireState = Literal["normal", "alarm", "supervisory", "trouble"]

# The board's problem filters; "any": offline, a fault or a fire alarm.
PROBLEMS = ("any", "offline", "fault", "fire_alarm", "playing")

# Health limits read from telemetry: beyond them the device shows a fault.
DISK_LOW_MB = 200.0  # the audio cache and the outbox need room
CLOCK_DRIFT_MS = 2000  # speakers of a zone start together by `play_at`
CPU_HOT_C = 80.0  # a Raspberry Pi throttles from 80-85 °C

# Signal classes that count as a fault (an alarm is counted apart, as a fire alarm).
FAULT_CLASSES = ("trouble", "supervisory")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def active_signals(state: Json) -> list[dict[str, Any]]:
    """The fire-point signals raised and not yet restored, as the device's state lists them."""
    signals = _dict(_dict(state).get("fire_point")).get("signals")
    if not isinstance(signals, list):
        return []
    return [s for s in signals if isinstance(s, dict) and isinstance(s.get("signal"), str)]


def telemetry_faults(telemetry: Json) -> list[str]:
    """Health problems read from the last telemetry: disk_low, clock_drift, overheating."""
    data = _dict(telemetry)
    found = []
    disk = _number(data.get("disk_free_mb"))
    if disk is not None and disk < DISK_LOW_MB:
        found.append("disk_low")
    offset = _number(data.get("clock_offset_ms"))
    if offset is not None and abs(offset) > CLOCK_DRIFT_MS:
        found.append("clock_drift")
    cpu = _number(data.get("cpu_temp_c"))
    if cpu is not None and cpu >= CPU_HOT_C:
        found.append("overheating")
    return found


def faults(state: Json, telemetry: Json) -> list[dict[str, Any]]:
    """Trouble and supervisory signals, then telemetry health problems (class "health")."""
    out = [
        {"signal": s["signal"], "class": s.get("signal_class"), "since": s.get("since")}
        for s in active_signals(state)
        if s.get("signal_class") in FAULT_CLASSES
    ]
    out += [
        {"signal": name, "class": "health", "since": None} for name in telemetry_faults(telemetry)
    ]
    return out


def fire_alarm(state: Json) -> bool:
    return any(s.get("signal_class") == "alarm" for s in active_signals(state))


def fire_state(state: Json) -> FireState | None:
    """A fire point's worst active class, "normal" when none; None for a device without one."""
    if not isinstance(_dict(state).get("fire_point"), dict):
        return None
    classes = {s.get("signal_class") for s in active_signals(state)}
    order: tuple[FireState, ...] = ("alarm", "supervisory", "trouble")
    return next((worst for worst in order if worst in classes), "normal")


def playing(online: bool, state: Json) -> dict[str, Any] | None:
    """What an online device is playing (a device offline plays nothing the console knows)."""
    now = _dict(state).get("playing")
    if not online or not isinstance(now, dict) or not now.get("command_id"):
        return None
    return now


def matches(problem: str | None, online: bool, state: Json, telemetry: Json) -> bool:
    """Whether a device shows the problem (one of PROBLEMS; None or "" matches every device)."""
    if not problem:
        return True
    if problem == "offline":
        return not online
    if problem == "fault":
        return bool(faults(state, telemetry))
    if problem == "fire_alarm":
        return fire_alarm(state)
    if problem == "playing":
        return playing(online, state) is not None
    if problem == "any":
        return not online or bool(faults(state, telemetry)) or fire_alarm(state)
    raise ValueError(f"unknown problem {problem!r}")
