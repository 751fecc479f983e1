"""JSON API under /api/v1: token (or session) authenticated, role checked on every route."""

from __future__ import annotations

import importlib
import logging
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from audio_library import AudioError
from console import audit
from console.auth import AuthError, LoginLocked, authenticate, db, issue_token, require_role
from console.broadcasts import BroadcastError, BroadcastRequest, delivery_summary, send_broadcast
from console.broker import BrokerError
from console.device_config import bump_config_revision
from console.library import add_audio, import_upload
from console.models import (
    AudioFile,
    Broadcast,
    Device,
    DeviceConfigRecord,
    Preset,
    Role,
    Zone,
    ZoneKind,
)
from console.mqtt_link import LinkError
from console.presets import GONG_KEY, MAX_GONG_MS, PRESETS, SPECS
from console.provisioning import DecommissionedError, ProvisioningError, register_device
from console.services import broker_admin, console_link, settings
from console.zones import ZoneError, zone_parents
from device_profiles import protocol

bp = Blueprint("api", __name__, url_prefix="/api/v1")
M = TypeVar("M", bound=BaseModel)
log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, str_max_length=2000)


ZoneId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class TokenBody(Body):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=200)]
    label: Annotated[str, Field(max_length=100)] = ""


class ZoneBody(Body):
    id: ZoneId
    name: Name
    kind: ZoneKind
    parent_id: ZoneId | None = None


class DeviceBody(Body):
    id: ZoneId
    name: Name
    profile: Annotated[str, Field(min_length=1, max_length=100)]
    zone_id: ZoneId
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    # Put a decommissioned device (this id) back in service; without it its id is refused.
    revive: bool = False


class BroadcastBody(Body):
    audio_sha256: Sha256
    zone_ids: Annotated[list[ZoneId], Field(min_length=1, max_length=200)]
    priority: Literal["live", "emergency"] = "live"
    volume_pct: Annotated[int, Field(ge=0, le=100)] | None = None
    gong: bool = False
    repeat: Annotated[int, Field(ge=1, le=100)] = 1
    title: Annotated[str, Field(max_length=200)] = ""


class PresetBody(Body):
    audio_sha256: Sha256


class StopBody(Body):
    target_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")] | None = None
    zone_ids: Annotated[list[ZoneId], Field(max_length=200)] = Field(default_factory=list)


def nul_character_at(data: Any) -> str | None:
    """The path ("rule.times.0") of the first key or string holding a NUL character, if any.
    Iterative: a body nested nearly as deep as json.loads allows must not recurse again."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    return where.replace("\x00", "\\0")
                stack.append((where, item))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value))
    return None


def not_sent(what: str, exc: Exception, who: str, advice: str) -> ApiError:
    """503 for a command the broker (or database) did not take: logged, nothing was sent."""
    log.error("%s could not be sent: %s", what, exc)
    return ApiError(
        503, "unavailable", f"{what} could not be sent: {who} did not answer. {advice}"
    )


def parse_body(model: type[M]) -> M:
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # json.loads of a body nested thousands deep
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    nul = nul_character_at(data)
    if nul is not None:  # PostgreSQL's text cannot hold one: refused here, not with a 500
        raise ApiError(422, "invalid", f"{nul}: a NUL character is not allowed", field=nul)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        raise ApiError(422, "invalid", f"{field}: {err['msg']}", field=field) from None


def iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def user_id() -> int | None:
    return int(current_user.id) if current_user.is_authenticated else None


# --- serialisers -------------------------------------------------------------------------


def zone_json(z: Zone) -> dict[str, Any]:
    return {"id": z.id, "name": z.name, "kind": z.kind.value, "parent_id": z.parent_id}


def device_json(d: Device, config_version: int | None = None) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "profile": d.profile,
        "zone_id": d.zone_id,
        "latitude": d.latitude,
        "longitude": d.longitude,
        "online": d.online,
        "last_seen_at": iso(d.last_seen_at),
        # The retained config the console holds for it; state.config_version: what it applied.
        "config_version": config_version,
        "state": d.state,
        "telemetry": d.telemetry,
        # Set once decommissioned: listed nowhere, but the history still names it.
        "decommissioned_at": iso(d.decommissioned_at),
    }


def audio_json(a: AudioFile) -> dict[str, Any]:
    return {
        "sha256": a.sha256,
        "name": a.name,
        "original_name": a.original_name,
        "duration_ms": a.duration_ms,
        "size_bytes": a.size_bytes,
        "mime": a.mime,
        "loudness_lufs": a.loudness_lufs,
        "created_by": a.created_by,
        "created_at": iso(a.created_at),
    }


def preset_json(p: Preset, a: AudioFile) -> dict[str, Any]:
    return {
        "key": p.key,
        "title": p.title,
        "text": p.text,
        "audio_sha256": a.sha256,
        "duration_ms": a.duration_ms,
        "size_bytes": a.size_bytes,
        "updated_by": p.updated_by,
        "updated_at": iso(p.updated_at),
    }


def broadcast_json(session: Session, b: Broadcast, with_deliveries: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": b.id,
        "schedule_id": b.schedule_id,
        "audio_sha256": b.audio_sha256,
        "priority": b.priority,
        "zone_ids": b.zone_ids,
        "status": b.status.value,
        "scheduled_for": iso(b.scheduled_for),
        "fired_at": iso(b.fired_at),
        "play_at": iso(b.play_at),
        "expires_at": iso(b.expires_at),
        "summary": delivery_summary(session, b.id),
    }
    if with_deliveries:
        out["deliveries"] = [
            {
                "device_id": d.device_id,
                "status": d.status.value,
                "reason": d.reason,
                "received_at": iso(d.received_at),
                "started_at": iso(d.started_at),
                "ended_at": iso(d.ended_at),
            }
            for d in b.deliveries
        ]
    return out


# --- routes ------------------------------------------------------------------------------


@bp.get("/health")
def health() -> Response:
    return jsonify({"status": "ok", "time": iso(datetime.now(UTC))})


@bp.post("/auth/token")
def create_token() -> tuple[Response, int]:
    body = parse_body(TokenBody)
    try:
        user = authenticate(body.username, body.password, via="api")
    except LoginLocked:
        raise ApiError(429, "login_locked", "too many failed logins; try again later") from None
    except AuthError:
        raise ApiError(401, "bad_credentials", "wrong username or password") from None
    token = issue_token(user.id, body.label)
    return jsonify({"token": token, "role": user.role.value}), 201


@bp.get("/zones")
@require_role(Role.VIEWER)
def list_zones() -> Response:
    with db().session() as session:
        return jsonify([zone_json(z) for z in session.scalars(select(Zone).order_by(Zone.id))])


@bp.post("/zones")
@require_role(Role.ADMIN)
def create_zone() -> tuple[Response, int]:
    body = parse_body(ZoneBody)
    with db().session() as session:
        if session.get(Zone, body.id) is not None:
            raise ApiError(409, "exists", f"zone {body.id!r} already exists")
        if (body.parent_id is None) != (body.kind is ZoneKind.COMMUNE):
            raise ApiError(422, "invalid", "a commune has no parent; every other zone has one")
        if body.parent_id is not None and session.get(Zone, body.parent_id) is None:
            raise ApiError(422, "invalid", f"unknown parent zone {body.parent_id!r}")
        zone = Zone(id=body.id, name=body.name, kind=body.kind, parent_id=body.parent_id)
        session.add(zone)
        audit.record_here(session, "zone_created", zone.id, name=zone.name, kind=zone.kind.value)
        return jsonify(zone_json(zone)), 201


# GET /devices (paging, filters, the live stream) and the other device routes are in
# console/api_devices.py.


@bp.get("/devices/<device_id>")
@require_role(Role.VIEWER)
def get_device(device_id: str) -> Response:
    with db().session() as session:
        device = session.get(Device, device_id)
        if device is None:
            raise ApiError(404, "not_found", f"no device {device_id!r}")
        record = session.get(DeviceConfigRecord, device_id)
        return jsonify(device_json(device, record.version if record else None))


@bp.post("/devices")
@require_role(Role.ADMIN)
def create_device() -> tuple[Response, int]:
    body = parse_body(DeviceBody)
    try:
        with db().session() as session, broker_admin() as admin:
            result = register_device(
                session,
                admin,
                settings(),
                device_id=body.id,
                name=body.name,
                profile=body.profile,
                zone_id=body.zone_id,
                latitude=body.latitude,
                longitude=body.longitude,
                revive=body.revive,
            )
            device = session.get(Device, body.id)
            assert device is not None
            out = device_json(device)
            revived = {"revived": True} if result.revived else {}
            audit.record_here(
                session, "device_registered", device.id, zone_id=device.zone_id,
                profile=device.profile, **revived,
            )  # fmt: skip
    except DecommissionedError as exc:
        raise ApiError(
            409, "decommissioned", str(exc), field="id",
            decommissioned_at=iso(exc.decommissioned_at),
        ) from None  # fmt: skip
    except (ProvisioningError, ZoneError) as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except (BrokerError, OSError) as exc:  # OSError: nothing listens on the broker's port
        log.error("device %s not registered, the broker failed: %s", body.id, exc)
        raise ApiError(
            503, "broker_unavailable", "the broker cannot be reached; nothing was registered"
        ) from None
    out["zones"] = result.zones
    out["bridge_config"] = result.bridge_config
    return jsonify(out), 201


# GET /audio (the library: search, paging, what uses each file) is in console/api_audio.py.


@bp.get("/audio/<sha256>")
@require_role(Role.VIEWER)
def get_audio(sha256: str) -> Response:
    with db().session() as session:
        audio = session.get(AudioFile, sha256)
        if audio is None:
            raise ApiError(404, "not_found", f"no audio {sha256}")
        return jsonify(audio_json(audio))


@bp.post("/audio")
@require_role(Role.OPERATOR)
def upload_audio() -> tuple[Response, int]:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ApiError(400, "no_file", "attach the audio as the multipart field 'file'")
    original = Path(upload.filename).name[:255] or "audio"
    name = (request.form.get("name") or Path(original).stem).strip()[:200] or original
    with tempfile.TemporaryDirectory(dir=settings().instance_dir) as tmp:
        src = Path(tmp) / "upload"
        upload.save(src)
        try:
            meta = import_upload(settings(), src, original)
        except AudioError as exc:
            raise ApiError(422, getattr(exc, "code", "bad_audio"), str(exc)) from None
    with db().session() as session:
        audio, created = add_audio(session, meta, name, user_id())
        if created:
            audit.record_here(session, "audio_added", audio.sha256, name=name)
        return jsonify(audio_json(audio)), 201 if created else 200


_PRESET_ORDER = {spec.key: i for i, spec in enumerate(PRESETS)}


@bp.get("/presets")
@require_role(Role.VIEWER)
def list_presets() -> Response:
    with db().session() as session:
        rows = sorted(
            session.execute(select(Preset, AudioFile).join(AudioFile)).all(),
            key=lambda row: (_PRESET_ORDER.get(row[0].key, len(_PRESET_ORDER)), row[0].key),
        )
        return jsonify([preset_json(p, a) for p, a in rows])


@bp.get("/presets/<key>")
@require_role(Role.VIEWER)
def get_preset(key: str) -> Response:
    with db().session() as session:
        preset = session.get(Preset, key)
        if preset is None:
            raise ApiError(404, "not_found", f"no preset {key!r}")
        return jsonify(preset_json(preset, preset.audio))


@bp.put("/presets/<key>")
@require_role(Role.OPERATOR)
def replace_preset(key: str) -> Response:
    """Staff replace a preset's audio (an upload or a recording); every device refetches it."""
    spec = SPECS.get(key)
    if spec is None:
        raise ApiError(404, "not_found", f"no preset {key!r}")
    body = parse_body(PresetBody)
    with db().session() as session:
        audio = session.get(AudioFile, body.audio_sha256)
        if audio is None:
            raise ApiError(422, "invalid", "unknown audio", field="audio_sha256")
        if key == GONG_KEY and audio.duration_ms > MAX_GONG_MS:
            raise ApiError(
                422,
                "invalid",
                f"the gong plays around every announcement: at most {MAX_GONG_MS // 1000} s",
                field="audio_sha256",
            )
        preset = session.get(Preset, key)
        if preset is None:  # replaced before it was ever generated
            preset = Preset(key=key, title=spec.title)
            session.add(preset)
        if preset.audio_sha256 != audio.sha256:
            preset.audio_sha256 = audio.sha256
            preset.text = None  # no longer the spoken default
        preset.updated_by = user_id()
        preset.updated_at = datetime.now(UTC)
        bump_config_revision(session)  # the worker pushes the new config to every device
        audit.record_here(session, "preset_replaced", key, audio_sha256=audio.sha256)
        log.info("preset %s set to audio %s by %s", key, audio.sha256, current_user.username)
        return jsonify(preset_json(preset, audio))


def check_zones(session: Session, zone_ids: list[str]) -> None:
    parents = zone_parents(session)
    unknown = [z for z in zone_ids if z not in parents]
    if unknown:
        raise ApiError(422, "invalid", f"zone_ids: unknown zone {unknown[0]!r}", field="zone_ids")


@bp.get("/broadcasts")
@require_role(Role.VIEWER)
def list_broadcasts() -> Response:
    try:
        limit = min(max(int(request.args.get("limit", "50")), 1), 500)
    except ValueError:
        raise ApiError(422, "invalid", "limit must be a whole number", field="limit") from None
    with db().session() as session:
        stmt = select(Broadcast).order_by(Broadcast.created_at.desc()).limit(limit)
        wanted = request.args.get("schedule_id", "")
        if wanted.isascii() and wanted.isdigit() and len(wanted) <= 9:  # "²" is a digit too
            stmt = stmt.where(Broadcast.schedule_id == int(wanted))
        return jsonify([broadcast_json(session, b, False) for b in session.scalars(stmt)])


@bp.get("/broadcasts/<broadcast_id>")
@require_role(Role.VIEWER)
def get_broadcast(broadcast_id: str) -> Response:
    with db().session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        if broadcast is None:
            raise ApiError(404, "not_found", f"no broadcast {broadcast_id!r}")
        return jsonify(broadcast_json(session, broadcast, True))


@bp.post("/broadcasts")
@require_role(Role.OPERATOR)
def create_broadcast() -> tuple[Response, int]:
    """Play now, at live/manual priority (or emergency), to the chosen zones."""
    body = parse_body(BroadcastBody)
    cfg = settings()
    with db().session() as session:
        check_zones(session, body.zone_ids)
    req = BroadcastRequest(
        broadcast_id=f"b-{uuid.uuid4().hex[:24]}",
        audio_sha256=body.audio_sha256,
        zone_ids=body.zone_ids,
        priority=protocol.Priority(body.priority),
        fire_at=datetime.now(UTC),
        play_lead=timedelta(seconds=cfg.play_lead_s),
        ttl=timedelta(seconds=cfg.command_ttl_s),
        volume_pct=100 if body.priority == "emergency" else body.volume_pct,
        gong=body.gong,
        repeat=body.repeat,
        title=body.title,
        created_by=user_id(),
    )
    try:
        broadcast = send_broadcast(db(), console_link(), req, cfg.public_base_url)
    except BroadcastError as exc:
        raise ApiError(422, "invalid", str(exc)) from None
    except LinkError as exc:
        raise not_sent("the broadcast", exc, "the message broker", "Try again") from None
    assert broadcast is not None
    with db().session() as session:
        stored = session.get(Broadcast, broadcast.id)
        assert stored is not None
        audit.record_here(
            session, "emergency" if body.priority == "emergency" else "broadcast", stored.id,
            zone_ids=body.zone_ids, audio_sha256=body.audio_sha256, repeat=body.repeat,
        )  # fmt: skip
        return jsonify(broadcast_json(session, stored, True)), 201


@bp.post("/stop")
@require_role(Role.OPERATOR)
def stop() -> tuple[Response, int]:
    """STOP one broadcast (target_id) or everything, on the chosen zones (default: all)."""
    body = parse_body(StopBody)
    with db().session() as session:
        check_zones(session, body.zone_ids)
        parents = zone_parents(session)
    zones = body.zone_ids or sorted(z for z, p in parents.items() if p is None)
    if not zones:
        raise ApiError(422, "invalid", "there are no zones to stop")
    command = protocol.StopCommand(
        id=f"stop-{uuid.uuid4().hex[:24]}",
        ts=int(datetime.now(UTC).timestamp() * 1000),
        target_id=body.target_id,
    )
    try:
        console_link().publish_command(zones, command)
    except LinkError as exc:
        raise not_sent("the STOP", exc, "the message broker", "Try again at once") from None
    with db().session() as session:
        audit.record_here(session, "stop", command.id, zone_ids=zones, target_id=body.target_id)
    return jsonify({"id": command.id, "zone_ids": zones, "target_id": body.target_id}), 202


# --- errors ------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, **detail: Any) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, **detail}}), status


@bp.before_request
def _csrf_for_sessions() -> None:
    """Token requests skip CSRF (no cookie involved); session-authenticated ones are checked."""
    bearer = request.headers.get("Authorization", "").startswith("Bearer ")
    if not bearer and current_user.is_authenticated:
        cast(CSRFProtect, current_app.extensions["csrf"]).protect()


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return _error(exc.status, exc.code, exc.message, **exc.detail)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response, int]:
    code = (exc.name or "error").lower().replace(" ", "_")
    return _error(exc.code or 500, code, exc.description or code)


# Routes kept in their own modules, on the same blueprint (they import this one).
ROUTE_MODULES = (
    "console.api_schedules",
    "console.api_communes",
    "console.openapi",
    "console.api_audio",
    "console.api_history",
    "console.api_emergency",
    "console.api_devices",
)


def register_api(app: Flask, csrf: CSRFProtect) -> None:
    for module in ROUTE_MODULES:
        importlib.import_module(module)
    csrf.exempt(bp)
    app.register_blueprint(bp)

    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    def _outside_the_routes(exc: HTTPException) -> Any:
        """An unknown route, a wrong method or a body too large: raised before (or beside) the
        blueprint's own handlers, so answered here, in the API's JSON on its paths."""
        prefix = bp.url_prefix or "/api"
        if request.path != prefix and not request.path.startswith(prefix + "/"):
            return exc  # pages keep Flask's own
        where = f"{request.method} {request.path[:200]}"
        if isinstance(exc, RequestEntityTooLarge):
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            return _error(413, "too_large", f"the request body is larger than {limit} bytes")
        if isinstance(exc, MethodNotAllowed):
            allowed = sorted(exc.valid_methods or ())
            response, status = _error(
                405, "method_not_allowed",
                f"{where} is not allowed; this path takes {', '.join(allowed)}",
                allowed=allowed,
            )  # fmt: skip
            response.headers["Allow"] = ", ".join(allowed)
            return response, status
        if request.url_rule is not None:  # a route's own 404 (abort) keeps its words
            return _error(404, "not_found", exc.description or "not found")
        return _error(
            404, "not_found", f"no such route: {where} (every route: {prefix}/openapi.json)"
        )
