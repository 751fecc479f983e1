"""Real processes for the fault tests, started the way an installation starts them.

- `open_site`: a console instance (config.toml, migrated SQLite database, staff accounts) on
  a broker of the test's own; its web API served in this process on a real port (bridges
  download audio from it), driven through the Flask test client with Bearer tokens.
- `Service`: a child process with its log in a file — `worker_process` is
  `python -m console --instance DIR worker`, `bridge_process` is
  `python -m firmware_bridge --simulate --config FILE` (or `--fleet-dir DIR`).
- `Site.register`: a device registered through the API; its bridge config file written
  as the installer gets it (the state dir moved under the test's directory; the broker
  port or keepalive changed when a test puts a proxy in between).
- `Observer`: the console's MQTT account on a persistent session, recording every uplink
  message with the time it arrived; `read_retained` reads what the broker retains now.
- `report`: a measured figure, printed and appended to the JSON file named by
  LOA_FAULT_REPORT (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from flask import Flask
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from werkzeug.serving import BaseWSGIServer, make_server

from console import services
from console.app import create_app
from console.broker import free_port
from console.db import Database, upgrade
from console.models import Role, User
from console.security import hash_password
from console.settings import Settings, write_instance_config
from device_profiles import protocol
from tests.conftest import Broker, wait_for

REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {
    "admin": "admin-pass-1234",
    "operator": "operator-pass-1234",
    "viewer": "viewer-pass-1234",
}
INSTALLED_STATE_DIR = "/var/lib/tieng-loa"  # what the console writes into bridge configs
T = TypeVar("T")


def wait_value(predicate: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """wait_for, typed for a predicate that answers None until it has its value."""
    value = wait_for(predicate, timeout_s, what)
    assert value is not None
    return value


def tone_wav(path: Path, seconds: float) -> Path:
    """A plain tone of the given length (the simulated player plays for as long)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
         "-i", f"sine=frequency=440:duration={seconds}", "-af", "volume=0.3", "-y", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def report(test: str, **figures: Any) -> None:
    """Print a measured figure (-s shows it) and keep it in $LOA_FAULT_REPORT if set."""
    entry = {"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    print("FAULT-FIGURES", json.dumps(entry, ensure_ascii=False))
    target = os.environ.get("LOA_FAULT_REPORT")
    if target:
        path = Path(target)
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        entries.append(entry)
        path.write_text(json.dumps(entries, indent=1, ensure_ascii=False), encoding="utf-8")


# --- child processes --------------------------------------------------------------------------


class Service:
    """A child process with its output in a log file; stop() is SIGTERM, kill() SIGKILL."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env["PYTHONFAULTHANDLER"] = "1"  # a hung child shows its threads' stacks (see stop)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                # Hung: SIGABRT makes faulthandler write every thread's stack into the log.
                proc.send_signal(signal.SIGABRT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                raise AssertionError(
                    f"{self.name} did not stop on SIGTERM:\n{self.log()}"
                ) from None
        return proc.wait(10)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def log(self, tail_chars: int = 8000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-tail_chars:]


def worker_process(instance_dir: Path, log_dir: Path, name: str = "worker") -> Service:
    argv = [sys.executable, "-m", "console", "--instance", str(instance_dir), "worker"]
    return Service(name, argv, log_dir / f"{name}.log")


def bridge_process(config: Path, log_dir: Path, name: str | None = None) -> Service:
    """One bridge (a config file) or a simulated fleet (a directory of them)."""
    where = ["--fleet-dir", str(config)] if config.is_dir() else ["--config", str(config)]
    argv = [sys.executable, "-m", "firmware_bridge", "--simulate", *where]
    label = name or config.stem
    return Service(label, argv, log_dir / f"bridge-{label}.log")


# --- the console site -------------------------------------------------------------------------


@dataclass
class Site:
    """A console instance with its web API on a real port; the worker is started apart."""

    broker: Broker
    settings: Settings
    db: Database
    app: Flask
    client: FlaskClient
    root: Path
    _server: BaseWSGIServer
    _thread: threading.Thread
    _tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def instance_dir(self) -> Path:
        return self.settings.instance_dir

    def headers(self, role: str) -> dict[str, str]:
        if role not in self._tokens:
            resp = self.client.post(
                "/api/v1/auth/token", json={"username": role, "password": PASSWORDS[role]}
            )
            assert resp.status_code == 201, resp.get_json()
            self._tokens[role] = {"Authorization": f"Bearer {resp.get_json()['token']}"}
        return self._tokens[role]

    def call(self, method: str, path: str, role: str = "viewer", expect: int = 200,
             **kwargs: Any) -> Any:  # fmt: skip
        """One API call; asserts the status and returns the JSON body."""
        resp = self.client.open(
            f"/api/v1{path}", method=method, headers=self.headers(role), **kwargs
        )
        assert resp.status_code == expect, (method, path, resp.status_code, resp.get_data()[:500])
        return resp.get_json()

    def add_zone(self, zone_id: str, name: str, parent_id: str | None = None) -> None:
        body = {"id": zone_id, "name": name, "kind": "commune" if parent_id is None else "hamlet"}
        if parent_id is not None:
            body["parent_id"] = parent_id
        self.call("POST", "/zones", "admin", 201, json=body)

    def register(
        self,
        device_id: str,
        zone_id: str,
        profile: str,
        directory: Path,
        *,
        port: int | None = None,
        keepalive_s: int | None = None,
    ) -> Path:
        """Register through the API and write the bridge config it returns into `directory`."""
        body = self.call(
            "POST", "/devices", "admin", 201,
            json={"id": device_id, "name": device_id, "profile": profile, "zone_id": zone_id},
        )  # fmt: skip
        state_dir = self.root / "state" / device_id
        text = body["bridge_config"].replace(f'"{INSTALLED_STATE_DIR}', f'"{state_dir}')
        if port is not None:
            text, count = re.subn(r"(?m)^port = \d+$", f"port = {port}", text)
            assert count == 1
        if keepalive_s is not None:
            text = text.replace("[mqtt]\n", f"[mqtt]\nkeepalive_s = {keepalive_s}\n", 1)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{device_id}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def upload(self, wav: Path, name: str) -> dict[str, Any]:
        with wav.open("rb") as fh:
            body: dict[str, Any] = self.call(
                "POST", "/audio", "operator", 201,
                data={"file": (fh, wav.name), "name": name}, content_type="multipart/form-data",
            )  # fmt: skip
        return body

    def devices(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.call("GET", "/devices")}

    def broadcast(self, broadcast_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.call("GET", f"/broadcasts/{broadcast_id}")
        return body

    def deliveries(self, broadcast_id: str) -> dict[str, dict[str, Any]]:
        return {d["device_id"]: d for d in self.broadcast(broadcast_id)["deliveries"]}

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
        self._server.server_close()
        services.close(self.app)
        self.db.dispose()


def open_site(root: Path, broker: Broker, **settings: Any) -> Site:
    """A new instance dir with config.toml (as `python -m console init` writes it, pointed at
    the given broker), the schema, three staff accounts, and the web API on a free port."""
    instance = root / "instance"
    instance.mkdir(parents=True)
    bs = broker.process.settings
    web_port = free_port()
    values: dict[str, Any] = {
        "secret_key": secrets.token_hex(16),
        "database_url": f"sqlite:///{instance / 'console.sqlite3'}",
        "media_dir": str(instance / "media"),
        "public_base_url": f"http://127.0.0.1:{web_port}",
        "web_port": web_port,
        **settings,
        "broker": {
            "host": bs.host,
            "port": bs.port,
            "public_host": bs.host,
            "admin_username": bs.admin_username,
            "admin_password": bs.admin_password,
            "console_username": broker.console_username,
            "console_password": broker.console_password,
            "data_dir": str(bs.data_dir),
        },
    }
    config = write_instance_config(instance, values)
    upgrade(config.database_url)
    db = Database(config.database_url)
    with db.session() as session:
        for role in Role:
            session.add(
                User(
                    username=role.value,
                    password_hash=hash_password(PASSWORDS[role.value]),
                    role=role,
                )
            )
    app = create_app(config, db)
    server = make_server("127.0.0.1", web_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    return Site(broker, config, db, app, app.test_client(), root, server, thread)


# --- MQTT from the console's side --------------------------------------------------------------


@dataclass(frozen=True)
class Heard:
    topic: str
    payload: bytes
    at: float  # time.monotonic() when it arrived
    retained: bool  # a stored copy the broker replayed on (re)subscribing, not news


class Observer:
    """The console's account on a persistent session (QoS 1 messages queued for it survive
    its own reconnects): every uplink message, with its arrival time."""

    def __init__(self, broker: Broker, topic: str = f"{protocol.TOPIC_ROOT}/dev/#") -> None:
        self.topic = topic
        self.heard: list[Heard] = []
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self._subscribed = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fault-observer-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        client.username_pw_set(broker.console_username, broker.console_password)
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_: self.connected.clear()
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(broker.host, broker.port, keepalive=30)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(20):
            raise AssertionError("the observer could not subscribe")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.heard.append(Heard(msg.topic, bytes(msg.payload), time.monotonic(), msg.retain))

    def messages(
        self, device_id: str, channel: protocol.Channel, since: float = 0.0
    ) -> list[tuple[float, Any]]:
        """What the device said since `since`, as it said it (retained replays left out: after
        a broker restart they repeat the 'online' the broker stored before it went down)."""
        topic = protocol.device_topic(device_id, channel)
        with self._lock:
            found = [
                h
                for h in self.heard
                if h.topic == topic and h.payload and h.at >= since and not h.retained
            ]
        return [(h.at, protocol.decode_for_channel(channel, h.payload)) for h in found]

    def acks(self, device_id: str, command_id: str) -> list[str]:
        """The statuses a device acknowledged for one command, in the order heard; a copy
        sent again after a lost PUBACK has the same message id and is counted once."""
        seen: dict[str, str] = {}
        for _at, ack in self.messages(device_id, protocol.Channel.ACK):
            if ack.command_id == command_id:
                seen.setdefault(ack.id, ack.status.value)
        return list(seen.values())

    def events(self, device_id: str) -> list[protocol.Event]:
        return [e for _at, e in self.messages(device_id, protocol.Channel.EVENT)]

    def availability(self, device_id: str, since: float = 0.0) -> list[tuple[float, str]]:
        return [
            (at, a.state.value)
            for at, a in self.messages(device_id, protocol.Channel.AVAILABILITY, since)
        ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)  # as MqttLink.stop() does


def read_retained(broker: Broker, topics: Iterable[str], settle_s: float = 0.5) -> dict[str, bytes]:
    """What the broker retains now on these topics (a fresh subscriber's view)."""
    wanted = list(topics)
    found: dict[str, bytes] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retained-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(broker.console_username, broker.console_password)

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            c.subscribe([(t, 1) for t in wanted])

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            with lock:
                found[msg.topic] = bytes(msg.payload)

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    try:
        client.connect(broker.host, broker.port, keepalive=30)
        client.loop_start()
        if not subscribed.wait(10):
            raise AssertionError("could not subscribe to read the retained messages")
        time.sleep(settle_s)  # retained messages follow the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
        client._reset_sockets(sockpair_only=True)
    with lock:
        return dict(found)


def retained_device_view(broker: Broker, device_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per device: retained availability ('online'/'offline'/None), whether the retained state
    says it is playing, and whether its amplifier is on (None: no retained state)."""
    ids = list(device_ids)
    topics = [
        protocol.device_topic(d, ch)
        for d in ids
        for ch in (protocol.Channel.AVAILABILITY, protocol.Channel.STATE, protocol.Channel.CONFIG)
    ]
    found = read_retained(broker, topics)
    view: dict[str, dict[str, Any]] = {}
    for device_id in ids:
        avail = found.get(protocol.device_topic(device_id, protocol.Channel.AVAILABILITY))
        state = found.get(protocol.device_topic(device_id, protocol.Channel.STATE))
        config = found.get(protocol.device_topic(device_id, protocol.Channel.CONFIG))
        decoded_state = protocol.decode(protocol.DeviceState, state) if state else None
        view[device_id] = {
            "availability": (
                protocol.decode(protocol.Availability, avail).state.value if avail else None
            ),
            "playing": decoded_state.playing.command_id
            if decoded_state and decoded_state.playing
            else None,
            "amplifier_on": decoded_state.amplifier_on if decoded_state else None,
            "has_state": decoded_state is not None,
            "has_config": bool(config),
        }
    return view


def outbox_events(state_dir: Path) -> list[protocol.Event]:
    """The events waiting in a bridge's outbox, oldest first (read-only, while it runs)."""
    path = state_dir / "outbox.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [
        protocol.decode(protocol.Event, payload)
        for topic, payload in rows
        if topic.endswith(f"/{protocol.Channel.EVENT.value}")
    ]


def save_broker_state(broker: Broker, timeout_s: float = 10.0) -> None:
    """Make Mosquitto write its persistence file now (SIGUSR1), as its autosave does every
    30 s: what a broker that has run for a while would restart from after a crash."""
    db_file = broker.process.settings.data_dir / "mosquitto.db"
    before = db_file.stat().st_mtime_ns if db_file.exists() else 0
    pid = broker.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if db_file.exists() and db_file.stat().st_mtime_ns != before:
            time.sleep(0.2)  # written in one go; let it finish
            return
        time.sleep(0.05)
    raise AssertionError("the broker did not save its state")
