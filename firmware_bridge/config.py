"""The installer's bridge config file (TOML), as the console writes it at provisioning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from device_profiles.profiles import ProfileError, explain, read_toml

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class BridgeConfigError(ProfileError):
    """A bridge config file that cannot be used, naming the file and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttSettings(_Strict):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: Annotated[str, Field(min_length=1)]
    password: SecretStr
    keepalive_s: Annotated[int, Field(ge=5, le=600)] = 30


class MediaSettings(_Strict):
    """HTTP Basic credentials for audio downloads; by default the MQTT ones."""

    username: str | None = None
    password: SecretStr | None = None


class CacheSettings(_Strict):
    dir: Path
    budget_mb: Annotated[int, Field(ge=1, le=1_000_000)] = 512


class BridgeConfig(_Strict):
    device_id: Slug
    profile: Annotated[str, Field(min_length=1)]
    zones: Annotated[list[Slug], Field(max_length=32)] = Field(default_factory=list)
    state_dir: Path
    mqtt: MqttSettings
    media: MediaSettings = MediaSettings()
    cache: CacheSettings

    def media_auth(self) -> tuple[str, str]:
        user = self.media.username or self.mqtt.username
        secret = self.media.password or self.mqtt.password
        return user, secret.get_secret_value()


def load_bridge_config(path: Path) -> BridgeConfig:
    """Read and validate one bridge config file."""
    data = read_toml(path)
    try:
        return BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise BridgeConfigError(explain(path.name, BridgeConfig, exc)) from None
