"""The bridge's MQTT link (the only module that imports paho): per-device credentials,
Last Will 'offline', 'online' on every (re)connect, subscriptions restored on reconnect,
and events and acks delivered through the persistent outbox (docs/bridge-link.md)."""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol
from firmware_bridge.config import MqttSettings
from firmware_bridge.outbox import DEFAULT_MAX_ROWS, Outbox, OutboxError
from firmware_bridge.ports import Clock

log = logging.getLogger(__name__)

# Channels whose messages must not be lost: stored in the outbox before publish() returns.
OUTBOX_CHANNELS = frozenset({protocol.Channel.EVENT, protocol.Channel.ACK})
SEND_WINDOW = 20  # outbox messages sent but not yet confirmed, at most
RECONNECT_MIN_S = 1  # paho doubles the wait after each failed attempt: 1, 2, 4 ... 60 s
RECONNECT_MAX_S = 60
_IDLE_WAKE_S = 0.5  # the sender also looks round this often without being woken


def set_tcp_nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    """Send each MQTT packet at once: with Nagle's algorithm on, a small ack or event waited
    for the broker's delayed ACK (in a trial, 'received' fell from 58 to 18 ms without it)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _never_drop(message: protocol.Message) -> bool:
    """Alarm events are never dropped from a full outbox."""
    return (
        isinstance(message, protocol.Event) and message.signal_class is protocol.SignalClass.ALARM
    )


class MqttLink:
    """Callbacks only translate and hand over; nothing here decides.

    Threads: paho's network thread runs the callbacks; the sender thread moves outbox rows
    to paho (at most SEND_WINDOW unconfirmed) and deletes the rows the broker confirmed;
    the core calls publish() and set_zones().
    """

    def __init__(
        self,
        device_id: str,
        settings: MqttSettings,
        zones: Sequence[str],
        clock: Clock,
        *,
        outbox_path: Path,
        on_command: Callable[[str, bytes], None],
        on_config: Callable[[bytes], None],
        on_connected: Callable[[], None],
        outbox_max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        self.device_id = device_id
        self._settings = settings
        self._clock = clock
        self._zones = list(zones)
        self._on_command = on_command
        self._on_config = on_config
        self._on_connected = on_connected
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        # Set once the broker confirmed this connection's 'online', which was sent after the
        # subscriptions: the device is then listening and shown online. Cleared on a drop.
        self.connected = threading.Event()
        self._session_up = False  # paho's connection is up (set before `connected`)
        self._generation = 0  # +1 on every connect and every disconnect
        self._online_mid: int | None = None  # this connection's 'online' message
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()  # confirmed mids
        self._wake = threading.Event()
        self._quit = threading.Event()
        self._sender: threading.Thread | None = None
        self._outbox = Outbox(outbox_path, max_rows=outbox_max_rows, clock=clock)
        # A persistent session: the broker keeps QoS 1 commands for a short link drop.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False)
        client.username_pw_set(settings.username, settings.password.get_secret_value())
        if settings.tls:  # the chain and the host name are checked; no fallback to plain
            client.tls_set_context(settings.ssl_context())
        client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        # Room for the send window plus direct (state, availability) messages, so paho never
        # holds outbox messages back in its own queue.
        client.max_inflight_messages_set(SEND_WINDOW + 80)
        client.will_set(
            protocol.device_topic(device_id, protocol.Channel.AVAILABILITY),
            protocol.encode(self._availability(protocol.AvailabilityState.OFFLINE)),
            qos=1,
            retain=True,
        )
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_publish = self._published
        client.on_socket_open = set_tcp_nodelay
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

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    # --- paho callbacks (paho's thread) -------------------------------------------------

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.error("%s: broker refused the connection: %s", self.device_id, rc)
            return
        with self._lock:  # set_zones() cannot slip in between reading and subscribing
            topics = self._topics()
            client.subscribe(topics)
            self._session_up = True
        # 'online' after the subscriptions: the broker handles a connection's packets in
        # order, so once it confirms 'online' the device is listening.
        online = client.publish(
            protocol.device_topic(self.device_id, protocol.Channel.AVAILABILITY),
            protocol.encode(self._availability(protocol.AvailabilityState.ONLINE)),
            qos=1,
            retain=True,
        )
        with self._lock:
            self._generation += 1
            self._online_mid = online.mid
            self._counts["link_connects"] += 1
        self._wake.set()
        log.info("%s: connected; listening to %d topics", self.device_id, len(topics))

    def _disconnected(self, _c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        with self._lock:
            self._session_up = False
            self._generation += 1
            self._online_mid = None
            self.connected.clear()
        self._wake.set()
        if rc.is_failure:
            log.warning("%s: link lost (%s); reconnecting", self.device_id, rc)

    def _published(self, _c: mqtt.Client, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        self._acks.put(mid)  # a PUBACK: the sender deletes what was confirmed
        self._wake.set()

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if msg.topic == protocol.device_topic(self.device_id, protocol.Channel.CONFIG):
                self._on_config(bytes(msg.payload))
            else:
                self._on_command(msg.topic, bytes(msg.payload))
        except Exception:  # never let an error escape into paho's thread
            log.exception("%s: could not hand over a message on %s", self.device_id, msg.topic)

    # --- the sender thread -----------------------------------------------------------------

    def _send_loop(self) -> None:
        """Move outbox rows to paho in seq order while the link is up; delete confirmed ones.

        After a reconnect nothing new is sent, and neither `connected` nor the core says the
        link is up, until this connection's 'online' is confirmed: paho retransmits the
        messages that were in flight at the disconnect right after on_connect, so waiting
        for the PUBACK of 'online' (sent before them) keeps them ahead of everything newer.
        Rows stay on disk until confirmed; after a crash they are sent again (at least once).
        """
        in_flight: dict[int, int] = {}  # paho mid -> outbox seq, oldest first
        confirmed: list[int] = []  # seqs the broker has, to delete
        last_seq = 0  # the newest row handed to paho by this process
        ready_generation = 0
        while not self._quit.is_set():
            self._wake.wait(_IDLE_WAKE_S)
            self._wake.clear()
            try:
                acked = self._drain_acks()
                confirmed += [in_flight.pop(mid) for mid in acked if mid in in_flight]
                with self._lock:
                    generation, online_mid = self._generation, self._online_mid
                    up = generation != ready_generation and online_mid in acked
                    if up:
                        self.connected.set()
                if up:
                    ready_generation = generation
                    self._announce_link_up()
                if confirmed:  # kept for the next round if the disk says no
                    self._count("outbox_confirmed", self._outbox.delete(confirmed))
                    confirmed = []
                if not (self.connected.is_set() and ready_generation == generation):
                    continue
                for row in self._outbox.peek(last_seq, SEND_WINDOW - len(in_flight)):
                    info = self._client.publish(row.topic, row.payload, qos=row.qos)
                    if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:  # paho refused it; try again
                        break
                    in_flight[info.mid] = row.seq
                    last_seq = row.seq
            except Exception:  # the sender must outlive any one failure (disk, paho)
                log.exception("%s: outbox sender failed; retrying in 1 s", self.device_id)
                self._count("outbox_errors")
                self._quit.wait(1.0)

    def _drain_acks(self) -> set[int]:
        acked: set[int] = set()
        while True:
            try:
                acked.add(self._acks.get_nowait())
            except queue.Empty:
                return acked

    def _announce_link_up(self) -> None:
        try:
            self._on_connected()
        except Exception:  # the core's problem, not the sender's
            log.exception("%s: on_connected failed", self.device_id)

    # --- used by the core ------------------------------------------------------------------

    def publish(self, channel: protocol.Channel, message: protocol.Message) -> None:
        """Events and acks: durable in the outbox when this returns (never re-stamped: the
        payload is encoded now, with the message's own ts). State, availability, telemetry:
        sent now if the link is up, else skipped (state is republished on reconnect)."""
        topic = protocol.device_topic(self.device_id, channel)
        payload = protocol.encode(message)
        qos = protocol.QOS[channel]
        if channel in OUTBOX_CHANNELS:
            try:
                self._outbox.append(topic, payload, qos, never_drop=_never_drop(message))
            except OutboxError:
                log.exception("%s: outbox refused a message; sending it unstored", self.device_id)
                self._count("outbox_append_failed")
            else:
                self._wake.set()
                return
        if not self.connected.is_set():
            self._count("link_skipped_offline")
            return
        info = self._client.publish(
            topic, payload, qos=qos, retain=channel in protocol.RETAINED_CHANNELS
        )
        # Counted where the other end can count too (the load test compares them).
        sent = info.rc == mqtt.MQTT_ERR_SUCCESS
        self._count(f"link_sent_{channel.value}" if sent else "link_publish_failed")

    def set_zones(self, zone_ids: Sequence[str]) -> None:
        with self._lock:  # see _connected: one of the two subscribes the new zones
            old = {protocol.zone_command_topic(z) for z in self._zones}
            self._zones = list(zone_ids)
            new = {protocol.zone_command_topic(z) for z in self._zones}
            if self._session_up and old - new:
                self._client.unsubscribe(sorted(old - new))
            if self._session_up and new - old:
                self._client.subscribe([(t, protocol.ZONE_COMMAND_QOS) for t in sorted(new - old)])

    def tcp_socket(self) -> socket.socket | None:
        """The connection's TCP socket while connected (diagnostics and tests)."""
        sock = self._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def counters(self) -> dict[str, int]:
        """Diagnostics for telemetry: outbox_queued, outbox_dropped, outbox_confirmed, ..."""
        with self._lock:
            counts = dict(self._counts)
        return {**counts, **self._outbox.counters()}

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._sender = threading.Thread(
            target=self._send_loop, name=f"outbox-{self.device_id}", daemon=True
        )
        self._sender.start()
        s = self._settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what the outbox can within the timeout, say 'offline' (retained), disconnect
        and close the outbox; whatever is left stays on disk for the next start."""
        deadline = time.monotonic() + timeout_s
        while (
            self._sender is not None
            and self.connected.is_set()
            and self._outbox.queued > 0
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        self._quit.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout_s)
        if self.connected.is_set():
            info = self._client.publish(
                protocol.device_topic(self.device_id, protocol.Channel.AVAILABILITY),
                protocol.encode(self._availability(protocol.AvailabilityState.OFFLINE)),
                qos=1,
                retain=True,
            )
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.warning("%s: could not say offline before leaving", self.device_id)
        self._client.disconnect()
        self._client.loop_stop()
        # paho closes the socket pair that wakes its loop only in Client.__del__, which the
        # garbage collector may run after the sockets' own finalisers ("unclosed socket").
        self._client._reset_sockets(sockpair_only=True)
        with self._lock:
            self._session_up = False
            self.connected.clear()
        left = self._outbox.queued
        if left:
            log.warning("%s: %d outbox message(s) kept for the next start", self.device_id, left)
        self._outbox.close()
