"""One occurrence of a schedule, named by a deterministic id so firing is idempotent end to end."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from scheduler.clock import require_aware

_ID_RE = re.compile(r"^s(\d{1,19})-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")


def occurrence_id(schedule_id: int, scheduled_at_utc: datetime) -> str:
    """'s{schedule_id}-{YYYYmmddTHHMMSSZ}': a valid MQTT command id (charset, <= 64 chars)."""
    if isinstance(schedule_id, bool) or not isinstance(schedule_id, int) or schedule_id < 0:
        raise ValueError(f"schedule_id must be a non-negative int, got {schedule_id!r}")
    if schedule_id >= 10**19:
        raise ValueError(f"schedule_id {schedule_id} is too large for an occurrence id")
    at = require_aware(scheduled_at_utc, "scheduled_at_utc").astimezone(UTC)
    return (
        f"s{schedule_id}-{at.year:04d}{at.month:02d}{at.day:02d}"
        f"T{at.hour:02d}{at.minute:02d}{at.second:02d}Z"
    )


def parse_occurrence_id(value: str) -> tuple[int, datetime]:
    """(schedule_id, scheduled_at UTC) of an occurrence id; ValueError if it is not one."""
    match = _ID_RE.match(value)
    if match is None:
        raise ValueError(f"not an occurrence id: {value!r}")
    schedule_id, year, month, day, hour, minute, second = (int(g) for g in match.groups())
    try:
        return schedule_id, datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not an occurrence id: {value!r}") from None


@dataclass(frozen=True)
class Occurrence:
    """A schedule due at one instant; `id` is derived from both and need not be given."""

    schedule_id: int
    scheduled_at: datetime
    id: str = field(default="")

    def __post_init__(self) -> None:
        at = require_aware(self.scheduled_at, "scheduled_at").astimezone(UTC)
        object.__setattr__(self, "scheduled_at", at)
        expected = occurrence_id(self.schedule_id, at)
        if not self.id:
            object.__setattr__(self, "id", expected)
        elif self.id != expected:
            raise ValueError(f"occurrence id {self.id!r} does not match {expected!r}")
