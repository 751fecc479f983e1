"""The programme page: a zone's week, the commune's schedules, play now, quiet hours and holidays.

The page is a shell; console/static/programme.js fills it from the JSON API. The server gives it
the zone tree, the site time zone, what the user may do, and the page's words in the user's
language (so the script needs no catalogue of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, render_template, request
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select

from console.auth import db, require_role
from console.models import Role, Zone, ZoneKind
from console.services import settings

bp = Blueprint("programme", __name__)

PROGRAMME_DAYS = 31  # the most the zone programme API gives: the week view's horizon


@dataclass(frozen=True)
class ZoneOption:
    """A zone as the page lists it: depth-first under its commune."""

    id: str
    name: str
    kind: str
    parent_id: str | None
    commune_id: str
    depth: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "commune_id": self.commune_id,
            "depth": self.depth,
        }


def zone_options(zones: list[Zone]) -> list[ZoneOption]:
    """Communes by name, each followed by its hamlets and their clusters (by name)."""
    children: dict[str | None, list[Zone]] = {}
    known = {z.id for z in zones}
    for z in zones:
        parent = z.parent_id if z.parent_id in known else None
        children.setdefault(parent, []).append(z)
    for group in children.values():
        group.sort(key=lambda z: (z.name.casefold(), z.id))
    out: list[ZoneOption] = []

    def walk(zone: Zone, commune_id: str, depth: int) -> None:
        kind = zone.kind.value if isinstance(zone.kind, ZoneKind) else str(zone.kind)
        out.append(ZoneOption(zone.id, zone.name, kind, zone.parent_id, commune_id, depth))
        for child in children.get(zone.id, []):
            if depth < 10:  # a zone tree is three levels; this only guards against a cycle
                walk(child, commune_id, depth + 1)

    for root in children.get(None, []):
        walk(root, root.id, 0)
    return out


def _joined(*words: str) -> str:
    """Several words in one text, split on "|" by the script."""
    return "|".join(words)


def page_texts() -> dict[str, str]:
    """The words programme.js shows, translated; %(name)s placeholders are filled in there."""
    return {
        # week view
        "weekdays": _joined(
            _("Monday"),
            _("Tuesday"),
            _("Wednesday"),
            _("Thursday"),
            _("Friday"),
            _("Saturday"),
            _("Sunday"),
        ),
        "week_of": _("Week %(start)s – %(end)s"),
        "today": _("Today"),
        "past_day": _("Past"),
        "holiday": _("Holiday: %(name)s"),
        "nothing_day": _("Nothing scheduled"),
        "nothing_week": _("Nothing is scheduled for this zone this week."),
        "part_reach": _("Some speakers of this zone (%(zones)s)"),
        "truncated": _("Only the first %(n)s firings are shown."),
        "loading": _("Loading…"),
        "load_failed": _("Could not load: %(message)s"),
        # levels and states
        "level_normal": _("Normal"),
        "level_priority": _("Priority"),
        "enabled": _("On"),
        "disabled": _("Off"),
        "queue_after_tag": _("Plays after overlapping schedules"),
        # rules in words
        "once": _("Once, on %(date)s at %(time)s"),
        "daily": _("Every day"),
        "daily_n": _("Every %(n)s days"),
        "weekly": _("Every week on %(days)s"),
        "weekly_n": _("Every %(n)s weeks on %(days)s"),
        "monthly_day": _("Every month on day %(day)s"),
        "monthly_day_n": _("Every %(n)s months on day %(day)s"),
        "monthly_weekday": _("Every month on the %(nth)s %(weekday)s"),
        "monthly_weekday_n": _("Every %(n)s months on the %(nth)s %(weekday)s"),
        "nth": _joined(_("first"), _("second"), _("third"), _("fourth"), _("fifth")),
        "nth_last": _joined(
            _("last"),
            _("second to last"),
            _("third to last"),
            _("fourth to last"),
            _("fifth to last"),
        ),
        "at_times": _("at %(times)s"),
        "from_date": _("from %(start)s"),
        "from_to": _("from %(start)s to %(end)s"),
        "except_days": _("except %(n)s days"),
        "unit_days": _("days"),
        "unit_weeks": _("weeks"),
        "unit_months": _("months"),
        # schedule list
        "no_schedules": _("This commune has no schedules yet."),
        "edit": _("Edit"),
        "turn_on": _("Turn on"),
        "turn_off": _("Turn off"),
        "delete": _("Delete"),
        "confirm_delete": _(
            "Delete “%(name)s”? If it has already played, it is turned off instead, "
            "so its broadcast history is kept."
        ),
        "deleted": _("“%(name)s” was deleted."),
        "disabled_instead": _(
            "“%(name)s” has already played, so it was turned off instead of deleted: "
            "its broadcast history is kept."
        ),
        "turned_on": _("“%(name)s” is on."),
        "turned_off": _("“%(name)s” is off: it will not play until it is turned on again."),
        "saved": _("“%(name)s” was saved."),
        # form
        "new_schedule": _("New schedule"),
        "edit_schedule": _("Edit schedule"),
        "choose_audio": _("Choose a recording"),
        "no_audio": _("There is no recording yet: add one on the Audio page first."),
        "need_name": _("Enter a name for the schedule."),
        "need_audio": _("Choose a recording."),
        "need_zones": _("Choose at least one zone."),
        "need_time": _("Enter at least one time of day."),
        "need_date": _("Choose the date."),
        "need_start": _("Choose the first day."),
        "need_weekday": _("Choose at least one day of the week."),
        "need_month_day": _("Enter a day of the month from 1 to 31."),
        "need_interval": _("Enter how often it repeats: a whole number from 1 to 365."),
        "need_volume": _("The volume is a whole number from 0 to 100, or empty for the usual."),
        "time_of_day": _("Time of day"),
        "remove_time": _("Remove the time %(time)s"),
        "remove_exception": _("Remove %(date)s"),
        "whole_commune": _("Whole commune: every speaker"),
        "preview_title": _("Next firings"),
        "preview_none": _("This rule will not play again: its dates are past."),
        "preview_skipped": _("Skipped for a holiday: %(date)s (%(name)s)"),
        "not_saved": _("Not saved: %(message)s"),
        # the API's refusals, in words
        "quiet_at": _(
            "Quiet hours %(span)s: routine announcements cannot play at %(time)s. "
            "Choose another time; if it cannot wait, use the Emergency button."
        ),
        "quiet_runs_into": _(
            "Quiet hours %(span)s: started at %(time)s, this announcement would still be "
            "playing when they begin. Choose an earlier time or a shorter recording."
        ),
        "quiet_queue": _(
            "Played after “%(name)s”, the two announcements would run into quiet hours "
            "(%(span)s). Choose another time."
        ),
        "own_overlap": _(
            "Two times of the day are closer together than the announcement lasts: it would "
            "overlap itself. Space the times further apart."
        ),
        "conflict": _(
            "This announcement would play at the same time as “%(name)s” (%(when)s) on the "
            "same speakers."
        ),
        "conflict_more": _("It also overlaps %(n)s other schedule(s): %(names)s."),
        "conflict_choice": _(
            "Two announcements cannot play on the same speakers at once. Change the time or "
            "the zones, or save it to play right after the other one finishes."
        ),
        "queue_after_button": _("Save: play after “%(name)s”"),
        # play now
        "confirm_play": _("Play “%(audio)s” now on: %(zones)s?"),
        "playing_title": _("Playing now: “%(audio)s”"),
        "sent_at": _("Sent at %(time)s to %(zones)s."),
        "no_devices": _("No speaker is registered in these zones: nobody will hear it."),
        "devices_total": _("%(n)s speaker(s) should play it."),
        "stop_sent": _("STOP was sent at %(time)s."),
        "watch_ended": _("Updates stopped after a minute; see the broadcast history for more."),
        "all_done": _("Every speaker has answered."),
        "status_pending": _("No answer"),
        "status_received": _("Received"),
        "status_started": _("Playing"),
        "status_finished": _("Played"),
        "status_failed": _("Failed"),
        "status_preempted": _("Interrupted"),
        "status_stopped": _("Stopped"),
        # quiet hours and holidays
        "quiet_now": _("Quiet hours: %(span)s"),
        "quiet_none": _("No quiet hours: routine announcements may play at any time."),
        "quiet_default": _("(the default)"),
        "quiet_saved": _("Quiet hours are now %(span)s."),
        "quiet_clash": _(
            "These schedules would play within the new quiet hours: %(names)s. "
            "Change or turn them off first."
        ),
        "no_holidays": _("No holidays from this year on."),
        "holiday_added": _("Holiday “%(name)s” added."),
        "holiday_removed": _("Holiday “%(name)s” removed."),
        "holiday_exists": _("%(date)s is already a holiday (“%(name)s”)."),
        "confirm_holiday_delete": _("Remove the holiday “%(name)s” (%(days)s)?"),
        "need_holiday": _("Enter the holiday's name and its first day."),
        "delete_holiday": _("Remove the holiday %(name)s"),
    }


@bp.get("/programme")
@login_required  # type: ignore[untyped-decorator]
@require_role(Role.VIEWER)
def page() -> str:
    with db().session() as session:
        options = zone_options(list(session.scalars(select(Zone))))
    ids = {o.id for o in options}
    asked = request.args.get("zone", "")
    selected = asked if asked in ids else (options[0].id if options else "")
    return render_template(
        "programme.html",
        zones=options,
        selected=selected,
        config={
            "zones": [o.as_json() for o in options],
            "selected": selected,
            "timezone": settings().site_timezone,
            "days": PROGRAMME_DAYS,
            "can_edit": current_user.can(Role.OPERATOR),
            "can_set_quiet": current_user.can(Role.ADMIN),
            "texts": page_texts(),
        },
    )
