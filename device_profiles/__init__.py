"""Device profiles and the wire contract: shared by the console and the bridge.

Imports nothing of the project.
"""

from device_profiles.profiles import (
    Capability,
    DeviceProfile,
    ProfileError,
    list_profiles,
    load_profile,
)

__all__ = ["Capability", "DeviceProfile", "ProfileError", "list_profiles", "load_profile"]
