"""The bridge's MQTT link (the only module that imports paho): per-device credentials,
Last Will 'offline', 'online' on every (re)connect, subscriptions restored on reconnect."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol
from firmware_bridge.config import MqttSettings
from firmware_bridge.ports import Clock

log = logging.getLogger(__name__)


class MqttLink:
    """Callbacks only translate and hand over; nothing here decides."""

    def __init__(
        self,
        device_id: str,
        settings: MqttSettings,
        zones: Sequence[str],
        clock: Clock,
        *,
        on_command: Callable[[str, bytes], None],
        on_config: Callable[[bytes], None],
        on_connected: Callable[[], None],
    ) -> None:
        self.device_id = device_id
        self._settings = settings
        self._clock = clock
        self._zones = list(zones)
        self._on_command = on_command
        self._on_config = on_config
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self.connected = threading.Event()
        # A persistent session: the broker keeps QoS 1 commands for a short link drop.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False)
        client.username_pw_set(settings.username, settings.password.get_secret_value())
        client.reconnect_delay_set(min_delay=1, max_delay=60)  # exponential backoff
        client.will_set(
            protocol.device_topic(device_id, protocol.Channel.AVAILABILITY),
            protocol.encode(self._availability(protocol.AvailabilityState.OFFLINE)),
            qos=1,
            retain=True,
        )
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self._client = client

    def _availability(self, state: protocol.AvailabilityState) -> protocol.Availability:
        return protocol.Availability(
            id=protocol.new_message_id(),
            ts=self._clock.now_ms(),
            device_id=self.device_id,
            state=state,
        )

    def _topics(self) -> list[tuple[str, int]]:
        own = [
            (protocol.device_topic(self.device_id, protocol.Channel.CMD), 1),
            (protocol.device_topic(self.device_id, protocol.Channel.CONFIG), 1),
        ]
        zones = [(protocol.zone_command_topic(z), protocol.ZONE_COMMAND_QOS) for z in self._zones]
        return own + zones

    # --- paho callbacks (paho's thread) -------------------------------------------------

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("%s: broker refused the connection: %s", self.device_id, rc)
            return
        self.publish(
            protocol.Channel.AVAILABILITY, self._availability(protocol.AvailabilityState.ONLINE)
        )
        with self._lock:
            topics = self._topics()
        client.subscribe(topics)
        self.connected.set()
        log.info("%s: connected; listening to %d topics", self.device_id, len(topics))
        self._on_connected()

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        if rc.is_failure:
            log.warning("%s: link lost (%s); reconnecting", self.device_id, rc)

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == protocol.device_topic(self.device_id, protocol.Channel.CONFIG):
                self._on_config(bytes(msg.payload))
            else:
                self._on_command(msg.topic, bytes(msg.payload))
        except Exception:  # never let an error escape into paho's thread
            log.exception("%s: could not hand over a message on %s", self.device_id, msg.topic)

    # --- used by the core ------------------------------------------------------------------

    def publish(self, channel: protocol.Channel, message: protocol.Message) -> None:
        self._client.publish(
            protocol.device_topic(self.device_id, channel),
            protocol.encode(message),
            qos=protocol.QOS[channel],
            retain=channel in protocol.RETAINED_CHANNELS,
        )

    def set_zones(self, zone_ids: Sequence[str]) -> None:
        with self._lock:
            old = {protocol.zone_command_topic(z) for z in self._zones}
            self._zones = list(zone_ids)
            new = {protocol.zone_command_topic(z) for z in self._zones}
        if self.connected.is_set():
            if old - new:
                self._client.unsubscribe(sorted(old - new))
            if new - old:
                self._client.subscribe([(t, protocol.ZONE_COMMAND_QOS) for t in sorted(new - old)])

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        s = self._settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Say 'offline' (retained) and disconnect cleanly."""
        if self.connected.is_set():
            info = self._client.publish(
                protocol.device_topic(self.device_id, protocol.Channel.AVAILABILITY),
                protocol.encode(self._availability(protocol.AvailabilityState.OFFLINE)),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                log.warning("%s: could not say offline before leaving", self.device_id)
        self._client.disconnect()
        self._client.loop_stop()
