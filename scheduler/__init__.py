"""Time for the loudspeakers: schedule rules, occurrences, quiet hours, conflicts and the
service that fires occurrences through APScheduler.

It knows time, not storage or transport: the console worker hands it a ScheduleSource and
callbacks. Importing it starts nothing.
"""

from scheduler.clock import Clock, FakeClock, SystemClock
from scheduler.conflicts import Conflict, ScheduledItem, find_conflicts, hierarchy_overlap
from scheduler.errors import QuietHoursError, RuleError, SchedulerError
from scheduler.occurrence import Occurrence, occurrence_id, parse_occurrence_id
from scheduler.quiet import QuietHours
from scheduler.rules import (
    OnceRule,
    RecurringRule,
    Rule,
    iter_occurrences,
    local_to_utc,
    next_occurrences,
    occurrences_between,
    parse_rule,
)
from scheduler.service import SchedulerService
from scheduler.source import InMemoryScheduleSource, ScheduleSource, ScheduleSpec

__all__ = [
    "Clock",
    "Conflict",
    "FakeClock",
    "InMemoryScheduleSource",
    "Occurrence",
    "OnceRule",
    "QuietHours",
    "QuietHoursError",
    "RecurringRule",
    "Rule",
    "RuleError",
    "ScheduleSource",
    "ScheduleSpec",
    "ScheduledItem",
    "SchedulerError",
    "SchedulerService",
    "SystemClock",
    "find_conflicts",
    "hierarchy_overlap",
    "iter_occurrences",
    "local_to_utc",
    "next_occurrences",
    "occurrence_id",
    "occurrences_between",
    "parse_occurrence_id",
    "parse_rule",
]
