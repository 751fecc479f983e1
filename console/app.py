"""The console web application factory (composition root of a web process)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask, Response, abort, jsonify, request, session
from flask_babel import Babel
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFProtect

from console import api, media, services, web
from console.auth import init_auth
from console.db import Database
from console.models import Role
from console.reports import DELIVERY_LABELS
from console.settings import Settings
from scheduler import Clock, SystemClock

ROLE_LABELS = {
    Role.ADMIN: _l("Administrator"),
    Role.OPERATOR: _l("Operator"),
    Role.VIEWER: _l("Viewer"),
}


# Scripts only from the console's own files (no inline script, no eval); inline style
# attributes stay allowed (bar widths, indents). Audio previews play blob: URLs.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def select_locale() -> str:
    """Vietnamese unless the user chose English (session) or only accepts English."""
    chosen = session.get("lang")
    if chosen in web.LANGUAGES:
        return str(chosen)
    return "vi"


def create_app(settings: Settings, db: Database | None = None, clock: Clock | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key.get_secret_value(),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,  # HTTPS: never sent in clear
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        BABEL_DEFAULT_LOCALE="vi",
        BABEL_TRANSLATION_DIRECTORIES="translations",
        JSON_SORT_KEYS=False,
    )
    services.install(app, settings, db or Database(settings.database_url), clock or SystemClock())
    Babel(app, locale_selector=select_locale)
    csrf = CSRFProtect(app)
    init_auth(app)
    api.register_api(app, csrf)
    app.register_blueprint(media.bp)
    web.register_pages(app)
    tz = ZoneInfo(settings.site_timezone)

    @app.template_filter("localtime")
    def localtime(when: datetime | None) -> str:
        return when.astimezone(tz).strftime("%d/%m/%Y %H:%M:%S") if when else "–"

    @app.context_processor
    def _globals() -> dict[str, object]:
        return {
            "lang": select_locale(),
            "status_label": lambda s: str(DELIVERY_LABELS.get(s, s)),
            "role_label": lambda r: str(ROLE_LABELS.get(Role(r), r)),
            "Role": Role,
            "nav_items": web.NAV,
        }

    @app.before_request
    def _no_nul_characters() -> tuple[Response, int] | None:
        """PostgreSQL's text cannot hold a NUL: one in the path, the query, a form field or a
        file name is refused here (400), not by the database (500). JSON: api.parse_body."""
        fields = [request.args]
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            fields.append(request.form)
        texts = [request.path] + [f.filename or "" for f in request.files.values()]
        texts += [t for multi in fields for key, values in multi.lists() for t in (key, *values)]
        if any("\x00" in text for text in texts):
            message = "a NUL character is not allowed in a request"
            if request.path.startswith("/api/"):  # also where no route matched: JSON
                return jsonify({"error": {"code": "bad_request", "message": message}}), 400
            abort(400, description=message)
        return None

    @app.after_request
    def _headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return app
