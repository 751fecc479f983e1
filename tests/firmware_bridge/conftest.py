"""Bridge fixtures: device accounts on the real test broker and the config files for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from console.provisioning import render_bridge_config
from firmware_bridge.config import BridgeConfig, load_bridge_config
from tests.conftest import Broker

MakeConfig = Callable[..., BridgeConfig]


def write_bridge_config(
    broker: Broker, directory: Path, device_id: str, zones: list[str], profile: str
) -> Path:
    """Provision the device's own broker account and write its config file, as an installer
    gets it from the console; returns the file's path."""
    password = broker.provision_device(device_id, zones)
    state_dir = directory / device_id
    text = render_bridge_config(
        device_id=device_id,
        profile=profile,
        zones=zones,
        host=broker.host,
        port=broker.port,
        password=password,
        state_dir=PurePosixPath(str(state_dir)),
    )
    path = directory / f"{device_id}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def make_config(mqtt_broker: Broker, tmp_path: Path) -> MakeConfig:
    """make_config("loa-x1", ["zone-x"], profile="speaker-node") -> a loaded BridgeConfig."""

    def make(device_id: str, zones: list[str], profile: str = "speaker-node") -> BridgeConfig:
        path = write_bridge_config(mqtt_broker, tmp_path, device_id, zones, profile)
        return load_bridge_config(path)

    return make
