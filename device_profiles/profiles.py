"""Hardware profiles: declarative TOML files naming a node's capabilities, pins and timings.

Validated once on load; every error names the file and the key (with a "did you mean").
"""

from __future__ import annotations

import difflib
import enum
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROFILES_DIR = Path(__file__).parent / "profiles"
BCM_PINS = range(0, 28)  # GPIO0..GPIO27 on the 40-pin header


class ProfileError(ValueError):
    """A profile that cannot be used, with the file and key that are wrong."""


class Capability(enum.StrEnum):
    SPEAKER = "speaker"
    FIRE_POINT = "fire_point"


Pin = Annotated[int, Field(ge=BCM_PINS.start, le=BCM_PINS.stop - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OutputPin(_Strict):
    pin: Pin
    active_high: bool = True


class InputPin(_Strict):
    pin: Pin
    pull_up: bool = True  # closed contact pulls the pin to ground
    debounce_ms: Annotated[int, Field(ge=0, le=5000)] = 50


class Gpio(_Strict):
    amplifier: OutputPin | None = None
    siren: OutputPin | None = None
    cabinet_door: InputPin | None = None
    call_point: InputPin | None = None


class Serial(_Strict):
    url: Annotated[str, Field(min_length=1)]
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    protocol: Literal["loa-fp-v1"] = "loa-fp-v1"


class Audio(_Strict):
    player: Literal["alsa", "simulated"] = "alsa"
    alsa_device: str = "default"
    default_volume_pct: Annotated[int, Field(ge=0, le=100)] = 80


class Amplifier(_Strict):
    warm_up_ms: Annotated[int, Field(ge=0, le=30_000)] = 1500
    cool_down_ms: Annotated[int, Field(ge=0, le=600_000)] = 5000
    max_on_s: Annotated[int, Field(ge=10, le=86_400)] = 3600


class Telemetry(_Strict):
    interval_s: Annotated[int, Field(ge=1, le=3600)] = 60


class LowThreshold(_Strict):
    """Raised below `trigger`, restored only above `restore` (hysteresis)."""

    trigger: float
    restore: float

    @model_validator(mode="after")
    def _restore_above(self) -> LowThreshold:
        if self.restore <= self.trigger:
            raise ValueError(f"restore ({self.restore}) must be above trigger ({self.trigger})")
        return self


class HighThreshold(_Strict):
    """Raised above `trigger`, restored only below `restore` (hysteresis)."""

    trigger: float
    restore: float

    @model_validator(mode="after")
    def _restore_below(self) -> HighThreshold:
        if self.restore >= self.trigger:
            raise ValueError(f"restore ({self.restore}) must be below trigger ({self.trigger})")
        return self


class Thresholds(_Strict):
    pressure_low_bar: LowThreshold | None = None
    battery_low_v: LowThreshold | None = None
    temperature_high_c: HighThreshold | None = None
    sensor_silent_s: Annotated[int, Field(ge=5, le=3600)] = 120


class DeviceProfile(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    description: str = ""
    capabilities: Annotated[frozenset[Capability], Field(min_length=1)]
    gpio: Gpio = Gpio()
    serial: Serial | None = None
    audio: Audio | None = None
    amplifier: Amplifier | None = None
    telemetry: Telemetry = Telemetry()
    thresholds: Thresholds | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if Capability.SPEAKER in self.capabilities:
            if self.audio is None:
                raise ValueError("a speaker node needs an [audio] table")
            if self.gpio.amplifier is None:
                raise ValueError("a speaker node needs gpio.amplifier")
        if Capability.FIRE_POINT in self.capabilities:
            if self.gpio.call_point is None or self.gpio.siren is None:
                raise ValueError("a fire-point node needs gpio.call_point and gpio.siren")
            if self.serial is None:
                raise ValueError("a fire-point node needs a [serial] table")
        pins: dict[int, str] = {}
        for role in ("amplifier", "siren", "cabinet_door", "call_point"):
            spec = getattr(self.gpio, role)
            if spec is None:
                continue
            if spec.pin in pins:
                raise ValueError(f"gpio.{role}.pin {spec.pin} is already gpio.{pins[spec.pin]}.pin")
            pins[spec.pin] = role
        return self

    @property
    def has_speaker(self) -> bool:
        return Capability.SPEAKER in self.capabilities

    @property
    def has_fire_point(self) -> bool:
        return Capability.FIRE_POINT in self.capabilities


def _known_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed at `loc` (the parent of an unknown key), for a "did you mean"."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        field = current.model_fields.get(str(part)) if current is not None else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    return list(current.model_fields) if current is not None else []


def explain(source: str, model: type[BaseModel], exc: ValidationError) -> str:
    """One line naming the file, the key path and what is wrong."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{source}: {key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{source}: {key}: missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if err["type"].startswith(("less_than", "greater_than")) and key.endswith(".pin"):
        msg = f"{value} is not a valid BCM GPIO pin (0-27)"
    return f"{source}: {key}: {msg}" if loc else f"{source}: {msg}"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path.name}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ProfileError(f"{path.name}: not valid TOML: nested too deeply") from None


def list_profiles() -> list[str]:
    """Names of the profiles shipped with the project."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A bundled profile by name ('speaker-node') or any profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        if str(name_or_path) not in list_profiles():
            close = difflib.get_close_matches(str(name_or_path), list_profiles(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ProfileError(f"unknown profile {str(name_or_path)!r}{hint}")
        path = PROFILES_DIR / f"{name_or_path}.toml"
    data = read_toml(path)
    try:
        return DeviceProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(explain(path.name, DeviceProfile, exc)) from None
