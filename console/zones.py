"""Zone tree queries: ancestors a device listens to, devices a broadcast reaches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.models import Device, Zone


class ZoneError(ValueError):
    """A zone that does not exist or would make the tree invalid."""


def zone_parents(session: Session) -> dict[str, str | None]:
    return {z.id: z.parent_id for z in session.scalars(select(Zone))}


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


def devices_in_zones(session: Session, zone_ids: Sequence[str]) -> list[Device]:
    """Every device whose zone is one of zone_ids or below one of them."""
    parents = zone_parents(session)
    wanted = set(zone_ids)
    return [
        device
        for device in session.scalars(select(Device).order_by(Device.id))
        if wanted & set(ancestors_of(device.zone_id, parents))
    ]
