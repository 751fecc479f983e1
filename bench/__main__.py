"""`python -m bench [--repeat N] [--only NAME ...]`: run the benchmarks, write the report."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import audio, fanout, footprint
from bench import ingest as ingest_bench
from bench import scheduler as scheduler_bench
from bench.report import Section, write_report

BENCHMARKS: dict[str, Callable[[int], Section]] = {
    "audio": audio.run,
    "fanout": fanout.run,
    "footprint": footprint.run,
    "ingest": ingest_bench.run,
    "scheduler": scheduler_bench.run,
}
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each benchmark")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    sections = []
    for name in args.only or list(BENCHMARKS):
        start = time.monotonic()
        print(f"bench: {name} ...", flush=True)
        sections.append(BENCHMARKS[name](args.repeat))
        print(f"bench: {name} done in {time.monotonic() - start:.0f} s", flush=True)
    command = "make bench" if args.only is None else f"python -m bench --only {' '.join(args.only)}"
    write_report(args.out, sections, command)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
