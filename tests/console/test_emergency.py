"""The emergency API: sounding one (preset, recording or typed text; zones; repeat, also until
stopped), following a broadcast live, fire-point alarms and their acknowledgement, and each
commune's automatic fire announcement; every bad input answered clearly.

Real broker (authenticated): what an emergency publishes is read back from the zone topics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.db import Database
from console.models import (
    AudioFile,
    Broadcast,
    CommuneSettings,
    Delivery,
    DeliveryStatus,
    Device,
    DeviceEvent,
    Preset,
    Zone,
    ZoneKind,
)
from device_profiles import protocol
from tests.conftest import Broker, wait_for
from tests.console.conftest import audit_of, token_for
from tests.firmware_bridge.mqtt_tools import Listener

COMMUNE = "xa-khan"
HAMLET_A, HAMLET_B = "thon-khan-a", "thon-khan-b"
SPEAKERS = {"loa-khan-a1": HAMLET_A, "loa-khan-a2": HAMLET_A, "loa-khan-b1": HAMLET_B}
FIRE_POINT = "fp-khan-a"
FIRE_SHA = "f" * 64
SPEECH_SHA = "5" * 64
GONG_SHA = "9" * 64


def add_audio(session: Any, sha256: str, name: str) -> None:
    session.add(
        AudioFile(
            sha256=sha256,
            name=name,
            original_name=f"{name}.wav",
            duration_ms=12_000,
            size_bytes=96_000,
            mime="audio/mpeg",
        )
    )


@pytest.fixture
def commune(db: Database) -> None:
    """A commune with two hamlets, three speakers and a fire point; the fire preset and gong."""
    with db.session() as session:
        session.add(Zone(id=COMMUNE, name="Xã Khẩn", kind=ZoneKind.COMMUNE))
        session.flush()
        session.add(Zone(id=HAMLET_A, name="Thôn A", kind=ZoneKind.HAMLET, parent_id=COMMUNE))
        session.add(Zone(id=HAMLET_B, name="Thôn B", kind=ZoneKind.HAMLET, parent_id=COMMUNE))
        session.flush()
        for device_id, zone_id in SPEAKERS.items():
            session.add(Device(id=device_id, name=f"Loa {device_id[-2:].upper()}",
                               profile="speaker-node", zone_id=zone_id, secret_sha256="0" * 64))  # fmt: skip
        session.add(Device(id=FIRE_POINT, name="Điểm chữa cháy A", profile="fire-point-node",
                           zone_id=HAMLET_A, secret_sha256="0" * 64))  # fmt: skip
        add_audio(session, FIRE_SHA, "Báo cháy")
        add_audio(session, SPEECH_SHA, "Ghi âm trưởng thôn")
        add_audio(session, GONG_SHA, "Chuông")
        session.flush()
        session.add(Preset(key="fire", title="Báo cháy", text="Thông báo khẩn cấp…",
                           audio_sha256=FIRE_SHA))  # fmt: skip
        session.add(Preset(key="gong", title="Chuông báo hiệu", audio_sha256=GONG_SHA))


@pytest.fixture
def zone_commands(mqtt_broker: Broker) -> Iterator[Listener]:
    listener = Listener(mqtt_broker, f"{protocol.TOPIC_ROOT}/zone/#")
    yield listener
    listener.close()


def commands_on(
    listener: Listener, zone_id: str
) -> list[protocol.PlayCommand | protocol.StopCommand]:
    topic = protocol.zone_command_topic(zone_id)
    with listener._lock:
        payloads = [p for t, p in listener.messages if t == topic]
    return [protocol.decode_command(p) for p in payloads]



# --- sounding an emergency --------------------------------------------------------------------


def test_a_preset_goes_to_the_whole_commune_at_emergency_priority_and_full_volume(
    client: FlaskClient, db: Database, commune: None, zone_commands: Listener
) -> None:
    resp = client.post(
        "/api/v1/emergency", json={"preset_key": "fire"}, headers=token_for(client, "operator")
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["zone_ids"] == [COMMUNE] and body["priority"] == "emergency"
    assert body["title"] == "Báo cháy" and body["until_stopped"] is False
    # Every speaker has a delivery; the fire point without a speaker is not expected to play.
    assert sorted(d["device_id"] for d in body["deliveries"]) == sorted(SPEAKERS)
    assert body["summary"] == {"pending": 3}
    sent = wait_for(lambda: commands_on(zone_commands, COMMUNE), 10, "the command")
    command = sent[0]
    assert isinstance(command, protocol.PlayCommand) and command.id == body["id"]
    assert command.priority is protocol.Priority.EMERGENCY
    assert command.volume_pct == 100 and command.repeat == 1
    assert command.audio.sha256 == FIRE_SHA and command.title == "Báo cháy"
    assert commands_on(zone_commands, HAMLET_A) == []  # one publish: the broker fans out
    (entry,) = audit_of(db, "emergency")
    assert entry.username == "operator" and entry.target == body["id"]
    assert entry.detail["preset_key"] == "fire" and entry.detail["zone_ids"] == [COMMUNE]


def test_a_recording_to_one_hamlet_until_stopped(
    client: FlaskClient, db: Database, commune: None, zone_commands: Listener
) -> None:
    resp = client.post(
        "/api/v1/emergency",
        json={
            "audio_sha256": SPEECH_SHA,
            "zone_ids": [HAMLET_A],
            "repeat": "until_stopped",
            "title": "Sơ tán thôn A",
        },
        headers=token_for(client, "operator"),
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["until_stopped"] is True and body["zone_ids"] == [HAMLET_A]
    assert sorted(d["device_id"] for d in body["deliveries"]) == ["loa-khan-a1", "loa-khan-a2"]
    command = wait_for(lambda: commands_on(zone_commands, HAMLET_A), 10, "the command")[0]
    assert isinstance(command, protocol.PlayCommand)
    assert command.repeat == protocol.REPEAT_UNTIL_STOPPED and command.title == "Sơ tán thôn A"
    with db.session() as session:
        stored = session.get(Broadcast, body["id"])
        assert stored is not None and stored.repeat == 0
    assert audit_of(db, "emergency")[0].detail["repeat"] == "until_stopped"


def test_several_times_with_a_hamlet_inside_a_chosen_commune_sent_once(
    client: FlaskClient, commune: None, zone_commands: Listener
) -> None:
    resp = client.post(
        "/api/v1/emergency",
        json={"preset_key": "fire", "zone_ids": [HAMLET_B, COMMUNE], "repeat": 5},
        headers=token_for(client, "operator"),
    )
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["zone_ids"] == [COMMUNE]
    command = wait_for(lambda: commands_on(zone_commands, COMMUNE), 10, "the command")[0]
    assert isinstance(command, protocol.PlayCommand) and command.repeat == 5


@pytest.mark.sqlite_only
def test_typed_text_is_spoken_in_vietnamese_and_sent(
    client: FlaskClient, db: Database, commune: None, zone_commands: Listener
) -> None:
    text = "Khẩn cấp: nước lũ đang lên, bà con thôn B di chuyển lên nhà văn hoá ngay."
    resp = client.post(
        "/api/v1/emergency",
        json={"text": text, "zone_ids": [HAMLET_B], "repeat": 2},
        headers=token_for(client, "operator"),
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    with db.session() as session:
        audio = session.get(AudioFile, body["audio_sha256"])
        assert audio is not None and audio.name == text and audio.duration_ms > 2000
    assert body["title"] == text
    command = wait_for(lambda: commands_on(zone_commands, HAMLET_B), 10, "the command")[0]
    assert isinstance(command, protocol.PlayCommand) and command.audio.sha256 == audio.sha256
    assert audit_of(db, "emergency")[0].detail["text"] == text


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "preset_key"),  # no message
        ({"preset_key": "fire", "text": "Cháy"}, 422, "preset_key"),  # two messages
        ({"preset_key": "volcano"}, 422, "preset_key"),
        ({"preset_key": "gong"}, 422, "preset_key"),  # the gong is no announcement
        ({"preset_key": "<script>"}, 422, "preset_key"),
        ({"audio_sha256": "a" * 64}, 422, "audio_sha256"),  # never uploaded
        ({"audio_sha256": "not-a-hash"}, 422, "audio_sha256"),
        ({"text": ""}, 422, "text"),
        ({"text": "   "}, 422, "text"),
        ({"text": "x" * 1001}, 422, "text"),
        ({"text": 42}, 422, "text"),
        ({"preset_key": "fire", "zone_ids": ["thon-nowhere"]}, 422, "zone_ids"),
        ({"preset_key": "fire", "zone_ids": "xa-khan"}, 422, "zone_ids"),
        ({"preset_key": "fire", "zone_ids": ["BAD ZONE"]}, 422, "zone_ids.0"),
        ({"preset_key": "fire", "zone_ids": [f"z{i}" for i in range(201)]}, 422, "zone_ids"),
        ({"preset_key": "fire", "repeat": 0}, 422, "repeat"),
        ({"preset_key": "fire", "repeat": 101}, 422, "repeat"),
        ({"preset_key": "fire", "repeat": "3"}, 422, "repeat"),
        ({"preset_key": "fire", "repeat": True}, 422, "repeat"),
        ({"preset_key": "fire", "repeat": "forever"}, 422, "repeat"),
        ({"preset_key": "fire", "priority": "live"}, 422, "priority"),  # unknown field
        ({"preset_key": "fire", "title": "x" * 201}, 422, "title"),
    ],
)
def test_bad_emergency_bodies_get_a_clear_error_and_send_nothing(
    client: FlaskClient,
    db: Database,
    commune: None,
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    resp = client.post("/api/v1/emergency", json=body, headers=token_for(client, "operator"))
    assert resp.status_code == status, resp.get_json()
    error = resp.get_json()["error"]
    assert error["field"].startswith(field), error
    assert error["message"]
    with db.session() as session:
        assert session.scalars(select(Broadcast)).first() is None


def test_only_operators_sound_an_emergency_and_the_body_must_be_json(
    client: FlaskClient, commune: None
) -> None:
    body = {"preset_key": "fire"}
    assert client.post("/api/v1/emergency", json=body).status_code == 401
    viewer = token_for(client, "viewer")
    assert client.post("/api/v1/emergency", json=body, headers=viewer).status_code == 403
    resp = client.post(
        "/api/v1/emergency", data="preset_key=fire", headers=token_for(client, "operator")
    )
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_json"


def test_an_emergency_without_any_zone_is_refused(client: FlaskClient, db: Database) -> None:
    resp = client.post(
        "/api/v1/emergency", json={"preset_key": "fire"}, headers=token_for(client, "operator")
    )
    assert resp.status_code == 422
    assert resp.get_json()["error"]["field"] == "zone_ids"


# --- following a broadcast live ---------------------------------------------------------------


def read_events(resp: Any, count: int) -> list[tuple[str, Any]]:
    """Parse server-sent events from a streamed test response until `count` were read."""
    events: list[tuple[str, Any]] = []
    buffer = ""
    for chunk in resp.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            lines = block.split("\n")
            name = next((ln[7:] for ln in lines if ln.startswith("event: ")), None)
            data = "\n".join(ln[6:] for ln in lines if ln.startswith("data: "))
            if name:
                events.append((name, json.loads(data)))
        if len(events) >= count:
            break
    resp.close()
    return events


def sound(client: FlaskClient, **body: Any) -> dict[str, Any]:
    resp = client.post(
        "/api/v1/emergency", json={"preset_key": "fire", **body},
        headers=token_for(client, "operator"),
    )  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def set_delivery(
    db: Database, broadcast_id: str, device_id: str, status: str, reason: str | None = None
) -> None:
    with db.session() as session:
        delivery = session.scalar(
            select(Delivery).where(
                Delivery.broadcast_id == broadcast_id, Delivery.device_id == device_id
            )
        )
        assert delivery is not None
        delivery.status, delivery.reason = DeliveryStatus(status), reason
        delivery.ended_at = datetime.now(UTC)


def test_the_live_stream_counts_each_state_lists_failures_and_ends_when_all_are_final(
    client: FlaskClient, db: Database, commune: None
) -> None:
    broadcast = sound(client)
    set_delivery(db, broadcast["id"], "loa-khan-a1", "finished")
    set_delivery(db, broadcast["id"], "loa-khan-a2", "failed", "<b>sha256 mismatch</b>")
    set_delivery(db, broadcast["id"], "loa-khan-b1", "stopped")
    viewer = token_for(client, "viewer")
    resp = client.get(f"/api/v1/broadcasts/{broadcast['id']}/live", headers=viewer, buffered=False)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = read_events(resp, 5)  # it ends after the first: nothing can change any more
    assert [name for name, _ in events] == ["progress"]
    data = events[0][1]
    assert data["done"] is True and data["total"] == 3
    assert data["counts"] == {"silent": 0, "received": 0, "playing": 0, "finished": 1,
                              "failed": 1, "preempted": 0, "stopped": 1}  # fmt: skip
    assert data["failures"] == [
        {"device_id": "loa-khan-a2", "name": "Loa A2", "zone_name": "Thôn A",
         "reason": "<b>sha256 mismatch</b>", "at": data["failures"][0]["at"]},
    ]  # fmt: skip


def test_the_live_stream_shows_who_has_not_answered_while_it_plays(
    client: FlaskClient, db: Database, commune: None
) -> None:
    broadcast = sound(client, repeat="until_stopped")
    set_delivery(db, broadcast["id"], "loa-khan-a1", "started")
    resp = client.get(
        f"/api/v1/broadcasts/{broadcast['id']}/live", headers=token_for(client, "viewer"),
        buffered=False,
    )  # fmt: skip
    (name, data), *_ = read_events(resp, 1)
    assert name == "progress" and data["done"] is False and data["until_stopped"] is True
    assert data["counts"]["playing"] == 1 and data["counts"]["silent"] == 2
    assert {d["device_id"] for d in data["silent_devices"]} == {"loa-khan-a2", "loa-khan-b1"}


def test_the_live_stream_of_an_unknown_broadcast_is_a_json_404(
    client: FlaskClient, commune: None
) -> None:
    viewer = token_for(client, "viewer")
    for broadcast_id in ("b-nope", "x" * 500, "<script>"):
        resp = client.get(f"/api/v1/broadcasts/{broadcast_id}/live", headers=viewer)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/broadcasts/b-nope/live").status_code == 401


# --- fire-point alarms ----------------------------------------------------------------------


def add_event(
    db: Database, message_id: str, signal_class: str = "alarm", signal: str = "call_point",
    active: bool = True, ago_s: int = 30, device_id: str = FIRE_POINT,
) -> int:  # fmt: skip
    now = datetime.now(UTC)
    with db.session() as session:
        event = DeviceEvent(
            message_id=message_id, device_id=device_id, occurred_at=now - timedelta(seconds=ago_s),
            received_at=now, signal_class=signal_class, signal=signal, active=active,
        )  # fmt: skip
        session.add(event)
        session.flush()
        return event.id


def test_alarms_are_listed_until_acknowledged_once_and_audited(
    client: FlaskClient, db: Database, commune: None
) -> None:
    alarm = add_event(db, "m1", ago_s=60)
    add_event(db, "m2", active=False, ago_s=20)  # the call point reset: still to acknowledge
    trouble = add_event(db, "m3", "trouble", "mains_lost")
    viewer, operator = token_for(client, "viewer"), token_for(client, "operator")
    listed = client.get("/api/v1/alarms", headers=viewer).get_json()
    assert [a["event_id"] for a in listed] == [alarm]
    (item,) = listed
    assert item["device_name"] == "Điểm chữa cháy A" and item["zone_name"] == "Thôn A"
    assert item["signal"] == "call_point" and item["what"] == "Có người nhấn nút báo cháy"
    assert item["since"] < item["restored_at"]

    assert client.post(f"/api/v1/alarms/{alarm}/ack", headers=viewer).status_code == 403
    resp = client.post(f"/api/v1/alarms/{alarm}/ack", headers=operator)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["acknowledged_by"] == "operator" and not resp.get_json()["already"]
    again = client.post(f"/api/v1/alarms/{alarm}/ack", headers=token_for(client, "admin"))
    assert again.status_code == 200
    assert again.get_json()["already"] and again.get_json()["acknowledged_by"] == "operator"
    assert client.get("/api/v1/alarms", headers=viewer).get_json() == []
    (entry,) = audit_of(db, "alarm_acknowledged")
    assert entry.username == "operator" and entry.target == str(alarm)
    assert entry.detail["device_id"] == FIRE_POINT

    for bad in (str(trouble), "999999", "abc", "-1", "1.5", "9" * 40):
        resp = client.post(f"/api/v1/alarms/{bad}/ack", headers=operator)
        assert resp.status_code == 404, bad
        assert resp.get_json()["error"]["code"] == "not_found"


def test_the_alarm_stream_sends_the_list_at_once(
    client: FlaskClient, db: Database, commune: None
) -> None:
    alarm = add_event(db, "m1")
    resp = client.get("/api/v1/alarms/live", headers=token_for(client, "viewer"), buffered=False)
    assert resp.status_code == 200
    (name, data), *_ = read_events(resp, 1)
    assert name == "alarms" and [a["event_id"] for a in data] == [alarm]
    assert client.get("/api/v1/alarms/live").status_code == 401


def test_the_banner_strings_say_who_may_acknowledge(client: FlaskClient) -> None:
    assert client.get("/alarms/strings").status_code in (302, 401)  # not logged in
    for role, can in (("viewer", False), ("operator", True)):
        resp = client.get("/alarms/strings", headers=token_for(client, role))
        assert resp.status_code == 200
        assert resp.get_json()["can_ack"] is can and resp.get_json()["ack"] == "Đã biết"


# --- the automatic fire announcement ----------------------------------------------------------


def test_the_fire_rule_of_a_commune_is_set_by_an_admin_and_audited(
    client: FlaskClient, db: Database, commune: None
) -> None:
    admin, operator = token_for(client, "admin"), token_for(client, "operator")
    url = f"/api/v1/communes/{COMMUNE}/fire-rule"
    assert client.get(url, headers=token_for(client, "viewer")).get_json()["preset_key"] is None
    assert client.put(url, json={"preset_key": "fire"}, headers=operator).status_code == 403
    resp = client.put(url, json={"preset_key": "fire"}, headers=admin)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["preset_key"] == "fire" and resp.get_json()["preset_title"] == "Báo cháy"
    with db.session() as session:
        row = session.get(CommuneSettings, COMMUNE)
        assert row is not None and row.fire_announce_preset == "fire"
        assert (row.quiet_start, row.quiet_end) == (time(22), time(5))  # the defaults, kept
    quiet = client.get(f"/api/v1/communes/{COMMUNE}/quiet-hours", headers=admin).get_json()
    assert (quiet["start"], quiet["end"]) == ("22:00", "05:00")
    resp = client.put(url, json={"preset_key": None}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["preset_key"] is None
    assert [e.detail["preset_key"] for e in audit_of(db, "fire_rule_set")] == ["fire", None]


@pytest.mark.parametrize(
    ("zone_id", "body", "status"),
    [
        (COMMUNE, {}, 422),  # preset_key is required (null switches it off)
        (COMMUNE, {"preset_key": "volcano"}, 422),
        (COMMUNE, {"preset_key": "gong"}, 422),
        (COMMUNE, {"preset_key": "storm"}, 422),  # a preset not generated yet
        (COMMUNE, {"preset_key": 5}, 422),
        (COMMUNE, {"preset_key": "x" * 5000}, 422),
        (COMMUNE, {"preset_key": "fire", "extra": 1}, 422),
        (HAMLET_A, {"preset_key": "fire"}, 404),  # a hamlet is not a commune
        ("xa-nowhere", {"preset_key": "fire"}, 404),
    ],
)
def test_bad_fire_rules_are_refused(
    client: FlaskClient, db: Database, commune: None, zone_id: str, body: Any, status: int
) -> None:
    resp = client.put(
        f"/api/v1/communes/{zone_id}/fire-rule", json=body, headers=token_for(client, "admin")
    )
    assert resp.status_code == status, resp.get_json()
    assert resp.get_json()["error"]["message"]
    with db.session() as session:
        assert session.get(CommuneSettings, COMMUNE) is None


# --- the page ---------------------------------------------------------------------------------


def page_get(app: Flask, role: str, url: str) -> Any:
    """A page fetched with a token by a client of its own (pages are meant for sessions: one
    client reusing a token for several pages trips the session protection)."""
    client = app.test_client()
    return client.get(url, headers=token_for(client, role))


def test_the_page_lists_zones_with_their_speakers_and_escapes_names(
    app: Flask, db: Database, commune: None
) -> None:
    with db.session() as session:
        session.add(Zone(id="thon-khan-x", name="<script>alert(1)</script>",
                         kind=ZoneKind.HAMLET, parent_id=COMMUNE))  # fmt: skip
    html = page_get(app, "operator", "/emergency").get_data(as_text=True)
    assert 'value="xa-khan"' in html and 'data-speakers="3"' in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)" in html
    assert "Báo cháy" in html and "Chuông báo hiệu" not in html  # the gong is no message
    assert "fr-xa-khan" not in html  # the automatic fire announcement: administrators only
    assert "fr-xa-khan" in page_get(app, "admin", "/emergency").get_data(as_text=True)
    assert page_get(app, "viewer", "/emergency").status_code == 403
    assert page_get(app, "operator", "/emergency/presets/fire.mp3").status_code == 404  # no file
    assert page_get(app, "operator", "/emergency/presets/nope.mp3").status_code == 404
    assert page_get(app, "viewer", "/emergency/presets/fire.mp3").status_code == 403
