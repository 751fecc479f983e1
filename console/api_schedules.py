"""Schedule routes of the JSON API: save (with the commune's rules), edit, remove, preview,
and a zone's programme.

Every save runs the same checks: the rule parses, it stays out of its commune's quiet hours,
and it does not overlap another enabled schedule on the same speakers unless staff chose to
queue it after the other one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from flask import Response, jsonify, request
from flask_login import current_user
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from console import audit
from console.api import (
    ApiError,
    Body,
    Name,
    Sha256,
    ZoneId,
    bp,
    check_zones,
    iso,
    parse_body,
    user_id,
)
from console.auth import db, require_role
from console.communes import (
    DEFAULT_QUIET_HOURS,
    CommuneError,
    ZoneTree,
    holidays_of,
    lock_commune,
    quiet_hours_of,
)
from console.models import AudioFile, Broadcast, Role, Schedule, Zone
from console.programme import (
    BULLETIN_PRIORITY,
    QUEUE_AFTER,
    Programme,
    bulletin_level,
    check_own_overlap,
    check_queue_quiet_hours,
    check_quiet_hours,
    fmt_time,
    quiet_span,
)
from console.services import clock, settings
from device_profiles.protocol import Priority
from scheduler import Conflict, QuietHours, QuietHoursError, RuleError, occurrence_id
from scheduler.rules import MAX_TIMES_PER_DAY, RecurringRule, Rule, next_occurrences, parse_rule

log = logging.getLogger(__name__)

# A rule is a small object; this keeps a pasted calendar from being stored as one.
MAX_RULE_CHARS = 10_000
MAX_PREVIEW_COUNT = 100
MAX_PROGRAMME_DAYS = 31
MAX_PROGRAMME_ITEMS = 2000
EMERGENCY_NOT_SCHEDULED = (
    "emergency bulletins are not scheduled: they are sounded at once from the emergency "
    "button (POST /api/v1/broadcasts with priority 'emergency')"
)

# A rule is JSON checked by scheduler.parse_rule, which names the bad field.
RuleBody = dict[str, Any]


class ScheduleBody(Body):
    name: Name
    audio_sha256: Sha256
    rule: RuleBody
    zone_ids: Annotated[list[ZoneId], Field(min_length=1, max_length=200)]
    # Either (or both, when they agree): normal -> scheduled, priority -> live.
    bulletin_level: Literal["normal", "priority", "emergency"] | None = None
    priority: Literal["scheduled", "live", "emergency"] | None = None
    volume_pct: Annotated[int, Field(ge=0, le=100)] | None = None
    gong: bool = False
    enabled: bool = True
    on_conflict: Literal["refuse", "queue_after"] = "refuse"


class PreviewBody(Body):
    rule: RuleBody
    zone_ids: Annotated[list[ZoneId], Field(max_length=200)] = Field(default_factory=list)
    count: Annotated[int, Field(ge=1, le=MAX_PREVIEW_COUNT)] = 10
    audio_sha256: Sha256 | None = None
    gong: bool = False
    bulletin_level: Literal["normal", "priority", "emergency"] | None = None
    priority: Literal["scheduled", "live", "emergency"] | None = None


def schedule_json(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.id,
        "name": s.name,
        "audio_sha256": s.audio_sha256,
        "rule": s.rule,
        "zone_ids": s.zone_ids,
        "priority": s.priority,
        "bulletin_level": bulletin_level(s.priority),
        "volume_pct": s.volume_pct,
        "gong": s.gong,
        "enabled": s.enabled,
        "on_conflict": s.on_conflict,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def _local(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).isoformat()


def _site_tz() -> ZoneInfo:
    return ZoneInfo(settings().site_timezone)


# --- validation shared by save and preview --------------------------------------------------


def _priority(level: str | None, priority: str | None) -> Priority:
    """The play priority from a bulletin level and/or a priority; they must agree."""
    if level == "emergency":
        raise ApiError(
            422, "invalid", f"bulletin_level: {EMERGENCY_NOT_SCHEDULED}", field="bulletin_level"
        )
    if priority == "emergency":
        raise ApiError(422, "invalid", f"priority: {EMERGENCY_NOT_SCHEDULED}", field="priority")
    from_level = BULLETIN_PRIORITY[level] if level is not None else None
    from_priority = Priority(priority) if priority is not None else None
    if from_level is not None and from_priority is not None and from_level is not from_priority:
        raise ApiError(
            422,
            "invalid",
            f"bulletin_level: a {level!r} bulletin plays at priority {from_level.value!r}, "
            f"not {priority!r}; give one of the two, or matching ones",
            field="bulletin_level",
        )
    return from_level or from_priority or Priority.SCHEDULED


def _rule(data: dict[str, Any]) -> Rule:
    if len(json.dumps(data, ensure_ascii=False)) > MAX_RULE_CHARS:
        raise ApiError(
            422, "invalid_rule", f"rule: longer than {MAX_RULE_CHARS} characters", field="rule"
        )
    try:
        return parse_rule(data)
    except RuleError as exc:
        field = f"rule.{exc.field}" if exc.field else "rule"
        raise ApiError(
            422, "invalid_rule", f"rule.{exc}" if exc.field else str(exc), field=field
        ) from None


def _commune(tree: ZoneTree, zone_ids: list[str]) -> str:
    try:
        return tree.commune_of_all(zone_ids)
    except CommuneError as exc:
        raise ApiError(422, "invalid", f"zone_ids: {exc}", field="zone_ids") from None


def _quiet_error(exc: QuietHoursError, prefix: str = "rule.") -> ApiError:
    field = f"{prefix}{exc.field}" if exc.field and prefix else (exc.field or "rule")
    message = f"{prefix}{exc}" if prefix else str(exc)
    return ApiError(422, "quiet_hours", message, field=field, local_time=fmt_time(exc.local_time))


# --- conflicts ------------------------------------------------------------------------------


def _conflicts_json(conflicts: list[Conflict], tz: ZoneInfo) -> list[dict[str, Any]]:
    """One entry per other schedule: its first clash and how many there are in the window."""
    by_other: dict[int, list[Conflict]] = {}
    for c in conflicts:
        by_other.setdefault(c.other_schedule_id, []).append(c)
    out = []
    for other_id, found in by_other.items():
        first = found[0]
        out.append(
            {
                "schedule_id": other_id,
                "name": first.other_name,
                "at": iso(first.candidate_start),
                "at_local": _local(first.candidate_start, tz),
                "other_at": iso(first.other_start),
                "other_at_local": _local(first.other_start, tz),
                "zones": [list(pair) for pair in first.zones],
                "clashes": len(found),
            }
        )
    return out


def _conflict_error(conflicts: list[Conflict], tz: ZoneInfo) -> ApiError:
    listed = _conflicts_json(conflicts, tz)
    first = conflicts[0]
    more = len(listed) - 1
    also = f" (and {more} other schedule{'s' if more > 1 else ''})" if more else ""
    message = (
        f"this announcement {first.describe(tz)} (schedule {first.other_schedule_id}){also}: "
        "two announcements cannot play on the same speakers at once. Choose another time or "
        'zone, or save it with "on_conflict": "queue_after" to play it after the other '
        "one finishes"
    )
    return ApiError(409, "conflict", message, field="rule", conflicts=listed)


# --- save -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A schedule body that passed every check, ready to store."""

    body: ScheduleBody
    rule: Rule
    priority: Priority
    zone_ids: list[str]


def _check(session: Session, body: ScheduleBody, schedule_id: int) -> Checked:
    """Every rule a saved schedule must meet; raises ApiError naming the field."""
    rule = _rule(body.rule)
    priority = _priority(body.bulletin_level, body.priority)
    check_zones(session, body.zone_ids)
    audio = session.get(AudioFile, body.audio_sha256)
    if audio is None:
        raise ApiError(422, "invalid", "audio_sha256: unknown audio", field="audio_sha256")
    tree = ZoneTree.load(session)
    commune = _commune(tree, body.zone_ids)
    lock_commune(session, commune)  # two clashing saves cannot both pass
    tz, now = _site_tz(), clock().now()
    programme = Programme(session, tz)
    length_ms = programme.length_ms(audio.duration_ms, body.gong)
    quiet = quiet_hours_of(session, commune)
    candidate = programme.item(schedule_id, body.name, rule, body.zone_ids, length_ms)
    try:
        check_quiet_hours(rule, quiet, tz=tz, priority=priority, now=now, length=candidate.duration)
    except QuietHoursError as exc:
        raise _quiet_error(exc) from None
    try:
        check_own_overlap(rule, candidate.duration)
    except RuleError as exc:
        raise ApiError(422, "conflict", f"rule.{exc}", field=f"rule.{exc.field}") from None
    if body.enabled:
        conflicts = programme.conflicts(candidate, now)
        if conflicts and body.on_conflict != QUEUE_AFTER:
            raise _conflict_error(conflicts, tz)
        try:
            check_queue_quiet_hours(
                conflicts,
                length=candidate.duration,
                other_lengths=programme.lengths(),
                quiet=quiet,
                tz=tz,
            )
        except QuietHoursError as exc:
            raise _quiet_error(exc, prefix="") from None
    return Checked(body, rule, priority, sorted(set(body.zone_ids)))


def _store(schedule: Schedule, checked: Checked) -> None:
    body = checked.body
    schedule.name = body.name
    schedule.audio_sha256 = body.audio_sha256
    schedule.rule = checked.rule.model_dump(mode="json")
    schedule.zone_ids = checked.zone_ids
    schedule.priority = checked.priority.value
    schedule.volume_pct = body.volume_pct
    schedule.gong = body.gong
    schedule.enabled = body.enabled
    schedule.on_conflict = body.on_conflict


def _who() -> str:
    return str(current_user.username)


def _get(session: Session, schedule_id: int) -> Schedule:
    # A larger id cannot exist (ids are 32-bit), and SQLite would overflow on it.
    schedule = session.get(Schedule, schedule_id) if schedule_id < 2**31 else None
    if schedule is None:
        raise ApiError(404, "not_found", f"no schedule {schedule_id}")
    return schedule


@bp.get("/schedules")
@require_role(Role.VIEWER)
def list_schedules() -> Response:
    with db().session() as session:
        rows = session.scalars(select(Schedule).order_by(Schedule.id))
        return jsonify([schedule_json(s) for s in rows])


@bp.post("/schedules")
@require_role(Role.OPERATOR)
def create_schedule() -> tuple[Response, int]:
    body = parse_body(ScheduleBody)
    with db().write_session() as session:
        checked = _check(session, body, schedule_id=0)  # 0: no stored schedule has it
        schedule = Schedule(created_by=user_id())
        _store(schedule, checked)
        session.add(schedule)
        session.flush()
        log.info("schedule %d %r created by %s", schedule.id, schedule.name, _who())
        audit.record_here(session, "schedule_created", str(schedule.id), name=schedule.name)
        return jsonify(schedule_json(schedule)), 201


@bp.get("/schedules/<int:schedule_id>")
@require_role(Role.VIEWER)
def get_schedule(schedule_id: int) -> Response:
    with db().session() as session:
        return jsonify(schedule_json(_get(session, schedule_id)))


@bp.put("/schedules/<int:schedule_id>")
@require_role(Role.OPERATOR)
def edit_schedule(schedule_id: int) -> Response:
    """Replace a schedule (the whole body, as when creating it); the same checks apply."""
    body = parse_body(ScheduleBody)
    with db().write_session() as session:
        schedule = _get(session, schedule_id)
        checked = _check(session, body, schedule_id=schedule_id)
        _store(schedule, checked)
        schedule.updated_at = clock().now()
        session.flush()
        log.info("schedule %d %r edited by %s", schedule.id, schedule.name, _who())
        audit.record_here(session, "schedule_edited", str(schedule.id), name=schedule.name)
        return jsonify(schedule_json(schedule))


@bp.delete("/schedules/<int:schedule_id>")
@require_role(Role.OPERATOR)
def delete_schedule(schedule_id: int) -> Response | tuple[str, int]:
    """Remove a schedule; one that already played is disabled instead, to keep its history."""
    with db().write_session() as session:
        schedule = _get(session, schedule_id)
        played = session.scalar(
            select(Broadcast.id).where(Broadcast.schedule_id == schedule_id).limit(1)
        )
        if played is None:
            session.delete(schedule)
            audit.record_here(session, "schedule_deleted", str(schedule_id), name=schedule.name)
            log.info("schedule %d %r deleted by %s", schedule_id, schedule.name, _who())
            return "", 204
        schedule.enabled = False
        schedule.updated_at = clock().now()
        audit.record_here(session, "schedule_disabled", str(schedule_id), name=schedule.name)
        log.info(
            "schedule %d %r disabled (it has played) by %s", schedule_id, schedule.name, _who()
        )
        return jsonify(schedule_json(schedule))


# --- previews -------------------------------------------------------------------------------


def _skipped_holidays(
    rule: Rule,
    tz: ZoneInfo,
    now: datetime,
    found: list[datetime],
    count: int,
    holidays: dict[date, str],
) -> list[dict[str, str]]:
    """The commune's holidays on which the rule would have played, up to the last firing."""
    if not isinstance(rule, RecurringRule) or not holidays:
        return []
    today = now.astimezone(tz).date()
    ahead = [d for d in holidays if d >= today]
    plain = next_occurrences(rule, tz=tz, after=now, count=count + MAX_TIMES_PER_DAY * len(ahead))
    if not plain:
        return []
    horizon = found[-1] if len(found) == count else plain[-1]
    days = sorted({t.astimezone(tz).date() for t in plain if t <= horizon} & set(ahead))
    return [{"date": d.isoformat(), "name": holidays[d]} for d in days]


@bp.post("/schedules/preview")
@require_role(Role.VIEWER)
def preview_rule() -> Response:
    """The next firings of a rule (not stored), with its commune's holidays and quiet hours."""
    body = parse_body(PreviewBody)
    rule = _rule(body.rule)
    priority = _priority(body.bulletin_level, body.priority)
    tz, now = _site_tz(), clock().now()
    with db().session() as session:
        check_zones(session, body.zone_ids)
        commune = _commune(ZoneTree.load(session), body.zone_ids) if body.zone_ids else None
        quiet = quiet_hours_of(session, commune) if commune else DEFAULT_QUIET_HOURS
        holidays = holidays_of(session, commune) if commune else {}
        programme = Programme(session, tz)
        audio = session.get(AudioFile, body.audio_sha256) if body.audio_sha256 else None
        if body.audio_sha256 and audio is None:
            raise ApiError(422, "invalid", "audio_sha256: unknown audio", field="audio_sha256")
        length_ms = programme.length_ms(audio.duration_ms if audio else 0, body.gong)
    found = next_occurrences(rule, tz=tz, after=now, count=body.count, holidays=holidays.keys())
    warnings = []
    try:
        check_quiet_hours(
            rule,
            quiet,
            tz=tz,
            priority=priority,
            now=now,
            length=timedelta(milliseconds=length_ms),
        )
    except QuietHoursError as exc:
        err = _quiet_error(exc)
        warnings.append({"code": err.code, "message": err.message, **err.detail})
    return jsonify(
        {
            "timezone": tz.key,
            "commune_id": commune,
            "quiet_hours": _quiet_json(quiet),
            "occurrences": [{"at": iso(t), "local": _local(t, tz)} for t in found],
            "holidays_skipped": _skipped_holidays(rule, tz, now, found, body.count, holidays),
            "warnings": warnings,
        }
    )


def _quiet_json(quiet: QuietHours) -> dict[str, str]:
    return {
        "start": quiet.start.strftime("%H:%M"),
        "end": quiet.end.strftime("%H:%M"),
        "span": quiet_span(quiet),
    }


def _days_arg() -> int:
    raw = request.args.get("days", "7")
    # isascii: "²" is a digit to isdigit(), not to int().
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 3
    if not digits or not 1 <= int(raw) <= MAX_PROGRAMME_DAYS:
        raise ApiError(
            422, "invalid", f"days: a whole number from 1 to {MAX_PROGRAMME_DAYS}", field="days"
        )
    return int(raw)


@bp.get("/zones/<zone_id>/programme")
@require_role(Role.VIEWER)
def zone_programme(zone_id: str) -> Response:
    """What the zone's speakers will play over the next days, in order.

    Schedules for the zone or a zone above it play on every speaker of it ("all"); schedules
    for a zone below it on some of them ("part").
    """
    days = _days_arg()
    tz, now = _site_tz(), clock().now()
    end = now + timedelta(days=days)
    with db().session() as session:
        if session.get(Zone, zone_id) is None:
            raise ApiError(404, "not_found", f"no zone {zone_id!r}")
        programme = Programme(session, tz)
        commune = programme.tree.commune_of(zone_id)
        holidays = holidays_of(session, commune)
        firings, truncated = programme.firings(zone_id, now, end, MAX_PROGRAMME_ITEMS)
    first_day, last_day = now.astimezone(tz).date(), end.astimezone(tz).date()
    return jsonify(
        {
            "zone_id": zone_id,
            "commune_id": commune,
            "timezone": tz.key,
            "from": iso(now),
            "to": iso(end),
            "holidays": [
                {"date": d.isoformat(), "name": holidays[d]}
                for d in sorted(holidays)
                if first_day <= d <= last_day
            ],
            "items": [
                {
                    "at": iso(f.at),
                    "local": _local(f.at, tz),
                    "occurrence_id": occurrence_id(f.entry.schedule.id, f.at),
                    "schedule_id": f.entry.schedule.id,
                    "name": f.entry.schedule.name,
                    "audio_sha256": f.entry.audio.sha256,
                    "audio_name": f.entry.audio.name,
                    "duration_ms": f.entry.audio.duration_ms,
                    "gong": f.entry.schedule.gong,
                    "zone_ids": f.entry.schedule.zone_ids,
                    "priority": f.entry.schedule.priority,
                    "bulletin_level": bulletin_level(f.entry.schedule.priority),
                    "reach": f.reach,
                }
                for f in firings
            ],
            "truncated": truncated,
        }
    )
