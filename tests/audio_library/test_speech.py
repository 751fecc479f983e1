"""Vietnamese text normalisation and text-to-speech through espeak-ng."""

from __future__ import annotations

from pathlib import Path

import pytest

from audio_library import (
    TARGET_LUFS,
    AudioError,
    AudioStore,
    Voice,
    normalise_vi,
    number_to_words,
    synthesize_speech,
)


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "không"),
        (10, "mười"),
        (15, "mười lăm"),
        (21, "hai mươi mốt"),
        (24, "hai mươi tư"),
        (105, "một trăm linh năm"),
        (110, "một trăm mười"),
        (1000, "một nghìn"),
        (2026, "hai nghìn không trăm hai mươi sáu"),
        (1_500_000, "một triệu năm trăm nghìn"),
    ],
)
def test_numbers(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("22h30", "hai mươi hai giờ ba mươi phút"),
        ("lúc 7:30", "lúc bảy giờ ba mươi phút"),
        ("14h", "mười bốn giờ"),
        ("22/11/2026", "ngày hai mươi hai tháng mười một năm hai nghìn không trăm hai mươi sáu"),
        ("ngày 5/9", "ngày năm tháng chín"),
        ("giữ ANTT", "giữ an ninh trật tự"),
        ("công tác PCCC", "công tác phòng cháy chữa cháy"),
        ("UBND xã", "ủy ban nhân dân xã"),
        ("gọi 0912345678", "gọi không chín một hai ba bốn năm sáu bảy tám"),
        ("1.500.000 đồng", "một triệu năm trăm nghìn đồng"),
        ("tăng 2,5%", "tăng hai phẩy năm phần trăm"),
    ],
)
def test_notice_text_is_spoken_as_an_announcer_would(text: str, spoken: str) -> None:
    assert normalise_vi(text) == spoken


@pytest.mark.parametrize("voice", list(Voice))
def test_each_vietnamese_voice_speaks_and_imports(tmp_path: Path, voice: Voice) -> None:
    wav = synthesize_speech(
        "Xin chào bà con. Lúc 22h30 UBND xã thông báo về PCCC.", tmp_path, voice
    )
    meta = AudioStore(tmp_path / "store").import_file(wav, wav.name)
    assert meta.duration_ms > 2000
    assert abs(meta.loudness_lufs - TARGET_LUFS) <= 1.5  # peaky synthetic speech


@pytest.mark.parametrize(("text", "code"), [("   ", "text_empty"), ("a" * 5001, "text_too_long")])
def test_text_that_cannot_be_spoken(tmp_path: Path, text: str, code: str) -> None:
    with pytest.raises(AudioError) as err:
        synthesize_speech(text, tmp_path)
    assert err.value.code == code
    assert list(tmp_path.iterdir()) == []
