"""The console's MQTT connection (web and worker): publish commands, receive uplink."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel

from device_profiles import protocol

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 2  # between attempts to reach the broker again, at most

# A handler gets the topic, the payload and `confirm`: called once the message is safe (with
# `ack_when_done`, the broker forgets a QoS 1 message only then; otherwise it does nothing).
Confirm = Callable[[], None]
MessageHandler = Callable[[str, bytes, Confirm], None]


def _nothing() -> None:
    return None


def set_tcp_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """Send each MQTT packet at once: Nagle's algorithm held small commands and acks back
    for tens of milliseconds, waiting for the peer's delayed ACK."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LinkError(RuntimeError):
    """The broker could not be reached or did not accept a message in time."""


class ConsoleLink:
    """One paho client; `on_message` handlers only enqueue (they run on paho's thread)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        client_name: str,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
        clean_start: bool = True,
        ack_when_done: bool = False,
    ) -> None:
        # A stable client id with a persistent session lets the broker keep QoS 1 uplink
        # messages for the worker while it restarts; web workers use a random suffix.
        self._client_id = (
            client_name if not clean_start else f"{client_name}-{uuid.uuid4().hex[:8]}"
        )
        self._clean_start = clean_start
        self._login = (username, password)
        self._host, self._port = host, port
        self._subscriptions = list(subscriptions)
        self._handler = on_message
        # Manual PUBACK: a QoS 1 message is confirmed to the broker when the handler calls
        # `confirm` (the ingest: once stored), so a process killed before that gets it again.
        self._ack_when_done = ack_when_done
        self._connection = 0  # +1 on every connect: a confirm is for its own connection only
        self.connected = threading.Event()
        self._client = self._new_client()
        self._used = False

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            clean_session=self._clean_start,
            reconnect_on_failure=True,
            manual_ack=self._ack_when_done,
        )
        client.username_pw_set(*self._login)
        # The console's own broker, one client per process: retry every couple of seconds.
        # (It backed off to 30 s: after a long broker outage, STOP and emergencies were
        # refused, and alarms waited in the broker, for up to 30 s after it was back.)
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_S)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = set_tcp_nodelay
        return client

    def start(self, timeout_s: float = 10.0) -> None:
        """Connect (again, after a stop: the console worker connects only while it leads)."""
        if self._used:
            self._client = self._new_client()
        self._used = True
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self.connected.wait(timeout_s):
            self.stop()
            raise LinkError(f"no connection to the broker at {self._host}:{self._port}")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes its loop's wake-up sockets only in Client.__del__ (see firmware_bridge/link)
        self._client._reset_sockets(sockpair_only=True)
        self.connected.clear()

    def tcp_socket(self) -> socket.socket | None:
        """The connection's TCP socket while connected (diagnostics and tests)."""
        sock = self._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker refused the console: %s", rc)
            return
        self._connection += 1
        if self._subscriptions:
            client.subscribe(self._subscriptions)
        self.connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if rc.is_failure:
            log.warning("lost the broker (%s); reconnecting", rc)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        confirm = self._confirmer(client, msg.mid, msg.qos) if self._ack_when_done else _nothing
        if self._handler is None:
            confirm()
            return
        try:
            self._handler(msg.topic, bytes(msg.payload), confirm)
        except Exception:  # never let an error escape into paho's thread
            log.exception("handler failed for %s (%d bytes)", msg.topic, len(msg.payload))
            confirm()

    def _confirmer(self, client: mqtt.Client, mid: int, qos: int) -> Confirm:
        """PUBACK for one message, on the connection it came by (after a reconnect the broker
        sends it again, and that copy is confirmed instead)."""
        connection = self._connection

        def confirm() -> None:
            if qos and connection == self._connection and client is self._client:
                client.ack(mid, qos)

        return confirm

    def publish(
        self,
        topic: str,
        message: BaseModel,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 5.0,
    ) -> None:
        """Publish and wait until the broker has it (QoS 1: PUBACK received)."""
        self._send(topic, protocol.encode(message), qos, retain, timeout_s)

    def clear_retained(self, topic: str, *, qos: int = 1, timeout_s: float = 5.0) -> None:
        """Remove a retained message (an empty retained payload, as MQTT defines it)."""
        self._send(topic, b"", qos, True, timeout_s)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool, timeout_s: float) -> None:
        """Hand paho a message only while connected, waiting up to `timeout_s` for a reconnect.

        paho keeps a QoS 1 message published while the link is down and sends it once the link
        is back, though the caller was told it failed: an emergency given up on (its record
        removed, the operator pressing again) would still have played, late and twice.
        """
        if not self.connected.wait(timeout_s):
            raise LinkError(f"no connection to the broker: {topic} not sent")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        self._confirm(info, topic, timeout_s)

    @staticmethod
    def _confirm(info: mqtt.MQTTMessageInfo, topic: str, timeout_s: float) -> None:
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise LinkError(f"publish to {topic} failed: {exc}") from None
        if not info.is_published():
            raise LinkError(f"broker did not confirm {topic} within {timeout_s} s")

    def publish_command(self, zone_ids: Sequence[str], command: BaseModel) -> None:
        for zone_id in zone_ids:
            self.publish(
                protocol.zone_command_topic(zone_id), command, qos=protocol.ZONE_COMMAND_QOS
            )
