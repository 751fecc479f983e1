"""Who is asking: staff sessions (Flask-Login), API tokens, device credentials; role checks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Flask, Request, abort, current_app, g, has_request_context, request
from flask_login import LoginManager, UserMixin, current_user
from sqlalchemy import select

from console import audit
from console.db import Database
from console.models import ApiToken, Device, Role, User
from console.security import check_password, digest_matches, new_secret, secret_digest

TOKEN_TTL = timedelta(days=30)
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
    try:
        uid = int(user_id)
    except ValueError:
        return None
    with db().session() as session:
        user = session.get(User, uid)
        return StaffUser(user) if user is not None and user.active else None


def init_auth(app: Flask) -> LoginManager:
    manager = LoginManager(app)
    manager.login_view = "web.login"
    manager.session_protection = "strong"
    manager.user_loader(_load_user)
    manager.request_loader(_user_from_token)
    return manager


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
            if device is None or not digest_matches(auth.password, device.secret_sha256):
                abort(401)
        g.device_id = device.id
        return view(*args, **kwargs)

    return cast(F, wrapped)
