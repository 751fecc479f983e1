"""The broadcast history page."""

from __future__ import annotations

from flask import Blueprint, render_template

from console.auth import require_role
from console.models import Role

bp = Blueprint("history", __name__)


@bp.get("/history")
@require_role(Role.VIEWER)
def page() -> str:
    return render_template("history.html")


@bp.get("/audit")
@require_role(Role.ADMIN)
def audit() -> str:
    return render_template("history.html")


@bp.get("/users")
@require_role(Role.ADMIN)
def users() -> str:
    return render_template("history.html")
