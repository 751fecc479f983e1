"""Staff accounts: the first admin at setup, users created by an admin."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from console.models import ApiToken, Role, User, WebSession
from console.security import MIN_PASSWORD_LENGTH, check_password, hash_password, new_password


class AccountError(ValueError):
    """A user that cannot be created as asked."""


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    username = username.strip()
    if not username or len(username) > 64:
        raise AccountError("a username has 1 to 64 characters")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def change_password(
    session: Session, user_id: int, current: str, new: str, keep_session: str | None = None
) -> User:
    """Set a user's own new password, after checking the current one; the user's other
    logins end (all but `keep_session`, the hash of the browser's own login key)."""
    user = session.get(User, user_id)
    if user is None or not check_password(user.password_hash, current):
        raise AccountError("the current password is wrong")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if new == current:
        raise AccountError("the new password is the same as the current one")
    user.password_hash = hash_password(new)
    others = delete(WebSession).where(WebSession.user_id == user.id)
    if keep_session is not None:
        others = others.where(WebSession.key_sha256 != keep_session)
    session.execute(others)
    return user


def ensure_first_admin(session: Session, username: str = "admin") -> str | None:
    """Create the first admin when there is no user at all; returns its password, once."""
    if session.scalar(select(func.count(User.id))):
        return None
    password = new_password()
    create_user(session, username, password, Role.ADMIN)
    return password


class UserNotFound(AccountError, LookupError):
    """No user with this id."""


class LastAdminError(AccountError):
    """The change would leave no active administrator, so nobody could manage accounts."""


def update_user(
    session: Session, user_id: int, *, role: Role | None = None, active: bool | None = None
) -> tuple[User, dict[str, list[object]]]:
    """Change a user's role and/or active flag; returns the user and {field: [old, new]}.

    Refused if it would leave no active admin. Deactivating revokes the user's API tokens
    and ends their logins (their next request is refused).
    """
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user {user_id}")
    new_role = role if role is not None else Role(user.role)
    new_active = active if active is not None else user.active
    if user.role == Role.ADMIN and user.active and (new_role != Role.ADMIN or not new_active):
        others = session.scalars(
            select(User.id)
            .where(User.role == Role.ADMIN, User.active.is_(True), User.id != user.id)
            .with_for_update()
        ).all()
        if not others:
            raise LastAdminError("this is the last active administrator")
    changes: dict[str, list[object]] = {}
    if new_role != user.role:
        changes["role"] = [Role(user.role).value, new_role.value]
        user.role = new_role
    if new_active != user.active:
        changes["active"] = [user.active, new_active]
        user.active = new_active
        if not new_active:
            session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    return user, changes


def reset_password(session: Session, user_id: int, password: str | None = None) -> str:
    """Give a user a new password (a generated one unless given); their API tokens and
    logins end."""
    user = session.get(User, user_id)
    if user is None:
        raise UserNotFound(f"no user {user_id}")
    password = password if password is not None else new_password()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = hash_password(password)
    session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    return password
