"""Registering a device: database row, broker account with its ACLs, and the installer's file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from console.broker import DynsecAdmin, _acl, _role_commands, device_role, zone_role
from console.device_config import bump_config_revision
from console.models import Device, Zone
from console.security import new_secret, secret_digest
from console.settings import Settings
from console.zones import ancestors_of, zone_parents
from device_profiles import ProfileError, load_profile, protocol

DEFAULT_STATE_DIR = PurePosixPath("/var/lib/tieng-loa")
DEFAULT_CACHE_BUDGET_MB = 512


class ProvisioningError(ValueError):
    """A device that cannot be registered as asked."""


@dataclass(frozen=True)
class Provisioned:
    device_id: str
    password: str
    zones: list[str]
    bridge_config: str  # TOML for the installer; holds the secret, shown once


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_bridge_config(
    *,
    device_id: str,
    profile: str,
    zones: list[str],
    host: str,
    port: int,
    password: str,
    state_dir: PurePosixPath = DEFAULT_STATE_DIR,
) -> str:
    """The bridge's config file (format in docs/bridge.md)."""
    zone_list = ", ".join(_q(z) for z in zones)
    return "\n".join(
        [
            "# Tiếng loa an ninh bridge config. Holds this device's secret: keep it private.",
            f"device_id = {_q(device_id)}",
            f"profile = {_q(profile)}",
            f"zones = [{zone_list}]",
            f"state_dir = {_q(str(state_dir))}",
            "",
            "[mqtt]",
            f"host = {_q(host)}",
            f"port = {port}",
            f"username = {_q(device_id)}",
            f"password = {_q(password)}",
            "",
            "[cache]",
            f"dir = {_q(str(state_dir / 'cache'))}",
            f"budget_mb = {DEFAULT_CACHE_BUDGET_MB}",
            "",
        ]
    )


def _issue(
    session: Session,
    admin: DynsecAdmin,
    settings: Settings,
    device: Device,
    state_dir: PurePosixPath,
) -> Provisioned:
    """New secret for the device: stored hashed, given to the broker, written in its file."""
    zones = ancestors_of(device.zone_id, zone_parents(session))
    password = new_secret(24)
    device.secret_sha256 = secret_digest(password)
    session.flush()
    # Any account of that name goes first: Mosquitto 2.0's dynamic security corrupts a client
    # whose role is deleted under it (provision_device recreates the role), then stops
    # answering. A new secret, or an id whose account outlived its row, would do just that.
    admin.revoke_device(device.id)
    admin.provision_device(device.id, password, zones)
    return Provisioned(
        device_id=device.id,
        password=password,
        zones=zones,
        bridge_config=render_bridge_config(
            device_id=device.id,
            profile=device.profile,
            zones=zones,
            host=settings.broker.public_host,
            port=settings.broker.port,
            password=password,
            state_dir=state_dir,
        ),
    )


def register_device(
    session: Session,
    admin: DynsecAdmin,
    settings: Settings,
    *,
    device_id: str,
    name: str,
    profile: str,
    zone_id: str,
    latitude: float | None = None,
    longitude: float | None = None,
    state_dir: PurePosixPath = DEFAULT_STATE_DIR,
) -> Provisioned:
    """Create the device and its broker account; the caller commits the session."""
    try:
        protocol.validate_slug(device_id, "device id")
    except protocol.ProtocolError as exc:
        raise ProvisioningError(str(exc)) from None
    if session.get(Device, device_id) is not None:
        raise ProvisioningError(f"device {device_id!r} already exists")
    if session.get(Zone, zone_id) is None:
        raise ProvisioningError(f"unknown zone {zone_id!r}")
    try:
        load_profile(profile)
    except ProfileError as exc:
        raise ProvisioningError(str(exc)) from None
    ancestors_of(zone_id, zone_parents(session))  # the tree must be sound
    device = Device(
        id=device_id,
        name=name,
        profile=profile,
        zone_id=zone_id,
        latitude=latitude,
        longitude=longitude,
        secret_sha256="",
    )
    session.add(device)
    bump_config_revision(session)  # the worker publishes its retained config
    return _issue(session, admin, settings, device, state_dir)


def reissue_credentials(
    session: Session,
    admin: DynsecAdmin,
    settings: Settings,
    device_id: str,
    state_dir: PurePosixPath = DEFAULT_STATE_DIR,
) -> Provisioned:
    """A lost or leaked config file: new secret, old one refused from now on."""
    device = session.get(Device, device_id)
    if device is None:
        raise ProvisioningError(f"unknown device {device_id!r}")
    return _issue(session, admin, settings, device, state_dir)


def move_device(session: Session, admin: DynsecAdmin, device_id: str, zone_id: str) -> list[str]:
    """Another zone for a device; the caller commits. Returns the zones it now listens to.

    Its broker account keeps its secret but gets the new zones' roles instead of the old
    ones (the broker disconnects it once; it reconnects with the same file); the worker
    sends the new zone list in its retained config, and the bridge follows it.
    """
    device = session.get(Device, device_id)
    if device is None:
        raise ProvisioningError(f"unknown device {device_id!r}")
    if session.get(Zone, zone_id) is None:
        raise ProvisioningError(f"unknown zone {zone_id!r}")
    zones = ancestors_of(zone_id, zone_parents(session))
    device.zone_id = zone_id
    session.flush()
    roles: list[dict[str, Any]] = []
    for zone in zones:
        acl = _acl("subscribePattern", protocol.zone_command_topic(zone))
        roles += _role_commands(zone_role(zone), [acl])
    admin.execute_tolerant(roles)  # zone roles other devices may already have made
    names = [device_role(device_id), *(zone_role(z) for z in zones)]
    admin.execute(
        [
            {
                "command": "modifyClient",
                "username": device_id,
                "roles": [{"rolename": name} for name in names],
            }
        ]
    )
    bump_config_revision(session)
    return zones


def decommission_device(session: Session, admin: DynsecAdmin, device_id: str) -> None:
    """Revoke the broker account and remove the device; the caller commits.

    The worker then clears the device's retained config on the broker.
    """
    device = session.get(Device, device_id)
    if device is None:
        raise ProvisioningError(f"unknown device {device_id!r}")
    admin.revoke_device(device_id)
    session.delete(device)
    bump_config_revision(session)
