"""A whole simulated bridge on the real broker: audio over HTTP with sha256 checks, presets
fetched ahead, bad payloads on every topic it reads counted while it keeps playing."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from device_profiles import protocol
from firmware_bridge import build_bridge
from firmware_bridge.bridge import Bridge
from firmware_bridge.cache import AudioCache
from tests.conftest import Broker
from tests.firmware_bridge.conftest import MakeConfig
from tests.firmware_bridge.mqtt_tools import Listener, wait_for


def tone_mp3(path: Path, seconds: float, freq_hz: int = 440) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency={freq_hz}:duration={seconds}", "-ac", "1", "-b:a", "64k", "-y",
         str(path)],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


@dataclass
class MediaServer:
    """Serves files by name, only to requests with HTTP Basic credentials, and counts them."""

    directory: Path
    credentials: tuple[str, str] | None = None
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def add(self, path: Path) -> protocol.AudioRef:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (self.directory / f"{sha}.mp3").write_bytes(data)
        return protocol.AudioRef(
            url=f"{self.url}/media/{sha}.mp3", sha256=sha, duration_ms=1000, bytes=len(data)
        )


@pytest.fixture
def media(tmp_path: Path) -> Iterator[MediaServer]:
    server_dir = tmp_path / "served"
    server_dir.mkdir()
    media = MediaServer(server_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            media.requests.append(self.path)
            auth = self.headers.get("Authorization", "")
            if media.credentials is not None:
                expected = base64.b64encode(":".join(media.credentials).encode()).decode()
                if auth != f"Basic {expected}":
                    self.send_error(401)
                    return
            path = server_dir / Path(self.path).name
            if not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    media.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield media
    server.shutdown()
    server.server_close()


@pytest.fixture
def listener(mqtt_broker: Broker) -> Iterator[Listener]:
    lst = Listener(mqtt_broker)
    yield lst
    lst.close()


@pytest.fixture
def bridge_of(make_config: MakeConfig) -> Iterator[dict[str, Bridge]]:
    bridges: dict[str, Bridge] = {}
    yield bridges
    for bridge in bridges.values():
        bridge.stop()


def start_bridge(
    bridges: dict[str, Bridge], make_config: MakeConfig, device_id: str, zones: list[str]
) -> Bridge:
    bridge = build_bridge(make_config(device_id, zones), simulate=True)
    bridge.start()
    assert bridge.link.connected.wait(10)
    bridges[device_id] = bridge
    return bridge


def play_command(command_id: str, audio: protocol.AudioRef, **fields: object) -> protocol.PlayCommand:
    now = protocol_now()
    return protocol.PlayCommand(
        id=command_id,
        ts=now,
        priority=fields.pop("priority", protocol.Priority.LIVE),  # type: ignore[arg-type]
        audio=audio,
        expires_at=now + 60_000,
        **fields,  # type: ignore[arg-type]
    )


def protocol_now() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_a_zone_command_is_played_and_reported(
    bridge_of: dict[str, Bridge], make_config: MakeConfig, listener: Listener,
    media: MediaServer, tmp_path: Path,
) -> None:  # fmt: skip
    bridge = start_bridge(bridge_of, make_config, "loa-br1", ["thon-br1", "xa-br"])
    media.credentials = bridge.config.media_auth()
    audio = media.add(tone_mp3(tmp_path / "tone.mp3", 0.6))
    listener.publish(protocol.zone_command_topic("xa-br"), play_command("br1-c1", audio))
    wait_for(
        lambda: listener.ack_statuses("loa-br1", "br1-c1") == ["received", "started", "finished"],
        20,
        "received -> started -> finished",
    )
    [online] = listener.decoded("loa-br1", protocol.Channel.AVAILABILITY)[:1]
    assert online.state == protocol.AvailabilityState.ONLINE
    state = listener.decoded("loa-br1", protocol.Channel.STATE)[-1]
    assert state.zones == ["thon-br1", "xa-br"] and state.profile == "speaker-node"
    assert bridge.cache.path_of(audio.sha256).is_file()


def test_bad_payloads_on_every_topic_it_reads_are_counted_and_it_plays_on(
    bridge_of: dict[str, Bridge], make_config: MakeConfig, listener: Listener,
    media: MediaServer, tmp_path: Path,
) -> None:  # fmt: skip
    bridge = start_bridge(bridge_of, make_config, "loa-br2", ["thon-br2"])
    media.credentials = bridge.config.media_auth()
    command_topics = [
        protocol.zone_command_topic("thon-br2"),
        protocol.device_topic("loa-br2", protocol.Channel.CMD),
    ]
    bad = [b"", b"{", b"null", b'{"v":1}', b'{"v":9,"type":"play"}', "{\"v\":1,\"type\":\"play\",\"title\":\"\u00e9\"}".encode(), b"\x00" * 70_000]
    for topic in command_topics:
        for payload in bad:
            listener.publish(topic, payload)
    config_topic = protocol.device_topic("loa-br2", protocol.Channel.CONFIG)
    listener.publish(config_topic, b'{"v":1,"id":"x","ts":1,"version":"seven"}')
    audio = media.add(tone_mp3(tmp_path / "tone.mp3", 0.3))
    listener.publish(command_topics[0], play_command("br2-ok", audio))
    wait_for(
        lambda: listener.ack_statuses("loa-br2", "br2-ok")[-1:] == ["finished"],
        20,
        "the good command to play after the bad ones",
    )
    counters = wait_for(
        lambda: (c := bridge.counters).get("malformed_command") == 2 * len(bad) and c,
        10,
        "every bad command counted",
    )
    assert counters["malformed_config"] == 1 and counters.get("internal_error", 0) == 0
    state = wait_for(
        lambda: [
            s for s in listener.decoded("loa-br2", protocol.Channel.STATE)
            if s.counters.get("malformed_command") == 2 * len(bad)
        ],
        10,
        "the counters in the retained state",
    )  # fmt: skip
    assert state[-1].counters["malformed_config"] == 1
    listener.publish(config_topic, b"", retain=True)  # leave no retained config behind


def test_audio_whose_hash_differs_is_refused(
    bridge_of: dict[str, Bridge], make_config: MakeConfig, listener: Listener,
    media: MediaServer, tmp_path: Path,
) -> None:  # fmt: skip
    bridge = start_bridge(bridge_of, make_config, "loa-br3", ["thon-br3"])
    good = media.add(tone_mp3(tmp_path / "tone.mp3", 0.3))
    (media.directory / f"{good.sha256}.mp3").write_bytes(b"ID3 tampered with on the way")
    listener.publish(protocol.zone_command_topic("thon-br3"), play_command("br3-c1", good))
    wait_for(lambda: "failed" in listener.ack_statuses("loa-br3", "br3-c1"), 20, "failed ack")
    [ack] = [
        a for a in listener.decoded("loa-br3", protocol.Channel.ACK)
        if a.command_id == "br3-c1" and a.status == protocol.AckStatus.FAILED
    ]  # fmt: skip
    assert ack.reason is not None and "sha256 mismatch" in ack.reason
    assert not list(bridge.cache.directory.iterdir())  # nothing half-written stays


def test_presets_from_the_retained_config_are_fetched_before_any_emergency(
    bridge_of: dict[str, Bridge], make_config: MakeConfig, listener: Listener,
    media: MediaServer, tmp_path: Path,
) -> None:  # fmt: skip
    fire = media.add(tone_mp3(tmp_path / "fire.mp3", 0.4, 880))
    gong = media.add(tone_mp3(tmp_path / "gong.mp3", 0.2, 660))
    config = protocol.DeviceConfig(
        id="cfg-br4", ts=protocol_now(), version=4, volume_pct=70,
        presets=[
            protocol.PresetRef(name="fire", **fire.model_dump()),
            protocol.PresetRef(name="gong", **gong.model_dump()),
        ],
    )  # fmt: skip
    config_topic = protocol.device_topic("loa-br4", protocol.Channel.CONFIG)
    listener.publish(config_topic, config, retain=True)  # waiting before the device connects
    try:
        bridge = start_bridge(bridge_of, make_config, "loa-br4", ["thon-br4"])
        wait_for(lambda: set(bridge.core.preset_paths) == {"fire", "gong"}, 20, "presets cached")
        state = wait_for(
            lambda: [
                s for s in listener.decoded("loa-br4", protocol.Channel.STATE)
                if s.config_version == 4
            ],
            10,
            "the config version echoed",
        )  # fmt: skip
        assert state[-1].volume_pct == 70
        downloads = len(media.requests)
        listener.publish(
            protocol.zone_command_topic("thon-br4"),
            play_command("br4-fire", fire, priority=protocol.Priority.EMERGENCY, gong=True),
        )
        wait_for(
            lambda: listener.ack_statuses("loa-br4", "br4-fire")[-1:] == ["finished"],
            20,
            "the emergency to play",
        )
        assert len(media.requests) == downloads  # played from the cache, no download
        player = bridge.player
        played = [path.name for path, _ in player.played]  # type: ignore[attr-defined]
        assert played == [f"{gong.sha256}.mp3", f"{fire.sha256}.mp3", f"{gong.sha256}.mp3"]
    finally:
        listener.publish(config_topic, b"", retain=True)


# --- the audio cache on its own ------------------------------------------------------------


def test_the_cache_evicts_the_least_recently_used_within_its_budget(
    media: MediaServer, tmp_path: Path
) -> None:
    refs = [media.add(tone_mp3(tmp_path / f"t{n}.mp3", 1.0, 300 + 100 * n)) for n in range(3)]
    size = max(r.bytes or 0 for r in refs)
    cache = AudioCache(tmp_path / "cache", budget_bytes=int(size * 2.5))
    try:
        first = cache.get(refs[0])
        cache.get(refs[1])
        cache.get(refs[0])  # used again: now the most recent
        import os

        os.utime(cache.path_of(refs[1].sha256), (1, 1))  # and the second clearly older
        cache.get(refs[2])
        assert first.is_file() and cache.path_of(refs[2].sha256).is_file()
        assert not cache.path_of(refs[1].sha256).exists()
        assert cache.usage_bytes() <= cache.budget_bytes
    finally:
        cache.close()


def test_the_cache_removes_partial_downloads_left_by_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / f".{'e' * 64}.part").write_bytes(b"half a file")
    AudioCache(directory, 10**6).close()
    assert not list(directory.iterdir())


def test_the_cache_refuses_a_download_larger_than_announced(
    media: MediaServer, tmp_path: Path
) -> None:
    ref = media.add(tone_mp3(tmp_path / "t.mp3", 1.0))
    cache = AudioCache(tmp_path / "cache", 10**7)
    try:
        lying = ref.model_copy(update={"bytes": 100})
        done: list[tuple[Path | None, str | None]] = []
        finished = threading.Event()
        cache.fetch(lying, lambda p, e: (done.append((p, e)), finished.set()))
        assert finished.wait(10)
        assert done[0][0] is None and "larger than the announced" in (done[0][1] or "")
        assert not list(cache.directory.iterdir())
    finally:
        cache.close()
