"""The programme: stored schedules seen through the scheduler's rules.

When a schedule is saved the API checks it here (its commune's quiet hours, conflicts with the
other enabled schedules); the zone programme lists what a zone's speakers will play; the
worker asks which holidays silence a schedule and how long a queued item may wait on a device.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.communes import ZoneTree, holidays_by_commune
from console.models import AudioFile, Preset, Schedule
from console.presets import GONG_KEY
from device_profiles.protocol import Priority
from scheduler import (
    Conflict,
    QuietHours,
    QuietHoursError,
    RuleError,
    ScheduledItem,
    find_conflicts,
    next_occurrences,
    occurrences_between,
    parse_rule,
)
from scheduler.rules import OnceRule, Rule, local_to_utc, wall_time

log = logging.getLogger(__name__)

# Conflicts are looked for over this long, from the candidate's next firing.
CONFLICT_WINDOW = timedelta(days=30)
# Circular 39/2020/TT-BTTTT bulletin levels that can be scheduled, and their play priority.
# The third level, emergency, is never scheduled: it is sounded at once (POST /broadcasts).
BULLETIN_PRIORITY = {"normal": Priority.SCHEDULED, "priority": Priority.LIVE}
PRIORITY_BULLETIN = {p.value: level for level, p in BULLETIN_PRIORITY.items()}
QUEUE_AFTER = "queue_after"
Reach = Literal["all", "part"]


def bulletin_level(priority: str) -> str:
    """The bulletin level a stored play priority stands for."""
    return PRIORITY_BULLETIN.get(priority, "emergency")


def fmt_time(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


def fmt_length(length: timedelta) -> str:
    """'5 min', '45 s', '2 min 30 s': how long an announcement plays, for staff."""
    seconds = max(1, round(length.total_seconds()))
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def quiet_span(quiet: QuietHours) -> str:
    return f"{fmt_time(quiet.start)}–{fmt_time(quiet.end)}"


def schedule_holidays(
    zone_ids: Iterable[str], tree: ZoneTree, holidays: Mapping[str, frozenset[date]]
) -> frozenset[date]:
    """The holidays that silence a schedule: those of its commune.

    A schedule saved before schedules were limited to one commune may span several: it is
    then silent only on the days all of them observe (it is one broadcast).
    """
    communes = {tree.commune_of(z) for z in zone_ids if z in tree.parents}
    sets = [holidays.get(c, frozenset()) for c in sorted(communes)]
    return frozenset.intersection(*sets) if sets else frozenset()


def gong_length_ms(session: Session) -> int:
    """How long the gong preset plays (0 when there is none yet)."""
    audio = session.scalar(
        select(AudioFile)
        .join(Preset, Preset.audio_sha256 == AudioFile.sha256)
        .where(Preset.key == GONG_KEY)
    )
    return audio.duration_ms if audio is not None else 0


# --- quiet hours ----------------------------------------------------------------------------


def _runs_into(quiet: QuietHours, start: time, length: timedelta) -> time | None:
    """The local end time when [start, start + length) reaches the start of quiet hours."""
    if quiet.start == quiet.end:
        return None
    start_s = start.hour * 3600 + start.minute * 60 + start.second
    quiet_s = quiet.start.hour * 3600 + quiet.start.minute * 60 + quiet.start.second
    if not 0 < (quiet_s - start_s) % 86_400 < length.total_seconds():
        return None
    end_s = int(start_s + length.total_seconds()) % 86_400
    return time(end_s // 3600, end_s % 3600 // 60, end_s % 60)


def check_quiet_hours(
    rule: Rule,
    quiet: QuietHours,
    *,
    tz: ZoneInfo,
    priority: Priority,
    now: datetime,
    length: timedelta,
) -> None:
    """Raise QuietHoursError if a routine rule starts, or keeps playing, in quiet hours."""
    quiet.check_rule(rule, tz, priority, now)
    if priority is Priority.EMERGENCY:
        return
    if isinstance(rule, OnceRule):
        starts = [(wall_time(local_to_utc(rule.at, tz), tz).time(), "at")]
    else:
        starts = [(t, "times") for t in rule.times]
    for start, field in starts:
        end = _runs_into(quiet, start, length)
        if end is not None:
            raise QuietHoursError(
                f"the announcement lasts {fmt_length(length)}: started at {fmt_time(start)} "
                f"it would end at {fmt_time(end)}, within quiet hours ({quiet_span(quiet)}); "
                "choose an earlier time or a shorter recording",
                field=field,
                local_time=end,
            )


def check_own_overlap(rule: Rule, length: timedelta) -> None:
    """Refuse a rule whose times of one day are closer together than the announcement lasts."""
    if isinstance(rule, OnceRule):
        return
    day = date(2000, 1, 1)
    for earlier, later in zip(rule.times, rule.times[1:], strict=False):
        gap = datetime.combine(day, later) - datetime.combine(day, earlier)
        if gap < length:
            raise RuleError(
                f"{fmt_time(earlier)} and {fmt_time(later)} are {fmt_length(gap)} apart but the "
                f"announcement lasts {fmt_length(length)}: it would overlap itself; space the "
                "times further apart",
                field="times",
            )


def check_queue_quiet_hours(
    conflicts: Iterable[Conflict],
    *,
    length: timedelta,
    other_lengths: Mapping[int, timedelta],
    quiet: QuietHours,
    tz: ZoneInfo,
) -> None:
    """Refuse "queue after" when the two items, played one after the other, reach quiet hours."""
    for c in conflicts:
        first = min(c.candidate_start, c.other_start)
        local = wall_time(first, tz)
        end = _runs_into(quiet, local.time(), length + other_lengths[c.other_schedule_id])
        if end is not None:
            raise QuietHoursError(
                f"played one after the other with “{c.other_name}” from "
                f"{local:%Y-%m-%d %H:%M}, the two announcements would end at {fmt_time(end)}, "
                f"within quiet hours ({quiet_span(quiet)}); choose another time",
                field="on_conflict",
                local_time=end,
            )


# --- the enabled schedules ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One enabled schedule with its parsed rule and the conflict check's view of it."""

    schedule: Schedule
    audio: AudioFile
    item: ScheduledItem

    @property
    def length(self) -> timedelta:
        return self.item.duration


@dataclass(frozen=True)
class Firing:
    """One occurrence in a zone's programme."""

    at: datetime  # UTC
    entry: Entry
    reach: Reach  # "all": every speaker of the zone; "part": those of a zone below it


class Programme:
    """The enabled schedules, loaded once to answer one question about the programme."""

    def __init__(self, session: Session, tz: ZoneInfo, *, queue_after_only: bool = False) -> None:
        self.tz = tz
        self.tree = ZoneTree.load(session)
        self.ancestors = self.tree.ancestor_map()
        self.holidays = holidays_by_commune(session)
        self.gong_ms = gong_length_ms(session)
        stmt = (
            select(Schedule, AudioFile)
            .join(AudioFile, Schedule.audio_sha256 == AudioFile.sha256)
            .where(Schedule.enabled.is_(True))
            .order_by(Schedule.id)
        )
        if queue_after_only:
            stmt = stmt.where(Schedule.on_conflict == QUEUE_AFTER)
        self.entries: list[Entry] = []
        for schedule, audio in session.execute(stmt):
            try:
                rule = parse_rule(schedule.rule)
            except RuleError as exc:
                log.error("schedule %d has an invalid rule, left out: %s", schedule.id, exc)
                continue
            item = self.item(
                schedule.id,
                schedule.name,
                rule,
                schedule.zone_ids,
                self.length_ms(audio.duration_ms, schedule.gong),
            )
            self.entries.append(Entry(schedule, audio, item))

    def length_ms(self, audio_ms: int, gong: bool) -> int:
        """How long an item occupies its speakers: the audio, and the gong before and after."""
        return audio_ms + (2 * self.gong_ms if gong else 0)

    def item(
        self, schedule_id: int, name: str, rule: Rule, zone_ids: Collection[str], length_ms: int
    ) -> ScheduledItem:
        zones = frozenset(z for z in zone_ids if z in self.tree.parents)
        return ScheduledItem(
            schedule_id=schedule_id,
            name=name,
            rule=rule,
            duration_ms=length_ms,
            zone_ids=zones,
            zone_ancestors=self.ancestors,
            holidays=schedule_holidays(zones, self.tree, self.holidays),
        )

    def others(self, schedule_id: int) -> list[Entry]:
        return [e for e in self.entries if e.schedule.id != schedule_id]

    def conflicts(self, candidate: ScheduledItem, now: datetime) -> list[Conflict]:
        """Clashes over CONFLICT_WINDOW from the candidate's next firing after `now`."""
        first = next_occurrences(
            candidate.rule, tz=self.tz, after=now, count=1, holidays=candidate.holidays
        )
        if not first:
            return []
        return find_conflicts(
            candidate,
            [e.item for e in self.others(candidate.schedule_id)],
            tz=self.tz,
            window_start_utc=first[0],
            window_end_utc=first[0] + CONFLICT_WINDOW,
        )

    def lengths(self) -> dict[int, timedelta]:
        return {e.schedule.id: e.length for e in self.entries}

    def firings(
        self, zone_id: str, start: datetime, end: datetime, limit: int
    ) -> tuple[list[Firing], bool]:
        """What the zone's speakers play in [start, end), sorted; True if cut at `limit`."""
        above = set(self.ancestors.get(zone_id, frozenset())) | {zone_id}
        found: list[Firing] = []
        for entry in self.entries:
            zones = entry.item.zone_ids
            if zones & above:
                reach: Reach = "all"
            elif any(zone_id in self.ancestors.get(z, frozenset()) for z in zones):
                reach = "part"
            else:
                continue
            for at in occurrences_between(
                entry.item.rule, self.tz, start, end, entry.item.holidays
            ):
                found.append(Firing(at, entry, reach))
        found.sort(key=lambda f: (f.at, f.entry.schedule.id))
        return found[:limit], len(found) > limit


def queue_wait(session: Session, schedule: Schedule, at: datetime, tz: ZoneInfo) -> timedelta:
    """How long this occurrence may wait on a device behind clashing items sent before it.

    Only clashes staff accepted can exist: a schedule saved with "queue after" against any
    other, or any schedule against one saved so. Each clashing occurrence that starts no
    later than this one is ahead of it in the device's queue (equal priority plays in arrival
    order), so the wait is at most their lengths added up.
    """
    queued = schedule.on_conflict == QUEUE_AFTER
    if not queued:  # the usual case, kept to one small query per firing
        any_queued = select(Schedule.id).where(
            Schedule.enabled.is_(True), Schedule.on_conflict == QUEUE_AFTER
        )
        if session.scalar(any_queued.limit(1)) is None:
            return timedelta(0)
    programme = Programme(session, tz, queue_after_only=not queued)
    if not programme.others(schedule.id):
        return timedelta(0)
    try:
        rule = parse_rule(schedule.rule)
    except RuleError:
        return timedelta(0)
    audio = session.get(AudioFile, schedule.audio_sha256)
    length_ms = programme.length_ms(audio.duration_ms if audio else 0, schedule.gong)
    candidate = programme.item(schedule.id, schedule.name, rule, schedule.zone_ids, length_ms)
    candidate = replace(candidate, holidays=frozenset())  # it fires now: not a holiday
    conflicts = find_conflicts(
        candidate,
        [e.item for e in programme.others(schedule.id)],
        tz=tz,
        window_start_utc=at,
        window_end_utc=at + timedelta(seconds=1),
    )
    lengths = programme.lengths()
    ahead = {(c.other_schedule_id, c.other_start) for c in conflicts if c.other_start <= at}
    return sum((lengths[sid] for sid, _ in ahead), timedelta(0))
