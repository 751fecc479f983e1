"""Commune routes of the JSON API: quiet hours and the holiday calendar of each commune."""

from __future__ import annotations

import logging
import re
from datetime import date, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from flask import Response, jsonify, request
from flask_login import current_user
from pydantic import BeforeValidator, ValidationInfo, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from console import audit
from console.api import ApiError, Body, Name, bp, iso, parse_body, user_id
from console.auth import db, require_role
from console.communes import (
    DEFAULT_QUIET_HOURS,
    CommuneError,
    get_commune,
    lock_commune,
    quiet_hours_of,
)
from console.models import CommuneSettings, Holiday, Role, Zone
from console.programme import Programme, check_quiet_hours, quiet_span
from console.services import clock, settings
from device_profiles.protocol import Priority
from scheduler import QuietHours, QuietHoursError

log = logging.getLogger(__name__)

MAX_HOLIDAY_DAYS = 31  # Tết is about a week; a longer span is more likely a typing mistake
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date_text(value: Any) -> Any:
    """Only 'YYYY-MM-DD': no timestamps, no datetimes."""
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ValueError("give a date as YYYY-MM-DD, e.g. 2026-09-02")
    return value


def _time_text(value: Any) -> Any:
    if not isinstance(value, str) or not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", value):
        raise ValueError("give a local time as HH:MM (00:00 to 23:59), e.g. 22:00")
    return value


Day = date  # HolidayBody has a field named `date`
LocalDate = Annotated[Day, BeforeValidator(_date_text)]
LocalTime = Annotated[time, BeforeValidator(_time_text)]


class QuietHoursBody(Body):
    start: LocalTime
    end: LocalTime


class HolidayBody(Body):
    date: LocalDate
    name: Name
    # The last day of a holiday of several days (Tết), inclusive.
    end_date: LocalDate | None = None

    @field_validator("date", "end_date")
    @classmethod
    def _sane_year(cls, value: Day | None) -> Day | None:
        if value is not None and not 2000 <= value.year <= 2100:
            raise ValueError("give a date between the years 2000 and 2100")
        return value

    @field_validator("end_date")
    @classmethod
    def _span(cls, value: Day | None, info: ValidationInfo) -> Day | None:
        first = info.data.get("date")
        if value is None or first is None:
            return value
        if value < first:
            raise ValueError(f"{value} is before the first day, {first}")
        if (value - first).days >= MAX_HOLIDAY_DAYS:
            raise ValueError(f"a holiday lasts at most {MAX_HOLIDAY_DAYS} days")
        return value

    def days(self) -> list[Day]:
        last = self.end_date or self.date
        return [self.date + timedelta(days=n) for n in range((last - self.date).days + 1)]


def _commune(session: Session, zone_id: str) -> Zone:
    try:
        return get_commune(session, zone_id)
    except CommuneError as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def _who() -> str:
    return str(current_user.username)


def _hhmm(t: time) -> str:
    return t.strftime("%H:%M")


def quiet_hours_json(zone_id: str, row: CommuneSettings | None) -> dict[str, Any]:
    quiet = QuietHours(row.quiet_start, row.quiet_end) if row else DEFAULT_QUIET_HOURS
    return {
        "zone_id": zone_id,
        "start": _hhmm(quiet.start),
        "end": _hhmm(quiet.end),
        "span": quiet_span(quiet),
        "none": quiet.start == quiet.end,
        "default": row is None,
        "updated_by": row.updated_by if row else None,
        "updated_at": iso(row.updated_at) if row else None,
    }


def holiday_json(h: Holiday) -> dict[str, Any]:
    return {
        "date": h.day.isoformat(),
        "name": h.name,
        "created_by": h.created_by,
        "created_at": iso(h.created_at),
    }


# --- quiet hours ----------------------------------------------------------------------------


@bp.get("/communes/<zone_id>/quiet-hours")
@require_role(Role.VIEWER)
def get_quiet_hours(zone_id: str) -> Response:
    with db().session() as session:
        _commune(session, zone_id)
        return jsonify(quiet_hours_json(zone_id, session.get(CommuneSettings, zone_id)))


def _schedules_in_quiet(session: Session, zone_id: str, quiet: QuietHours) -> list[dict[str, Any]]:
    """The commune's enabled schedules that the new quiet hours would silence."""
    tz, now = ZoneInfo(settings().site_timezone), clock().now()
    programme = Programme(session, tz)
    found = []
    for entry in programme.entries:
        zones = entry.item.zone_ids
        if not zones or zone_id not in {programme.tree.commune_of(z) for z in zones}:
            continue
        try:
            check_quiet_hours(
                entry.item.rule,
                quiet,
                tz=tz,
                priority=Priority(entry.schedule.priority),
                now=now,
                length=entry.length,
            )
        except QuietHoursError as exc:
            found.append(
                {
                    "schedule_id": entry.schedule.id,
                    "name": entry.schedule.name,
                    "local_time": _hhmm(exc.local_time),
                    "message": exc.reason,
                }
            )
    return found


@bp.put("/communes/<zone_id>/quiet-hours")
@require_role(Role.ADMIN)
def set_quiet_hours(zone_id: str) -> Response:
    """Change the commune's quiet hours; refused while an enabled schedule would fall in them."""
    body = parse_body(QuietHoursBody)
    quiet = QuietHours(body.start, body.end)
    with db().write_session() as session:
        _commune(session, zone_id)
        lock_commune(session, zone_id)  # no schedule of the commune is saved meanwhile
        if quiet != quiet_hours_of(session, zone_id):
            clashing = _schedules_in_quiet(session, zone_id, quiet)
            if clashing:
                names = "; ".join(
                    f"“{c['name']}” (schedule {c['schedule_id']}): {c['message']}"
                    for c in clashing[:3]
                )
                more = f"; and {len(clashing) - 3} more" if len(clashing) > 3 else ""
                raise ApiError(
                    409,
                    "schedules_in_quiet_hours",
                    f"{len(clashing)} enabled schedule(s) would play within the new quiet hours "
                    f"({quiet_span(quiet)}): {names}{more}. Change or disable them first",
                    field="start",
                    schedules=clashing,
                )
        row = session.get(CommuneSettings, zone_id)
        if row is None:
            row = CommuneSettings(zone_id=zone_id)
            session.add(row)
        row.quiet_start, row.quiet_end = body.start, body.end
        row.updated_by = user_id()
        row.updated_at = clock().now()
        session.flush()
        log.info("quiet hours of %s set to %s by %s", zone_id, quiet_span(quiet), _who())
        audit.record_here(session, "quiet_hours_set", zone_id, span=quiet_span(quiet))
        return jsonify(quiet_hours_json(zone_id, row))


# --- holidays -------------------------------------------------------------------------------


def _year_arg() -> int | None:
    raw = request.args.get("year")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) == 4 and 2000 <= int(raw) <= 2100):
        raise ApiError(422, "invalid", "year: a year from 2000 to 2100", field="year")
    return int(raw)


@bp.get("/communes/<zone_id>/holidays")
@require_role(Role.VIEWER)
def list_holidays(zone_id: str) -> Response:
    year = _year_arg()
    with db().session() as session:
        _commune(session, zone_id)
        stmt = select(Holiday).where(Holiday.zone_id == zone_id).order_by(Holiday.day)
        if year is not None:
            stmt = stmt.where(Holiday.day >= date(year, 1, 1), Holiday.day <= date(year, 12, 31))
        return jsonify([holiday_json(h) for h in session.scalars(stmt)])


@bp.post("/communes/<zone_id>/holidays")
@require_role(Role.OPERATOR)
def add_holidays(zone_id: str) -> tuple[Response, int]:
    """Add one holiday, or one per day from date to end_date; routine schedules stay silent."""
    body = parse_body(HolidayBody)
    days = body.days()
    with db().write_session() as session:
        _commune(session, zone_id)
        lock_commune(session, zone_id)  # a day added twice at once is refused, not a 500
        taken = session.scalars(
            select(Holiday)
            .where(Holiday.zone_id == zone_id, Holiday.day.in_(days))
            .order_by(Holiday.day)
        ).first()
        if taken is not None:
            raise ApiError(
                409,
                "exists",
                f"date: {taken.day.isoformat()} is already a holiday (“{taken.name}”)",
                field="date",
            )
        now = clock().now()
        rows = [
            Holiday(zone_id=zone_id, day=d, name=body.name, created_by=user_id(), created_at=now)
            for d in days
        ]
        session.add_all(rows)
        session.flush()
        audit.record_here(session, "holiday_added", zone_id, name=body.name, days=len(rows))
        log.info(
            "holiday %r (%d days from %s) added to %s by %s",
            body.name,
            len(rows),
            body.date,
            zone_id,
            _who(),
        )
        return jsonify([holiday_json(h) for h in rows]), 201


@bp.delete("/communes/<zone_id>/holidays/<day>")
@require_role(Role.OPERATOR)
def delete_holiday(zone_id: str, day: str) -> tuple[str, int]:
    try:
        when = date.fromisoformat(_date_text(day))
    except ValueError:
        raise ApiError(
            422, "invalid", "date: give a date as YYYY-MM-DD, e.g. 2026-09-02", field="date"
        ) from None
    with db().write_session() as session:
        _commune(session, zone_id)
        holiday = session.scalar(
            select(Holiday).where(Holiday.zone_id == zone_id, Holiday.day == when)
        )
        if holiday is None:
            raise ApiError(404, "not_found", f"{when.isoformat()} is not a holiday of {zone_id!r}")
        session.delete(holiday)
        audit.record_here(session, "holiday_removed", zone_id, day=when.isoformat())
        log.info("holiday %s removed from %s by %s", when, zone_id, _who())
        return "", 204
