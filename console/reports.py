"""Broadcast history, delivery reports and the audit log: the queries behind pages, API and CSV.

A broadcast's outcome is judged from its delivery records (one per targeted speaker):
success is the share of targeted devices that reported `finished` (played to the end);
received, started, preempted, stopped, failed and no answer do not count. Every query here
costs a fixed number of statements per page, never one per row.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    cast,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session, aliased

from console.models import (
    AudioFile,
    AuditEntry,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Device,
    Role,
    Schedule,
    User,
    UTCDateTime,
    Zone,
)

T = TypeVar("T")

KINDS = ("scheduled", "live", "emergency")
OUTCOMES = ("complete", "partial", "not_played", "missed", "no_devices")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 200
MAX_PAGE = 100_000
CSV_CHUNK = 500
# A broadcast may still be answered until its command expired and the audio had time to play.
_ANSWER_MARGIN = timedelta(seconds=30)

# The words for each delivery status, on every page (the templates' status_label).
DELIVERY_LABELS = {
    "pending": _l("No answer"),
    "received": _l("Received"),
    "started": _l("Playing"),
    "finished": _l("Played"),
    "failed": _l("Failed"),
    "preempted": _l("Interrupted"),
    "stopped": _l("Stopped"),
}
KIND_LABELS = {
    "scheduled": _l("Scheduled"),
    "live": _l("Play now"),
    "emergency": _l("Emergency"),
}
OUTCOME_LABELS = {
    "complete": _l("Played everywhere"),
    "partial": _l("Played in part"),
    "not_played": _l("Not played"),
    "missed": _l("Missed"),
    "no_devices": _l("No speakers in the zones"),
}
# Audit action codes in words; a code not listed here is shown as it is.
ACTION_LABELS = {
    "login": _l("Logged in"),
    "login_failed": _l("Wrong password"),
    "login_refused": _l("Login refused (locked)"),
    "logout": _l("Logged out"),
    "password_changed": _l("Changed own password"),
    "password_reset": _l("Password reset"),
    "user_created": _l("User created"),
    "user_changed": _l("User changed"),
    "broadcast": _l("Played now"),
    "emergency": _l("Emergency sounded"),
    "stop": _l("Stopped"),
    "audio_added": _l("Audio added"),
    "audio_deleted": _l("Audio deleted"),
    "preset_replaced": _l("Emergency announcement replaced"),
    "schedule_created": _l("Schedule created"),
    "schedule_edited": _l("Schedule changed"),
    "schedule_deleted": _l("Schedule deleted"),
    "schedule_disabled": _l("Schedule turned off"),
    "quiet_hours_set": _l("Quiet hours set"),
    "holiday_added": _l("Holiday added"),
    "holiday_removed": _l("Holiday removed"),
    "zone_created": _l("Zone created"),
    "device_registered": _l("Device registered"),
    "alarm_acknowledged": _l("Alarm acknowledged"),
}
# Actions whose target is the username tried (the entry's own username is "" then).
_LOGIN_ACTIONS = ("login", "login_failed", "login_refused")

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ZONE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class ReportError(ValueError):
    """A filter or paging value that cannot be used; `field` names it, `code` says why.

    Codes: `date`, `order` (last day before the first), `zone`, `choice`, `number`, `length`.
    """

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.code = field, code


# --- filters -----------------------------------------------------------------------------


def _param(args: Mapping[str, str], name: str, max_len: int) -> str:
    value = (args.get(name) or "").strip()
    if len(value) > max_len:
        raise ReportError(name, f"at most {max_len} characters", "length")
    return value


def _day(args: Mapping[str, str], name: str) -> date | None:
    text = _param(args, name, 10)
    if not text:
        return None
    try:
        if not _DATE_RE.match(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise ReportError(name, "give a date as YYYY-MM-DD, e.g. 2026-09-02", "date") from None
    if not 2000 <= day.year <= 2100:
        raise ReportError(name, "give a date between the years 2000 and 2100", "date")
    return day


def _choice(args: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = _param(args, name, 32)
    if value and value not in allowed:
        raise ReportError(name, f"one of {', '.join(allowed)}", "choice")
    return value or None


def _range(args: Mapping[str, str]) -> tuple[date | None, date | None]:
    day_from, day_to = _day(args, "from"), _day(args, "to")
    if day_from and day_to and day_to < day_from:
        raise ReportError("to", "the last day is before the first one", "order")
    return day_from, day_to


@dataclass(frozen=True)
class Paging:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> Paging:
        values = []
        for name, default, top in (
            ("page", 1, MAX_PAGE),
            ("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE),
        ):
            text = _param(args, name, 8) or str(default)
            # isascii: "²" is a digit to isdigit(), not to int() (text is at most 8 long).
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= top:
                raise ReportError(name, f"a whole number from 1 to {top}", "number")
            values.append(int(text))
        return cls(*values)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


@dataclass(frozen=True)
class BroadcastFilters:
    """What the history shows: days in site time (inclusive), a zone, a kind, an outcome."""

    day_from: date | None = None
    day_to: date | None = None
    zone_id: str | None = None
    kind: str | None = None
    outcome: str | None = None

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> BroadcastFilters:
        day_from, day_to = _range(args)
        zone = _param(args, "zone", 63)
        if zone and not _ZONE_RE.match(zone):
            raise ReportError("zone", "not a zone id", "zone")
        return cls(
            day_from=day_from,
            day_to=day_to,
            zone_id=zone or None,
            kind=_choice(args, "kind", KINDS),
            outcome=_choice(args, "status", OUTCOMES),
        )

    def query(self) -> dict[str, str]:
        """The filters as query-string arguments (for links, the pager and CSV downloads)."""
        pairs = {
            "from": self.day_from.isoformat() if self.day_from else "",
            "to": self.day_to.isoformat() if self.day_to else "",
            "zone": self.zone_id or "",
            "kind": self.kind or "",
            "status": self.outcome or "",
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True)
class AuditFilters:
    user: str | None = None
    action: str | None = None
    day_from: date | None = None
    day_to: date | None = None

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> AuditFilters:
        day_from, day_to = _range(args)
        action = _param(args, "action", 48)
        if action and not _ACTION_RE.match(action):
            raise ReportError("action", "not an action code", "choice")
        return cls(
            user=_param(args, "user", 64) or None,
            action=action or None,
            day_from=day_from,
            day_to=day_to,
        )

    def query(self) -> dict[str, str]:
        pairs = {
            "user": self.user or "",
            "action": self.action or "",
            "from": self.day_from.isoformat() if self.day_from else "",
            "to": self.day_to.isoformat() if self.day_to else "",
        }
        return {k: v for k, v in pairs.items() if v}


def day_bounds(
    day_from: date | None, day_to: date | None, tz: ZoneInfo
) -> tuple[datetime | None, datetime | None]:
    """[start, end) in UTC of the site-local days from `day_from` to `day_to` inclusive."""
    start = datetime.combine(day_from, time(), tz) if day_from else None
    end = datetime.combine(day_to + timedelta(days=1), time(), tz) if day_to else None
    return start, end


# --- broadcasts ----------------------------------------------------------------------------


@dataclass
class BroadcastRow:
    """One broadcast as the history lists it, with its devices counted per delivery status."""

    id: str
    kind: str
    status: str  # the broadcast's own: sent, missed, stopped
    when: datetime  # sent, or when it should have been (missed)
    scheduled_for: datetime | None
    fired_at: datetime | None
    expires_at: datetime | None
    zone_ids: list[str]
    audio_sha256: str
    audio_name: str | None
    duration_ms: int | None
    repeat: int
    schedule_id: int | None
    schedule_name: str | None
    sent_by: str | None
    counts: dict[str, int] = field(default_factory=dict)
    first_started_at: datetime | None = None
    last_finished_at: datetime | None = None

    @property
    def targeted(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.counts.get(DeliveryStatus.FINISHED.value, 0)

    @property
    def success_rate(self) -> float | None:
        """Finished over targeted; None when no device was targeted (or it was missed)."""
        if self.status == BroadcastStatus.MISSED.value or not self.targeted:
            return None
        return self.finished / self.targeted

    @property
    def outcome(self) -> str:
        if self.status == BroadcastStatus.MISSED.value:
            return "missed"
        if not self.targeted:
            return "no_devices"
        if self.finished == self.targeted:
            return "complete"
        return "partial" if self.finished else "not_played"

    def in_progress(self, now: datetime) -> bool:
        """Devices may still answer: not all played, and not yet past expiry plus playing time."""
        if self.outcome in ("complete", "missed", "no_devices") or self.expires_at is None:
            return False
        open_states = (DeliveryStatus.PENDING, DeliveryStatus.RECEIVED, DeliveryStatus.STARTED)
        if not any(self.counts.get(s.value) for s in open_states):
            return False
        playing = timedelta(milliseconds=(self.duration_ms or 0) * max(self.repeat, 1))
        return now < self.expires_at + playing + _ANSWER_MARGIN


@dataclass
class PageOf(Generic[T]):
    items: list[T]
    total: int
    paging: Paging

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.paging.per_page))


@dataclass
class Totals:
    """Over every broadcast the filters match (not only the page shown)."""

    broadcasts: int = 0
    missed: int = 0
    targeted: int = 0
    finished: int = 0

    @property
    def success_rate(self) -> float | None:
        return self.finished / self.targeted if self.targeted else None


def _when() -> ColumnElement[datetime]:
    """When a broadcast happened: sent, else when it was due (missed), else recorded."""
    return type_coerce(
        func.coalesce(Broadcast.fired_at, Broadcast.scheduled_for, Broadcast.created_at),
        UTCDateTime,
    )


def _kind_of(schedule_id: int | None, priority: str) -> str:
    if schedule_id is not None:
        return "scheduled"
    return "emergency" if priority == "emergency" else "live"


def _device_count(status: DeliveryStatus | None = None) -> Any:
    """Devices of the outer broadcast, of one status or all (correlated; uses the index)."""
    d = aliased(Delivery)  # the outer query may itself select from deliveries
    stmt = select(func.count(d.id)).where(d.broadcast_id == Broadcast.id)
    if status is not None:
        stmt = stmt.where(d.status == status)
    return stmt.correlate(Broadcast).scalar_subquery()


def related_zones(session: Session, zone_id: str) -> set[str]:
    """The zone, the zones above it (whose broadcasts reach it) and those below it."""
    parents = {z: p for z, p in session.execute(select(Zone.id, Zone.parent_id))}
    if zone_id not in parents:
        raise ReportError("zone", f"unknown zone {zone_id!r}", "zone")
    related = {zone_id}
    current = parents[zone_id]
    while current is not None and current not in related:
        related.add(current)
        current = parents.get(current)
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        if parent is not None:
            children.setdefault(parent, []).append(child)
    stack = [zone_id]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in related:
                related.add(child)
                stack.append(child)
    return related


def _broadcast_conditions(
    session: Session, filters: BroadcastFilters, tz: ZoneInfo
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    start, end = day_bounds(filters.day_from, filters.day_to, tz)
    if start is not None:
        conditions.append(_when() >= start)
    if end is not None:
        conditions.append(_when() < end)
    if filters.zone_id:
        # zone_ids is a JSON list of ids ([a-z0-9-]: nothing to escape), stored as text.
        text = cast(Broadcast.zone_ids, String)
        zones = sorted(related_zones(session, filters.zone_id))
        conditions.append(or_(*(text.like(f'%"{z}"%') for z in zones)))
    if filters.kind == "scheduled":
        conditions.append(Broadcast.schedule_id.is_not(None))
    elif filters.kind == "emergency":
        conditions.append(and_(Broadcast.schedule_id.is_(None), Broadcast.priority == "emergency"))
    elif filters.kind == "live":
        conditions.append(and_(Broadcast.schedule_id.is_(None), Broadcast.priority != "emergency"))
    if filters.outcome:
        conditions.append(_outcome_condition(filters.outcome))
    return conditions


def _outcome_condition(outcome: str) -> ColumnElement[bool]:
    if outcome == "missed":
        return Broadcast.status == BroadcastStatus.MISSED
    targeted = _device_count()
    finished = _device_count(DeliveryStatus.FINISHED)
    not_missed = Broadcast.status != BroadcastStatus.MISSED
    if outcome == "no_devices":
        return and_(not_missed, targeted == 0)
    if outcome == "complete":
        return and_(not_missed, targeted > 0, finished == targeted)
    if outcome == "partial":
        return and_(not_missed, finished > 0, finished < targeted)
    return and_(not_missed, targeted > 0, finished == 0)


# A broadcast, its audio's name and duration, its schedule's name, its sender, when.
RowSelect = Select[Broadcast, str, int, str, str, datetime]


def _row_select() -> RowSelect:
    return (
        select(
            Broadcast,
            AudioFile.name,
            AudioFile.duration_ms,
            Schedule.name,
            User.username,
            _when().label("when"),
        )
        .outerjoin(AudioFile, AudioFile.sha256 == Broadcast.audio_sha256)
        .outerjoin(Schedule, Schedule.id == Broadcast.schedule_id)
        .outerjoin(User, User.id == Broadcast.created_by)
    )


def _rows(session: Session, stmt: RowSelect) -> list[BroadcastRow]:
    """Rows of `_row_select()`, with their delivery counts filled in by one more query."""
    rows = [
        BroadcastRow(
            id=b.id,
            kind=_kind_of(b.schedule_id, b.priority),
            status=b.status.value,
            when=when,
            scheduled_for=b.scheduled_for,
            fired_at=b.fired_at,
            expires_at=b.expires_at,
            zone_ids=list(b.zone_ids or []),
            audio_sha256=b.audio_sha256,
            audio_name=audio_name,
            duration_ms=duration_ms,
            repeat=b.repeat or 1,
            schedule_id=b.schedule_id,
            schedule_name=schedule_name,
            sent_by=username,
        )
        for b, audio_name, duration_ms, schedule_name, username, when in session.execute(stmt)
    ]
    by_id = {row.id: row for row in rows}
    if not by_id:
        return rows
    counts = session.execute(
        select(
            Delivery.broadcast_id,
            Delivery.status,
            func.count(Delivery.id),
            func.min(Delivery.started_at),
            func.max(Delivery.ended_at),
        )
        .where(Delivery.broadcast_id.in_(list(by_id)))
        .group_by(Delivery.broadcast_id, Delivery.status)
    )
    for broadcast_id, status, n, first_started, last_ended in counts:
        row = by_id[broadcast_id]
        row.counts[status.value] = n
        if first_started is not None and (
            row.first_started_at is None or first_started < row.first_started_at
        ):
            row.first_started_at = first_started
        if status is DeliveryStatus.FINISHED:
            row.last_finished_at = last_ended
    return rows


def list_broadcasts(
    session: Session, filters: BroadcastFilters, tz: ZoneInfo, paging: Paging
) -> tuple[PageOf[BroadcastRow], Totals]:
    """One page of the history, newest first, and the totals over everything that matches."""
    conditions = _broadcast_conditions(session, filters, tz)
    total = session.scalar(select(func.count(Broadcast.id)).where(*conditions)) or 0
    stmt = (
        _row_select()
        .where(*conditions)
        .order_by(_when().desc(), Broadcast.id.desc())
        .limit(paging.per_page)
        .offset(paging.offset)
    )
    rows = _rows(session, stmt)
    missed = session.scalar(
        select(func.count(Broadcast.id)).where(
            *conditions, Broadcast.status == BroadcastStatus.MISSED
        )
    )
    targeted, finished = session.execute(
        select(
            func.count(Delivery.id),
            func.coalesce(
                func.sum(case((Delivery.status == DeliveryStatus.FINISHED, 1), else_=0)), 0
            ),
        )
        .join(Broadcast, Broadcast.id == Delivery.broadcast_id)
        .where(*conditions)
    ).one()
    totals = Totals(total, missed or 0, targeted or 0, finished or 0)
    return PageOf(rows, total, paging), totals


def iter_broadcasts(
    session: Session, filters: BroadcastFilters, tz: ZoneInfo, chunk: int = CSV_CHUNK
) -> Iterator[BroadcastRow]:
    """Every matching broadcast, newest first, fetched `chunk` at a time (for CSV export).

    The filters are checked at once (ReportError), before the first row is asked for.
    """
    conditions = _broadcast_conditions(session, filters, tz)

    def rows() -> Iterator[BroadcastRow]:
        after: tuple[datetime, str] | None = None  # keyset: new broadcasts shift nothing
        while True:
            stmt = _row_select().where(*conditions)
            if after is not None:
                when, broadcast_id = after
                stmt = stmt.where(
                    or_(_when() < when, and_(_when() == when, Broadcast.id < broadcast_id))
                )
            stmt = stmt.order_by(_when().desc(), Broadcast.id.desc()).limit(chunk)
            batch = _rows(session, stmt)
            yield from batch
            if len(batch) < chunk:
                return
            after = (batch[-1].when, batch[-1].id)

    return rows()


@dataclass
class DeviceOutcome:
    device_id: str
    device_name: str
    zone_id: str
    zone_name: str
    status: str
    reason: str | None
    received_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass
class BroadcastReport:
    broadcast: BroadcastRow
    devices: list[DeviceOutcome]


# Problems first, so what needs a look is at the top of a long list.
_STATUS_ORDER = {
    DeliveryStatus.FAILED: 0,
    DeliveryStatus.PENDING: 1,
    DeliveryStatus.PREEMPTED: 2,
    DeliveryStatus.STOPPED: 3,
    DeliveryStatus.RECEIVED: 4,
    DeliveryStatus.STARTED: 5,
    DeliveryStatus.FINISHED: 6,
}


def broadcast_report(session: Session, broadcast_id: str) -> BroadcastReport | None:
    """One broadcast and each targeted device's outcome; None for an unknown id."""
    rows = _rows(session, _row_select().where(Broadcast.id == broadcast_id))
    if not rows:
        return None
    devices = [
        DeviceOutcome(
            device_id=d.device_id,
            device_name=device_name,
            zone_id=zone_id,
            zone_name=zone_name or zone_id,
            status=d.status.value,
            reason=d.reason,
            received_at=d.received_at,
            started_at=d.started_at,
            ended_at=d.ended_at,
        )
        for d, device_name, zone_id, zone_name in session.execute(
            select(Delivery, Device.name, Device.zone_id, Zone.name)
            .join(Device, Device.id == Delivery.device_id)
            .outerjoin(Zone, Zone.id == Device.zone_id)
            .where(Delivery.broadcast_id == broadcast_id)
        )
    ]
    devices.sort(key=lambda d: (_STATUS_ORDER[DeliveryStatus(d.status)], d.zone_id, d.device_id))
    return BroadcastReport(rows[0], devices)


def zone_names(session: Session) -> dict[str, str]:
    return {z: name for z, name in session.execute(select(Zone.id, Zone.name))}


def zone_choices(session: Session) -> list[tuple[str, str, int]]:
    """Every zone as (id, name, depth), each under its parent, for a filter's list."""
    zones = list(session.execute(select(Zone.id, Zone.name, Zone.parent_id).order_by(Zone.name)))
    children: dict[str | None, list[tuple[str, str]]] = {}
    known = {z for z, _, _ in zones}
    for zone_id, name, parent in zones:
        children.setdefault(parent if parent in known else None, []).append((zone_id, name))
    out: list[tuple[str, str, int]] = []
    stack = [(z, n, 0) for z, n in reversed(children.get(None, []))]
    while stack:
        zone_id, name, depth = stack.pop()
        out.append((zone_id, name, depth))
        stack.extend((z, n, depth + 1) for z, n in reversed(children.get(zone_id, [])))
    return out


# --- audit log ---------------------------------------------------------------------------


def _audit_conditions(filters: AuditFilters, tz: ZoneInfo) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.user:
        conditions.append(
            or_(
                AuditEntry.username == filters.user,
                and_(
                    AuditEntry.action.in_(_LOGIN_ACTIONS),
                    AuditEntry.target == filters.user,
                ),
            )
        )
    if filters.action:
        conditions.append(AuditEntry.action == filters.action)
    start, end = day_bounds(filters.day_from, filters.day_to, tz)
    if start is not None:
        conditions.append(AuditEntry.at >= start)
    if end is not None:
        conditions.append(AuditEntry.at < end)
    return conditions


def list_audit(
    session: Session, filters: AuditFilters, tz: ZoneInfo, paging: Paging
) -> PageOf[AuditEntry]:
    conditions = _audit_conditions(filters, tz)
    total = session.scalar(select(func.count(AuditEntry.id)).where(*conditions)) or 0
    entries = session.scalars(
        select(AuditEntry)
        .where(*conditions)
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(paging.per_page)
        .offset(paging.offset)
    )
    return PageOf(list(entries), total, paging)


def iter_audit(
    session: Session, filters: AuditFilters, tz: ZoneInfo, chunk: int = CSV_CHUNK
) -> Iterator[AuditEntry]:
    """Every matching entry, newest first, `chunk` at a time; keyset paging on (at, id)."""
    conditions = _audit_conditions(filters, tz)
    after: tuple[datetime, int] | None = None
    while True:
        stmt = select(AuditEntry).where(*conditions)
        if after is not None:
            at, entry_id = after
            stmt = stmt.where(
                or_(AuditEntry.at < at, and_(AuditEntry.at == at, AuditEntry.id < entry_id))
            )
        entries = list(
            session.scalars(stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(chunk))
        )
        yield from entries
        if len(entries) < chunk:
            return
        after = (entries[-1].at, entries[-1].id)


def audit_actions(session: Session) -> list[str]:
    """Every action code in the log, and every known one, for the filter's list."""
    seen = set(session.scalars(select(AuditEntry.action).distinct()))
    return sorted(seen | set(ACTION_LABELS))


def action_label(action: str) -> str:
    label = ACTION_LABELS.get(action)
    return str(label) if label is not None else action


def detail_text(detail: Mapping[str, Any] | None) -> str:
    """An entry's details as `key: value` pairs on one line (lists joined by commas)."""
    parts = []
    for key, value in (detail or {}).items():
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        elif value is None:
            value = "–"
        parts.append(f"{key}: {value}")
    return "; ".join(parts)


# --- users -------------------------------------------------------------------------------


@dataclass
class UserRow:
    id: int
    username: str
    role: Role
    active: bool
    created_at: datetime
    last_login_at: datetime | None


def list_users(session: Session) -> list[UserRow]:
    """Every account with its last successful login (from the audit log), in one query."""
    last_login = (
        select(AuditEntry.user_id, func.max(AuditEntry.at).label("at"))
        .where(AuditEntry.action == "login", AuditEntry.user_id.is_not(None))
        .group_by(AuditEntry.user_id)
        .subquery()
    )
    rows = session.execute(
        select(User, type_coerce(last_login.c.at, UTCDateTime))
        .outerjoin(last_login, last_login.c.user_id == User.id)
        .order_by(User.active.desc(), User.username)
    )
    return [UserRow(u.id, u.username, Role(u.role), u.active, u.created_at, at) for u, at in rows]
