"""Run a bridge: `python -m firmware_bridge --config bridge.toml [--simulate]`, or a whole
simulated fleet: `python -m firmware_bridge --simulate --fleet-dir DIR`.
`--safe-off` only drives the amplifier relay and the siren OFF and exits (systemd's
ExecStopPost)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from device_profiles.profiles import ProfileError, load_profile
from firmware_bridge import systemd
from firmware_bridge.bridge import Bridge, build_bridge
from firmware_bridge.config import load_bridge_config
from firmware_bridge.core import Ping
from firmware_bridge.relay import switch_off_outputs

log = logging.getLogger("firmware_bridge")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="this device's bridge config file")
    where.add_argument("--fleet-dir", type=Path, help="run every *.toml in DIR (needs --simulate)")
    parser.add_argument("--simulate", action="store_true", help="mock GPIO, simulated player")
    parser.add_argument("--safe-off", action="store_true", help="switch outputs OFF and exit")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--counters-out", type=Path, help="on exit, write each bridge's counters to FILE (JSON)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if args.fleet_dir and not args.simulate:
        parser.error("--fleet-dir runs simulated devices: add --simulate")
    paths = [args.config] if args.config else sorted(args.fleet_dir.glob("*.toml"))
    if not paths:
        parser.error(f"no bridge config files in {args.fleet_dir}")
    try:
        if args.safe_off:
            return safe_off(paths, args.simulate)
        bridges: list[Bridge] = [
            build_bridge(load_bridge_config(p), simulate=args.simulate) for p in paths
        ]
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    for bridge in bridges:
        bridge.start()
    log.info("%d bridge(s) running", len(bridges))
    systemd.notify("READY=1")
    watch(bridges, stop)
    systemd.notify("STOPPING=1")
    for bridge in bridges:
        bridge.stop()
    log.info("stopped: amplifiers off, offline published")
    if args.counters_out:
        write_counters(bridges, args.counters_out)
    return 0


def write_counters(bridges: list[Bridge], path: Path) -> None:
    """{device id: its core's and link's counters}, written whole (a reader never sees half)."""
    counters = {b.config.device_id: {**b.counters, **b.link.counters()} for b in bridges}
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(counters, sort_keys=True), encoding="utf-8")
    partial.replace(path)


def watch(bridges: list[Bridge], stop: threading.Event) -> None:
    """Feed systemd's watchdog while every core loop answers a ping; return on stop."""
    interval_s = systemd.watchdog_interval_s()
    if interval_s is None:
        stop.wait()
        return
    while not stop.wait(interval_s):
        pings = [threading.Event() for _ in bridges]
        for bridge, answered in zip(bridges, pings, strict=True):
            bridge.core.post(Ping(answered))
        if all(answered.wait(interval_s) for answered in pings):
            systemd.notify("WATCHDOG=1")
        else:
            log.error(
                "a core loop did not answer within %.1f s: not feeding the watchdog", interval_s
            )


def safe_off(paths: list[Path], simulate: bool) -> int:
    pin_factory = None
    if simulate:
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()
    for path in paths:
        config = load_bridge_config(path)
        pins = switch_off_outputs(load_profile(config.profile), pin_factory)
        log.info("%s: outputs off on GPIO %s", config.device_id, pins or "(none)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
