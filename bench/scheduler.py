"""Scheduler: 1,000 schedules due in the same minute across 100 zones, fired by the real console
worker: lateness from the scheduled time to the command's publish and to each bridge's start,
and the start skew between the bridges of one zone (play_at); against APScheduler alone firing
1,000 no-op jobs due at the same instant, in the same run."""

from __future__ import annotations

import cProfile
import json
import logging
import math
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath
from typing import Any

import paho.mqtt.client as mqtt
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, insert, select, update
from werkzeug.serving import make_server

from audio_library import AudioStore
from bench.ingest import (
    SPAWN,
    Instance,
    console_instance,
    load_note,
    profile_summary,
    wait_quiet,
    wait_until,
)
from bench.report import Comparison, Figure, Section
from console.app import create_app
from console.broker import DynsecAdmin
from console.models import AudioFile, Broadcast, BroadcastStatus, Device, Schedule, Zone, ZoneKind
from console.provisioning import register_device
from console.worker import Worker, build_worker
from device_profiles import protocol
from scheduler import Occurrence, parse_occurrence_id

ROOT = Path(__file__).resolve().parents[1]
COMMUNE = "xa-bench"
ZONES = 100
PER_ZONE = 10  # schedules per zone: 1,000 in all
SPACING_S = 3  # a zone's schedules are this far apart: 100 due at each of 10 instants
WIDE_ZONES = 10  # zones with BRIDGES_WIDE bridges (start skew); the others have one
BRIDGES_WIDE = 3
LEAD_S = 5  # schedules are written this long before the first is due
AUDIO_S = 1.0
BASELINE_JOBS = 1_000
MINUTE_RUNS = 2  # the minute is the heavy part (about 45 s a run): at most this many runs
PROFILE_FIRES = 100
IDLE_ZONE = "thon-idle"  # a hamlet without devices: single fires are timed on it
OTHER_ZONE = "thon-khac"  # where the EXTRA_DEVICES are registered
EXTRA_DEVICES = 10_000  # registered (not running) for the fire-cost-versus-fleet-size figure
QUIET_LOGGERS = ("werkzeug",)  # one line per HTTP request otherwise


def zone_id(n: int) -> str:
    return f"thon-{n:03d}"


def bridge_ids() -> list[tuple[str, str]]:
    """(device id, zone id) of every running bridge."""
    out = []
    for z in range(ZONES):
        for k in range(BRIDGES_WIDE if z < WIDE_ZONES else 1):
            out.append((f"loa-{z:03d}-{k}", zone_id(z)))
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- the observer: a console-account subscriber in its own process ---------------------------


FINAL_STATUSES = frozenset(s.value for s in protocol.FINAL_ACK_STATUSES)


def _schedule_of(command_id: str) -> int:
    """The schedule id in an occurrence's command id (s{id}-{time}); -1 for others."""
    head = command_id.partition("-")[0]
    return int(head[1:]) if head[:1] == "s" and head[1:].isdigit() else -1


def _observer_main(conn: Connection, login: tuple[str, int, str, str]) -> None:
    """Record every zone command (receipt time) and every ack; hand them over on request."""
    lock = threading.Lock()
    commands: dict[str, tuple[str, float, int, int]] = {}  # id -> zone, received ms, ts, play_at
    acks: dict[tuple[str, str, str], int] = {}  # (device, command, status) -> ts

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(
            [
                (f"{protocol.TOPIC_ROOT}/zone/+/cmd", 1),
                (protocol.uplink_subscription(protocol.Channel.ACK), 1),
            ]
        )
        connected.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received_ms = time.time() * 1000
        data = json.loads(msg.payload)
        with lock:
            if msg.topic.endswith("/cmd"):
                zone = msg.topic.split("/")[3]
                commands.setdefault(
                    data["id"], (zone, received_ms, data["ts"], data.get("play_at") or 0)
                )
            else:
                key = (data["device_id"], data["command_id"], data["status"])
                acks.setdefault(key, data["ts"])

    connected = threading.Event()
    host, port, username, password = login
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-observer-{os.getpid()}")
    client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port, keepalive=60)
    client.loop_start()
    try:
        conn.send(connected.wait(30))
        while True:
            cmd = conn.recv()
            with lock:
                if cmd[0] == "progress":
                    mine = {cid: c[0] for cid, c in commands.items() if _schedule_of(cid) >= cmd[1]}
                    final = sum(1 for _d, cid, st in acks if cid in mine and st in FINAL_STATUSES)
                    conn.send((list(mine.values()), final))
                elif cmd[0] == "collect":
                    conn.send((dict(commands), dict(acks)))
                    commands.clear()
                    acks.clear()
                else:
                    return
    finally:
        client.loop_stop()
        client.disconnect()


class Observer:
    def __init__(self, login: tuple[str, int, str, str]) -> None:
        self._conn, child = SPAWN.Pipe()
        self._proc = SPAWN.Process(target=_observer_main, args=(child, login), name="observer")
        self._proc.start()
        if not (self._conn.poll(60) and self._conn.recv()):
            self.close()
            raise RuntimeError("the observer could not subscribe")

    def _ask(self, *request: object) -> Any:
        self._conn.send(request)
        if not self._conn.poll(30):
            raise RuntimeError("the observer did not answer")
        return self._conn.recv()

    def progress(self, min_schedule_id: int) -> tuple[list[str], int]:
        """Zones of the commands of schedules from this id on, and their final acks."""
        result: tuple[list[str], int] = self._ask("progress", min_schedule_id)
        return result

    def collect(self) -> tuple[dict[str, tuple[str, float, int, int]], dict[Any, int]]:
        """Everything seen since the last collect (commands by id, acks by device/id/status)."""
        result: tuple[dict[str, tuple[str, float, int, int]], dict[Any, int]] = self._ask("collect")
        return result

    @property
    def pid(self) -> int:
        return self._proc.pid or 0

    def close(self) -> None:
        if self._proc.is_alive():
            self._conn.send(("stop",))
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)


# --- the stack: audio, zones, provisioned bridges, web server, fleet process --------------------


def import_tone(inst: Instance, work: Path) -> AudioFile:
    """A 1 s announcement, imported as staff uploads are, and recorded in the database."""
    wav = work / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={AUDIO_S}", "-af", "volume=0.3", "-y", str(wav)],
        check=True, timeout=60,
    )  # fmt: skip
    meta = AudioStore(inst.settings.media_dir).import_file(wav, "tone.wav")
    audio = AudioFile(
        sha256=meta.sha256,
        name="Bench tone",
        original_name=meta.original_name,
        duration_ms=meta.duration_ms,
        size_bytes=meta.size_bytes,
        mime=meta.mime,
        loudness_lufs=meta.loudness_lufs,
    )
    with inst.db.session() as session:
        session.add(audio)
    return audio


def provision_fleet(inst: Instance, work: Path) -> Path:
    """Zones, and each bridge registered as staff would (account, ACLs, config file)."""
    fleet_dir = work / "fleet"
    fleet_dir.mkdir()
    b = inst.settings.broker
    with inst.db.session() as session:
        session.add(Zone(id=COMMUNE, name="Xã Bench", kind=ZoneKind.COMMUNE, parent_id=None))
        for z in range(ZONES):
            session.add(
                Zone(id=zone_id(z), name=f"Thôn {z}", kind=ZoneKind.HAMLET, parent_id=COMMUNE)
            )
        for extra in (IDLE_ZONE, OTHER_ZONE):
            session.add(Zone(id=extra, name=extra, kind=ZoneKind.HAMLET, parent_id=COMMUNE))
    with DynsecAdmin(
        b.host, b.port, b.admin_username, b.admin_password.get_secret_value()
    ) as admin:
        for device_id, zone in bridge_ids():
            with inst.db.session() as session:
                done = register_device(
                    session,
                    admin,
                    inst.settings,
                    device_id=device_id,
                    name=device_id,
                    profile="speaker-node",
                    zone_id=zone,
                    state_dir=PurePosixPath(work / "state" / device_id),
                )
            (fleet_dir / f"{device_id}.toml").write_text(done.bridge_config, encoding="utf-8")
    return fleet_dir


def fake_ffprobe(work: Path, duration_ms: int) -> Path:
    """The simulated player asks ffprobe each file's length (about 90 ms of CPU per play, which
    a Pi's real player never spends); every file here is the same tone, so answer at once."""
    bin_dir = work / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ffprobe"
    body = json.dumps({"format": {"duration": f"{duration_ms / 1000:.3f}"}})
    script.write_text(f"#!/bin/sh\necho '{body}'\n", encoding="utf-8")
    script.chmod(0o755)
    return bin_dir


@contextmanager
def web_server(inst: Instance) -> Iterator[None]:
    """The console web on its public port: bridges download the audio from it."""
    app = create_app(inst.settings, inst.db)
    server = make_server("127.0.0.1", inst.settings.web_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="bench-web", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(5)


@contextmanager
def fleet_process(fleet_dir: Path, bin_dir: Path, log_path: Path) -> Iterator[int]:
    """`python -m firmware_bridge --simulate --fleet-dir`: every bridge in one process."""
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge", "--simulate",
             "--fleet-dir", str(fleet_dir), "--log-level", "warning"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )  # fmt: skip
        try:
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def all_online(inst: Instance, n: int) -> bool:
    with inst.db.session() as session:
        online = session.scalars(select(Device.id).where(Device.online.is_(True))).all()
        return len(online) >= n


# --- one run: 1,000 schedules in the same minute ----------------------------------------------


@dataclass
class RunResult:
    publish_ms: list[float] = field(default_factory=list)
    publish_by_instant: list[list[float]] = field(default_factory=list)
    start_ms: list[float] = field(default_factory=list)
    after_play_at_ms: list[float] = field(default_factory=list)
    skew_ms: list[float] = field(default_factory=list)
    planned_s: float = 0.0
    published: int = 0
    started: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # broadcasts stored, by status
    wall_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the run
    fire_failed: int = 0  # on_fire raised: the occurrence was neither sent nor recorded missed


def write_schedules(inst: Instance, audio: AudioFile, first: datetime, tag: str) -> list[int]:
    """PER_ZONE once schedules per zone, SPACING_S apart; all zones share the instants."""
    rows = [
        {
            "name": f"bench {tag} {zone_id(z)} #{k}",
            "audio_sha256": audio.sha256,
            "rule": {"kind": "once", "at": (first + timedelta(seconds=k * SPACING_S)).isoformat()},
            "zone_ids": [zone_id(z)],
            "priority": protocol.Priority.SCHEDULED.value,
            "enabled": True,
        }
        for z in range(ZONES)
        for k in range(PER_ZONE)
    ]
    with inst.db.session() as session:
        ids = session.scalars(insert(Schedule).returning(Schedule.id), rows).all()
    return list(ids)


def disable(inst: Instance, ids: list[int]) -> None:
    with inst.db.session() as session:
        session.execute(update(Schedule).where(Schedule.id.in_(ids)).values(enabled=False))


def plan(
    inst: Instance, worker: Worker, audio: AudioFile, first: datetime, tag: str
) -> tuple[list[int], float]:
    """Write the schedules; (their ids, seconds until the worker had planned them all, or
    NaN if it had not by the time the first was due)."""
    written = time.monotonic()
    ids = write_schedules(inst, audio, first, tag)
    wanted = {f"s{i}-" for i in ids}

    def all_planned() -> bool:
        pending = worker.scheduler.pending()
        return sum(o.id[: o.id.index("-") + 1] in wanted for o in pending) >= len(ids)

    try:
        wait_until(all_planned, LEAD_S - 0.5, "the worker to plan the new schedules")
    except RuntimeError:
        return ids, math.nan  # late planning shows in the lateness figures
    return ids, time.monotonic() - written


class FireFailures(logging.Handler):
    """Occurrence ids whose `on_fire` raised, as the scheduler service logs them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.ids: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and args[1] == "on_fire":
            self.ids.add(str(args[0]))

    def among(self, schedule_ids: set[int]) -> int:
        return sum(_schedule_of(i) in schedule_ids for i in self.ids)


def bridges_per_zone() -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for _device, zone in bridge_ids():
        counts[zone] += 1
    return counts


def wait_played(
    inst: Instance, observer: Observer, failures: FireFailures, ids: list[int], last_due: datetime
) -> None:
    """Until every occurrence is accounted for (published, failed to fire, or recorded
    missed) and every bridge has ended each published one; at most until the misfire grace
    after the last due time has long passed."""
    wanted, per_zone = set(ids), bridges_per_zone()
    wait_s = (last_due - datetime.now(UTC)).total_seconds() + inst.settings.misfire_grace_s + 30
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        zones, final = observer.progress(min(ids))
        missed = broadcast_rows(inst, ids).get(BroadcastStatus.MISSED.value, 0)
        accounted = len(zones) + failures.among(wanted) + missed
        if accounted >= len(ids) and final >= sum(per_zone[z] for z in zones):
            return
        time.sleep(0.5)


def analyse(
    commands: dict[str, tuple[str, float, int, int]], acks: dict[Any, int], result: RunResult
) -> None:
    scheduled = {cid: parse_occurrence_id(cid)[1].timestamp() * 1000 for cid in commands}
    result.published = len(commands)
    by_instant: dict[float, list[float]] = defaultdict(list)
    for cid, (_zone, received_ms, _ts, _play_at) in commands.items():
        result.publish_ms.append(received_ms - scheduled[cid])
        by_instant[scheduled[cid]].append(received_ms - scheduled[cid])
    result.publish_by_instant = [by_instant[k] for k in sorted(by_instant)]
    starts: dict[str, list[int]] = defaultdict(list)
    for (_device, cid, status), ts in acks.items():
        result.outcomes[status] = result.outcomes.get(status, 0) + 1
        if status == protocol.AckStatus.STARTED.value and cid in commands:
            starts[cid].append(ts)
            result.start_ms.append(ts - scheduled[cid])
            result.after_play_at_ms.append(ts - commands[cid][3])
    result.started = sum(len(v) for v in starts.values())
    result.skew_ms = [max(v) - min(v) for v in starts.values() if len(v) >= 2]


def broadcast_rows(inst: Instance, ids: list[int]) -> dict[str, int]:
    """How many broadcasts the database holds for these schedules, by status."""
    with inst.db.session() as session:
        rows = session.execute(
            select(Broadcast.status, func.count())
            .where(Broadcast.schedule_id.in_(ids))
            .group_by(Broadcast.status)
        ).all()
        return {BroadcastStatus(status).value: int(n) for status, n in rows}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Stack:
    """What one run needs of the running system."""

    inst: Instance
    worker: Worker
    observer: Observer
    failures: FireFailures
    audio: AudioFile
    pids: dict[str, int]  # process name -> pid, for CPU time


def one_run(stack: Stack, tag: str) -> RunResult:
    """1,000 schedules due within the minute: written, planned, fired, played, analysed."""
    result = RunResult()
    cpu_before = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
    wall_before = time.monotonic()
    first = datetime.fromtimestamp(math.ceil(time.time()) + LEAD_S, UTC)
    ids, result.planned_s = plan(stack.inst, stack.worker, stack.audio, first, tag)
    last_due = first + timedelta(seconds=(PER_ZONE - 1) * SPACING_S)
    wait_played(stack.inst, stack.observer, stack.failures, ids, last_due)
    result.wall_s = time.monotonic() - wall_before
    result.cpu_s = {n: cpu_seconds(pid) - cpu_before[n] for n, pid in stack.pids.items()}
    commands, acks = stack.observer.collect()
    disable(stack.inst, ids)
    wanted = set(ids)  # a straggler of an earlier run is not this run's
    commands = {cid: c for cid, c in commands.items() if _schedule_of(cid) in wanted}
    analyse(commands, acks, result)
    result.rows = broadcast_rows(stack.inst, ids)
    result.fire_failed = stack.failures.among(wanted)
    return result


# --- the baseline: APScheduler alone ----------------------------------------------------------


def apscheduler_alone(n: int = BASELINE_JOBS) -> list[float]:
    """n no-op jobs due at the same instant: lateness (ms) from that instant to each callback."""
    fired: list[float] = []
    lock = threading.Lock()

    def job() -> None:
        now = time.time()
        with lock:
            fired.append(now)

    scheduler = BackgroundScheduler(timezone=UTC)
    due = math.ceil(time.time()) + 2.0
    run_date = datetime.fromtimestamp(due, UTC)
    for i in range(n):
        scheduler.add_job(job, DateTrigger(run_date=run_date, timezone=UTC), id=f"noop-{i}")
    scheduler.start()
    try:
        wait_until(lambda: len(fired) >= n, 30, "APScheduler to fire every job")
    finally:
        scheduler.shutdown(wait=True)
    return [(t - due) * 1000 for t in fired]


# --- where a fire's time goes -----------------------------------------------------------------


def fire_cost(inst: Instance, worker: Worker, audio: AudioFile, zone: str, n: int) -> float:
    """Mean wall ms of worker.fire() for n occurrences of disabled schedules on `zone`."""
    now = datetime.now(UTC).replace(microsecond=0)
    with inst.db.session() as session:
        ids = session.scalars(
            insert(Schedule).returning(Schedule.id),
            [
                {
                    "name": f"bench fire cost {i}",
                    "audio_sha256": audio.sha256,
                    "rule": {"kind": "once", "at": now.isoformat()},
                    "zone_ids": [zone],
                    "priority": protocol.Priority.SCHEDULED.value,
                    "enabled": False,
                }
                for i in range(n)
            ],
        ).all()
    start = time.perf_counter()
    for sid in ids:
        worker.fire(Occurrence(sid, now))
    return (time.perf_counter() - start) / n * 1000


def profile_fires(inst: Instance, worker: Worker, audio: AudioFile, zone: str) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    fire_cost(inst, worker, audio, zone, PROFILE_FIRES)
    profiler.disable()
    return pstats.Stats(profiler)


def add_idle_devices(inst: Instance, zone: str, n: int) -> None:
    """Registered devices that run no bridge (a bigger fleet in the database)."""
    now = datetime.now(UTC)
    with inst.db.session() as session:
        session.execute(
            insert(Device),
            [
                {
                    "id": f"idle-{i:05d}",
                    "name": f"idle {i}",
                    "profile": "speaker-node",
                    "zone_id": zone,
                    "secret_sha256": "0" * 64,
                    "created_at": now,
                    "online": False,
                }
                for i in range(n)
            ],
        )


# --- the section ------------------------------------------------------------------------------


def _pair(title: str, subject: str, baseline: str) -> Comparison:
    return Comparison(title, Figure(subject, "ms"), Figure(baseline, "ms"))


@dataclass
class Results:
    """Every figure of the section, filled run by run."""

    n_bridges: int
    pub50: Comparison = field(init=False)
    pub99: Comparison = field(init=False)
    start50: Comparison = field(init=False)
    start99: Comparison = field(init=False)
    figures: dict[str, Figure] = field(init=False)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        published = "console worker → broker → subscriber"
        alone = "APScheduler alone, scheduled → callback"
        started, floor = "bridge `started` ack ts", "play_lead_s + APScheduler alone"
        self.pub50 = _pair("scheduled → published, p50", published, alone)
        self.pub99 = _pair("scheduled → published, p99", published, alone)
        self.start50 = _pair("scheduled → bridge started, p50", started, floor)
        self.start99 = _pair("scheduled → bridge started, p99", started, floor)
        wide = f"within a {BRIDGES_WIDE}-bridge hamlet"
        self.figures = {
            "late50": Figure("bridge started − play_at, p50", "ms"),
            "late99": Figure("bridge started − play_at, p99", "ms"),
            "skew50": Figure(f"start skew {wide}, p50", "ms"),
            "skewmax": Figure(f"start skew {wide}, max", "ms"),
            "planned": Figure("1,000 schedules written → all planned by the worker", "s"),
            "fire": Figure(f"one `Worker.fire`, {self.n_bridges} devices registered", "ms"),
            "fire_big": Figure(
                f"one `Worker.fire`, {self.n_bridges + EXTRA_DEVICES:,} devices registered", "ms"
            ),
        }

    def add_run(self, n: int, res: RunResult, base: list[float], lead_ms: float) -> None:
        self.pub50.subject.add(percentile(res.publish_ms, 50))
        self.pub99.subject.add(percentile(res.publish_ms, 99))
        self.pub50.baseline.add(percentile(base, 50))
        self.pub99.baseline.add(percentile(base, 99))
        self.start50.subject.add(percentile(res.start_ms, 50))
        self.start99.subject.add(percentile(res.start_ms, 99))
        self.start50.baseline.add(lead_ms + percentile(base, 50))
        self.start99.baseline.add(lead_ms + percentile(base, 99))
        values = {
            "late50": percentile(res.after_play_at_ms, 50),
            "late99": percentile(res.after_play_at_ms, 99),
            "skew50": percentile(res.skew_ms, 50),
            "skewmax": max(res.skew_ms, default=math.nan),
            "planned": res.planned_s,
        }
        for key, value in values.items():
            if not math.isnan(value):  # nothing to measure in this run
                self.figures[key].add(value)
        planned = (
            f"planned in {res.planned_s:.1f} s"
            if not math.isnan(res.planned_s)
            else f"NOT all planned within {LEAD_S} s"
        )
        by_instant = " / ".join(f"{percentile(v, 50) / 1000:.1f}" for v in res.publish_by_instant)
        cpu = ", ".join(f"{name} {sec:.0f}" for name, sec in res.cpu_s.items())
        self.notes.append(
            f"Run {n}: {planned}; {res.published:,}/{ZONES * PER_ZONE:,} commands published, "
            f"{res.started:,}/{self.n_bridges * PER_ZONE:,} bridge starts, acks "
            f"{dict(sorted(res.outcomes.items()))}, broadcasts stored {res.rows}, "
            f"{res.fire_failed} fires failed (`on_fire` raised: neither sent nor recorded); "
            f"publish lateness max {max(res.publish_ms, default=math.nan):,.0f} ms, median per due "
            f"instant (s): {by_instant}; CPU seconds in its {res.wall_s:.0f} s: {cpu}."
        )

    def section(self) -> Section:
        section = Section(TITLE, intro(self.n_bridges))
        section.comparisons += [self.pub50, self.pub99, self.start50, self.start99]
        section.figures += [f for f in self.figures.values() if f.samples]
        section.notes += self.notes
        return section


TITLE = "Scheduler: 1,000 schedules due in the same minute"


def intro(n_bridges: int) -> str:
    return (
        f"{ZONES} hamlets, {PER_ZONE} once schedules each ({ZONES * PER_ZONE:,} in all), a "
        f"{AUDIO_S:.0f} s announcement each. A hamlet's schedules are {SPACING_S} s apart and "
        f"all hamlets share the instants, so {ZONES} schedules are due at the very same second, "
        f"{PER_ZONE} times within {(PER_ZONE - 1) * SPACING_S} s (as when every hamlet's "
        "programme starts on the hour; spaced so that no speaker queues one item behind "
        "another, which would measure audio length, not lateness). The real console worker "
        "(scheduler service, database, MQTT) fires them; a console-account subscriber in its "
        "own process notes when each zone command arrives (scheduled → published), and "
        f"{n_bridges} simulated bridges in one `--simulate --fleet-dir` process ({WIDE_ZONES} "
        f"hamlets with {BRIDGES_WIDE}, the rest with one) acknowledge `started` (scheduled → "
        "bridge started; skew between the bridges of one hamlet, which all honour the "
        "command's `play_at`). Real Mosquitto with authentication, SQLite, audio downloaded "
        "over HTTP from the console web and cached (a warm-up broadcast fetches it first). "
        f"Baseline, in the same run: APScheduler alone firing {BASELINE_JOBS:,} no-op jobs "
        f"due at the same instant (scheduled → callback; a harder burst than {ZONES} at once); "
        "for the start, that plus the configured `play_lead_s`: commands carry `play_at` = "
        "fire time + lead, the earliest a bridge may start."
    )


def measure(inst: Instance, work: Path, repeat: int, results: Results) -> pstats.Stats:
    """Bring the stack up, run the minute, then time single fires."""
    audio = import_tone(inst, work)
    fleet_dir = provision_fleet(inst, work)
    bin_dir = fake_ffprobe(work, audio.duration_ms)
    worker = build_worker(inst.settings, db=inst.db)
    observer = Observer(inst.console_login)
    failures = FireFailures()
    service_log = logging.getLogger("scheduler.service")
    service_log.addHandler(failures)
    try:
        with web_server(inst), fleet_process(fleet_dir, bin_dir, work / "fleet.log") as fleet:
            pids = {
                "worker (bench process)": os.getpid(),
                "bridges": fleet,
                "broker": inst.broker.pid or 0,
                "observer": observer.pid,
            }
            stack = Stack(inst, worker, observer, failures, audio, pids)
            worker.start(poll_s=0.5)
            try:
                wait_until(lambda: all_online(inst, results.n_bridges), 120, "bridges online", 0.5)
                warm_up(inst, observer, audio, results.n_bridges)
                for n in range(1, min(repeat, MINUTE_RUNS) + 1):
                    res = one_run(stack, f"r{n}")
                    wait_quiet(lambda: sum(worker.ingest.counters.values()), 1.0, 60)
                    base = apscheduler_alone()
                    results.add_run(n, res, base, inst.settings.play_lead_s * 1000)
                return single_fires(stack, repeat, results)
            finally:
                worker.stop()
    finally:
        service_log.removeHandler(failures)
        observer.close()


def single_fires(stack: Stack, repeat: int, results: Results) -> pstats.Stats:
    """`Worker.fire` alone, then with EXTRA_DEVICES more registered; a profile of it."""
    inst, worker, audio = stack.inst, stack.worker, stack.audio
    for _ in range(repeat):
        results.figures["fire"].add(fire_cost(inst, worker, audio, IDLE_ZONE, 20))
    profile = profile_fires(inst, worker, audio, IDLE_ZONE)
    add_idle_devices(inst, OTHER_ZONE, EXTRA_DEVICES)
    for _ in range(repeat):
        results.figures["fire_big"].add(fire_cost(inst, worker, audio, IDLE_ZONE, 2))
    return profile


def run(repeat: int) -> Section:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    load_at_start = os.getloadavg()[0]
    results = Results(len(bridge_ids()))
    with (
        tempfile.TemporaryDirectory(prefix="bench-scheduler-") as tmp,
        console_instance(Path(tmp) / "instance") as inst,
    ):
        profile = measure(inst, Path(tmp), repeat, results)
    section = results.section()
    section.notes += [
        f"The minute (about 45 s with its set-up) runs min(repeat, {MINUTE_RUNS}) times to keep "
        "the benchmark short; the single-fire timings run `repeat` times.",
        "The simulated player's ffprobe call (about 90 ms of CPU per play, which no Pi spends: "
        "it plays through mpg123) is answered by a stub; the `started` ack is sent once the "
        "player has the file, so its ts is when playback began.",
        f"`Worker.fire` timed alone (one after another, stack idle) on a hamlet without "
        f"devices; then with {EXTRA_DEVICES:,} more devices registered in another hamlet (no "
        "bridges): a fire's cost grows with the whole fleet, not with the zone it targets.",
        f"Where a fire's time goes — cProfile of {PROFILE_FIRES} `Worker.fire` calls, "
        + profile_summary(profile, PROFILE_FIRES, "fire")
        + ".",
        load_note(load_at_start),
    ]
    return section


def warm_up(inst: Instance, observer: Observer, audio: AudioFile, n_bridges: int) -> None:
    """One broadcast to the whole commune: every bridge downloads and caches the audio."""
    at = datetime.fromtimestamp(math.ceil(time.time()) + 3, UTC)
    with inst.db.session() as session:
        schedule = Schedule(
            name="bench warm-up",
            audio_sha256=audio.sha256,
            rule={"kind": "once", "at": at.isoformat()},
            zone_ids=[COMMUNE],
        )
        session.add(schedule)
        session.flush()
        schedule_id = schedule.id

    def played() -> bool:
        return observer.progress(schedule_id)[1] >= n_bridges

    wait_until(played, 60, "the warm-up broadcast to play everywhere", 0.5)
    observer.collect()
