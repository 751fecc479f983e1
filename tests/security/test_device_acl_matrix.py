"""Every device account × every kind of topic × publish and subscribe, on the real broker.

Four devices in a commune with two hamlets and a cluster (a zone tree like the console's).
What a device may do is written once, in RULES; each cell's expectation comes from it, and
each cell's outcome is observed, never assumed:

- a publish is allowed when an observer with the broker administrator's account (which
  reads every topic) receives it; a denied publish is silently dropped by Mosquitto, so
  each device ends with a sentinel on a topic it may use, and once the observer has the
  sentinel, everything sent before it has arrived or never will (one connection: in order);
- a subscribe is allowed when the broker grants it in its SUBACK (a denial is 0x80) and,
  for a topic of the contract, a message the console publishes there arrives (again
  bounded by a sentinel on the device's own command topic).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import protocol as p
from tests.conftest import Broker, wait_for

PREFIX = "acm"
COMMUNE, HAMLET_A, HAMLET_B, CLUSTER = (
    f"{PREFIX}-xa",
    f"{PREFIX}-thon-a",
    f"{PREFIX}-thon-b",
    f"{PREFIX}-cum-a1",
)
PARENT: dict[str, str | None] = {
    COMMUNE: None,
    HAMLET_A: COMMUNE,
    HAMLET_B: COMMUNE,
    CLUSTER: HAMLET_A,
}
# device -> the zone it stands in: a cluster, a hamlet, the other hamlet, the commune itself.
DEVICES = {
    f"{PREFIX}-loa-1": CLUSTER,
    f"{PREFIX}-loa-2": HAMLET_A,
    f"{PREFIX}-loa-3": HAMLET_B,
    f"{PREFIX}-loa-4": COMMUNE,
}
DOWNLINK = (p.Channel.CMD, p.Channel.CONFIG)
DYNSEC = "$CONTROL/dynamic-security/v1"

# What a device may do: (kind of topic) -> (may publish, may subscribe). None: not a
# topic one can publish to (a wildcard filter).
RULES: dict[str, tuple[bool | None, bool]] = {
    "own uplink (availability, state, telemetry, event, ack)": (True, False),
    "another device's uplink": (False, False),
    "own downlink (cmd, config)": (False, True),
    "another device's downlink": (False, False),
    "command of its own zone": (False, True),
    "command of an ancestor zone": (False, True),
    "command of a zone below its own": (False, False),
    "command of an unrelated zone": (False, False),
    "outside the contract": (False, False),
    "wildcard": (None, False),
    "broker system and control": (False, False),
}


def zones_of(device_id: str) -> list[str]:
    """Its zone and every ancestor, as provisioning gives them."""
    chain, zone = [], DEVICES[device_id]
    while zone is not None:
        chain.append(zone)
        zone = PARENT[zone]
    return chain


def below(zone: str, ancestor: str) -> bool:
    parent = PARENT[zone]
    return parent is not None and (parent == ancestor or below(parent, ancestor))


def zone_kind(device_id: str, zone: str) -> str:
    own = DEVICES[device_id]
    if zone == own:
        return "command of its own zone"
    if zone in zones_of(device_id):
        return "command of an ancestor zone"
    if below(zone, own):
        return "command of a zone below its own"
    return "command of an unrelated zone"


def topics_for(device_id: str) -> list[tuple[str, str]]:
    """(topic or filter, kind) for one device: the whole contract plus what lies outside it."""
    out: list[tuple[str, str]] = []
    for other in DEVICES:
        whose = "own" if other == device_id else "another device's"
        for channel in p.Channel:
            direction = "downlink" if channel in DOWNLINK else "uplink"
            kind = next(k for k in RULES if k.startswith(f"{whose} {direction}"))
            out.append((p.device_topic(other, channel), kind))
    out += [(p.zone_command_topic(zone), zone_kind(device_id, zone)) for zone in PARENT]
    own_ack = p.device_topic(device_id, p.Channel.ACK)
    outside = [
        own_ack.replace(p.TOPIC_ROOT, "loa/v2"),  # another version of the contract
        f"{own_ack}/extra",  # one level deeper than its own topic
        own_ack.rsplit("/", 1)[0],  # one level less
        f"{p.TOPIC_ROOT}/console/{device_id}",
        f"{PREFIX}/elsewhere",
    ]
    out += [(t, "outside the contract") for t in outside]
    wildcards = [
        "#",
        "+/#",
        f"{p.TOPIC_ROOT}/#",
        f"{p.TOPIC_ROOT}/dev/+/cmd",
        f"{p.TOPIC_ROOT}/dev/+/ack",
        f"{p.TOPIC_ROOT}/dev/{device_id}/#",
        f"{p.TOPIC_ROOT}/dev/{device_id}/+",
        f"{p.TOPIC_ROOT}/zone/+/cmd",
        f"{p.TOPIC_ROOT}/zone/#",
        f"+/v1/dev/{device_id}/cmd",
    ]
    out += [(t, "wildcard") for t in wildcards]
    system = [
        "$SYS/#",
        "$SYS/broker/clients/connected",
        f"{DYNSEC}",
        f"{DYNSEC}/response",
        "$CONTROL/#",
    ]
    out += [(t, "broker system and control") for t in system]
    return out


@dataclass(frozen=True)
class Cell:
    device_id: str
    op: str  # "publish" or "subscribe"
    topic: str
    kind: str

    @property
    def expected(self) -> bool:
        pub, sub = RULES[self.kind]
        allowed = pub if self.op == "publish" else sub
        assert allowed is not None
        return allowed


def cells() -> list[Cell]:
    out = []
    for device_id in DEVICES:
        for topic, kind in topics_for(device_id):
            if RULES[kind][0] is not None and "#" not in topic and "+" not in topic:
                out.append(Cell(device_id, "publish", topic, kind))
            out.append(Cell(device_id, "subscribe", topic, kind))
    return out


class Account:
    """One MQTT connection that records what it receives and what its SUBACKs said."""

    def __init__(self, broker: Broker, username: str, password: str, client_id: str) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.granted: dict[int, list[bool]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: rc.is_failure or self._ready.set()
        self.client.on_message = self._message
        self.client.on_subscribe = self._subscribed
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(10), f"{username} could not connect"

    def _message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def _subscribed(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        with self._lock:
            self.granted[mid] = [not code.is_failure for code in codes]

    def subscribe(self, filters: list[str]) -> list[bool]:
        """Granted or refused, filter by filter, from one SUBSCRIBE and its SUBACK."""
        result, mid = self.client.subscribe([(f, 1) for f in filters])
        assert result == mqtt.MQTT_ERR_SUCCESS
        return wait_for(lambda: self.granted.get(mid), 15, "the SUBACK")

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(15)

    def seen(self, pred: Callable[[str, bytes], bool]) -> bool:
        with self._lock:
            return any(pred(t, body) for t, body in self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets(sockpair_only=True)


def intruder(device_id: str) -> str:
    return f"{PREFIX}-intruder-{device_id}"


def publish_round(
    broker: Broker, devices: dict[str, Account], observer: Account, matrix: list[Cell], run: bytes
) -> dict[Cell, bool]:
    """Each device publishes every cell in order, then a sentinel; what got through?"""
    marks = {cell: b"%s:%d" % (run, n) for n, cell in enumerate(matrix)}
    for device_id, account in devices.items():
        for cell in (c for c in matrix if c.device_id == device_id and c.op == "publish"):
            body = marks[cell]
            if cell.topic == DYNSEC:  # a real command: it would create an account
                command = {
                    "command": "createClient",
                    "username": intruder(device_id),
                    "password": "not-allowed-1234",
                }
                body = json.dumps({"commands": [command]}).encode()
            account.publish(cell.topic, body)
        sentinel = b"%s:sentinel:%s" % (run, device_id.encode())
        account.publish(p.device_topic(device_id, p.Channel.TELEMETRY), sentinel)
        wait_for(
            lambda s=sentinel: observer.seen(lambda _t, b: b == s),
            30,
            f"the sentinel of {device_id}",
        )
    observed = {
        cell: observer.seen(lambda t, b, c=cell: t == c.topic and b == marks[c])
        for cell in matrix
        if cell.op == "publish"
    }
    with broker.admin() as admin:  # the control topic's effect: was the account made?
        for cell in (c for c in observed if c.topic == DYNSEC):
            username = intruder(cell.device_id)
            answer = admin.execute([{"command": "getClient", "username": username}], check=False)
            observed[cell] = not answer[0].get("error")
    return observed


def subscribe_round(
    devices: dict[str, Account], console: Account, matrix: list[Cell], run: bytes
) -> dict[Cell, bool]:
    """One SUBSCRIBE per device (the SUBACK answers filter by filter), then the console
    publishes on every topic of the contract and a sentinel to each device."""
    granted: dict[Cell, bool] = {}
    for device_id, account in devices.items():
        subs = [c for c in matrix if c.device_id == device_id and c.op == "subscribe"]
        for cell, ok in zip(subs, account.subscribe([c.topic for c in subs]), strict=True):
            granted[cell] = ok
    contract = {
        c.topic
        for c in granted
        if c.topic.startswith(f"{p.TOPIC_ROOT}/") and "+" not in c.topic and "#" not in c.topic
    }
    for topic in sorted(contract):
        console.publish(topic, b"%s:to:%s" % (run, topic.encode()))
    end = b"%s:end" % run
    for device_id in devices:
        console.publish(p.device_topic(device_id, p.Channel.CMD), end)
    for device_id, account in devices.items():
        own = p.device_topic(device_id, p.Channel.CMD)
        wait_for(
            lambda a=account, t=own: a.seen(lambda topic, b: (topic, b) == (t, end)),
            30,
            f"the console's sentinel at {device_id}",
        )
    for cell, ok in granted.items():
        if cell.topic in contract:
            arrived = devices[cell.device_id].seen(
                lambda t, b, c=cell: t == c.topic and b == b"%s:to:%s" % (run, c.topic.encode())
            )
            assert ok == arrived, f"{cell}: the SUBACK said {ok}, the delivery {arrived}"
    # Nothing reached a device but through a filter it may hold.
    for device_id, account in devices.items():
        allowed = {c.topic for c in granted if c.device_id == device_id and c.expected}
        leaked = {t for t, b in account.received if b.startswith(run) and t not in allowed}
        assert not leaked, f"{device_id} received {sorted(leaked)}"
    return granted


def test_each_device_reaches_exactly_its_own_topics_and_zones(mqtt_broker: Broker) -> None:
    run = uuid.uuid4().hex[:8].encode()
    settings = mqtt_broker.process.settings
    observer = Account(
        mqtt_broker, settings.admin_username, settings.admin_password, f"{PREFIX}-observer"
    )
    console = Account(
        mqtt_broker, mqtt_broker.console_username, mqtt_broker.console_password, f"{PREFIX}-console"
    )
    devices: dict[str, Account] = {}
    matrix = cells()
    try:
        assert all(observer.subscribe(["#", "$SYS/#", "$CONTROL/dynamic-security/#"]))
        for device_id in DEVICES:
            password = mqtt_broker.provision_device(device_id, zones_of(device_id))
            devices[device_id] = Account(mqtt_broker, device_id, password, device_id)
        observed = publish_round(mqtt_broker, devices, observer, matrix, run)
        observed |= subscribe_round(devices, console, matrix, run)
    finally:
        for account in [observer, console, *devices.values()]:
            account.close()
        with mqtt_broker.admin() as admin:
            for device_id in DEVICES:
                admin.revoke_device(device_id)
            admin.execute_tolerant(
                [{"command": "deleteClient", "username": intruder(d)} for d in DEVICES]
            )
    assert set(observed) == set(matrix)
    wrong = [
        f"{c.device_id} {c.op} {c.topic} ({c.kind}): expected "
        f"{'allowed' if c.expected else 'denied'}, observed {'allowed' if observed[c] else 'denied'}"
        for c in matrix
        if observed[c] != c.expected
    ]
    publishes = sum(c.op == "publish" for c in matrix)
    print(
        f"device ACL matrix: {len(matrix)} cells checked ({len(DEVICES)} devices, "
        f"{publishes} publish, {len(matrix) - publishes} subscribe), {len(wrong)} wrong"
    )
    assert not wrong, "\n".join(wrong)


def test_the_table_covers_every_channel_and_zone_relation() -> None:
    """The matrix is built from the contract itself: a new channel lands in it unclassified
    only if RULES cannot place it, which fails here."""
    kinds = {c.kind for c in cells()}
    assert kinds == set(RULES)
    per_device = {d: [c for c in cells() if c.device_id == d] for d in DEVICES}
    for device_id, mine in per_device.items():
        subscribable = {c.topic for c in mine if c.op == "subscribe" and c.expected}
        assert subscribable == {p.device_topic(device_id, ch) for ch in DOWNLINK} | {
            p.zone_command_topic(z) for z in zones_of(device_id)
        }
        publishable = {c.topic for c in mine if c.op == "publish" and c.expected}
        assert publishable == {p.device_topic(device_id, ch) for ch in p.UPLINK_CHANNELS}
