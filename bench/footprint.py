"""Footprint: resident memory and idle CPU of one bridge process (a Pi Zero 2 W has 512 MB) and
of each simulated bridge in a fleet process; the console web's answer times with 10,000
devices (the device list API and the home page, which lists every device)."""

from __future__ import annotations

import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import insert

from bench.fanout import (
    Console,
    Fleet,
    Uplink,
    cpu_s,
    create_zones,
    percentile,
    profile_during,
    provision_in_bulk,
    py_spy,
    rss_mib,
    running_console,
    spawn,
    stop_processes,
    summarize_profile,
    wait_until,
)
from bench.report import Comparison, Figure, Section
from console.accounts import create_user
from console.models import Device, DeviceConfigRecord, Role
from device_profiles import protocol

FLEET_N = 100  # bridges in the measured fleet process
SETTLE_S = 3.0  # after every bridge is online, before the idle window
IDLE_S = 15.0  # the idle window (the web requests run meanwhile: they are another process)
WEB_DEVICES = 10_000
WEB_HAMLETS = 100
HEAVY_REQUESTS = 6  # per run, for the device list and the home page
LIGHT_REQUESTS = 100  # per run, for the health route
PROFILE_REQUESTS = 3
COMMUNE = "xa-footprint"
BASELINE_CODE = "import time, paho.mqtt.client; time.sleep(3600)"


def run(repeat: int) -> Section:
    section = Section(
        "Footprint: bridge memory and idle CPU; the console web with 10,000 devices",
        "Resident memory is VmRSS of /proc/PID/status once every bridge is online and "
        f"{SETTLE_S:g} s have passed; idle CPU is utime + stime of /proc/PID/stat over the next "
        f"{IDLE_S:g} s, as a share of one core. One bridge is `python -m firmware_bridge "
        "--simulate --config FILE` (speaker-node profile, connected to an authenticated "
        'Mosquitto, no command); its baseline is a bare `python -c "import paho.mqtt.client"` '
        f"that sleeps. Per simulated bridge: (fleet RSS − one bridge's RSS) / (N − 1) for a "
        f"`--fleet-dir` process of N = {FLEET_N}, and likewise for CPU. The three processes "
        "start afresh in each run. There is no live board page yet, so the console is measured "
        f"on what lists devices today, with {WEB_DEVICES:,} devices in the database (each with "
        "a stored state and telemetry): GET /api/v1/devices (the whole list in one answer: "
        "the API does not paginate) and the home page `/` (logged in), against GET "
        "/api/v1/health (with the same bearer token as the device list) in the same run; "
        f"{HEAVY_REQUESTS} and {LIGHT_REQUESTS} requests a run, one at a time, to "
        "`python -m console web` (the console's own server).",
    )
    with tempfile.TemporaryDirectory(prefix="bench-footprint-") as tmp:
        work = Path(tmp)
        with running_console(work, worker=False) as console:
            measure(console, work, repeat, section)
    return section


@dataclass
class Idle:
    """One run's readings of the three processes: bare paho, one bridge, the fleet."""

    rss_mib: list[float]
    cpu_pct: list[float]
    bridge_threads: int


def idle_run(
    console: Console, uplink: Uplink, single: Path, fleet_dir: Path, during: Callable[[], None]
) -> Idle:
    """Start the three processes, wait until every bridge is online and SETTLE_S more, read
    their memory, then their CPU over IDLE_S (while `during` runs), and stop them."""
    fleet = Fleet(console.logs)
    baseline = spawn([sys.executable, "-c", BASELINE_CODE], console.logs / "base.log")
    procs = [baseline, fleet.start(single, "--config"), fleet.start(fleet_dir)]
    ids = [single.stem, *(f"loa-{i:04d}" for i in range(FLEET_N))]
    try:
        wait_until(lambda: online(uplink, fleet, ids), 60, "the bridges online", 0.1)
        time.sleep(SETTLE_S)
        memory = [rss_mib(p.pid) for p in procs]
        before = [cpu_s(p.pid) for p in procs]
        start = time.monotonic()
        during()
        time.sleep(max(0.0, IDLE_S - (time.monotonic() - start)))
        window = time.monotonic() - start
        busy = [100 * (cpu_s(p.pid) - b) / window for p, b in zip(procs, before, strict=True)]
        threads = len(list(Path(f"/proc/{procs[1].pid}/task").iterdir()))
    finally:
        fleet.stop()
        stop_processes([baseline])
    return Idle(memory, busy, threads)


def measure(console: Console, work: Path, repeat: int, section: Section) -> None:
    hamlets = [(f"thon-{h:03d}", "hamlet", COMMUNE) for h in range(WEB_HAMLETS)]
    create_zones(console, [(COMMUNE, "commune", None), *hamlets])
    fleet_dir, single_dir = work / "fleet", work / "single"
    fleet_dir.mkdir()
    single_dir.mkdir()
    provision_in_bulk(console, [("loa-mot", "thon-000", single_dir)])
    provision_in_bulk(console, [(f"loa-{i:04d}", "thon-001", fleet_dir) for i in range(FLEET_N)])
    add_devices(console, WEB_DEVICES - FLEET_N - 1)
    session = logged_in_session(console)
    routes: dict[str, Callable[[], requests.Response]] = {
        "GET /api/v1/devices": lambda: console.call("GET", "/devices"),
        "GET / (home page)": lambda: session.get(f"{console.base_url}/", timeout=120),
        "GET /api/v1/health": lambda: console.call("GET", "/health"),
    }
    web = {name: (Figure(f"{name}, p50", "ms"), Figure(f"{name}, p95", "ms")) for name in routes}

    def requests_to_the_web() -> None:
        for name, call in routes.items():
            times = timed_requests(call, LIGHT_REQUESTS if "health" in name else HEAVY_REQUESTS)
            web[name][0].add(percentile(times, 50))
            web[name][1].add(percentile(times, 95))

    uplink = Uplink(console.settings)
    try:
        runs = [
            idle_run(console, uplink, single_dir / "loa-mot.toml", fleet_dir, requests_to_the_web)
            for _ in range(repeat)
        ]
        answer_mb = len(console.call("GET", "/devices").content) / 1e6
        web_rss = rss_mib(console.processes["web"].pid)
        profiles = {
            name: profile_route(console, work / f"web-{i}.prof", call)
            for i, (name, call) in enumerate(routes.items())
            if "health" not in name
        }
    finally:
        uplink.close()
        session.close()
    report(section, runs, web, answer_mb, web_rss)
    for name, summary in profiles.items():
        section.notes.append(
            f"Profile of the console web during {PROFILE_REQUESTS} more {name} (py-spy, every "
            f"thread that is not idle): {summary}"
        )


def report(
    section: Section,
    runs: Sequence[Idle],
    web: dict[str, tuple[Figure, Figure]],
    answer_mb: float,
    web_rss: float,
) -> None:
    rss = Comparison(
        "one bridge process, resident memory",
        Figure(
            "python -m firmware_bridge --simulate --config", "MiB", [r.rss_mib[1] for r in runs]
        ),
        Figure("bare python + import paho.mqtt.client", "MiB", [r.rss_mib[0] for r in runs]),
    )
    section.comparisons.append(rss)
    health = web["GET /api/v1/health"]
    for name, pair in web.items():
        if "health" not in name:
            section.comparisons += [
                Comparison(
                    f"{name}, {k}",
                    Figure(f"{WEB_DEVICES:,} devices", "ms", fig.samples),
                    Figure(f"GET /api/v1/health, {k}", "ms", base.samples),
                )
                for k, fig, base in zip(("p50", "p95"), pair, health, strict=True)
            ]
    per = FLEET_N - 1
    section.figures += [
        Figure("one bridge process, idle CPU", "% of a core", [r.cpu_pct[1] for r in runs]),
        Figure("bare python + paho, idle CPU", "% of a core", [r.cpu_pct[0] for r in runs]),
        Figure("one bridge process, threads", "", [float(r.bridge_threads) for r in runs]),
        Figure(f"fleet process of {FLEET_N}, resident memory", "MiB", [r.rss_mib[2] for r in runs]),
        Figure(
            "per simulated bridge, resident memory",
            "MiB",
            [(r.rss_mib[2] - r.rss_mib[1]) / per for r in runs],
        ),
        Figure(
            "per simulated bridge, idle CPU",
            "% of a core",
            [(r.cpu_pct[2] - r.cpu_pct[1]) / per for r in runs],
        ),
        Figure(f"GET /api/v1/devices, answer size ({WEB_DEVICES:,} devices)", "MB", [answer_mb]),
        Figure("console web process, resident memory after the runs", "MiB", [web_rss]),
    ]
    pi_mb = 512
    section.notes += [
        f"One bridge holds about {rss.subject.median:.0f} MiB, "
        f"{rss.subject.median / pi_mb:.0%} of a Pi Zero 2 W's {pi_mb} MB (before what the "
        "system, the firmware's GPU share and mpg123 take); "
        f"{rss.subject.median - rss.baseline.median:.0f} MiB more than Python with paho "
        "alone (pydantic, gpiozero, requests, SQLite, the profile and the threads).",
        "Idle here means connected, subscribed and waiting: no retained config was published "
        "(the console worker does not run in this benchmark), so no preset was fetched. Each "
        "bridge's outbox sender looks round every 0.5 s and paho's loop wakes every second; "
        "telemetry (every 60 s) may fall inside a window.",
        f"The {WEB_DEVICES:,} devices are rows written straight into the database (no broker "
        f"accounts: listing them needs none), spread over {WEB_HAMLETS} hamlets, each with a "
        "stored state and telemetry of the size a bridge sends, and a config record. The web "
        "requests run inside the idle window (the bridges are other processes); p95 of "
        f"{HEAVY_REQUESTS} requests is the slowest of them.",
    ]


def profile_route(console: Console, out: Path, call: Callable[[], requests.Response]) -> str:
    if py_spy() is None:
        return "py-spy is not installed: no profile."
    target = (console.processes["web"].pid, out, False)
    seconds = profile_during([target], lambda: timed_requests(call, PROFILE_REQUESTS))
    return summarize_profile(out, seconds) if out.exists() else "py-spy could not attach."


def online(uplink: Uplink, fleet: Fleet, ids: Sequence[str]) -> bool:
    fleet.check()
    return uplink.count_online(ids) == len(ids)


def timed_requests(call: Callable[[], requests.Response], n: int) -> list[float]:
    """ms of each of n requests made one after the other; every answer must be 200."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        resp = call()
        times.append((time.perf_counter() - start) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.url}: {resp.status_code} {resp.text[:200]}")
    return times


def logged_in_session(console: Console) -> requests.Session:
    """A browser-like session of a viewer, logged in through the login form (with CSRF)."""
    password = secrets.token_urlsafe(16)
    with console.db.session() as db_session:
        create_user(db_session, "bench-viewer", password, Role.VIEWER)
    session = requests.Session()
    page = session.get(f"{console.base_url}/login", timeout=30).text
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("no CSRF token in the login page")
    form = {"username": "bench-viewer", "password": password, "csrf_token": match[1]}
    resp = session.post(f"{console.base_url}/login", data=form, timeout=30)
    if resp.status_code != 200 or "/login" in resp.url:
        raise RuntimeError(f"could not log in: {resp.status_code} {resp.url}")
    return session


def _state(device_id: str, now_ms: int) -> dict[str, Any]:
    counters = {"duplicate_command": 0, "malformed_command": 0, "amplifier_on_ms": 351_200}
    return protocol.DeviceState(
        id=protocol.new_message_id(),
        ts=now_ms,
        device_id=device_id,
        profile="speaker-node",
        software_version="0.1.0",
        config_version=3,
        volume_pct=80,
        zones=["thon-000", COMMUNE],
        counters=counters,
    ).model_dump(mode="json")


def _telemetry(device_id: str, now_ms: int) -> dict[str, Any]:
    counters = {
        name: 0
        for name in (
            "malformed_command", "malformed_config", "duplicate_command", "fetch_failed",
            "playback_failed", "preset_fetch_failed", "gong_missing", "outbox_queued",
            "outbox_dropped", "outbox_append_failed", "outbox_errors", "link_skipped_offline",
        )
    }  # fmt: skip
    counters.update(outbox_confirmed=1_234, link_connects=3)
    return protocol.Telemetry(
        id=protocol.new_message_id(),
        ts=now_ms,
        device_id=device_id,
        uptime_s=86_400.5,
        cpu_temp_c=48.3,
        disk_free_mb=11_204.0,
        clock_offset_ms=12,
        link_quality_pct=71,
        amplifier_on_s=351.2,
        cache_bytes=48_000_000,
        counters=counters,
    ).model_dump(mode="json")


def add_devices(console: Console, n: int) -> None:
    """n more devices, straight into the database, over the WEB_HAMLETS hamlets."""
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    rows = [
        {
            "id": f"loa-web-{i:05d}",
            "name": f"Cụm loa {i:05d}",
            "profile": "speaker-node",
            "zone_id": f"thon-{i % WEB_HAMLETS:03d}",
            "latitude": 10.77 + i * 1e-5,
            "longitude": 106.70 + i * 1e-5,
            "secret_sha256": "0" * 64,
            "created_at": now,
            "online": i % 10 != 0,
            "last_seen_at": now,
            "state": _state(f"loa-web-{i:05d}", now_ms),
            "telemetry": _telemetry(f"loa-web-{i:05d}", now_ms),
        }
        for i in range(n)
    ]
    configs = [
        {"device_id": r["id"], "version": 3, "digest": "0" * 64, "published_version": 3,
         "updated_at": now}
        for r in rows
    ]  # fmt: skip
    with console.db.session() as session:
        session.execute(insert(Device), rows)
        session.execute(insert(DeviceConfigRecord), configs)
