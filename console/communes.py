"""A commune's own scheduling rules: its quiet hours and its holiday calendar.

Communes are the root zones. A schedule belongs to the commune at the root of its zones; a
commune without a settings row has the default quiet hours (22:00–05:00).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.models import CommuneSettings, Holiday, Zone, ZoneKind
from console.zones import ZoneError, ancestors_of
from scheduler import QuietHours

DEFAULT_QUIET_HOURS = QuietHours()  # 22:00–05:00


class CommuneError(ZoneError):
    """A zone that is not a commune where one is needed, or zones of several communes."""


@dataclass(frozen=True)
class ZoneTree:
    """The zone hierarchy as parent links, with the questions the programme asks of it."""

    parents: dict[str, str | None]

    @classmethod
    def load(cls, session: Session) -> ZoneTree:
        return cls({z.id: z.parent_id for z in session.scalars(select(Zone))})

    def commune_of(self, zone_id: str) -> str:
        """The root zone above (or equal to) `zone_id`."""
        return ancestors_of(zone_id, self.parents)[-1]

    def commune_of_all(self, zone_ids: Iterable[str]) -> str:
        """The one commune of these zones; CommuneError if they belong to several."""
        communes = sorted({self.commune_of(z) for z in zone_ids})
        if not communes:
            raise CommuneError("choose at least one zone")
        if len(communes) > 1:
            raise CommuneError(
                f"these zones belong to {len(communes)} communes ({', '.join(communes)}); "
                "a schedule plays in one commune: make one schedule per commune"
            )
        return communes[0]

    def ancestor_map(self) -> dict[str, frozenset[str]]:
        """Each zone -> every zone above it (for scheduler.find_conflicts)."""
        return {z: frozenset(ancestors_of(z, self.parents)[1:]) for z in self.parents}


def get_commune(session: Session, zone_id: str) -> Zone:
    """The commune zone `zone_id`; CommuneError naming its commune if it is a lower zone."""
    zone = session.get(Zone, zone_id)
    if zone is None:
        raise CommuneError(f"no zone {zone_id!r}")
    if zone.kind is not ZoneKind.COMMUNE or zone.parent_id is not None:
        commune = ZoneTree.load(session).commune_of(zone_id)
        raise CommuneError(
            f"{zone_id!r} is a {zone.kind.value}, not a commune; quiet hours and holidays "
            f"are set for its commune, {commune!r}"
        )
    return zone


def lock_commune(session: Session, commune_id: str) -> None:
    """Make changes to one commune's programme take turns (row lock on PostgreSQL).

    On SQLite the caller holds the write lock already (Database.write_session).
    """
    session.execute(select(Zone.id).where(Zone.id == commune_id).with_for_update())


def quiet_hours_of(session: Session, commune_id: str) -> QuietHours:
    row = session.get(CommuneSettings, commune_id)
    if row is None:
        return DEFAULT_QUIET_HOURS
    return QuietHours(row.quiet_start, row.quiet_end)


def holidays_of(session: Session, commune_id: str) -> dict[date, str]:
    """The commune's holidays: local date -> name."""
    rows = session.execute(select(Holiday.day, Holiday.name).where(Holiday.zone_id == commune_id))
    return {day: name for day, name in rows}


def holidays_by_commune(session: Session) -> dict[str, frozenset[date]]:
    """Every commune's holiday dates, for the scheduler's specs."""
    found: dict[str, set[date]] = {}
    for zone_id, day in session.execute(select(Holiday.zone_id, Holiday.day)):
        found.setdefault(zone_id, set()).add(day)
    return {zone_id: frozenset(days) for zone_id, days in found.items()}
