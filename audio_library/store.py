"""Content-addressed store of delivery files: import (probe, refuse, process) and lookup."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from audio_library import process
from audio_library.errors import EmptyFileError, TooLargeError, TooLongError
from audio_library.gong import make_gong_wav
from audio_library.probe import probe

DELIVERY_EXT = "mp3"
DELIVERY_MIME = "audio/mpeg"


@dataclass(frozen=True)
class ImportLimits:
    max_size_bytes: int = 100 * 1024 * 1024
    max_duration_ms: int = 30 * 60 * 1000
    min_duration_ms: int = 300


@dataclass(frozen=True)
class AudioMeta:
    """Facts about a stored delivery file, read back from the file itself."""

    sha256: str
    duration_ms: int
    size_bytes: int
    format: str
    mime: str
    original_name: str
    loudness_lufs: float
    sample_rate_hz: int
    channels: int


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AudioStore:
    """Files live at root/<sha[:2]>/<sha>.mp3; a failed import leaves nothing behind."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / f"{sha256}.{DELIVERY_EXT}"

    def path_for(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.is_file():
            raise FileNotFoundError(path)
        return path

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(sha256).unlink()

    def import_file(
        self,
        src: Path,
        original_name: str,
        limits: ImportLimits = ImportLimits(),
        *,
        gong: bool = False,
    ) -> AudioMeta:
        """Probe, refuse what is not a usable announcement, convert, store by content."""
        size = src.stat().st_size
        if size == 0:
            raise EmptyFileError("the file is empty")
        if size > limits.max_size_bytes:
            raise TooLargeError(
                f"the file is {size / 1e6:.1f} MB; "
                f"the limit is {limits.max_size_bytes / 1e6:.0f} MB"
            )
        info = probe(src)
        if info.duration_ms > limits.max_duration_ms:
            raise TooLongError(
                f"the recording lasts {info.duration_ms / 60000:.1f} min; "
                f"the limit is {limits.max_duration_ms / 60000:.0f} min"
            )
        process.check_min_duration(info.duration_ms, limits.min_duration_ms)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".import-") as tmp:
            work = Path(tmp)
            analysis = process.analyse(src, info.duration_ms / 1000)
            gong_wav = make_gong_wav(work / "gong.wav") if gong else None
            out = work / f"out.{DELIVERY_EXT}"
            process.render(src, out, analysis, gong_wav)
            result = probe(out)
            process.check_min_duration(result.duration_ms, limits.min_duration_ms)
            loudness = process.measure_loudness(out)
            sha = _sha256_of(out)
            dest = self._path(sha)
            if not dest.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                with out.open("rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(out, dest)  # atomic: the work dir is under root, same filesystem
                _fsync_dir(dest.parent)
            return AudioMeta(
                sha256=sha,
                duration_ms=result.duration_ms,
                size_bytes=dest.stat().st_size,
                format=DELIVERY_EXT,
                mime=DELIVERY_MIME,
                original_name=original_name,
                loudness_lufs=round(loudness, 2),
                sample_rate_hz=result.sample_rate_hz,
                channels=result.channels,
            )
