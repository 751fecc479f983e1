"""The project's Mosquitto: no anonymous access; a device reaches only its own topics."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol as p
from tests.conftest import Broker


class Peer:
    """A plain MQTT client that records what it receives."""

    def __init__(self, broker: Broker, username: str | None, password: str | None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.refused: object = None
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username or "")
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._ready.wait(5)

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object
    ) -> None:
        if rc.is_failure:
            self.refused = rc
        self._ready.set()

    def subscribe(self, *topics: str) -> None:
        result, _mid = self.client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_anonymous_and_wrong_passwords_are_refused(mqtt_broker: Broker) -> None:
    anon = Peer(mqtt_broker, None, None)
    wrong = Peer(mqtt_broker, mqtt_broker.console_username, "wrong-password")
    try:
        assert anon.refused is not None
        assert wrong.refused is not None
    finally:
        anon.close()
        wrong.close()


def test_a_device_reaches_only_its_own_topics_and_zones(mqtt_broker: Broker) -> None:
    pw1 = mqtt_broker.provision_device("acl-dev-1", ["acl-hamlet-1", "acl-commune"])
    pw2 = mqtt_broker.provision_device("acl-dev-2", ["acl-hamlet-2", "acl-commune"])
    console = Peer(mqtt_broker, mqtt_broker.console_username, mqtt_broker.console_password)
    dev1 = Peer(mqtt_broker, "acl-dev-1", pw1)
    dev2 = Peer(mqtt_broker, "acl-dev-2", pw2)
    try:
        assert console.refused is None and dev1.refused is None and dev2.refused is None
        console.subscribe("loa/v1/dev/+/+")
        # dev1 asks for everything it may and may not read; the broker grants only its own.
        dev1.subscribe(
            p.device_topic("acl-dev-1", p.Channel.CMD),
            p.device_topic("acl-dev-2", p.Channel.CMD),
            p.zone_command_topic("acl-hamlet-1"),
            p.zone_command_topic("acl-hamlet-2"),
            p.zone_command_topic("acl-commune"),
            "loa/v1/#",
        )
        time.sleep(0.5)
        for topic in [
            p.device_topic("acl-dev-1", p.Channel.CMD),
            p.device_topic("acl-dev-2", p.Channel.CMD),
            p.zone_command_topic("acl-hamlet-1"),
            p.zone_command_topic("acl-hamlet-2"),
            p.zone_command_topic("acl-commune"),
        ]:
            console.client.publish(topic, b"{}", qos=1).wait_for_publish(5)
        # Devices publish their own ack, and try another device's and a command topic.
        dev1.client.publish(
            p.device_topic("acl-dev-1", p.Channel.ACK), b"own", qos=1
        ).wait_for_publish(5)
        dev1.client.publish(
            p.device_topic("acl-dev-2", p.Channel.ACK), b"spoof", qos=1
        ).wait_for_publish(5)
        dev1.client.publish(
            p.zone_command_topic("acl-commune"), b"fake-cmd", qos=1
        ).wait_for_publish(5)
        time.sleep(1.0)
        dev1_topics = sorted({t for t, _ in dev1.received})
        assert dev1_topics == sorted(
            [
                p.device_topic("acl-dev-1", p.Channel.CMD),
                p.zone_command_topic("acl-commune"),
                p.zone_command_topic("acl-hamlet-1"),
            ]
        )
        console_acks = [(t, body) for t, body in console.received if t.endswith("/ack")]
        assert console_acks == [(p.device_topic("acl-dev-1", p.Channel.ACK), b"own")]
        assert (p.zone_command_topic("acl-commune"), b"fake-cmd") not in dev2.received
    finally:
        for peer in (console, dev1, dev2):
            peer.close()


def test_a_revoked_device_can_no_longer_connect(mqtt_broker: Broker) -> None:
    pw = mqtt_broker.provision_device("acl-dev-3", ["acl-hamlet-1"])
    with mqtt_broker.admin() as admin:
        admin.revoke_device("acl-dev-3")
    peer = Peer(mqtt_broker, "acl-dev-3", pw)
    try:
        assert peer.refused is not None
    finally:
        peer.close()
