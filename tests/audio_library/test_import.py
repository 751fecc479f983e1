"""Import: refuse what is not a usable announcement, normalise the rest to one format."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audio_library import (
    TARGET_LUFS,
    AudioError,
    AudioStore,
    ImportLimits,
    measure_loudness,
)
from tests.audio_library.conftest import make_audio, stored_files


def stream_info(path: Path) -> dict[str, str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", str(path)],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    return json.loads(out)["streams"][0]


@pytest.mark.parametrize(
    ("name", "amplitude", "codec_args"),
    [
        ("quiet.wav", 0.015, ()),
        ("loud.wav", 0.95, ()),
        ("phone.m4a", 0.1, ("-c:a", "aac", "-b:a", "64k")),
        ("voice.ogg", 0.3, ("-c:a", "libopus", "-b:a", "24k")),
        ("radio.mp3", 0.5, ("-c:a", "libmp3lame", "-b:a", "128k")),
    ],
)
def test_every_input_lands_at_the_target_loudness_in_the_delivery_format(
    tmp_path: Path, audio_dir: Path, name: str, amplitude: float, codec_args: tuple[str, ...]
) -> None:
    src = make_audio(audio_dir / name, amplitude=amplitude, codec_args=codec_args)
    store = AudioStore(tmp_path / "store")
    meta = store.import_file(src, name)
    out = store.path_for(meta.sha256)
    assert abs(measure_loudness(out) - TARGET_LUFS) <= 1.0
    assert abs(meta.loudness_lufs - TARGET_LUFS) <= 1.0
    info = stream_info(out)
    assert (info["codec_name"], info["channels"], info["sample_rate"]) == ("mp3", 1, "44100")
    assert 60_000 <= int(info["bit_rate"]) <= 68_000
    assert (meta.mime, meta.format, meta.original_name) == ("audio/mpeg", "mp3", name)
    assert out.name == f"{meta.sha256}.mp3" and out.parent.name == meta.sha256[:2]


def test_leading_silence_is_trimmed(tmp_path: Path, audio_dir: Path) -> None:
    src = make_audio(audio_dir / "late-start.wav", amplitude=0.3, seconds=2.0, lead_silence_s=1.5)
    meta = AudioStore(tmp_path / "store").import_file(src, "late-start.wav")
    assert 1800 <= meta.duration_ms <= 2300


def test_gong_before_and_after(tmp_path: Path, audio_dir: Path) -> None:
    src = make_audio(audio_dir / "gong-me.wav", amplitude=0.3, seconds=2.0)
    store = AudioStore(tmp_path / "store")
    plain = store.import_file(src, "a.wav")
    gonged = store.import_file(src, "a.wav", gong=True)
    assert gonged.sha256 != plain.sha256
    assert gonged.duration_ms - plain.duration_ms == pytest.approx(4800, abs=200)


def test_the_same_content_is_stored_once(tmp_path: Path, audio_dir: Path) -> None:
    src = make_audio(audio_dir / "twice.wav", amplitude=0.3)
    store = AudioStore(tmp_path / "store")
    first = store.import_file(src, "a.wav")
    second = store.import_file(src, "b.wav")
    assert first.sha256 == second.sha256
    assert len(stored_files(tmp_path / "store")) == 1


def _png(path: Path) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=32x32",
            "-frames:v",
            "1",
            "-y",
            str(path),
        ],
        check=True,
        timeout=30,
    )
    return path


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("empty", "empty"),
        ("text", "not_audio"),
        ("png", "not_audio"),
        ("random", "not_audio"),
        ("truncated", "not_audio"),
        ("silent", "silent"),
        ("too_short", "too_short"),
        ("too_long", "too_long"),
        ("too_large", "too_large"),
    ],
)
def test_refusals_name_the_reason_and_leave_nothing(
    tmp_path: Path, audio_dir: Path, case: str, code: str
) -> None:
    limits = ImportLimits()
    src = tmp_path / f"{case}.mp3"
    if case == "empty":
        src.write_bytes(b"")
    elif case == "text":
        src.write_text("Thông báo: đây là văn bản, không phải âm thanh.\n" * 40, encoding="utf-8")
    elif case == "png":
        src = _png(tmp_path / "image.png")
    elif case == "random":
        src.write_bytes(bytes(range(256)) * 64)
    elif case == "truncated":
        good = make_audio(
            audio_dir / "to-truncate.mp3", amplitude=0.3, codec_args=("-c:a", "libmp3lame")
        )
        src.write_bytes(good.read_bytes()[:300])
    elif case == "silent":
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=44100:cl=mono:d=3",
                "-y",
                str(src),
            ],
            check=True,
            timeout=30,
        )
    elif case == "too_short":
        src = make_audio(tmp_path / "blip.wav", amplitude=0.3, seconds=0.15)
    elif case == "too_long":
        src = make_audio(tmp_path / "long.wav", amplitude=0.3, seconds=3)
        limits = ImportLimits(max_duration_ms=2000)
    elif case == "too_large":
        src = make_audio(tmp_path / "large.wav", amplitude=0.3, seconds=1)
        limits = ImportLimits(max_size_bytes=1000)
    root = tmp_path / "store"
    with pytest.raises(AudioError) as err:
        AudioStore(root).import_file(src, src.name, limits)
    assert err.value.code == code
    assert str(err.value)
    assert stored_files(root) == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(min_size=1, max_size=4000), cut=st.integers(0, 8000), flip=st.integers(0, 7999)
)
def test_fuzzed_files_import_or_raise_audio_error_and_leave_nothing(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, cut: int, flip: int
) -> None:
    base = tmp_path_factory.getbasetemp() / "fuzz-seed.mp3"
    if not base.exists():
        make_audio(base, amplitude=0.3, seconds=1, codec_args=("-c:a", "libmp3lame"))
    seed = bytearray(base.read_bytes())
    variants = [data, bytes(seed[: cut % len(seed)] + data[:100])]
    seed[flip % len(seed)] ^= 0xFF
    variants.append(bytes(seed))
    work = tmp_path_factory.mktemp("fuzz")
    for i, payload in enumerate(variants):
        src = work / f"in-{i}.mp3"
        src.write_bytes(payload)
        root = work / f"store-{i}"
        try:
            meta = AudioStore(root).import_file(src, src.name)
        except AudioError:
            assert stored_files(root) == []
        else:
            assert [p.name for p in stored_files(root)] == [f"{meta.sha256}.mp3"]
