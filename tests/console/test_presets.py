"""Emergency presets: generated at setup with real espeak-ng and ffmpeg, replaceable by staff,
and pushed to every device in its retained config by the console worker.

Real broker (authenticated), real database, real HTTP, real simulated bridge.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask.testing import FlaskClient
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from audio_library import TARGET_LUFS, AudioStore
from console.broadcasts import media_url
from console.db import Database, upgrade
from console.device_config import ConfigPusher, bump_config_revision, config_revision
from console.models import AudioFile, Device, DeviceConfigRecord, Preset, Zone, ZoneKind
from console.mqtt_link import LinkError
from console.presets import GONG_KEY, PRESETS, SPECS, ensure_presets, missing_presets
from console.provisioning import decommission_device
from console.settings import Settings
from console.worker import Worker, build_worker
from device_profiles import protocol
from firmware_bridge import build_bridge, load_bridge_config
from tests.conftest import Broker, wait_for
from tests.console.conftest import token_for

KEYS = [spec.key for spec in PRESETS]


@dataclass
class Generated:
    """Presets generated once for this module (a few seconds of real TTS and ffmpeg)."""

    db: Database
    media_dir: Path
    created: list[str]
    seconds: float


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    root = tmp_path_factory.mktemp("presets")
    url = f"sqlite:///{root / 'console.sqlite3'}"
    upgrade(url)
    db = Database(url)
    started = time.monotonic()
    created = ensure_presets(db, root / "media")
    yield Generated(db, root / "media", created, time.monotonic() - started)
    db.dispose()


def _columns(obj: object) -> dict[str, Any]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(obj).mapper.column_attrs}


@pytest.fixture
def seeded(db: Database, settings: Settings, generated: Generated) -> list[Preset]:
    """The generated presets copied into this test's database and media folder."""
    shutil.copytree(generated.media_dir, settings.media_dir, dirs_exist_ok=True)
    with generated.db.session() as src:
        audio = [AudioFile(**_columns(a)) for a in src.scalars(select(AudioFile))]
        presets = [Preset(**_columns(p)) for p in src.scalars(select(Preset))]
    with db.session() as session:
        session.add_all(audio)
        session.flush()
        session.add_all(presets)
        bump_config_revision(session)
    return presets


# --- generation ---------------------------------------------------------------------------


def test_generation_makes_every_preset_as_stored_audio(generated: Generated) -> None:
    assert generated.created == KEYS
    assert len(KEYS) == 9 and GONG_KEY in KEYS
    assert generated.seconds < 60
    store = AudioStore(generated.media_dir)
    with generated.db.session() as session:
        rows = {p.key: (p, p.audio) for p in session.scalars(select(Preset))}
        assert config_revision(session) == 1  # the worker is told once
    assert set(rows) == set(KEYS)
    assert len({audio.sha256 for _, audio in rows.values()}) == 9
    for key, (preset, audio) in rows.items():
        spec = SPECS[key]
        assert preset.title == spec.title == audio.name
        assert preset.text == spec.text
        assert preset.updated_by is None
        assert audio.mime == "audio/mpeg"
        path = store.path_for(audio.sha256)
        assert path.stat().st_size == audio.size_bytes > 0
        assert audio.loudness_lufs is not None and abs(audio.loudness_lufs - TARGET_LUFS) <= 1.5
        if key == GONG_KEY:
            assert preset.text is None and 2000 <= audio.duration_ms <= 3000
        else:
            assert spec.text is not None and len(spec.text) > 80
            assert 5_000 <= audio.duration_ms <= 30_000, (key, audio.duration_ms)


def test_a_second_generation_does_nothing(generated: Generated) -> None:
    with generated.db.session() as session:
        before = session.scalar(select(func.count()).select_from(AudioFile))
        revision = config_revision(session)
    started = time.monotonic()
    assert ensure_presets(generated.db, generated.media_dir) == []
    assert time.monotonic() - started < 1
    with generated.db.session() as session:
        assert session.scalar(select(func.count()).select_from(AudioFile)) == before
        assert config_revision(session) == revision


def test_audio_used_by_a_preset_cannot_be_deleted(db: Database, seeded: list[Preset]) -> None:
    fire = next(p for p in seeded if p.key == "fire")
    with pytest.raises(IntegrityError), db.session() as session:
        audio = session.get(AudioFile, fire.audio_sha256)
        assert audio is not None
        session.delete(audio)
    with db.session() as session:
        assert session.get(AudioFile, fire.audio_sha256) is not None


# --- the API --------------------------------------------------------------------------------


def tone_wav(path: Path, seconds: float) -> Path:
    """A small WAV (8 kHz: the test client spools larger uploads to a file it never closes)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi",
         "-i", f"sine=frequency=660:duration={seconds}:sample_rate=8000",
         "-af", "volume=0.3", "-y", str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


def upload_tone(client: FlaskClient, tmp_path: Path, seconds: float, name: str) -> dict[str, Any]:
    wav = tone_wav(tmp_path / f"{name}.wav", seconds)
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(wav.read_bytes()), f"{name}.wav"), "name": name},
        headers=token_for(client, "operator"),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def test_everyone_reads_the_presets(client: FlaskClient, seeded: list[Preset]) -> None:
    resp = client.get("/api/v1/presets", headers=token_for(client, "viewer"))
    assert resp.status_code == 200
    listed = resp.get_json()
    assert [p["key"] for p in listed] == KEYS
    fire = listed[0]
    assert fire["title"] == "Báo cháy" and "cháy" in fire["text"]
    assert fire["duration_ms"] > 5000 and len(fire["audio_sha256"]) == 64
    one = client.get("/api/v1/presets/storm", headers=token_for(client, "viewer"))
    assert one.status_code == 200 and one.get_json()["title"] == "Cảnh báo bão"
    assert client.get("/api/v1/presets").status_code == 401


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 200), ("admin", 200)])
def test_who_may_replace_a_preset(
    client: FlaskClient, db: Database, seeded: list[Preset], tmp_path: Path, role: str, status: int
) -> None:
    tone = upload_tone(client, tmp_path, 1.5, "tieng-coi")
    with db.session() as session:
        revision = config_revision(session)
    resp = client.put(
        "/api/v1/presets/fire", json={"audio_sha256": tone["sha256"]}, headers=token_for(client, role)
    )
    assert resp.status_code == status, resp.get_json()
    listed = client.get("/api/v1/presets/fire", headers=token_for(client, "viewer")).get_json()
    with db.session() as session:
        moved = config_revision(session) > revision
    if status == 200:
        body = resp.get_json()
        assert body["audio_sha256"] == tone["sha256"] == listed["audio_sha256"]
        assert body["text"] is None and body["title"] == "Báo cháy"
        assert body["updated_by"] is not None and moved
    else:
        assert resp.get_json()["error"]["code"] == "forbidden"
        assert listed["audio_sha256"] != tone["sha256"] and not moved


@pytest.mark.parametrize(
    ("key", "body", "status", "code"),
    [
        ("no-such-preset", {"audio_sha256": "a" * 64}, 404, "not_found"),
        ("fire", {"audio_sha256": "a" * 64}, 422, "invalid"),  # no such audio
        ("fire", {"audio_sha256": "not-a-hash"}, 422, "invalid"),
        ("fire", {}, 422, "invalid"),
        ("fire", {"audio_sha256": "a" * 64, "title": "x"}, 422, "invalid"),
    ],
)
def test_bad_replacements_get_clear_errors(
    client: FlaskClient, key: str, body: dict[str, str], status: int, code: str
) -> None:
    resp = client.put(f"/api/v1/presets/{key}", json=body, headers=token_for(client, "operator"))
    assert resp.status_code == status
    error = resp.get_json()["error"]
    assert error["code"] == code
    if status == 422:
        assert error["field"] in ("audio_sha256", "title")


def test_the_gong_must_stay_short(client: FlaskClient, tmp_path: Path) -> None:
    long_tone = upload_tone(client, tmp_path, 11.0, "coi-dai")
    resp = client.put(
        "/api/v1/presets/gong",
        json={"audio_sha256": long_tone["sha256"]},
        headers=token_for(client, "operator"),
    )
    assert resp.status_code == 422
    assert resp.get_json()["error"]["field"] == "audio_sha256"


def test_a_preset_replaced_before_generation_is_kept(
    client: FlaskClient, db: Database, tmp_path: Path
) -> None:
    tone = upload_tone(client, tmp_path, 1.5, "bao-chay")
    resp = client.put(
        "/api/v1/presets/fire",
        json={"audio_sha256": tone["sha256"]},
        headers=token_for(client, "operator"),
    )
    assert resp.status_code == 200, resp.get_json()
    with db.session() as session:
        assert "fire" not in [spec.key for spec in missing_presets(session)]
        assert len(missing_presets(session)) == 8


# --- the config push, with a fake link -------------------------------------------------------


@dataclass
class FakeLink:
    """Records retained publishes; `fail` makes the broker "not confirm" them."""

    connected: threading.Event = field(default_factory=threading.Event)
    retained: dict[str, bytes] = field(default_factory=dict)
    sent: list[str] = field(default_factory=list)
    fail: bool = False

    def publish(
        self,
        topic: str,
        message: BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        if self.fail:
            raise LinkError(f"broker did not confirm {topic}")
        assert retain and qos == 1
        self.retained[topic] = protocol.encode(message)
        self.sent.append(topic)

    def clear_retained(self, topic: str, *, qos: int = 1, timeout_s: float = 5.0) -> None:
        if self.fail:
            raise LinkError(f"broker did not confirm {topic}")
        self.retained.pop(topic, None)
        self.sent.append(topic)


def test_versions_move_only_with_content_and_unconfirmed_configs_are_retried(
    db: Database, seeded: list[Preset]
) -> None:
    with db.session() as session:
        session.add(Zone(id="xa-fake", name="Xã", kind=ZoneKind.COMMUNE))
        session.flush()
        for device_id in ("loa-fake-1", "loa-fake-2"):
            session.add(
                Device(
                    id=device_id,
                    name=device_id,
                    profile="speaker-node",
                    zone_id="xa-fake",
                    secret_sha256="",
                )
            )
    link = FakeLink()
    pusher = ConfigPusher(db, link, "http://console.example:8080", lambda: datetime.now(UTC))
    topic = protocol.device_topic("loa-fake-1", protocol.Channel.CONFIG)

    def version(device_id: str) -> int:
        raw = link.retained[protocol.device_topic(device_id, protocol.Channel.CONFIG)]
        return protocol.decode(protocol.DeviceConfig, raw).version

    link.fail = True  # the broker does not confirm: nothing is recorded as published
    assert not pusher.sync()
    link.fail = False
    assert pusher.sync() and version("loa-fake-1") == version("loa-fake-2") == 1
    assert link.sent == [topic, protocol.device_topic("loa-fake-2", protocol.Channel.CONFIG)]
    config = protocol.decode(protocol.DeviceConfig, link.retained[topic])
    assert config.zones == ["xa-fake"] and len(config.presets) == 9
    assert config.presets[0].url.startswith("http://console.example:8080/media/")

    link.sent.clear()
    assert pusher.sync() and link.sent == []  # nothing changed: nothing sent
    assert pusher.sync(republish=True) and len(link.sent) == 2 and version("loa-fake-1") == 1

    with db.session() as session:  # the gong now plays what the fire preset plays
        gong = session.get(Preset, GONG_KEY)
        fire = session.get(Preset, "fire")
        assert gong is not None and fire is not None
        gong.audio_sha256 = fire.audio_sha256
        session.delete(session.get(Device, "loa-fake-2"))
    link.sent.clear()
    assert pusher.sync()
    assert version("loa-fake-1") == 2
    assert protocol.device_topic("loa-fake-2", protocol.Channel.CONFIG) not in link.retained
    with db.session() as session:
        records = {r.device_id: r for r in session.scalars(select(DeviceConfigRecord))}
    assert (records["loa-fake-1"].version, records["loa-fake-1"].published_version) == (2, 2)
    assert (records["loa-fake-2"].version, records["loa-fake-2"].digest) == (2, "")


# --- the retained config on the broker ----------------------------------------------------


class ConfigWatcher:
    """A console-account client that records every config published for some devices."""

    def __init__(self, broker: Broker, device_ids: list[str]) -> None:
        self.seen: dict[str, list[bytes]] = {d: [] for d in device_ids}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.username_pw_set(broker.console_username, broker.console_password)
        self.client.on_connect = lambda c, _u, _f, _rc, _p: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(5)
        topics = [(protocol.device_topic(d, protocol.Channel.CONFIG), 1) for d in device_ids]
        self.client.subscribe(topics)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        device_id, _channel = protocol.parse_device_topic(msg.topic)
        with self._lock:
            self.seen[device_id].append(bytes(msg.payload))

    def latest(self, device_id: str) -> bytes | None:
        with self._lock:
            got = self.seen[device_id]
            return got[-1] if got else None

    def config(self, device_id: str, min_version: int = 0) -> protocol.DeviceConfig:
        """Wait for a config of at least min_version."""

        def newest() -> protocol.DeviceConfig | None:
            raw = self.latest(device_id)
            if not raw:
                return None
            config = protocol.decode(protocol.DeviceConfig, raw)
            return config if config.version >= min_version else None

        config: protocol.DeviceConfig = wait_for(newest, 15, f"config v{min_version}+ of {device_id}")
        return config

    def count(self, device_id: str) -> int:
        with self._lock:
            return len(self.seen[device_id])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def register(client: FlaskClient, device_id: str, zone_id: str, profile: str) -> dict[str, Any]:
    resp = client.post(
        "/api/v1/devices",
        json={"id": device_id, "name": device_id, "profile": profile, "zone_id": zone_id},
        headers=token_for(client, "admin"),
    )
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def make_zones(client: FlaskClient, commune: str, hamlet: str) -> None:
    admin = token_for(client, "admin")
    for zone in [
        {"id": commune, "name": "Xã Thử", "kind": "commune"},
        {"id": hamlet, "name": "Thôn Thử", "kind": "hamlet", "parent_id": commune},
    ]:
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201



def check_presets(config: protocol.DeviceConfig, db: Database, base_url: str) -> None:
    with db.session() as session:
        rows = {p.key: p.audio for p in session.scalars(select(Preset))}
    assert sorted(p.name for p in config.presets) == sorted(KEYS)
    for ref in config.presets:
        audio = rows[ref.name]
        assert ref.sha256 == audio.sha256
        assert ref.url == media_url(base_url, audio.sha256)
        assert ref.duration_ms == audio.duration_ms and ref.bytes == audio.size_bytes


def test_the_worker_pushes_each_device_its_retained_config(
    client: FlaskClient,
    db: Database,
    settings: Settings,
    seeded: list[Preset],
    mqtt_broker: Broker,
    tmp_path: Path,
) -> None:
    make_zones(client, "xa-cfg", "thon-cfg")
    register(client, "loa-cfg-1", "thon-cfg", "speaker-node")
    register(client, "cc-cfg-1", "thon-cfg", "fire-point-node")
    watcher = ConfigWatcher(mqtt_broker, ["loa-cfg-1", "loa-cfg-2", "cc-cfg-1"])
    viewer = token_for(client, "viewer")
    running = build_worker(settings, db=db)
    running.start(poll_s=0.2)
    try:
        # At start: every device, with its zone and the zone's ancestors.
        speaker = watcher.config("loa-cfg-1", 1)
        assert speaker.zones == ["thon-cfg", "xa-cfg"] and speaker.volume_pct == 80
        check_presets(speaker, db, settings.public_base_url)
        fire_point = watcher.config("cc-cfg-1", 1)
        assert fire_point.zones == ["thon-cfg", "xa-cfg"] and fire_point.presets == []
        device = client.get("/api/v1/devices/loa-cfg-1", headers=viewer).get_json()
        assert device["config_version"] == speaker.version

        # A device registered while the worker runs gets its config at once.
        register(client, "loa-cfg-2", "thon-cfg", "speaker-node")
        second = watcher.config("loa-cfg-2", 1)
        check_presets(second, db, settings.public_base_url)

        # A replaced preset: a newer config, naming the new audio, for every speaker.
        tone = upload_tone(client, tmp_path, 1.5, "coi-bao-chay")
        resp = client.put(
            "/api/v1/presets/fire",
            json={"audio_sha256": tone["sha256"]},
            headers=token_for(client, "operator"),
        )
        assert resp.status_code == 200
        for device_id, before in (("loa-cfg-1", speaker), ("loa-cfg-2", second)):
            after = watcher.config(device_id, before.version + 1)
            fire = next(p for p in after.presets if p.name == "fire")
            assert fire.sha256 == tone["sha256"]
            assert fire.url == media_url(settings.public_base_url, tone["sha256"])
            check_presets(after, db, settings.public_base_url)
        # Nothing changed for the fire point (it plays no audio): same version, not resent.
        fire_point_json = client.get("/api/v1/devices/cc-cfg-1", headers=viewer).get_json()
        assert fire_point_json["config_version"] == fire_point.version
        assert watcher.count("cc-cfg-1") == 1

        # Decommissioned: its retained config is cleared (an empty retained payload).
        with mqtt_broker.admin() as admin, db.session() as session:
            decommission_device(session, admin, "loa-cfg-2")
        wait_for(lambda: watcher.latest("loa-cfg-2") == b"", 15, "the cleared config")
        latest = watcher.config("loa-cfg-1", 2)
    finally:
        running.stop()

    # A restarted worker republishes the same version; a newcomer finds it retained.
    sent = watcher.count("loa-cfg-1")
    again = build_worker(settings, db=db)
    again.start(poll_s=0.2)
    try:
        wait_for(lambda: watcher.count("loa-cfg-1") > sent, 15, "the republished config")
        assert watcher.config("loa-cfg-1").version == latest.version
    finally:
        again.stop()
    newcomer = ConfigWatcher(mqtt_broker, ["loa-cfg-1", "loa-cfg-2"])
    try:
        assert newcomer.config("loa-cfg-1").version == latest.version
        time.sleep(0.5)
        assert newcomer.latest("loa-cfg-2") is None  # nothing retained any more
    finally:
        newcomer.close()
        watcher.close()
    with db.session() as session:
        record = session.get(DeviceConfigRecord, "loa-cfg-2")
        # v1 registered, v2 the replaced preset, v3 cleared: never back, even if re-registered.
        assert record is not None and record.digest == "" and record.version == 3


def test_a_simulated_bridge_caches_every_preset_and_echoes_the_version(
    client: FlaskClient,
    settings: Settings,
    seeded: list[Preset],
    live_server: str,
    worker: Worker,
    tmp_path: Path,
) -> None:
    make_zones(client, "xa-cfg-br", "thon-cfg-br")
    body = register(client, "loa-cfg-br", "thon-cfg-br", "speaker-node")
    text = body["bridge_config"].replace('"/var/lib/tieng-loa', f'"{tmp_path / "loa-cfg-br"}')
    path = tmp_path / "loa-cfg-br.toml"
    path.write_text(text, encoding="utf-8")
    bridge = build_bridge(load_bridge_config(path), simulate=True)
    viewer = token_for(client, "viewer")

    def applied() -> dict[str, Any] | None:
        device = client.get("/api/v1/devices/loa-cfg-br", headers=viewer).get_json()
        state = device["state"] or {}
        version = device["config_version"]
        return device if version and state.get("config_version") == version else None

    bridge.start()
    try:
        device = wait_for(applied, 20, "the bridge to echo its config version")
        wait_for(lambda: len(bridge.core.preset_paths) == 9, 20, "every preset cached")
        with_sha = {name: p.stem for name, p in bridge.core.preset_paths.items()}
        assert with_sha == {p.key: p.audio_sha256 for p in seeded}

        tone = upload_tone(client, tmp_path, 1.5, "coi-moi")
        resp = client.put(
            "/api/v1/presets/fire",
            json={"audio_sha256": tone["sha256"]},
            headers=token_for(client, "operator"),
        )
        assert resp.status_code == 200
        wait_for(
            lambda: (d := applied()) and d["config_version"] > device["config_version"],
            20,
            "the newer config version echoed",
        )
        wait_for(
            lambda: bridge.core.preset_paths.get("fire", Path()).stem == tone["sha256"],
            20,
            "the replaced preset cached",
        )
    finally:
        bridge.stop()
