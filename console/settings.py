"""The console's typed configuration: read once from instance/config.toml, passed down."""

from __future__ import annotations

import difflib
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

CONFIG_NAME = "config.toml"


class SettingsError(ValueError):
    """The instance configuration is missing or wrong."""


class BrokerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    # The address devices use to reach the broker, written into their config files.
    public_host: str = "127.0.0.1"
    admin_username: str = "broker-admin"
    admin_password: SecretStr
    console_username: str = "console"
    console_password: SecretStr
    data_dir: Path


class TlsConfig(BaseModel):
    """TLS with the instance's own CA (`python -m console tls` writes this section)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: Path  # the CA devices and browsers trust; put into every device's config file
    cert_file: Path  # the broker's and the web's certificate
    key_file: Path  # its private key (0600)
    # The broker's TLS listener for devices, on every interface ("") or broker_host; 0: none.
    broker_port: int = Field(default=8883, ge=0, le=65535)
    broker_host: str = ""
    # `python -m console serve` (and `web`) answer HTTPS themselves; false: behind a proxy.
    web: bool = False


class Settings(BaseModel):
    """Everything a console process needs; secrets are masked when printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instance_dir: Path
    secret_key: SecretStr
    database_url: str
    media_dir: Path
    # Base URL devices download audio from (the console web as the devices see it).
    public_base_url: str = "http://127.0.0.1:8080"
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=1, le=65535)
    # `python -m console serve` (gunicorn): processes, and threads in each. A live page holds
    # one thread per open stream, so threads bound how many pages can be open at once.
    web_workers: int = Field(default=2, ge=1, le=64)
    web_threads: int = Field(default=32, ge=1, le=1000)
    # Reverse proxies in front of the web (their X-Forwarded-For/-Proto are trusted); 0: none.
    web_proxy_hops: int = Field(default=0, ge=0, le=5)
    site_timezone: str = "Asia/Ho_Chi_Minh"
    # Seconds between the fire time and play_at, so every speaker of a zone starts together.
    play_lead_s: float = Field(default=2.0, ge=0, le=60)
    # A scheduled command not started this long after play_at is dropped by the device.
    command_ttl_s: float = Field(default=120.0, ge=5, le=3600)
    misfire_grace_s: float = Field(default=60.0, ge=1, le=3600)
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    broker: BrokerConfig
    tls: TlsConfig | None = None

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS: the web answers HTTPS itself, or a proxy does."""
        return bool(self.tls and self.tls.web) or self.public_base_url.startswith("https://")


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _explain(path: Path, exc: ValidationError, model: type[BaseModel]) -> SettingsError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    hint = ""
    if err["type"] == "extra_forbidden":
        fields = [*model.model_fields, *BrokerConfig.model_fields, *TlsConfig.model_fields]
        hint = _did_you_mean(str(err["loc"][-1]), fields)
    return SettingsError(f"{path}: {loc}: {err['msg']}{hint}")


def load_settings(instance_dir: Path) -> Settings:
    """Read instance_dir/config.toml; DATABASE_URL in the environment overrides the file."""
    path = instance_dir / CONFIG_NAME
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path} not found: run `make run` once to create it") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise SettingsError(f"{path}: nested too deeply") from None
    data.setdefault("instance_dir", str(instance_dir))
    if os.environ.get("DATABASE_URL"):
        data["database_url"] = os.environ["DATABASE_URL"]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _explain(path, exc, Settings) from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_new_instance(instance_dir: Path, *, broker_port: int, web_port: int) -> Settings:
    """Create instance_dir/config.toml with fresh secrets; never overwrites an existing one."""
    instance_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(instance_dir, 0o700)
    path = instance_dir / CONFIG_NAME
    if path.exists():
        return load_settings(instance_dir)
    root = instance_dir.resolve()
    top = {
        "secret_key": secrets.token_hex(32),
        "database_url": f"sqlite:///{root / 'console.sqlite3'}",
        "media_dir": str(root / "media"),
        "public_base_url": f"http://127.0.0.1:{web_port}",
        "web_port": web_port,
        "site_timezone": "Asia/Ho_Chi_Minh",
    }
    broker = {
        "host": "127.0.0.1",
        "port": broker_port,
        "public_host": "127.0.0.1",
        "admin_username": "broker-admin",
        "admin_password": secrets.token_urlsafe(24),
        "console_username": "console",
        "console_password": secrets.token_urlsafe(24),
        "data_dir": str(root / "broker"),
    }
    return write_instance_config(instance_dir, {**top, "broker": broker})


def add_tls_section(instance_dir: Path, values: dict[str, Any]) -> Settings:
    """Append a [tls] table to config.toml (kept private); an existing one is left as it is."""
    path = instance_dir / CONFIG_NAME
    if "tls" in tomllib.loads(path.read_text(encoding="utf-8")):
        return load_settings(instance_dir)
    lines = ["", "[tls]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return load_settings(instance_dir)


def write_instance_config(instance_dir: Path, values: dict[str, Any]) -> Settings:
    """Write instance_dir/config.toml (private, never overwritten) and load it back.

    None (an optional section such as [tls] left out) is not written: TOML has no null.
    """
    values = {k: v for k, v in values.items() if v is not None}
    lines = ["# Generated by Tiếng loa an ninh. Secrets: keep private, never commit.", ""]
    lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for section, table in values.items():
        if isinstance(table, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    fd = os.open(instance_dir / CONFIG_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return load_settings(instance_dir)
