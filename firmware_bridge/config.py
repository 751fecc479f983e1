"""The installer's bridge config file (TOML), as the console writes it at provisioning."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

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
    # TLS: the broker's certificate must name `host` and come from the CA given here (PEM
    # inline, or a file), else from one the system trusts. Audio over https trusts it too.
    tls: bool = False
    ca_cert: Annotated[str, Field(max_length=100_000)] | None = None
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _check_tls(self) -> MqttSettings:
        if (self.ca_cert or self.ca_file) and not self.tls:
            raise ValueError("ca_cert and ca_file are for TLS: add tls = true")
        if self.ca_cert and self.ca_file:
            raise ValueError("give the CA once: ca_cert (inline) or ca_file, not both")
        if self.tls:
            self.ssl_context()  # a CA that cannot be read fails at start, not at connect
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate chain and host name; TLS 1.2 at least."""
        try:
            if self.ca_cert:
                context = ssl.create_default_context(cadata=self.ca_cert)
            else:
                context = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            what = self.ca_file or "ca_cert"
            raise ValueError(f"cannot read the CA certificate ({what}): {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


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

    def media_ca(self) -> Path | None:
        """The CA file audio downloads over https trust (None: the system's); an inline CA is
        kept in state_dir for them."""
        if not self.mqtt.tls or not (self.mqtt.ca_cert or self.mqtt.ca_file):
            return None
        if self.mqtt.ca_file is not None:
            return self.mqtt.ca_file
        path = self.state_dir / "broker-ca.pem"
        assert self.mqtt.ca_cert is not None
        if not path.is_file() or path.read_text(encoding="ascii") != self.mqtt.ca_cert:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(self.mqtt.ca_cert, encoding="ascii")
        return path

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
