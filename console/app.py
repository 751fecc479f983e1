"""The console web application factory (composition root of a web process)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Flask, session
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

    @app.after_request
    def _headers(response):  # type: ignore[no-untyped-def]
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    return app
