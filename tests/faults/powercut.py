"""Writer processes for the kill -9 and power-cut tests, and the disk images they leave.

`python -m tests.faults.powercut alarms CONFIG COUNT [--first N]` is a bridge's real link
(MqttLink with its outbox in the config's state_dir) raising numbered call-point alarms: it
prints each number once `publish()` returned (the alarm is *accepted*: on disk), then waits
for the outbox to drain and stops cleanly ("done"). COUNT 0 only delivers what an earlier
run left in the outbox.

`python -m tests.faults.powercut ingest DATABASE_URL DEVICE BATCH` stores numbered batches of
events through the console's own ingest (Ingest.handle_batch on console.db's engine and
pragmas) and `... outbox PATH` appends numbered rows to a bridge outbox (Outbox.append):
both print each number once its transaction has committed, until killed. The first line
says which `PRAGMA synchronous` is in force.

A *disk image* is what a power cut would leave of a SQLite database in WAL mode: the test
freezes the writer (SIGSTOP), copies the database and its write-ahead log as they are (the
shared-memory index is never on the platter in a usable state: SQLite rebuilds it), and
then tears the log: everything after some byte offset is lost, or replaced by garbage, as
writes the disk had not made durable would be.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from device_profiles import protocol

ALARM_SIGNAL = "call_point"
WAL_HEADER_BYTES = 32
WAL_FRAME_HEADER_BYTES = 24


def numbered_alarm(device_id: str, number: int, now_ms: int) -> protocol.Event:
    """A raised call-point alarm whose `value` is its number (the order it was raised in)."""
    return protocol.Event(
        id=protocol.new_message_id(),
        ts=now_ms,
        device_id=device_id,
        signal_class=protocol.SignalClass.ALARM,
        signal=ALARM_SIGNAL,
        active=True,
        value=float(number),
    )


# --- the writer processes ----------------------------------------------------------------------


def run_alarms(config_path: Path, count: int, first: int, drain_s: float) -> int:
    from tests.firmware_bridge.emitter import emit

    return emit(config_path, count, first=first, drain_s=drain_s, make_event=numbered_alarm)


def batch_event_id(number: int, j: int) -> str:
    return f"pc-{number:07d}-{j:03d}"


def run_ingest(database_url: str, device_id: str, batch: int) -> int:
    """Numbered batches of `batch` events (value = the batch's number), one transaction each."""
    from console.db import Database
    from console.ingest import Incoming, Ingest

    db = Database(database_url)
    with db.engine.connect() as conn:
        print(f"synchronous={conn.exec_driver_sql('PRAGMA synchronous').scalar()}", flush=True)
    ingest = Ingest(db)
    topic = protocol.device_topic(device_id, protocol.Channel.EVENT)
    number = 0
    while True:
        number += 1
        now = datetime.now(UTC)
        items = [
            Incoming(
                topic,
                protocol.encode(
                    protocol.Event(
                        id=batch_event_id(number, j),
                        ts=int(now.timestamp() * 1000),
                        device_id=device_id,
                        signal_class=protocol.SignalClass.ALARM,
                        signal=ALARM_SIGNAL,
                        active=True,
                        value=float(number),
                    )
                ),
                now,
            )
            for j in range(batch)
        ]
        ingest.handle_batch(items)
        print(number, flush=True)


def run_outbox(path: Path) -> int:
    """Numbered rows (payload = the number) appended one transaction each."""
    from firmware_bridge.outbox import Outbox

    outbox = Outbox(path)
    conn = sqlite3.connect(path)
    print(f"synchronous={conn.execute('PRAGMA synchronous').fetchone()[0]}", flush=True)
    conn.close()
    topic = protocol.device_topic("loa-pc", protocol.Channel.EVENT)
    number = 0
    while True:
        number += 1
        outbox.append(topic, str(number).encode(), 1, never_drop=number % 2 == 0)
        print(number, flush=True)


# --- disk images ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """A copy of a database file and its write-ahead log, as they were at one instant."""

    db: Path

    @property
    def wal(self) -> Path:
        return Path(f"{self.db}-wal")

    def wal_size(self) -> int:
        return self.wal.stat().st_size if self.wal.exists() else 0

    def frame_bytes(self) -> int | None:
        """Bytes per log frame (header + page), from the log's header; None without a log."""
        if self.wal_size() < WAL_HEADER_BYTES:
            return None
        with self.wal.open("rb") as fh:
            header = fh.read(WAL_HEADER_BYTES)
        page_size = struct.unpack(">I", header[8:12])[0]
        if page_size == 1:
            page_size = 65536
        return WAL_FRAME_HEADER_BYTES + page_size


def take_image(db_path: Path, dest_dir: Path) -> Image:
    """Copy the database and its log (never the shared-memory index) into dest_dir."""
    dest_dir.mkdir(parents=True)
    dest = dest_dir / db_path.name
    shutil.copyfile(db_path, dest)
    wal = Path(f"{db_path}-wal")
    if wal.exists():
        shutil.copyfile(wal, f"{dest}-wal")
    return Image(dest)


def torn(image: Image, dest_dir: Path, cut: int, garbage: int, rng: random.Random) -> Image:
    """A copy of `image` whose log keeps only its first `cut` bytes, then `garbage` random
    bytes (a sector half written, or stale data where new frames never landed)."""
    dest_dir.mkdir(parents=True)
    dest = dest_dir / image.db.name
    shutil.copyfile(image.db, dest)
    if image.wal.exists():
        data = image.wal.read_bytes()[:cut]
        Path(f"{dest}-wal").write_bytes(data + rng.randbytes(garbage))
    return Image(dest)


@dataclass(frozen=True)
class Opened:
    integrity: list[str]
    journal_mode: str
    numbers: list[int]


def open_image(image: Image, numbers_sql: str) -> Opened:
    """Open an image as SQLite would after the power came back; what it holds."""
    conn = sqlite3.connect(image.db)
    try:
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        try:
            numbers = [int(r[0]) for r in conn.execute(numbers_sql)]
        except sqlite3.OperationalError as exc:
            # Only a log-less image (the "unsynced" illustration) may lack the table: it was
            # created in the log and no checkpoint had copied it into the file yet.
            if "no such table" not in str(exc) or image.wal_size() > WAL_HEADER_BYTES:
                raise
            numbers = []
    finally:
        conn.close()
    return Opened(integrity, mode, numbers)


def durable_cut(image: Image, holds: Callable[[Image], bool], scratch: Path) -> int:
    """The shortest log (a frame boundary) with which the image still holds what `holds`
    asks: what a commit that returned had made durable when every commit syncs the log."""
    frame = image.frame_bytes()
    size = image.wal_size()
    if frame is None:
        return size
    frames = (size - WAL_HEADER_BYTES) // frame
    lo, hi = 0, frames  # holds(cut after hi frames) is true: the whole log
    n = 0
    while lo < hi:
        mid = (lo + hi) // 2
        n += 1
        trial = torn(
            image, scratch / f"cut-{n}", WAL_HEADER_BYTES + mid * frame, 0, random.Random()
        )
        if holds(trial):
            hi = mid
        else:
            lo = mid + 1
        shutil.rmtree(trial.db.parent)
    return WAL_HEADER_BYTES + lo * frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.powercut", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    alarms = sub.add_parser("alarms")
    alarms.add_argument("config", type=Path)
    alarms.add_argument("count", type=int)
    alarms.add_argument("--first", type=int, default=1)
    alarms.add_argument("--drain-s", type=float, default=60.0)
    ingest = sub.add_parser("ingest")
    ingest.add_argument("database_url")
    ingest.add_argument("device_id")
    ingest.add_argument("batch", type=int)
    outbox = sub.add_parser("outbox")
    outbox.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.what == "alarms":
        return run_alarms(args.config, args.count, args.first, args.drain_s)
    if args.what == "ingest":
        return run_ingest(args.database_url, args.device_id, args.batch)
    return run_outbox(args.path)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
