"""Audio: import + normalise of a 5-minute phone recording against a plain ffmpeg transcode
of the same file to the same delivery format; text-to-speech of a 300-character notice
against espeak-ng alone."""

from __future__ import annotations

import subprocess
import tempfile
from functools import partial
from pathlib import Path

from audio_library import AudioStore, ImportLimits, synthesize_speech
from audio_library.process import BITRATE, CHANNELS, SAMPLE_RATE_HZ
from bench.report import Comparison, Figure, Section, timed

NOTICE_300 = (
    "Ban chỉ huy phòng chống thiên tai xã thông báo: hồi 22h30 tối nay bão số 5 đổ bộ vào "
    "khu vực. Đề nghị bà con thôn Đông và thôn Tây chằng chống nhà cửa, không ra biển, di "
    "chuyển người già và trẻ em đến nhà văn hoá thôn. Mọi thông tin liên hệ trực ban ANTT "
    "xã, điện thoại 0912 345 678. Xin trân trọng thông báo."
)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, "-y"], check=True, timeout=600)


def five_minute_recording(work: Path) -> Path:
    """Speech (espeak-ng) over a little background noise, looped to 5 min, as a phone's AAC."""
    speech = synthesize_speech(NOTICE_300, work)
    out = work / "five-minutes.m4a"
    _ffmpeg(
        "-stream_loop", "-1", "-i", str(speech),
        "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.02:sample_rate=44100",
        "-filter_complex",
        "[0:a]aresample=44100,volume=0.5[s];[s][1:a]amix=inputs=2:duration=first",
        "-t", "300", "-ac", "2", "-c:a", "aac", "-b:a", "128k", str(out),
    )  # fmt: skip
    return out


def plain_transcode(src: Path, dest: Path) -> None:
    _ffmpeg("-i", str(src), "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE_HZ),
            "-c:a", "libmp3lame", "-b:a", BITRATE, "-f", "mp3", str(dest))  # fmt: skip


def espeak_alone(text: str, dest: Path) -> None:
    subprocess.run(["espeak-ng", "-v", "vi", "-w", str(dest), text], check=True, timeout=120)


def run(repeat: int) -> Section:
    section = Section(
        "Audio: import and text-to-speech",
        "An upload is probed, measured (EBU R128 pass one), trimmed, normalised and encoded "
        "(pass two), measured again and stored by sha256. The baseline is the least any "
        "converter must do: one ffmpeg transcode of the same file to the same MP3 "
        "(mono, 64 kbit/s). For speech, the subject is what staff get — normalised text, "
        "espeak-ng, then the whole import — and the baseline espeak-ng alone on the same text.",
    )
    importing = Comparison(
        "import + normalise, 5 min AAC",
        Figure("AudioStore.import_file", "s"),
        Figure("ffmpeg transcode to MP3 64k mono", "s"),
    )
    speaking = Comparison(
        f"TTS of a {len(NOTICE_300)}-character notice",
        Figure("synthesize_speech + import_file", "s"),
        Figure("espeak-ng alone", "s"),
    )
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        work = Path(tmp)
        src = five_minute_recording(work)
        for n in range(repeat):
            store = AudioStore(work / f"store-{n}")
            plain, raw, tts_dir = work / f"plain-{n}.mp3", work / f"raw-{n}.wav", work / f"t{n}"

            def speak_and_import(s: AudioStore = store, d: Path = tts_dir) -> None:
                s.import_file(synthesize_speech(NOTICE_300, d), "notice.txt")

            importing.baseline.add(timed(partial(plain_transcode, src, plain)))
            importing.subject.add(timed(partial(store.import_file, src, src.name, ImportLimits())))
            speaking.baseline.add(timed(partial(espeak_alone, NOTICE_300, raw)))
            speaking.subject.add(timed(speak_and_import))
    section.comparisons += [importing, speaking]
    section.notes.append(
        "The import reads the file three times (loudness analysis, render, verification), "
        "so about 3× the plain transcode is the expected floor for a two-pass normaliser."
    )
    return section
