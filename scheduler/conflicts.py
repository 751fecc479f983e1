"""Conflicts: two schedules that would play at the same time on overlapping zones."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.clock import require_aware
from scheduler.rules import Rule, occurrences_between

ZoneOverlap = Callable[[str, str], bool]


@dataclass(frozen=True)
class ScheduledItem:
    """A schedule as the conflict check needs it.

    `zone_ancestors` maps a zone id to the ids of all zones above it (hamlet -> commune); a
    zone overlaps itself, its ancestors and its descendants.
    """

    schedule_id: int
    name: str
    rule: Rule
    duration_ms: int
    zone_ids: frozenset[str]
    zone_ancestors: Mapping[str, frozenset[str]] | None = None
    holidays: frozenset[date] = field(default_factory=frozenset)

    @property
    def duration(self) -> timedelta:
        """How long one occurrence occupies its zones (at least 1 ms)."""
        return timedelta(milliseconds=max(self.duration_ms, 1))


@dataclass(frozen=True)
class Conflict:
    """The candidate's occurrence at `candidate_start` overlaps the other's at `other_start`."""

    other_schedule_id: int
    other_name: str
    candidate_start: datetime  # UTC
    other_start: datetime  # UTC
    zones: tuple[tuple[str, str], ...]  # (candidate zone, other zone) pairs that overlap

    def describe(self, tz: ZoneInfo) -> str:
        """One line for staff, in site-local time."""
        local = self.other_start.astimezone(tz)
        zones = ", ".join(a if a == b else f"{a}/{b}" for a, b in self.zones)
        return f"overlaps “{self.other_name}” at {local:%Y-%m-%d %H:%M} in {zones}"


def hierarchy_overlap(*maps: Mapping[str, frozenset[str]] | None) -> ZoneOverlap:
    """Zones overlap when equal or when one is an ancestor of the other in any of `maps`."""

    def ancestors(zone: str) -> frozenset[str]:
        found: frozenset[str] = frozenset()
        for m in maps:
            if m is not None:
                found |= m.get(zone, frozenset())
        return found

    def overlaps(a: str, b: str) -> bool:
        return a == b or a in ancestors(b) or b in ancestors(a)

    return overlaps


def find_conflicts(
    candidate: ScheduledItem,
    others: Iterable[ScheduledItem],
    *,
    tz: ZoneInfo,
    window_start_utc: datetime,
    window_end_utc: datetime,
    overlaps: ZoneOverlap | None = None,
) -> list[Conflict]:
    """Every overlap of the candidate's occurrences starting in the window with the others'.

    Without `overlaps`, zones overlap by equality and the items' `zone_ancestors`. An item
    with the candidate's schedule id (its stored older version) is ignored.
    """
    start = require_aware(window_start_utc, "window_start_utc")
    end = require_aware(window_end_utc, "window_end_utc")
    mine = occurrences_between(candidate.rule, tz, start, end, candidate.holidays)
    conflicts: list[Conflict] = []
    if not mine:
        return conflicts
    for other in others:
        if other.schedule_id == candidate.schedule_id:
            continue
        same = overlaps or hierarchy_overlap(candidate.zone_ancestors, other.zone_ancestors)
        zones = tuple(
            sorted((a, b) for a in candidate.zone_ids for b in other.zone_ids if same(a, b))
        )
        if not zones:
            continue
        # The other's occurrences that can still be playing when the window opens count too.
        theirs = occurrences_between(
            other.rule, tz, start - other.duration, mine[-1] + candidate.duration, other.holidays
        )
        conflicts.extend(
            Conflict(other.schedule_id, other.name, a, b, zones)
            for a, b in _overlapping(mine, candidate.duration, theirs, other.duration)
        )
    conflicts.sort(key=lambda c: (c.candidate_start, c.other_start, c.other_schedule_id))
    return conflicts


def _overlapping(
    mine: list[datetime], my_length: timedelta, theirs: list[datetime], their_length: timedelta
) -> Iterable[tuple[datetime, datetime]]:
    """Pairs (a, b) with [a, a + my_length) and [b, b + their_length) intersecting; both sorted."""
    first = 0
    for a in mine:
        while first < len(theirs) and theirs[first] + their_length <= a:
            first += 1
        j = first
        while j < len(theirs) and theirs[j] < a + my_length:
            yield a, theirs[j]
            j += 1
