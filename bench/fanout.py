"""Emergency fan-out: N = 100 and 1,000 simulated bridges (and one, as the floor) on a real,
authenticated Mosquitto.

Time from the emergency API call (POST /api/v1/broadcasts) to each bridge's 'received' and
'started' acknowledgements, and from POST /api/v1/stop to each 'stopped' one, beside the raw
broker fan-out of one message to as many plain paho subscribers, in the same run.

Also the harness of the benchmarks that need a running commune (bench/footprint.py): a console
instance (broker, web and worker, each its own process, as `make run` starts them), devices
provisioned in bulk, and simulated bridges in fleet processes of their own.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from bench.report import Comparison, Figure, Section
from console.accounts import create_user
from console.broker import (
    BrokerProcess,
    DynsecAdmin,
    device_role,
    device_role_acls,
    free_port,
    zone_role,
)
from console.db import Database, upgrade
from console.device_config import bump_config_revision
from console.devrun import broker_settings
from console.models import Delivery, DeliveryStatus, Device, Role
from console.provisioning import DEFAULT_STATE_DIR, render_bridge_config
from console.security import new_secret, secret_digest
from console.settings import Settings, write_new_instance
from console.zones import ancestors_of, zone_parents
from device_profiles import load_profile, protocol

ROOT = Path(__file__).resolve().parents[1]
# Each size measured, and the zone that holds exactly the first N devices. N = 1 is the floor:
# the whole path for one bridge, with no other bridge queueing for the CPU.
ZONE_OF_SIZE = {1: "cum-a", 100: "thon-a", 1000: "xa-bench"}
SIZES = tuple(ZONE_OF_SIZE)
ZONE_TREE = [("xa-bench", "commune", None), ("thon-a", "hamlet", "xa-bench"),
             ("cum-a", "cluster", "thon-a"), ("thon-b", "hamlet", "xa-bench")]  # fmt: skip
# Bridges per fleet process. paho's network loop waits with select(), which cannot watch a
# descriptor numbered 1,024 or more, and a speaker bridge holds six (its outbox database, WAL
# and shared memory; paho's socket and its wake-up socket pair): past ~165 bridges in one
# process the newest ones never connect. Fewer per process also costs less CPU: 4 threads a
# bridge hand one GIL around (see the notes).
SHARD_SIZE = 25
FLEET_NICE = 19  # the console and broker have a server of their own in production
API_SAMPLE = 2  # devices registered through the API, at the start and again at the end
PROVISION_BATCH = 50  # devices per dynamic-security message when provisioning in bulk
TONE_S = 20  # the emergency audio; STOP always arrives while it plays
RAW_TOPIC = protocol.zone_command_topic("raw-baseline")
EMERGENCY_RETRIES = 3
LARGE_RUNS = 2  # runs at the largest size (at most `repeat`), to stay within 6 minutes
_AMPLIFIER = load_profile("speaker-node").amplifier
COOL_DOWN_MS = _AMPLIFIER.cool_down_ms if _AMPLIFIER else 5000
PROFILE_HZ = 100
PROFILE_SIZE = 100


# --- processes -------------------------------------------------------------------------------


def spawn(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child in its own session, output to a log file (the repository as working dir)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 30.0) -> None:
    """SIGTERM to all, then SIGKILL to whatever is still there after the timeout."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def cpu_split_s(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used (utime, stime of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU time a process has used."""
    return sum(cpu_split_s(pid))


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> None:
    """Poll until the predicate holds; RuntimeError after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q = 100 is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


# --- the console -----------------------------------------------------------------------------


@dataclass
class Console:
    """A console instance in a temporary directory: broker, web (and worker) processes."""

    settings: Settings
    db: Database
    broker: BrokerProcess
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]
    http: requests.Session = field(default_factory=requests.Session)
    token: str = ""

    @property
    def base_url(self) -> str:
        return self.settings.public_base_url

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.base_url}/api/v1{path}"
        return self.http.request(method, url, headers=headers, timeout=120, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A call that must succeed: RuntimeError (with the web log's tail on a 5xx) if not."""
        return self.check(self.call(method, path, **kwargs), f"{method} {path}")

    def check(self, resp: requests.Response, what: str) -> requests.Response:
        if resp.status_code >= 400:
            log = self.log_text("web")[-3000:] if resp.status_code >= 500 else ""
            raise RuntimeError(f"{what}: {resp.status_code} {resp.text[:300]}\n{log}")
        return resp

    def admin(self) -> DynsecAdmin:
        b = self.settings.broker
        return DynsecAdmin(b.host, b.port, b.admin_username, b.admin_password.get_secret_value())

    def log_text(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def console_command(settings: Settings, command: str) -> list[str]:
    return [sys.executable, "-m", "console", "--instance", str(settings.instance_dir), command]


@contextmanager
def running_console(work: Path, *, worker: bool) -> Iterator[Console]:
    """Settings with fresh secrets, a migrated database, an admin, the broker with the
    console's account, and `python -m console web` (and `worker`) as separate processes."""
    settings = write_new_instance(work / "instance", broker_port=free_port(), web_port=free_port())
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    password = secrets.token_urlsafe(16)
    with db.session() as session:
        create_user(session, "bench", password, Role.ADMIN)
    broker = BrokerProcess(broker_settings(settings))
    console = Console(settings, db, broker, work / "logs", {})
    console.logs.mkdir()
    try:
        broker.start()
        b = settings.broker
        with console.admin() as admin:
            admin.provision_console(b.console_username, b.console_password.get_secret_value())
        for name in ("web", "worker") if worker else ("web",):
            console.processes[name] = spawn(
                console_command(settings, name), console.logs / f"{name}.log"
            )
        wait_until(lambda: _healthy(console), 30, "the console web")
        resp = console.http.post(
            f"{console.base_url}/api/v1/auth/token",
            json={"username": "bench", "password": password},
            timeout=30,
        )
        resp.raise_for_status()
        console.token = resp.json()["token"]
        yield console
    finally:
        stop_processes(list(console.processes.values()))
        broker.stop()
        db.dispose()
        console.http.close()


def _healthy(console: Console) -> bool:
    for name, proc in console.processes.items():
        if proc.poll() is not None:
            raise RuntimeError(f"console {name} exited: {console.log_text(name)[-2000:]}")
    try:
        return console.http.get(f"{console.base_url}/api/v1/health", timeout=2).ok
    except requests.ConnectionError:
        return False


# --- devices ---------------------------------------------------------------------------------


def create_zones(console: Console, tree: Sequence[tuple[str, str, str | None]]) -> None:
    """Zones through the API: (id, kind, parent id), parents first."""
    for zone_id, kind, parent_id in tree:
        body = {"id": zone_id, "name": zone_id, "kind": kind, "parent_id": parent_id}
        console.api("POST", "/zones", json=body)


def home_zone(index: int) -> str:
    """The smallest measured zone device number `index` belongs to."""
    return next((z for n, z in sorted(ZONE_OF_SIZE.items()) if index < n), "thon-b")


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def register_via_api(console: Console, device_id: str, zone_id: str, shard: Path) -> float:
    """POST /api/v1/devices as an admin does; the bridge config as the installer gets it.
    Returns the seconds the call took."""
    body = {"id": device_id, "name": device_id, "profile": "speaker-node", "zone_id": zone_id}
    start = time.perf_counter()
    resp = console.api("POST", "/devices", json=body)
    took = time.perf_counter() - start
    text = resp.json()["bridge_config"].replace(f'"{DEFAULT_STATE_DIR}', f'"{shard / device_id}')
    write_private(shard / f"{device_id}.toml", text)
    return took


def provision_in_bulk(console: Console, devices: Sequence[tuple[str, str, Path]]) -> None:
    """What register_device does, for many devices at once: database rows, one broker role
    (ACLs inline) and account per device, PROVISION_BATCH devices per dynamic-security
    message, and the config files. `devices`: (device id, zone id, shard directory)."""
    b = console.settings.broker
    with console.db.session() as session:
        parents = zone_parents(session)
    with console.admin() as admin:
        admin.execute_tolerant(
            [
                {
                    "command": "createRole",
                    "rolename": zone_role(z),
                    "acls": [
                        {
                            "acltype": "subscribePattern",
                            "topic": protocol.zone_command_topic(z),
                            "priority": 0,
                            "allow": True,
                        }
                    ],
                }
                for z in parents
            ]
        )
        for first in range(0, len(devices), PROVISION_BATCH):
            commands: list[dict[str, Any]] = []
            rows = []
            for device_id, zone_id, shard in devices[first : first + PROVISION_BATCH]:
                zones = ancestors_of(zone_id, parents)
                password = new_secret(24)
                roles = [device_role(device_id), *(zone_role(z) for z in zones)]
                commands += [
                    {
                        "command": "createRole",
                        "rolename": device_role(device_id),
                        "acls": device_role_acls(device_id),
                    },
                    {
                        "command": "createClient",
                        "username": device_id,
                        "password": password,
                        "roles": [{"rolename": r} for r in roles],
                    },
                ]
                rows.append(
                    Device(
                        id=device_id,
                        name=device_id,
                        profile="speaker-node",
                        zone_id=zone_id,
                        secret_sha256=secret_digest(password),
                    )
                )
                config = render_bridge_config(
                    device_id=device_id,
                    profile="speaker-node",
                    zones=zones,
                    host=b.public_host,
                    port=b.port,
                    password=password,
                    state_dir=PurePosixPath(str(shard / device_id)),
                )
                write_private(shard / f"{device_id}.toml", config)
            admin.execute(commands, timeout_s=120)
            with console.db.session() as session:
                session.add_all(rows)
                bump_config_revision(session)


def ffprobe_stub(directory: Path, duration_ms: int) -> Path:
    """A directory holding an `ffprobe` that answers one duration at once (see run's notes)."""
    directory.mkdir(parents=True, exist_ok=True)
    answer = json.dumps({"format": {"duration": f"{duration_ms / 1000:.3f}"}})
    stub = directory / "ffprobe"
    stub.write_text(f"#!/bin/sh\necho '{answer}'\n", encoding="utf-8")
    stub.chmod(0o755)
    return directory


class Fleet:
    """Simulated bridges: `python -m firmware_bridge --simulate --fleet-dir SHARD` per shard.

    `ffprobe_dir`, if given, comes first on the fleet's PATH (see ffprobe_stub)."""

    def __init__(self, logs: Path, ffprobe_dir: Path | None = None, nice: int = 0) -> None:
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nice = nice
        self.env = None
        if ffprobe_dir is not None:
            path = f"{ffprobe_dir}{os.pathsep}{os.environ.get('PATH', '')}"
            self.env = {**os.environ, "PATH": path}

    def start(self, shard: Path, config: str = "--fleet-dir") -> subprocess.Popen[bytes]:
        """One process for every config file in a directory (or, with "--config", one file)."""
        argv = [sys.executable, "-m", "firmware_bridge", "--simulate", config, str(shard)]
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        log = self.logs / f"fleet-{shard.stem}.log"
        proc = spawn([*argv, "--log-level", "warning"], log, self.env)
        self.processes.append(proc)
        return proc

    def check(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"a fleet process exited with {proc.returncode}")

    def cpu_s(self) -> tuple[float, float]:
        """User and system CPU time of all fleet processes so far."""
        splits = [cpu_split_s(p.pid) for p in self.processes if p.poll() is None]
        return sum(u for u, _ in splits), sum(k for _, k in splits)

    def stop(self) -> None:
        stop_processes(self.processes)
        self.processes = []


# --- what the console hears ------------------------------------------------------------------

AckKey = tuple[str, str]  # command id, status
Heard = tuple[float, int]  # perf_counter() at receipt, the ack's own ts (epoch ms)


class Uplink:
    """The console's account listening to every device's availability and acks; each ack is
    timestamped with perf_counter() as it arrives (first copy only: QoS 1 may repeat)."""

    def __init__(self, settings: Settings) -> None:
        b = settings.broker
        self.online: dict[str, bool] = {}
        self.acks: dict[AckKey, dict[str, Heard]] = {}
        self._ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-uplink-{uuid.uuid4().hex[:8]}"
        )
        self._client.username_pw_set(b.console_username, b.console_password.get_secret_value())
        self._client.on_connect = self._connected
        self._client.on_subscribe = lambda *_: self._ready.set()
        self._client.on_message = self._message
        self._client.connect(b.host, b.port, keepalive=60)
        self._client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError("the uplink listener could not subscribe")

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(
            [
                (protocol.uplink_subscription(protocol.Channel.AVAILABILITY), 1),
                (protocol.uplink_subscription(protocol.Channel.ACK), 1),
            ]
        )

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            device_id, channel = protocol.parse_device_topic(msg.topic)
            message = protocol.decode_for_channel(channel, msg.payload)
        except protocol.ProtocolError:
            return  # a cleared retained message
        if isinstance(message, protocol.Ack):
            heard = self.acks.setdefault((message.command_id, message.status.value), {})
            heard.setdefault(device_id, (now, message.ts))
        elif isinstance(message, protocol.Availability):
            self.online[device_id] = message.state is protocol.AvailabilityState.ONLINE

    def count_online(self, device_ids: Sequence[str]) -> int:
        return sum(1 for d in device_ids if self.online.get(d))

    def heard(self, command_id: str, status: str) -> dict[str, Heard]:
        return self.acks.get((command_id, status), {})

    def wait_acks(
        self, command_id: str, status: str, device_ids: Sequence[str], timeout_s: float
    ) -> dict[str, Heard]:
        deadline = time.monotonic() + timeout_s
        while len(self.heard(command_id, status)) < len(device_ids):
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return dict(self.heard(command_id, status))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# --- the baseline: plain subscribers ---------------------------------------------------------


class PlainSubscribers:
    """N paho clients that only receive (QoS 1, one topic), driven by one epoll loop in a
    thread (paho's own loop uses select(), which stops at descriptor 1,023)."""

    def __init__(self, settings: Settings, n: int, timeout_s: float = 60.0) -> None:
        b = settings.broker
        user, password = b.console_username, b.console_password.get_secret_value()
        self.received: dict[int, float] = {}
        self._subscribed = 0
        self._stop = threading.Event()
        # The publisher runs paho's own threaded loop: created first, its socket's number is
        # low enough for select().
        self._publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._id("pub"))
        self._publisher.username_pw_set(user, password)
        self._publisher.connect(b.host, b.port, keepalive=60)
        self._publisher.loop_start()
        self._selector = selectors.DefaultSelector()
        self._clients: list[mqtt.Client] = []
        for i in range(n):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self._id(i), userdata=i)
            client.username_pw_set(user, password)
            client.on_connect = self._connected
            client.on_subscribe = self._subscribed_one
            client.on_message = self._message
            client.connect(b.host, b.port, keepalive=60)
            sock = client.socket()
            assert sock is not None
            self._selector.register(sock, selectors.EVENT_READ, client)
            self._clients.append(client)
        self._thread = threading.Thread(target=self._loop, name="plain-subscribers", daemon=True)
        self._thread.start()
        try:
            wait_until(lambda: self._subscribed >= n, timeout_s, f"{n} plain subscribers")
        except RuntimeError:
            self.close()
            raise

    @staticmethod
    def _id(suffix: object) -> str:
        return f"bench-raw-{uuid.uuid4().hex[:6]}-{suffix}"

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(RAW_TOPIC, qos=protocol.ZONE_COMMAND_QOS)

    def _subscribed_one(self, *_: Any) -> None:
        self._subscribed += 1  # only the loop thread runs callbacks

    def _message(self, _c: mqtt.Client, index: int, _m: mqtt.MQTTMessage) -> None:
        self.received.setdefault(index, time.perf_counter())

    def _loop(self) -> None:
        full_pass = misc = time.monotonic()
        while not self._stop.is_set():
            touched = []
            for key, _ in self._selector.select(0.05):
                client = key.data
                client.loop_read()
                touched.append(client)
            now = time.monotonic()
            if now - full_pass > 0.2:  # writes queued from callbacks (SUBSCRIBE, PUBACK)
                touched, full_pass = self._clients, now
            for client in touched:
                if client.want_write():
                    client.loop_write()
            if now - misc > 5:  # keepalive
                misc = now
                for client in self._clients:
                    client.loop_misc()

    def fan_out(self, payload: bytes, timeout_s: float = 20.0) -> tuple[list[float], int]:
        """Publish once; ms from the publish call to each subscriber's receipt, and how many
        did not receive it within the timeout."""
        self.received.clear()
        start = time.perf_counter()
        self._publisher.publish(RAW_TOPIC, payload, qos=protocol.ZONE_COMMAND_QOS)
        deadline = time.monotonic() + timeout_s
        while len(self.received) < len(self._clients) and time.monotonic() < deadline:
            time.sleep(0.005)
        times = [(t - start) * 1000 for t in list(self.received.values())]
        return times, len(self._clients) - len(times)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for client in self._clients:
            client.disconnect()
            client.loop_write()
            client._reset_sockets()
        self._selector.close()
        self._publisher.disconnect()
        self._publisher.loop_stop()


def command_payload(console: Console, sha256: str) -> bytes:
    """Bytes of the size of a real emergency command, for the baseline to carry."""
    now_ms = int(time.time() * 1000)
    audio = protocol.AudioRef(
        url=f"{console.base_url}/media/{sha256}.mp3", sha256=sha256, duration_ms=TONE_S * 1000
    )
    return protocol.encode(
        protocol.PlayCommand(
            id=f"b-{uuid.uuid4().hex[:24]}",
            ts=now_ms,
            priority=protocol.Priority.EMERGENCY,
            audio=audio,
            volume_pct=100,
            play_at=now_ms + 2000,
            expires_at=now_ms + 122_000,
            title="bench",
        )
    )


# --- one emergency and its STOP --------------------------------------------------------------


@dataclass
class Cycle:
    """One emergency broadcast and its STOP, ms per device."""

    command_id: str
    api_ms: float
    received_ms: list[float]
    started_ms: list[float]
    stopped_ms: list[float]
    taken_ms: list[float]  # API call -> the bridge's 'received' ack (its ts)
    ack_path_ms: list[float]  # that ack's ts -> heard by the console's account
    late_ms: list[float]  # 'started' ack ts - the command's play_at
    missing: int  # devices with an ack missing
    refused: list[float]  # s taken by emergency calls answered 500 (then repeated)


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def emergency_cycle(
    console: Console, uplink: Uplink, zone: str, sha256: str, device_ids: Sequence[str]
) -> Cycle:
    body = {"audio_sha256": sha256, "zone_ids": [zone], "priority": "emergency", "title": "đo"}
    wait_s = 20 + len(device_ids) / 50
    refused: list[float] = []
    while True:  # a 500 is repeated, as the duty officer would press again; counted
        start, wall_ms = time.perf_counter(), time.time() * 1000
        resp = console.call("POST", "/broadcasts", json=body)
        if resp.status_code < 500 or len(refused) == EMERGENCY_RETRIES:
            break
        refused.append(time.perf_counter() - start)
        time.sleep(0.2)
    broadcast = console.check(resp, "POST /broadcasts").json()
    api_ms = (time.perf_counter() - start) * 1000
    bid = broadcast["id"]
    started = uplink.wait_acks(bid, "started", device_ids, console.settings.play_lead_s + wait_s)
    received = uplink.wait_acks(bid, "received", device_ids, 1)
    stop_at = time.perf_counter()
    console.api("POST", "/stop", json={"zone_ids": [zone]})
    stopped = uplink.wait_acks(bid, "stopped", device_ids, wait_s)
    play_at = _epoch_ms(broadcast["play_at"])
    missing = sum(1 for d in device_ids if not (d in received and d in started and d in stopped))
    if not (received and started and stopped):
        raise RuntimeError(f"no bridge acknowledged broadcast {bid} (see the fleet logs)")
    return Cycle(
        command_id=bid,
        api_ms=api_ms,
        received_ms=[(t - start) * 1000 for t, _ in received.values()],
        started_ms=[(t - start) * 1000 for t, _ in started.values()],
        stopped_ms=[(t - stop_at) * 1000 for t, _ in stopped.values()],
        taken_ms=[ts - wall_ms for _, ts in received.values()],
        ack_path_ms=[wall_ms + (t - start) * 1000 - ts for t, ts in received.values()],
        late_ms=[ts - play_at for _, ts in started.values()],
        missing=missing,
        refused=refused,
    )


def settle(console: Console, command_id: str, n: int, timeout_s: float = 30.0) -> None:
    """Let the commune calm down between runs: the amplifiers' cool-down passes (each bridge
    publishes its state again then) and the worker's ingest stores every 'stopped' ack."""
    time.sleep(COOL_DOWN_MS / 1000 + 1 if n > 1 else 0.5)
    deadline = time.monotonic() + timeout_s
    stmt = select(func.count(Delivery.id)).where(
        Delivery.broadcast_id == command_id, Delivery.status == DeliveryStatus.STOPPED
    )
    while time.monotonic() < deadline:
        with console.db.session() as session:
            if (session.scalar(stmt) or 0) >= n:
                return
        time.sleep(0.2)


# --- profiles --------------------------------------------------------------------------------


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_during(
    targets: Sequence[tuple[int, Path, bool]], action: Callable[[], object]
) -> float:
    """py-spy on each (pid, output file, GIL only?) while `action` runs; the seconds it ran.
    The processes are not py-spy's children: it needs ptrace rights (root, or
    kernel.yama.ptrace_scope = 0)."""
    exe = py_spy()
    spies = []
    for pid, out, gil in targets if exe else ():
        argv = [str(exe), "record", "--pid", str(pid), "--duration", "600", "--nonblocking"]
        argv += ["--rate", str(PROFILE_HZ), "--format", "raw", "--output", str(out)]
        spies.append(
            subprocess.Popen(
                argv + (["--gil"] if gil else []),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    time.sleep(0.5 if spies else 0)  # py-spy attaches
    start = time.monotonic()
    try:
        action()
        return time.monotonic() - start
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has and stops
        for spy in spies:
            try:
                spy.wait(15)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)


def _frame_name(frame: str) -> str:
    """'append (firmware_bridge/outbox.py:151)' -> 'append (firmware_bridge/outbox.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1].lstrip("/0123456789.")
    return f"{name} ({path.removeprefix(str(ROOT) + '/')})"


_PROJECT = ("firmware_bridge/", "console/", "device_profiles/", "audio_library/")


def summarize_profile(path: Path, seconds: float, top: int = 4) -> str:
    """Collapsed stacks -> the project function each sample was in, or had called into a
    library from (the deepest project frame; else the thread's own function), and the
    function on top of the stack."""
    ours: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [_frame_name(f) for f in stack.split(";") if " (" in f]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf[frames[-1]] += n
        root = next((f for f in frames if "threading.py" not in f), frames[0])
        ours[next((f for f in reversed(frames) if any(p in f for p in _PROJECT)), root)] += n
    if not total:
        return "no samples."

    def share(counter: Counter[str]) -> str:
        return "; ".join(f"{name} {n / total:.0%}" for name, n in counter.most_common(top))

    return (
        f"{total} samples in {seconds:.1f} s; in (or called from): {share(ours)}; "
        f"on top: {share(leaf)}."
    )


# --- the benchmark ---------------------------------------------------------------------------


def tone_wav(path: Path, seconds: float) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency=880:duration={seconds}", "-af", "volume=0.3", "-y", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def upload_preset(console: Console, work: Path) -> tuple[str, int]:
    """A generated tone uploaded through the API and made the 'fire' preset, so every device
    gets it in its retained config and caches it ahead of the emergency; (sha256, ms)."""
    wav = tone_wav(work / "tone.wav", TONE_S)
    with wav.open("rb") as fh:
        files = {"file": ("bao-chay.wav", fh, "audio/wav")}
        audio = console.api("POST", "/audio", files=files, data={"name": "đo"}).json()
    console.api("PUT", "/presets/fire", json={"audio_sha256": audio["sha256"]})
    return str(audio["sha256"]), int(audio["duration_ms"])


def cached(shard_of: dict[str, Path], sha256: str) -> int:
    return sum(1 for d, s in shard_of.items() if (s / d / "cache" / f"{sha256}.mp3").exists())


def all_cached(shard_of: dict[str, Path], sha256: str) -> bool:
    return cached(shard_of, sha256) == len(shard_of)


@dataclass
class Percentiles:
    """p50/p95/p99/max of one latency, one sample per run."""

    what: str
    p: dict[str, Figure] = field(default_factory=dict)

    def add(self, values: Sequence[float]) -> None:
        for label, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
            self.p.setdefault(label, Figure(f"{self.what}, {label}", "ms")).add(
                percentile(values, q)
            )


@dataclass
class SizeResult:
    n: int
    received: Percentiles
    started: Percentiles
    stopped: Percentiles
    raw: Percentiles
    api: Figure
    taken: Figure
    ack_path: Figure
    late: Percentiles
    fleet_cpu: Figure
    fleet_sys: Figure
    console_cpu: Figure
    broker_cpu: Figure
    missing: int = 0
    refused: list[float] = field(default_factory=list)
    raw_missing: int = 0
    online_s: float = 0.0
    prefetch_s: float = 0.0


def measure_size(
    console: Console, uplink: Uplink, fleet: Fleet, n: int, zone: str, sha256: str, runs: int
) -> SizeResult:
    ids = [f"loa-{i:04d}" for i in range(n)]
    servers = [p.pid for p in console.processes.values()]
    r = SizeResult(
        n,
        Percentiles("emergency API call → 'received' ack"),
        Percentiles("emergency API call → 'started' ack"),
        Percentiles("STOP API call → 'stopped' ack"),
        Percentiles("raw fan-out: publish → receipt"),
        Figure("POST /api/v1/broadcasts (answered)", "ms"),
        Figure("median: API call → the bridge's 'received' ack (its ts)", "ms"),
        Figure("median: that ack's ts → heard by the console (outbox, broker)", "ms"),
        Percentiles("'started' ack ts − the command's play_at"),
        Figure("CPU used by the fleet processes in one emergency + STOP", "s"),
        Figure("of which in the kernel", "%"),
        Figure("CPU used by the console web + worker in it", "s"),
        Figure("CPU used by Mosquitto in it", "s"),
    )
    warm_up = emergency_cycle(console, uplink, zone, sha256, ids)  # not counted
    settle(console, warm_up.command_id, n)
    for _ in range(runs):
        assert console.broker.pid is not None
        before = fleet.cpu_s(), sum(map(cpu_s, servers)), cpu_s(console.broker.pid)
        cycle = emergency_cycle(console, uplink, zone, sha256, ids)
        after = fleet.cpu_s(), sum(map(cpu_s, servers)), cpu_s(console.broker.pid)
        user, kernel = (a - b for a, b in zip(after[0], before[0], strict=True))
        r.fleet_cpu.add(user + kernel)
        r.fleet_sys.add(100 * kernel / max(user + kernel, 1e-9))
        r.console_cpu.add(after[1] - before[1])
        r.broker_cpu.add(after[2] - before[2])
        settle(console, cycle.command_id, n)
        r.missing += cycle.missing
        r.refused += cycle.refused
        r.received.add(cycle.received_ms)
        r.started.add(cycle.started_ms)
        r.stopped.add(cycle.stopped_ms)
        r.late.add(cycle.late_ms)
        r.api.add(cycle.api_ms)
        r.taken.add(percentile(cycle.taken_ms, 50))
        r.ack_path.add(percentile(cycle.ack_path_ms, 50))
    payload = command_payload(console, sha256)
    subscribers = PlainSubscribers(console.settings, n)
    try:
        subscribers.fan_out(payload)  # warm-up
        for _ in range(runs):
            times, lost = subscribers.fan_out(payload)
            r.raw.add(times)
            r.raw_missing += lost
            time.sleep(0.3)
    finally:
        subscribers.close()
    return r


def start_fleet_part(
    console: Console, uplink: Uplink, fleet: Fleet, shards: Sequence[Path], ids: Sequence[str],
    shard_of: dict[str, Path], sha256: str,
) -> tuple[float, float]:  # fmt: skip
    """Start shards one after the other, each once the bridges of the last but one have the
    preset (1,000 bridges fetching at once overflowed the web's accept queue, see the notes);
    seconds until every device is online, and until every one has the preset in its cache."""
    start = time.monotonic()
    fetching: list[dict[str, Path]] = []  # the devices of the last two shards started
    for shard in shards:
        fleet.start(shard)
        fetching.append({d: s for d, s in shard_of.items() if s == shard})
        if len(fetching) > 1:
            wait_until(partial(all_cached, fetching.pop(0), sha256), 90, "a shard's preset", 0.1)

    def online() -> bool:
        fleet.check()
        return uplink.count_online(ids) == len(ids)

    wait_until(online, 60, f"{len(ids)} bridges online", 0.1)
    online_s = time.monotonic() - start
    wanted = {d: shard_of[d] for d in ids}
    wait_until(partial(all_cached, wanted, sha256), 90, "the preset in every cache", 0.2)
    return online_s, time.monotonic() - start


def run(repeat: int) -> Section:
    section = Section(
        "Emergency fan-out and STOP: 1, 100 and 1,000 simulated bridges",
        "A whole commune on this machine: Mosquitto with authentication and one account per "
        "device, the console web and worker (`python -m console web|worker`), and simulated "
        f"speaker bridges, {SHARD_SIZE} per `python -m firmware_bridge --simulate --fleet-dir` "
        f"process (run at nice {FLEET_NICE}: in production the console and broker have a "
        "server of their own, not 2 cores shared with 1,000 devices). The subject is what the "
        "duty officer starts: POST /api/v1/broadcasts (emergency, one zone holding the N "
        "devices), timed from the call to each bridge's 'received' and 'started' acks as the "
        "console's broker account hears them, then POST /api/v1/stop to each 'stopped' ack. "
        "The baseline is the raw broker fan-out: one QoS 1 message of the same size published "
        "to N plain paho subscribers (one process, one epoll loop), timed from the publish call "
        "to each receipt. Percentiles are over the N devices of one run; min / median / max "
        "over runs.",
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        work = Path(tmp)
        with running_console(work, worker=True) as console:
            measure_commune(console, work, repeat, section)
    section.notes.append(
        f"Load average (1 min) when this benchmark started: {load_before:.1f}; at its end: "
        f"{os.getloadavg()[0]:.1f}."
    )
    return section


def provision(console: Console, devices: Sequence[tuple[str, str, Path]]) -> list[Figure]:
    """The first and last API_SAMPLE devices through the API, the rest in bulk; timed."""
    first = Figure(f"POST /api/v1/devices, the first {API_SAMPLE} devices", "ms")
    last = Figure(f"POST /api/v1/devices, the last {API_SAMPLE} (~{len(devices):,} accounts)", "ms")
    bulk = Figure(f"bulk provisioning ({PROVISION_BATCH} devices a message), per device", "ms")
    admin = Figure("DynsecAdmin.close() after one command", "ms")
    for device_id, zone_id, shard in devices[:API_SAMPLE]:
        first.add(register_via_api(console, device_id, zone_id, shard) * 1000)
    start = time.perf_counter()
    provision_in_bulk(console, devices[API_SAMPLE:-API_SAMPLE])
    bulk.add((time.perf_counter() - start) * 1000 / (len(devices) - 2 * API_SAMPLE))
    for device_id, zone_id, shard in devices[-API_SAMPLE:]:
        last.add(register_via_api(console, device_id, zone_id, shard) * 1000)
    connection = console.admin()
    connection.execute([{"command": "getDefaultACLAccess"}])
    start = time.perf_counter()
    connection.close()
    admin.add((time.perf_counter() - start) * 1000)
    return [first, last, bulk, admin]


def preset_failures(logs: Path) -> Counter[str]:
    """Why bridges could not fetch a preset (their warnings), by reason."""
    reasons: Counter[str] = Counter()
    for log in logs.glob("fleet-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "WARNING" in line and ": preset " in line:
                reasons[line.split(": preset ", 1)[1].split(": ", 1)[-1][:80]] += 1
    return reasons


def progress(what: str, since: float) -> float:
    print(f"bench: fanout: {what} in {time.monotonic() - since:.0f} s", flush=True)
    return time.monotonic()


def measure_commune(console: Console, work: Path, repeat: int, section: Section) -> None:
    clock = time.monotonic()
    n_max = max(SIZES)
    create_zones(console, ZONE_TREE)
    shards = [work / "fleet" / f"shard-{k:02d}" for k in range(math.ceil(n_max / SHARD_SIZE))]
    for shard in shards:
        shard.mkdir(parents=True)
    devices = [(f"loa-{i:04d}", home_zone(i), shards[i // SHARD_SIZE]) for i in range(n_max)]
    shard_of = {d: s for d, _, s in devices}
    provisioning = provision(console, devices)
    clock = progress(f"{n_max:,} devices registered", clock)
    sha, duration_ms = upload_preset(console, work)
    uplink = Uplink(console.settings)
    fleet = Fleet(console.logs, ffprobe_stub(work / "bin", duration_ms), FLEET_NICE)
    results: list[SizeResult] = []
    try:
        running = 0  # shards started so far
        for n in sorted(SIZES):
            part = shards[running : math.ceil(n / SHARD_SIZE)]
            running += len(part)
            ids = [d for d, _, shard in devices if shard in part]
            online_s, prefetch_s = start_fleet_part(
                console, uplink, fleet, part, ids, shard_of, sha
            )
            zone = ZONE_OF_SIZE[n]
            downloads = console.log_text("web").count('"GET /media/')
            runs = repeat if n < n_max else min(repeat, LARGE_RUNS)
            result = measure_size(console, uplink, fleet, n, zone, sha, runs)
            result.online_s, result.prefetch_s = online_s, prefetch_s
            downloads = console.log_text("web").count('"GET /media/') - downloads
            if downloads:
                section.notes.append(f"N={n:,}: {downloads} audio downloads during the runs.")
            results.append(result)
            clock = progress(f"N={n:,} measured", clock)
        profile_note = profile_cycle(console, uplink, fleet, work, sha)
        clock = progress("profile taken", clock)
    finally:
        uplink.close()
        fleet.stop()
    progress("fleet stopped", clock)
    report(section, results, provisioning, profile_note, console)
    failures = preset_failures(console.logs)
    if failures:
        why = "; ".join(f"{n}× {reason}" for reason, n in failures.most_common(3))
        section.notes.append(
            f"Preset fetches that failed at fleet start (retried after 60 s): {why}."
        )


def profile_cycle(console: Console, uplink: Uplink, fleet: Fleet, work: Path, sha: str) -> str:
    """One more emergency + STOP at PROFILE_SIZE, with py-spy on one of its fleet processes
    (the thread holding the GIL: 4 threads a bridge are too many to sample) and on the
    console web (every thread that is not idle); not counted in the figures. Not at the
    largest size: there the fleet saturates both cores, and the GIL holder is mostly a thread
    the kernel preempted wherever it happened to be."""
    if py_spy() is None:
        return "py-spy is not installed: no profile."
    n = PROFILE_SIZE
    targets = {
        f"one fleet process ({SHARD_SIZE} of its bridges, GIL holder)": (
            fleet.processes[0].pid, work / "fleet.prof", True,
        ),
        "the console web": (console.processes["web"].pid, work / "web.prof", False),
    }  # fmt: skip
    ids = [f"loa-{i:04d}" for i in range(n)]
    seconds = profile_during(
        list(targets.values()),
        lambda: emergency_cycle(console, uplink, ZONE_OF_SIZE[n], sha, ids),
    )
    parts = [
        f"{k}: {summarize_profile(out, seconds)}"
        for k, (_, out, _) in targets.items()
        if out.exists()
    ]
    return " ".join(parts) if parts else "py-spy could not attach (ptrace not allowed?)."


def report(
    section: Section,
    results: Sequence[SizeResult],
    provisioning: Sequence[Figure],
    profile_note: str,
    console: Console,
) -> None:
    for r in results:
        every = ("p50", "p95", "p99", "max") if r.n > 1 else ("p50",)  # one device: all equal
        pairs = [(r.received, k) for k in every]
        pairs += [(r.started, k) for k in every[:: max(1, len(every) - 1)]]
        pairs += [(r.stopped, k) for k in every]
        for subject, k in pairs:
            section.comparisons.append(
                Comparison(
                    f"N={r.n:,}, {subject.what}, {k}",
                    Figure("every bridge", "ms", subject.p[k].samples),
                    Figure(f"raw fan-out, publish → receipt, {k}", "ms", r.raw.p[k].samples),
                )
            )
    for r in results:
        figures = [r.started.p["p95"], r.started.p["p99"], r.late.p["p50"], r.late.p["max"]]
        figures += [r.api, r.taken, r.ack_path, r.fleet_cpu, r.fleet_sys]
        figures += [r.console_cpu, r.broker_cpu]
        figures += [
            Figure("fleet processes started → all bridges online", "s", [r.online_s]),
            Figure("fleet processes started → the preset in all caches", "s", [r.prefetch_s]),
        ]
        section.figures += [Figure(f"N={r.n:,}: {f.name}", f.unit, f.samples) for f in figures]
    section.figures += provisioning
    lead_s = console.settings.play_lead_s
    big = results[-1]
    runs = ", ".join(f"N={r.n:,}: {len(r.api.samples)}" for r in results)
    section.notes += [
        f"Runs per size: {runs} (fewer at the largest size, to keep this benchmark within a few "
        "minutes), each after one unmeasured warm-up run; between runs the amplifiers' "
        "cool-down passes and the worker's ingest stores every ack.",
        "N=1 is the floor: the whole path for one bridge, nothing queueing for the CPU. About "
        "40 ms of it is TCP: neither paho nor Mosquitto (set_tcp_nodelay is false by default) "
        "turns Nagle's algorithm off, so a bridge's ack, a small write right after its PUBACK "
        "for the command, waits for the broker's delayed ACK. With TCP_NODELAY set on the "
        "bridges' sockets (tried while writing this benchmark, not in this run) the N=1 "
        "'received' ack came in 18 ms and 'that ack's ts → heard' fell from ~42 to ~4.5 ms.",
        f"'started' is not a fan-out time: the console sets play_at = call time + play_lead_s "
        f"({lead_s:g} s) so that every speaker of a zone starts together, and each bridge "
        "switches its amplifier relay on warm_up_ms (1.5 s, speaker-node profile) before "
        "play_at, so the first word is heard. The warm-up is hidden inside the lead; "
        "'started ack ts − play_at' shows how late after the agreed instant each bridge "
        "started. DESIGN.md asks for an emergency 'within a second': with the default lead "
        f"it starts after {lead_s:g} s by construction.",
        f"At N={big.n:,} the fleet needs about {big.fleet_cpu.median:.0f} CPU-seconds for one "
        f"emergency + STOP ({big.fleet_cpu.median / big.n * 1000:.0f} ms per bridge, "
        f"{big.fleet_sys.median:.0f}% of it in the kernel): the 2 cores are busy for "
        f"~{big.fleet_cpu.median / 2:.0f} s, so at this size the percentiles measure the "
        "simulator's CPU queue more than any bridge, each of which has a CPU of its own on its "
        "pole. The kernel share is thread wake-ups and futexes (perf, while writing this "
        "benchmark): 4 threads per bridge hand one GIL around; with 100 bridges per process "
        "the same cycle took about 1.6× the CPU of 25 per process.",
        "The emergency audio was made the 'fire' preset before the fleet started: each bridge "
        "fetched it once from the console over HTTP (its retained config names it) and played "
        "it from its cache; the runs downloaded nothing unless a note says so. Fleet processes "
        "are started one after another, each once the bridges of the last but one have the "
        "preset: with all 1,000 fetching within seconds, the console web's accept queue "
        "(werkzeug's, 128 connections) filled up and 2–5% of the downloads timed out, to be "
        "retried only 60 s later (seen while writing this benchmark).",
        "Acks travel through each bridge's on-disk outbox (SQLite, synchronous=FULL: an fsync "
        "per ack, and one more per confirmed batch) before they are sent; here all bridges "
        "share one disk, on a pole each Pi has its own SD card.",
        "Simulator limits found: (1) paho's network loop uses select(), which cannot watch "
        "descriptors numbered 1,024 or more, and each speaker bridge holds 6 (outbox database, "
        "WAL, shared memory, MQTT socket, paho's wake-up socket pair): with 300 bridges in one "
        "fleet process only 40 came online, the rest retrying for ever; about 165 is the "
        "ceiling, hence several processes here. (2) The simulated player asks ffprobe for "
        "each file's duration on every play, about 85 ms of CPU: 1,000 devices starting at "
        "once kept both cores busy for ~40 s. The fleet processes here find an `ffprobe` stub "
        "first on their PATH that answers the tone's duration at once (the console's audio "
        "import uses the real one). A Pi runs one bridge and mpg123, so neither applies there.",
        "POST /api/v1/devices opens a broker administrator connection per request; "
        "DynsecAdmin.close() calls loop_stop() before disconnect(), so paho's network thread "
        "sleeps out its 1 s select() timeout: about 1 s of each registration (figure above). "
        "The dynamic-security plugin also rewrites its whole JSON file after every command "
        "(about 14 per registration), so registration slows as accounts grow (first vs last). "
        "Bulk provisioning here sends two commands per device (a role with its ACLs inline, "
        "and the account).",
        "The baseline's subscribers use the console's account (subscribing needs no ACL of "
        "their own) and run while the fleet is connected and idle. One thread reads all their "
        "sockets in turn, so at N=1,000 its spread is partly that thread's own queue: the "
        "broker alone fans out faster.",
    ]
    for r in results:
        if r.missing or r.raw_missing:
            section.notes.append(
                f"N={r.n:,}: {r.missing} device-runs with an ack missing after the wait, "
                f"{r.raw_missing} baseline receipts missing: the percentiles leave them out."
            )
        if r.refused:
            section.notes.append(
                f"N={r.n:,}: the emergency call was answered HTTP 500 {len(r.refused)} time(s), "
                f"after {', '.join(f'{t:.1f}' for t in r.refused)} s, and repeated (timed from "
                "the repeat): SQLite 'database is locked' on inserting the broadcast, while the "
                "worker's ingest stored the previous run's acks and states."
            )
    section.notes.append(
        f"Profile of one more emergency + STOP at N={PROFILE_SIZE:,} (py-spy, {PROFILE_HZ} Hz, "
        f"from the API call to the last 'stopped' ack; not counted): {profile_note}"
    )
