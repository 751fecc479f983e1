"""The audio page."""

from __future__ import annotations

from flask import Blueprint, render_template

from console.auth import require_role
from console.models import Role

bp = Blueprint("audio", __name__)


@bp.get("/audio")
@require_role(Role.VIEWER)
def page() -> str:
    return render_template("audio.html")
