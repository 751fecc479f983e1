"""Test helper: the real link of one bridge emitting numbered events, for kill -9 tests.

`python -m tests.firmware_bridge.emitter CONFIG N` builds MqttLink (with its outbox in the
config's state_dir), publishes events 1..N (the number is the event's `value`) and prints
each number once publish() has returned, i.e. once the event is accepted. Then it waits
until the outbox is empty (or --drain-s passed), idles --linger-s, stops the link cleanly
and prints "done".
With N = 0 it only delivers what an earlier run left in the outbox.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from device_profiles import protocol
from firmware_bridge.config import load_bridge_config
from firmware_bridge.link import MqttLink
from firmware_bridge.outbox import OUTBOX_FILE
from firmware_bridge.ports import SystemClock

SIGNAL = "emitter_seq"


def numbered_event(device_id: str, number: int, now_ms: int) -> protocol.Event:
    return protocol.Event(
        id=protocol.new_message_id(),
        ts=now_ms,
        device_id=device_id,
        signal_class=protocol.SignalClass.TROUBLE,
        signal=SIGNAL,
        active=True,
        value=float(number),
    )


def emit(
    config_path: Path,
    count: int,
    *,
    first: int = 1,
    drain_s: float = 60.0,
    linger_s: float = 0.0,
    make_event: Callable[[str, int, int], protocol.Event] = numbered_event,
) -> int:
    """Publish events first..first+count-1 through the bridge's real link, printing each
    number once accepted; drain the outbox, idle, stop cleanly, print "done"."""
    config = load_bridge_config(config_path)
    clock = SystemClock()
    link = MqttLink(
        config.device_id,
        config.mqtt,
        config.zones,
        clock,
        outbox_path=config.state_dir / OUTBOX_FILE,
        on_command=lambda _t, _p: None,
        on_config=lambda _p: None,
        on_connected=lambda: None,
    )
    link.start()
    for number in range(first, first + count):
        link.publish(protocol.Channel.EVENT, make_event(config.device_id, number, clock.now_ms()))
        print(number, flush=True)
    deadline = time.monotonic() + drain_s
    while link.counters()["outbox_queued"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(linger_s)
    link.stop()
    print("done", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--drain-s", type=float, default=60.0)
    parser.add_argument("--linger-s", type=float, default=0.0, help="then idle this long")
    args = parser.parse_args(argv)
    return emit(args.config, args.count, drain_s=args.drain_s, linger_s=args.linger_s)


if __name__ == "__main__":
    sys.exit(main())
