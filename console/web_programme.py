"""The programme page."""

from __future__ import annotations

from flask import Blueprint, render_template

from console.auth import require_role
from console.models import Role

bp = Blueprint("programme", __name__)


@bp.get("/programme")
@require_role(Role.VIEWER)
def page() -> str:
    return render_template("programme.html")
