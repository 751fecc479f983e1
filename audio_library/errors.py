"""Errors of the audio library; each has a stable `code` the console can translate."""

from __future__ import annotations


class AudioError(Exception):
    """Root of every audio library error; `code` is stable, the message is for people."""

    code = "bad_audio"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class EmptyFileError(AudioError, ValueError):
    code = "empty"


class TooLargeError(AudioError, ValueError):
    code = "too_large"


class NotAudioError(AudioError, ValueError):
    code = "not_audio"


class TooLongError(AudioError, ValueError):
    code = "too_long"


class TooShortError(AudioError, ValueError):
    code = "too_short"


class SilentError(AudioError, ValueError):
    code = "silent"


class TextError(AudioError, ValueError):
    """Text that cannot be spoken (empty or too long)."""

    code = "text_invalid"


class ToolError(AudioError, RuntimeError):
    """ffmpeg, ffprobe or espeak-ng is missing, failed or timed out."""

    code = "tool_failed"
