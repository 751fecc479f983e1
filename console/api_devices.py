"""Device and zone routes of the JSON API: the paged and filtered device list, its live
stream, the zone tree, and an administrator's edit, re-issued credentials and
decommissioning of a device."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from flask import Response, current_app, jsonify, request
from pydantic import Field
from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from console import audit
from console.api import ApiError, Body, Name, ZoneId, bp, device_json, iso, parse_body
from console.auth import db, require_role
from console.broker import BrokerError
from console.device_status import (
    CLOCK_DRIFT_MS,
    CPU_HOT_C,
    DISK_LOW_MB,
    PROBLEMS,
    faults,
    fire_alarm,
    fire_state,
    matches,
    playing,
)
from console.live import event_stream, last_event_id
from console.models import (
    AudioFile,
    Broadcast,
    Device,
    DeviceConfigRecord,
    Role,
    Schedule,
    Zone,
    in_service,
)
from console.openapi import api_doc
from console.provisioning import (
    ProvisioningError,
    decommission_device,
    move_device,
    reissue_credentials,
)
from console.services import broker_admin, settings
from console.zones import ZoneError, zone_descendants, zone_parents

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUERY_CHARS = 100
# The live stream: devices sent per poll at most (more: "overflow", the page reloads), how
# far back each poll looks again (a write committed a little after a later one), and how
# often the counters are recounted when no device changed.
LIVE_BATCH = 500
LIVE_OVERLAP = timedelta(seconds=2)
SUMMARY_EVERY_S = 5.0
SUMMARY_MAX_AGE_S = 1.0
_CACHE_LOCK = threading.Lock()


class DevicePatch(Body):
    name: Name | None = None
    zone_id: ZoneId | None = None
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None


# --- filters: the same devices as console.device_status says, selected in SQL ---------------


def _signal_class(name: str) -> ColumnElement[bool]:
    """An active fire-point signal of this class. The signal list is matched as JSON text
    (portable across SQLite and PostgreSQL); class names are not signal names."""
    signals: ColumnElement[str] = Device.state[("fire_point", "signals")].as_string()
    return signals.like(f'%"{name}"%')


def _telemetry(key: str) -> ColumnElement[float]:
    value: ColumnElement[float] = Device.telemetry[key].as_float()
    return value


FAULT_SQL = or_(
    _signal_class("trouble"),
    _signal_class("supervisory"),
    _telemetry("disk_free_mb") < DISK_LOW_MB,
    func.abs(_telemetry("clock_offset_ms")) > CLOCK_DRIFT_MS,
    _telemetry("cpu_temp_c") >= CPU_HOT_C,
)
ALARM_SQL = _signal_class("alarm")
ONLINE_SQL = Device.online.is_(True)
OFFLINE_SQL = Device.online.is_not(True)
PLAYING_SQL = and_(ONLINE_SQL, Device.state[("playing", "command_id")].as_string().is_not(None))
PROBLEM_SQL: dict[str, ColumnElement[bool]] = {
    "any": or_(OFFLINE_SQL, FAULT_SQL, ALARM_SQL),
    "offline": OFFLINE_SQL,
    "fault": FAULT_SQL,
    "fire_alarm": ALARM_SQL,
    "playing": PLAYING_SQL,
}


def name_key(name: str) -> tuple[str, str]:
    """Sorts Vietnamese names as people expect: "Thôn Đông" before "Thôn Tây"."""
    bare = unicodedata.normalize("NFD", name.replace("đ", "d").replace("Đ", "D"))
    return "".join(c for c in bare if not unicodedata.combining(c)).casefold(), name


@dataclass(frozen=True)
class DeviceFilter:
    zone_ids: list[str] | None = None  # a zone and every zone below it; None: all
    problem: str | None = None
    query: str = ""

    def scope(self) -> list[ColumnElement[bool]]:
        """Zone and search: the devices the counters count (never a decommissioned one)."""
        where: list[ColumnElement[bool]] = [in_service()]
        if self.zone_ids is not None:
            where.append(Device.zone_id.in_(self.zone_ids))
        if self.query:
            # SQLite folds the case of ASCII letters only: try the usual spellings of a
            # Vietnamese name too ("đông" finds "Đông").
            q = self.query
            spellings = dict.fromkeys([q, q.lower(), q.title(), q.upper()])
            where.append(
                or_(
                    *(Device.id.contains(s.lower(), autoescape=True) for s in spellings),
                    *(Device.name.contains(s, autoescape=True) for s in spellings),
                )
            )
        return where

    def clauses(self) -> list[ColumnElement[bool]]:
        """Scope and problem: the devices listed."""
        where = self.scope()
        if self.problem:
            where.append(PROBLEM_SQL[self.problem])
        return where


def parse_filter(session: Session) -> DeviceFilter:
    args = request.args
    zone = args.get("zone", "").strip()
    zone_ids = None
    if zone:
        parents = zone_parents(session)
        if zone not in parents:
            raise ApiError(422, "invalid", f"zone: unknown zone {zone[:63]!r}", field="zone")
        zone_ids = sorted(zone_descendants([zone], parents))
    problem = args.get("problem", "").strip() or None
    if problem is not None and problem not in PROBLEMS:
        raise ApiError(
            422, "invalid", f"problem: must be one of {', '.join(PROBLEMS)}", field="problem"
        )
    query = args.get("q", "").strip()
    if len(query) > MAX_QUERY_CHARS:
        raise ApiError(422, "invalid", f"q: at most {MAX_QUERY_CHARS} characters", field="q")
    return DeviceFilter(zone_ids, problem, query)


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, "invalid", f"{name}: must be a whole number", field=name) from None
    if not low <= value <= high:
        raise ApiError(422, "invalid", f"{name}: must be between {low} and {high}", field=name)
    return value


def summary(session: Session, flt: DeviceFilter) -> dict[str, int]:
    """The board's counters over the zone and search (not the problem filter), one query."""

    def count_if(cond: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    conditions = {"online": ONLINE_SQL, "fault": FAULT_SQL, "fire_alarm": ALARM_SQL,
                  "playing": PLAYING_SQL}  # fmt: skip
    if flt.problem:
        conditions["matching"] = PROBLEM_SQL[flt.problem]
    row = session.execute(
        select(func.count(), *(count_if(c) for c in conditions.values()))
        .select_from(Device)
        .where(*flt.scope())
    ).one()
    total, *counts = (int(n or 0) for n in row)
    out = {"total": total, **dict(zip(conditions, counts, strict=True))}
    out["offline"] = total - out["online"]
    out.setdefault("matching", total)
    return out


@dataclass
class _Counted:
    fingerprint: tuple[Any, ...]
    at_s: float
    counts: dict[str, int]


class SummaryCache:
    """The counters of each filter, counted again only when a device changed, came or went.

    Counting reads every device's JSON (a tenth of a second or more at 10,000 devices), and
    every open board asks every few seconds; a fingerprint query (count, last change, last
    registration) tells whether anything moved. `max_age_s` lets a live stream take counts up
    to that old while devices keep changing, so a busy fleet is counted about once a second
    per filter, however many boards are open.
    """

    MAX_ENTRIES = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], _Counted] = {}

    def get(
        self, session: Session, flt: DeviceFilter, max_age_s: float = 0.0
    ) -> tuple[dict[str, int], bool]:
        """The counters, and whether they are up to date (not merely under max_age_s old)."""
        fingerprint = tuple(
            session.execute(
                select(func.count(), func.max(Device.changed_at), func.max(Device.created_at))
                .select_from(Device)
                .where(*flt.scope())
            ).one()
        )
        key = (tuple(flt.zone_ids or ()), flt.zone_ids is None, flt.query, flt.problem)
        now_s = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry.fingerprint == fingerprint:
            return dict(entry.counts), True
        if entry and now_s - entry.at_s < max_age_s:
            return dict(entry.counts), False
        counts = summary(session, flt)
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = _Counted(fingerprint, now_s, counts)
        return dict(counts), True


def summary_cache() -> SummaryCache:
    """The web process's cache of counters (one per app)."""
    with _CACHE_LOCK:
        cache = current_app.extensions.get("loa_board_summaries")
        if cache is None:
            cache = current_app.extensions["loa_board_summaries"] = SummaryCache()
        return cast(SummaryCache, cache)


# --- serialising a page of devices (a fixed number of queries, whatever its size) ------------


def _titles(session: Session, command_ids: Sequence[str]) -> dict[str, str]:
    """What a playing command is, for people: its schedule's name, else its audio's."""
    if not command_ids:
        return {}
    rows = session.execute(
        select(Broadcast.id, Schedule.name, AudioFile.name)
        .join(AudioFile, Broadcast.audio_sha256 == AudioFile.sha256)
        .outerjoin(Schedule, Broadcast.schedule_id == Schedule.id)
        .where(Broadcast.id.in_(set(command_ids)))
    )
    return {bid: schedule or audio for bid, schedule, audio in rows}


def board_json(d: Device, config_version: int | None, titles: dict[str, str]) -> dict[str, Any]:
    out = device_json(d, config_version)
    state = d.state if isinstance(d.state, dict) else {}
    now = playing(d.online, d.state)
    out.update(
        playing=dict(now, title=titles.get(str(now["command_id"]))) if now else None,
        volume_pct=state.get("volume_pct"),
        amplifier_on=state.get("amplifier_on"),
        faults=faults(d.state, d.telemetry),
        fire_state=fire_state(d.state),
        fire_alarm=fire_alarm(d.state),
        changed_at=iso(d.changed_at),
    )
    return out


def board_rows(session: Session, devices: Sequence[Device]) -> list[dict[str, Any]]:
    ids = [d.id for d in devices]
    versions: dict[str, int] = {}
    if ids:
        rows = session.execute(
            select(DeviceConfigRecord.device_id, DeviceConfigRecord.version).where(
                DeviceConfigRecord.device_id.in_(ids)
            )
        )
        versions = {device_id: version for device_id, version in rows}
    now_playing = [p for d in devices if (p := playing(d.online, d.state))]
    titles = _titles(session, [str(p["command_id"]) for p in now_playing])
    return [board_json(d, versions.get(d.id), titles) for d in devices]


def _device_or_404(session: Session, device_id: str) -> Device:
    """A device in service; a decommissioned one is gone for every change."""
    device = session.get(Device, device_id)
    if device is None:
        raise ApiError(404, "not_found", f"no device {device_id[:63]!r}")
    if device.decommissioned_at is not None:
        raise ApiError(
            404, "not_found",
            f"device {device_id!r} was decommissioned on {iso(device.decommissioned_at)}",
        )  # fmt: skip
    return device


def _broker_down(exc: Exception) -> ApiError:
    log.error("broker administration failed: %s", exc)
    return ApiError(
        503, "broker_unavailable", "the message broker did not answer; nothing was changed"
    )


# --- routes ----------------------------------------------------------------------------------


_FILTER_DOCS: dict[str, dict[str, Any]] = {
    "zone": {"type": "string", "description": "a zone: its devices and those of the zones below"},
    "problem": {"type": "string", "enum": list(PROBLEMS)},
    "q": {"type": "string", "maxLength": MAX_QUERY_CHARS, "description": "part of id or name"},
}
_DEVICE_REF = {"$ref": "#/components/schemas/Device"}
_SUMMARY = {
    "type": "object",
    "description": "counters over zone and q: total, online, offline, fault, fire_alarm, "
    "playing, matching (also the problem filter)",
    "additionalProperties": {"type": "integer"},
}


@bp.get("/devices")
@require_role(Role.VIEWER)
@api_doc(
    query={
        **_FILTER_DOCS,
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
        "offset": {"type": "integer", "minimum": 0, "default": 0},
    },
    answer={
        "oneOf": [
            {"type": "array", "items": _DEVICE_REF, "description": "without limit and offset"},
            {
                "type": "object",
                "description": "with limit or offset: a page of devices with the board's fields",
                "properties": {
                    "items": {"type": "array", "items": _DEVICE_REF},
                    "total": {"type": "integer"},
                    "limit": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "summary": _SUMMARY,
                    "cursor": {"type": "string", "format": "date-time"},
                },
            },
        ]
    },
)
def list_devices() -> Response:
    """Every device as a plain list (as always), or a page of them when limit/offset is given."""
    paged = "limit" in request.args or "offset" in request.args
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    cursor = datetime.now(UTC)
    with db().session() as session:
        flt = parse_filter(session)
        where = flt.clauses()
        stmt = select(Device).where(*where).order_by(Device.id)
        if paged:
            counts, _current = summary_cache().get(session, flt)
            total = counts["matching"]
            devices = list(session.scalars(stmt.limit(limit).offset(offset)))
            response = jsonify(
                {
                    "items": board_rows(session, devices),
                    "total": total,
                    "limit": limit,
                    "offset": offset,
                    "summary": counts,
                    "cursor": iso(cursor),
                }
            )
        else:
            versions = {
                device_id: version
                for device_id, version in session.execute(
                    select(DeviceConfigRecord.device_id, DeviceConfigRecord.version)
                )
            }
            devices = list(session.scalars(stmt))
            total = len(devices)
            response = jsonify([device_json(d, versions.get(d.id)) for d in devices])
    response.headers["X-Total-Count"] = str(total)
    return response


@dataclass(frozen=True)
class LiveCursor:
    """Where a live stream is: changes up to `at` are sent; those at or before `floor` are
    never looked at again; `sent` are the (device, changed_at) sent between the two."""

    at: datetime
    floor: datetime
    sent: frozenset[tuple[str, datetime]] = field(default_factory=frozenset)

    @classmethod
    def starting(cls, at: datetime) -> LiveCursor:
        return cls(at, at - LIVE_OVERLAP)


def _parse_since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        # "+" becomes a space when a URL's query is not encoded: take it back.
        when = datetime.fromisoformat(raw.strip().replace(" ", "+").replace("Z", "+00:00"))
        utc = when.astimezone(UTC) if when.tzinfo is not None else None
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved out of range
        utc = None
    if utc is None:
        raise ApiError(
            422, "invalid", "since: give a UTC time, e.g. 2026-11-22T07:00:00Z", field="since"
        )
    return utc


@bp.get("/devices/live")
@require_role(Role.VIEWER)
@api_doc(
    query={
        **_FILTER_DOCS,
        "since": {"type": "string", "format": "date-time", "description": "the page's cursor"},
    },
    answer={"type": "string", "contentMediaType": "text/event-stream"},
)
def live_devices() -> Response:
    """Server-sent events: `devices` (those of the filter that changed, and the ids of those
    that changed out of it), `summary` (the counters, when they change) and `overflow`."""
    database = db()
    with database.session() as session:
        flt = parse_filter(session)
    resumed = last_event_id()
    since = _parse_since(request.args.get("since"))
    if resumed:
        with contextlib.suppress(ApiError):  # a foreign id: start from the page's cursor
            since = _parse_since(resumed)
    state: dict[str, Any] = {"summary": None, "counted_at": 0.0, "stale": False}
    cache = summary_cache()
    scope = flt.scope()

    def poll(cur: LiveCursor) -> tuple[list[tuple[str, Any]], LiveCursor]:
        events: list[tuple[str, Any]] = []
        with database.session() as s:
            rows = list(
                s.scalars(
                    select(Device)
                    .where(*scope, Device.changed_at > cur.floor)
                    .order_by(Device.changed_at, Device.id)
                    .limit(LIVE_BATCH + len(cur.sent) + 1)
                )
            )
            fresh = [d for d in rows if (d.id, d.changed_at) not in cur.sent]
            if len(fresh) > LIVE_BATCH:
                latest = s.scalar(select(func.max(Device.changed_at)).where(*scope)) or cur.at
                events.append(("overflow", {"at": iso(latest)}))
                cur = LiveCursor(latest, latest)
            elif fresh:
                shown = [d for d in fresh if matches(flt.problem, d.online, d.state, d.telemetry)]
                shown_ids = {d.id for d in shown}
                left = [d.id for d in fresh if d.id not in shown_ids]
                events.append(("devices", {"items": board_rows(s, shown), "left": left}))
                at = max(cur.at, *(d.changed_at for d in fresh if d.changed_at))
                floor = max(cur.floor, at - LIVE_OVERLAP)
                sent = frozenset(
                    (d.id, d.changed_at) for d in rows if d.changed_at and d.changed_at > floor
                )
                cur = LiveCursor(at, floor, sent)
            clock_s = time.monotonic()
            if events or state["stale"] or clock_s - state["counted_at"] >= SUMMARY_EVERY_S:
                state["counted_at"] = clock_s
                counts, current = cache.get(s, flt, max_age_s=SUMMARY_MAX_AGE_S)
                state["stale"] = not current  # counted again at the next poll
                if counts != state["summary"]:
                    state["summary"] = counts
                    events.append(("summary", counts))
        return events, cur

    start = LiveCursor.starting(since or datetime.now(UTC))
    return event_stream(poll, start, cursor_id=lambda c: iso(c.at) or "")


@bp.patch("/devices/<device_id>")
@require_role(Role.ADMIN)
def update_device(device_id: str) -> Response:
    """Name, zone (its broker permissions follow) and location of a device."""
    body = parse_body(DevicePatch)
    given = body.model_fields_set
    if not given:
        raise ApiError(422, "invalid", "give at least one of name, zone_id, latitude, longitude")
    for required in ("name", "zone_id"):
        if required in given and getattr(body, required) is None:
            raise ApiError(422, "invalid", f"{required}: may not be empty", field=required)
    with db().write_session() as session:
        device = _device_or_404(session, device_id)
        changes: dict[str, list[Any]] = {}
        for name in ("name", "latitude", "longitude"):
            new = getattr(body, name)
            if name in given and getattr(device, name) != new:
                changes[name] = [getattr(device, name), new]
                setattr(device, name, new)
        if body.zone_id is not None and body.zone_id != device.zone_id:
            if session.get(Zone, body.zone_id) is None:
                raise ApiError(
                    422, "invalid", f"zone_id: unknown zone {body.zone_id!r}", field="zone_id"
                )
            changes["zone_id"] = [device.zone_id, body.zone_id]
            try:
                with broker_admin() as admin:
                    move_device(session, admin, device.id, body.zone_id)
            except (BrokerError, OSError) as exc:  # OSError: no broker listening
                raise _broker_down(exc) from None
            except (ProvisioningError, ZoneError) as exc:
                raise ApiError(422, "invalid", str(exc), field="zone_id") from None
        if changes:
            device.changed_at = datetime.now(UTC)
            audit.record_here(session, "device_updated", device.id, changes=changes)
        return jsonify(board_rows(session, [device])[0])


@bp.delete("/devices/<device_id>")
@require_role(Role.ADMIN)
def delete_device(device_id: str) -> tuple[str, int]:
    """Decommission: the broker refuses its login from now on, the worker clears its retained
    config, and it leaves everything live; its history keeps naming it. Refused (503) while
    the broker cannot be reached, so a device that can still log in never looks gone."""
    with db().write_session() as session:
        device = _device_or_404(session, device_id)
        detail = {"name": device.name, "zone_id": device.zone_id, "profile": device.profile}
        try:
            with broker_admin() as admin:
                decommission_device(session, admin, device.id)
        except (BrokerError, OSError) as exc:
            raise _broker_down(exc) from None
        except ProvisioningError as exc:  # decommissioned meanwhile by someone else
            raise ApiError(404, "not_found", str(exc)) from None
        audit.record_here(session, "device_decommissioned", device_id, **detail)
    return "", 204


@bp.post("/devices/<device_id>/credentials")
@require_role(Role.ADMIN)
def reissue_device_credentials(device_id: str) -> Response:
    """A new secret and config file for the installer; the old secret is refused at once."""
    with db().write_session() as session:
        device = _device_or_404(session, device_id)
        try:
            with broker_admin() as admin:
                result = reissue_credentials(session, admin, settings(), device.id)
        except (BrokerError, OSError) as exc:
            raise _broker_down(exc) from None
        except (ProvisioningError, ZoneError) as exc:
            raise ApiError(422, "invalid", str(exc)) from None
        audit.record_here(session, "device_credentials_reissued", device.id)
        return jsonify(
            {"id": device.id, "zones": result.zones, "bridge_config": result.bridge_config}
        )


@bp.get("/zones/tree")
@require_role(Role.VIEWER)
def zone_tree() -> Response:
    """Communes, their hamlets, their clusters; devices in each zone and in it with below."""
    with db().session() as session:
        zones = list(session.scalars(select(Zone)))
        counts: dict[str, int] = {
            zone_id: n
            for zone_id, n in session.execute(
                select(Device.zone_id, func.count()).where(in_service()).group_by(Device.zone_id)
            )
        }
    children: dict[str | None, list[Zone]] = defaultdict(list)
    for zone in zones:
        children[zone.parent_id].append(zone)

    def node(zone: Zone, path: tuple[str, ...]) -> dict[str, Any]:
        kids = [
            node(c, (*path, zone.id))
            for c in sorted(children[zone.id], key=lambda z: (name_key(z.name), z.id))
            if c.id not in path
        ]
        own = counts.get(zone.id, 0)
        return {
            "id": zone.id,
            "name": zone.name,
            "kind": zone.kind.value,
            "parent_id": zone.parent_id,
            "devices": own,
            "devices_total": own + sum(k["devices_total"] for k in kids),
            "children": kids,
        }

    roots = sorted(children[None], key=lambda z: (name_key(z.name), z.id))
    return jsonify([node(z, ()) for z in roots])
