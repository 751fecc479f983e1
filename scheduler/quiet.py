"""Quiet hours: routine broadcasts never play at night; emergencies always may."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from device_profiles.protocol import Priority
from scheduler.clock import require_aware
from scheduler.errors import QuietHoursError
from scheduler.rules import OnceRule, Rule, local_to_utc, wall_time

__all__ = ["QuietHours", "QuietHoursError"]

# Clock changes are looked for this far ahead of `now` (tz rules repeat every year).
_GAP_SCAN_DAYS = 366


def _fmt(t: time) -> str:
    return t.strftime("%H:%M:%S" if t.second else "%H:%M")


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock span [start, end), wrapping midnight when start > end; empty if equal."""

    start: time = time(22, 0)
    end: time = time(5, 0)

    def contains(self, local_time: time) -> bool:
        t = local_time.replace(tzinfo=None)
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def check_rule(
        self,
        rule: Rule,
        tz: ZoneInfo,
        priority: Priority,
        now: datetime,
    ) -> None:
        """Raise QuietHoursError naming the first local time of a routine rule in quiet hours."""
        if Priority(priority) is Priority.EMERGENCY:
            return
        now = require_aware(now, "now")
        if isinstance(rule, OnceRule):
            local = wall_time(local_to_utc(rule.at, tz), tz).time()
            if self.contains(local):
                raise self._error(local, "at")
            return
        for t in rule.times:
            if self.contains(t):
                raise self._error(t, "times")
        for t, shifted in _gap_shifts(rule.times, tz, now):
            if self.contains(shifted):
                raise QuietHoursError(
                    f"{_fmt(t)} does not exist on the day the clocks go forward and would "
                    f"play at {_fmt(shifted)}, within quiet hours ({self._span()}); "
                    "choose another time",
                    field="times",
                    local_time=shifted,
                )

    def _span(self) -> str:
        return f"{_fmt(self.start)}–{_fmt(self.end)}"

    def _error(self, local: time, field: str) -> QuietHoursError:
        return QuietHoursError(
            f"{_fmt(local)} is within quiet hours ({self._span()}): routine announcements "
            "cannot play then; choose another time, or send an emergency broadcast",
            field=field,
            local_time=local,
        )


def _offset(at_utc: datetime, tz: ZoneInfo) -> timedelta:
    offset = at_utc.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _gap_shifts(times: Iterable[time], tz: ZoneInfo, now: datetime) -> Iterator[tuple[time, time]]:
    """(time, local time it is moved to) for rule times inside a clock-change gap next year."""
    day = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    times = list(times)
    for _ in range(_GAP_SCAN_DAYS):
        nxt = day + timedelta(days=1)
        before, after = _offset(day, tz), _offset(nxt, tz)
        if after > before:  # clocks went forward somewhere in this day
            lo, hi = int(day.timestamp()), int(nxt.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(datetime.fromtimestamp(mid, UTC), tz) == before:
                    lo = mid
                else:
                    hi = mid
            change = datetime.fromtimestamp(hi, UTC).replace(tzinfo=None)
            gap_start, gap_end = change + before, change + after
            for t in times:
                for d in {gap_start.date(), gap_end.date()}:
                    if gap_start <= datetime.combine(d, t) < gap_end:
                        yield t, gap_end.time()
        day = nxt
