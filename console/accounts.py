"""Staff accounts: the first admin at setup, users created by an admin."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from console.models import Role, User
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


def change_password(session: Session, user_id: int, current: str, new: str) -> User:
    """Set a user's own new password, after checking the current one."""
    user = session.get(User, user_id)
    if user is None or not check_password(user.password_hash, current):
        raise AccountError("the current password is wrong")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if new == current:
        raise AccountError("the new password is the same as the current one")
    user.password_hash = hash_password(new)
    return user


def ensure_first_admin(session: Session, username: str = "admin") -> str | None:
    """Create the first admin when there is no user at all; returns its password, once."""
    if session.scalar(select(func.count(User.id))):
        return None
    password = new_password()
    create_user(session, username, password, Role.ADMIN)
    return password
