"""Emergency routes of the JSON API: sound an emergency, follow a broadcast live, fire-point
alarms (list, live, acknowledge) and each commune's automatic fire announcement.

Every emergency is an ordinary broadcast (console/broadcasts.py) at emergency priority and
full volume; what is special is the choice of message, "until stopped", and the audit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from flask import Response, jsonify
from flask_babel import lazy_gettext as _l
from pydantic import Field, StrictInt
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from audio_library import AudioError, Voice
from console import audit
from console.api import (
    ApiError,
    Body,
    Sha256,
    ZoneId,
    bp,
    broadcast_json,
    check_zones,
    iso,
    not_sent,
    parse_body,
    user_id,
)
from console.auth import db, require_role
from console.broadcasts import BroadcastError, BroadcastRequest, send_broadcast
from console.communes import DEFAULT_QUIET_HOURS, CommuneError, get_commune
from console.library import speak_into_library
from console.live import event_stream
from console.models import (
    AudioFile,
    Broadcast,
    CommuneSettings,
    Delivery,
    DeliveryStatus,
    Device,
    DeviceEvent,
    Preset,
    Role,
    User,
    Zone,
)
from console.mqtt_link import LinkError
from console.presets import GONG_KEY, SPECS
from console.services import clock, console_link, settings
from device_profiles import protocol

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1000  # an emergency is said in a few sentences
MAX_ALARMS = 100
# A broadcast's live stream also ends this long after the command expired with nothing
# playing: a device that never answered will not play it any more.
SETTLE_AFTER_EXPIRY = timedelta(seconds=30)
ALARM = "alarm"
SIGNAL_LABELS = {"call_point": _l("Manual call point pressed")}
PresetKey = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]


class EmergencyBody(Body):
    # None or empty: every commune.
    zone_ids: Annotated[list[ZoneId], Field(max_length=200)] | None = None
    preset_key: PresetKey | None = None
    audio_sha256: Sha256 | None = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None
    repeat: Annotated[StrictInt, Field(ge=1, le=100)] | Literal["until_stopped"] = 1
    title: Annotated[str, Field(max_length=200)] = ""


class FireRuleBody(Body):
    preset_key: PresetKey | None  # required: null switches the announcement off


# --- sounding an emergency -----------------------------------------------------------------


def _communes(session: Session) -> list[str]:
    return list(session.scalars(select(Zone.id).where(Zone.parent_id.is_(None)).order_by(Zone.id)))


def _message(body: EmergencyBody) -> tuple[str, str, dict[str, Any]]:
    """(audio sha256, title, audit detail) of the one message chosen; typed text is spoken
    here (a few seconds, outside any transaction)."""
    chosen = [k for k in ("preset_key", "audio_sha256", "text") if getattr(body, k) is not None]
    if len(chosen) != 1:
        raise ApiError(
            422,
            "invalid",
            "choose exactly one message: preset_key, audio_sha256 (a recording uploaded "
            f"first) or text (got {', '.join(chosen) or 'none'})",
            field="preset_key",
        )
    with db().session() as session:
        if body.preset_key is not None:
            preset = session.get(Preset, body.preset_key)
            if preset is None or body.preset_key == GONG_KEY:
                raise ApiError(
                    422, "invalid", f"no emergency preset {body.preset_key!r}", field="preset_key"
                )
            return preset.audio_sha256, body.title or preset.title, {"preset_key": preset.key}
        if body.audio_sha256 is not None:
            audio = session.get(AudioFile, body.audio_sha256)
            if audio is None:
                raise ApiError(
                    422, "invalid", "unknown audio: upload it first", field="audio_sha256"
                )
            return audio.sha256, body.title or audio.name, {}
    assert body.text is not None
    name = " ".join(body.text.split())[:200]
    try:
        audio, _created = speak_into_library(
            db(), settings(), body.text, name, Voice.NORTH, user_id()
        )
    except AudioError as exc:
        raise ApiError(422, getattr(exc, "code", "bad_audio"), str(exc), field="text") from None
    return audio.sha256, body.title or name, {"text": body.text}


@bp.post("/emergency")
@require_role(Role.OPERATOR)
def sound_emergency() -> tuple[Response, int]:
    """Play one message now, at emergency priority and full volume, on the chosen zones."""
    body = parse_body(EmergencyBody)
    with db().session() as session:
        zones = body.zone_ids or _communes(session)
        if not zones:
            raise ApiError(422, "invalid", "there are no zones yet", field="zone_ids")
        check_zones(session, zones)
    audio_sha256, title, detail = _message(body)
    until_stopped = body.repeat == "until_stopped"
    cfg = settings()
    req = BroadcastRequest(
        broadcast_id=f"b-{uuid.uuid4().hex[:24]}",
        audio_sha256=audio_sha256,
        zone_ids=zones,
        priority=protocol.Priority.EMERGENCY,
        fire_at=clock().now(),
        play_lead=timedelta(seconds=cfg.play_lead_s),
        ttl=timedelta(seconds=cfg.command_ttl_s),
        volume_pct=100,
        repeat=protocol.REPEAT_UNTIL_STOPPED if until_stopped else int(body.repeat),
        title=title,
        created_by=user_id(),
    )
    try:
        broadcast = send_broadcast(db(), console_link(), req, cfg.public_base_url)
    except BroadcastError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except (LinkError, OperationalError) as exc:
        raise not_sent(
            "the emergency", exc, "the message broker or the database", "Try again at once"
        ) from None
    assert broadcast is not None  # a fresh id is never taken
    with db().session() as session:
        stored = session.get(Broadcast, broadcast.id)
        assert stored is not None
        audit.record_here(
            session, "emergency", stored.id, zone_ids=list(stored.zone_ids),
            audio_sha256=audio_sha256, repeat=body.repeat, title=title, **detail,
        )  # fmt: skip
        out = broadcast_json(session, stored, True)
    out["title"] = title
    out["until_stopped"] = until_stopped
    log.warning("EMERGENCY %s (%s) sent to %s", stored.id, title, ",".join(stored.zone_ids))
    return jsonify(out), 201


# --- following a broadcast live -------------------------------------------------------------

COUNTED = {
    DeliveryStatus.PENDING: "silent",
    DeliveryStatus.RECEIVED: "received",
    DeliveryStatus.STARTED: "playing",
    DeliveryStatus.FINISHED: "finished",
    DeliveryStatus.FAILED: "failed",
    DeliveryStatus.PREEMPTED: "preempted",
    DeliveryStatus.STOPPED: "stopped",
}
OPEN = {DeliveryStatus.PENDING, DeliveryStatus.RECEIVED, DeliveryStatus.STARTED}


def progress(session: Session, broadcast: Broadcast, now: datetime) -> dict[str, Any]:
    """Devices per state, the failures with their reasons, those not heard from, and done."""
    rows = session.execute(
        select(Delivery, Device, Zone)
        .join(Device, Delivery.device_id == Device.id)
        .join(Zone, Device.zone_id == Zone.id)
        .where(Delivery.broadcast_id == broadcast.id)
        .order_by(Zone.name, Device.name)
    ).all()
    counts = dict.fromkeys(COUNTED.values(), 0)
    failures, silent = [], []
    for delivery, device, zone in rows:
        counts[COUNTED[delivery.status]] += 1
        where = {"device_id": device.id, "name": device.name, "zone_name": zone.name}
        if delivery.status is DeliveryStatus.FAILED:
            failures.append({**where, "reason": delivery.reason, "at": iso(delivery.ended_at)})
        elif delivery.status is DeliveryStatus.PENDING:
            silent.append({**where, "online": device.online})
    expired = broadcast.expires_at is not None and now > broadcast.expires_at + SETTLE_AFTER_EXPIRY
    settled = counts["playing"] == 0 and (expired or all(d.status not in OPEN for d, _, _ in rows))
    return {
        "broadcast_id": broadcast.id,
        "priority": broadcast.priority,
        "zone_ids": broadcast.zone_ids,
        "until_stopped": broadcast.repeat == protocol.REPEAT_UNTIL_STOPPED,
        "total": len(rows),
        "counts": counts,
        "failures": failures,
        "silent_devices": silent[:100],
        "done": settled,
    }


@bp.get("/broadcasts/<broadcast_id>/live")
@require_role(Role.VIEWER)
def broadcast_live(broadcast_id: str) -> Response:
    """Server-sent `progress` events whenever a device moves; ends once nothing can change."""
    with db().session() as session:
        if session.get(Broadcast, broadcast_id[:64]) is None:
            raise ApiError(404, "not_found", f"no broadcast {broadcast_id[:64]!r}")
    database, now = db(), clock().now
    # The cursor: the digest of the last progress sent, and whether the stream is over (the
    # broadcast is settled, or gone).
    Cursor = tuple[str, bool]

    def poll(cursor: Cursor) -> tuple[list[tuple[str, Any]], Cursor]:
        with database.session() as session:
            broadcast = session.get(Broadcast, broadcast_id)
            data = progress(session, broadcast, now()) if broadcast else None
        if data is None:
            return [], (cursor[0], True)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        events = [("progress", data)] if digest != cursor[0] else []
        return events, (digest, bool(data["done"]))

    return event_stream(poll, ("", False), cursor_id=lambda c: c[0], finished=lambda c: c[1])


# --- fire-point alarms ----------------------------------------------------------------------


def _what(signal: str) -> str:
    label = SIGNAL_LABELS.get(signal)
    return str(label) if label is not None else str(_l("Fire alarm (%(signal)s)", signal=signal))


def active_alarms(session: Session) -> list[dict[str, Any]]:
    """Alarm signals raised and not yet acknowledged, newest first (restored ones too: an
    alarm latches until someone has seen it)."""
    rows = session.execute(
        select(DeviceEvent, Device, Zone)
        .join(Device, DeviceEvent.device_id == Device.id)
        .join(Zone, Device.zone_id == Zone.id)
        .where(
            DeviceEvent.signal_class == ALARM,
            DeviceEvent.active.is_(True),
            DeviceEvent.acknowledged_at.is_(None),
        )
        .order_by(DeviceEvent.occurred_at.desc(), DeviceEvent.id.desc())
        .limit(MAX_ALARMS)
    ).all()
    restores: dict[tuple[str, str], list[datetime]] = {}
    if rows:
        for device_id, signal, at in session.execute(
            select(DeviceEvent.device_id, DeviceEvent.signal, DeviceEvent.occurred_at).where(
                DeviceEvent.signal_class == ALARM,
                DeviceEvent.active.is_(False),
                DeviceEvent.device_id.in_({device.id for _, device, _ in rows}),
            )
        ):
            restores.setdefault((device_id, signal), []).append(at)
    out = []
    for event, device, zone in rows:
        later = [t for t in restores.get((device.id, event.signal), []) if t >= event.occurred_at]
        out.append(
            {
                "event_id": event.id,
                "device_id": device.id,
                "device_name": device.name,
                "zone_id": zone.id,
                "zone_name": zone.name,
                "signal_class": event.signal_class,
                "signal": event.signal,
                "what": _what(event.signal),
                "detail": event.detail,
                "since": iso(event.occurred_at),
                "received_at": iso(event.received_at),
                "restored_at": iso(min(later)) if later else None,
            }
        )
    return out


@bp.get("/alarms")
@require_role(Role.VIEWER)
def list_alarms() -> Response:
    with db().session() as session:
        return jsonify(active_alarms(session))


@bp.get("/alarms/live")
@require_role(Role.VIEWER)
def alarms_live() -> Response:
    """Server-sent `alarms` events with the whole list, at once and whenever it changes."""
    database = db()

    def poll(cursor: str) -> tuple[list[tuple[str, Any]], str]:
        with database.session() as session:
            alarms = active_alarms(session)
        digest = hashlib.sha256(json.dumps(alarms, sort_keys=True).encode()).hexdigest()[:16]
        return ([("alarms", alarms)] if digest != cursor else []), digest

    return event_stream(poll, "")  # a reconnect gets the list again: the banner is rebuilt


@bp.post("/alarms/<event_id>/ack")
@require_role(Role.OPERATOR)
def acknowledge_alarm(event_id: str) -> Response:
    """Someone has seen the alarm: the banner goes (idempotent: a second press says who)."""
    if not (event_id.isascii() and event_id.isdigit() and len(event_id) <= 18):
        raise ApiError(404, "not_found", f"no fire-point alarm {event_id[:40]!r}")
    with db().write_session() as session:
        event = session.get(DeviceEvent, int(event_id))
        if event is None or event.signal_class != ALARM or not event.active:
            raise ApiError(404, "not_found", f"no fire-point alarm {event_id}")
        first = event.acknowledged_at is None
        if first:
            event.acknowledged_by, event.acknowledged_at = user_id(), clock().now()
            audit.record_here(
                session, "alarm_acknowledged", str(event.id), device_id=event.device_id,
                signal=event.signal, since=iso(event.occurred_at),
            )  # fmt: skip
        who = session.get(User, event.acknowledged_by) if event.acknowledged_by else None
        return jsonify(
            {
                "event_id": event.id,
                "acknowledged_at": iso(event.acknowledged_at),
                "acknowledged_by": who.username if who else None,
                "already": not first,
            }
        )


# --- the automatic fire announcement of a commune --------------------------------------------


def _commune(session: Session, zone_id: str) -> Zone:
    try:
        return get_commune(session, zone_id)
    except CommuneError as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def fire_rule_json(zone_id: str, row: CommuneSettings | None, session: Session) -> dict[str, Any]:
    key = row.fire_announce_preset if row else None
    preset = session.get(Preset, key) if key else None
    return {
        "zone_id": zone_id,
        "preset_key": key,
        "preset_title": preset.title if preset else None,
        "updated_by": row.updated_by if row else None,
        "updated_at": iso(row.updated_at) if row else None,
    }


@bp.get("/communes/<zone_id>/fire-rule")
@require_role(Role.VIEWER)
def get_fire_rule(zone_id: str) -> Response:
    with db().session() as session:
        _commune(session, zone_id)
        return jsonify(fire_rule_json(zone_id, session.get(CommuneSettings, zone_id), session))


@bp.put("/communes/<zone_id>/fire-rule")
@require_role(Role.ADMIN)
def set_fire_rule(zone_id: str) -> Response:
    """Which preset a call point's alarm announces on its zone's speakers (null: none)."""
    body = parse_body(FireRuleBody)
    key = body.preset_key
    with db().write_session() as session:
        _commune(session, zone_id)
        if key is not None and (key not in SPECS or key == GONG_KEY):
            raise ApiError(422, "invalid", f"no emergency preset {key!r}", field="preset_key")
        if key is not None and session.get(Preset, key) is None:
            raise ApiError(
                422, "invalid", f"the preset {key!r} has not been generated yet "
                "(python -m console presets)", field="preset_key",
            )  # fmt: skip
        row = session.get(CommuneSettings, zone_id)
        if row is None:
            row = CommuneSettings(
                zone_id=zone_id,
                quiet_start=DEFAULT_QUIET_HOURS.start,
                quiet_end=DEFAULT_QUIET_HOURS.end,
            )
            session.add(row)
        row.fire_announce_preset = key
        row.updated_by = user_id()
        row.updated_at = clock().now()
        session.flush()
        audit.record_here(session, "fire_rule_set", zone_id, preset_key=key)
        log.info("fire announcement of %s set to %s", zone_id, key)
        return jsonify(fire_rule_json(zone_id, row, session))
