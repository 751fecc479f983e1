"""Who is asking: staff sessions (Flask-Login), API tokens, device credentials; role checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, abort, current_app, g, has_request_context, request
from flask import session as cookie_session
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, UserMixin, current_user, user_logged_in, user_logged_out
from sqlalchemy import delete, select

from console import audit
from console.db import Database
from console.models import ApiToken, Device, Role, User, WebSession
from console.security import check_password, digest_matches, new_secret, secret_digest

TOKEN_TTL = timedelta(days=30)
# A browser's login, however active, ends after this; idle, after PERMANENT_SESSION_LIFETIME.
WEB_SESSION_MAX_AGE = timedelta(days=30)
WEB_SESSION_KEY = "_key"  # in the signed cookie: the random key of this login (WebSession)
LOGIN_MESSAGE = _l("Please log in to open this page.")
F = TypeVar("F", bound=Callable[..., Any])


class AuthError(PermissionError):
    """Wrong credentials or not allowed."""


class LoginLocked(AuthError):
    """Too many failed logins for this username lately: refused even with the right password."""


class StaffUser(UserMixin):  # type: ignore[misc]
    """The logged-in staff member as the request sees it (detached from the session)."""

    def __init__(self, user: User, via_token: bool = False) -> None:
        self.id = user.id
        self.username = user.username
        self.role = Role(user.role)
        self.via_token = via_token

    def get_id(self) -> str:
        return str(self.id)

    def can(self, role: Role) -> bool:
        return self.role.rank >= role.rank


def db() -> Database:
    return cast(Database, current_app.extensions["loa_db"])


def authenticate(username: str, password: str, via: str = "web") -> User:
    """The active user with these credentials; every attempt goes to the audit log.

    After `audit.LOGIN_FAILURES_ALLOWED` failures within the window the username is locked
    for the rest of it, so a password cannot be guessed at speed.
    """
    addr = request.remote_addr if has_request_context() else None
    with db().session() as session:
        if audit.login_locked(session, username):
            audit.record(session, "login_refused", username, remote_addr=addr, via=via)
            session.commit()  # kept: the raise below rolls back only what follows
            raise LoginLocked("too many failed logins; try again later")
        user = session.scalar(select(User).where(User.username == username))
        if user is None or not user.active or not check_password(user.password_hash, password):
            audit.record(session, "login_failed", username, remote_addr=addr, via=via)
            session.commit()
            raise AuthError("wrong username or password")
        audit.record(
            session, "login", username, user_id=user.id, username=user.username,
            remote_addr=addr, via=via,
        )  # fmt: skip
        return user


def issue_token(user_id: int, label: str = "", now: datetime | None = None) -> str:
    """A new API token for the user; only its hash is stored, the token is shown once."""
    token = new_secret(32)
    now = now or datetime.now(UTC)
    with db().session() as session:
        session.add(
            ApiToken(
                user_id=user_id,
                token_sha256=secret_digest(token),
                label=label[:100],
                created_at=now,
                expires_at=now + TOKEN_TTL,
            )
        )
    return token


def _user_from_token(req: Request) -> StaffUser | None:
    header = req.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    digest = secret_digest(header.removeprefix("Bearer ").strip())
    with db().session() as session:
        token = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))
        if token is None or token.expires_at < datetime.now(UTC) or not token.user.active:
            return None
        return StaffUser(token.user, via_token=True)


def _load_user(user_id: str) -> StaffUser | None:
    """The session's user while its login's row exists (deleted at logout, password change,
    deactivation)."""
    key = cookie_session.get(WEB_SESSION_KEY)
    try:
        uid = int(user_id)
    except ValueError:
        return None
    if not isinstance(key, str):
        return None
    oldest = datetime.now(UTC) - WEB_SESSION_MAX_AGE
    with db().session() as session:
        user = session.scalar(
            select(User)
            .join(WebSession, WebSession.user_id == User.id)
            .where(WebSession.key_sha256 == secret_digest(key), User.id == uid)
            .where(WebSession.created_at > oldest)
        )
        return StaffUser(user) if user is not None and user.active else None


def current_web_session() -> str | None:
    """The hash of this browser's login key (to keep it when ending the user's others)."""
    key = cookie_session.get(WEB_SESSION_KEY)
    return secret_digest(key) if isinstance(key, str) else None


def _start_web_session(_app: Flask, user: StaffUser, **_: Any) -> None:
    """At login (Flask-Login's signal): a new random key in the cookie, its hash stored."""
    key = new_secret(32)
    now = datetime.now(UTC)
    with db().session() as session:
        expired = WebSession.created_at <= now - WEB_SESSION_MAX_AGE
        session.execute(delete(WebSession).where(expired))
        session.add(WebSession(key_sha256=secret_digest(key), user_id=int(user.id), created_at=now))
    cookie_session[WEB_SESSION_KEY] = key


def _end_web_session(_app: Flask, **_: Any) -> None:
    """At logout: this login's row goes, so no copy of the cookie works any more."""
    digest = current_web_session()
    cookie_session.pop(WEB_SESSION_KEY, None)
    if digest is not None:
        with db().session() as session:
            session.execute(delete(WebSession).where(WebSession.key_sha256 == digest))


class _TokenFirstLoginManager(LoginManager):  # type: ignore[misc]
    """Flask-Login, except that a request showing an API token is judged by the token alone.

    Otherwise a session cookie the same client also carries (the login form's CSRF token, the
    "please log in" message flashed on a redirect) fails the strong session protection and
    the token is never looked at. (Overrides Flask-Login 0.6's private loader.)
    """

    def _load_user(self) -> None:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            self._update_request_context_with_user(self._load_user_from_request(request))
            return
        super()._load_user()


def init_auth(app: Flask) -> LoginManager:
    manager = _TokenFirstLoginManager(app)
    manager.login_view = "web.login"
    # Flashed on the login form when a page sent the visitor there (translated when shown:
    # the flash itself stores plain text, in the language of the request).
    manager.login_message = LOGIN_MESSAGE
    manager.login_message_category = "info"
    manager.localize_callback = str
    manager.session_protection = "strong"
    manager.user_loader(_load_user)
    manager.request_loader(_user_from_token)
    user_logged_in.connect(_start_web_session)  # module functions: connected once
    user_logged_out.connect(_end_web_session)
    return manager


def send_to_login() -> Response:
    """A page asked for without a session: to the login form, saying why (Flask-Login)."""
    manager = cast(LoginManager, current_app.login_manager)  # type: ignore[attr-defined]
    return cast(Response, manager.unauthorized())


def require_role(role: Role) -> Callable[[F], F]:
    """401 when nobody is logged in, 403 when the role is too low."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                abort(401)
            if not current_user.can(role):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapped)

    return decorator


def require_device(view: F) -> F:
    """HTTP Basic with a device's id and secret (its MQTT password)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        auth = request.authorization
        if auth is None or auth.type != "basic" or not auth.username or not auth.password:
            abort(401)
        with db().session() as session:
            device = session.get(Device, auth.username)
            if (
                device is None
                or device.decommissioned_at is not None
                or not digest_matches(auth.password, device.secret_sha256)
            ):
                abort(401)
        g.device_id = device.id
        return view(*args, **kwargs)

    return cast(F, wrapped)
