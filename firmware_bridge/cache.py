"""Audio cache by sha256: download over HTTP, verify before use, write atomically, evict LRU."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from device_profiles import protocol
from firmware_bridge.ports import FetchDone

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class AudioCache:
    """Files are named by their sha256; a file in the cache was verified when it was written."""

    def __init__(
        self,
        directory: Path,
        budget_bytes: int,
        auth: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._session = requests.Session()
        if auth is not None:
            self._session.auth = auth
        # https downloads trust this CA (the console's own), else the system's. Given with each
        # request: a session's own `verify` loses to $REQUESTS_CA_BUNDLE.
        self._verify: str | bool = str(ca_file) if ca_file is not None else True
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="audio-fetch")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        for stale in self.directory.glob(".*.part"):
            stale.unlink(missing_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.mp3"

    def usage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("*.mp3"))

    def fetch(self, audio: protocol.AudioRef, on_done: FetchDone) -> None:
        self._pool.submit(self._fetch, audio, on_done)

    def _lock_for(self, sha256: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(sha256, threading.Lock())

    def _fetch(self, audio: protocol.AudioRef, on_done: FetchDone) -> None:
        try:
            with self._lock_for(audio.sha256):
                path = self.get(audio)
        except CacheError as exc:
            log.warning("audio %s: %s", audio.sha256[:12], exc)
            on_done(None, str(exc))
            return
        on_done(path, None)

    def get(self, audio: protocol.AudioRef) -> Path:
        """The verified local file, downloading it first if needed (blocking)."""
        path = self.path_of(audio.sha256)
        if path.is_file():
            os.utime(path)  # most recently used
            return path
        self._download(audio, path)
        self._evict(keep=path)
        return path

    def _download(self, audio: protocol.AudioRef, dest: Path) -> None:
        limit = audio.bytes if audio.bytes is not None else MAX_DOWNLOAD_BYTES
        part = self.directory / f".{audio.sha256}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with self._session.get(
                audio.url,
                stream=True,
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
                verify=self._verify,
            ) as resp:
                if resp.status_code != 200:
                    raise CacheError(f"download failed: HTTP {resp.status_code}")
                with part.open("wb") as fh:
                    for chunk in resp.iter_content(64 * 1024):
                        size += len(chunk)
                        if size > min(limit, MAX_DOWNLOAD_BYTES):
                            raise CacheError(f"download larger than the announced {limit} bytes")
                        digest.update(chunk)
                        fh.write(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            if digest.hexdigest() != audio.sha256:
                raise CacheError("sha256 mismatch: the downloaded audio is not the one named")
            os.replace(part, dest)
        except requests.RequestException as exc:
            raise CacheError(f"download failed: {type(exc).__name__}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()

    def _evict(self, keep: Path) -> None:
        files = sorted(self.directory.glob("*.mp3"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for victim in files:
            if total <= self.budget_bytes:
                break
            if victim == keep:
                continue
            total -= victim.stat().st_size
            victim.unlink(missing_ok=True)
            log.info("cache: evicted %s", victim.name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._session.close()


class CacheError(RuntimeError):
    """Audio that could not be made available (download failed, wrong hash, too large)."""
