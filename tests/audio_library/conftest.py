"""Audio made on the spot with ffmpeg: no binary fixtures in the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def make_audio(
    path: Path,
    *,
    amplitude: float,
    seconds: float = 2.0,
    lead_silence_s: float = 0.0,
    codec_args: tuple[str, ...] = (),
) -> Path:
    """Speech-like tone (amplitude-modulated), optionally after some silence."""
    tone = f"aevalsrc='{amplitude}*sin(2*PI*300*t)*(0.6+0.4*sin(2*PI*3*t))':s=48000:d={seconds}"
    args = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", tone]
    if lead_silence_s:
        args = [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"anullsrc=r=48000:cl=mono:d={lead_silence_s}",
            "-f",
            "lavfi",
            "-i",
            tone,
            "-filter_complex",
            "[0][1]concat=n=2:v=0:a=1",
        ]
    subprocess.run([*args, *codec_args, "-y", str(path)], check=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio-in")


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
