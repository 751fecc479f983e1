"""Where the service gets its schedules and keeps its last check: a Protocol and a fake."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from scheduler.clock import require_aware
from scheduler.rules import Rule


@dataclass(frozen=True)
class ScheduleSpec:
    """One enabled schedule as the service sees it: an id, a rule, the commune's holidays."""

    id: int
    rule: Rule
    holidays: frozenset[date] = field(default_factory=frozenset)


class ScheduleSource(Protocol):
    """The console's database, seen from the scheduler."""

    def active_schedules(self) -> Iterable[ScheduleSpec]: ...

    def last_checked(self) -> datetime | None:
        """When the service last accounted for every occurrence up to; None before first run."""
        ...

    def set_last_checked(self, when: datetime) -> None: ...


class InMemoryScheduleSource:
    """A ScheduleSource kept in memory: for tests, demos and the console's previews."""

    def __init__(
        self, schedules: Iterable[ScheduleSpec] = (), last_checked: datetime | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._schedules = list(schedules)
        self._last_checked = last_checked
        self.writes = 0

    def active_schedules(self) -> list[ScheduleSpec]:
        with self._lock:
            return list(self._schedules)

    def replace(self, schedules: Iterable[ScheduleSpec]) -> None:
        with self._lock:
            self._schedules = list(schedules)

    def last_checked(self) -> datetime | None:
        with self._lock:
            return self._last_checked

    def set_last_checked(self, when: datetime) -> None:
        require_aware(when, "when")
        with self._lock:
            self._last_checked = when
            self.writes += 1
