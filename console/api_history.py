"""History routes of the JSON API: broadcast reports (JSON and CSV), the audit log, users.

CSV files are UTF-8 with a byte-order mark, so Excel on a commune's PC shows Vietnamese
correctly; times in them are site-local, and each time column names the time zone.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from flask import Response, jsonify, request, stream_with_context
from flask_babel import gettext as _
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from console import audit
from console.accounts import (
    AccountError,
    LastAdminError,
    UserNotFound,
    create_user,
    reset_password,
    update_user,
)
from console.api import ApiError, bp, iso, parse_body
from console.auth import db, require_role
from console.models import AuditEntry, DeliveryStatus, Role, User
from console.openapi import api_doc
from console.reports import (
    DELIVERY_LABELS,
    KIND_LABELS,
    KINDS,
    MAX_PER_PAGE,
    OUTCOME_LABELS,
    OUTCOMES,
    AuditFilters,
    BroadcastFilters,
    BroadcastReport,
    BroadcastRow,
    DeviceOutcome,
    Paging,
    ReportError,
    Totals,
    UserRow,
    action_label,
    broadcast_report,
    detail_text,
    iter_audit,
    iter_broadcasts,
    list_audit,
    list_broadcasts,
    list_users,
)
from console.security import MIN_PASSWORD_LENGTH, new_password
from console.services import clock, settings

MAX_DB_INT = 2**31 - 1  # a larger id cannot exist (and SQLite would overflow on it)


def site_tz() -> ZoneInfo:
    return ZoneInfo(settings().site_timezone)


def local_iso(when: datetime | None, tz: ZoneInfo) -> str | None:
    return when.astimezone(tz).isoformat() if when else None


def _filters(parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(request.args)
    except ReportError as exc:
        raise ApiError(422, "invalid", str(exc), field=exc.field) from None


# --- JSON --------------------------------------------------------------------------------


def row_json(row: BroadcastRow, tz: ZoneInfo, now: datetime) -> dict[str, Any]:
    rate = row.success_rate
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "outcome": row.outcome,
        "at": iso(row.when),
        "at_local": local_iso(row.when, tz),
        "scheduled_for": iso(row.scheduled_for),
        "fired_at": iso(row.fired_at),
        "zone_ids": row.zone_ids,
        "audio_sha256": row.audio_sha256,
        "audio_name": row.audio_name,
        "schedule_id": row.schedule_id,
        "schedule_name": row.schedule_name,
        "sent_by": row.sent_by,
        "counts": {s.value: row.counts.get(s.value, 0) for s in DeliveryStatus},
        "targeted": row.targeted,
        "finished": row.finished,
        "success_rate": round(rate, 4) if rate is not None else None,
        "first_started_at": iso(row.first_started_at),
        "last_finished_at": iso(row.last_finished_at),
        "in_progress": row.in_progress(now),
    }


def totals_json(totals: Totals) -> dict[str, Any]:
    rate = totals.success_rate
    return {
        "broadcasts": totals.broadcasts,
        "missed": totals.missed,
        "targeted": totals.targeted,
        "finished": totals.finished,
        "success_rate": round(rate, 4) if rate is not None else None,
    }


def device_json(d: DeviceOutcome) -> dict[str, Any]:
    return {
        "device_id": d.device_id,
        "device_name": d.device_name,
        "zone_id": d.zone_id,
        "zone_name": d.zone_name,
        "status": d.status,
        "reason": d.reason,
        "received_at": iso(d.received_at),
        "started_at": iso(d.started_at),
        "ended_at": iso(d.ended_at),
    }


def audit_json(e: AuditEntry, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "at_local": local_iso(e.at, tz),
        "user_id": e.user_id,
        "username": e.username,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
        "remote_addr": e.remote_addr,
    }


def user_json(u: UserRow) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "role": u.role.value,
        "active": u.active,
        "created_at": iso(u.created_at),
        "last_login_at": iso(u.last_login_at),
    }


def paging_json(paging: Paging, total: int) -> dict[str, Any]:
    return {"page": paging.page, "per_page": paging.per_page, "total": total}


# --- CSV ---------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """Text for a cell; a leading formula sign is quoted, so Excel never runs device text."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> Response:
    """A streamed CSV download; `sep=semicolon` for an Excel set to use ';' between columns."""
    delimiter = ";" if request.args.get("sep") == "semicolon" else ","

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
        writer.writerow(header)
        yield "\ufeff" + buffer.getvalue()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([csv_cell(v) for v in row])
            yield buffer.getvalue()

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "report"


def _time_header(label: str, tz: ZoneInfo) -> str:
    offset = datetime.now(tz).strftime("%z")
    return f"{label} ({tz.key}, UTC{offset[:3]}:{offset[3:]})"


def local_text(when: datetime | None, tz: ZoneInfo) -> str:
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if when else ""


def percent_text(rate: float | None) -> str:
    return "" if rate is None else str(round(rate * 100))


def _today(tz: ZoneInfo) -> str:
    return clock().now().astimezone(tz).strftime("%Y-%m-%d")


# --- broadcast reports ---------------------------------------------------------------------


_DAY = {"type": "string", "format": "date"}
_REPORT_QUERY: dict[str, dict[str, Any]] = {
    "from": {**_DAY, "description": "the first day, site time (inclusive)"},
    "to": {**_DAY, "description": "the last day, site time (inclusive)"},
    "zone": {"type": "string", "description": "broadcasts to this zone, above or below it"},
    "kind": {"enum": list(KINDS)},
    "status": {"enum": list(OUTCOMES), "description": "the broadcast's outcome"},
}
_PAGE_QUERY: dict[str, dict[str, Any]] = {
    "page": {"type": "integer", "minimum": 1, "default": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 50},
}
_CSV_QUERY: dict[str, dict[str, Any]] = {
    "sep": {"enum": ["semicolon"], "description": "';' between columns instead of ','"},
}
_AUDIT_QUERY: dict[str, dict[str, Any]] = {
    "user": {"type": "string", "description": "who acted (or, for logins, the name tried)"},
    "action": {"type": "string", "description": "an action code, e.g. login, emergency"},
    "from": _REPORT_QUERY["from"],
    "to": _REPORT_QUERY["to"],
}


@bp.get("/reports/broadcasts")
@require_role(Role.VIEWER)
@api_doc(query={**_REPORT_QUERY, **_PAGE_QUERY})
def report_broadcasts() -> Response:
    """Broadcasts with their outcome and success rate, newest first, filtered and paged."""
    filters = _filters(BroadcastFilters.parse)
    paging = _filters(Paging.parse)
    tz, now = site_tz(), clock().now()
    with db().session() as session:
        try:
            page, totals = list_broadcasts(session, filters, tz, paging)
        except ReportError as exc:
            raise ApiError(422, "invalid", str(exc), field=exc.field) from None
        return jsonify(
            {
                "timezone": tz.key,
                **paging_json(paging, page.total),
                "totals": totals_json(totals),
                "items": [row_json(r, tz, now) for r in page.items],
            }
        )


@bp.get("/reports/broadcasts.csv")
@require_role(Role.VIEWER)
@api_doc(query={**_REPORT_QUERY, **_CSV_QUERY})
def report_broadcasts_csv() -> Response:
    """The broadcast history as CSV for Excel: one row per broadcast, same filters."""
    filters = _filters(BroadcastFilters.parse)
    tz = site_tz()
    header = [
        _("Broadcast id"),
        _time_header(_("Time"), tz),
        _("Kind"),
        _("Announcement"),
        _("Schedule"),
        _("Zones"),
        _("Outcome"),
        _("Speakers targeted"),
        _("Played to the end"),
        _("Playing"),
        _("Received"),
        _("Failed"),
        _("Interrupted"),
        _("Stopped"),
        _("No answer"),
        _("Success (%)"),
        _time_header(_("First started"), tz),
        _time_header(_("Last finished"), tz),
        _("Sent by"),
    ]
    kinds = {k: str(v) for k, v in KIND_LABELS.items()}
    outcomes = {k: str(v) for k, v in OUTCOME_LABELS.items()}

    def rows() -> Iterator[list[object]]:
        with db().session() as session:
            for r in iter_broadcasts(session, filters, tz):
                c = r.counts
                yield [
                    r.id, local_text(r.when, tz), kinds[r.kind], r.audio_name or r.audio_sha256,
                    r.schedule_name or "", " ".join(r.zone_ids), outcomes[r.outcome],
                    r.targeted, r.finished, c.get("started", 0), c.get("received", 0),
                    c.get("failed", 0), c.get("preempted", 0), c.get("stopped", 0),
                    c.get("pending", 0), percent_text(r.success_rate),
                    local_text(r.first_started_at, tz), local_text(r.last_finished_at, tz),
                    r.sent_by or "",
                ]  # fmt: skip

    with db().session() as session:  # an unknown zone is refused before the download starts
        try:
            iter_broadcasts(session, filters, tz)
        except ReportError as exc:
            raise ApiError(422, "invalid", str(exc), field=exc.field) from None
    return csv_response(f"broadcasts-{_today(tz)}.csv", header, rows())


def _report_or_404(broadcast_id: str) -> BroadcastReport:
    with db().session() as session:
        report = broadcast_report(session, broadcast_id[:64])
    if report is None:
        raise ApiError(404, "not_found", f"no broadcast {broadcast_id[:64]!r}")
    return report


@bp.get("/reports/broadcasts/<broadcast_id>")
@require_role(Role.VIEWER)
def report_broadcast(broadcast_id: str) -> Response:
    """One broadcast's delivery report: its outcome and every targeted device's."""
    report = _report_or_404(broadcast_id)
    tz = site_tz()
    return jsonify(
        {
            "timezone": tz.key,
            **row_json(report.broadcast, tz, clock().now()),
            "devices": [device_json(d) for d in report.devices],
        }
    )


@bp.get("/broadcasts/<broadcast_id>/report.csv")
@require_role(Role.VIEWER)
@api_doc(query=_CSV_QUERY)
def report_broadcast_csv(broadcast_id: str) -> Response:
    """One broadcast's delivery report as CSV for Excel: one row per targeted device."""
    report = _report_or_404(broadcast_id)
    tz = site_tz()
    header = [
        _("Device"),
        _("Device name"),
        _("Zone"),
        _("Zone name"),
        _("Outcome"),
        _("Status code"),
        _("Reason"),
        _time_header(_("Received"), tz),
        _time_header(_("Started"), tz),
        _time_header(_("Ended"), tz),
    ]
    rows = [
        [
            d.device_id,
            d.device_name,
            d.zone_id,
            d.zone_name,
            str(DELIVERY_LABELS[d.status]),
            d.status,
            d.reason or "",
            local_text(d.received_at, tz),
            local_text(d.started_at, tz),
            local_text(d.ended_at, tz),
        ]
        for d in report.devices
    ]
    return csv_response(f"broadcast-{safe_filename(report.broadcast.id)}.csv", header, rows)


# --- audit log ---------------------------------------------------------------------------


@bp.get("/audit")
@require_role(Role.ADMIN)
@api_doc(query={**_AUDIT_QUERY, **_PAGE_QUERY})
def audit_log() -> Response:
    """The audit log, newest first: who did what and when, filtered and paged."""
    filters = _filters(AuditFilters.parse)
    paging = _filters(Paging.parse)
    tz = site_tz()
    with db().session() as session:
        page = list_audit(session, filters, tz, paging)
        return jsonify(
            {
                "timezone": tz.key,
                **paging_json(paging, page.total),
                "items": [audit_json(e, tz) for e in page.items],
            }
        )


@bp.get("/audit.csv")
@require_role(Role.ADMIN)
@api_doc(query={**_AUDIT_QUERY, **_CSV_QUERY})
def audit_log_csv() -> Response:
    """The audit log as CSV for Excel: one row per entry, same filters."""
    filters = _filters(AuditFilters.parse)
    tz = site_tz()
    header = [
        _time_header(_("Time"), tz),
        _("User"),
        _("Action"),
        _("Action code"),
        _("Target"),
        _("Details"),
        _("From address"),
    ]

    def rows() -> Iterator[list[object]]:
        with db().session() as session:
            for e in iter_audit(session, filters, tz):
                yield [
                    local_text(e.at, tz), e.username, action_label(e.action), e.action,
                    e.target, detail_text(e.detail), e.remote_addr or "",
                ]  # fmt: skip

    return csv_response(f"audit-{_today(tz)}.csv", header, rows())


# --- users -------------------------------------------------------------------------------


class UserBody(BaseModel):
    """Passwords are taken as typed (not stripped); usernames have no spaces."""

    model_config = ConfigDict(extra="forbid", str_max_length=2000)


def _no_outer_spaces(value: str) -> str:
    """Spaces inside are fine; at either end they are lost to copy and paste (and to the API)."""
    if value != value.strip():
        raise ValueError("a password cannot begin or end with a space")
    return value


Password = Annotated[
    str,
    Field(min_length=MIN_PASSWORD_LENGTH, max_length=200),
    AfterValidator(_no_outer_spaces),
]


class NewUserBody(UserBody):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    role: Role
    password: Password | None = None

    @field_validator("username")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
            raise ValueError("a username has no spaces or invisible characters")
        return value


class UserChangeBody(UserBody):
    role: Role | None = None
    active: StrictBool | None = None


class PasswordResetBody(UserBody):
    password: Password | None = None


def _parse_optional(model: type[PasswordResetBody]) -> PasswordResetBody:
    """No body at all (or an empty one) means: generate a password."""
    if not request.get_data(cache=True):
        return model()
    return parse_body(model)


def _user_or_404(session: Session, user_id: int) -> User:
    user = session.get(User, user_id) if user_id <= MAX_DB_INT else None
    if user is None:
        raise ApiError(404, "not_found", f"no user {user_id}")
    return user


def _one_user(session: Session, user_id: int) -> UserRow:
    return next(u for u in list_users(session) if u.id == user_id)


@bp.get("/users")
@require_role(Role.ADMIN)
def users_list() -> Response:
    """Every account with its role, whether it is active, and its last login."""
    with db().session() as session:
        return jsonify([user_json(u) for u in list_users(session)])


@bp.post("/users")
@require_role(Role.ADMIN)
def users_create() -> tuple[Response, int]:
    """A new account; a generated password (shown this once) unless the admin gave one."""
    body = parse_body(NewUserBody)
    password = body.password if body.password is not None else new_password()
    with db().write_session() as session:
        if session.scalar(select(User.id).where(User.username == body.username)) is not None:
            raise ApiError(
                409, "exists", f"user {body.username!r} already exists", field="username"
            )
        try:
            user = create_user(session, body.username, password, body.role)
        except AccountError as exc:
            raise ApiError(422, "invalid", str(exc)) from None
        audit.record_here(session, "user_created", user.username, role=body.role.value)
        out = user_json(_one_user(session, user.id))
    out["password"] = password
    out["password_generated"] = body.password is None
    return jsonify(out), 201


@bp.patch("/users/<int:user_id>")
@require_role(Role.ADMIN)
def users_change(user_id: int) -> Response:
    """Change the role or the active flag; never leaves the console without an active admin."""
    body = parse_body(UserChangeBody)
    if body.role is None and body.active is None:
        raise ApiError(422, "invalid", "give role, active or both", field="body")
    with db().write_session() as session:
        _user_or_404(session, user_id)
        try:
            user, changes = update_user(session, user_id, role=body.role, active=body.active)
        except LastAdminError:
            raise ApiError(
                409, "last_admin",
                "this is the last active administrator: make another user an administrator first",
                field="role" if body.role is not None and body.role != Role.ADMIN else "active",
            ) from None  # fmt: skip
        except UserNotFound:
            raise ApiError(404, "not_found", f"no user {user_id}") from None
        if changes:
            audit.record_here(session, "user_changed", user.username, **changes)
        return jsonify(user_json(_one_user(session, user_id)))


@bp.post("/users/<int:user_id>/password")
@require_role(Role.ADMIN)
def users_reset_password(user_id: int) -> Response:
    """A new password for a user (shown this once); their API tokens are revoked."""
    body = _parse_optional(PasswordResetBody)
    with db().write_session() as session:
        user = _user_or_404(session, user_id)
        try:
            password = reset_password(session, user_id, body.password)
        except AccountError as exc:
            raise ApiError(422, "invalid", str(exc), field="password") from None
        audit.record_here(session, "password_reset", user.username, generated=body.password is None)
        return jsonify(
            {
                "id": user.id,
                "username": user.username,
                "password": password,
                "password_generated": body.password is None,
            }
        )
