"""A console with something in it, for the API and page fuzz tests: a commune and a hamlet,
a registered device, one audio file, a schedule, a spare user and a fire alarm."""

from __future__ import annotations

import base64
import json
import subprocess
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from console.db import Database
from console.models import DeviceEvent
from tests.console.conftest import token_for

COMMUNE = "xa-fz"
HAMLET = "thon-fz"
DEVICE = "loa-fz-api"


def tone(path: Path, seconds: float = 1.0, freq_hz: int = 440) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         f"sine=frequency={freq_hz}:duration={seconds}", "-ac", "1", "-y", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


@dataclass
class Console:
    client: FlaskClient
    admin: dict[str, str]
    operator: dict[str, str]
    viewer: dict[str, str]
    sha256: str
    schedule_id: int
    spare_user_id: int
    alarm_id: int
    broadcast_id: str
    device_auth: dict[str, str]  # HTTP Basic of the device, as it downloads audio

    def send(self, method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> TestResponse:  # fmt: skip
        return self.client.open(
            url, method=method, data=body, content_type="application/json",
            headers=headers or self.admin,
        )  # fmt: skip


def expect(resp: TestResponse, *statuses: int) -> Any:
    assert resp.status_code in statuses, (resp.status_code, resp.get_data(as_text=True)[:500])
    return resp.get_json(silent=True)


def set_up_console(client: FlaskClient, db: Database, tmp: Path) -> Console:
    admin, operator = token_for(client, "admin"), token_for(client, "operator")
    viewer = token_for(client, "viewer")
    post = lambda url, body: client.post(url, json=body, headers=admin)  # noqa: E731
    expect(post("/api/v1/zones", {"id": COMMUNE, "name": "Xã Phú Thọ", "kind": "commune"}), 201)
    expect(post("/api/v1/zones", {"id": HAMLET, "name": "Thôn Đông", "kind": "hamlet",
                                  "parent_id": COMMUNE}), 201)  # fmt: skip
    device = expect(post("/api/v1/devices", {"id": DEVICE, "name": "Loa đầu làng",
                                             "profile": "speaker-node", "zone_id": HAMLET}), 201)  # fmt: skip
    secret = tomllib.loads(device["bridge_config"])["mqtt"]["password"]
    device_auth = {
        "Authorization": "Basic " + base64.b64encode(f"{DEVICE}:{secret}".encode()).decode()
    }
    with tone(tmp / "tone.wav").open("rb") as fh:
        up = client.post("/api/v1/audio", data={"file": (fh, "Thông báo.wav"), "name": "Thông báo"},
                         headers=operator)  # fmt: skip
    sha = expect(up, 201)["sha256"]
    schedule = expect(post("/api/v1/schedules", valid_schedule(sha)), 201)
    broadcast = expect(post("/api/v1/broadcasts", {"audio_sha256": sha, "zone_ids": [HAMLET],
                                                   "title": "Họp thôn"}), 201)  # fmt: skip
    user = expect(post("/api/v1/users", {"username": "fz-spare", "role": "viewer",
                                         "password": "fuzz-pass-12345"}), 201)  # fmt: skip
    with db.session() as s:
        alarm = DeviceEvent(
            message_id="fz-alarm-1", device_id=DEVICE, occurred_at=datetime.now(UTC),
            received_at=datetime.now(UTC), signal_class="alarm", signal="call_point", active=True,
        )  # fmt: skip
        s.add(alarm)
        s.flush()
        alarm_id = alarm.id
    return Console(client, admin, operator, viewer, sha, schedule["id"], user["id"], alarm_id,
                   broadcast["id"], device_auth)  # fmt: skip


def valid_schedule(sha: str) -> dict[str, Any]:
    return {
        "name": "Bản tin buổi tối", "audio_sha256": sha, "zone_ids": [HAMLET],
        "rule": {"kind": "recurring", "frequency": "weekly", "weekdays": [0, 3],
                 "times": ["19:00"], "start_date": "2027-01-04"},
        "volume_pct": 80, "gong": True, "enabled": True,
    }  # fmt: skip


def body_routes(c: Console) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every JSON-body route (endpoint -> method, URL, a valid body)."""
    sha = c.sha256
    rule = {
        "kind": "recurring",
        "frequency": "daily",
        "times": ["06:30"],
        "start_date": "2027-02-01",
    }
    return {
        "api.create_token": ("POST", "/api/v1/auth/token",
                             {"username": "fz-spare", "password": "fuzz-pass-12345", "label": "fz"}),
        "api.create_zone": ("POST", "/api/v1/zones",
                            {"id": "cum-fz", "name": "Cụm 1", "kind": "cluster", "parent_id": HAMLET}),
        "api.create_device": ("POST", "/api/v1/devices",
                              {"id": "loa-fz-new", "name": "Loa chợ", "profile": "speaker-node",
                               "zone_id": HAMLET, "latitude": 21.03, "longitude": 105.85}),
        "api.update_device": ("PATCH", f"/api/v1/devices/{DEVICE}",
                              {"name": "Loa đầu làng", "zone_id": HAMLET, "latitude": 21.0}),
        "api.reissue_device_credentials": ("POST", f"/api/v1/devices/{DEVICE}/credentials", {}),
        "api.create_broadcast": ("POST", "/api/v1/broadcasts",
                                 {"audio_sha256": sha, "zone_ids": [HAMLET], "priority": "live",
                                  "volume_pct": 60, "gong": False, "repeat": 1,
                                  "title": "Thông báo họp"}),
        "api.stop": ("POST", "/api/v1/stop", {"zone_ids": [HAMLET], "target_id": "b-none"}),
        "api.replace_preset": ("PUT", "/api/v1/presets/fire", {"audio_sha256": sha}),
        "api.speak_text": ("POST", "/api/v1/audio/tts",
                           {"text": "Xin chào bà con", "voice": "north", "name": "Chào"}),
        "api.set_quiet_hours": ("PUT", f"/api/v1/communes/{COMMUNE}/quiet-hours",
                                {"start": "22:00", "end": "05:00"}),
        "api.add_holidays": ("POST", f"/api/v1/communes/{COMMUNE}/holidays",
                             {"date": "2027-01-01", "name": "Tết Dương lịch"}),
        "api.sound_emergency": ("POST", "/api/v1/emergency",
                                {"zone_ids": [HAMLET], "audio_sha256": sha, "repeat": 1,
                                 "title": "Khẩn cấp"}),
        "api.acknowledge_alarm": ("POST", f"/api/v1/alarms/{c.alarm_id}/ack", {}),
        "api.set_fire_rule": ("PUT", f"/api/v1/communes/{COMMUNE}/fire-rule", {"preset_key": "fire"}),
        "api.users_create": ("POST", "/api/v1/users",
                             {"username": "fz-new", "role": "viewer", "password": "fuzz-pass-67890"}),
        "api.users_change": ("PATCH", f"/api/v1/users/{c.spare_user_id}",
                             {"role": "viewer", "active": True}),
        "api.users_reset_password": ("POST", f"/api/v1/users/{c.spare_user_id}/password",
                                     {"password": "fuzz-pass-12345"}),
        "api.create_schedule": ("POST", "/api/v1/schedules", {**valid_schedule(sha), "name": "Mới"}),
        "api.edit_schedule": ("PUT", f"/api/v1/schedules/{c.schedule_id}", valid_schedule(sha)),
        "api.preview_rule": ("POST", "/api/v1/schedules/preview",
                             {"rule": rule, "count": 5, "zone_ids": [HAMLET]}),
    }  # fmt: skip


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()
