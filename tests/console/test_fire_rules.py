"""The automatic fire announcement, end to end on the real broker: an alarm stored as the
ingest stores it, the commune's rule set, the worker's loop publishes ONE emergency command to
the call point's own zone, never twice (not after a restart, not after a lost cursor); no rule,
no announcement; a late alarm is not announced and the audit says why."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import cast

import pytest
from pydantic import BaseModel
from sqlalchemy import select

from console.db import Database
from console.fire_rules import CURSOR_KEY, REPEAT, FireRules, broadcast_id_for
from console.models import AuditEntry, Broadcast, CommuneSettings, DeviceEvent, WorkerState
from console.mqtt_link import ConsoleLink, LinkError
from console.settings import Settings
from console.worker import Worker, build_worker
from device_profiles import protocol
from tests.conftest import wait_for
from tests.console.conftest import audit_of
from tests.console.test_emergency import (  # noqa: F401  (commune and zone_commands: fixtures)
    COMMUNE,
    FIRE_POINT,
    FIRE_SHA,
    HAMLET_A,
    HAMLET_B,
    add_event,
    commands_on,
    commune,
    zone_commands,
)
from tests.firmware_bridge.mqtt_tools import Listener


def set_rule(db: Database, preset_key: str | None) -> None:
    with db.session() as session:
        row = session.get(CommuneSettings, COMMUNE)
        if row is None:
            row = CommuneSettings(zone_id=COMMUNE, quiet_start=time(22), quiet_end=time(5))
            session.add(row)
        row.fire_announce_preset = preset_key


def cursor(db: Database) -> int:
    with db.session() as session:
        row = session.get(WorkerState, CURSOR_KEY)
        return int(row.value) if row else -1


@pytest.fixture
def start_worker(settings: Settings, db: Database) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def run_worker(settings: Settings, db: Database, started: list[Worker]) -> Worker:
    worker = build_worker(settings, db=db)
    worker.start(poll_s=0.2)
    started.append(worker)
    return worker


def plays_on(listener: Listener, zone_id: str) -> list[protocol.PlayCommand]:
    return [c for c in commands_on(listener, zone_id) if isinstance(c, protocol.PlayCommand)]


def test_a_call_point_alarm_is_announced_once_on_its_hamlet_even_after_restarts(
    settings: Settings,
    db: Database,
    commune: None,  # noqa: F811
    zone_commands: Listener,  # noqa: F811
    start_worker: list[Worker],
) -> None:
    set_rule(db, "fire")
    worker = run_worker(settings, db, start_worker)
    add_event(db, "press-1")
    (command,) = wait_for(lambda: plays_on(zone_commands, HAMLET_A), 15, "the announcement")
    assert command.id == broadcast_id_for(FIRE_POINT, "press-1")
    assert command.priority is protocol.Priority.EMERGENCY and command.volume_pct == 100
    assert command.audio.sha256 == FIRE_SHA and command.repeat == REPEAT
    assert command.title == "Báo cháy"
    # The audit entry is written just after the publish: wait for it, not for the command.
    (entry,) = wait_for(lambda: audit_of(db, "fire_announcement"), 15, "the audit entry")
    assert entry.user_id is None and entry.username == ""  # done by the system itself
    assert entry.target == command.id and entry.detail["zone_id"] == HAMLET_A
    with db.session() as session:
        broadcast = session.get(Broadcast, command.id)
        assert broadcast is not None and broadcast.zone_ids == [HAMLET_A]

    # A restart: the cursor is kept, the alarm is not announced again.
    worker.stop()
    start_worker.remove(worker)
    worker = run_worker(settings, db, start_worker)
    second = add_event(db, "press-2")
    wait_for(lambda: len(plays_on(zone_commands, HAMLET_A)) == 2, 15, "the second announcement")
    wait_for(lambda: cursor(db) >= second, 15, "the cursor past the second alarm")

    # A restart that lost the cursor (a crash before it was saved): still no repeat.
    worker.stop()
    start_worker.remove(worker)
    with db.session() as session:
        row = session.get(WorkerState, CURSOR_KEY)
        assert row is not None
        row.value = "0"
    run_worker(settings, db, start_worker)
    third = add_event(db, "press-3")
    wait_for(lambda: len(plays_on(zone_commands, HAMLET_A)) == 3, 15, "the third announcement")
    wait_for(lambda: cursor(db) >= third, 15, "the cursor past the third alarm")
    ids = [c.id for c in plays_on(zone_commands, HAMLET_A)]
    assert ids == [broadcast_id_for(FIRE_POINT, m) for m in ("press-1", "press-2", "press-3")]
    assert plays_on(zone_commands, HAMLET_B) == [] and plays_on(zone_commands, COMMUNE) == []
    wait_for(lambda: len(audit_of(db, "fire_announcement")) == 3, 15, "three audit entries")


def test_without_a_rule_an_alarm_only_shows_in_the_console(
    settings: Settings,
    db: Database,
    commune: None,  # noqa: F811
    zone_commands: Listener,  # noqa: F811
    start_worker: list[Worker],
) -> None:
    run_worker(settings, db, start_worker)
    alarm = add_event(db, "press-1")
    add_event(db, "door", "supervisory", "cabinet_open")
    last = add_event(db, "reset", active=False)
    wait_for(lambda: cursor(db) >= last, 15, "the loop to pass every event")
    assert all(plays_on(zone_commands, z) == [] for z in (COMMUNE, HAMLET_A, HAMLET_B))
    assert audit_of(db, "fire_announcement") == []
    with db.session() as session:
        event = session.get(DeviceEvent, alarm)
        assert event is not None and event.acknowledged_at is None  # still in the banner


# --- one pass, with a link that records or fails ------------------------------------------------


@dataclass
class RecordingLink:
    """Stands in for ConsoleLink.publish_command; fails while `down`."""

    down: bool = False
    sent: list[tuple[list[str], BaseModel]] = field(default_factory=list)

    def publish_command(self, zone_ids: list[str], command: BaseModel) -> None:
        if self.down:
            raise LinkError("broker unreachable")
        self.sent.append((list(zone_ids), command))


def rules(db: Database, settings: Settings, link: RecordingLink, now: datetime) -> FireRules:
    return FireRules(db, cast(ConsoleLink, link), settings, lambda: now)


def test_an_alarm_first_seen_too_late_is_not_announced_and_the_audit_says_why(
    settings: Settings,
    db: Database,
    commune: None,  # noqa: F811
) -> None:
    set_rule(db, "fire")
    link = RecordingLink()
    now = datetime.now(UTC)
    with db.session() as session:
        session.add(WorkerState(key=CURSOR_KEY, value="0"))
    add_event(db, "stale", ago_s=3600)  # kept in a device's outbox for an hour
    assert rules(db, settings, link, now).check() == []
    assert link.sent == []
    (entry,) = audit_of(db, "fire_announcement_skipped")
    assert entry.username == "" and "late" in entry.detail["reason"]
    assert entry.target == broadcast_id_for(FIRE_POINT, "stale")


def test_a_broker_failure_is_retried_and_the_alarm_announced_once(
    settings: Settings,
    db: Database,
    commune: None,  # noqa: F811
) -> None:
    set_rule(db, "fire")
    link = RecordingLink(down=True)
    now = datetime.now(UTC)
    fire_rules = rules(db, settings, link, now)
    fire_rules.check()  # the first run starts from here
    alarm = add_event(db, "press-1")
    assert fire_rules.check() == []  # the broker is down: not sent, not given up
    assert cursor(db) < alarm
    with db.session() as session:
        assert session.scalars(select(Broadcast)).first() is None  # the claim was released
    link.down = False
    assert fire_rules.check() == [broadcast_id_for(FIRE_POINT, "press-1")]
    assert fire_rules.check() == []
    assert [zones for zones, _ in link.sent] == [[HAMLET_A]]
    assert cursor(db) == alarm


def test_the_first_run_does_not_announce_history(
    settings: Settings,
    db: Database,
    commune: None,  # noqa: F811
) -> None:
    with db.session() as session:
        old = DeviceEvent(
            message_id="last-year", device_id=FIRE_POINT,
            occurred_at=datetime.now(UTC) - timedelta(days=300),
            received_at=datetime.now(UTC) - timedelta(days=300),
            signal_class="alarm", signal="call_point", active=True,
        )  # fmt: skip
        session.add(old)
    set_rule(db, "fire")
    link = RecordingLink()
    assert rules(db, settings, link, datetime.now(UTC)).check() == []
    assert link.sent == [] and audit_of(db, "fire_announcement_skipped") == []
    with db.session() as session:
        assert session.scalars(select(AuditEntry)).first() is None
