"""The Raspberry Pi bridge: plays commands, watches the fire point, reports over MQTT.

Imports only `device_profiles` from the project. `python -m firmware_bridge --help`.
"""

from firmware_bridge.bridge import Bridge, build_bridge
from firmware_bridge.config import BridgeConfig, BridgeConfigError, load_bridge_config

__all__ = ["Bridge", "BridgeConfig", "BridgeConfigError", "build_bridge", "load_bridge_config"]
