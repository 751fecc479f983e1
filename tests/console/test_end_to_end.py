"""One broadcast end to end: upload through the API, schedule to one hamlet, the worker fires,
the hamlet's simulated speakers play it and acknowledge, and the console shows each outcome.

Real broker (authenticated), real ffmpeg, real database, real HTTP; only GPIO is simulated.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient

from console.db import Database
from console.settings import Settings
from console.worker import build_worker
from firmware_bridge import build_bridge, load_bridge_config
from tests.conftest import wait_for
from tests.console.conftest import token_for

# Real bridges and a broker: its SQL is the API's and the worker's, covered on PostgreSQL elsewhere.
pytestmark = pytest.mark.sqlite_only

COMMUNE = {"id": "xa-e2e", "name": "Xã Thử Nghiệm", "kind": "commune"}
HAMLETS = [
    {"id": "thon-a", "name": "Thôn A", "kind": "hamlet", "parent_id": "xa-e2e"},
    {"id": "thon-b", "name": "Thôn B", "kind": "hamlet", "parent_id": "xa-e2e"},
]
DEVICES = [("loa-a1", "thon-a"), ("loa-a2", "thon-a"), ("loa-b1", "thon-b")]


def tone_wav(path: Path, seconds: float = 1.5) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-af",
            "volume=0.3",
            "-y",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture
def fleet(client: FlaskClient, tmp_path: Path, live_server: str) -> Iterator[dict[str, Any]]:
    """Zones and devices registered through the API; bridges built from the files it returns."""
    admin = token_for(client, "admin")
    for zone in [COMMUNE, *HAMLETS]:
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    bridges = {}
    for device_id, zone_id in DEVICES:
        resp = client.post(
            "/api/v1/devices",
            json={
                "id": device_id,
                "name": device_id,
                "profile": "speaker-node",
                "zone_id": zone_id,
            },
            headers=admin,
        )
        assert resp.status_code == 201, resp.get_json()
        body = resp.get_json()
        assert body["zones"] == [zone_id, "xa-e2e"]
        text = body["bridge_config"].replace('"/var/lib/tieng-loa', f'"{tmp_path / device_id}')
        path = tmp_path / f"{device_id}.toml"
        path.write_text(text, encoding="utf-8")
        bridges[device_id] = build_bridge(load_bridge_config(path), simulate=True)
    for bridge in bridges.values():
        bridge.start()
    yield bridges
    for bridge in bridges.values():
        bridge.stop()


def test_scheduled_broadcast_reaches_one_hamlet_and_is_reported(
    client: FlaskClient, settings: Settings, db: Database, fleet: dict[str, Any], tmp_path: Path
) -> None:
    operator = token_for(client, "operator")
    viewer = token_for(client, "viewer")

    # Every device comes online (retained availability, stored by the worker's ingest).
    worker = build_worker(settings, db=db)
    worker.start(poll_s=0.2)
    try:
        wait_for(
            lambda: all(
                d["online"] for d in client.get("/api/v1/devices", headers=viewer).get_json()
            ),
            20,
            "all devices online",
        )

        wav = tone_wav(tmp_path / "notice.wav")
        resp = client.post(
            "/api/v1/audio",
            data={"file": (io.BytesIO(wav.read_bytes()), "thong-bao.wav"), "name": "Thông báo"},
            headers=operator,
            content_type="multipart/form-data",
        )
        assert resp.status_code == 201, resp.get_json()
        audio = resp.get_json()
        assert audio["mime"] == "audio/mpeg" and 1000 < audio["duration_ms"] < 2000

        # The test runs at any hour: this commune has no quiet hours (start == end).
        resp = client.put(
            "/api/v1/communes/xa-e2e/quiet-hours",
            json={"start": "00:00", "end": "00:00"},
            headers=token_for(client, "admin"),
        )
        assert resp.status_code == 200, resp.get_json()
        at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        at = at.astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
        resp = client.post(
            "/api/v1/schedules",
            json={
                "name": "Thông báo thôn A",
                "audio_sha256": audio["sha256"],
                "rule": {"kind": "once", "at": at.isoformat()},
                "zone_ids": ["thon-a"],
            },
            headers=operator,
        )
        assert resp.status_code == 201, resp.get_json()
        schedule_id = resp.get_json()["id"]

        def finished_broadcast() -> dict[str, Any] | None:
            listed = client.get(
                f"/api/v1/broadcasts?schedule_id={schedule_id}", headers=viewer
            ).get_json()
            if not listed:
                return None
            detail = client.get(f"/api/v1/broadcasts/{listed[0]['id']}", headers=viewer).get_json()
            done = [d for d in detail["deliveries"] if d["status"] == "finished"]
            return detail if len(done) == 2 else None

        broadcast = wait_for(finished_broadcast, 30, "both speakers of thôn A to finish")
    finally:
        worker.stop()

    # The deterministic occurrence id, sent to the hamlet only.
    at_utc = at.astimezone(UTC)
    assert broadcast["id"] == f"s{schedule_id}-{at_utc:%Y%m%dT%H%M%SZ}"
    assert broadcast["zone_ids"] == ["thon-a"]
    assert broadcast["summary"] == {"finished": 2}
    by_device = {d["device_id"]: d for d in broadcast["deliveries"]}
    assert set(by_device) == {"loa-a1", "loa-a2"}
    for d in by_device.values():
        assert d["received_at"] <= d["started_at"] <= d["ended_at"]
    # The speaker of the other hamlet heard nothing: had it acknowledged anything, the ingest
    # would have added a delivery for it.
    assert "loa-b1" not in by_device
