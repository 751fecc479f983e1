"""The bridge's persistent outbox: events and acks wait here, on disk, until the broker has them.

One SQLite file in the state dir, one row per message, oldest first. A message is *accepted*
once `append()` returns: its row is committed with synchronous=FULL, so neither a kill -9 nor
a power cut afterwards loses it. A row leaves only through `delete()`, which the link calls
when the broker confirmed the message (PUBACK). Format and inspection: docs/bridge-link.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.ports import Clock, SystemClock

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"  # in the bridge's state_dir
DEFAULT_MAX_ROWS = 100_000
SCHEMA_VERSION = 1

# AUTOINCREMENT: a seq is never reused, even after the table was emptied, so "rows after
# the last one sent" stays correct for the sender. The partial index finds the oldest
# droppable row without a scan when the outbox is full.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    never_drop INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (seq) WHERE never_drop = 0;
"""


class OutboxError(RuntimeError):
    """The outbox could not store or read messages (disk full, closed, I/O error)."""


class _Corrupt(sqlite3.DatabaseError):
    """quick_check found damage."""


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Damage, as opposed to a lock, a permission or a full disk (never moved aside)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return isinstance(exc, _Corrupt) or code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    payload: bytes
    qos: int
    created_ms: int


def _open(path: Path | str) -> sqlite3.Connection:
    """Open (or create) the database, set it up and check it; DatabaseError if corrupt."""
    # isolation_level=None: no implicit transactions; append() and delete() use their own.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        # WAL: readers (sqlite3 on the command line) never block the bridge's writes.
        # synchronous=FULL: every commit fsyncs the WAL, so an accepted row survives a
        # power cut too (NORMAL in WAL mode would survive kill -9 but not a power cut).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise _Corrupt(f"quick_check: {'; '.join(check[:5])}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


def _move_aside(path: Path, now_ms: int) -> Path:
    """Rename a corrupt database (and its WAL and shared-memory files) out of the way."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now_ms / 1000))
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(f"{aside}{suffix}")
    return aside


class Outbox:
    """Thread-safe persistent FIFO: the core thread appends, the link's sender reads/deletes.

    Bound: at most `max_rows` rows. When full, the oldest row that is not marked
    `never_drop` (alarm events) is dropped to make room and counted; never_drop rows are
    always accepted, even beyond the bound.
    """

    def __init__(
        self, path: Path, *, max_rows: int = DEFAULT_MAX_ROWS, clock: Clock | None = None
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()  # _write() holds it across a caller's bookkeeping
        self._counters: Counter[str] = Counter()
        try:
            db = self._open_file()
        except (OSError, sqlite3.Error) as exc:
            # Read-only or failing SD card, wrong permissions: the bridge must still run
            # (the siren is local), so keep messages in memory, logged and counted.
            log.error("outbox %s cannot be opened (%s); keeping messages in MEMORY", path, exc)
            self._counters["outbox_in_memory"] = 1
            db = _open(":memory:")
        self._db: sqlite3.Connection | None = db
        self._queued = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        if self._queued:
            log.info("outbox %s: %d message(s) waiting from before", path, self._queued)

    def _open_file(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _open(self.path)
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            aside = _move_aside(self.path, self._clock.now_ms())
            log.error("outbox %s is corrupt (%s); moved aside to %s", self.path, exc, aside.name)
            self._counters["outbox_corrupt_reset"] += 1
            return _open(self.path)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._db

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (durably) or rolled back; under the lock."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: could not {what}: {exc}") from exc

    def append(self, topic: str, payload: bytes, qos: int, *, never_drop: bool = False) -> int:
        """Store one message at the end; returns its seq once it is durable (accepted)."""
        with self._lock:
            with self._write("store a message") as db:
                dropped = 0
                if self._queued >= self.max_rows:
                    dropped = db.execute(
                        "DELETE FROM outbox WHERE seq = (SELECT seq FROM outbox"
                        " WHERE never_drop = 0 ORDER BY seq LIMIT 1)"
                    ).rowcount
                cur = db.execute(
                    "INSERT INTO outbox (topic, payload, qos, created_ms, never_drop)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, qos, self._clock.now_ms(), int(never_drop)),
                )
            self._queued += 1 - dropped
            if dropped:
                self._counters["outbox_dropped"] += dropped
                log.warning("outbox full (%d rows): dropped the oldest non-alarm", self.max_rows)
            assert cur.lastrowid is not None
            return cur.lastrowid

    def peek(self, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
        """Up to `limit` rows with seq > after_seq, oldest first."""
        with self._lock:
            db = self._conn()
            try:
                cur = db.execute(
                    "SELECT seq, topic, payload, qos, created_ms FROM outbox"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                )
                rows = cur.fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: could not read: {exc}") from exc
        return [OutboxRow(int(s), str(t), bytes(p), int(q), int(c)) for s, t, p, q, c in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Remove confirmed rows (missing ones are ignored); returns how many went."""
        params = [(s,) for s in seqs]
        if not params:
            return 0
        with self._lock:
            with self._write("delete") as db:
                before = db.total_changes
                db.executemany("DELETE FROM outbox WHERE seq = ?", params)
            deleted = db.total_changes - before
            self._queued -= deleted
            return deleted

    @property
    def queued(self) -> int:
        """Rows waiting (including those sent but not yet confirmed)."""
        with self._lock:
            return self._queued

    def counters(self) -> dict[str, int]:
        """For diagnostics/telemetry (docs/bridge-link.md)."""
        with self._lock:
            return {
                "outbox_queued": self._queued,
                "outbox_dropped": self._counters["outbox_dropped"],
                "outbox_corrupt_reset": self._counters["outbox_corrupt_reset"],
                "outbox_in_memory": self._counters["outbox_in_memory"],
            }

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
