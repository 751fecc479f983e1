"""The persistent outbox on its own: order, durability, confirmation, bound, corruption."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from firmware_bridge.outbox import OUTBOX_FILE, Outbox, OutboxError
from tests.firmware_bridge.fakes import FakeClock

TOPIC = "loa/v1/dev/loa-ob/event"
REPO = Path(__file__).resolve().parents[2]


def payload(n: int) -> bytes:
    return f'{{"n":{n}}}'.encode()


def numbers(box: Outbox, after_seq: int = 0, limit: int = 1000) -> list[int]:
    return [int(r.payload[5:-1]) for r in box.peek(after_seq, limit)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / OUTBOX_FILE


def test_fifo_order_and_fields(path: Path) -> None:
    clock = FakeClock()
    with Outbox(path, clock=clock) as box:
        seqs = []
        for n in range(5):
            seqs.append(box.append(TOPIC, payload(n), 1))
            clock.advance(10)
        assert seqs == sorted(seqs)
        rows = box.peek()
        assert [r.seq for r in rows] == seqs
        assert [r.created_ms for r in rows] == [clock.t_ms - 50 + 10 * i for i in range(5)]
        assert {(r.topic, r.qos) for r in rows} == {(TOPIC, 1)}
        assert numbers(box, after_seq=seqs[1], limit=2) == [2, 3]
        assert box.queued == 5


def test_rows_survive_reopen_and_leave_only_when_confirmed(path: Path) -> None:
    with Outbox(path) as box:
        seqs = [box.append(TOPIC, payload(n), 1) for n in range(10)]
        assert box.delete(seqs[:3]) == 3
        assert box.delete(seqs[:3]) == 0  # a late second confirmation changes nothing
    with Outbox(path) as box:
        assert box.queued == 7
        assert numbers(box) == list(range(3, 10))
        assert box.delete(seqs[3:]) == 7
        assert box.queued == 0
        assert box.counters()["outbox_queued"] == 0


def test_seq_never_goes_back_after_the_outbox_emptied(path: Path) -> None:
    """The sender asks for rows after the last one it sent: a reused seq would be skipped."""
    with Outbox(path) as box:
        last = max(box.append(TOPIC, payload(n), 1) for n in range(3))
        box.delete(r.seq for r in box.peek())
    with Outbox(path) as box:
        assert box.append(TOPIC, payload(9), 1) > last


def test_full_outbox_drops_the_oldest_non_alarm_and_never_an_alarm(path: Path) -> None:
    with Outbox(path, max_rows=4) as box:
        box.append(TOPIC, payload(0), 1, never_drop=True)
        for n in (1, 2, 3):
            box.append(TOPIC, payload(n), 1)
        box.append(TOPIC, payload(4), 1)  # full: 1 goes
        assert numbers(box) == [0, 2, 3, 4]
        for n in (5, 6, 7):
            box.append(TOPIC, payload(n), 1, never_drop=True)  # 2, 3, 4 go
        assert numbers(box) == [0, 5, 6, 7]
        box.append(TOPIC, payload(8), 1, never_drop=True)  # only alarms left: kept, over bound
        assert numbers(box) == [0, 5, 6, 7, 8]
        assert box.counters() == {
            "outbox_queued": 5,
            "outbox_dropped": 4,
            "outbox_corrupt_reset": 0,
            "outbox_in_memory": 0,
        }


def test_closed_outbox_raises_its_own_error(path: Path) -> None:
    box = Outbox(path)
    box.close()
    box.close()  # twice is fine
    with pytest.raises(OutboxError, match="closed"):
        box.append(TOPIC, payload(1), 1)
    with pytest.raises(OutboxError):
        box.peek()


def test_one_thread_appends_while_another_sends_and_confirms(path: Path) -> None:
    total = 500
    got: list[int] = []
    with Outbox(path) as box:
        appended = threading.Event()

        def produce() -> None:
            for n in range(total):
                box.append(TOPIC, payload(n), 1)
            appended.set()

        producer = threading.Thread(target=produce)
        producer.start()
        last = 0
        while not (appended.is_set() and box.queued == 0):
            rows = box.peek(last, 50)
            if rows:
                got.extend(int(r.payload[5:-1]) for r in rows)
                last = rows[-1].seq
                box.delete(r.seq for r in rows)
        producer.join()
    assert got == list(range(total))


def test_garbage_file_is_moved_aside_and_a_fresh_outbox_starts(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with Outbox(path, clock=FakeClock()) as box:
        assert box.counters()["outbox_corrupt_reset"] == 1
        assert box.queued == 0
        box.append(TOPIC, payload(1), 1)
    aside = sorted(path.parent.glob(f"{OUTBOX_FILE}.corrupt-*"))
    assert [p.name for p in aside] == [f"{OUTBOX_FILE}.corrupt-20270115T080000Z"]
    assert aside[0].read_bytes().startswith(b"this is not a database")


def test_damaged_pages_are_found_and_moved_aside(path: Path) -> None:
    Outbox(path).close()
    with sqlite3.connect(path) as db:  # many pages, quickly: one transaction
        db.executemany(
            "INSERT INTO outbox (topic, payload, qos, created_ms) VALUES (?, ?, 1, 0)",
            [(TOPIC, payload(n) * 20) for n in range(3000)],
        )
    db.close()
    size = path.stat().st_size
    with path.open("r+b") as f:  # scribble over pages in the middle (header left intact)
        f.seek(size // 2)
        f.write(b"\xff" * 16384)
    with Outbox(path) as box:
        assert box.counters()["outbox_corrupt_reset"] == 1
        assert box.queued == 0
    assert len(list(path.parent.glob(f"{OUTBOX_FILE}.corrupt-*"))) == 1


def test_a_file_that_cannot_be_opened_is_not_corrupt_and_messages_stay_in_memory(
    tmp_path: Path,
) -> None:
    """A read-only card must not stop the bridge (its siren is local): memory, counted."""
    path = tmp_path / OUTBOX_FILE
    path.mkdir()  # a directory where the database should be
    with Outbox(path) as box:
        box.append(TOPIC, payload(1), 1)
        assert numbers(box) == [1]
        assert box.counters()["outbox_in_memory"] == 1
        assert box.counters()["outbox_corrupt_reset"] == 0
    assert path.is_dir()
    assert not list(tmp_path.glob("*.corrupt-*"))


_WRITER = """
import sys
from pathlib import Path
from firmware_bridge.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
n = 0
while True:
    box.append("loa/v1/dev/loa-ob/event", b'{"n":%d}' % n, 1)
    print(n, flush=True)
    n += 1
"""


def test_kill_9_mid_stream_loses_no_accepted_row(path: Path) -> None:
    """A row is accepted once append() returned; SIGKILL at any moment keeps all of them."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    ) as writer:
        assert writer.stdout is not None
        for _ in range(300):
            writer.stdout.readline()
        writer.send_signal(signal.SIGKILL)
        rest = writer.stdout.read()
        writer.wait()
    accepted = 300 + len(rest.split())
    with Outbox(path) as box:
        assert box.counters()["outbox_corrupt_reset"] == 0
        stored = numbers(box, limit=100_000)
    assert stored[:accepted] == list(range(accepted))
    assert len(stored) in (accepted, accepted + 1)  # one more if killed before its print
    with sqlite3.connect(path) as db:  # and the file itself is sound
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
