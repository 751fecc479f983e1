"""Audio in, one verified announcement out: probe, refuse, normalise, store; Vietnamese TTS.

Imports nothing of the project, nor Flask, nor MQTT. Needs ffmpeg/ffprobe and espeak-ng.
"""

from audio_library.errors import (
    AudioError,
    EmptyFileError,
    NotAudioError,
    SilentError,
    TextError,
    TooLargeError,
    ToolError,
    TooLongError,
    TooShortError,
)
from audio_library.gong import make_gong_wav
from audio_library.process import TARGET_LUFS, measure_loudness
from audio_library.store import AudioMeta, AudioStore, ImportLimits
from audio_library.textnorm import normalise_vi, number_to_words
from audio_library.tts import Voice, synthesize_speech

__all__ = [
    "TARGET_LUFS",
    "AudioError",
    "AudioMeta",
    "AudioStore",
    "EmptyFileError",
    "ImportLimits",
    "NotAudioError",
    "SilentError",
    "TextError",
    "TooLargeError",
    "TooLongError",
    "TooShortError",
    "ToolError",
    "Voice",
    "make_gong_wav",
    "measure_loudness",
    "normalise_vi",
    "number_to_words",
    "synthesize_speech",
]
