"""Zone tree queries: ancestors a device listens to, devices a broadcast reaches.

A fire must not cost more as the fleet grows outside its zones: the tree is read as
(id, parent) pairs (zones are few), and only the devices of the target zones are selected,
as plain columns rather than ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.models import Device, Zone, in_service

# Zone ids per IN (...) list: well under SQLite's bound-parameter limit.
_IN_CHUNK = 500


class ZoneError(ValueError):
    """A zone that does not exist or would make the tree invalid."""


@dataclass(frozen=True)
class DeviceTarget:
    """What a broadcast needs of a device it reaches: its id and its hardware profile."""

    id: str
    profile: str


def zone_parents(session: Session) -> dict[str, str | None]:
    """Every zone's parent (None for a commune): two columns, no ORM objects."""
    return {
        zone_id: parent_id
        for zone_id, parent_id in session.execute(select(Zone.id, Zone.parent_id))
    }


def ancestors_of(zone_id: str, parents: dict[str, str | None]) -> list[str]:
    """The zone itself, then its parent, up to the commune."""
    chain: list[str] = []
    current: str | None = zone_id
    while current is not None:
        if current not in parents:
            raise ZoneError(f"unknown zone {current!r}")
        if current in chain:
            raise ZoneError(f"zone {current!r} is its own ancestor")
        chain.append(current)
        current = parents[current]
    return chain


def minimal_cover(zone_ids: Iterable[str], parents: dict[str, str | None]) -> list[str]:
    """Drop zones already covered by a chosen ancestor, so no device gets a command twice."""
    chosen = set(zone_ids)
    for zone_id in chosen:
        if zone_id not in parents:
            raise ZoneError(f"unknown zone {zone_id!r}")
    return sorted(z for z in chosen if not (set(ancestors_of(z, parents)[1:]) & chosen))


def zone_descendants(zone_ids: Iterable[str], parents: dict[str, str | None]) -> set[str]:
    """The given zones and every zone below them (unknown ids are an error)."""
    children: dict[str, list[str]] = {}
    for zone_id, parent_id in parents.items():
        if parent_id is not None:
            children.setdefault(parent_id, []).append(zone_id)
    found: set[str] = set()
    stack = list(zone_ids)
    for zone_id in stack:
        if zone_id not in parents:
            raise ZoneError(f"unknown zone {zone_id!r}")
    while stack:
        zone_id = stack.pop()
        if zone_id in found:
            continue
        found.add(zone_id)
        stack.extend(children.get(zone_id, ()))
    return found


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def device_targets(
    session: Session, zone_ids: Sequence[str], parents: dict[str, str | None] | None = None
) -> list[DeviceTarget]:
    """(id, profile) of every device in service in zone_ids or below them, by id."""
    tree = parents if parents is not None else zone_parents(session)
    zones = sorted(zone_descendants(zone_ids, tree))
    found: list[DeviceTarget] = []
    for chunk in _chunks(zones):
        stmt = select(Device.id, Device.profile).where(Device.zone_id.in_(chunk), in_service())
        found += [DeviceTarget(device_id, profile) for device_id, profile in session.execute(stmt)]
    return sorted(found, key=lambda target: target.id)


def devices_in_zones(session: Session, zone_ids: Sequence[str]) -> list[Device]:
    """Every device in service whose zone is one of zone_ids or below one of them, by id."""
    zones = sorted(zone_descendants(zone_ids, zone_parents(session)))
    found: list[Device] = []
    for chunk in _chunks(zones):
        found += session.scalars(select(Device).where(Device.zone_id.in_(chunk), in_service()))
    return sorted(found, key=lambda device: device.id)
