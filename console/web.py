"""Server-rendered pages for staff: login, the overview board, account, language choice.

Each other page lives in its own blueprint module (WEB_MODULES); the menu is NAV.
"""

from __future__ import annotations

import importlib
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from console import audit
from console.accounts import AccountError, change_password
from console.auth import (
    AuthError,
    LoginLocked,
    StaffUser,
    authenticate,
    current_web_session,
    db,
    send_to_login,
)
from console.models import Role
from console.security import MIN_PASSWORD_LENGTH
from console.web_devices import board_texts

bp = Blueprint("web", __name__)
LANGUAGES = ("vi", "en")

# The main menu: endpoint, label, the least role that sees it.
NAV: list[tuple[str, Any, Role]] = [
    ("web.index", _l("Live board"), Role.VIEWER),
    ("programme.page", _l("Programme"), Role.VIEWER),
    ("audio.page", _l("Audio"), Role.VIEWER),
    ("history.page", _l("Broadcast history"), Role.VIEWER),
    ("devices.page", _l("Devices and zones"), Role.VIEWER),
    ("history.audit", _l("Audit log"), Role.ADMIN),
    ("history.users", _l("Users"), Role.ADMIN),
]
# The page blueprints, each in its own module with a `bp`.
WEB_MODULES = (
    "console.web_programme",
    "console.web_audio",
    "console.web_history",
    "console.web_devices",
    "console.web_emergency",
)


# Endpoints anyone may open without logging in (besides the API's and devices' own rules).
_PUBLIC_PAGES = ("web.login", "web.set_language", "static")


@bp.before_app_request
def _pages_need_login() -> Response | None:
    """Pages send a visitor who is not logged in to the login form (the API answers 401).

    Role checks on pages (require_role) would otherwise answer a bare 401 to someone whose
    session simply expired.
    """
    if request.endpoint is None or request.blueprint in ("api", "media"):
        return None
    if request.headers.get("Authorization", "").startswith("Bearer "):
        return None  # a token, not a browser: require_role answers 401/403 itself
    if request.endpoint in _PUBLIC_PAGES or current_user.is_authenticated:
        return None
    return send_to_login()  # flashes "Please log in to open this page." (translated)


class LoginForm(FlaskForm):  # type: ignore[misc]
    username = StringField("username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("password", validators=[DataRequired(), Length(max=200)])


class PasswordForm(FlaskForm):  # type: ignore[misc]
    current = PasswordField("current", validators=[DataRequired(), Length(max=200)])
    new = PasswordField(
        "new", validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=200)]
    )
    confirm = PasswordField("confirm", validators=[DataRequired(), EqualTo("new")])


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    error = None
    status = 200
    if form.validate_on_submit():
        try:
            user = authenticate(form.username.data, form.password.data)
        except LoginLocked:
            error = _("Too many failed logins for this user. Wait 15 minutes and try again.")
            status = 429
        except AuthError:
            error = _("Wrong username or password.")
            status = 401
        else:
            session.clear()  # no session fixation: a fresh session after login
            session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME
            login_user(StaffUser(user))
            return redirect(url_for("web.index"))
    return render_template("login.html", form=form, error=error), status


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


@bp.route("/account", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def account() -> Any:
    """Change one's own password."""
    form = PasswordForm()
    status = 200
    if form.validate_on_submit():
        try:
            with db().session() as s:
                change_password(
                    s, current_user.id, form.current.data, form.new.data,
                    keep_session=current_web_session(),  # the user's other logins end
                )  # fmt: skip
                audit.record_here(s, "password_changed", current_user.username)
        except AccountError:
            flash(_("The current password is wrong."), "error")
            status = 422
        else:
            flash(_("Your password has been changed."), "ok")
            return redirect(url_for("web.account"))
    elif form.is_submitted():
        status = 422
    return render_template("account.html", form=form, min_length=MIN_PASSWORD_LENGTH), status


@bp.get("/")
@login_required  # type: ignore[untyped-decorator]
def index() -> str:
    """The live board: counters, filters and a page of devices; board.js keeps it live."""
    return render_template("index.html", texts=board_texts())


def register_pages(app: Flask) -> None:
    app.register_blueprint(bp)
    for module in WEB_MODULES:
        app.register_blueprint(importlib.import_module(module).bp)
