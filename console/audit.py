"""The audit log: every login, broadcast, emergency, stop, schedule and device change.

`record` adds an entry to the caller's session, so the entry is committed with the change
it describes, or not at all. Inside a request, `record_here` fills in who and from where.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import has_request_context, request
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from console.models import AuditEntry, utcnow

# Login throttling: this many failures for one username within the window lock it out
# until the window has passed (counted from the audit log, so every web worker agrees).
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)


def record(
    session: Session,
    action: str,
    target: str = "",
    *,
    user_id: int | None = None,
    username: str = "",
    remote_addr: str | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEntry:
    entry = AuditEntry(
        at=at or utcnow(),
        user_id=user_id,
        username=username[:64],
        action=action,
        target=str(target)[:200],
        detail=detail,
        remote_addr=remote_addr,
    )
    session.add(entry)
    return entry


def record_here(session: Session, action: str, target: str = "", **detail: Any) -> AuditEntry:
    """An entry for the logged-in user of the current request (or the system outside one)."""
    user_id, username, addr = None, "", None
    if has_request_context():
        addr = request.remote_addr
        if current_user.is_authenticated:
            user_id, username = current_user.id, current_user.username
    return record(
        session, action, target, user_id=user_id, username=username, remote_addr=addr, **detail
    )


def login_locked(session: Session, username: str, now: datetime | None = None) -> bool:
    """True while the username has had too many failed logins in the window."""
    since = (now or utcnow()) - LOGIN_FAILURE_WINDOW
    failures = session.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.action == "login_failed",
            AuditEntry.target == username[:200],
            AuditEntry.at >= since,
        )
    )
    return (failures or 0) >= LOGIN_FAILURES_ALLOWED
