"""Administering devices through the API against the real broker: a zone change moves the
device's permissions, re-issued credentials retire the old secret, decommissioning revokes
the login and clears the retained config but keeps the device's history (and the id, until
it is revived); a broker that cannot be reached changes nothing; roles and bad input are
refused clearly."""

from __future__ import annotations

import re
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from console import services
from console.app import create_app
from console.backup import create_backup, restore_backup
from console.broker import free_port
from console.db import Database, alembic_config
from console.device_config import ConfigPusher
from console.models import (
    AudioFile,
    AuditEntry,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Device,
    DeviceEvent,
)
from console.settings import Settings, load_settings
from device_profiles import protocol as p
from tests.conftest import Broker, wait_for
from tests.console.conftest import make_settings, token_for
from tests.console.test_backup import write_config
from tests.console.test_broker import Peer
from tests.console.test_presets import FakeLink

ZONES = [
    {"id": "xa-adm", "name": "Xã Quản Trị", "kind": "commune"},
    {"id": "thon-adm-a", "name": "Thôn A", "kind": "hamlet", "parent_id": "xa-adm"},
    {"id": "thon-adm-b", "name": "Thôn B", "kind": "hamlet", "parent_id": "xa-adm"},
    {"id": "cum-adm-b1", "name": "Cụm B1", "kind": "cluster", "parent_id": "thon-adm-b"},
]


def secret_of(bridge_config: str) -> str:
    return str(tomllib.loads(bridge_config)["mqtt"]["password"])


@pytest.fixture
def admin(client: FlaskClient) -> dict[str, str]:
    headers = token_for(client, "admin")
    for zone in ZONES:
        assert client.post("/api/v1/zones", json=zone, headers=headers).status_code == 201
    return headers


def register(client: FlaskClient, admin: dict[str, str], device_id: str, zone: str) -> str:
    body = {"id": device_id, "name": "Loa chợ", "profile": "speaker-node", "zone_id": zone}
    resp = client.post("/api/v1/devices", json=body, headers=admin)
    assert resp.status_code == 201, resp.get_json()
    return secret_of(resp.get_json()["bridge_config"])


def audit_actions(db: Database, target: str) -> list[tuple[str, dict[str, Any]]]:
    with db.session() as s:
        rows = s.scalars(
            select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.id)
        )
        return [(e.action, e.detail) for e in rows]


@pytest.mark.sqlite_only  # the broker's side; the SQL is the same
def test_a_zone_change_moves_the_devices_permissions_and_keeps_its_secret(
    client: FlaskClient, admin: dict[str, str], db: Database, mqtt_broker: Broker
) -> None:
    secret = register(client, admin, "loa-adm-move", "thon-adm-a")
    resp = client.patch("/api/v1/devices/loa-adm-move",
                        json={"zone_id": "cum-adm-b1", "name": "Loa cổng chợ", "latitude": 21.03},
                        headers=admin)  # fmt: skip
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert (body["zone_id"], body["name"], body["latitude"]) == (
        "cum-adm-b1",
        "Loa cổng chợ",
        21.03,
    )
    [(action, detail)] = audit_actions(db, "loa-adm-move")[1:]
    assert action == "device_updated"
    assert detail["changes"]["zone_id"] == ["thon-adm-a", "cum-adm-b1"]
    # Its retained config now names the new zones.
    link = FakeLink()
    ConfigPusher(db, link, "http://console.example", lambda: datetime.now(UTC)).sync()
    config = p.decode(
        p.DeviceConfig, link.retained[p.device_topic("loa-adm-move", p.Channel.CONFIG)]
    )
    assert config.zones == ["cum-adm-b1", "thon-adm-b", "xa-adm"]
    # The same file still logs in; the broker passes it the new zones' commands only.
    device = Peer(mqtt_broker, "loa-adm-move", secret)
    console = Peer(mqtt_broker, mqtt_broker.console_username, mqtt_broker.console_password)
    try:
        assert device.refused is None
        device.subscribe(*(p.zone_command_topic(z["id"]) for z in ZONES))

        def subscribed() -> bool:  # the broker has granted what it grants once one arrives
            console.client.publish(p.zone_command_topic("xa-adm"), b"ready", qos=1)
            time.sleep(0.1)
            return any(body == b"ready" for _, body in device.received)

        wait_for(subscribed, 10, "the device's subscriptions")
        for zone in ZONES:
            console.client.publish(p.zone_command_topic(zone["id"]), zone["id"].encode(), qos=1)
        console.client.publish(p.zone_command_topic("xa-adm"), b"marker", qos=1)
        wait_for(
            lambda: (p.zone_command_topic("xa-adm"), b"marker") in device.received, 5, "marker"
        )
        got = {body.decode() for _, body in device.received} - {"ready", "marker"}
        assert got == {"xa-adm", "thon-adm-b", "cum-adm-b1"}  # not thon-adm-a any more
    finally:
        device.close()
        console.close()


@pytest.mark.sqlite_only  # the broker's side; the SQL is the same
def test_reissued_credentials_retire_the_old_secret(
    client: FlaskClient, admin: dict[str, str], db: Database, mqtt_broker: Broker
) -> None:
    old = register(client, admin, "loa-adm-key", "thon-adm-a")
    resp = client.post("/api/v1/devices/loa-adm-key/credentials", headers=admin)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["zones"] == ["thon-adm-a", "xa-adm"]
    new = secret_of(body["bridge_config"])
    assert new != old
    refused, accepted = Peer(mqtt_broker, "loa-adm-key", old), Peer(mqtt_broker, "loa-adm-key", new)
    try:
        assert refused.refused is not None and accepted.refused is None
    finally:
        refused.close()
        accepted.close()
    assert [a for a, _ in audit_actions(db, "loa-adm-key")] == [
        "device_registered", "device_credentials_reissued"]  # fmt: skip


def test_decommissioning_revokes_the_login_and_clears_the_retained_config(
    client: FlaskClient, admin: dict[str, str], db: Database, mqtt_broker: Broker
) -> None:
    secret = register(client, admin, "loa-adm-gone", "thon-adm-b")
    link = FakeLink()
    pusher = ConfigPusher(db, link, "http://console.example", lambda: datetime.now(UTC))
    pusher.sync()
    topic = p.device_topic("loa-adm-gone", p.Channel.CONFIG)
    assert topic in link.retained
    connected = Peer(mqtt_broker, "loa-adm-gone", secret)
    try:
        assert connected.refused is None
        assert client.delete("/api/v1/devices/loa-adm-gone", headers=admin).status_code == 204
        # The broker drops the open connection and refuses a new one with the old secret.
        wait_for(lambda: not connected.client.is_connected(), 5, "the device disconnected")
    finally:
        connected.close()
    again = Peer(mqtt_broker, "loa-adm-gone", secret)
    try:
        assert again.refused is not None
    finally:
        again.close()
    viewer = token_for(client, "viewer")
    gone = client.get("/api/v1/devices/loa-adm-gone", headers=viewer).get_json()
    assert gone["decommissioned_at"] is not None and gone["online"] is False  # kept, for history
    pusher.sync()
    assert topic not in link.retained  # cleared by the worker's next push
    actions = audit_actions(db, "loa-adm-gone")
    assert actions[-1] == ("device_decommissioned",
                           {"name": "Loa chợ", "zone_id": "thon-adm-b", "profile": "speaker-node"})  # fmt: skip
    again_resp = client.delete("/api/v1/devices/loa-adm-gone", headers=admin)
    assert again_resp.status_code == 404
    assert "decommissioned" in again_resp.get_json()["error"]["message"]


@pytest.mark.sqlite_only  # roles, not SQL
def test_only_an_admin_may_change_devices(client: FlaskClient, admin: dict[str, str]) -> None:
    register(client, admin, "loa-adm-role", "thon-adm-a")
    calls = [
        ("patch", "/api/v1/devices/loa-adm-role", {"name": "x"}),
        ("delete", "/api/v1/devices/loa-adm-role", None),
        ("post", "/api/v1/devices/loa-adm-role/credentials", None),
    ]
    for role in ("viewer", "operator"):
        headers = token_for(client, role)
        for method, url, body in calls:
            resp = getattr(client, method)(url, json=body, headers=headers)
            assert resp.status_code == 403, (role, method, url)
            assert resp.get_json()["error"]["code"] == "forbidden"
        assert client.get("/api/v1/zones/tree", headers=headers).status_code == 200
    for method, url, body in calls:
        assert getattr(client, method)(url, json=body).status_code == 401
    got = client.get("/api/v1/devices/loa-adm-role", headers=token_for(client, "viewer"))
    assert got.get_json()["name"] == "Loa chợ"  # nothing changed


def test_bad_input_gets_a_clear_error_and_changes_nothing(
    client: FlaskClient, admin: dict[str, str], db: Database
) -> None:
    register(client, admin, "loa-adm-bad", "thon-adm-a")
    url = "/api/v1/devices/loa-adm-bad"
    cases: list[tuple[Any, int, str | None]] = [
        ({"zone_id": "khong-co"}, 422, "zone_id"),
        ({"zone_id": "Thôn A"}, 422, "zone_id"),
        ({"zone_id": None}, 422, "zone_id"),
        ({"name": "x" * 201}, 422, "name"),
        ({"name": "x" * 100_000}, 422, "name"),
        ({"name": "   "}, 422, "name"),
        ({"name": None}, 422, "name"),
        ({"name": 12}, 422, "name"),
        ({"latitude": 200}, 422, "latitude"),
        ({"longitude": "east"}, 422, "longitude"),
        ({"profile": "fire-point-node"}, 422, "profile"),  # a device keeps its hardware
        ({}, 422, None),
        ([1, 2], 400, None),
        ("not json", 400, None),
    ]
    for body, status, field in cases:
        resp = client.patch(url, json=body, headers=admin)
        assert resp.status_code == status, body
        if field:
            assert resp.get_json()["error"]["field"] == field, body
    for method in ("patch", "delete", "post"):
        path = "/api/v1/devices/khong-co" + ("/credentials" if method == "post" else "")
        resp = getattr(client, method)(path, json={"name": "x"}, headers=admin)
        assert resp.status_code == 404 and "khong-co" in resp.get_json()["error"]["message"]
    for bad_id in ("Loa 1", "LOA-1", "loa_1", "-loa", "x" * 64, "<b>loa</b>"):
        body = {"id": bad_id, "name": "x", "profile": "speaker-node", "zone_id": "thon-adm-a"}
        resp = client.post("/api/v1/devices", json=body, headers=admin)
        assert resp.status_code == 422 and resp.get_json()["error"]["field"] == "id", bad_id
    for body in (
        {"id": "loa-adm-x", "name": "x", "profile": "speaker-node", "zone_id": "khong-co"},
        {"id": "loa-adm-x", "name": "x", "profile": "loa-tu-che", "zone_id": "thon-adm-a"},
        {"id": "loa-adm-x", "name": "x" * 5000, "profile": "speaker-node", "zone_id": "thon-adm-a"},
    ):
        assert client.post("/api/v1/devices", json=body, headers=admin).status_code == 422
    # HTML in a name is stored and answered as text (pages show it as text).
    resp = client.patch(url, json={"name": "<img src=x onerror=alert(1)>"}, headers=admin)
    assert resp.status_code == 200 and resp.get_json()["name"] == "<img src=x onerror=alert(1)>"
    device = client.get(url, headers=admin).get_json()
    assert device["zone_id"] == "thon-adm-a" and device["latitude"] is None


@pytest.mark.sqlite_only  # the broker's side; the SQL is the same
def test_a_broker_that_does_not_answer_changes_nothing(
    settings: Settings, db: Database, admin: dict[str, str], client: FlaskClient
) -> None:
    register(client, admin, "loa-adm-down", "thon-adm-a")
    down = settings.model_copy(
        update={"broker": settings.broker.model_copy(update={"port": free_port()})}
    )
    app: Flask = create_app(down, db)
    other = app.test_client()
    headers = token_for(other, "admin")
    for method, path, body in [
        ("delete", "/api/v1/devices/loa-adm-down", None),
        ("post", "/api/v1/devices/loa-adm-down/credentials", None),
        ("patch", "/api/v1/devices/loa-adm-down", {"zone_id": "thon-adm-b"}),
    ]:
        resp = getattr(other, method)(path, json=body, headers=headers)
        assert resp.status_code == 503, (method, resp.get_json())
        assert resp.get_json()["error"]["code"] == "broker_unavailable"
    device = client.get("/api/v1/devices/loa-adm-down", headers=admin).get_json()
    assert device["zone_id"] == "thon-adm-a"


@pytest.mark.sqlite_only  # the broker's side; the SQL is the same
def test_an_id_whose_broker_account_outlived_its_row_registers_cleanly(
    client: FlaskClient, admin: dict[str, str], mqtt_broker: Broker
) -> None:
    """E.g. a database restored from a backup: the old account must not block the broker."""
    with mqtt_broker.admin() as broker_admin:  # the suite's broker outlives each database
        broker_admin.revoke_device("loa-adm-stale")
    stale = mqtt_broker.provision_device("loa-adm-stale", ["thon-adm-a"])
    secret = register(client, admin, "loa-adm-stale", "thon-adm-b")
    old, new = Peer(mqtt_broker, "loa-adm-stale", stale), Peer(mqtt_broker, "loa-adm-stale", secret)
    try:
        assert old.refused is not None and new.refused is None
    finally:
        old.close()
        new.close()


# --- decommissioning keeps the history; the broker down changes nothing --------------------

HISTORY_SHA = "d" * 64


def seed_history(db: Database, broadcast_id: str, device_ids: list[str], zone: str) -> None:
    """A broadcast every device played to the end, and an unacknowledged call-point alarm
    of the first device, as the ingest stores them."""
    now = datetime.now(UTC)
    with db.session() as s:
        if s.get(AudioFile, HISTORY_SHA) is None:
            s.add(AudioFile(sha256=HISTORY_SHA, name="Thông báo họp", original_name="hop.mp3",
                            duration_ms=3000, size_bytes=10, mime="audio/mpeg"))  # fmt: skip
            s.flush()
        s.add(Broadcast(id=broadcast_id, audio_sha256=HISTORY_SHA, priority="live",
                        zone_ids=[zone], status=BroadcastStatus.SENT,
                        fired_at=now - timedelta(hours=1), created_at=now - timedelta(hours=1),
                        expires_at=now - timedelta(minutes=58)))  # fmt: skip
        s.flush()
        for device_id in device_ids:
            s.add(Delivery(broadcast_id=broadcast_id, device_id=device_id,
                           status=DeliveryStatus.FINISHED, started_at=now - timedelta(hours=1),
                           ended_at=now - timedelta(minutes=59), updated_at=now))  # fmt: skip
        s.add(DeviceEvent(message_id=f"ev-{broadcast_id}", device_id=device_ids[0],
                          occurred_at=now, received_at=now, signal_class="alarm",
                          signal="call_point", active=True))  # fmt: skip


def listed_ids(client: FlaskClient, headers: dict[str, str], **query: Any) -> list[str]:
    resp = client.get("/api/v1/devices", query_string=query, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return [d["id"] for d in (body["items"] if isinstance(body, dict) else body)]


def zone_counts(client: FlaskClient, headers: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            counts[node["id"]] = node["devices_total"]
            walk(node["children"])

    walk(client.get("/api/v1/zones/tree", headers=headers).get_json())
    return counts


def test_decommissioning_keeps_the_history_and_hides_the_device_from_everything_live(
    client: FlaskClient, admin: dict[str, str], db: Database
) -> None:
    gone_secret = register(client, admin, "loa-adm-hist", "thon-adm-a")
    register(client, admin, "loa-adm-keep", "thon-adm-a")
    seed_history(db, "b-adm-history", ["loa-adm-hist", "loa-adm-keep"], "thon-adm-a")
    viewer, operator = token_for(client, "viewer"), token_for(client, "operator")
    media = f"/media/{HISTORY_SHA}.mp3"
    assert client.get(media, auth=("loa-adm-hist", gone_secret)).status_code == 404  # no file
    assert zone_counts(client, viewer)["thon-adm-a"] == 2

    assert client.delete("/api/v1/devices/loa-adm-hist", headers=admin).status_code == 204

    # Nowhere live: lists (plain, paged, searched, by problem), counters, the zone tree.
    assert listed_ids(client, viewer) == ["loa-adm-keep"]
    assert listed_ids(client, viewer, q="hist", limit=50) == []
    assert listed_ids(client, viewer, problem="offline", limit=50) == ["loa-adm-keep"]
    paged = client.get("/api/v1/devices?limit=50&zone=xa-adm", headers=viewer).get_json()
    assert paged["total"] == 1 and paged["summary"]["total"] == 1
    assert zone_counts(client, viewer) == {
        "xa-adm": 1, "thon-adm-a": 1, "thon-adm-b": 0, "cum-adm-b1": 0}  # fmt: skip
    # (A client of its own: a page's session cookie would stand in for the token after it.)
    page = client.application.test_client().get("/emergency", headers=operator).get_data(
        as_text=True
    )
    assert re.search(r'value="thon-adm-a"[^>]*data-speakers="1"', page)
    # A new broadcast no longer expects it to answer.
    sent = client.post("/api/v1/broadcasts", headers=operator,
                       json={"audio_sha256": HISTORY_SHA, "zone_ids": ["xa-adm"]})  # fmt: skip
    assert sent.status_code == 201, sent.get_json()
    assert [d["device_id"] for d in sent.get_json()["deliveries"]] == ["loa-adm-keep"]
    # Its secret is forgotten: no audio download; no change through the API either.
    assert client.get(media, auth=("loa-adm-hist", gone_secret)).status_code == 401
    for method, path, body in [
        ("patch", "/api/v1/devices/loa-adm-hist", {"name": "x"}),
        ("post", "/api/v1/devices/loa-adm-hist/credentials", None),
    ]:
        resp = getattr(client, method)(path, json=body, headers=admin)
        assert resp.status_code == 404 and "decommissioned" in resp.get_json()["error"]["message"]

    # The history still names it: the broadcast, its delivery report, the fire alarm.
    deliveries = client.get("/api/v1/broadcasts/b-adm-history", headers=viewer).get_json()
    assert {d["device_id"] for d in deliveries["deliveries"]} == {"loa-adm-hist", "loa-adm-keep"}
    report = client.get("/api/v1/reports/broadcasts/b-adm-history", headers=viewer).get_json()
    assert ("loa-adm-hist", "Loa chợ") in {(d["device_id"], d["device_name"]) for d in report["devices"]}
    assert report["finished"] == 2 and report["success_rate"] == 1.0
    alarms = client.get("/api/v1/alarms", headers=viewer).get_json()
    assert [(a["device_id"], a["signal"]) for a in alarms] == [("loa-adm-hist", "call_point")]
    device = client.get("/api/v1/devices/loa-adm-hist", headers=viewer).get_json()
    assert device["name"] == "Loa chợ" and device["decommissioned_at"]

    # The database itself refuses to delete a device the history names.
    with pytest.raises(IntegrityError), db.session() as s:
        gone = s.get(Device, "loa-adm-hist")
        assert gone is not None
        s.delete(gone)
        s.flush()


def test_a_decommissioned_id_comes_back_only_when_asked_with_its_history(
    client: FlaskClient, admin: dict[str, str], db: Database, mqtt_broker: Broker
) -> None:
    old = register(client, admin, "loa-adm-back", "thon-adm-a")
    seed_history(db, "b-adm-back", ["loa-adm-back"], "thon-adm-a")
    assert client.delete("/api/v1/devices/loa-adm-back", headers=admin).status_code == 204
    body = {"id": "loa-adm-back", "name": "Loa chợ mới", "profile": "combined-node",
            "zone_id": "cum-adm-b1"}  # fmt: skip

    refused = client.post("/api/v1/devices", json=body, headers=admin)
    assert refused.status_code == 409, refused.get_json()
    error = refused.get_json()["error"]
    assert (error["code"], error["field"]) == ("decommissioned", "id")
    assert error["decommissioned_at"] and "revive" in error["message"]
    assert listed_ids(client, admin) == []
    # A bad revive changes nothing either.
    bad = client.post("/api/v1/devices", json=body | {"revive": "yes please"}, headers=admin)
    assert bad.status_code == 422 and bad.get_json()["error"]["field"] == "revive"
    bad = client.post("/api/v1/devices", json=body | {"revive": True, "zone_id": "khong-co"},
                      headers=admin)  # fmt: skip
    assert bad.status_code == 422 and listed_ids(client, admin) == []

    revived = client.post("/api/v1/devices", json=body | {"revive": True}, headers=admin)
    assert revived.status_code == 201, revived.get_json()
    device = revived.get_json()
    assert (device["name"], device["profile"], device["zone_id"]) == (
        "Loa chợ mới", "combined-node", "cum-adm-b1")  # fmt: skip
    assert device["decommissioned_at"] is None and device["state"] is None
    assert device["zones"] == ["cum-adm-b1", "thon-adm-b", "xa-adm"]
    assert listed_ids(client, admin) == ["loa-adm-back"]
    new = secret_of(device["bridge_config"])
    refused_peer, accepted = Peer(mqtt_broker, "loa-adm-back", old), Peer(
        mqtt_broker, "loa-adm-back", new
    )
    try:
        assert refused_peer.refused is not None and accepted.refused is None
    finally:
        refused_peer.close()
        accepted.close()
    history = client.get("/api/v1/broadcasts/b-adm-back", headers=admin).get_json()
    assert [d["device_id"] for d in history["deliveries"]] == ["loa-adm-back"]
    actions = audit_actions(db, "loa-adm-back")
    assert [a for a, _ in actions] == [
        "device_registered", "device_decommissioned", "device_registered"]  # fmt: skip
    assert actions[-1][1]["revived"] is True and "revived" not in actions[0][1]
    # "revive" on an id never used is an ordinary registration.
    fresh = client.post("/api/v1/devices", headers=admin, json=body | {
        "id": "loa-adm-fresh", "revive": True})  # fmt: skip
    assert fresh.status_code == 201
    assert audit_actions(db, "loa-adm-fresh")[0][1].get("revived") is None


@pytest.mark.sqlite_only  # the point is the broker, not the SQL
def test_a_stopped_broker_registers_nothing_and_changes_nothing(
    settings: Settings, db: Database, own_broker: Broker, tmp_path: Path
) -> None:
    own = make_settings(tmp_path, own_broker, database_url=settings.database_url,
                        public_base_url=settings.public_base_url)  # fmt: skip
    app = create_app(own, db)
    client = app.test_client()
    try:
        headers = token_for(client, "admin")
        for zone in ZONES:
            assert client.post("/api/v1/zones", json=zone, headers=headers).status_code == 201
        secret = register(client, headers, "loa-adm-off", "thon-adm-a")
        register(client, headers, "loa-adm-old", "thon-adm-a")
        assert client.delete("/api/v1/devices/loa-adm-old", headers=headers).status_code == 204
        own_broker.process.stop()

        new = {"id": "loa-adm-new", "name": "Loa mới", "profile": "speaker-node",
               "zone_id": "thon-adm-a"}  # fmt: skip
        calls = [
            ("post", "/api/v1/devices", new),
            ("post", "/api/v1/devices", {**new, "id": "loa-adm-old", "revive": True}),
            ("post", "/api/v1/devices/loa-adm-off/credentials", None),
            ("delete", "/api/v1/devices/loa-adm-off", None),
            ("patch", "/api/v1/devices/loa-adm-off", {"zone_id": "thon-adm-b"}),
        ]
        for method, path, body in calls:
            resp = getattr(client, method)(path, json=body, headers=headers)
            assert resp.status_code == 503, (method, path, resp.get_json())
            error = resp.get_json()["error"]
            assert error["code"] == "broker_unavailable", error
        answer = client.post("/api/v1/devices", json=new, headers=headers).get_json()
        assert answer["error"]["message"] == (
            "the broker cannot be reached; nothing was registered")  # fmt: skip

        # Nothing half-stored: no row, no audit; the others exactly as they were.
        assert client.get("/api/v1/devices/loa-adm-new", headers=headers).status_code == 404
        assert listed_ids(client, headers) == ["loa-adm-off"]
        off = client.get("/api/v1/devices/loa-adm-off", headers=headers).get_json()
        assert (off["zone_id"], off["decommissioned_at"]) == ("thon-adm-a", None)
        old = client.get("/api/v1/devices/loa-adm-old", headers=headers).get_json()
        assert old["decommissioned_at"] is not None
        assert audit_actions(db, "loa-adm-new") == []
        assert [a for a, _ in audit_actions(db, "loa-adm-off")] == ["device_registered"]

        # The broker back: the untouched secret still logs in, and registering works.
        own_broker.process.start()
        peer = Peer(own_broker, "loa-adm-off", secret)
        try:
            assert peer.refused is None
        finally:
            peer.close()
        assert client.post("/api/v1/devices", json=new, headers=headers).status_code == 201
    finally:
        services.close(app)


def test_a_backup_carries_decommissioned_devices_with_their_history(
    client: FlaskClient, admin: dict[str, str], settings: Settings, db: Database, tmp_path: Path
) -> None:
    register(client, admin, "loa-adm-bk", "thon-adm-a")
    seed_history(db, "b-adm-bk", ["loa-adm-bk"], "thon-adm-a")
    assert client.delete("/api/v1/devices/loa-adm-bk", headers=admin).status_code == 204
    write_config(settings)
    archive = tmp_path / "backup.tar.gz"
    create_backup(settings, archive)
    restored_dir = tmp_path / "restored"
    restore_backup(archive, restored_dir, broker_port=free_port(),
                   database_url=f"sqlite:///{restored_dir.resolve() / 'console.sqlite3'}")  # fmt: skip
    restored = Database(load_settings(restored_dir).database_url)
    try:
        with restored.session() as s:
            device = s.get(Device, "loa-adm-bk")
            assert device is not None and device.decommissioned_at is not None
            assert device.name == "Loa chợ"
            deliveries = s.scalars(select(Delivery).where(Delivery.device_id == "loa-adm-bk"))
            assert [d.broadcast_id for d in deliveries] == ["b-adm-bk"]
    finally:
        restored.dispose()


def test_the_migration_keeps_existing_devices_and_their_history(db: Database) -> None:
    """0005 -> 0006 on a database in use: every row stays, every device is in service, and
    the history's foreign keys stop cascading (down again: they cascade as before)."""
    config = alembic_config(db.url)
    db.dispose()
    command.downgrade(config, "0005")
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO zones (id, name, kind) VALUES ('xa-mg', 'Xã', 'commune')"))
        conn.execute(
            text(
                "INSERT INTO devices (id, name, profile, zone_id, secret_sha256, created_at,"
                " online) VALUES ('loa-mg', 'Loa', 'speaker-node', 'xa-mg', 'x', :now, false)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO audio_files (sha256, name, original_name, duration_ms, size_bytes,"
                " mime, created_at) VALUES (:sha, 'a', 'a', 1, 1, 'audio/mpeg', :now)"
            ),
            {"sha": HISTORY_SHA, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO broadcasts (id, audio_sha256, priority, zone_ids, status, created_at)"
                " VALUES ('b-mg', :sha, 'live', '[\"xa-mg\"]', 'sent', :now)"
            ),
            {"sha": HISTORY_SHA, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO deliveries (broadcast_id, device_id, status, updated_at)"
                " VALUES ('b-mg', 'loa-mg', 'finished', :now)"
            ),
            {"now": now},
        )
    db.dispose()
    command.upgrade(config, "head")
    with db.session() as s:
        device = s.get(Device, "loa-mg")
        assert device is not None and device.decommissioned_at is None
        assert s.scalar(select(Delivery.status).where(Delivery.device_id == "loa-mg")) == "finished"
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(text("DELETE FROM devices WHERE id = 'loa-mg'"))
    db.dispose()
    command.downgrade(config, "0005")
    with db.engine.begin() as conn:  # cascades again, as 0005 did
        conn.execute(text("DELETE FROM devices WHERE id = 'loa-mg'"))
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one() == 0
    db.dispose()
    command.upgrade(config, "head")
