"""The gong played before and after spoken announcements, generated here (no borrowed sound)."""

from __future__ import annotations

from pathlib import Path

from audio_library.errors import AudioError
from audio_library.tools import run_tool

# Two bell-like tones (a falling major third), each a decaying sum of partials.
_TONE = "0.5*sin(2*PI*{f}*t)+0.2*sin(2*PI*{f2}*t)+0.1*sin(2*PI*{f3}*t)"
_NOTE = "if(between(t,{t0},{t0}+1.6),({tone})*exp(-3*(t-{t0})),0)"


def _note(freq_hz: float, start_s: float) -> str:
    tone = _TONE.format(f=freq_hz, f2=freq_hz * 2.01, f3=freq_hz * 3.02)
    return _NOTE.format(t0=start_s, tone=tone)


def make_gong_wav(path: Path, sample_rate_hz: int = 44_100) -> Path:
    """Write a 2.4 s two-tone chime as a mono WAV."""
    expr = f"0.95*({_note(659.25, 0.0)}+{_note(523.25, 0.7)})"
    proc = run_tool(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc='{expr}':s={sample_rate_hz}:d=2.4",
            "-ac",
            "1",
            "-y",
            str(path),
        ],
        timeout_s=60,
    )
    if proc.returncode != 0:
        raise AudioError(f"could not make the gong: {proc.stderr.decode(errors='replace')[-300:]}")
    return path
