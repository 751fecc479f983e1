"""The v1 wire contract: the only module that builds an MQTT topic or (de)serialises a payload.

Both sides (console and bridge) import it; docs/protocol.md describes it for humans and the
golden fixtures in tests/fixtures/protocol pin the bytes.
"""

from __future__ import annotations

import enum
import json
import re
import uuid
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

PROTOCOL_VERSION = 1
TOPIC_ROOT = "loa/v1"
MAX_PAYLOAD_BYTES = 64 * 1024

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_SHA256_RE = r"^[0-9a-f]{64}$"


class ProtocolError(ValueError):
    """A topic or payload that does not follow the v1 contract."""


def validate_slug(value: str, what: str = "id") -> str:
    """Zone and device ids are topic levels: lower-case letters, digits and '-' only."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ProtocolError(
            f"invalid {what} {value!r}: use 1-63 lower-case letters, digits or '-', "
            "starting with a letter or digit"
        )
    return value


def new_message_id() -> str:
    """A fresh random message id (32 hex characters)."""
    return uuid.uuid4().hex


# --- topics -----------------------------------------------------------------------------


class Channel(enum.StrEnum):
    """The per-device topics; direction and retention are documented in docs/protocol.md."""

    AVAILABILITY = "availability"  # device -> console, retained, Last Will
    STATE = "state"  # device -> console, retained
    TELEMETRY = "telemetry"  # device -> console
    EVENT = "event"  # device -> console (alarms, faults, restores)
    ACK = "ack"  # device -> console (command progress)
    CONFIG = "config"  # console -> device, retained
    CMD = "cmd"  # console -> one device (not retained)


UPLINK_CHANNELS = (
    Channel.AVAILABILITY,
    Channel.STATE,
    Channel.TELEMETRY,
    Channel.EVENT,
    Channel.ACK,
)
RETAINED_CHANNELS = frozenset({Channel.AVAILABILITY, Channel.STATE, Channel.CONFIG})
QOS: dict[Channel, int] = {
    Channel.AVAILABILITY: 1,
    Channel.STATE: 1,
    Channel.TELEMETRY: 0,
    Channel.EVENT: 1,
    Channel.ACK: 1,
    Channel.CONFIG: 1,
    Channel.CMD: 1,
}
ZONE_COMMAND_QOS = 1


def device_topic(device_id: str, channel: Channel) -> str:
    """Topic of one device's channel, e.g. loa/v1/dev/loa-01/ack."""
    return f"{TOPIC_ROOT}/dev/{validate_slug(device_id, 'device id')}/{Channel(channel).value}"


def zone_command_topic(zone_id: str) -> str:
    """Topic one publish to which reaches every device in the zone (the broker fans out)."""
    return f"{TOPIC_ROOT}/zone/{validate_slug(zone_id, 'zone id')}/cmd"


def uplink_subscription(channel: Channel) -> str:
    """Wildcard the console subscribes to for one uplink channel of every device."""
    return f"{TOPIC_ROOT}/dev/+/{Channel(channel).value}"


def parse_device_topic(topic: str) -> tuple[str, Channel]:
    """Split a device topic into (device_id, channel); ProtocolError if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[2] != "dev":
        raise ProtocolError(f"not a v1 device topic: {topic!r}")
    try:
        channel = Channel(parts[4])
    except ValueError:
        raise ProtocolError(f"unknown channel {parts[4]!r} in topic {topic!r}") from None
    return validate_slug(parts[3], "device id"), channel


def parse_zone_command_topic(topic: str) -> str:
    """Zone id of a zone command topic; ProtocolError if it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[2:5:2] != ["zone", "cmd"]:
        raise ProtocolError(f"not a v1 zone command topic: {topic!r}")
    return validate_slug(parts[3], "zone id")


# --- payloads ---------------------------------------------------------------------------

EpochMs = Annotated[int, Field(ge=0, le=2**53)]
MessageId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Slug = Annotated[str, Field(pattern=_ID_RE.pattern)]
Percent = Annotated[int, Field(ge=0, le=100)]


class Message(BaseModel):
    """Fields every payload carries: contract version, message id and UTC time in epoch ms."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=4096)
    kind: ClassVar[str] = "message"

    v: Literal[1] = 1
    id: MessageId
    ts: EpochMs


class Priority(enum.StrEnum):
    """Play priorities, lowest first; STOP is a command of its own and beats all of them."""

    SCHEDULED = "scheduled"
    LIVE = "live"
    EMERGENCY = "emergency"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.SCHEDULED: 10, Priority.LIVE: 20, Priority.EMERGENCY: 30}


class AudioRef(BaseModel):
    """Audio named by URL and content hash; a bridge refuses bytes whose sha256 differs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://")]
    sha256: Annotated[str, Field(pattern=_SHA256_RE)]
    duration_ms: Annotated[int, Field(ge=0)]
    bytes: Annotated[int, Field(ge=0)] | None = None


class PlayCommand(Message):
    """Play one audio item on every device that receives it (zone or device command topic)."""

    kind: ClassVar[str] = "play"
    type: Literal["play"] = "play"
    priority: Priority
    audio: AudioRef
    volume_pct: Percent | None = None  # None: the device's configured volume
    play_at: EpochMs | None = None  # start together at this UTC time, not before
    expires_at: EpochMs  # not started by then: dropped and reported failed("expired")
    gong: bool = False  # gong before and after
    # Times to play; REPEAT_UNTIL_STOPPED (0): again and again until a STOP (emergencies).
    repeat: Annotated[int, Field(ge=0, le=100)] = 1
    title: Annotated[str, Field(max_length=200)] = ""


REPEAT_UNTIL_STOPPED = 0


class StopCommand(Message):
    """Stop the command `target_id`, or everything playing and queued when it is None."""

    kind: ClassVar[str] = "stop"
    type: Literal["stop"] = "stop"
    target_id: MessageId | None = None


Command = Annotated[PlayCommand | StopCommand, Field(discriminator="type")]


class AckStatus(enum.StrEnum):
    """Progress of one command on one device, in the order it normally happens."""

    RECEIVED = "received"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    PREEMPTED = "preempted"
    STOPPED = "stopped"


FINAL_ACK_STATUSES = frozenset(
    {AckStatus.FINISHED, AckStatus.FAILED, AckStatus.PREEMPTED, AckStatus.STOPPED}
)


class Ack(Message):
    """A device's report on a command, with the command id echoed."""

    kind: ClassVar[str] = "ack"
    device_id: Slug
    command_id: MessageId
    status: AckStatus
    reason: Annotated[str, Field(max_length=500)] | None = None


class AvailabilityState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


class Availability(Message):
    """Retained; 'offline' is also the Last Will, so its ts is the time the will was set."""

    kind: ClassVar[str] = "availability"
    device_id: Slug
    state: AvailabilityState


class SignalClass(enum.StrEnum):
    """Fire-alarm practice classes (NFPA 72): act now / safety function off-normal / faulty."""

    ALARM = "alarm"
    SUPERVISORY = "supervisory"
    TROUBLE = "trouble"


SignalName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]


class ActiveSignal(BaseModel):
    """A fire-point signal raised and not yet restored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    signal_class: SignalClass
    signal: SignalName
    since: EpochMs


class FirePointState(BaseModel):
    """A fire point's part of the retained state: changes only with a signal or the siren."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    siren_on: bool = False
    signals: list[ActiveSignal] = Field(default_factory=list, max_length=32)


class FirePointReadings(BaseModel):
    """The fire-point controller's last valid report; None where a sensor is not fitted."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: EpochMs  # when the bridge received it
    pressure_bar: float | None = None
    mains_ok: bool | None = None
    battery_v: float | None = None
    temperature_c: float | None = None


class Playing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    command_id: MessageId
    priority: Priority
    started_at: EpochMs


class DeviceState(Message):
    """Retained snapshot of a device, republished on every change."""

    kind: ClassVar[str] = "state"
    device_id: Slug
    profile: Annotated[str, Field(max_length=100)]
    software_version: Annotated[str, Field(max_length=50)]
    config_version: int | None = None
    playing: Playing | None = None
    queued: Annotated[int, Field(ge=0)] = 0
    volume_pct: Percent
    amplifier_on: bool = False
    zones: list[Slug] = Field(default_factory=list, max_length=32)
    counters: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=64)
    fire_point: FirePointState | None = None  # fire-point nodes only


class Telemetry(Message):
    """Periodic health figures; None where the hardware cannot tell."""

    kind: ClassVar[str] = "telemetry"
    device_id: Slug
    uptime_s: Annotated[float, Field(ge=0)]
    cpu_temp_c: float | None = None
    disk_free_mb: Annotated[float, Field(ge=0)] | None = None
    clock_offset_ms: int | None = None
    link_quality_pct: Percent | None = None
    amplifier_on_s: Annotated[float, Field(ge=0)] = 0.0
    cache_bytes: Annotated[int, Field(ge=0)] = 0
    counters: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, max_length=64)
    fire_point: FirePointReadings | None = None  # fire-point nodes only


class Event(Message):
    """A signal raised (active=True) or restored (active=False), or proof of play."""

    kind: ClassVar[str] = "event"
    device_id: Slug
    signal_class: SignalClass
    signal: SignalName
    active: bool
    value: float | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None


class PresetRef(AudioRef):
    name: Annotated[str, Field(min_length=1, max_length=64)]


class DeviceConfig(Message):
    """Retained configuration from the console; the device echoes `version` in its state."""

    kind: ClassVar[str] = "config"
    version: Annotated[int, Field(ge=0)]
    zones: list[Slug] = Field(default_factory=list, max_length=32)
    volume_pct: Percent = 80
    presets: list[PresetRef] = Field(default_factory=list, max_length=64)


# --- (de)serialisation -------------------------------------------------------------------

M = TypeVar("M", bound=BaseModel)

_COMMAND_ADAPTER: TypeAdapter[PlayCommand | StopCommand] = TypeAdapter(Command)
UPLINK_MODELS: dict[Channel, type[Message]] = {
    Channel.AVAILABILITY: Availability,
    Channel.STATE: DeviceState,
    Channel.TELEMETRY: Telemetry,
    Channel.EVENT: Event,
    Channel.ACK: Ack,
    Channel.CONFIG: DeviceConfig,
}


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON, the one payload encoding on the wire."""
    return message.model_dump_json(exclude_none=True).encode("utf-8")


def _load_json(payload: bytes | bytearray | str) -> Any:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        data = json.loads(payload)
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of > 4300 digits
        raise ProtocolError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("payload is nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError("payload is not a JSON object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported contract version {data.get('v')!r}")
    return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where}: {err['msg']}"


def decode(model: type[M], payload: bytes | bytearray | str) -> M:
    """Parse and validate one payload into `model`; ProtocolError names the first bad field."""
    data = _load_json(payload)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {model.__name__}: {_first_error(exc)}") from None


def decode_command(payload: bytes | bytearray | str) -> PlayCommand | StopCommand:
    """Parse a command from a zone or device command topic."""
    data = _load_json(payload)
    try:
        return _COMMAND_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid command: {_first_error(exc)}") from None


def decode_for_channel(channel: Channel, payload: bytes | bytearray | str) -> Message:
    """Parse a payload of a device channel (uplink, or the retained config)."""
    try:
        model = UPLINK_MODELS[Channel(channel)]
    except (KeyError, ValueError):
        raise ProtocolError(f"channel {channel!r} carries no device payload") from None
    return decode(model, payload)
