"""Telemetry ingest: the highest offered rate (messages per second) the console worker stores
with zero loss, for 10,000 device identities, against a bare paho subscriber that only decodes
JSON at the same offered rates. Also the stack the scheduler benchmark shares: a real
Mosquitto with authentication and a migrated database in a temporary instance folder."""

from __future__ import annotations

import cProfile
import json
import math
import multiprocessing
import os
import pstats
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, insert, select

from bench.report import Comparison, Figure, Section, fmt
from console.broker import BrokerProcess, BrokerSettings, DynsecAdmin, free_port
from console.db import Database, upgrade
from console.devrun import broker_config
from console.ingest import SUBSCRIPTIONS, Incoming, Ingest
from console.models import Device, DeviceConfigRecord, IngestCounter, Zone, ZoneKind
from console.settings import Settings
from console.worker import build_worker
from device_profiles import protocol

DEVICES = 10_000
HAMLETS = 100
STATE_EVERY = 10  # one message in ten is a (retained, QoS 1) state, the rest telemetry
WINDOW_S = 5.0  # each offered rate is held this long
DRAIN_S = 0.6  # after the window, this long to have stored everything (else: not sustained)
COARSE_STEP = 1.25  # the first search climbs by this ratio from the capacity probe,
RATE_STEP = 1.12  # later ones (from the previous result) by this, the precision of all
MAX_STEPS = 5  # rate steps per search, at most
PROBE_MESSAGES = 3_000  # a first burst, as fast as the publisher can, to estimate capacity
STORED_CHANNELS = ("in_telemetry", "in_state")
LOSS_COUNTERS = ("dropped_queue_full", "store_failed", "malformed", "unknown_device")
PROFILE_TOP = 8
PROFILE_MESSAGES = 3_000
ROOT = Path(__file__).resolve().parents[1]
SPAWN = multiprocessing.get_context("spawn")


# --- the stack: broker, instance settings, database ------------------------------------------


@dataclass
class Instance:
    settings: Settings
    broker: BrokerProcess
    db: Database

    @property
    def console_login(self) -> tuple[str, int, str, str]:
        b = self.settings.broker
        return b.host, b.port, b.console_username, b.console_password.get_secret_value()


@contextmanager
def console_instance(root: Path, *, web_port: int | None = None) -> Iterator[Instance]:
    """A real authenticated Mosquitto and a migrated SQLite database under `root`."""
    broker_settings = BrokerSettings(
        data_dir=root / "broker",
        admin_username="broker-admin",
        admin_password=secrets.token_urlsafe(16),
        port=free_port(),
    )
    broker = BrokerProcess(broker_settings)
    broker.start()
    try:
        console_password = secrets.token_urlsafe(16)
        with DynsecAdmin(
            broker_settings.host,
            broker_settings.port,
            broker_settings.admin_username,
            broker_settings.admin_password,
        ) as admin:
            admin.provision_console("console", console_password)
        port = web_port or free_port()
        settings = Settings(
            instance_dir=root,
            secret_key=secrets.token_hex(16),
            database_url=f"sqlite:///{root / 'console.sqlite3'}",
            media_dir=root / "media",
            public_base_url=f"http://127.0.0.1:{port}",
            web_port=port,
            broker=broker_config(broker_settings, "console", console_password),
        )
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        try:
            yield Instance(settings, broker, db)
        finally:
            db.dispose()
    finally:
        broker.stop()


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> float:
    """Seconds it took for `predicate` to hold; RuntimeError after `timeout_s`."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - start


def wait_quiet(count: Callable[[], int], quiet_s: float = 0.5, timeout_s: float = 60.0) -> int:
    """Wait until `count()` has not moved for `quiet_s`; returns it."""
    deadline = time.monotonic() + timeout_s
    last, since = count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now_count = count()
        if now_count != last:
            last, since = now_count, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return last
    raise RuntimeError(f"the count never settled within {timeout_s:.0f} s (last {last})")


def load_note(at_start: float) -> str:
    """The machine's load around a benchmark: other work on it disturbs every figure."""
    return (
        f"1-minute load average: {at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
        f"end ({os.cpu_count()} cores); above the core count, other work shared the machine."
    )


def _package(path: str, name: str) -> str:
    """Where a profiled function lives: a project package, a library, or C code."""
    if path == "~":
        if "sqlite3" in name:
            return "sqlite3 (C)"
        if "lock" in name or "wait" in name:
            return "waiting on locks"
        return "builtins"
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if Path(path).is_relative_to(ROOT):
        return parts[len(ROOT.parts)]
    lib = [i for i, part in enumerate(parts) if part.startswith("python3")]
    module = parts[lib[-1] + 1] if lib and lib[-1] + 1 < len(parts) else Path(path).name
    return f"stdlib {module.removesuffix('.py')}"


def _is_project(path: str) -> bool:
    p = Path(path)
    return (
        path != "~"
        and p.is_relative_to(ROOT)
        and "site-packages" not in p.parts
        and not p.is_relative_to(ROOT / "bench")
    )


def profile_summary(stats: pstats.Stats, per: int, per_what: str, top: int = PROFILE_TOP) -> str:
    """Own time by package, then the project's functions by cumulative time, per `per_what`."""
    table: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    table = stats.stats  # type: ignore[attr-defined]
    own: dict[str, float] = {}
    for (path, _line, name), (_cc, _calls, tottime, _cum, _callers) in table.items():
        key = _package(path, name)
        own[key] = own.get(key, 0.0) + tottime
    total = sum(own.values()) or 1.0
    shares = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:6]
    project = [(key, value) for key, value in table.items() if _is_project(key[0])]
    project.sort(key=lambda kv: kv[1][3], reverse=True)
    functions = [
        f"`{name}` ({Path(path).parent.name}/{Path(path).name}) {fmt(cum / per * 1e3)} ms"
        for (path, _line, name), (_cc, _calls, _tt, cum, _callers) in project[:top]
    ]
    return (
        f"own time by package: {', '.join(f'{k} {v / total:.0%}' for k, v in shares)}; "
        f"project functions by cumulative time per {per_what}: {', '.join(functions)}"
    )


# --- processes: a publisher at a fixed offered rate, and the bare subscriber -----------------


def device_ids(n: int = DEVICES) -> list[str]:
    return [f"loa-{i:05d}" for i in range(n)]


def _payloads(n_devices: int) -> list[tuple[str, bytes, int, bool]]:
    """One valid uplink message per device and channel, state every STATE_EVERY-th."""
    ts = int(time.time() * 1000)
    out: list[tuple[str, bytes, int, bool]] = []
    for i, device_id in enumerate(device_ids(n_devices)):
        if i % STATE_EVERY == STATE_EVERY - 1:
            state = protocol.DeviceState(
                id=protocol.new_message_id(),
                ts=ts,
                device_id=device_id,
                profile="speaker-node",
                software_version="0.1.0",
                volume_pct=80,
                zones=[f"thon-{i % HAMLETS:03d}", "xa-bench"],
                counters={"duplicate_command": 0, "fetch_failed": 0},
            )
            topic = protocol.device_topic(device_id, protocol.Channel.STATE)
            out.append((topic, protocol.encode(state), 1, True))
        else:
            tele = protocol.Telemetry(
                id=protocol.new_message_id(),
                ts=ts,
                device_id=device_id,
                uptime_s=3600.0 + i,
                cpu_temp_c=48.5,
                disk_free_mb=12_000.0,
                clock_offset_ms=12,
                link_quality_pct=70,
                amplifier_on_s=120.0,
                cache_bytes=5_000_000,
                counters={"link_connects": 1, "outbox_confirmed": 40},
            )
            topic = protocol.device_topic(device_id, protocol.Channel.TELEMETRY)
            out.append((topic, protocol.encode(tele), 0, False))
    return out


def _connect(client_id: str, login: tuple[str, int, str, str]) -> mqtt.Client:
    host, port, username, password = login
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    return client


def _publisher_main(conn: Connection, login: tuple[str, int, str, str], n_devices: int) -> None:
    """Publish ("run", rate_per_s, count) messages at that pace; answer (sent, seconds)."""
    payloads = _payloads(n_devices)
    client = _connect(f"bench-pub-{secrets.token_hex(4)}", login)
    cursor = 0
    try:
        while True:
            cmd = conn.recv()
            if cmd[0] != "run":
                return
            rate, count = float(cmd[1]), int(cmd[2])
            start = time.perf_counter()
            deadline = start + count / rate * 3 + 10
            sent = 0
            last: mqtt.MQTTMessageInfo | None = None
            while sent < count and time.perf_counter() < deadline:
                due = min(count, int((time.perf_counter() - start) * rate) + 1)
                while sent < due:
                    topic, payload, qos, retain = payloads[cursor]
                    cursor = (cursor + 1) % len(payloads)
                    info = client.publish(topic, payload, qos=qos, retain=retain)
                    if qos:
                        last = info
                    sent += 1
                if sent < count:
                    time.sleep(0.001)
            elapsed = time.perf_counter() - start
            if last is not None:
                last.wait_for_publish(10)
            conn.send((sent, elapsed))
    finally:
        client.loop_stop()
        client.disconnect()


def _subscriber_main(conn: Connection, login: tuple[str, int, str, str], counter: Any) -> None:
    """The baseline: subscribe like the worker, json-decode each message, count it. On
    "reset" it reconnects with a clean session, so a step starts with no backlog."""
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(SUBSCRIPTIONS)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        json.loads(msg.payload)
        counter.value += 1

    host, port, username, password = login
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{secrets.token_hex(4)}")
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message

    def connect() -> bool:
        subscribed.clear()
        client.connect(host, port, keepalive=60)
        client.loop_start()
        return subscribed.wait(30)

    try:
        conn.send(connect())
        while conn.recv() == "reset":
            client.disconnect()
            client.loop_stop()
            conn.send(connect())
    finally:
        client.disconnect()
        client.loop_stop()


class Publisher:
    """The publisher process; a context manager."""

    def __init__(self, login: tuple[str, int, str, str], n_devices: int = DEVICES) -> None:
        self._conn, child = SPAWN.Pipe()
        self._proc = SPAWN.Process(
            target=_publisher_main, args=(child, login, n_devices), name="bench-publisher"
        )
        self._proc.start()

    def run(self, rate_per_s: float, count: int) -> tuple[int, float]:
        self._conn.send(("run", rate_per_s, count))
        if not self._conn.poll(count / rate_per_s * 3 + 60):
            raise RuntimeError("the publisher did not answer")
        sent, elapsed = self._conn.recv()
        return int(sent), float(elapsed)

    def close(self) -> None:
        self._conn.send(("stop",))
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BareSubscriber:
    """The baseline subscriber process; `count()` is how many messages it decoded."""

    def __init__(self, login: tuple[str, int, str, str]) -> None:
        self._counter = SPAWN.RawValue("q", 0)
        self._conn, child = SPAWN.Pipe()
        self._proc = SPAWN.Process(
            target=_subscriber_main, args=(child, login, self._counter), name="bench-subscriber"
        )
        self._proc.start()
        self._ready("start")

    def _ready(self, what: str) -> None:
        if not (self._conn.poll(60) and self._conn.recv()):
            raise RuntimeError(f"the bare subscriber did not {what}")

    def count(self) -> int:
        return int(self._counter.value)

    def reset(self) -> None:
        """A fresh clean session: the broker forgets whatever it still queued for it."""
        self._conn.send("reset")
        self._ready("reconnect")

    def close(self) -> None:
        self._conn.send("stop")
        self._proc.join(15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> BareSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the search for the highest rate with zero loss ------------------------------------------


@dataclass(frozen=True)
class Step:
    offered_per_s: float
    sent: int
    counted: int  # within the window and DRAIN_S after it
    counted_late: int  # once the count settled
    sent_per_s: float  # what the publisher managed

    @property
    def sustained(self) -> bool:
        return self.counted >= self.sent

    @property
    def publisher_limited(self) -> bool:
        return self.sent_per_s < 0.95 * self.offered_per_s

    def describe(self) -> str:
        if self.sustained:
            return f"{fmt(self.offered_per_s)}/s ok"
        lost = max(0, self.sent - self.counted_late)
        behind = self.sent - self.counted
        what = f"lost {lost:,}" if lost else f"{behind:,} not yet stored after {DRAIN_S} s"
        return f"{fmt(self.offered_per_s)}/s: {what}"


def settle(count: Callable[[], int], target: int, still_s: float = 5.0) -> tuple[int, float]:
    """Wait until `count()` reaches `target` or has not moved for `still_s`: (the count, the
    monotonic time it last moved)."""
    last, since = count(), time.monotonic()
    deadline = since + 120
    while last < target and time.monotonic() - since < still_s and time.monotonic() < deadline:
        time.sleep(0.01)
        now_count = count()
        if now_count != last:
            last, since = now_count, time.monotonic()
    return last, since


CountFn = Callable[[], int]


@dataclass(frozen=True)
class Receiver:
    """What the search measures: its count of messages, and how to start a step clean."""

    count: CountFn
    reset: Callable[[], None] = lambda: None


def trial(publisher: Publisher, receiver: Receiver, rate_per_s: float, n: int) -> Step:
    """Offer `n` messages at `rate_per_s`; how many were counted in time, and at all."""
    receiver.reset()
    count = receiver.count
    before = wait_quiet(count, 1.0)
    sent, elapsed = publisher.run(rate_per_s, n)
    deadline = time.monotonic() + DRAIN_S
    while count() - before < sent and time.monotonic() < deadline:
        time.sleep(0.02)
    counted = count() - before
    late = counted if counted >= sent else settle(count, before + sent)[0] - before
    return Step(rate_per_s, sent, counted, late, sent / elapsed if elapsed > 0 else 0.0)


def probe(publisher: Publisher, receiver: Receiver) -> float:
    """Capacity estimate: a burst as fast as the publisher goes; messages counted per second."""
    receiver.reset()
    count = receiver.count
    before = wait_quiet(count)
    start = time.monotonic()
    sent, _ = publisher.run(1e7, PROBE_MESSAGES)
    counted, last_moved = settle(count, before + sent, still_s=2.0)
    return max(1.0, (counted - before) / max(last_moved - start, 1e-3))


def highest_sustained(
    publisher: Publisher, receiver: Receiver, start_per_s: float, factor: float
) -> tuple[float, list[Step], bool]:
    """Climb (or descend) by `factor` from `start_per_s` until one rate holds and another
    fails, then halve the gap (geometrically) until it is within RATE_STEP. The flag says
    the publisher could not offer more: the result is then a lower bound."""
    rate, held, failed, steps = start_per_s, 0.0, math.inf, []
    for _ in range(MAX_STEPS):
        step = trial(publisher, receiver, round(rate), max(1, int(rate * WINDOW_S)))
        steps.append(step)
        if step.sustained and step.publisher_limited:
            return max(held, step.sent_per_s), steps, True  # the publisher is the limit
        if step.sustained:
            held = max(held, rate)
        else:
            failed = min(failed, rate)
        if held and failed < math.inf:
            if failed / held <= RATE_STEP * 1.001:
                break
            rate = math.sqrt(held * failed)
        else:
            rate = rate * factor if held else rate / factor
    return round(held), steps, False


# --- the subject and the baseline ---------------------------------------------------------


def register_fleet(db: Database, n_devices: int = DEVICES) -> None:
    """A commune, its hamlets and `n_devices` devices, written straight to the database."""
    zones = [{"id": "xa-bench", "name": "Xã Bench", "kind": ZoneKind.COMMUNE, "parent_id": None}]
    zones += [
        {
            "id": f"thon-{h:03d}",
            "name": f"Thôn {h}",
            "kind": ZoneKind.HAMLET,
            "parent_id": "xa-bench",
        }
        for h in range(HAMLETS)
    ]
    now = datetime.now(UTC)
    devices = [
        {
            "id": device_id,
            "name": device_id,
            "profile": "speaker-node",
            "zone_id": f"thon-{i % HAMLETS:03d}",
            "secret_sha256": "0" * 64,
            "created_at": now,
            "online": False,
        }
        for i, device_id in enumerate(device_ids(n_devices))
    ]
    with db.session() as session:
        session.execute(insert(Zone), zones)
        session.execute(insert(Device), devices)


def stored_count(db: Database) -> Callable[[], int]:
    def count() -> int:
        with db.session() as session:
            total = session.scalar(
                select(func.sum(IngestCounter.count)).where(IngestCounter.name.in_(STORED_CHANNELS))
            )
            return int(total or 0)

    return count


def loss_counters(db: Database) -> dict[str, int]:
    with db.session() as session:
        rows = session.execute(
            select(IngestCounter.name, IngestCounter.count).where(
                IngestCounter.name.in_(LOSS_COUNTERS)
            )
        ).all()
        return {name: int(n) for name, n in rows}


def configs_confirmed(db: Database) -> int:
    with db.session() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    DeviceConfigRecord.published_version == DeviceConfigRecord.version
                )
            )
            or 0
        )


def _store_batches(n: int) -> list[list[Incoming]]:
    now = datetime.now(UTC)
    items = [Incoming(t, p, now) for t, p, _qos, _retain in _payloads(DEVICES)[:n]]
    return [items[i : i + 500] for i in range(0, len(items), 500)]


def store_path_rate(db: Database, n: int = PROFILE_MESSAGES) -> float:
    """`Ingest.handle_batch` alone (no MQTT, no queue) on the same mix: messages per second."""
    batches = _store_batches(n)
    ingest = Ingest(db)
    start = time.perf_counter()
    for batch in batches:
        ingest.handle_batch(batch)
    return n / (time.perf_counter() - start)


def store_path_profile(db: Database, n: int = PROFILE_MESSAGES) -> pstats.Stats:
    batches = _store_batches(n)
    ingest = Ingest(db)
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        ingest.handle_batch(batch)
    profiler.disable()
    return pstats.Stats(profiler)


@dataclass
class Search:
    """The highest sustained rate of each run, and the steps that found it."""

    best_per_s: list[float]
    steps: list[str]
    publisher_limited: bool


def search_runs(publisher: Publisher, receiver: Receiver, repeat: int) -> Search:
    start = probe(publisher, receiver)
    found = Search([], [], False)
    for _ in range(repeat):
        factor = COARSE_STEP if not found.best_per_s else RATE_STEP
        best, steps, limited = highest_sustained(publisher, receiver, start, factor)
        found.best_per_s.append(best)
        found.steps.append(", ".join(s.describe() for s in steps))
        found.publisher_limited |= limited
        start = best or start
    return found


def worker_runs(inst: Instance, publisher: Publisher, repeat: int) -> tuple[Search, float, str]:
    """The console worker as the receiver: (search, config push seconds, loss counters)."""
    worker = build_worker(inst.settings, db=inst.db)
    worker.start()
    try:
        pushed_s = wait_until(lambda: configs_confirmed(inst.db) >= DEVICES, 300, "config push")
        count = stored_count(inst.db)
        wait_quiet(count, 1.0, 120)
        found = search_runs(publisher, Receiver(count), repeat)
    finally:
        worker.stop()
    losses = loss_counters(inst.db)
    lost = ", ".join(f"{k} {v:,}" for k, v in sorted(losses.items())) or "none counted"
    return found, pushed_s, lost


def run(repeat: int) -> Section:
    load_at_start = os.getloadavg()[0]
    section = Section(
        "Telemetry ingest: sustained messages per second",
        f"A publisher process offers valid v1 uplink messages for {DEVICES:,} registered "
        f"devices (telemetry at QoS 0; one in {STATE_EVERY} a retained QoS 1 state) at a fixed "
        f"rate for {WINDOW_S:.0f} s; a rate counts as sustained when every message is stored "
        f"(the ingest's committed `in_telemetry` + `in_state` counters) by {DRAIN_S} s after "
        f"the last publish. The first run climbs by ×{COARSE_STEP} from a capacity probe, "
        f"later ones by ×{RATE_STEP} from the previous result; the gap between the highest "
        f"rate that held and the lowest that failed is narrowed to ×{RATE_STEP}. The subject "
        "is the real console worker (`build_worker`: MQTT link, ingest writer, SQLite in WAL "
        "mode) behind a real Mosquitto with authentication; the baseline, in the same run, a "
        "bare paho subscriber in its own process that only `json.loads` each message, counted "
        "the same way; it reconnects with a clean session before each step, so the backlog of "
        "an overloaded step (the broker throttles QoS 1 to a lagging subscriber) never spills "
        "into the next. "
        "Publisher, broker and receiver share the machine.",
    )
    rates = Comparison(
        "highest sustained rate, zero loss",
        Figure("console worker stores", "msg/s"),
        Figure("bare paho subscriber decodes", "msg/s"),
    )
    fleet = Figure("fleet one machine serves at 1 message per device per 60 s", "devices")
    store_alone = Figure("store path alone: `Ingest.handle_batch`, no MQTT", "msg/s")
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        console_instance(Path(tmp)) as inst,
    ):
        register_fleet(inst.db)
        with Publisher(inst.console_login) as publisher:
            with BareSubscriber(inst.console_login) as sub:
                base = search_runs(publisher, Receiver(sub.count, sub.reset), repeat)
            subject, pushed_s, lost = worker_runs(inst, publisher, repeat)
        for _ in range(repeat):
            store_alone.add(store_path_rate(inst.db))
        profile = store_path_profile(inst.db)
    rates.subject.samples += subject.best_per_s
    rates.baseline.samples += base.best_per_s
    fleet.samples += [r * 60 for r in subject.best_per_s]
    section.comparisons.append(rates)
    section.figures += [fleet, store_alone]
    section.notes += [
        f"The worker's start pushed a retained config to each of the {DEVICES:,} devices "
        f"({pushed_s:.0f} s); the measurements began after it.",
        f"Loss counters after the worker's runs: {lost}. A failed step's messages were all "
        "stored later unless it says 'lost': the ingest queue (100,000) buffers a short excess.",
        "Worker rate steps per run: " + " | ".join(subject.steps) + ".",
        "Bare subscriber rate steps per run: " + " | ".join(base.steps) + ".",
        load_note(load_at_start),
    ]
    if base.publisher_limited:
        section.notes.append(
            "In at least one run the baseline reached the publisher's own limit: that figure "
            "is a lower bound, and its ratio an upper bound."
        )
    if rates.ratios().median < 0.5:
        section.notes.append(
            f"Where the worker's time goes — cProfile of `Ingest.handle_batch` on "
            f"{PROFILE_MESSAGES:,} messages of the same mix, "
            + profile_summary(profile, PROFILE_MESSAGES, "message")
            + "."
        )
    return section
