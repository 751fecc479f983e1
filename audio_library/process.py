"""From any decodable audio to the one delivery format, loudness-normalised and trimmed.

Delivery format: MP3, mono, 44.1 kHz, CBR 64 kbit/s (speech through horn speakers needs no
more; 8 KB/s fits a weak 3G link; mpg123 on a Pi Zero decodes it with a few % CPU).
Loudness: EBU R128 two-pass with ffmpeg's loudnorm to -16 LUFS integrated, -1.5 dBTP.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from audio_library.errors import AudioError, NotAudioError, SilentError, TooShortError
from audio_library.tools import run_tool

TARGET_LUFS = -16.0
TARGET_TRUE_PEAK_DB = -1.5
TARGET_LRA = 11.0
SAMPLE_RATE_HZ = 44_100
CHANNELS = 1
BITRATE = "64k"
# Below this the input is treated as silent; leading/trailing audio quieter than
# SILENCE_DB for at least SILENCE_MIN_S is trimmed.
SILENT_BELOW_LUFS = -70.0
SILENCE_DB = -50
SILENCE_MIN_S = 0.25

# The delivery is mono, so the mono mix is what is measured and normalised, from the start:
# loudnorm works at 192 kHz inside, and one channel instead of two halves its cost.
TO_MONO = "aformat=channel_layouts=mono,"
_INTEGRATED = re.compile(rb"Integrated loudness:\s*I:\s*(-?[0-9.]+|-inf) LUFS")
_SILENCE_START = re.compile(rb"silence_start: (-?[0-9.]+)")
_SILENCE_END = re.compile(rb"silence_end: (-?[0-9.]+)")


@dataclass(frozen=True)
class Analysis:
    """Pass one: loudness as loudnorm measured it, and where the sound starts and ends."""

    input_i: float
    input_tp: float
    input_lra: float
    input_thresh: float
    target_offset: float
    start_s: float
    end_s: float | None  # None: keep to the end
    # Peaky input (speech synthesis, close microphones) cannot reach the target by a linear
    # gain without passing the true-peak ceiling: it is first raised and peak-limited.
    pre_gain_db: float | None = None


# Ceiling of the pre-limiter, a little under the true-peak target (inter-sample peaks).
LIMIT_DBFS = TARGET_TRUE_PEAK_DB - 1.0


def _precondition(pre_gain_db: float | None) -> str:
    if pre_gain_db is None:
        return ""
    limit = 10 ** (LIMIT_DBFS / 20)
    return (
        f"volume={pre_gain_db:.2f}dB,alimiter=limit={limit:.4f}:attack=1:release=60:level=disabled,"
    )


def _loudnorm_json(stderr: bytes) -> dict[str, str]:
    text = stderr.decode("utf-8", errors="replace")
    start = text.rfind("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        raise NotAudioError("no loudness could be measured: the file holds no decodable audio")
    try:
        data = json.loads(text[start : end + 1])
    except ValueError:
        raise NotAudioError("no loudness could be measured: the file is damaged") from None
    if not isinstance(data, dict):
        raise NotAudioError("no loudness could be measured")
    return {str(k): str(v) for k, v in data.items()}


def _num(value: str) -> float:
    """loudnorm prints '-inf' for silence."""
    try:
        return float(value)
    except ValueError:
        return float("-inf")


def _loudnorm(extra: str = "") -> str:
    return (
        f"loudnorm=I={TARGET_LUFS}:TP={TARGET_TRUE_PEAK_DB}:LRA={TARGET_LRA}{extra}"
        ":print_format=json"
    )


def _measure(src: Path, filters: str) -> tuple[dict[str, str], bytes]:
    """Decode once through `filters` and loudnorm's measuring pass."""
    proc = run_tool(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(src), "-vn",
         "-af", f"{TO_MONO}{filters}{_loudnorm()}", "-f", "null", "-"]
    )  # fmt: skip
    if proc.returncode != 0:
        raise NotAudioError("the file is not audio that can be decoded")
    return _loudnorm_json(proc.stderr), proc.stderr


def analyse(src: Path, duration_s: float) -> Analysis:
    """Measure loudness and find leading/trailing silence (one decode; two if peaky)."""
    m, stderr = _measure(src, f"silencedetect=n={SILENCE_DB}dB:d={SILENCE_MIN_S},")
    input_i = _num(m.get("input_i", "-inf"))
    if input_i < SILENT_BELOW_LUFS:
        raise SilentError("the recording is silent (nothing louder than background noise)")
    starts = [float(x) for x in _SILENCE_START.findall(stderr)]
    ends = [float(x) for x in _SILENCE_END.findall(stderr)]
    start_s = ends[0] if starts and starts[0] <= 0.01 and ends else 0.0
    # Trailing silence: one that never ended, or ended at the very end of the file.
    runs_to_end = bool(starts) and (
        len(starts) > len(ends) or (ends[-1] >= duration_s - 0.05 and starts[-1] > start_s)
    )
    end_s = starts[-1] if runs_to_end else None
    if end_s is not None and end_s - start_s < 0.1:
        raise SilentError("the recording holds no sound after trimming silence")
    pre_gain_db = None
    if _num(m.get("input_tp", "0")) + (TARGET_LUFS - input_i) > TARGET_TRUE_PEAK_DB:
        pre_gain_db = TARGET_LUFS - input_i
        m, _ = _measure(src, _precondition(pre_gain_db))
    return Analysis(
        input_i=_num(m.get("input_i", "-inf")),
        input_tp=_num(m.get("input_tp", "0")),
        input_lra=_num(m.get("input_lra", "0")),
        input_thresh=_num(m.get("input_thresh", "-70")),
        target_offset=_num(m.get("target_offset", "0")),
        start_s=start_s,
        end_s=end_s,
        pre_gain_db=pre_gain_db,
    )


def _filters(a: Analysis, gong_wav: Path | None) -> tuple[list[str], str]:
    trim = f"atrim=start={a.start_s:.3f}" + (f":end={a.end_s:.3f}" if a.end_s else "")
    norm = _loudnorm(
        f":measured_I={a.input_i:.2f}:measured_TP={a.input_tp:.2f}"
        f":measured_LRA={a.input_lra:.2f}:measured_thresh={a.input_thresh:.2f}"
        f":offset={a.target_offset:.2f}:linear=true"
    )
    pre = _precondition(a.pre_gain_db)
    speech = f"[0:a]{TO_MONO}{pre}{trim},asetpts=PTS-STARTPTS,{norm},aresample={SAMPLE_RATE_HZ}"
    if gong_wav is None:
        return [], f"{speech},aformat=channel_layouts=mono[out]"
    fmt = f"aresample={SAMPLE_RATE_HZ},aformat=sample_fmts=fltp:channel_layouts=mono"
    graph = f"{speech},{fmt}[s];[1:a]{fmt},asplit=2[g1][g2];[g1][s][g2]concat=n=3:v=0:a=1[out]"
    return ["-i", str(gong_wav)], graph


def render(src: Path, dest: Path, analysis: Analysis, gong_wav: Path | None = None) -> None:
    """Pass two: trim, normalise with the measured values, encode the delivery format."""
    extra_inputs, graph = _filters(analysis, gong_wav)
    proc = run_tool(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-v",
            "error",
            "-i",
            str(src),
            *extra_inputs,
            "-filter_complex",
            graph,
            "-map",
            "[out]",
            "-ac",
            str(CHANNELS),
            "-ar",
            str(SAMPLE_RATE_HZ),
            "-c:a",
            "libmp3lame",
            "-b:a",
            BITRATE,
            "-map_metadata",
            "-1",
            "-id3v2_version",
            "0",
            "-write_xing",
            "0",
            "-f",
            "mp3",
            "-y",
            str(dest),
        ]
    )
    if proc.returncode != 0 or not dest.exists() or dest.stat().st_size == 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise AudioError(f"the audio could not be converted: {detail[0]}", code="convert_failed")


def measure_loudness(path: Path) -> float:
    """Integrated loudness (LUFS) of a file, as EBU R128 measures it (ffmpeg's ebur128: the
    same measurement as loudnorm's, without its 192 kHz true-peak resampling)."""
    proc = run_tool(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(path),
         "-af", "ebur128=peak=none", "-f", "null", "-"]
    )  # fmt: skip
    found = _INTEGRATED.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise NotAudioError("the file is not audio that can be decoded")
    return _num(found[-1].decode())


def check_min_duration(duration_ms: int, min_ms: int) -> None:
    if duration_ms < min_ms:
        raise TooShortError(
            f"the recording lasts {duration_ms / 1000:.1f} s; at least {min_ms / 1000:.1f} s "
            "of sound is needed"
        )
