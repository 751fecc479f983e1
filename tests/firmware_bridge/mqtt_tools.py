"""A console-side MQTT client for bridge tests: records what devices send, publishes anything."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol
from tests.conftest import Broker, wait_for

__all__ = ["Listener", "wait_for"]


class Listener:
    """Subscribed (QoS 1) with the console's account: to every device's uplink by default."""

    def __init__(self, broker: Broker, topic: str = f"{protocol.TOPIC_ROOT}/dev/#") -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.username_pw_set(broker.console_username, broker.console_password)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect(broker.host, broker.port)
        client.loop_start()
        self.client = client
        if not self._subscribed.wait(10):
            raise AssertionError("the listener could not subscribe")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def publish(self, topic: str, payload: bytes | protocol.Message, retain: bool = False) -> None:
        data = payload if isinstance(payload, bytes) else protocol.encode(payload)
        self.client.publish(topic, data, qos=1, retain=retain).wait_for_publish(5)

    def decoded(self, device_id: str, channel: protocol.Channel) -> list[Any]:
        topic = protocol.device_topic(device_id, channel)
        with self._lock:
            payloads = [p for t, p in self.messages if t == topic and p]
        return [protocol.decode_for_channel(channel, p) for p in payloads]

    def ack_statuses(self, device_id: str, command_id: str) -> list[str]:
        return [
            a.status.value
            for a in self.decoded(device_id, protocol.Channel.ACK)
            if a.command_id == command_id
        ]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)  # as MqttLink.stop() does
