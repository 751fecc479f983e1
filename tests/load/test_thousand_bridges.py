"""Load held: N simulated bridges send telemetry every 5 s while the duty officer sounds an
emergency on the whole commune and stops it — no message lost, every speaker acknowledges.

A whole commune on this machine, built with bench/fanout.py's blocks: Mosquitto with one
account per device, the console web and worker as processes of their own, and the bridges in
fleet processes of 25 (`python -m firmware_bridge --simulate --fleet-dir`) at nice 19.
Telemetry is counted at both ends: each fleet process writes its bridges' counters when it
exits (`--counters-out`; `link_sent_telemetry`), and the worker's ingest commits its counters
(table ingest_counters; `in_telemetry`) in the transaction that stores what they count. A
listener on the console's account is a third count in between, and the broker's own drop
counter ($SYS) must stay at 0.

100 bridges run in the default suite, 1,000 only in `make soak` (LOA_SOAK=1). The figures are
printed, and written as JSON to the file LOA_LOAD_REPORT names (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from bench.fanout import (
    FLEET_NICE,
    SHARD_SIZE,
    Console,
    Fleet,
    Uplink,
    cpu_s,
    create_zones,
    ffprobe_stub,
    percentile,
    provision_in_bulk,
    running_console,
    spawn,
    start_fleet_part,
    upload_preset,
)
from console.models import Delivery, Device, IngestCounter
from console.settings import Settings
from device_profiles import protocol
from device_profiles.profiles import PROFILES_DIR, load_profile
from tests.conftest import wait_for

TELEMETRY_S = 5
COMMUNE = "xa-tai"
HAMLETS = ["thon-1", "thon-2", "thon-3", "thon-4"]
ZONE_TREE = [(COMMUNE, "commune", None), *((h, "hamlet", COMMUNE) for h in HAMLETS)]
PRESET = "fire"  # upload_preset makes the tone the 'fire' preset, cached ahead by every bridge
ENDED = ("stopped", "finished", "preempted")
SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
SYS_INTERVAL_S = 10  # Mosquitto's default: how often it refreshes $SYS
EMERGENCY_TRIES = 3  # a 503 is pressed again, as the duty officer would; counted
# Counters of messages the ingest could not store: each one is a loss.
INGEST_LOSSES = ("dropped_queue_full", "store_failed", "malformed", "device_mismatch")

RUNS = [
    pytest.param(100, 20, id="100", marks=pytest.mark.timeout(900)),
    pytest.param(1000, 60, id="1000", marks=[pytest.mark.soak, pytest.mark.timeout(3600)]),
]


# --- what the console's account hears ---------------------------------------------------------


class Listener(Uplink):
    """Availability, telemetry and acks as the worker hears them (bench's Uplink, plus the
    telemetry per device, every ack id, and the devices heard going offline while watched)."""

    def __init__(self, settings: Settings) -> None:
        self._lock = threading.Lock()
        self.telemetry: Counter[str] = Counter()
        self.ack_ids: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
        self.went_offline: list[str] = []
        self.watching = False
        super().__init__(settings)

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        channels = (protocol.Channel.AVAILABILITY, protocol.Channel.TELEMETRY, protocol.Channel.ACK)
        client.subscribe([(protocol.uplink_subscription(c), protocol.QOS[c]) for c in channels])

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            device_id, channel = protocol.parse_device_topic(msg.topic)
            message = protocol.decode_for_channel(channel, msg.payload)
        except protocol.ProtocolError:
            return  # a cleared retained message
        with self._lock:
            if isinstance(message, protocol.Telemetry):
                self.telemetry[device_id] += 1
            elif isinstance(message, protocol.Ack):
                key = (message.command_id, message.status.value)
                self.acks.setdefault(key, {}).setdefault(device_id, (now, message.ts))
                self.ack_ids[(*key, device_id)].add(message.id)
            elif isinstance(message, protocol.Availability):
                online = message.state is protocol.AvailabilityState.ONLINE
                self.online[device_id] = online
                if self.watching and not online:
                    self.went_offline.append(device_id)

    def telemetry_total(self) -> int:
        with self._lock:
            return sum(self.telemetry.values())

    def close(self) -> None:
        super().close()
        self._client._reset_sockets(sockpair_only=True)  # else a ResourceWarning at GC


class CountingFleet(Fleet):
    """Fleet processes that write their bridges' counters when they exit."""

    def start(self, shard: Path, config: str = "--fleet-dir") -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "firmware_bridge", "--simulate", config, str(shard)]
        argv += ["--counters-out", str(counters_file(shard)), "--log-level", "warning"]
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        proc = spawn(argv, self.logs / f"fleet-{shard.stem}.log", self.env)
        self.processes.append(proc)
        return proc


def counters_file(shard: Path) -> Path:
    return shard / "counters.json"


def sent_by_bridges(shards: Sequence[Path]) -> Counter[str]:
    """Every bridge's counters, summed; a fleet process that left no file did not stop cleanly."""
    total: Counter[str] = Counter()
    for shard in shards:
        path = counters_file(shard)
        assert path.exists(), f"fleet process of {shard.name} wrote no counters (killed?)"
        for counters in json.loads(path.read_text(encoding="utf-8")).values():
            total.update(counters)
    return total


# --- the commune --------------------------------------------------------------------------------


def telemetry_profile(work: Path, interval_s: int) -> Path:
    """The speaker-node profile with telemetry every `interval_s` (bridges load it by path)."""
    text = (PROFILES_DIR / "speaker-node.toml").read_text(encoding="utf-8")
    text, replaced = re.subn(r"(?m)^interval_s = \d+", f"interval_s = {interval_s}", text)
    assert replaced == 1, "speaker-node.toml has no [telemetry] interval_s line"
    path = work / "speaker-node-load.toml"
    path.write_text(text, encoding="utf-8")
    assert load_profile(path).telemetry.interval_s == interval_s
    return path


def use_profile(shards: Sequence[Path], profile: Path) -> None:
    """Point every bridge config at `profile` (the console wrote the bundled name)."""
    for shard in shards:
        for config in shard.glob("*.toml"):
            text = config.read_text(encoding="utf-8")
            new = text.replace('profile = "speaker-node"', f"profile = {json.dumps(str(profile))}")
            assert new != text, f"{config.name}: no profile line"
            config.write_text(new, encoding="utf-8")


def online_in_db(console: Console) -> int:
    with console.db.session() as session:
        return session.scalar(select(func.count(Device.id)).where(Device.online.is_(True))) or 0


def ingest_counters(console: Console) -> dict[str, int]:
    with console.db.session() as session:
        return {c.name: c.count for c in session.scalars(select(IngestCounter))}


def deliveries(console: Console, broadcast_id: str) -> list[Delivery]:
    with console.db.session() as session:
        stmt = select(Delivery).where(Delivery.broadcast_id == broadcast_id)
        return list(session.scalars(stmt))


class DropWatcher:
    """Mosquitto's count of messages it dropped (full queues), followed as its administrator.

    Mosquitto republishes a $SYS value only when it changes (within SYS_INTERVAL_S), retained
    but expiring after 60 s: so it is followed from the broker's first minute, not read once
    at the end."""

    def __init__(self, console: Console, timeout_s: float = 15.0) -> None:
        b = console.settings.broker
        self.values: list[int] = []
        self._got = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"load-sys-{uuid.uuid4().hex[:8]}"
        )
        self._client.username_pw_set(b.admin_username, b.admin_password.get_secret_value())
        self._client.on_connect = lambda c, *_: c.subscribe(SYS_DROPPED)
        self._client.on_message = self._message
        self._client.connect(b.host, b.port, keepalive=30)
        self._client.loop_start()
        if not self._got.wait(timeout_s):
            self.close()
            raise AssertionError(f"no {SYS_DROPPED} from the broker")

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.values.append(int(msg.payload))
        self._got.set()

    @property
    def dropped(self) -> int:
        return self.values[-1]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets(sockpair_only=True)

    def __enter__(self) -> DropWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def load_sampled(every_s: float = 1.0) -> Iterator[list[float]]:
    """The 1-minute load average, sampled while the block runs."""
    samples: list[float] = [os.getloadavg()[0]]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            samples.append(os.getloadavg()[0])

    thread = threading.Thread(target=sample, name="load-average", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(5)


def ms_summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 50)),
        "p95": round(percentile(values, 95)),
        "max": round(percentile(values, 100)),
    }


# --- one emergency and its STOP -----------------------------------------------------------------


@dataclass
class Emergency:
    broadcast_id: str = ""
    refused: int = 0  # emergency calls answered 503 (then pressed again)
    api_ms: float = 0.0
    received_ms: list[float] = field(default_factory=list)
    started_ms: list[float] = field(default_factory=list)
    ended_ms: list[float] = field(default_factory=list)  # from the STOP call
    not_started: list[str] = field(default_factory=list)
    not_ended: list[str] = field(default_factory=list)


def sound_and_stop(console: Console, listener: Listener, ids: Sequence[str]) -> Emergency:
    """POST /api/v1/emergency as the emergency page sends it, every bridge's 'started', then
    POST /api/v1/stop for that broadcast and every bridge's end."""
    out = Emergency()
    body = {"zone_ids": [COMMUNE], "preset_key": PRESET, "repeat": 1}
    for _ in range(EMERGENCY_TRIES):
        start = time.perf_counter()
        resp = console.call("POST", "/emergency", json=body)
        if resp.status_code != 503:
            break
        out.refused += 1
    out.api_ms = (time.perf_counter() - start) * 1000
    out.broadcast_id = bid = console.check(resp, "POST /emergency").json()["id"]
    wait_s = console.settings.play_lead_s + 60 + len(ids) / 20
    started = listener.wait_acks(bid, "started", ids, wait_s)
    received = listener.heard(bid, "received")
    stop_at = time.perf_counter()
    console.api("POST", "/stop", json={"target_id": bid, "zone_ids": [COMMUNE]})

    def ended() -> dict[str, float]:
        firsts: dict[str, float] = {}
        for status in ENDED:
            for device_id, (heard, _ts) in listener.heard(bid, status).items():
                firsts[device_id] = min(heard, firsts.get(device_id, heard))
        return firsts

    deadline = time.monotonic() + wait_s
    while len(ended()) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    ends = ended()
    out.received_ms = [(t - start) * 1000 for t, _ in received.values()]
    out.started_ms = [(t - start) * 1000 for t, _ in started.values()]
    out.ended_ms = [(t - stop_at) * 1000 for t in ends.values()]
    out.not_started = sorted(set(ids) - set(started))
    out.not_ended = sorted(set(ids) - set(ends))
    return out


# --- the run ------------------------------------------------------------------------------------


def hold_load(
    console: Console, drops: DropWatcher, work: Path, n: int, window_s: float, fig: dict[str, Any]
) -> None:
    """Settle N bridges, hold a window of telemetry with an emergency in its middle, stop the
    fleet, count; figures into `fig`, then every promise checked."""
    clock = time.monotonic()
    create_zones(console, ZONE_TREE)
    shards = [work / "fleet" / f"shard-{k:02d}" for k in range(-(-n // SHARD_SIZE))]
    for shard in shards:
        shard.mkdir(parents=True)
    devices = [
        (f"loa-{i:04d}", HAMLETS[i % len(HAMLETS)], shards[i // SHARD_SIZE]) for i in range(n)
    ]
    ids = [d for d, _, _ in devices]
    shard_of = {d: s for d, _, s in devices}
    provision_in_bulk(console, devices)
    use_profile(shards, telemetry_profile(work, TELEMETRY_S))
    sha, duration_ms = upload_preset(console, work)
    fig["setup_s"] = round(time.monotonic() - clock, 1)

    listener = Listener(console.settings)
    fleet = CountingFleet(console.logs, ffprobe_stub(work / "bin", duration_ms), FLEET_NICE)
    try:
        clock = time.monotonic()
        start_fleet_part(console, listener, fleet, shards, ids, shard_of, sha)
        wait_for(lambda: online_in_db(console) == n, 120, f"{n} devices online in the database")
        wait_for(lambda: len(listener.telemetry) == n, 120, "telemetry from every bridge")
        fig["settle_s"] = round(time.monotonic() - clock, 1)
        emergency = hold_window(console, listener, fleet, ids, window_s, fig)
        fig["online_at_end"] = online_in_db(console)
    finally:
        clock = time.monotonic()
        fleet.stop()
        fig["fleet_stop_s"] = round(time.monotonic() - clock, 1)
        stopped_at = time.monotonic()
        listener.close()

    sent = sent_by_bridges(shards)
    fig["telemetry_sent"] = sent["link_sent_telemetry"]
    fig["bridge_publish_failed"] = sent["link_publish_failed"]
    fig["bridge_skipped_offline"] = sent["link_skipped_offline"]
    fig["bridge_outbox_left"] = sent["outbox_queued"]
    fig["bridge_outbox_dropped"] = sent["outbox_dropped"]
    fig["bridge_reconnects"] = sent["link_connects"] - n
    fig["telemetry_heard_by_listener"] = listener.telemetry_total()
    wait_for(
        lambda: ingest_counters(console).get("in_telemetry", 0) >= sent["link_sent_telemetry"],
        120,
        "the ingest to store every telemetry message sent",
    )
    time.sleep(1)  # anything beyond what was sent would show now
    counters = ingest_counters(console)
    fig["telemetry_ingested"] = counters.get("in_telemetry", 0)
    fig["ingest_counters"] = counters

    deadline = time.monotonic() + 60  # the ingest stores the last acks
    while True:
        rows = deliveries(console, emergency.broadcast_id)
        if all(d.status.value in ENDED for d in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    fig["deliveries"] = dict(Counter(d.status.value for d in rows))
    time.sleep(max(0.0, SYS_INTERVAL_S + 1 - (time.monotonic() - stopped_at)))
    fig["broker_dropped"] = drops.dropped
    broker_log = console.broker.settings.log_path.read_text(errors="replace")
    fig["broker_log_drops"] = broker_log.count("messages are being dropped")

    # No message lost: bridges -> broker -> ingest, and the broker dropped nothing.
    assert fig["telemetry_sent"] > 0
    assert fig["bridge_publish_failed"] == 0  # (skipped_offline: before the first connect)
    assert fig["telemetry_ingested"] == fig["telemetry_sent"], fig
    assert fig["telemetry_heard_by_listener"] == fig["telemetry_sent"], fig
    assert {k: counters.get(k, 0) for k in INGEST_LOSSES} == dict.fromkeys(INGEST_LOSSES, 0)
    assert counters.get("unknown_device", 0) == 0
    assert fig["broker_dropped"] == 0 and fig["broker_log_drops"] == 0, broker_log[-2000:]
    assert fig["bridge_outbox_left"] == fig["bridge_outbox_dropped"] == 0
    # All acknowledge: each device started once, then ended; one delivery each, all ended.
    assert emergency.refused == 0, f"{emergency.refused} emergency call(s) answered 503"
    assert emergency.not_started == [], f"never started: {emergency.not_started[:20]}"
    assert emergency.not_ended == [], f"never stopped: {emergency.not_ended[:20]}"
    repeated = {
        key: ack_ids
        for key, ack_ids in listener.ack_ids.items()
        if key[0] == emergency.broadcast_id and len(ack_ids) > 1
    }
    assert repeated == {}, f"devices that sent one status twice: {list(repeated)[:10]}"
    assert sorted(d.device_id for d in rows) == sorted(ids)
    assert set(fig["deliveries"]) <= set(ENDED), fig["deliveries"]
    assert all(d.started_at is not None for d in rows)
    # Nobody dropped out.
    assert fig["online_at_end"] == n
    assert listener.went_offline == [], f"went offline: {listener.went_offline[:20]}"
    assert fig["bridge_reconnects"] == 0


def hold_window(
    console: Console,
    listener: Listener,
    fleet: Fleet,
    ids: Sequence[str],
    window_s: float,
    fig: dict[str, Any],
) -> Emergency:
    """Telemetry flowing for `window_s`, the emergency and its STOP in the middle; figures."""
    servers = {name: p.pid for name, p in console.processes.items()}
    assert console.broker.pid is not None
    listener.watching = True
    start = time.monotonic()
    heard_before = listener.telemetry_total()
    cpu_before = fleet.cpu_s(), {k: cpu_s(p) for k, p in servers.items()}, cpu_s(console.broker.pid)
    with load_sampled() as load:
        time.sleep(window_s / 2)
        emergency = sound_and_stop(console, listener, ids)
        time.sleep(max(0.0, window_s - (time.monotonic() - start)))
        elapsed = time.monotonic() - start
        heard = listener.telemetry_total() - heard_before
        cpu_after = fleet.cpu_s(), {k: cpu_s(p) for k, p in servers.items()}
        broker_after = cpu_s(console.broker.pid)
        listener.watching = False  # the fleet's own stop says offline next
    n = len(ids)
    fig["window_s"] = round(elapsed, 1)
    fig["telemetry_per_s"] = round(heard / elapsed, 1)
    fig["telemetry_per_s_expected"] = round(n / TELEMETRY_S, 1)
    fig["emergency_refused_503"] = emergency.refused
    fig["emergency_api_ms"] = round(emergency.api_ms)
    fig["received_ms"] = ms_summary(emergency.received_ms)
    fig["started_ms"] = ms_summary(emergency.started_ms)
    fig["play_lead_s"] = console.settings.play_lead_s
    fig["stop_to_end_ms"] = ms_summary(emergency.ended_ms)
    fig["load_avg_1min"] = {
        "mean": round(sum(load) / len(load), 2),
        "max": round(max(load), 2),
        "cores": os.cpu_count(),
    }
    fleet_cpu = sum(cpu_after[0]) - sum(cpu_before[0])
    fig["cpu_s_in_window"] = {
        "fleet": round(fleet_cpu, 1),
        **{k: round(cpu_after[1][k] - cpu_before[1][k], 1) for k in servers},
        "broker": round(broker_after - cpu_before[2], 1),
    }
    return emergency


def write_report(n: int, fig: dict[str, Any]) -> None:
    """Print the figures; with LOA_LOAD_REPORT=FILE also keep them there, by fleet size."""
    print(f"\nload, {n:,} bridges: {json.dumps(fig, indent=1, sort_keys=True)}")
    target = os.environ.get("LOA_LOAD_REPORT")
    if not target:
        return
    path = Path(target)
    runs = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    runs[str(n)] = fig
    path.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@pytest.mark.parametrize(("n", "window_s"), RUNS)
def test_telemetry_and_emergency_acks_all_arrive(
    n: int, window_s: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """N bridges, telemetry every 5 s, an emergency and its STOP: nothing lost, all answer."""
    began = time.monotonic()
    fig: dict[str, Any] = {"bridges": n, "telemetry_interval_s": TELEMETRY_S}
    try:
        with running_console(tmp_path, worker=True) as console, DropWatcher(console) as drops:
            hold_load(console, drops, tmp_path, n, window_s, fig)
    finally:
        fig["duration_s"] = round(time.monotonic() - began, 1)
        shutil.rmtree(tmp_path / "fleet", ignore_errors=True)  # outboxes and audio caches
        with capsys.disabled():
            write_report(n, fig)
