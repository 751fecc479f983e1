"""Schedule rules (what staff ask for) and the UTC instants they mean.

Rules speak site-local wall-clock time; everything they produce is aware UTC. A local time
that falls in a daylight-saving gap moves forward to the first instant after the gap; an
ambiguous one (clocks going back) fires once, at its first instant.
"""

from __future__ import annotations

import calendar
import difflib
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from scheduler.clock import require_aware
from scheduler.errors import RuleError

MAX_TIMES_PER_DAY = 24
MAX_INTERVAL = 365
# The Gregorian calendar repeats every 400 years, so a monthly pattern that happens at all
# happens again within that many years.
_SEARCH_YEARS = 400
_LAST_YEAR = 9000

Frequency = Literal["daily", "weekly", "monthly"]


class _RuleBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OnceRule(_RuleBase):
    """One broadcast at `at`: aware, or naive meaning the site's local wall-clock time."""

    kind: Literal["once"] = "once"
    at: datetime

    @field_validator("at")
    @classmethod
    def _whole_seconds(cls, value: datetime) -> datetime:
        return value.replace(microsecond=0)


class RecurringRule(_RuleBase):
    """Local wall-clock times repeated every `interval` days, weeks or months."""

    kind: Literal["recurring"] = "recurring"
    times: list[time]
    frequency: Frequency
    interval: int = 1
    weekdays: list[int] = Field(default_factory=list)
    month_day: int | None = None
    month_weekday: tuple[int, int] | None = None
    start_date: date
    end_date: date | None = None
    exceptions: list[date] = Field(default_factory=list)

    @field_validator("times")
    @classmethod
    def _check_times(cls, value: list[time]) -> list[time]:
        if any(t.tzinfo is not None for t in value):
            raise RuleError(
                "give local wall-clock times without a UTC offset, e.g. 07:00", field="times"
            )
        times = sorted({t.replace(microsecond=0) for t in value})
        if not 1 <= len(times) <= MAX_TIMES_PER_DAY:
            raise RuleError(
                f"give between 1 and {MAX_TIMES_PER_DAY} different times of day", field="times"
            )
        return times

    @field_validator("interval")
    @classmethod
    def _check_interval(cls, value: int) -> int:
        if not 1 <= value <= MAX_INTERVAL:
            raise RuleError(f"must be between 1 and {MAX_INTERVAL}", field="interval")
        return value

    @field_validator("weekdays")
    @classmethod
    def _check_weekdays(cls, value: list[int]) -> list[int]:
        for day in value:
            if not 0 <= day <= 6:
                raise RuleError(
                    f"{day} is not a day of the week (0 = Monday … 6 = Sunday)", field="weekdays"
                )
        return sorted(set(value))

    @field_validator("month_day")
    @classmethod
    def _check_month_day(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 31:
            raise RuleError(f"{value} is not a day of the month (1 to 31)", field="month_day")
        return value

    @field_validator("month_weekday")
    @classmethod
    def _check_month_weekday(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        weekday, nth = value
        if not 0 <= weekday <= 6:
            raise RuleError(
                f"{weekday} is not a day of the week (0 = Monday … 6 = Sunday)",
                field="month_weekday",
            )
        if nth == 0 or not -5 <= nth <= 5:
            raise RuleError(
                f"{nth} is not a week of the month: use 1 to 5 (first to fifth) "
                "or -1 to -5 (last to fifth from last)",
                field="month_weekday",
            )
        return value

    @field_validator("exceptions")
    @classmethod
    def _sort_exceptions(cls, value: list[date]) -> list[date]:
        return sorted(set(value))

    @model_validator(mode="after")
    def _check_consistent(self) -> RecurringRule:
        if self.frequency == "weekly" and not self.weekdays:
            raise RuleError("choose at least one day of the week", field="weekdays")
        if self.frequency != "weekly" and self.weekdays:
            raise RuleError("days of the week apply to weekly rules only", field="weekdays")
        if self.frequency == "monthly":
            if self.month_day is None and self.month_weekday is None:
                raise RuleError(
                    "a monthly rule needs a day of the month (month_day) "
                    "or a weekday of the month (month_weekday)",
                    field="month_day",
                )
            if self.month_day is not None and self.month_weekday is not None:
                raise RuleError("give month_day or month_weekday, not both", field="month_day")
        elif self.month_day is not None or self.month_weekday is not None:
            field = "month_day" if self.month_day is not None else "month_weekday"
            raise RuleError("applies to monthly rules only", field=field)
        if self.end_date is not None and self.end_date < self.start_date:
            raise RuleError(
                f"{self.end_date} is before the start date {self.start_date}", field="end_date"
            )
        if next(_rule_dates(self, self.start_date), None) is None:
            span = f"on or after {self.start_date}"
            if self.end_date is not None:
                span = f"from {self.start_date} to {self.end_date}"
            raise RuleError(
                f"this rule never happens: no day {span} matches it",
                field="end_date" if self.end_date else _pattern_field(self),
            )
        return self


Rule = Annotated[OnceRule | RecurringRule, Field(discriminator="kind")]
_RULE_ADAPTER: TypeAdapter[OnceRule | RecurringRule] = TypeAdapter(Rule)
_KINDS = ("once", "recurring")


def parse_rule(data: Mapping[str, Any]) -> Rule:
    """Validate a rule from JSON-like data; RuleError names the first bad field."""
    if not isinstance(data, Mapping):
        raise RuleError("a rule must be an object with a 'kind'")
    try:
        return _RULE_ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        raise _rule_error(exc, data) from None


def _rule_error(exc: ValidationError, data: Mapping[str, Any]) -> RuleError:
    err = exc.errors()[0]
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, RuleError):
        return RuleError(cause.reason, field=cause.field)
    loc = [str(part) for part in err["loc"]]
    model: type[_RuleBase] | None = None
    if loc and loc[0] in _KINDS:
        model = OnceRule if loc[0] == "once" else RecurringRule
        loc = loc[1:]
    field = ".".join(loc) or "kind"
    kind = err["type"]
    if kind == "union_tag_invalid":
        return RuleError(f"must be 'once' or 'recurring', not {data.get('kind')!r}", field="kind")
    if kind == "union_tag_not_found":
        return RuleError("is required: 'once' or 'recurring'", field="kind")
    if kind == "missing":
        return RuleError("is required", field=field)
    if kind == "extra_forbidden" and model is not None:
        known = list(model.model_fields)
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
        return RuleError(f"unknown field{hint}", field=field)
    return RuleError(str(err["msg"]), field=field)


def _pattern_field(rule: RecurringRule) -> str:
    if rule.frequency == "monthly":
        return "month_day" if rule.month_day is not None else "month_weekday"
    return "start_date"


# --- local time ------------------------------------------------------------------------------


def local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a site-local wall time (naive, or aware: then just converted).

    A time in a gap (clocks spring forward) moves forward to the end of the gap; an ambiguous
    time (clocks fall back) takes its first instant.
    """
    if local.tzinfo is not None:
        return require_aware(local, "local").astimezone(UTC)
    naive = local.replace(fold=0)
    first = naive.replace(tzinfo=tz).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap: fold=1 lands before it and fold=0 after it; find the transition in between.
    before = int(naive.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    after = int(first.timestamp())
    while after - before > 1:
        mid = (before + after) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            after = mid
        else:
            before = mid
    return datetime.fromtimestamp(after, UTC)


def wall_time(at_utc: datetime, tz: ZoneInfo) -> datetime:
    """Naive site-local wall time of an instant."""
    return require_aware(at_utc, "at_utc").astimezone(tz).replace(tzinfo=None)


# --- recurrence -------------------------------------------------------------------------------


def _month_date(year: int, month: int, rule: RecurringRule) -> date | None:
    """The rule's day in one month, or None when that month has no such day."""
    days = calendar.monthrange(year, month)[1]
    if rule.month_day is not None:
        return date(year, month, rule.month_day) if rule.month_day <= days else None
    assert rule.month_weekday is not None
    weekday, nth = rule.month_weekday
    if nth > 0:
        day = 1 + (weekday - date(year, month, 1).weekday()) % 7 + 7 * (nth - 1)
    else:
        day = days - (date(year, month, days).weekday() - weekday) % 7 + 7 * (nth + 1)
    return date(year, month, day) if 1 <= day <= days else None


def _rule_dates(rule: RecurringRule, first: date) -> Iterator[date]:
    """The rule's days on or after `first`, in order, before exceptions and holidays."""
    first = max(first, rule.start_date)
    last = rule.end_date or date(min(first.year + _SEARCH_YEARS, _LAST_YEAR), 12, 31)
    if last.year > _LAST_YEAR:
        last = date(_LAST_YEAR, 12, 31)
    n = rule.interval
    if rule.frequency == "daily":
        offset = (first - rule.start_date).days
        day = rule.start_date + timedelta(days=offset + (-offset) % n)
        while day <= last:
            yield day
            day += timedelta(days=n)
    elif rule.frequency == "weekly":
        anchor = rule.start_date - timedelta(days=rule.start_date.weekday())
        weeks = (first - anchor).days // 7
        monday = anchor + timedelta(weeks=weeks + (-weeks) % n)
        while monday <= last:
            for weekday in rule.weekdays:
                day = monday + timedelta(days=weekday)
                if first <= day <= last:
                    yield day
            monday += timedelta(weeks=n)
    else:
        start_month = rule.start_date.year * 12 + rule.start_date.month - 1
        offset = first.year * 12 + first.month - 1 - start_month
        month = start_month + offset + (-offset) % n
        while month // 12 <= last.year:
            day_or_none = _month_date(month // 12, month % 12 + 1, rule)
            if day_or_none is not None and first <= day_or_none <= last:
                yield day_or_none
            month += n


def iter_occurrences(
    rule: Rule,
    tz: ZoneInfo,
    after: datetime,
    holidays: Collection[date] = (),
) -> Iterator[datetime]:
    """Occurrences (aware UTC, strictly increasing) strictly after `after`.

    Exceptions and holidays are local dates; they remove that day's times. Holidays do not
    apply to once rules: a one-off date was chosen on purpose.
    """
    after = require_aware(after, "after").astimezone(UTC)
    if isinstance(rule, OnceRule):
        at = local_to_utc(rule.at, tz)
        if at > after:
            yield at
        return
    skip = set(rule.exceptions).union(holidays)
    last = after
    # Start a day early: a time of the previous day may land after `after` (gap shifts).
    for day in _rule_dates(rule, wall_time(after, tz).date() - timedelta(days=1)):
        if day in skip:
            continue
        for t in rule.times:
            at = local_to_utc(datetime.combine(day, t), tz)
            if at > last:  # also merges times a gap moved onto the same instant
                yield at
                last = at


def next_occurrences(
    rule: Rule,
    *,
    tz: ZoneInfo,
    after: datetime,
    count: int,
    holidays: Collection[date] = (),
) -> list[datetime]:
    """The next `count` occurrences strictly after `after` (fewer if the rule ends)."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    return list(islice(iter_occurrences(rule, tz, after, holidays), count))


def occurrences_between(
    rule: Rule,
    tz: ZoneInfo,
    start_utc: datetime,
    end_utc: datetime,
    holidays: Collection[date] = (),
) -> list[datetime]:
    """Occurrences with start_utc <= occurrence < end_utc."""
    end_utc = require_aware(end_utc, "end_utc")
    found = []
    for at in iter_occurrences(rule, tz, start_utc - timedelta(microseconds=1), holidays):
        if at >= end_utc:
            break
        found.append(at)
    return found
