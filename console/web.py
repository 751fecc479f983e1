"""Server-rendered pages for staff: login, the overview board, language choice."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from console.auth import AuthError, StaffUser, authenticate, db
from console.broadcasts import delivery_summary
from console.models import Broadcast, Device, Zone

bp = Blueprint("web", __name__)
LANGUAGES = ("vi", "en")


class LoginForm(FlaskForm):  # type: ignore[misc]
    username = StringField("username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("password", validators=[DataRequired(), Length(max=200)])


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = authenticate(form.username.data, form.password.data)
        except AuthError:
            error = _("Wrong username or password.")
        else:
            session.clear()  # no session fixation: a fresh session after login
            login_user(StaffUser(user))
            return redirect(url_for("web.index"))
    return render_template("login.html", form=form, error=error), (401 if error else 200)


@bp.post("/logout")
@login_required  # type: ignore[untyped-decorator]
def logout() -> Response:
    logout_user()
    session.clear()
    return redirect(url_for("web.login"))


@bp.get("/lang/<code>")
def set_language(code: str) -> Response:
    if code in LANGUAGES:
        session["lang"] = code
    target = request.referrer or url_for("web.index")
    return redirect(target if target.startswith(request.host_url) else url_for("web.index"))


@bp.get("/")
@login_required  # type: ignore[untyped-decorator]
def index() -> str:
    with db().session() as s:
        zones = {z.id: z.name for z in s.scalars(select(Zone))}
        devices = list(s.scalars(select(Device).order_by(Device.zone_id, Device.id)))
        broadcasts = list(
            s.scalars(select(Broadcast).order_by(Broadcast.created_at.desc()).limit(20))
        )
        summaries = {b.id: delivery_summary(s, b.id) for b in broadcasts}
    return render_template(
        "index.html",
        zones=zones,
        devices=devices,
        broadcasts=broadcasts,
        summaries=summaries,
        user=current_user,
    )
