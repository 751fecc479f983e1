"""Garbage through the real broker, both ways: random and mutated payloads published on every
topic the console's ingest reads (with the device's own account: the broker lets a device
write only its own topics) and on every topic the bridge reads (with the console's account).
The console worker and a real bridge count exactly the payloads they could not use, keep
running, and then a broadcast still goes down, plays, and its acknowledgement comes back."""

from __future__ import annotations

import io
import json
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from console.ingest import Incoming, decode_batch
from console.settings import Settings
from console.worker import Worker
from device_profiles import protocol as p
from firmware_bridge import build_bridge, load_bridge_config
from firmware_bridge.bridge import Bridge
from tests.conftest import wait_for
from tests.console.conftest import token_for
from tests.fuzz.api_setup import tone
from tests.fuzz.strategies import json_bytes, json_values, mutated, raw_bytes
from tests.fuzz.tally import Tally, fuzz_settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "protocol"
WAIT_S = 60.0
UPLINK = {
    p.Channel.AVAILABILITY: "availability_online", p.Channel.STATE: "state",
    p.Channel.TELEMETRY: "telemetry", p.Channel.EVENT: "event_restore", p.Channel.ACK: "ack_failed",
}  # fmt: skip
DOWNLINK = ["play_command", "stop_command", "config"]


class Publisher:
    """A plain MQTT client with one account's credentials; publish() waits for the broker."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"fuzz-{uuid.uuid4().hex[:8]}"
        )
        self.client.username_pw_set(username, password)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), f"the broker did not take {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)


def fixture(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return {**data, **changes}


@pytest.fixture
def site(
    client: FlaskClient, tmp_path: Path, live_server: str, worker: Worker
) -> Iterator[dict[str, Any]]:
    admin = token_for(client, "admin")
    suffix = uuid.uuid4().hex[:6]  # the broker is shared by the whole run: ids of this test's own
    commune, hamlet, device = f"xa-fe{suffix}", f"thon-fe{suffix}", f"loa-fe{suffix}"
    for zone in ({"id": commune, "name": "Xã", "kind": "commune"},
                 {"id": hamlet, "name": "Thôn", "kind": "hamlet", "parent_id": commune}):  # fmt: skip
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    # Any hour will do: no quiet hours.
    client.put(
        f"/api/v1/communes/{commune}/quiet-hours",
        json={"start": "00:00", "end": "00:00"},
        headers=admin,
    )
    resp = client.post("/api/v1/devices", json={"id": device, "name": "Loa", "profile": "speaker-node",
                                                "zone_id": hamlet}, headers=admin)  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    text = resp.get_json()["bridge_config"].replace('"/var/lib/tieng-loa', f'"{tmp_path / device}')
    path = tmp_path / f"{device}.toml"
    path.write_text(text, encoding="utf-8")
    bridge = build_bridge(load_bridge_config(path), simulate=True)
    bridge.start()
    try:
        yield {"device": device, "hamlet": hamlet, "commune": commune, "bridge": bridge,
               "password": tomllib.loads(text)["mqtt"]["password"]}  # fmt: skip
    finally:
        bridge.stop()


def uplink_drops(counters: Counter[str]) -> int:
    return counters["malformed"] + counters["device_mismatch"]


def test_garbage_both_ways_is_counted_and_good_messages_still_flow(
    tally: Tally, client: FlaskClient, settings: Settings, worker: Worker, site: dict[str, Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    device, bridge = site["device"], site["bridge"]
    assert isinstance(bridge, Bridge)
    viewer = token_for(client, "viewer")
    wait_for(lambda: client.get(f"/api/v1/devices/{device}", headers=viewer).get_json()["online"],
             WAIT_S, "the device online")  # fmt: skip
    broker = settings.broker
    as_device = Publisher(broker.host, broker.port, device, site["password"])
    as_console = Publisher(broker.host, broker.port, broker.console_username,
                           broker.console_password.get_secret_value())  # fmt: skip
    now = int(datetime.now(UTC).timestamp() * 1000)
    uplink_valid = {ch: fixture(name, device_id=device, ts=now) for ch, name in UPLINK.items()}
    downlink_valid = {name: fixture(name, ts=now) for name in DOWNLINK}
    # A config the bridge accepts keeps it in its zones (else it would stop listening there).
    downlink_valid["config"].update(zones=[site["hamlet"], site["commune"]], presets=[])
    expected = Counter[str]()
    ingest_before = uplink_drops(worker.ingest.counters)
    bridge_before = Counter(bridge.counters)
    payload = st.one_of(raw_bytes, json_bytes(json_values()))

    @fuzz_settings(1.0)
    @given(
        up=st.tuples(*(st.one_of(payload, json_bytes(mutated(v, big=False))) for v in uplink_valid.values())),
        down=st.tuples(*(st.one_of(payload, json_bytes(mutated(v, big=False))) for v in downlink_valid.values())),
    )  # fmt: skip
    def run(up: tuple[bytes, ...], down: tuple[bytes, ...]) -> None:
        for channel, data in zip(UPLINK, up, strict=True):
            topic = p.device_topic(device, channel)
            with tally.case(f"broker end to end: console reads {channel}") as case:
                bad = sum(decode_batch([Incoming(topic, data, datetime.now(UTC))]).counts.values())
                as_device.publish(topic, data)
                expected["uplink_bad"] += bad
                case.dropped() if bad else case.accepted()
        topics = [p.zone_command_topic(site["hamlet"]), p.device_topic(device, p.Channel.CMD),
                  p.device_topic(device, p.Channel.CONFIG)]  # fmt: skip
        for topic, data in zip(topics, down, strict=True):
            config = topic.endswith("/config")
            with tally.case(
                f"broker end to end: bridge reads {'config' if config else 'commands'}"
            ) as case:
                try:
                    p.decode(p.DeviceConfig, data) if config else p.decode_command(data)
                except p.ProtocolError:
                    expected["malformed_config" if config else "malformed_command"] += 1
                    case.dropped()
                else:
                    case.accepted()
                as_console.publish(topic, data)

    try:
        run()
    finally:
        as_device.close()
        as_console.close()
    # Every bad payload was counted, on both sides, once.
    wait_for(lambda: uplink_drops(worker.ingest.counters) - ingest_before >= expected["uplink_bad"],
             WAIT_S, f"the console to count {expected['uplink_bad']} bad uplink payloads")  # fmt: skip
    assert uplink_drops(worker.ingest.counters) - ingest_before == expected["uplink_bad"]
    for name in ("malformed_command", "malformed_config"):
        wait_for(lambda name=name: bridge.counters.get(name, 0) - bridge_before[name] >= expected[name],
                 WAIT_S, f"the bridge to count {expected[name]} {name}")  # fmt: skip
        assert bridge.counters.get(name, 0) - bridge_before[name] == expected[name]
    assert bridge.counters.get("internal_error", 0) == 0
    assert worker.ingest.counters["store_failed"] == 0

    # Good messages still flow both ways: a broadcast plays and its acknowledgement is stored.
    operator = token_for(client, "operator")
    with tone(tmp_path / "good.wav", 0.6).open("rb") as fh:
        up = client.post(
            "/api/v1/audio", data={"file": (io.BytesIO(fh.read()), "tot.wav")}, headers=operator
        )
    assert up.status_code in (200, 201), up.get_json()
    sent = client.post("/api/v1/broadcasts", json={"audio_sha256": up.get_json()["sha256"],
                                                   "zone_ids": [site["hamlet"]]}, headers=operator)  # fmt: skip
    assert sent.status_code == 201, sent.get_json()
    broadcast = sent.get_json()["id"]

    def finished() -> bool:
        body = client.get(f"/api/v1/broadcasts/{broadcast}", headers=viewer).get_json()
        return any(
            d["device_id"] == device and d["status"] == "finished" for d in body["deliveries"]
        )

    wait_for(finished, WAIT_S, "the good broadcast played and acknowledged after the garbage")
    counters = client.get(f"/api/v1/devices/{device}", headers=viewer).get_json()["state"][
        "counters"
    ]
    assert counters.get("malformed_command", 0) >= expected["malformed_command"]
