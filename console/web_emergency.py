"""The emergency page."""

from __future__ import annotations

from flask import Blueprint, render_template

from console.auth import require_role
from console.models import Role

bp = Blueprint("emergency", __name__)


@bp.get("/emergency")
@require_role(Role.OPERATOR)
def page() -> str:
    return render_template("emergency.html")
