"""Running ffmpeg, ffprobe and espeak-ng: argument lists only, never a shell, always a timeout."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from audio_library.errors import ToolError

DEFAULT_TIMEOUT_S = 600.0


def run_tool(
    argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; ToolError when it is missing or times out (the caller reads returncode)."""
    binary = shutil.which(argv[0])
    if binary is None:
        raise ToolError(f"{argv[0]} is not installed (run `make setup`)")
    try:
        return subprocess.run(
            [binary, *argv[1:]],
            input=stdin,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ToolError(f"{argv[0]} took longer than {timeout_s:.0f} s") from None
