"""What a file is, according to ffprobe."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audio_library.errors import NotAudioError
from audio_library.tools import run_tool


@dataclass(frozen=True)
class ProbeResult:
    format_name: str
    codec: str
    duration_ms: int
    sample_rate_hz: int
    channels: int
    bit_rate_bps: int | None


def probe(path: Path) -> ProbeResult:
    """Describe the first audio stream; NotAudioError if there is none or it is unreadable."""
    proc = run_tool(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-select_streams",
            "a:0",
            str(path),
        ],
        timeout_s=60,
    )
    if proc.returncode != 0:
        raise NotAudioError("the file is not audio that can be decoded")
    try:
        info = json.loads(proc.stdout)
        stream = info["streams"][0]
        fmt = info.get("format", {})
    except (ValueError, KeyError, IndexError):
        raise NotAudioError("the file has no audio stream") from None
    duration_s = stream.get("duration") or fmt.get("duration")
    try:
        duration_ms = round(float(duration_s) * 1000) if duration_s is not None else 0
        sample_rate = int(stream.get("sample_rate") or 0)
        channels = int(stream.get("channels") or 0)
    except (TypeError, ValueError):
        raise NotAudioError("the audio stream's properties are unreadable") from None
    bit_rate = stream.get("bit_rate") or fmt.get("bit_rate")
    if sample_rate <= 0 or channels <= 0:
        raise NotAudioError("the file has no usable audio stream")
    return ProbeResult(
        format_name=str(fmt.get("format_name", "")),
        codec=str(stream.get("codec_name", "")),
        duration_ms=duration_ms,
        sample_rate_hz=sample_rate,
        channels=channels,
        bit_rate_bps=int(bit_rate) if str(bit_rate or "").isdigit() else None,
    )
