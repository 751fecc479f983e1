"""The bridge's MQTT link against a real, authenticated Mosquitto: availability and Last Will,
reconnect after a broker restart, and the outbox's promise — nothing accepted is lost, order
and original timestamps are kept — through a broker outage and a kill -9 of the bridge."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol
from firmware_bridge.config import BridgeConfig, load_bridge_config
from firmware_bridge.link import MqttLink
from firmware_bridge.outbox import OUTBOX_FILE
from firmware_bridge.ports import SystemClock
from tests.conftest import Broker, wait_for
from tests.firmware_bridge.conftest import write_bridge_config
from tests.firmware_bridge.emitter import numbered_event

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Subscriber:
    """The console's account on the broker (QoS 1), recording (topic, payload, retained).

    `persistent=True` keeps a session on the broker, so messages published while this
    client is away (e.g. during a broker restart) are kept for it."""

    def __init__(self, broker: Broker, topics: Sequence[str], *, persistent: bool = False):
        self.topics = list(topics)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self.client.username_pw_set(broker.console_username, broker.console_password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.subscriptions = 0  # SUBACKs so far (one per connection)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise AssertionError("test subscriber could not subscribe")

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            return
        if self.topics:
            client.subscribe([(t, 1) for t in self.topics])
        else:
            self.subscribed.set()

    def _on_subscribe(self, *_: Any) -> None:
        self.subscriptions += 1
        self.subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def received(self, topic: str) -> list[tuple[bytes, bool]]:
        with self._lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def availability(sub: Subscriber, device_id: str) -> list[tuple[protocol.Availability, bool]]:
    topic = protocol.device_topic(device_id, protocol.Channel.AVAILABILITY)
    return [(protocol.decode(protocol.Availability, p), r) for p, r in sub.received(topic)]


def retained_availability(broker: Broker, device_id: str) -> protocol.Availability:
    """What a console that connects now is told: the retained availability."""
    topic = protocol.device_topic(device_id, protocol.Channel.AVAILABILITY)
    with Subscriber(broker, [topic]) as sub:
        payload, retained = wait_for(lambda: sub.received(topic), WAIT_S, "retained availability")[
            0
        ]
    assert retained
    return protocol.decode(protocol.Availability, payload)


def events(sub: Subscriber, device_id: str) -> list[protocol.Event]:
    """Events received, duplicates (same message id, QoS 1 redelivery) removed."""
    topic = protocol.device_topic(device_id, protocol.Channel.EVENT)
    seen: dict[str, protocol.Event] = {}
    for payload, _ in sub.received(topic):
        event = protocol.decode(protocol.Event, payload)
        seen.setdefault(event.id, event)
    return list(seen.values())


class LinkUnderTest:
    """A real MqttLink in this process, recording the commands it hands over."""

    def __init__(self, config: BridgeConfig) -> None:
        self.commands: list[tuple[str, bytes]] = []
        self.link_ups = 0
        self.link = MqttLink(
            config.device_id,
            config.mqtt,
            config.zones,
            SystemClock(),
            outbox_path=config.state_dir / OUTBOX_FILE,
            on_command=lambda topic, payload: self.commands.append((topic, payload)),
            on_config=lambda _p: None,
            on_connected=self._link_up,
        )

    def _link_up(self) -> None:
        self.link_ups += 1


@pytest.fixture
def link_factory(tmp_path: Path) -> Iterator[Callable[[Broker, str, list[str]], LinkUnderTest]]:
    made: list[LinkUnderTest] = []

    def make(broker: Broker, device_id: str, zones: list[str]) -> LinkUnderTest:
        path = write_bridge_config(broker, tmp_path, device_id, zones, "speaker-node")
        made.append(LinkUnderTest(load_bridge_config(path)))
        made[-1].link.start()
        wait_for(lambda: made[-1].link_ups, WAIT_S, "the link to come up")
        return made[-1]

    yield make
    for item in made:
        item.link.stop(timeout_s=2)


def test_online_retained_on_connect_and_offline_retained_on_clean_stop(
    mqtt_broker: Broker, link_factory: Callable[[Broker, str, list[str]], LinkUnderTest]
) -> None:
    before = now_ms()
    under = link_factory(mqtt_broker, "loa-lk1", ["zone-lk1"])
    online = retained_availability(mqtt_broker, "loa-lk1")
    assert online.state is protocol.AvailabilityState.ONLINE
    assert online.ts >= before
    under.link.stop()
    offline = retained_availability(mqtt_broker, "loa-lk1")
    assert offline.state is protocol.AvailabilityState.OFFLINE


def test_small_packets_leave_at_once_without_nagle(
    mqtt_broker: Broker, link_factory: Callable[[Broker, str, list[str]], LinkUnderTest]
) -> None:
    under = link_factory(mqtt_broker, "loa-lk9", ["zone-lk9"])
    sock = under.link.tcp_socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def emitter(config_path: Path, count: int, log: IO[str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.firmware_bridge.emitter",
            str(config_path),
            str(count),
            *extra,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def test_last_will_says_offline_retained_when_the_bridge_process_dies(
    mqtt_broker: Broker, tmp_path: Path
) -> None:
    config = write_bridge_config(mqtt_broker, tmp_path, "loa-lk2", ["zone-lk2"], "speaker-node")
    topic = protocol.device_topic("loa-lk2", protocol.Channel.AVAILABILITY)
    with (
        Subscriber(mqtt_broker, [topic]) as sub,
        (tmp_path / "emitter.log").open("w") as log,
        emitter(config, 0, log, "--linger-s", "60") as proc,
    ):
        wait_for(
            lambda: any(a.state == "online" for a, _ in availability(sub, "loa-lk2")),
            WAIT_S,
            "online",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.read()
        wait_for(lambda: availability(sub, "loa-lk2")[-1][0].state == "offline", WAIT_S, "the will")
    assert retained_availability(mqtt_broker, "loa-lk2").state == "offline"


def test_broker_restart_link_reconnects_says_online_and_restores_subscriptions(
    own_broker: Broker, link_factory: Callable[[Broker, str, list[str]], LinkUnderTest]
) -> None:
    under = link_factory(own_broker, "loa-rs1", ["zone-rs"])
    own_broker.process.stop()
    wait_for(lambda: not under.link.connected.is_set(), WAIT_S, "the link to notice")
    # Without its saved sessions the broker forgets the bridge's subscriptions and the
    # retained messages: only the link itself can bring them back.
    (own_broker.process.settings.data_dir / "mosquitto.db").unlink()
    restarted_at = now_ms()
    own_broker.process.start()
    wait_for(lambda: under.link_ups == 2, WAIT_S, "the link to come back by itself")
    online = retained_availability(own_broker, "loa-rs1")
    assert online.state == "online"
    assert online.ts >= restarted_at
    command = protocol.StopCommand(id=protocol.new_message_id(), ts=now_ms())
    with Subscriber(own_broker, []) as console:
        info = console.client.publish(
            protocol.zone_command_topic("zone-rs"), protocol.encode(command), qos=1
        )
        info.wait_for_publish(10)
    topic, payload = wait_for(lambda: under.commands, WAIT_S, "the zone command")[0]
    assert topic == protocol.zone_command_topic("zone-rs")
    assert protocol.decode_command(payload) == command
    assert under.link.counters()["link_connects"] == 2


def test_events_during_a_broker_outage_arrive_all_in_order_with_their_own_ts(
    own_broker: Broker, link_factory: Callable[[Broker, str, list[str]], LinkUnderTest]
) -> None:
    under = link_factory(own_broker, "loa-out1", ["zone-out"])
    link = under.link
    topic = protocol.device_topic("loa-out1", protocol.Channel.EVENT)
    with Subscriber(own_broker, [topic], persistent=True) as sub:
        own_broker.process.stop()
        wait_for(lambda: not link.connected.is_set(), WAIT_S, "the link to notice")
        sent = []
        for n in range(1, 501):
            event = numbered_event("loa-out1", n, now_ms())
            link.publish(protocol.Channel.EVENT, event)
            sent.append(event)
        link.publish(
            protocol.Channel.TELEMETRY,
            protocol.Telemetry(
                id=protocol.new_message_id(), ts=now_ms(), device_id="loa-out1", uptime_s=1
            ),
        )
        assert link.counters()["outbox_queued"] == 500
        assert link.counters()["link_skipped_offline"] == 1  # telemetry is not kept
        time.sleep(0.01)
        restarted_at = now_ms()
        own_broker.process.start()
        got = wait_for(
            lambda: len(events(sub, "loa-out1")) >= 500 and events(sub, "loa-out1"),
            WAIT_S,
            "500 events",
        )
    assert [(e.id, e.ts, e.value) for e in got] == [(e.id, e.ts, e.value) for e in sent]
    assert all(e.ts < restarted_at for e in got)
    wait_for(lambda: link.counters()["outbox_queued"] == 0, WAIT_S, "an empty outbox")
    assert link.counters()["outbox_confirmed"] == 500
    assert link.counters()["outbox_dropped"] == 0


def test_messages_in_flight_when_the_broker_dies_are_sent_again_in_order(
    own_broker: Broker, link_factory: Callable[[Broker, str, list[str]], LinkUnderTest]
) -> None:
    """The broker stops reading (SIGSTOP) with messages written to it but not confirmed,
    then dies (SIGKILL): those and all later ones arrive once it is back, in order."""
    under = link_factory(own_broker, "loa-cr1", ["zone-cr"])
    link = under.link
    topic = protocol.device_topic("loa-cr1", protocol.Channel.EVENT)
    with Subscriber(own_broker, [topic], persistent=True) as sub:
        # A clean restart saves the subscriber's session to disk, so the crash below
        # cannot lose it (Mosquitto saves sessions at exit and every 30 s only).
        own_broker.process.stop()
        own_broker.process.start()
        wait_for(lambda: under.link_ups == 2 and sub.subscriptions == 2, WAIT_S, "both to return")
        sent = [numbered_event("loa-cr1", n, now_ms()) for n in range(1, 301)]
        for event in sent[:50]:
            link.publish(protocol.Channel.EVENT, event)
        wait_for(lambda: len(events(sub, "loa-cr1")) == 50, WAIT_S, "the first 50")
        assert own_broker.process.pid is not None
        os.kill(own_broker.process.pid, signal.SIGSTOP)
        for event in sent[50:]:
            link.publish(protocol.Channel.EVENT, event)
        time.sleep(0.5)  # the sender hands a window of them to the frozen broker
        assert link.counters()["outbox_queued"] == 250
        own_broker.process.kill()
        own_broker.process.start()
        got = wait_for(
            lambda: len(events(sub, "loa-cr1")) >= 300 and events(sub, "loa-cr1"), WAIT_S, "300"
        )
    assert [e.id for e in got] == [e.id for e in sent]
    wait_for(lambda: link.counters()["outbox_queued"] == 0, WAIT_S, "an empty outbox")


def read_numbers(proc: subprocess.Popen[str], at_least: int) -> list[int]:
    assert proc.stdout is not None
    numbers = []
    while len(numbers) < at_least:
        line = proc.stdout.readline()
        assert line, "the emitter ended early"
        numbers.append(int(line))
    return numbers


@pytest.mark.parametrize("broker", ["up", "down", "frozen"], ids=lambda b: f"broker-{b}")
def test_bridge_killed_mid_stream_loses_no_accepted_event(
    own_broker: Broker, tmp_path: Path, broker: str
) -> None:
    """broker-frozen: the broker stops reading (SIGSTOP) while events flow, the bridge is
    killed with messages written to the socket but never confirmed, then the broker dies
    too: only rows kept until their PUBACK can bring those messages back."""
    config = write_bridge_config(own_broker, tmp_path, "loa-k9", ["zone-k9"], "speaker-node")
    topics = [
        protocol.device_topic("loa-k9", protocol.Channel.EVENT),
        protocol.device_topic("loa-k9", protocol.Channel.AVAILABILITY),
    ]
    with (
        Subscriber(own_broker, topics, persistent=True) as sub,
        (tmp_path / "emitter.log").open("w") as log,
    ):
        if broker == "down":
            own_broker.process.stop()
        with emitter(config, 1000, log) as first:
            accepted = read_numbers(first, 200)
            if broker == "frozen":
                assert own_broker.process.pid is not None
                os.kill(own_broker.process.pid, signal.SIGSTOP)
                accepted += read_numbers(first, 50)
            first.send_signal(signal.SIGKILL)
            first.wait()
            assert first.stdout is not None
            accepted += [int(n) for n in first.stdout.read().split()]
        assert accepted == list(range(1, len(accepted) + 1))
        assert len(accepted) < 1000, "killed too late to be mid-stream"
        if broker == "up":
            wait_for(
                lambda: availability(sub, "loa-k9")[-1][0].state == "offline", WAIT_S, "the will"
            )
        else:
            subscriptions = sub.subscriptions
            if broker == "frozen":
                own_broker.process.kill()  # its unread input dies with it
            own_broker.process.start()
            # A killed broker may have lost the subscriber's session: wait until it is back.
            wait_for(lambda: sub.subscriptions > subscriptions, WAIT_S, "the subscriber to return")
        with emitter(config, 0, log) as second:
            out, _ = second.communicate(timeout=60)
        assert second.returncode == 0
        assert out.split() == ["done"]
        got = wait_for(
            lambda: (
                [int(e.value or 0) for e in events(sub, "loa-k9")][: len(accepted)] == accepted
                and events(sub, "loa-k9")
            ),
            WAIT_S,
            "every accepted event",
        )
    numbers = [int(e.value or 0) for e in got]
    # In order and without gaps; one more than printed if killed between accept and print.
    assert numbers == list(range(1, len(numbers) + 1))
    assert len(numbers) - len(accepted) in (0, 1)
