"""Vietnamese text-to-speech with espeak-ng; the WAV it makes is imported like any upload."""

from __future__ import annotations

import enum
import tempfile
import uuid
from pathlib import Path

from audio_library.errors import AudioError, TextError
from audio_library.textnorm import normalise_vi
from audio_library.tools import run_tool

MAX_TEXT_CHARS = 5000
WORDS_PER_MINUTE = 150  # espeak-ng's default 175 is hurried for street horns


class Voice(enum.StrEnum):
    NORTH = "vi"
    CENTRAL = "vi-vn-x-central"
    SOUTH = "vi-vn-x-south"


def synthesize_speech(
    text: str,
    out_dir: Path,
    voice: Voice = Voice.NORTH,
    *,
    words_per_minute: int = WORDS_PER_MINUTE,
) -> Path:
    """Speak `text` into a new WAV in out_dir; the text is normalised first."""
    stripped = text.strip()
    if not stripped:
        raise TextError("there is no text to speak", code="text_empty")
    if len(stripped) > MAX_TEXT_CHARS:
        raise TextError(
            f"the text has {len(stripped)} characters; the limit is {MAX_TEXT_CHARS}",
            code="text_too_long",
        )
    spoken = normalise_vi(stripped)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"tts-{uuid.uuid4().hex}.wav"
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as fh:
        fh.write(spoken)
        fh.flush()
        proc = run_tool(
            [
                "espeak-ng",
                "-v",
                Voice(voice).value,
                "-s",
                str(words_per_minute),
                "-f",
                fh.name,
                "-w",
                str(out),
            ],
            timeout_s=120,
        )
    if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
        out.unlink(missing_ok=True)
        raise AudioError(
            f"speech synthesis failed: {proc.stderr.decode(errors='replace').strip()[:300]}",
            code="tts_failed",
        )
    return out
