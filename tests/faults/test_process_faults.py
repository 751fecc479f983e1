"""Process faults and durability, against real processes: a Mosquitto of the test's own, the
console worker as `python -m console worker`, bridges as `python -m firmware_bridge
--simulate`. Only the web API runs in the test's process (it is not what is under fault).

1. a speaker bridge killed with SIGKILL mid-playback;
2. a bridge killed with SIGKILL while its outbox fills (link down) and while it drains;
3. the console worker killed across scheduled occurrences (fired late once / not fired
   again / recorded missed);
4. the console database and the bridge outbox under kill -9 and a simulated power cut.

Every check is from the outside: the console's tables and API, retained MQTT topics, and
what a subscriber with the console's account hears. Convergence times are printed (`-s`)
and, when LOA_FAULT_REPORT names a file, kept in it (`report` of tests/faults/harness.py).
docs/reliability.md has the figures. Timings are never asserted beyond the stated bound (CONVERGE_S).

The module takes no `database_backend` parameter: it runs on SQLite only (the PostgreSQL
path of the same SQL is covered in tests/console).
"""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select, update
from werkzeug.serving import BaseWSGIServer, make_server

from console import services
from console.app import create_app
from console.broker import free_port
from console.db import Database, upgrade
from console.ingest import OFFLINE_REASON, Incoming, Ingest
from console.library import add_audio, import_upload
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    DeviceEvent,
    IngestCounter,
    Role,
    Schedule,
    User,
    WorkerLease,
    Zone,
    ZoneKind,
)
from console.models import Device as DeviceRow
from console.settings import Settings, write_instance_config
from device_profiles import protocol
from tests.conftest import Broker, wait_for
from tests.console.conftest import PASSWORDS, password_hash, token_for
from tests.faults import powercut
from tests.faults.harness import report, tone_wav
from tests.firmware_bridge.mqtt_tools import Listener

REPO = Path(__file__).resolve().parents[2]
CONVERGE_S = 30.0  # the stated bound: state is right this long after a fault ends, at most
START_S = 60.0  # a process's cold start on a loaded machine
COMMUNE = "xa-pf"
HAMLET = "thon-pf"


# --- figures -------------------------------------------------------------------------------------


def since(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


# --- processes -----------------------------------------------------------------------------------


class Lines:
    """The lines a process prints, read on a thread of its own (never blocks the test)."""

    def __init__(self, stream: io.BufferedReader) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: io.BufferedReader) -> None:
        for raw in stream:
            with self._lock:
                self.lines.append(raw.decode(errors="replace").strip())
        stream.close()

    def numbers(self) -> list[int]:
        with self._lock:
            return [int(line) for line in self.lines if line.isdigit()]

    def last_number(self) -> int:
        numbers = self.numbers()
        return numbers[-1] if numbers else 0

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


class Proc:
    """A child process of the test: its stderr in a log file, its stdout read line by line."""

    def __init__(self, name: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
            )
        assert self.popen.stdout is not None
        self.out = Lines(self.popen.stdout)  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the kernel's OOM killer would."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)
        self.out.join(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.out.join(10)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def read_numbers(proc: Proc, at_least: int, timeout_s: float = START_S) -> list[int]:
    """Wait until the process printed `at_least` numbers."""
    wait_for(
        lambda: len(proc.out.numbers()) >= at_least or not proc.alive(),
        timeout_s,
        f"{proc.name} to print {at_least} numbers",
    )
    assert len(proc.out.numbers()) >= at_least, proc.log_tail()
    return proc.out.numbers()


# --- the console of one test ---------------------------------------------------------------------


@dataclass
class Console:
    """One console instance: its broker, database, in-process web API on a real port (bridges
    download audio from it), and the worker and bridge processes the test starts."""

    root: Path
    broker: Broker
    settings: Settings
    db: Database
    client: FlaskClient
    procs: list[Proc] = field(default_factory=list)
    _tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    _n: int = 0

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._tokens:
            self._tokens[role] = token_for(self.client, role)
        return self._tokens[role]

    def _proc(self, name: str, args: list[str]) -> Proc:
        self._n += 1
        proc = Proc(f"{self._n:02d}-{name}", args, self.root)
        self.procs.append(proc)
        return proc

    def worker(self) -> Proc:
        return self._proc(
            "worker", ["-m", "console", "--instance", str(self.settings.instance_dir), "worker"]
        )

    def bridge(self, config: Path) -> Proc:
        return self._proc(
            f"bridge-{config.stem}",
            ["-m", "firmware_bridge", "--simulate", "--config", str(config)],
        )

    def alarms(self, name: str, config: Path, count: int, first: int = 1) -> Proc:
        """A bridge's link raising numbered call-point alarms (tests/faults/powercut.py)."""
        args = ["alarms", str(config), str(count), "--first", str(first)]
        return self._proc(name, ["-m", "tests.faults.powercut", *args])

    def zones(self) -> None:
        admin = self.headers("admin")
        for zone in (
            {"id": COMMUNE, "name": "Xã Thử Lỗi", "kind": "commune"},
            {"id": HAMLET, "name": "Thôn Thử", "kind": "hamlet", "parent_id": COMMUNE},
        ):
            resp = self.client.post("/api/v1/zones", json=zone, headers=admin)
            assert resp.status_code == 201, resp.get_json()

    def register(self, device_id: str, profile: str = "speaker-node") -> Path:
        """Register through the API; the bridge config file it gives, with a state dir here."""
        resp = self.client.post(
            "/api/v1/devices",
            json={"id": device_id, "name": device_id, "profile": profile, "zone_id": HAMLET},
            headers=self.headers("admin"),
        )
        assert resp.status_code == 201, resp.get_json()
        text = resp.get_json()["bridge_config"].replace(
            '"/var/lib/tieng-loa', f'"{self.root / device_id}'
        )
        path = self.root / f"{device_id}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def audio(self, seconds: float) -> str:
        """A tone of this length in the library (imported as an upload is); its sha256."""
        wav = tone_wav(self.root / f"tone-{seconds}.wav", seconds)
        meta = import_upload(self.settings, wav, wav.name)
        with self.db.session() as session:
            add_audio(session, meta, f"Tone {seconds} s", None)
        return meta.sha256

    def device(self, device_id: str) -> dict[str, Any]:
        resp = self.client.get(f"/api/v1/devices/{device_id}", headers=self.headers("viewer"))
        assert resp.status_code == 200
        return resp.get_json()  # type: ignore[no-any-return]

    def broadcast(self, broadcast_id: str) -> dict[str, Any] | None:
        resp = self.client.get(f"/api/v1/broadcasts/{broadcast_id}", headers=self.headers("viewer"))
        return resp.get_json() if resp.status_code == 200 else None  # type: ignore[no-any-return]

    def delivery(self, broadcast_id: str, device_id: str) -> dict[str, Any] | None:
        found = self.broadcast(broadcast_id)
        for d in found["deliveries"] if found else []:
            if d["device_id"] == device_id:
                return d  # type: ignore[no-any-return]
        return None

    def leader(self) -> str | None:
        """The holder of the worker lease, while it is valid."""
        with self.db.session() as session:
            row = session.get(WorkerLease, "console-worker")
            if row is None or row.expires_at <= datetime.now(UTC):
                return None
            return row.holder

    def lease_expires_at(self) -> datetime:
        with self.db.session() as session:
            row = session.get(WorkerLease, "console-worker")
            assert row is not None
            return row.expires_at

    def wait_leading(self, worker: Proc, timeout_s: float = START_S) -> None:
        wait_for(
            lambda: f":{worker.pid}:" in (self.leader() or "") or not worker.alive(),
            timeout_s,
            f"{worker.name} to lead",
        )
        assert worker.alive(), worker.log_tail()

    def counter(self, name: str) -> int:
        with self.db.session() as session:
            row = session.get(IngestCounter, name)
            return row.count if row else 0

    def close(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.kill()
            else:
                proc.out.join(5)


@pytest.fixture
def make_console(tmp_path: Path, own_broker: Broker) -> Iterator[Callable[..., Console]]:
    """make_console(**settings) -> a console of the test's own, with its zones."""
    made: list[tuple[Console, BaseWSGIServer, threading.Thread, Any]] = []

    def make(**overrides: Any) -> Console:
        root = tmp_path / "console"
        instance = root / "instance"
        instance.mkdir(parents=True)
        port = free_port()
        bs = own_broker.process.settings
        settings = write_instance_config(
            instance,
            {
                "secret_key": "k" * 32,
                "database_url": f"sqlite:///{instance / 'console.sqlite3'}",
                "media_dir": str(instance / "media"),
                "public_base_url": f"http://127.0.0.1:{port}",
                "site_timezone": "Asia/Ho_Chi_Minh",
                **overrides,
                "broker": {
                    "host": bs.host,
                    "port": bs.port,
                    "public_host": bs.host,
                    "admin_username": bs.admin_username,
                    "admin_password": bs.admin_password,
                    "console_username": own_broker.console_username,
                    "console_password": own_broker.console_password,
                    "data_dir": str(bs.data_dir),
                },
            },
        )
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        with db.session() as session:
            for role in Role:
                digest = password_hash(PASSWORDS[role.value])
                session.add(User(username=role.value, password_hash=digest, role=role))
        app = create_app(settings, db)
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        console = Console(root, own_broker, settings, db, app.test_client())
        made.append((console, server, thread, app))
        console.zones()
        return console

    yield make
    for console, server, thread, app in made:
        console.close()
        server.shutdown()
        thread.join(10)
        server.server_close()
        services.close(app)
        console.db.dispose()


def retained(broker: Broker, device_id: str) -> dict[str, Any]:
    """What a newcomer subscribing now is told: the retained availability and state."""
    listener = Listener(broker, f"{protocol.TOPIC_ROOT}/dev/{device_id}/+")
    try:
        got = wait_for(
            lambda: (
                listener.decoded(device_id, protocol.Channel.AVAILABILITY)
                and listener.decoded(device_id, protocol.Channel.STATE)
            ),
            10,
            "the retained availability and state",
        )
        assert got
        return {
            "availability": listener.decoded(device_id, protocol.Channel.AVAILABILITY)[-1],
            "state": listener.decoded(device_id, protocol.Channel.STATE)[-1],
        }
    finally:
        listener.close()


def ack_messages(
    listener: Listener, device_id: str, command_id: str, start: int = 0, stop: int | None = None
) -> dict[str, str]:
    """Ack message id -> status, of this device for one command, heard in [start, stop)."""
    topic = protocol.device_topic(device_id, protocol.Channel.ACK)
    with listener._lock:
        payloads = [p for t, p in listener.messages[start:stop] if t == topic]
    decoded = [protocol.decode(protocol.Ack, p) for p in payloads]
    return {a.id: a.status.value for a in decoded if a.command_id == command_id}


def acks(listener: Listener, device_id: str, command_id: str) -> list[str]:
    """The statuses acknowledged, one per ack message id: a copy the outbox sent again (it
    delivers at least once) is the same ack, not a second one."""
    return list(ack_messages(listener, device_id, command_id).values())


def heard(listener: Listener) -> int:
    with listener._lock:
        return len(listener.messages)


def last_after(listener: Listener, device_id: str, channel: protocol.Channel, after: int) -> Any:
    topic = protocol.device_topic(device_id, channel)
    with listener._lock:
        payloads = [p for t, p in listener.messages[after:] if t == topic and p]
    return protocol.decode_for_channel(channel, payloads[-1]) if payloads else None


# --- 1. a speaker bridge killed mid-playback ------------------------------------------------------


@pytest.mark.timeout(300)
def test_a_bridge_killed_mid_playback_is_offline_its_delivery_failed_and_it_never_replays(
    make_console: Callable[..., Console],
) -> None:
    console = make_console()
    config = console.register("loa-k1")
    sha = console.audio(5.0)
    listener = Listener(console.broker)
    command_id, mark = "", 0
    try:
        worker = console.worker()
        bridge = console.bridge(config)
        console.wait_leading(worker)
        wait_for(lambda: console.device("loa-k1")["online"], START_S, "the bridge online")

        resp = console.client.post(
            "/api/v1/broadcasts",
            json={"audio_sha256": sha, "zone_ids": [HAMLET], "priority": "live"},
            headers=console.headers("operator"),
        )
        assert resp.status_code == 201, resp.get_json()
        command_id = resp.get_json()["id"]
        wait_for(lambda: "started" in acks(listener, "loa-k1", command_id), CONVERGE_S, "started")
        playing = wait_for(
            lambda: (
                (s := last_after(listener, "loa-k1", protocol.Channel.STATE, 0))
                and s.playing
                and s.playing.command_id == command_id
                and s.amplifier_on
            ),
            CONVERGE_S,
            "the retained state to say playing, amplifier on",
        )
        assert playing
        time.sleep(1.0)  # well inside the 5 s tone
        assert bridge.alive()
        bridge.kill()
        killed = time.monotonic()

        wait_for(
            lambda: (
                (a := last_after(listener, "loa-k1", protocol.Channel.AVAILABILITY, 0))
                and a.state == "offline"
            ),
            CONVERGE_S,
            "the Last Will: offline",
        )
        will_s = since(killed)
        wait_for(lambda: not console.device("loa-k1")["online"], CONVERGE_S, "offline stored")
        offline_s = since(killed)
        delivery = wait_for(
            lambda: (
                (d := console.delivery(command_id, "loa-k1"))
                and d["status"] not in ("pending", "received", "started")
                and d
            ),
            CONVERGE_S,
            "the delivery to be settled",
        )
        settled_s = since(killed)
        assert delivery["status"] == "failed" and delivery["reason"] == OFFLINE_REASON

        # systemd's ExecStopPost after any end of the service: every output OFF.
        done = subprocess.run(
            [sys.executable, "-m", "firmware_bridge", "--simulate", "--safe-off", "--config",
             str(config)],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "loa-k1: outputs off on GPIO [17]" in done.stderr

        mark = heard(listener)
        restarted = time.monotonic()
        console.bridge(config)
        wait_for(
            lambda: (
                (a := last_after(listener, "loa-k1", protocol.Channel.AVAILABILITY, mark))
                and a.state == "online"
                and (s := last_after(listener, "loa-k1", protocol.Channel.STATE, mark))
                and s.playing is None
                and not s.amplifier_on
            ),
            START_S,
            "the restarted bridge: online, not playing, amplifier off",
        )
        back_s = since(restarted)
        wait_for(
            lambda: (
                (d := console.device("loa-k1"))["online"]
                and d["state"]["playing"] is None
                and not d["state"]["amplifier_on"]
            ),
            CONVERGE_S,
            "the console to show it online and idle",
        )
        converged_s = since(restarted)
        # Past the end the killed broadcast would have had: it must not have come back.
        play_end = datetime.fromisoformat(resp.get_json()["play_at"]) + timedelta(seconds=7)
        time.sleep(max(1.0, (play_end - datetime.now(UTC)).total_seconds()))
    finally:
        listener.close()
    listener_acks = acks(listener, "loa-k1", command_id)

    assert listener_acks.count("started") == 1, listener_acks
    assert listener_acks.count("received") == 1, listener_acks
    # Nothing new after the restart (an ack the outbox had not yet deleted may come again).
    before = ack_messages(listener, "loa-k1", command_id, stop=mark)
    assert set(ack_messages(listener, "loa-k1", command_id, start=mark)) <= set(before)
    final = console.delivery(command_id, "loa-k1")
    assert final is not None and final["status"] == "failed" and final["reason"] == OFFLINE_REASON
    now = retained(console.broker, "loa-k1")
    assert now["availability"].state == "online"
    assert now["state"].playing is None and now["state"].amplifier_on is False
    report(
        "bridge kill -9 mid-playback",
        will_heard_s=will_s, offline_stored_s=offline_s, delivery_settled_s=settled_s,
        restart_online_idle_s=back_s, console_converged_s=converged_s,
        started_acks=listener_acks.count("started"),
    )  # fmt: skip


# --- 2. a bridge killed while its outbox fills, and while it drains ------------------------------


@pytest.mark.timeout(300)
def test_a_bridge_killed_mid_outbox_delivers_every_accepted_alarm_once_in_order(
    make_console: Callable[..., Console],
) -> None:
    console = make_console()
    config = console.register("loa-k2", profile="fire-point-node")
    # The same device behind nothing: a port no broker listens on (the link is down).
    cut_off = console.root / "loa-k2-cut-off.toml"
    cut_off.write_text(
        re.sub(r"(?m)^port = \d+$", f"port = {free_port()}", config.read_text()),
        encoding="utf-8",
    )
    worker = console.worker()
    console.wait_leading(worker)

    # Link down: every alarm raised goes to the outbox; killed while it writes.
    first = console.alarms("alarms-down", cut_off, 100000)
    read_numbers(first, 300)
    first.kill()
    accepted_down = first.out.numbers()
    # Link up: the outbox drains (rows in flight) while new alarms are raised; killed again.
    second = console.alarms("alarms-up", config, 100000, first=100001)
    read_numbers(second, 200)
    second.kill()
    accepted_up = second.out.numbers()
    restarted = time.monotonic()
    third = console.alarms("alarms-drain", config, 0)

    def stored() -> list[tuple[float, str]]:
        with console.db.session() as session:
            rows = session.execute(
                select(DeviceEvent.value, DeviceEvent.message_id)
                .where(DeviceEvent.device_id == "loa-k2")
                .order_by(DeviceEvent.id)
            )
            return [(float(v or 0), m) for v, m in rows]

    wait_for(lambda: not third.alive(), CONVERGE_S, "the outbox to drain")
    drained_s = since(restarted)
    assert third.out.snapshot()[-1:] == ["done"], third.log_tail()
    wanted = set(accepted_down) | set(accepted_up)
    wait_for(
        lambda: wanted <= {int(v) for v, _ in stored()}, CONVERGE_S, "every accepted alarm stored"
    )
    converged_s = since(restarted)
    time.sleep(1.0)  # an alarm accepted but not printed before the kill may still come
    rows = stored()
    values = [int(v) for v, _ in rows]
    down = [v for v in values if v <= 100000]
    up = [v for v in values if v > 100000]
    # Exactly once each (by message id), in the order raised, the first run's before the second's.
    assert len({m for _, m in rows}) == len(rows)
    assert values == down + up
    assert down == list(range(1, len(down) + 1))
    assert up == list(range(100001, 100001 + len(up)))
    # At most one more than printed: killed between an alarm's commit and its print.
    assert len(down) - len(accepted_down) in (0, 1)
    assert len(up) - len(accepted_up) in (0, 1)
    report(
        "bridge kill -9 mid-outbox",
        accepted_link_down=len(accepted_down), accepted_link_up=len(accepted_up),
        stored=len(rows), duplicates_dropped_by_ingest=console.counter("duplicate_event"),
        outbox_drained_after_restart_s=drained_s, all_stored_after_restart_s=converged_s,
    )  # fmt: skip


# --- 3. the console worker killed across scheduled occurrences -----------------------------------


GRACE_S = 9.0  # this instance's misfire grace (the default is 60 s)


def add_schedule(db: Database, at: datetime, sha: str, name: str) -> int:
    """A once schedule straight into the database, as the API saves one (the API refuses a
    time in the past or in quiet hours; here the firing is under test)."""
    with db.session() as session:
        schedule = Schedule(
            name=name, audio_sha256=sha, rule={"kind": "once", "at": at.isoformat()},
            zone_ids=[HAMLET], priority="scheduled", volume_pct=None, gong=False, enabled=True,
            created_by=None,
        )  # fmt: skip
        session.add(schedule)
        session.flush()
        return schedule.id


def occurrence_id(schedule_id: int, at: datetime) -> str:
    return f"s{schedule_id}-{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def whole_second_after(when: datetime, seconds: float) -> datetime:
    return (when + timedelta(seconds=seconds + 1)).replace(microsecond=0)


@pytest.mark.timeout(300)
def test_a_worker_killed_across_occurrences_fires_each_at_most_once_and_records_the_missed(
    make_console: Callable[..., Console],
) -> None:
    console = make_console(misfire_grace_s=GRACE_S)
    config = console.register("loa-k3")
    sha = console.audio(3.0)
    commands = Listener(console.broker, f"{protocol.TOPIC_ROOT}/zone/+/cmd")
    listener = Listener(console.broker)
    try:
        w1 = console.worker()
        console.bridge(config)
        console.wait_leading(w1)
        wait_for(lambda: console.device("loa-k3")["online"], START_S, "the bridge online")

        # (b) fired by the first worker, which is killed just after it published.
        tb = whole_second_after(datetime.now(UTC), 3)
        b = occurrence_id(add_schedule(console.db, tb, sha, "B"), tb)
        wait_for(lambda: b in ids(commands), CONVERGE_S, "B published")
        w1.kill()
        killed = datetime.now(UTC)
        killed_t = time.monotonic()
        w2 = console.worker()  # restarted at once, as systemd's Restart= does
        expires = console.lease_expires_at()  # the dead worker's lease: nobody leads before
        # (c) due while no worker runs, and its grace over before one leads: missed.
        tc = whole_second_after(killed, 0)
        # (a) due while no worker runs, fired late (within its grace) once one leads.
        ta = max(whole_second_after(expires, -3), tc + timedelta(seconds=1))
        assert tc + timedelta(seconds=GRACE_S) < expires - timedelta(seconds=1), (
            "the first worker was killed too late for C to be missed"
        )
        c = occurrence_id(add_schedule(console.db, tc, sha, "C"), tc)
        a = occurrence_id(add_schedule(console.db, ta, sha, "A"), ta)

        console.wait_leading(w2, CONVERGE_S + START_S)
        lead_s = since(killed_t)
        wait_for(lambda: a in ids(commands), CONVERGE_S, "A published late")
        for occurrence in (a, b):
            wait_for(
                lambda o=occurrence: (
                    (d := console.delivery(o, "loa-k3"))  # type: ignore[misc]
                    and d["status"] == "finished"
                ),
                CONVERGE_S,
                f"{occurrence} played to the end and stored",
            )
        converged_s = since(killed_t)
        missed = console.broadcast(c)
        assert missed is not None and missed["status"] == "missed", missed
        time.sleep(3.0)  # time for a second publish, were there one
    finally:
        commands.close()
        listener.close()

    published = ids(commands)
    assert published == [b, a], published
    assert acks(listener, "loa-k3", b).count("started") == 1
    assert acks(listener, "loa-k3", a).count("started") == 1
    assert acks(listener, "loa-k3", c) == []
    fired_a = console.broadcast(a)
    assert fired_a is not None and fired_a["status"] == "sent"
    late_s = (
        datetime.fromisoformat(fired_a["fired_at"])
        - datetime.fromisoformat(fired_a["scheduled_for"])
    ).total_seconds()
    assert 0 < late_s <= GRACE_S
    assert console.broadcast(b)["summary"] == {"finished": 1}  # type: ignore[index]
    assert console.broadcast(c)["summary"] == {}  # type: ignore[index]
    report(
        "console worker kill -9 across occurrences",
        lease_left_after_kill_s=round((expires - killed).total_seconds(), 2),
        new_worker_leads_after_s=lead_s, a_fired_late_by_s=round(late_s, 2),
        a_and_b_finished_stored_after_s=converged_s, published=len(published),
    )  # fmt: skip


def ids(commands: Listener) -> list[str]:
    with commands._lock:
        payloads = [p for _, p in commands.messages]
    return [protocol.decode_command(p).id for p in payloads]


# --- 4a. the console database: the worker killed while it ingests a stream ------------------------


class Publisher:
    """A device publishing numbered events (QoS 1) at `rate` per second. An event the broker
    confirmed (PUBACK) is the console's to keep: from then on, losing it is the console's fault."""

    def __init__(self, broker: Broker, device_id: str, password: str, rate: float) -> None:
        self.device_id = device_id
        self.rate = rate
        self.sent: list[tuple[str, mqtt.MQTTMessageInfo]] = []
        self._stop = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{device_id}-pub")
        client.username_pw_set(device_id, password)
        client.max_inflight_messages_set(200)
        client.connect(broker.host, broker.port)
        client.loop_start()
        self.client = client
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        topic = protocol.device_topic(self.device_id, protocol.Channel.EVENT)
        started = time.monotonic()
        while not self._stop.is_set():
            number = len(self.sent) + 1
            due = started + number / self.rate
            if time.monotonic() < due:
                self._stop.wait(due - time.monotonic())
                continue
            alarm = number % 10 == 0  # one in ten a call point, the rest mains trouble
            event = protocol.Event(
                id=f"k4-{number:07d}", ts=int(time.time() * 1000), device_id=self.device_id,
                signal_class=protocol.SignalClass.ALARM if alarm else protocol.SignalClass.TROUBLE,
                signal="call_point" if alarm else "mains_lost", active=number % 2 == 0,
                value=float(number),
            )  # fmt: skip
            self.sent.append((event.id, self.client.publish(topic, protocol.encode(event), qos=1)))

    def finish(self, timeout_s: float) -> set[str]:
        """Stop publishing; the ids of all events sent, once the broker confirmed each."""
        self._stop.set()
        self._thread.join(10)
        wait_for(lambda: all(i.is_published() for _, i in self.sent), timeout_s, "every PUBACK")
        return {event_id for event_id, _ in self.sent}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)


def integrity(db_path: Path) -> tuple[list[str], str]:
    conn = sqlite3.connect(db_path)
    try:
        check = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        return check, str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


def expire_lease(db: Database) -> None:
    """The dead worker's lease runs out now (instead of LEASE_S later): only time is saved."""
    with db.session() as session:
        session.execute(
            update(WorkerLease).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def device_password(config: Path) -> str:
    return str(tomllib.loads(config.read_text())["mqtt"]["password"])


def run_worker_kills(make_console: Callable[..., Console], kills: int, rate: float) -> None:
    console = make_console()
    config = console.register("loa-k4")
    db_path = console.settings.instance_dir / "console.sqlite3"
    worker = console.worker()
    console.wait_leading(worker)
    publisher = Publisher(console.broker, "loa-k4", device_password(config), rate)
    rng = random.Random()
    checks: list[str] = []
    restarts: list[float] = []
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))  # ingesting: killed at a random moment
            worker.kill()
            check, mode = integrity(db_path)
            assert check == ["ok"] and mode == "wal", (check, mode)
            checks.append(check[0])
            expire_lease(console.db)
            t0 = time.monotonic()
            worker = console.worker()
            console.wait_leading(worker)
            restarts.append(since(t0))
        acked = publisher.finish(CONVERGE_S)
        done = time.monotonic()

        def stored() -> set[str]:
            with console.db.session() as session:
                return set(
                    session.scalars(
                        select(DeviceEvent.message_id).where(DeviceEvent.device_id == "loa-k4")
                    )
                )

        deadline = time.monotonic() + CONVERGE_S
        while not acked <= stored() and time.monotonic() < deadline:
            time.sleep(0.2)
        converged_s = since(done)
        with console.db.session() as session:
            rows = session.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(DeviceEvent.device_id == "loa-k4")
            )
        lost = sorted(acked - stored())
    finally:
        publisher.close()
    assert not lost, f"{len(lost)} of {len(acked)} confirmed events lost, e.g. {lost[:5]}"
    assert rows == len(stored()) == len(acked)  # each once
    assert console.counter("store_failed") == 0 and console.counter("dropped_queue_full") == 0
    report(
        "console worker kill -9 while ingesting",
        kills=kills, events_confirmed=len(acked), events_stored=rows, lost=len(lost),
        redelivered_duplicates=console.counter("duplicate_event"),
        integrity_checks_ok=len(checks), worker_restart_to_lead_s=max(restarts),
        all_stored_after_stream_end_s=converged_s,
    )  # fmt: skip


@pytest.mark.timeout(300)
def test_the_worker_killed_while_ingesting_loses_no_confirmed_event_and_the_database_is_sound(
    make_console: Callable[..., Console],
) -> None:
    run_worker_kills(make_console, kills=6, rate=300.0)


@pytest.mark.soak
@pytest.mark.timeout(1200)
def test_soak_the_worker_killed_forty_times_while_ingesting(
    make_console: Callable[..., Console],
) -> None:
    run_worker_kills(make_console, kills=40, rate=600.0)


# --- 4b. power cut: the console database and the bridge outbox -----------------------------------


@dataclass(frozen=True)
class Target:
    """A writer process and how to read back what a disk image of it holds."""

    name: str
    file: str
    numbers_sql: str


INGEST_BATCH = 20
TARGETS = {
    "console-database": Target(
        "console-database",
        "console.sqlite3",
        "SELECT CAST(value AS INTEGER) FROM device_events WHERE device_id = 'loa-pc' ORDER BY id",
    ),
    "bridge-outbox": Target(
        "bridge-outbox",
        "outbox.sqlite3",
        "SELECT CAST(CAST(payload AS TEXT) AS INTEGER) FROM outbox ORDER BY seq",
    ),
}


def start_writer(target: Target, root: Path) -> tuple[Proc, Path]:
    db_path = root / target.file
    if target.name == "console-database":
        url = f"sqlite:///{db_path}"
        upgrade(url)
        db = Database(url)
        with db.session() as session:
            session.add(Zone(id="xa-pc", name="Xã", kind=ZoneKind.COMMUNE, parent_id=None))
            session.flush()
            session.add(
                DeviceRow(id="loa-pc", name="loa-pc", profile="fire-point-node", zone_id="xa-pc",
                          secret_sha256="0" * 64)
            )  # fmt: skip
        db.dispose()
        args = ["ingest", url, "loa-pc", str(INGEST_BATCH)]
    else:
        args = ["outbox", str(db_path)]
    proc = Proc(f"writer-{target.name}", ["-m", "tests.faults.powercut", *args], root)
    return proc, db_path


def committed_prefix(numbers: list[int], per_commit: int) -> int:
    """m when the image holds exactly transactions 1..m (each whole); fails otherwise."""
    m = numbers[-1] if numbers else 0
    expected = [n for n in range(1, m + 1) for _ in range(per_commit)]
    assert numbers == expected, f"not a whole prefix of transactions: ...{numbers[-8:]}"
    return m


def run_powercut(target: Target, root: Path, snapshots: int, variants: int) -> None:
    per_commit = INGEST_BATCH if target.name == "console-database" else 1
    rng = random.Random()
    writer, db_path = start_writer(target, root)
    images: list[tuple[powercut.Image, int]] = []
    try:
        wait_for(lambda: writer.out.snapshot() or not writer.alive(), START_S, "the writer")
        assert writer.out.snapshot()[0] == "synchronous=2", (
            writer.out.snapshot(),
            writer.log_tail(),
        )
        read_numbers(writer, 5)
        writing = time.monotonic()
        for k in range(snapshots):
            time.sleep(rng.uniform(0.05, 0.4))
            writer.freeze()  # the disk as it is at this instant
            time.sleep(0.1)  # lets the reader take every line printed before
            reported = writer.out.last_number()
            images.append((powercut.take_image(db_path, root / f"image-{k}"), reported))
            writer.thaw()
        writer.kill()
        commits_per_s = round(writer.out.last_number() / (time.monotonic() - writing))
        images.append(
            (powercut.take_image(db_path, root / "image-killed"), writer.out.last_number())
        )
    finally:
        if writer.alive():
            writer.thaw()
            writer.kill()
    check, mode = integrity(db_path)  # the real file, after the kill -9
    assert check == ["ok"] and mode == "wal"

    opened = 0
    without_log = []
    for n, (image, reported) in enumerate(images):
        scratch = root / f"open-{n}"
        # As a kill -9 leaves it (the page cache reaches the disk): everything committed.
        whole = powercut.torn(image, scratch / "whole", image.wal_size(), 0, rng)
        got = powercut.open_image(whole, target.numbers_sql)
        assert got.integrity == ["ok"] and got.journal_mode == "wal"
        assert committed_prefix(got.numbers, per_commit) >= reported
        opened += 1

        # As a power cut leaves it: what was synced is there (every commit syncs the log),
        # anything written after it is lost or half written (garbage).
        def holds(im: powercut.Image, reported: int = reported) -> bool:
            numbers = powercut.open_image(im, target.numbers_sql).numbers
            return reported == 0 or (bool(numbers) and numbers[-1] >= reported)

        durable = powercut.durable_cut(image, holds, scratch)
        for v in range(variants):
            cut = rng.randint(durable, max(durable, image.wal_size()))
            garbage = rng.choice([0, 17, 512, 4096])
            cut_image = powercut.torn(image, scratch / f"cut-{v}", cut, garbage, rng)
            got = powercut.open_image(cut_image, target.numbers_sql)
            assert got.integrity == ["ok"], got.integrity
            kept = committed_prefix(got.numbers, per_commit)
            assert kept >= reported, (kept, reported, cut, durable, image.wal_size())
            opened += 1
        # Had commits not synced the log (synchronous=NORMAL syncs it only at checkpoints),
        # a power cut could lose all of it: still sound, but committed transactions gone.
        bare = powercut.torn(image, scratch / "no-log", powercut.WAL_HEADER_BYTES, 0, rng)
        got = powercut.open_image(bare, target.numbers_sql)
        assert got.integrity == ["ok"]
        without_log.append(reported - min(reported, committed_prefix(got.numbers, per_commit)))
        opened += 1
        shutil.rmtree(scratch)
    report(
        f"power cut: {target.name}",
        images=len(images), images_opened=opened, transactions_committed=images[-1][1],
        commits_per_s=commits_per_s, all_sound_and_complete=True,
        unsynced_log_would_lose_up_to=max(without_log),
    )  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", list(TARGETS))
def test_a_power_cut_never_corrupts_and_keeps_every_committed_transaction(
    target: str, tmp_path: Path
) -> None:
    run_powercut(TARGETS[target], tmp_path, snapshots=6, variants=3)


@pytest.mark.soak
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("target", list(TARGETS))
def test_soak_a_power_cut_at_many_instants(target: str, tmp_path: Path) -> None:
    run_powercut(TARGETS[target], tmp_path, snapshots=60, variants=10)


# --- the ingest rules the faults above rely on, without processes ----------------------------------


def seeded_database(root: Path) -> Database:
    """A migrated database with one speaker and one broadcast it received and started."""
    url = f"sqlite:///{root / 'rules.sqlite3'}"
    upgrade(url)
    db = Database(url)
    now = datetime.now(UTC)
    with db.session() as session:
        session.add(Zone(id="xa-r", name="Xã", kind=ZoneKind.COMMUNE, parent_id=None))
        session.add(AudioFile(sha256="a" * 64, name="a", original_name="a.mp3", duration_ms=5000,
                              size_bytes=1, mime="audio/mpeg"))  # fmt: skip
        session.flush()
        session.add(DeviceRow(id="loa-r", name="r", profile="speaker-node", zone_id="xa-r",
                              secret_sha256="0" * 64))  # fmt: skip
        for broadcast_id in ("b-killed", "b-cut-off"):
            session.add(Broadcast(id=broadcast_id, audio_sha256="a" * 64, priority="live",
                                  zone_ids=["xa-r"], status=BroadcastStatus.SENT))  # fmt: skip
            session.flush()
            session.add(Delivery(broadcast_id=broadcast_id, device_id="loa-r",
                                 status=DeliveryStatus.PENDING, updated_at=now))  # fmt: skip
    return db


def uplink(channel: protocol.Channel, message: protocol.Message) -> Incoming:
    return Incoming(
        protocol.device_topic("loa-r", channel), protocol.encode(message), datetime.now(UTC)
    )


def ack_of(command_id: str, status: str) -> Incoming:
    message = protocol.Ack(id=protocol.new_message_id(), ts=int(time.time() * 1000),
                           device_id="loa-r", command_id=command_id, status=status)  # fmt: skip
    return uplink(protocol.Channel.ACK, message)


def availability_of(state: str) -> Incoming:
    message = protocol.Availability(id=protocol.new_message_id(), ts=int(time.time() * 1000),
                                    device_id="loa-r", state=state)  # fmt: skip
    return uplink(protocol.Channel.AVAILABILITY, message)


def test_offline_fails_what_was_playing_until_the_device_says_how_it_ended(tmp_path: Path) -> None:
    db = seeded_database(tmp_path)
    ingest = Ingest(db)

    def status(broadcast_id: str) -> tuple[str, str | None]:
        with db.session() as session:
            row = session.scalar(select(Delivery).where(Delivery.broadcast_id == broadcast_id))
            assert row is not None
            return row.status.value, row.reason

    try:
        # Both started; the Last Will arrives in the same batch as the last ack before it.
        ingest.handle_batch([ack_of("b-killed", "received"), ack_of("b-cut-off", "received")])
        ingest.handle_batch(
            [
                ack_of("b-killed", "started"),
                ack_of("b-cut-off", "started"),
                availability_of("offline"),
            ]
        )
        assert status("b-killed") == status("b-cut-off") == ("failed", OFFLINE_REASON)
        # A late 'started' from the outbox does not reopen it; the device's own end replaces it
        # (it kept playing through a link cut), as any final ack would.
        ingest.handle_batch([availability_of("online"), ack_of("b-killed", "started")])
        ingest.handle_batch([ack_of("b-cut-off", "finished")])
        assert status("b-killed") == ("failed", OFFLINE_REASON)
        assert status("b-cut-off") == ("finished", None)
        # Messages are confirmed to the broker once stored, in the order they came.
        confirmed: list[int] = []
        ingest.start()
        for n in range(3):
            ingest.enqueue(
                ack_of("b-killed", "finished").topic, b"not json", lambda n=n: confirmed.append(n)
            )
        ingest.stop()
        assert confirmed == [0, 1, 2]
    finally:
        db.dispose()
