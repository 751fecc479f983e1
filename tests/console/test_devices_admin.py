"""Administering devices through the API against the real broker: a zone change moves the
device's permissions, re-issued credentials retire the old secret, decommissioning revokes
the login and clears the retained config; roles and bad input are refused clearly."""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from console.app import create_app
from console.broker import free_port
from console.db import Database
from console.device_config import ConfigPusher
from console.models import AuditEntry
from console.settings import Settings
from device_profiles import protocol as p
from tests.conftest import Broker, wait_for
from tests.console.conftest import token_for
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
    assert client.get("/api/v1/devices/loa-adm-gone", headers=viewer).status_code == 404
    pusher.sync()
    assert topic not in link.retained  # cleared by the worker's next push
    actions = audit_actions(db, "loa-adm-gone")
    assert actions[-1] == ("device_decommissioned",
                           {"name": "Loa chợ", "zone_id": "thon-adm-b", "profile": "speaker-node"})  # fmt: skip
    assert client.delete("/api/v1/devices/loa-adm-gone", headers=admin).status_code == 404


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
