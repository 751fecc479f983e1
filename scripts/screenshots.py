"""Screenshots of the console's main pages, for docs/console.md ("What it looks like").

It builds a throwaway demo commune in a temporary folder: its own Mosquitto, a migrated
SQLite database, 12 speakers and 2 fire points registered on the broker as an administrator
would, their states, acknowledgements and a fire alarm stored by the console's own ingest
(as the worker stores what devices report), audio made by ffmpeg and by espeak-ng through
the library, a week's programme saved through the API, a finished broadcast with its
delivery report. Then it serves the console on a free port and photographs each page with
Playwright on Debian's Chromium, in Vietnamese (the default language).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--only board,login]

PNG files are written as NAME.png (see SHOTS); `optipng` shrinks them if it is installed.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the project's packages are beside it
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402
from werkzeug.serving import BaseWSGIServer, make_server  # noqa: E402

from audio_library import Voice  # noqa: E402
from console import services  # noqa: E402
from console.accounts import create_user  # noqa: E402
from console.app import create_app  # noqa: E402
from console.broadcasts import BroadcastRequest, record_broadcast, record_missed  # noqa: E402
from console.broker import BrokerProcess, BrokerSettings, DynsecAdmin, free_port  # noqa: E402
from console.db import Database, upgrade  # noqa: E402
from console.devrun import broker_config  # noqa: E402
from console.ingest import Incoming, Ingest  # noqa: E402
from console.library import add_audio, import_upload, speak_into_library  # noqa: E402
from console.models import Role, User, Zone, ZoneKind  # noqa: E402
from console.presets import ensure_presets  # noqa: E402
from console.provisioning import register_device  # noqa: E402
from console.settings import BrokerConfig, Settings  # noqa: E402
from device_profiles import protocol as p  # noqa: E402
from scheduler import occurrence_id  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=360, height=740)
TIMEZONE = "Asia/Ho_Chi_Minh"
WAIT_MS = 20_000  # for a page to show what it shows (a busy machine is slow, not wrong)

COMMUNE = ("xa-hoa-an", "Xã Hòa An")
HAMLETS = [
    ("thon-dong", "Thôn Đông"),
    ("thon-tay", "Thôn Tây"),
    ("thon-bac", "Thôn Bắc"),
    ("khu-pho-cho", "Khu phố Chợ"),
]
SPEAKERS = [
    ("loa-dong-van-hoa", "Loa nhà văn hoá thôn Đông", "thon-dong"),
    ("loa-dong-dinh", "Loa đình làng Đông", "thon-dong"),
    ("loa-dong-truong", "Loa trường tiểu học", "thon-dong"),
    ("loa-tay-van-hoa", "Loa nhà văn hoá thôn Tây", "thon-tay"),
    ("loa-tay-ben-do", "Loa bến đò", "thon-tay"),
    ("loa-tay-dau-cau", "Loa đầu cầu Tây", "thon-tay"),
    ("loa-bac-van-hoa", "Loa nhà văn hoá thôn Bắc", "thon-bac"),
    ("loa-bac-tram-y-te", "Loa trạm y tế", "thon-bac"),
    ("loa-bac-nga-ba", "Loa ngã ba thôn Bắc", "thon-bac"),
    ("loa-cho-cong", "Loa cổng chợ", "khu-pho-cho"),
    ("loa-cho-ubnd", "Loa trụ sở UBND xã", "khu-pho-cho"),
    ("loa-cho-ben-xe", "Loa bến xe", "khu-pho-cho"),
]
FIRE_POINTS = [
    ("cc-cho-hoa-an", "Điểm chữa cháy chợ Hòa An", "khu-pho-cho"),
    ("cc-khu-dan-cu-tay", "Điểm chữa cháy khu dân cư Tây", "thon-tay"),
]
LOCATION = (10.9472, 106.6713)  # the commune's first pole; the others a few hundred metres away
NEVER_CONNECTED = "loa-bac-nga-ba"  # installed, its file not yet on the Pi
WENT_OFFLINE = "loa-tay-ben-do"  # lost its link 48 minutes ago
DOWNLOAD_FAILED = "loa-dong-truong"  # failed the morning notice, and its disk is full
NEWS_TEXT = (
    "Kính thưa bà con xã Hòa An. Sau đây là bản tin sáng. Tuần này xã tổ chức tiêm chủng "
    "mở rộng cho trẻ em tại trạm y tế. Đề nghị các gia đình đưa trẻ đến đúng giờ."
)


@dataclass
class Scene:
    """A demo console instance: what the screenshots show, and how to reach it."""

    root: Path
    settings: Settings
    db: Database
    broker: BrokerProcess
    passwords: dict[str, str]
    report_id: str = ""  # the broadcast whose delivery report is shown
    audio: dict[str, str] = field(default_factory=dict)  # name -> sha256

    def close(self) -> None:
        self.db.dispose()
        self.broker.stop()


# --- the scene -----------------------------------------------------------------------------


def start_broker(root: Path) -> tuple[BrokerProcess, BrokerConfig]:
    """The scene's own Mosquitto, with the console's account (as tests/conftest.py does)."""
    data_dir = root / "broker"
    data_dir.mkdir(parents=True)
    broker_settings = BrokerSettings(
        data_dir=data_dir,
        admin_username="broker-admin",
        admin_password=secrets.token_urlsafe(16),
        port=free_port(),
    )
    broker = BrokerProcess(broker_settings)
    broker.start()
    console_password = secrets.token_urlsafe(16)
    with _admin(broker_settings) as admin:
        admin.provision_console("console", console_password)
    config = broker_config(broker_settings, "console", console_password)
    return broker, config


def _admin(s: BrokerSettings) -> DynsecAdmin:
    return DynsecAdmin(s.host, s.port, s.admin_username, s.admin_password)


def build_scene(root: Path, *, presets: bool = True, now: datetime | None = None) -> Scene:
    """The demo commune in `root` (a fresh folder). `presets=False` skips speaking the nine
    emergency announcements (the emergency page then has none to choose)."""
    now = now or datetime.now(UTC)
    broker, broker_cfg = start_broker(root)
    try:
        instance = root / "instance"
        instance.mkdir(mode=0o700)
        web_port = free_port()
        settings = Settings(
            instance_dir=instance,
            secret_key=secrets.token_hex(16),
            database_url=f"sqlite:///{instance / 'console.sqlite3'}",
            media_dir=instance / "media",
            public_base_url=f"http://127.0.0.1:{web_port}",
            web_port=web_port,
            broker=broker_cfg,
        )
        upgrade(settings.database_url)
        db = Database(settings.database_url)
        scene = Scene(root, settings, db, broker, passwords={})
        _seed_users(scene)
        _seed_commune(scene)
        if presets:  # made at installation, before staff add their own audio
            ensure_presets(db, settings.media_dir)
        _seed_audio(scene)
        schedules = _seed_programme(scene, now)
        _seed_history(scene, schedules, now)
        return scene
    except BaseException:
        broker.stop()
        raise


def _seed_users(scene: Scene) -> None:
    with scene.db.session() as session:
        for role in (Role.ADMIN, Role.OPERATOR):
            password = secrets.token_urlsafe(12)
            create_user(session, role.value, password, role)
            scene.passwords[role.value] = password


def _seed_commune(scene: Scene) -> None:
    """Zones, then every device registered with its broker account, as an admin does."""
    with scene.db.session() as session:
        session.add(Zone(id=COMMUNE[0], name=COMMUNE[1], kind=ZoneKind.COMMUNE))
        session.flush()
        for zone_id, name in HAMLETS:
            session.add(Zone(id=zone_id, name=name, kind=ZoneKind.HAMLET, parent_id=COMMUNE[0]))
    b = scene.settings.broker
    devices = [(d, n, "speaker-node", z) for d, n, z in SPEAKERS]
    devices += [(d, n, "fire-point-node", z) for d, n, z in FIRE_POINTS]
    with DynsecAdmin(b.host, b.port, b.admin_username, b.admin_password.get_secret_value()) as ad:
        for i, (device_id, name, profile, zone_id) in enumerate(devices):
            with scene.db.session() as session:
                register_device(
                    session,
                    ad,
                    scene.settings,
                    device_id=device_id,
                    name=name,
                    profile=profile,
                    zone_id=zone_id,
                    latitude=round(LOCATION[0] + 0.0031 * (i % 5), 5),
                    longitude=round(LOCATION[1] + 0.0027 * (i // 5), 5),
                )


def _tone(folder: Path, name: str, *filters: str) -> Path:
    out = folder / name
    cmd = ["ffmpeg", "-v", "error", "-y"]
    for f in filters:
        cmd += ["-f", "lavfi", "-i", f]
    if len(filters) > 1:
        cmd += ["-filter_complex", f"concat=n={len(filters)}:v=0:a=1"]
    subprocess.run([*cmd, "-ac", "1", str(out)], check=True, capture_output=True)
    return out


def _seed_audio(scene: Scene) -> None:
    """Two files staff uploaded (ffmpeg tones) and one typed text spoken by espeak-ng."""
    with scene.db.session() as session:
        operator = _user_id(session, "operator")
    with tempfile.TemporaryDirectory(dir=scene.settings.instance_dir) as tmp:
        uploads = [
            (
                _tone(
                    Path(tmp),
                    "nhac-hieu.wav",
                    "sine=frequency=523:duration=2",
                    "sine=frequency=659:duration=2",
                    "sine=frequency=784:duration=3",
                ),
                "Nhạc hiệu đầu bản tin",
            ),
            (
                _tone(Path(tmp), "thong-bao-hop-dan.wav", "sine=frequency=440:duration=12"),
                "Thông báo họp dân tháng này",
            ),
        ]
        for path, name in uploads:
            meta = import_upload(scene.settings, path, path.name)
            with scene.db.session() as session:
                audio, _ = add_audio(session, meta, name, operator)
                scene.audio[name] = audio.sha256
    audio, _ = speak_into_library(
        scene.db, scene.settings, NEWS_TEXT, "Bản tin sáng: tiêm chủng", Voice.NORTH, operator
    )
    scene.audio[audio.name] = audio.sha256


def _user_id(session: Session, username: str) -> int:
    return int(session.scalars(select(User.id).where(User.username == username)).one())


@contextmanager
def _api(scene: Scene) -> Iterator[tuple[Any, dict[str, str]]]:
    """The API in-process, as the operator (schedules are checked as staff's are)."""
    app = create_app(scene.settings, scene.db)
    client = app.test_client()
    resp = client.post(
        "/api/v1/auth/token", json={"username": "operator", "password": scene.passwords["operator"]}
    )
    if resp.status_code != 201:
        raise RuntimeError(f"no token: {resp.get_json()}")
    try:
        yield client, {"Authorization": f"Bearer {resp.get_json()['token']}"}
    finally:
        services.close(app)


def _local(now: datetime) -> datetime:
    return now.astimezone(ZoneInfo(TIMEZONE))


def _seed_programme(scene: Scene, now: datetime) -> dict[str, int]:
    """The commune's week: morning news, fire-safety talks, the evening security reminder."""
    start = (_local(now).date() - timedelta(days=30)).isoformat()
    news = scene.audio["Bản tin sáng: tiêm chủng"]
    items = [
        (
            "Bản tin sáng",
            news,
            [COMMUNE[0]],
            {"kind": "recurring", "frequency": "daily", "times": ["06:30"], "start_date": start},
        ),
        (
            "Tuyên truyền phòng cháy chữa cháy",
            scene.audio["Thông báo họp dân tháng này"],
            ["khu-pho-cho", "thon-dong"],
            {
                "kind": "recurring",
                "frequency": "weekly",
                "weekdays": [0, 3],
                "times": ["17:00"],
                "start_date": start,
            },
        ),
        (
            "Nhắc an ninh buổi tối",
            scene.audio["Nhạc hiệu đầu bản tin"],
            ["thon-tay", "thon-bac"],
            {"kind": "recurring", "frequency": "daily", "times": ["19:30"], "start_date": start},
        ),
        (
            "Nhạc hiệu cuối tuần",
            scene.audio["Nhạc hiệu đầu bản tin"],
            [COMMUNE[0]],
            {
                "kind": "recurring",
                "frequency": "weekly",
                "weekdays": [5, 6],
                "times": ["07:15"],
                "start_date": start,
            },
        ),
    ]
    ids: dict[str, int] = {}
    with _api(scene) as (client, headers):
        for name, sha, zones, rule in items:
            body = {
                "name": name,
                "audio_sha256": sha,
                "zone_ids": zones,
                "rule": rule,
                "gong": name == "Bản tin sáng",
            }
            resp = client.post("/api/v1/schedules", json=body, headers=headers)
            if resp.status_code != 201:
                raise RuntimeError(f"schedule {name!r} refused: {resp.get_json()}")
            ids[name] = int(resp.get_json()["id"])
    return ids


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class Reporter:
    """Stores what devices say through the console's own ingest (as the worker does)."""

    def __init__(self, db: Database) -> None:
        self.ingest = Ingest(db)

    def say(self, at: datetime, device_id: str, channel: p.Channel, message: p.Message) -> None:
        topic = p.device_topic(device_id, channel)
        self.ingest.handle_batch([Incoming(topic, p.encode(message), at)])

    def ack(self, at: datetime, device_id: str, command_id: str, status: str, **kw: Any) -> None:
        message = p.Ack(
            id=p.new_message_id(),
            ts=_ms(at),
            device_id=device_id,
            command_id=command_id,
            status=p.AckStatus(status),
            **kw,
        )
        self.say(at, device_id, p.Channel.ACK, message)

    def played(self, start: datetime, device_id: str, command_id: str, seconds: float) -> None:
        self.ack(start - timedelta(seconds=2), device_id, command_id, "received")
        self.ack(start, device_id, command_id, "started")
        self.ack(start + timedelta(seconds=seconds), device_id, command_id, "finished")

    def online(self, at: datetime, device_id: str, profile: str, **state: Any) -> None:
        self.say(
            at,
            device_id,
            p.Channel.AVAILABILITY,
            p.Availability(
                id=p.new_message_id(),
                ts=_ms(at),
                device_id=device_id,
                state=p.AvailabilityState.ONLINE,
            ),
        )
        self.state(at, device_id, profile, **state)

    def state(self, at: datetime, device_id: str, profile: str, **state: Any) -> None:
        fields = {"volume_pct": 80, **state}
        self.say(
            at,
            device_id,
            p.Channel.STATE,
            p.DeviceState(
                id=p.new_message_id(),
                ts=_ms(at),
                device_id=device_id,
                profile=profile,
                software_version="1.4.2",
                **fields,
            ),
        )

    def telemetry(self, at: datetime, device_id: str, **values: Any) -> None:
        fields = {
            "cpu_temp_c": 47.5,
            "disk_free_mb": 5200.0,
            "clock_offset_ms": 14,
            "link_quality_pct": 86,
            **values,
        }
        self.say(
            at,
            device_id,
            p.Channel.TELEMETRY,
            p.Telemetry(
                id=p.new_message_id(), ts=_ms(at), device_id=device_id, uptime_s=86_400, **fields
            ),
        )


def _anchor_day(now: datetime) -> date:
    """The day whose morning the history shows: today once its notices are over."""
    local = _local(now)
    return local.date() if local.time() >= time(10, 30) else local.date() - timedelta(days=1)


def _at(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), ZoneInfo(TIMEZONE)).astimezone(UTC)


def _broadcast(
    scene: Scene,
    *,
    bid: str,
    sha: str,
    zones: Sequence[str],
    fire_at: datetime,
    priority: p.Priority,
    title: str = "",
    schedule_id: int | None = None,
    scheduled_for: datetime | None = None,
) -> None:
    with scene.db.session() as session:
        operator = None if schedule_id else _user_id(session, "operator")
        record_broadcast(
            session,
            BroadcastRequest(
                broadcast_id=bid,
                audio_sha256=sha,
                zone_ids=zones,
                priority=priority,
                fire_at=fire_at,
                play_lead=timedelta(seconds=2),
                ttl=timedelta(seconds=120),
                title=title,
                schedule_id=schedule_id,
                scheduled_for=scheduled_for,
                created_by=operator,
            ),
        )


def _seed_history(scene: Scene, schedules: dict[str, int], now: datetime) -> None:
    """Yesterday's missed evening reminder, this morning's news and notice (with who played
    them), a notice playing now in Thôn Bắc, every device's state, and a fire alarm."""
    day = _anchor_day(now)
    news, notice = (
        scene.audio["Bản tin sáng: tiêm chủng"],
        scene.audio["Thông báo họp dân tháng này"],
    )
    speakers = [d for d, _, _ in SPEAKERS]
    rep = Reporter(scene.db)

    # The evening before, the console was down at 19:30: recorded as missed, never played late.
    evening = _at(day - timedelta(days=1), 19, 30)
    reminder = schedules["Nhắc an ninh buổi tối"]
    record_missed(
        scene.db,
        BroadcastRequest(
            broadcast_id=occurrence_id(reminder, evening),
            audio_sha256=scene.audio["Nhạc hiệu đầu bản tin"],
            zone_ids=["thon-tay", "thon-bac"],
            priority=p.Priority.SCHEDULED,
            fire_at=evening,
            play_lead=timedelta(0),
            ttl=timedelta(0),
            schedule_id=reminder,
            scheduled_for=evening,
        ),
    )

    # 06:30 the morning news, on every speaker that was connected.
    morning = _at(day, 6, 30)
    morning_id = occurrence_id(schedules["Bản tin sáng"], morning)
    _broadcast(
        scene,
        bid=morning_id,
        sha=news,
        zones=[COMMUNE[0]],
        fire_at=morning,
        priority=p.Priority.SCHEDULED,
        schedule_id=schedules["Bản tin sáng"],
        scheduled_for=morning,
    )
    for i, device_id in enumerate(d for d in speakers if d != NEVER_CONNECTED):
        rep.played(morning + timedelta(seconds=2, milliseconds=40 * i), device_id, morning_id, 14)

    # 09:15 a notice sent by the operator: one download failed, one speaker never answered.
    notice_at = _at(day, 9, 15)
    scene.report_id = "b-hop-dan-" + notice_at.strftime("%Y%m%d")
    _broadcast(
        scene,
        bid=scene.report_id,
        sha=notice,
        zones=[COMMUNE[0]],
        fire_at=notice_at,
        priority=p.Priority.LIVE,
        title="Thông báo họp dân tháng này",
    )
    for i, device_id in enumerate(speakers):
        if device_id == NEVER_CONNECTED:
            continue
        start = notice_at + timedelta(seconds=2, milliseconds=35 * i)
        if device_id == DOWNLOAD_FAILED:
            rep.ack(start - timedelta(seconds=1), device_id, scene.report_id, "received")
            rep.ack(
                start + timedelta(seconds=20),
                device_id,
                scene.report_id,
                "failed",
                reason="download failed: connection timed out",
            )
        else:
            rep.played(start, device_id, scene.report_id, 12)

    _seed_states(scene, rep, now)

    # Now: Thôn Bắc hears the vaccination notice; its unconnected speaker stays silent.
    live_id = "b-tiem-chung-" + now.strftime("%H%M")
    _broadcast(
        scene,
        bid=live_id,
        sha=news,
        zones=["thon-bac"],
        fire_at=now - timedelta(seconds=6),
        priority=p.Priority.LIVE,
        title="Thông báo lịch tiêm chủng",
    )
    for device_id in ("loa-bac-van-hoa", "loa-bac-tram-y-te"):
        rep.ack(now - timedelta(seconds=5), device_id, live_id, "received")
        rep.ack(now - timedelta(seconds=4), device_id, live_id, "started")
        playing = p.Playing(
            command_id=live_id, priority=p.Priority.LIVE, started_at=_ms(now - timedelta(seconds=4))
        )
        rep.state(
            now - timedelta(seconds=4),
            device_id,
            "speaker-node",
            playing=playing,
            amplifier_on=True,
        )

    # The call point at the market was pressed four minutes ago: nobody has acknowledged it.
    pressed = now - timedelta(minutes=4)
    alarm = p.ActiveSignal(
        signal_class=p.SignalClass.ALARM, signal="call_point", since=_ms(pressed)
    )
    rep.state(
        pressed,
        "cc-cho-hoa-an",
        "fire-point-node",
        fire_point=p.FirePointState(siren_on=True, signals=[alarm]),
    )
    rep.say(
        pressed,
        "cc-cho-hoa-an",
        p.Channel.EVENT,
        p.Event(
            id=p.new_message_id(),
            ts=_ms(pressed),
            device_id="cc-cho-hoa-an",
            signal_class=p.SignalClass.ALARM,
            signal="call_point",
            active=True,
            detail="Nút báo cháy cổng chợ",
        ),
    )


def _seed_states(scene: Scene, rep: Reporter, now: datetime) -> None:
    """What each device reports now: online and idle, offline, a full disk, a hot box, a fire
    point on battery; one speaker has never connected."""
    seen = now - timedelta(minutes=2)
    for device_id, _name, _zone in SPEAKERS:
        if device_id == NEVER_CONNECTED:
            continue
        at = now - timedelta(minutes=50) if device_id == WENT_OFFLINE else seen
        rep.online(at, device_id, "speaker-node", zones=[])
        extra: dict[str, Any] = {}
        if device_id == DOWNLOAD_FAILED:
            extra["disk_free_mb"] = 120.0
        if device_id == "loa-cho-ben-xe":
            extra["cpu_temp_c"] = 83.5
        rep.telemetry(at, device_id, **extra)
    rep.say(
        now - timedelta(minutes=48),
        WENT_OFFLINE,
        p.Channel.AVAILABILITY,
        p.Availability(
            id=p.new_message_id(),
            ts=_ms(now - timedelta(minutes=48)),
            device_id=WENT_OFFLINE,
            state=p.AvailabilityState.OFFLINE,
        ),
    )
    battery = p.ActiveSignal(
        signal_class=p.SignalClass.TROUBLE,
        signal="battery_low",
        since=_ms(now - timedelta(hours=3)),
    )
    rep.online(
        seen,
        "cc-khu-dan-cu-tay",
        "fire-point-node",
        fire_point=p.FirePointState(signals=[battery]),
    )
    rep.telemetry(seen, "cc-khu-dan-cu-tay")
    rep.online(seen, "cc-cho-hoa-an", "fire-point-node", fire_point=p.FirePointState())
    rep.telemetry(seen, "cc-cho-hoa-an")


# --- serving and photographing -------------------------------------------------------------


@contextmanager
def serve(app: Flask, port: int) -> Iterator[str]:
    """The app on a real port (as the live_server test fixture does); its base URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@dataclass(frozen=True)
class Shot:
    name: str  # the file: NAME.png
    caption: str  # one line, for docs/console.md
    take: Callable[[Page, Scene], None]  # brings the page to what is photographed
    viewport: ViewportSize = field(default_factory=lambda: DESKTOP)
    full_page: bool = False
    login: bool = True
    # Shows the scene's fire alarm unacknowledged; the other shots acknowledge it first (as the
    # duty officer would), so its banner does not hide what they show.
    alarm: bool = False


def _settle(page: Page) -> None:
    """Fonts loaded and nothing left in flight from the last action."""
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_timeout(300)  # one more paint after the last update (not a check)


def _board(page: Page, scene: Scene) -> None:
    page.goto("/")
    page.wait_for_selector('#live-state[data-state="live"]')
    page.wait_for_selector('tr[data-id="loa-bac-van-hoa"]')
    page.wait_for_selector("#alarm-banner:not([hidden])")


def _board_phone(page: Page, scene: Scene) -> None:
    _board(page, scene)
    page.locator('tr[data-id="cc-cho-hoa-an"]').scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, -60)")


def _devices(page: Page, scene: Scene) -> None:
    page.goto("/devices?zone=khu-pho-cho")
    page.wait_for_selector('tr[data-id="loa-cho-cong"]')


def _programme(page: Page, scene: Scene) -> None:
    page.goto("/programme?zone=thon-dong")
    page.wait_for_selector("#week section.day")
    page.wait_for_selector("#schedules li[data-schedule]")


def _audio(page: Page, scene: Scene) -> None:
    page.goto("/audio")
    page.wait_for_selector(".audio-item")


def _emergency(page: Page, scene: Scene) -> None:
    page.goto("/emergency")
    page.check('input[name="preset"][value="storm"]')
    page.check('input[name="repeat"][value="n"]')
    page.click("#em-submit")
    page.wait_for_selector("#em-confirm[open]")
    page.evaluate("window.scrollTo(0, 0)")  # behind the dialog: the page from its start


def _report(page: Page, scene: Scene) -> None:
    page.goto(f"/history/{scene.report_id}")
    page.wait_for_selector("table.stack tbody tr")


def _history(page: Page, scene: Scene) -> None:
    page.goto("/history")
    page.wait_for_selector("table.stack tbody tr")


def _login_page(page: Page, scene: Scene) -> None:
    page.goto("/")  # not logged in: to the form, which says why
    page.wait_for_selector("#username")


SHOTS = [
    Shot(
        "login",
        "Logging in: a page opened without a session leads here and says why",
        _login_page,
        login=False,
    ),
    Shot(
        "board",
        "The live board: counters, filters and every device's state; the red banner is a fire "
        "alarm nobody has acknowledged yet",
        _board,
        full_page=True,
        alarm=True,
    ),
    Shot(
        "board-phone",
        "The live board on a 360 px phone: each device becomes a card",
        _board_phone,
        viewport=PHONE,
        alarm=True,
    ),
    Shot(
        "devices",
        "Devices and zones: the zone tree with device counts, a hamlet's devices, registering one",
        _devices,
        full_page=True,
    ),
    Shot("programme", "The programme: a hamlet's week and the commune's schedules", _programme),
    Shot(
        "audio",
        "Audio: upload, record, type text to be spoken; the library and what uses each file",
        _audio,
        viewport=ViewportSize(width=1280, height=1300),
    ),
    Shot(
        "emergency",
        "Emergency: where, what, how many times, then ONE confirmation naming what will play",
        _emergency,
    ),
    Shot(
        "report",
        "One broadcast's delivery report: each speaker's outcome, problems first",
        _report,
        full_page=True,
    ),
    Shot(
        "history",
        "Broadcast history: outcome and success rate of every broadcast, missed ones too",
        _history,
        full_page=True,
    ),
]


def _log_in(page: Page, scene: Scene) -> None:
    page.goto("/login")
    page.fill("#username", "admin")
    page.fill("#password", scene.passwords["admin"])
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: not url.endswith("/login"))


def acknowledge_alarms(scene: Scene) -> None:
    """Every fire alarm acknowledged by the operator, through the API."""
    with _api(scene) as (client, headers):
        for alarm in client.get("/api/v1/alarms", headers=headers).get_json():
            resp = client.post(f"/api/v1/alarms/{alarm['event_id']}/ack", headers=headers)
            if resp.status_code != 200:
                raise RuntimeError(f"alarm not acknowledged: {resp.get_json()}")


def take_screenshots(
    scene: Scene, out_dir: Path, shots: Sequence[Shot] = SHOTS, browser: Browser | None = None
) -> list[Path]:
    """Serve the scene's console and photograph each shot into out_dir; the files written.
    Without a browser, Debian's Chromium is started for it (and closed after)."""
    if browser is None:
        with sync_playwright() as pw:
            own = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                return take_screenshots(scene, out_dir, shots, own)
            finally:
                own.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(scene.settings, scene.db)
    written: list[Path] = []
    try:
        with serve(app, scene.settings.web_port) as base:
            for shot in shots:
                if shot.login and not shot.alarm:
                    acknowledge_alarms(scene)
                written.append(_photograph(browser, base, scene, shot, out_dir))
    finally:
        services.close(app)
    _optimise(written)
    return written


def _photograph(browser: Browser, base: str, scene: Scene, shot: Shot, out_dir: Path) -> Path:
    context = browser.new_context(
        base_url=base,
        locale="vi-VN",
        timezone_id=TIMEZONE,
        viewport=shot.viewport,
        device_scale_factor=1,
    )
    context.set_default_timeout(WAIT_MS)
    try:
        page = context.new_page()
        if shot.login:
            _log_in(page, scene)
        shot.take(page, scene)
        _settle(page)
        path = out_dir / f"{shot.name}.png"
        page.screenshot(path=str(path), full_page=shot.full_page)
        return path
    finally:
        context.close()


def _optimise(paths: Sequence[Path]) -> None:
    """Smaller PNGs, losslessly, when optipng is installed (it is not required)."""
    optipng = shutil.which("optipng")
    if optipng and paths:
        subprocess.run([optipng, "-quiet", "-o2", *map(str, paths)], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument(
        "--only", default="", help="comma-separated shot names: " + ", ".join(s.name for s in SHOTS)
    )
    args = parser.parse_args(argv)
    wanted = [n for n in args.only.split(",") if n]
    unknown = sorted(set(wanted) - {s.name for s in SHOTS})
    if unknown:
        parser.error(f"unknown shot(s): {', '.join(unknown)}")
    shots = [s for s in SHOTS if not wanted or s.name in wanted]
    with tempfile.TemporaryDirectory(prefix="loa-screenshots-") as tmp:
        scene = build_scene(Path(tmp), presets=any(s.name == "emergency" for s in shots))
        try:
            for path in take_screenshots(scene, args.out, shots):
                print(f"{path} ({path.stat().st_size // 1024} KiB)")
        finally:
            scene.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
