"""The emergency page (zones, message, repeat, one confirmation, the live panel and STOP) and
the strings of the fire-alarm banner every page shows. Both work through the JSON API
(console/api_emergency.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, abort, jsonify, render_template, request, send_file
from flask_babel import gettext as _
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import Session

from audio_library import AudioStore
from console.api_emergency import MAX_TEXT_CHARS
from console.auth import db, require_role
from console.broadcasts import has_speaker
from console.fire_rules import ANNOUNCED
from console.models import (
    AudioFile,
    AuditEntry,
    Broadcast,
    CommuneSettings,
    Device,
    Preset,
    Role,
    Zone,
    in_service,
)
from console.presets import GONG_KEY, PRESETS
from console.services import settings

bp = Blueprint("emergency", __name__)
MAX_RECORD_S = 300
TITLED_ACTIONS = ("emergency", "broadcast", ANNOUNCED)


@dataclass(frozen=True)
class ZoneRow:
    """A zone as the page lists it: indented under its parent, with the speakers it holds."""

    id: str
    name: str
    kind: str
    parent_id: str | None
    depth: int
    speakers: int
    online: int


def zone_rows(zones: list[Zone], devices: list[Device]) -> list[ZoneRow]:
    """The zone tree depth first, sorted by name; speakers counted in each zone and above."""
    parents = {z.id: z.parent_id for z in zones}
    speakers = dict.fromkeys(parents, 0)
    online = dict.fromkeys(parents, 0)
    for device in devices:
        if not has_speaker(device.profile):
            continue
        zone_id: str | None = device.zone_id
        seen: set[str] = set()
        while zone_id is not None and zone_id in parents and zone_id not in seen:
            seen.add(zone_id)
            speakers[zone_id] += 1
            online[zone_id] += int(device.online)
            zone_id = parents[zone_id]
    children: dict[str | None, list[Zone]] = {}
    for zone in sorted(zones, key=lambda z: (z.name.casefold(), z.id)):
        children.setdefault(zone.parent_id, []).append(zone)
    rows: list[ZoneRow] = []

    def walk(parent: str | None, depth: int) -> None:
        for zone in children.get(parent, []):
            rows.append(
                ZoneRow(
                    zone.id,
                    zone.name,
                    zone.kind.value,
                    zone.parent_id,
                    depth,
                    speakers[zone.id],
                    online[zone.id],
                )
            )
            if depth < 10:
                walk(zone.id, depth + 1)

    walk(None, 0)
    return rows


def _messages() -> dict[str, str]:
    """What the page's script says, in the user's language; %(…)s fields are filled there."""
    return {
        "confirm": _("Sound an EMERGENCY “%(title)s” on %(where)s (%(n)s speakers)?"),
        "whole": _("the whole of %(name)s"),
        "and": _("and"),
        "once": _("It plays once."),
        "times": _("It plays %(n)s times."),
        "until_stopped": _("It plays again and again until someone presses STOP."),
        "typed": _("the typed text"),
        "recording": _("the recording"),
        "offline": _("%(n)s of them are not connected now."),
        "no_zone": _("Choose at least one zone."),
        "no_speakers": _("There are no speakers in the chosen zones."),
        "no_preset": _("Choose an announcement."),
        "no_text": _("Type the text to speak."),
        "text_too_long": _("The text is too long: at most %(n)s characters."),
        "no_recording": _("Record the announcement first (or choose a file)."),
        "bad_repeat": _("Give a number of times from 2 to 100."),
        "sending": _("Sending…"),
        "speaking": _("Making the spoken announcement… a few seconds."),
        "uploading": _("Uploading the recording…"),
        "uploaded": _("The recording is ready to send."),
        "recording_now": _("Recording… press the button again to stop."),
        "record": _("Record"),
        "stop_recording": _("Stop recording"),
        "no_recorder": _(
            "This browser cannot record here (recording needs an https:// address); choose "
            "a recording made on the phone instead."
        ),
        "mic_denied": _(
            "The microphone could not be used. Allow it for this site, then try again."
        ),
        "send_failed": _("The emergency was NOT sent: %(message)s"),
        "unavailable": _(
            "The emergency was NOT sent: the system could not reach the speakers' server. "
            "Try again at once; if it fails again, use another means of warning."
        ),
        "logged_out": _("You are no longer logged in: reload the page and log in again."),
        "live_title": _("EMERGENCY being played: %(title)s"),
        "summary": _("%(total)s speakers: %(parts)s."),
        "count_playing": _("%(n)s playing"),
        "count_received": _("%(n)s received"),
        "count_finished": _("%(n)s played"),
        "count_failed": _("%(n)s failed"),
        "count_silent": _("%(n)s no answer"),
        "count_stopped": _("%(n)s stopped"),
        "count_preempted": _("%(n)s interrupted"),
        "done": _("Finished: no speaker is playing it any more."),
        "lost": _("Connection lost: the numbers may be out of date. Reconnecting…"),
        "stop_sent": _("STOP sent at %(time)s. Waiting for the speakers to confirm…"),
        "stop_confirmed": _("%(n)s of %(total)s speakers have confirmed the stop."),
        "stop_all_confirmed": _("Stopped: no speaker is playing it any more."),
        "stop_failed": _("STOP was NOT sent: %(message)s. Press STOP again."),
        "no_reason": _("no reason given"),
        "saved": _("Saved."),
        "save_failed": _("Not saved: %(message)s"),
    }


def broadcast_title(session: Session, broadcast: Broadcast) -> str:
    """What the broadcast played, as the audit log recorded it (or its audio's name)."""
    detail = session.scalar(
        select(AuditEntry.detail)
        .where(AuditEntry.target == broadcast.id, AuditEntry.action.in_(TITLED_ACTIONS))
        .limit(1)
    )
    if isinstance(detail, dict) and detail.get("title"):
        return str(detail["title"])
    preset = session.get(Preset, detail.get("preset_key", "")) if isinstance(detail, dict) else None
    if preset is not None:
        return preset.title
    audio = session.get(AudioFile, broadcast.audio_sha256)
    return audio.name if audio is not None else ""


@bp.get("/emergency")
@require_role(Role.OPERATOR)
def page() -> str:
    with db().session() as session:
        zones = list(session.scalars(select(Zone)))
        devices = list(session.scalars(select(Device).where(in_service())))
        order = {spec.key: i for i, spec in enumerate(PRESETS)}
        presets = sorted(
            (
                (p, a)
                for p, a in session.execute(select(Preset, AudioFile).join(AudioFile)).all()
                if p.key != GONG_KEY
            ),
            key=lambda row: (order.get(row[0].key, len(order)), row[0].key),
        )
        rules = {
            r.zone_id: r.fire_announce_preset for r in session.scalars(select(CommuneSettings))
        }
        resume = request.args.get("broadcast", "")[:64]
        broadcast = session.get(Broadcast, resume) if resume else None
        resume_title = broadcast_title(session, broadcast) if broadcast is not None else ""
    rows = zone_rows(zones, devices)
    return render_template(
        "emergency.html",
        zones=rows,
        presets=[(p.key, p.title, p.text, a.sha256, a.duration_ms) for p, a in presets],
        communes=[z for z in rows if z.parent_id is None],
        rules=rules,
        is_admin=current_user.can(Role.ADMIN),
        config={
            "resume": broadcast.id if broadcast is not None else None,
            "resume_title": resume_title,
            "messages": _messages(),
            "max_text_chars": MAX_TEXT_CHARS,
            "max_record_s": MAX_RECORD_S,
        },
    )


@bp.get("/alarms/strings")
@login_required  # type: ignore[untyped-decorator]
def alarm_strings() -> Response:
    """The banner's words in the user's language, and whether this user may acknowledge."""
    strings: dict[str, Any] = {
        "title": _("FIRE ALARM"),
        "ack": _("Acknowledge"),
        "since": _("since"),
        "restored": _("the device is back to normal, but nobody has acknowledged it yet"),
        "more": _("and %(n)s more alarms"),
        "sound_on": _("Turn the alarm sound on"),
        "mute": _("Silence on this screen"),
        "ack_failed": _("Could not acknowledge: %(message)s"),
        "lost": _("Connection lost: new alarms may not show. Reconnecting…"),
    }
    response = jsonify({**strings, "can_ack": current_user.can(Role.OPERATOR)})
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/emergency/presets/<key>.mp3")
@require_role(Role.OPERATOR)
def preset_audio(key: str) -> Response:
    """A preset's audio, to listen to before choosing it."""
    with db().session() as session:
        preset = session.get(Preset, key[:32])
        sha256 = preset.audio_sha256 if preset is not None else None
    if sha256 is None:
        abort(404)
    try:
        path = AudioStore(settings().media_dir).path_for(sha256)
    except (FileNotFoundError, ValueError):
        abort(404)
    response = send_file(path, mimetype="audio/mpeg", conditional=True, etag=sha256)
    response.headers["Cache-Control"] = "private, no-cache"
    return response
