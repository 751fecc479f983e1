"""The leader lease: one console worker publishes at a time; a standby takes over when the
leader stops or dies; a leader that cannot renew steps down before its lease ends.

The lease alone is tested on the real database (SQLite and PostgreSQL) with an injected
clock; the workers end to end with the real broker, a killed worker process included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from console.db import Database
from console.lease import LEASE_S, MARGIN_S, RENEW_S, LeaderElector, Lease
from console.models import WorkerLease
from console.settings import Settings, write_instance_config
from console.worker import DbScheduleSource, Worker, build_worker
from scheduler import FakeClock, SystemClock
from tests.conftest import Broker, wait_for
from tests.console.conftest import token_for
from tests.console.test_worker_firing import ZONE, ZoneWatcher, add_schedule, broadcasts

T0 = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


class SwitchableLease:
    """The real lease, until `away` is set: then the database "cannot be reached"."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.away = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.away:
            raise OperationalError("UPDATE worker_leases", {}, Exception("connection refused"))

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool:
        self._check()
        return self.lease.acquire(holder, now, duration_s)

    def release(self, holder: str, now: datetime) -> None:
        self._check()
        self.lease.release(holder, now)


class HangingLease:
    """Answers once, then every later call hangs until `unblock` (a database that hangs)."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.unblock = threading.Event()
        self.answered = 0

    def acquire(self, holder: str, now: datetime, duration_s: float) -> bool:
        if self.answered:
            self.unblock.wait(30)
        self.answered += 1
        return self.lease.acquire(holder, now, duration_s)

    def release(self, holder: str, now: datetime) -> None:
        self.lease.release(holder, now)


class Transitions:
    """What an elector told its worker, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def elected(self) -> None:
        self.log.append("elected")

    def deposed(self) -> None:
        self.log.append("deposed")


def elector(
    lease: Any, clock: FakeClock, name: str, seen: Transitions | None = None
) -> LeaderElector:
    seen = seen or Transitions()
    return LeaderElector(
        lease, clock, holder=name, on_elected=seen.elected, on_deposed=seen.deposed
    )


# --- the lease on the database, with an injected clock ----------------------------------------


def test_one_holder_at_a_time_until_its_lease_expires(db: Database) -> None:
    lease = Lease(db)
    assert lease.acquire("a", T0, LEASE_S)
    assert not lease.acquire("b", T0, LEASE_S)
    assert lease.acquire("a", T0 + timedelta(seconds=5), LEASE_S)  # renewed: until T0+20
    assert not lease.acquire("b", T0 + timedelta(seconds=19.9), LEASE_S)
    assert lease.holder(T0 + timedelta(seconds=19.9)) == "a"
    later = T0 + timedelta(seconds=20.001)
    assert lease.holder(later) is None
    assert lease.acquire("b", later, LEASE_S)
    assert not lease.acquire("a", later, LEASE_S)  # the old leader finds it taken
    assert lease.holder(later) == "b"


def test_a_released_lease_is_taken_at_once(db: Database) -> None:
    lease = Lease(db)
    assert lease.acquire("a", T0, LEASE_S)
    lease.release("b", T0)  # not the holder: changes nothing
    assert not lease.acquire("b", T0, LEASE_S)
    lease.release("a", T0)
    assert lease.acquire("b", T0, LEASE_S)


def test_workers_taking_the_first_lease_at_once_have_one_winner(db: Database) -> None:
    start = threading.Barrier(6)
    won: list[str] = []

    def take(name: str) -> None:
        start.wait()
        if Lease(db).acquire(name, T0, LEASE_S):
            won.append(name)

    threads = [threading.Thread(target=take, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert Lease(db).holder(T0) == won[0]


# --- the elector: when to lead, when to step down ---------------------------------------------


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_ends(db: Database) -> None:
    clock = FakeClock(T0)
    flaky = SwitchableLease(Lease(db))
    seen_a, seen_b = Transitions(), Transitions()
    a = elector(flaky, clock, "a", seen_a)
    b = elector(Lease(db), clock, "b", seen_b)
    assert a.tick() and not b.tick()
    assert seen_a.log == ["elected"] and seen_b.log == []

    flaky.away = True  # the database becomes unreachable for a
    step_down = T0 + timedelta(seconds=LEASE_S - MARGIN_S)
    while clock.advance(RENEW_S) < step_down - timedelta(seconds=0.1):
        assert a.tick()  # renewals missed: its lease (until T0+15) still has room
        assert not b.tick()
    clock.set(step_down - timedelta(seconds=0.1))
    assert a.is_leader()
    clock.set(step_down)  # MARGIN_S before its lease ends
    assert not a.is_leader()  # publishers see it at once, before the elector's next beat
    assert not a.tick()
    assert seen_a.log == ["elected", "deposed"]

    assert not b.tick()  # a's lease has not ended yet: nobody leads for a moment
    clock.set(T0 + timedelta(seconds=LEASE_S + 0.001))
    assert b.tick()
    assert seen_b.log == ["elected"]

    flaky.away = False  # a's database is back: the lease is b's now
    clock.advance(RENEW_S)
    assert not a.tick() and b.tick()
    assert seen_a.log == ["elected", "deposed"]


def test_a_leader_that_finds_another_holder_steps_down_at_once(db: Database) -> None:
    clock = FakeClock(T0)
    seen = Transitions()
    a = elector(Lease(db), clock, "a", seen)
    assert a.tick()
    with db.session() as session:  # as if a's clock had run far behind the others'
        session.execute(update(WorkerLease).values(holder="b"))
    clock.advance(RENEW_S)
    assert not a.tick()
    assert seen.log == ["elected", "deposed"]


def test_a_worker_that_cannot_start_leading_gives_the_lease_up(db: Database) -> None:
    clock = FakeClock(T0)

    def broker_away() -> None:
        raise ConnectionRefusedError("no broker")

    a = LeaderElector(Lease(db), clock, holder="a", on_elected=broker_away)
    assert not a.tick()
    assert Lease(db).holder(T0) is None  # released: another worker may try at once
    assert elector(Lease(db), clock, "b").tick()


def test_the_renewal_must_leave_a_margin_before_the_lease_ends(db: Database) -> None:
    for lease_s, renew_s, margin_s in ((15, 8, 7), (15, 0, 3), (10, -1, 3), (15, 2, 0)):
        with pytest.raises(ValueError, match="renew_s"):
            LeaderElector(
                Lease(db), FakeClock(T0), lease_s=lease_s, renew_s=renew_s, margin_s=margin_s
            )


def test_a_leader_whose_database_hangs_steps_down_in_time(db: Database) -> None:
    hanging = HangingLease(Lease(db))
    seen = Transitions()
    leader = LeaderElector(
        hanging,
        SystemClock(),
        holder="a",
        lease_s=1.0,
        renew_s=0.25,
        margin_s=0.25,
        on_elected=seen.elected,
        on_deposed=seen.deposed,
    )
    stop = threading.Event()
    thread = threading.Thread(target=leader.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: seen.log == ["elected"], 10, "the first term")
        # The second beat's renewal never answers: still, the leader steps down.
        wait_for(lambda: seen.log == ["elected", "deposed"], 10, "the step-down")
        assert not leader.is_leader()
    finally:
        stop.set()
        hanging.unblock.set()
        thread.join(10)


# --- workers end to end: the real broker, scheduler and database ------------------------------


class LeaderSampler:
    """Samples both workers' is_leader() until closed: it must never see two leaders."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.both = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            leaders = sum(w.is_leader() for w in self.workers)
            self.samples += 1
            self.both += leaders > 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def watcher(client: FlaskClient, mqtt_broker: Broker) -> Iterator[ZoneWatcher]:
    """The zone the schedules target, and what is published to it."""
    admin = token_for(client, "admin")
    assert client.post("/api/v1/zones", json=ZONE, headers=admin).status_code == 201
    zone_watcher = ZoneWatcher(mqtt_broker, ZONE["id"])
    yield zone_watcher
    zone_watcher.close()


def occurrence_id(schedule_id: int, at: datetime) -> str:
    return f"s{schedule_id}-{at:%Y%m%dT%H%M%SZ}"


def soon(seconds: float) -> datetime:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0)


def test_a_stopped_leader_hands_over_at_once_and_two_never_both_lead(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    a = build_worker(settings, db=db, lease_s=2.0, renew_s=0.5, margin_s=0.5)
    b = build_worker(settings, db=db, lease_s=2.0, renew_s=0.5, margin_s=0.5)
    a.start(poll_s=0.2)
    b.start(poll_s=0.2)
    sampler = LeaderSampler([a, b])
    try:
        assert a.is_leader() and not b.is_leader()
        at_a = soon(3)
        first = add_schedule(db, at_a)
        wait_for(lambda: watcher.ids(), 20, "the leader's occurrence")
        a.stop()
        wait_for(b.is_leader, 10, "the standby to lead")
        assert Lease(db).holder(datetime.now(UTC)) == b.elector.holder
        at_b = soon(2)
        second = add_schedule(db, at_b)
        wait_for(lambda: len(watcher.ids()) >= 2, 20, "the new leader's occurrence")
        time.sleep(1)  # time for a second publish, were there one
    finally:
        sampler.close()
        a.stop()
        b.stop()
    assert sampler.samples > 100 and sampler.both == 0
    assert watcher.ids() == [occurrence_id(first, at_a), occurrence_id(second, at_b)]
    sent = broadcasts(client, first) + broadcasts(client, second)
    assert [row["status"] for row in sent] == ["sent", "sent"]


def test_a_leader_cut_off_from_the_database_stops_publishing_and_the_standby_takes_over(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher
) -> None:
    a = build_worker(settings, db=db, lease_s=2.0, renew_s=0.5, margin_s=0.5)
    b = build_worker(settings, db=db, lease_s=2.0, renew_s=0.5, margin_s=0.5)
    a.start(poll_s=0.2)
    b.start(poll_s=0.2)
    sampler = LeaderSampler([a, b])
    try:
        assert a.is_leader()
        cut_off = SwitchableLease(Lease(db))
        cut_off.away = True
        a.elector.lease = cut_off  # its lease renewals now fail
        wait_for(b.is_leader, 15, "the standby to lead")
        assert not a.is_leader()
        assert not a.link.connected.is_set() and not a.scheduler.running  # all stopped
        at = soon(2)
        schedule_id = add_schedule(db, at)
        wait_for(lambda: watcher.ids(), 20, "the occurrence")
        time.sleep(1)
    finally:
        sampler.close()
        a.stop()
        b.stop()
    assert sampler.both == 0
    assert watcher.ids() == [occurrence_id(schedule_id, at)]


def write_instance(directory: Path, settings: Settings) -> Path:
    """A config.toml for a worker process of its own, on the same database and broker."""
    directory.mkdir()
    broker = settings.broker
    write_instance_config(
        directory,
        {
            "secret_key": settings.secret_key.get_secret_value(),
            "database_url": settings.database_url,
            "media_dir": str(settings.media_dir),
            "public_base_url": settings.public_base_url,
            "site_timezone": settings.site_timezone,
            "broker": {
                "host": broker.host,
                "port": broker.port,
                "public_host": broker.public_host,
                "admin_username": broker.admin_username,
                "admin_password": broker.admin_password.get_secret_value(),
                "console_username": broker.console_username,
                "console_password": broker.console_password.get_secret_value(),
                "data_dir": str(broker.data_dir),
            },
        },
    )
    return directory


def test_a_standby_takes_over_from_a_killed_leader_and_fires_what_fell_due(
    client: FlaskClient, settings: Settings, db: Database, watcher: ZoneWatcher, tmp_path: Path
) -> None:
    instance = write_instance(tmp_path / "leader", settings)
    with (tmp_path / "leader.log").open("wb") as log:
        leader = subprocess.Popen(
            [sys.executable, "-m", "console", "--instance", str(instance), "worker"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        )
    standby: Worker | None = None
    try:
        holder = wait_for(
            lambda: Lease(db).holder(datetime.now(UTC)), 60, "the worker process to lead"
        )
        assert f":{leader.pid}:" in holder
        # Its scheduler has run: the database knows up to when all was accounted for.
        wait_for(DbScheduleSource(db).last_checked, 30, "the leader's scheduler to start")
        standby = build_worker(settings, db=db)  # the default lease and beat
        standby.start(poll_s=0.2)
        assert not standby.is_leader()
        leader.send_signal(signal.SIGKILL)  # no release: its lease must run out
        leader.wait(10)
        at = soon(2)  # due while nobody leads
        schedule_id = add_schedule(db, at)
        wait_for(standby.is_leader, LEASE_S + 3 * RENEW_S, "the standby to take over")
        wait_for(lambda: watcher.ids(), 20, "the occurrence, fired late within the grace")
        time.sleep(1)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait(10)
        if standby is not None:
            standby.stop()
    assert watcher.ids() == [occurrence_id(schedule_id, at)]
    [broadcast] = broadcasts(client, schedule_id)
    assert broadcast["status"] == "sent"
