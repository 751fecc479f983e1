"""Firing is idempotent end to end: two console workers started by mistake, or a worker
restarted across an occurrence, publish each occurrence once; one missed during downtime is
recorded missed and never played late. (Hand-over between workers: test_lease.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from console.db import Database
from console.lease import LeaderElector
from console.models import AudioFile, Schedule
from console.mqtt_link import LinkError
from console.settings import Settings
from console.worker import build_worker
from device_profiles import protocol
from scheduler import Occurrence, SystemClock
from tests.conftest import Broker, wait_for
from tests.console.conftest import token_for
from tests.firmware_bridge.mqtt_tools import Listener

ZONE = {"id": "xa-fire1", "name": "Xã Một Lần", "kind": "commune"}
SHA = "c" * 64


class ZoneWatcher(Listener):
    """The commands published to one zone topic (as every bridge there receives them)."""

    def __init__(self, broker: Broker, zone_id: str) -> None:
        super().__init__(broker, protocol.zone_command_topic(zone_id))

    @property
    def commands(self) -> list[protocol.PlayCommand | protocol.StopCommand]:
        with self._lock:
            payloads = [p for _, p in self.messages]
        return [protocol.decode_command(p) for p in payloads]

    def ids(self) -> list[str]:
        return [c.id for c in self.commands]


@pytest.fixture
def watcher(client: FlaskClient, mqtt_broker: Broker) -> Iterator[ZoneWatcher]:
    assert (
        client.post("/api/v1/zones", json=ZONE, headers=token_for(client, "admin")).status_code
        == 201
    )
    w = ZoneWatcher(mqtt_broker, ZONE["id"])
    yield w
    w.close()


def add_schedule(db: Database, at: datetime) -> int:
    """A once schedule straight into the database (the API refuses past times and, at night,
    quiet hours; here the firing itself is under test)."""
    with db.session() as session:
        if session.get(AudioFile, SHA) is None:
            session.add(
                AudioFile(
                    sha256=SHA, name="Thử", original_name="thu.wav", duration_ms=1000,
                    size_bytes=8000, mime="audio/mpeg", loudness_lufs=-16.0,
                )
            )  # fmt: skip
        schedule = Schedule(
            name="Một lần",
            audio_sha256=SHA,
            rule={"kind": "once", "at": at.isoformat()},
            zone_ids=[ZONE["id"]],
            priority="scheduled",
            volume_pct=None,
            gong=False,
            enabled=True,
            created_by=None,
        )
        session.add(schedule)
        session.flush()
        return schedule.id


def broadcasts(client: FlaskClient, schedule_id: int) -> list[dict[str, Any]]:
    viewer = token_for(client, "viewer")
    resp = client.get(f"/api/v1/broadcasts?schedule_id={schedule_id}", headers=viewer)
    assert resp.status_code == 200
    return resp.get_json()  # type: ignore[no-any-return]


def test_two_workers_started_by_mistake_fire_an_occurrence_once(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    schedule_id = add_schedule(db, at)
    workers = [build_worker(settings, db=db), build_worker(settings, db=db)]
    for worker in workers:
        worker.start(poll_s=0.2)
    try:
        # The first holds the leader lease; the second waits, never connected to the broker
        # (both would use the worker's one client id and knock each other off).
        assert [w.is_leader() for w in workers] == [True, False]
        assert not workers[1].link.connected.is_set()
        wait_for(lambda: watcher.commands, 20, "the occurrence to be published")
        time.sleep(3)  # time for a second publish, were there one
    finally:
        for worker in workers:
            worker.stop()
    occurrence = f"s{schedule_id}-{at:%Y%m%dT%H%M%SZ}"
    assert watcher.ids() == [occurrence]  # one publish, one claim, one record
    [broadcast] = broadcasts(client, schedule_id)
    assert broadcast["id"] == occurrence and broadcast["status"] != "missed"


def test_a_worker_restarted_after_an_occurrence_does_not_fire_it_again(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    schedule_id = add_schedule(db, at)
    worker = build_worker(settings, db=db)
    worker.start(poll_s=0.2)
    try:
        wait_for(lambda: watcher.commands, 20, "the occurrence to be published")
    finally:
        worker.stop()
    restarted = build_worker(settings, db=db)
    restarted.start(poll_s=0.2)
    try:
        time.sleep(3)  # its catch-up runs at start
    finally:
        restarted.stop()
    assert len(watcher.ids()) == 1
    assert len(broadcasts(client, schedule_id)) == 1


def test_an_occurrence_missed_during_downtime_is_recorded_and_never_played(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    late = settings.model_copy(update={"misfire_grace_s": 1.0})
    worker = build_worker(late, db=db)
    worker.start(poll_s=0.2)  # it ran: the console knows up to when all was accounted for
    worker.stop()
    at = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0)
    schedule_id = add_schedule(db, at)  # due while no worker runs
    wait_for(lambda: datetime.now(UTC) > at + timedelta(seconds=3), 10, "the grace to pass")
    restarted = build_worker(late, db=db)
    restarted.start(poll_s=0.2)
    try:
        [missed] = wait_for(lambda: broadcasts(client, schedule_id), 20, "the missed record")
        time.sleep(2)
    finally:
        restarted.stop()
    assert missed["status"] == "missed"
    assert missed["id"] == f"s{schedule_id}-{at:%Y%m%dT%H%M%SZ}"
    assert watcher.ids() == []  # late by more than the grace: never played


class GrantedLease:
    """A lease store that always grants: the worker leads without another worker to ask."""

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool:
        return True

    def release(self, holder: str, now: datetime) -> None:
        return None


class FlakyLink:
    """Stands in for the broker connection only to make it fail on purpose."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[list[str], protocol.PlayCommand | protocol.StopCommand]] = []

    def publish_command(self, zone_ids: list[str], command: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise LinkError("broker did not confirm within 5 s")
        self.sent.append((list(zone_ids), command))


def fire_with(settings: Settings, db: Database, link: FlakyLink, grace_s: float) -> Occurrence:
    """Fire an occurrence due now (its time is whole seconds, so up to 1 s already past)."""
    worker = build_worker(settings.model_copy(update={"misfire_grace_s": grace_s}), db=db)
    worker.link = link  # type: ignore[assignment]
    # Leading, without the term's broker connection and scheduler: fire() is under test.
    worker.elector = LeaderElector(GrantedLease(), SystemClock())
    assert worker.elector.tick()
    at = datetime.now(UTC).replace(microsecond=0)
    occurrence = Occurrence(schedule_id=add_schedule(db, at), scheduled_at=at)
    worker.fire(occurrence)
    return occurrence


def test_a_publish_that_fails_is_retried_within_the_grace(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    link = FlakyLink(failures=2)
    occurrence = fire_with(settings, db, link, grace_s=10.0)  # room for two retries
    assert [c.id for _, c in link.sent] == [occurrence.id]
    [broadcast] = broadcasts(client, occurrence.schedule_id)
    assert broadcast["status"] == "sent"


def test_a_publish_that_keeps_failing_is_recorded_missed_not_lost(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    occurrence = fire_with(settings, db, FlakyLink(failures=1000), grace_s=2.0)
    [broadcast] = broadcasts(client, occurrence.schedule_id)
    assert broadcast["id"] == occurrence.id and broadcast["status"] == "missed"


class RevocableLease:
    """Grants until revoked: the worker leads, then loses the lease on its next beat."""

    def __init__(self) -> None:
        self.granted = True

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool:
        return self.granted

    def release(self, holder: str, now: datetime) -> None:
        return None


def test_an_occurrence_a_deposed_leader_could_not_send_is_sent_by_the_next(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    link = FlakyLink(failures=1000)
    worker = build_worker(settings, db=db)
    worker.link = link  # type: ignore[assignment]
    lease = RevocableLease()
    worker.elector = LeaderElector(lease, SystemClock())
    assert worker.elector.tick()
    at = datetime.now(UTC).replace(microsecond=0)
    worker.source.set_last_checked(at)  # as its scheduler does when it takes the job
    occurrence = Occurrence(schedule_id=add_schedule(db, at), scheduled_at=at)
    firing = threading.Thread(target=worker.fire, args=(occurrence,))
    firing.start()
    wait_for(lambda: link.failures < 999, 10, "a failed publish and a retry")
    lease.granted = False  # another worker holds the lease now
    assert not worker.elector.tick()
    firing.join(10)
    assert not firing.is_alive()
    assert broadcasts(client, occurrence.schedule_id) == []  # neither sent nor missed here
    last_checked = worker.source.last_checked()
    assert last_checked is not None and last_checked < at  # handed back

    successor = build_worker(settings, db=db)
    successor.start(poll_s=0.2)
    try:
        wait_for(lambda: watcher.ids(), 20, "the successor's catch-up to send it")
    finally:
        successor.stop()
    assert watcher.ids() == [occurrence.id] and link.sent == []
    [broadcast] = broadcasts(client, occurrence.schedule_id)
    assert broadcast["status"] == "sent"
