"""The serial link to the fire-point controller (the only module that imports pyserial).

A reader thread opens the port by URL (`/dev/ttyAMA0`, a pty, `loop://`), feeds the bytes
to a FrameDecoder and posts each reading to the core. A port that fails to open or to read
is a lost link: SerialLost is posted once, the port is reopened with exponential backoff,
and SerialRestored is posted when bytes arrive again (a port that opens but only fails to
read is not a restored link). Nothing escapes the thread unlogged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import serial

from device_profiles.serial_frames import FrameDecoder
from firmware_bridge.firepoint import FirePointEvent, ReadingReceived, SerialLost, SerialRestored

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # how often the thread looks at its stop flag
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
READ_CHUNK = 256

Opener = Callable[[], Any]  # returns an open pyserial port (serial.SerialBase)


class SerialReader:
    def __init__(
        self,
        url: str,
        baudrate: int,
        post: Callable[[FirePointEvent], None],
        *,
        opener: Opener | None = None,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
    ) -> None:
        self.url = url
        self._post = post
        self._open = opener or (
            lambda: serial.serial_for_url(url, baudrate=baudrate, timeout=READ_TIMEOUT_S)
        )
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._decoder = FrameDecoder(source=f"serial {url}")
        self._lock = threading.Lock()  # the decoder's counters are read from other threads
        self._stop = threading.Event()
        self._port: Any = None
        self._thread: threading.Thread | None = None
        self._lost = False
        self._counts = {"serial_link_lost": 0, "serial_open_failed": 0, "serial_internal_error": 0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"serial {self.url}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = self._decoder.counters()
            out.update({k: n for k, n in self._counts.items() if n})
        return out

    # --- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        backoff_s = self._retry_min_s
        while not self._stop.is_set():
            try:
                if self._connect() and self._read_until_lost():
                    backoff_s = self._retry_min_s  # it worked for a while: retry soon
            except Exception:  # a bug here must not end the thread: count, log, retry
                with self._lock:
                    self._counts["serial_internal_error"] += 1
                log.exception("serial %s: reader failed", self.url)
                self._close_port()
                self._link_lost("reader failed")
            self._stop.wait(backoff_s)
            backoff_s = min(backoff_s * 2, self._retry_max_s)

    def _connect(self) -> bool:
        try:
            port = self._open()
        except (serial.SerialException, OSError, ValueError) as exc:
            with self._lock:
                self._counts["serial_open_failed"] += 1
            if not self._lost:
                log.warning("serial %s: cannot open: %s", self.url, exc)
            self._link_lost(f"cannot open {self.url}: {exc}")
            return False
        self._port = port
        return True

    def _read_until_lost(self) -> bool:
        """Read until the link fails or stop(); True if any bytes arrived meanwhile."""
        port = self._port
        received = False
        try:
            while not self._stop.is_set():
                data = port.read(1)
                if not data:
                    continue
                if not received:
                    received = True
                    self._link_restored()
                waiting = port.in_waiting
                if waiting:
                    data += port.read(min(waiting, READ_CHUNK))
                with self._lock:
                    readings = self._decoder.feed(data)
                for reading in readings:
                    self._post(ReadingReceived(reading))
        except (serial.SerialException, OSError) as exc:
            if not self._stop.is_set():
                log.warning("serial %s: link lost: %s", self.url, exc)
                self._link_lost(f"read failed: {exc}")
        finally:
            self._close_port()
        return received

    def _link_restored(self) -> None:
        if self._lost:
            self._lost = False
            log.info("serial %s: link restored", self.url)
            self._post(SerialRestored())

    def _link_lost(self, detail: str) -> None:
        if self._lost or self._stop.is_set():
            return
        self._lost = True
        with self._lock:
            self._counts["serial_link_lost"] += 1
        self._post(SerialLost(detail))

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                log.debug("serial %s: close failed: %s", self.url, exc)
