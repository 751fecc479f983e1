"""Registering a device: database row, broker account with its ACLs, and the installer's file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
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


class DecommissionedError(ProvisioningError):
    """The id belongs to a decommissioned device: its history keeps it. Registering it again
    needs `revive` (the same device back in service), else another id."""

    def __init__(self, device_id: str, decommissioned_at: datetime) -> None:
        super().__init__(
            f"device {device_id!r} was decommissioned on {decommissioned_at:%Y-%m-%d %H:%M} UTC "
            "and its history keeps this id: choose another id, or register it again with "
            '"revive": true to put the same device back in service'
        )
        self.device_id = device_id
        self.decommissioned_at = decommissioned_at


@dataclass(frozen=True)
class Provisioned:
    device_id: str
    password: str
    zones: list[str]
    bridge_config: str  # TOML for the installer; holds the secret, shown once
    revived: bool = False  # a decommissioned device back in service


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
    ca_pem: str | None = None,
) -> str:
    """The bridge's config file (format in docs/bridge.md). With `ca_pem` the device connects
    over TLS and trusts that CA only (inline: the installer copies one file)."""
    zone_list = ", ".join(_q(z) for z in zones)
    tls = ["tls = true", f"ca_cert = '''\n{ca_pem.strip()}\n'''"] if ca_pem else []
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
            *tls,
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
    tls = settings.tls if settings.tls and settings.tls.broker_port else None
    return Provisioned(
        device_id=device.id,
        password=password,
        zones=zones,
        bridge_config=render_bridge_config(
            device_id=device.id,
            profile=device.profile,
            zones=zones,
            host=settings.broker.public_host,
            port=tls.broker_port if tls else settings.broker.port,
            password=password,
            state_dir=state_dir,
            ca_pem=tls.ca_file.read_text(encoding="ascii") if tls else None,
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
    revive: bool = False,
) -> Provisioned:
    """Create the device and its broker account; the caller commits the session.

    The id of a decommissioned device is refused (DecommissionedError) unless `revive`: then
    that same row is back in service with these details and a new secret, its history intact.
    """
    try:
        protocol.validate_slug(device_id, "device id")
    except protocol.ProtocolError as exc:
        raise ProvisioningError(str(exc)) from None
    existing = session.get(Device, device_id)
    if existing is not None and existing.decommissioned_at is None:
        raise ProvisioningError(f"device {device_id!r} already exists")
    if existing is not None and existing.decommissioned_at is not None and not revive:
        raise DecommissionedError(device_id, existing.decommissioned_at)
    if session.get(Zone, zone_id) is None:
        raise ProvisioningError(f"unknown zone {zone_id!r}")
    try:
        load_profile(profile)
    except ProfileError as exc:
        raise ProvisioningError(str(exc)) from None
    ancestors_of(zone_id, zone_parents(session))  # the tree must be sound
    device = existing or Device(id=device_id, secret_sha256="")
    if existing is None:
        session.add(device)
    else:  # revived: what it said before it was decommissioned is stale
        device.decommissioned_at = None
        device.online = False
        device.state = device.telemetry = None
        device.changed_at = datetime.now(UTC)
    device.name, device.profile, device.zone_id = name, profile, zone_id
    device.latitude, device.longitude = latitude, longitude
    bump_config_revision(session)  # the worker publishes its retained config
    issued = _issue(session, admin, settings, device, state_dir)
    return replace(issued, revived=existing is not None)


def reissue_credentials(
    session: Session,
    admin: DynsecAdmin,
    settings: Settings,
    device_id: str,
    state_dir: PurePosixPath = DEFAULT_STATE_DIR,
) -> Provisioned:
    """A lost or leaked config file: new secret, old one refused from now on."""
    device = device_in_service(session, device_id)
    return _issue(session, admin, settings, device, state_dir)


def device_in_service(session: Session, device_id: str) -> Device:
    """The device, unless unknown or decommissioned (ProvisioningError)."""
    device = session.get(Device, device_id)
    if device is None:
        raise ProvisioningError(f"unknown device {device_id!r}")
    if device.decommissioned_at is not None:
        raise ProvisioningError(f"device {device_id!r} is decommissioned")
    return device


def move_device(session: Session, admin: DynsecAdmin, device_id: str, zone_id: str) -> list[str]:
    """Another zone for a device; the caller commits. Returns the zones it now listens to.

    Its broker account keeps its secret but gets the new zones' roles instead of the old
    ones (the broker disconnects it once; it reconnects with the same file); the worker
    sends the new zone list in its retained config, and the bridge follows it.
    """
    device = device_in_service(session, device_id)
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


def decommission_device(
    session: Session, admin: DynsecAdmin, device_id: str, now: datetime | None = None
) -> Device:
    """Revoke the broker account and take the device out of service; the caller commits.

    The broker goes first: if it cannot be reached this raises (BrokerError, OSError) and
    nothing is marked, so a device that can still log in never looks decommissioned. The
    row is kept, hidden from everything live, so its deliveries and alarms still name it;
    its secret is forgotten (no audio download either). The worker then clears its
    retained config on the broker.
    """
    device = device_in_service(session, device_id)
    admin.revoke_device(device_id)
    when = now or datetime.now(UTC)
    device.decommissioned_at = device.changed_at = when
    device.online = False
    device.secret_sha256 = ""
    bump_config_revision(session)
    return device
