"""Run a bridge: `python -m firmware_bridge --config bridge.toml [--simulate]`, or a whole
simulated fleet: `python -m firmware_bridge --simulate --fleet-dir DIR`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from device_profiles.profiles import ProfileError
from firmware_bridge.bridge import Bridge, build_bridge
from firmware_bridge.config import load_bridge_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="this device's bridge config file")
    where.add_argument("--fleet-dir", type=Path, help="run every *.toml in DIR (needs --simulate)")
    parser.add_argument("--simulate", action="store_true", help="mock GPIO, simulated player")
    parser.add_argument("--log-level", default="info")
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
    logging.getLogger("firmware_bridge").info("%d bridge(s) running", len(bridges))
    stop.wait()
    for bridge in bridges:
        bridge.stop()
    logging.getLogger("firmware_bridge").info("stopped: amplifiers off, offline published")
    return 0


if __name__ == "__main__":
    sys.exit(main())
