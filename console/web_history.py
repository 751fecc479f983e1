"""Pages: broadcast history and per-device delivery reports, the audit log, user management."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template, request
from flask_babel import gettext as _
from flask_login import current_user

from console.auth import db, require_role
from console.models import Role
from console.reports import (
    DELIVERY_LABELS,
    KIND_LABELS,
    OUTCOME_LABELS,
    AuditFilters,
    BroadcastFilters,
    Paging,
    ReportError,
    action_label,
    audit_actions,
    broadcast_report,
    detail_text,
    list_audit,
    list_broadcasts,
    list_users,
    zone_choices,
    zone_names,
)
from console.security import MIN_PASSWORD_LENGTH
from console.services import clock, settings

bp = Blueprint("history", __name__)

def _tz() -> ZoneInfo:
    return ZoneInfo(settings().site_timezone)


def filter_error(exc: ReportError) -> str:
    """The filter problem in the reader's language."""
    messages = {
        "date": _("Not a valid date."),
        "order": _("The last day is before the first day."),
        "zone": _("Unknown zone."),
        "choice": _("Unknown choice."),
        "number": _("Not a valid page number."),
        "length": _("This is too long."),
    }
    return str(messages.get(exc.code, exc))


def _labels() -> dict[str, Any]:
    return {
        "kind_labels": {k: str(v) for k, v in KIND_LABELS.items()},
        "outcome_labels": {k: str(v) for k, v in OUTCOME_LABELS.items()},
        "delivery_labels": {k: str(v) for k, v in DELIVERY_LABELS.items()},
    }


@bp.get("/history")
@require_role(Role.VIEWER)
def page() -> tuple[str, int]:
    """Every broadcast, newest first, filtered by days, zone, kind and outcome."""
    error: tuple[str, str] | None = None
    try:
        filters, paging = BroadcastFilters.parse(request.args), Paging.parse(request.args)
    except ReportError as exc:
        error = (exc.field, filter_error(exc))
        filters, paging = BroadcastFilters(), Paging()
    tz = _tz()
    with db().session() as session:
        try:
            result, totals = list_broadcasts(session, filters, tz, paging)
        except ReportError as exc:  # a zone removed since the link was made
            error = (exc.field, filter_error(exc))
            filters = BroadcastFilters()
            result, totals = list_broadcasts(session, filters, tz, paging)
        zones = zone_names(session)
        choices = zone_choices(session)
    return render_template(
        "history.html",
        result=result,
        totals=totals,
        filters=filters,
        error=error,
        zones=zones,
        zone_choices=choices,
        now=clock().now(),
        timezone=tz.key,
        **_labels(),
    ), (422 if error else 200)


@bp.get("/history/<broadcast_id>")
@require_role(Role.VIEWER)
def broadcast(broadcast_id: str) -> tuple[str, int]:
    """One broadcast: which speaker played it, which did not, and why."""
    with db().session() as session:
        report = broadcast_report(session, broadcast_id[:64])
        zones = zone_names(session)
    return render_template(
        "broadcast.html",
        report=report,
        broadcast_id=broadcast_id,
        zones=zones,
        now=clock().now(),
        timezone=_tz().key,
        **_labels(),
    ), (200 if report else 404)


@bp.get("/audit")
@require_role(Role.ADMIN)
def audit() -> tuple[str, int]:
    """Who did what and when: logins, broadcasts, emergencies, stops, changes."""
    error: tuple[str, str] | None = None
    try:
        filters, paging = AuditFilters.parse(request.args), Paging.parse(request.args)
    except ReportError as exc:
        error = (exc.field, filter_error(exc))
        filters, paging = AuditFilters(), Paging()
    with db().session() as session:
        result = list_audit(session, filters, _tz(), paging)
        actions = audit_actions(session)
        usernames = [u.username for u in list_users(session)]
    return render_template(
        "audit.html",
        result=result,
        filters=filters,
        error=error,
        actions=[(a, action_label(a)) for a in actions],
        action_label=action_label,
        detail_text=detail_text,
        usernames=usernames,
        timezone=_tz().key,
    ), (422 if error else 200)


@bp.get("/users")
@require_role(Role.ADMIN)
def users() -> str:
    """Accounts: create, change role, deactivate or reactivate, reset a password."""
    strings = {
        "active": _("Active"),
        "inactive": _("Deactivated"),
        "you": _("(you)"),
        "never": _("never"),
        "role": _("Role"),
        "changeRole": _("Change role"),
        "deactivate": _("Deactivate"),
        "reactivate": _("Reactivate"),
        "resetPassword": _("Reset password"),
        "confirmDeactivate": _("Deactivate %(name)s? They are logged out and cannot log in."),
        "confirmReset": _("Give %(name)s a new password? The old one stops working."),
        "saved": _("Saved."),
        "created": _("User %(name)s created."),
        "newPassword": _("Password for %(name)s:"),
        "shownOnce": _("Give it to them now: it is shown only this once."),
        "exists": _("This username is taken."),
        "lastAdmin": _(
            "This is the last active administrator: make another user an administrator first."
        ),
        "shortPassword": _("A password has at least %(n)d characters.", n=MIN_PASSWORD_LENGTH),
        "badUsername": _("A username has 1 to 64 characters, without spaces."),
        "failed": _("Could not save:"),
        "loadFailed": _("Could not load the users."),
    }
    return render_template(
        "users.html",
        strings=strings,
        roles=[Role.VIEWER, Role.OPERATOR, Role.ADMIN],
        roles_json=[
            [Role.VIEWER.value, _("Viewer")],
            [Role.OPERATOR.value, _("Operator")],
            [Role.ADMIN.value, _("Administrator")],
        ],
        me=current_user.id,
        min_length=MIN_PASSWORD_LENGTH,
    )
