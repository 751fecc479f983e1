"""The console's audio library: files imported or spoken into the store, and their rows.

Used by the upload and text-to-speech routes, the emergency page (typed text) and the
presets; every path ends in `add_audio`, so a file is recorded once, by its sha256.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from audio_library import AudioMeta, AudioStore, ImportLimits, Voice, synthesize_speech
from console.db import Database
from console.models import AudioFile, utcnow
from console.settings import Settings


def add_audio(
    session: Session, meta: AudioMeta, name: str, created_by: int | None
) -> tuple[AudioFile, bool]:
    """The row for stored audio, added if new; (row, created)."""
    audio = session.get(AudioFile, meta.sha256)
    if audio is not None and audio.deleted_at is None:
        return audio, False
    if audio is not None:  # deleted from the library, kept for history: it comes back as new
        audio.deleted_at = None
        audio.name, audio.original_name = name[:200], meta.original_name[:255]
        audio.created_by, audio.created_at = created_by, utcnow()
        return audio, True
    audio = AudioFile(
        sha256=meta.sha256,
        name=name[:200],
        original_name=meta.original_name[:255],
        duration_ms=meta.duration_ms,
        size_bytes=meta.size_bytes,
        mime=meta.mime,
        loudness_lufs=meta.loudness_lufs,
        created_by=created_by,
    )
    session.add(audio)
    return audio, True


def import_upload(settings: Settings, src: Path, original_name: str) -> AudioMeta:
    """Probe, refuse or normalise an uploaded file into the store (raises AudioError)."""
    limits = ImportLimits(max_size_bytes=settings.max_upload_bytes)
    return AudioStore(settings.media_dir).import_file(src, original_name, limits)


def speak(settings: Settings, text: str, voice: Voice = Voice.NORTH) -> AudioMeta:
    """Vietnamese text spoken by espeak-ng, then processed like any upload (raises AudioError)."""
    with tempfile.TemporaryDirectory(dir=settings.instance_dir) as tmp:
        wav = synthesize_speech(text, Path(tmp), voice)
        return AudioStore(settings.media_dir).import_file(wav, "tts.wav")


def speak_into_library(
    db: Database, settings: Settings, text: str, name: str, voice: Voice, created_by: int | None
) -> tuple[AudioFile, bool]:
    """Speak `text` and record it in the library under `name`; (row, created)."""
    meta = speak(settings, text, voice)
    with db.session() as session:
        return add_audio(session, meta, name, created_by)
