"""Emergency presets: ready announcements every speaker keeps cached, and the gong.

Generated at setup (Vietnamese speech, imported like any upload), replaceable by staff
through the API; the worker pushes them to every device in its retained config.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audio_library import AudioMeta, AudioStore, Voice, make_gong_wav, synthesize_speech
from console.db import Database
from console.device_config import bump_config_revision
from console.library import add_audio
from console.models import Preset

log = logging.getLogger(__name__)

GONG_KEY = "gong"  # the bridge plays the preset of this name before and after a gong command
MAX_GONG_MS = 10_000  # the gong sounds twice around every gong command: keep it short


@dataclass(frozen=True)
class PresetSpec:
    key: str
    title: str
    text: str | None  # what is spoken; None for the gong (synthesised, not spoken)


# Plain words, short sentences, the action first; numbers written as they are said.
PRESETS: tuple[PresetSpec, ...] = (
    PresetSpec(
        "fire",
        "Báo cháy",
        "Thông báo khẩn cấp: đang có cháy trên địa bàn. Đề nghị bà con ở gần đám cháy "
        "nhanh chóng ra nơi an toàn, ngắt điện, khóa bình ga, không quay lại lấy tài sản. "
        "Hãy gọi ngay số một một bốn và nhường đường cho xe chữa cháy.",
    ),
    PresetSpec(
        "storm",
        "Cảnh báo bão",
        "Thông báo khẩn cấp: bão đang đến gần, gió rất mạnh và mưa to. Đề nghị bà con "
        "chằng chống nhà cửa, đưa tàu thuyền vào nơi tránh trú an toàn, chuẩn bị lương thực, "
        "nước uống, đèn pin, và không ra ngoài khi có gió mạnh.",
    ),
    PresetSpec(
        "flood",
        "Cảnh báo lũ lụt",
        "Thông báo khẩn cấp: nước lũ đang lên nhanh. Đề nghị bà con ở vùng thấp trũng kê "
        "cao tài sản, đưa người già, trẻ em và gia súc lên nơi cao. Tuyệt đối không lội qua "
        "suối, qua ngầm, qua đường ngập nước chảy xiết.",
    ),
    PresetSpec(
        "evacuation",
        "Lệnh sơ tán",
        "Lệnh sơ tán khẩn cấp. Đề nghị bà con trong khu vực rời khỏi nhà ngay, mang theo "
        "giấy tờ tùy thân và thuốc men cần thiết, đến điểm sơ tán theo hướng dẫn của lực "
        "lượng chức năng. Hãy giúp đỡ người già, người khuyết tật và trẻ em. Chỉ trở về "
        "khi có thông báo an toàn.",
    ),
    PresetSpec(
        "all_clear",
        "Hết nguy hiểm",
        "Thông báo: tình huống khẩn cấp đã kết thúc, khu vực đã an toàn. Bà con có thể trở "
        "về nhà. Hãy kiểm tra điện, ga và nhà cửa trước khi sử dụng; thấy hư hỏng hoặc "
        "nguy hiểm, hãy báo ngay cho chính quyền địa phương. Cảm ơn bà con đã phối hợp.",
    ),
    PresetSpec(
        "security_alert",
        "Cảnh báo an ninh",
        "Thông báo khẩn về an ninh trật tự. Đề nghị bà con bình tĩnh, ở trong nhà, đóng "
        "cửa, không tụ tập và không đến gần nơi xảy ra vụ việc. Khi thấy người hoặc hiện "
        "tượng khả nghi, hãy báo ngay cho công an gần nhất hoặc gọi số một một ba.",
    ),
    PresetSpec(
        "lost_person",
        "Tìm người thất lạc",
        "Thông báo tìm người thất lạc. Đề nghị bà con để ý người già, trẻ em hoặc người có "
        "biểu hiện đi lạc, hoảng hốt trong khu vực. Nếu gặp, xin giữ người đó ở nơi an toàn "
        "và báo ngay cho chính quyền hoặc công an gần nhất. Xin cảm ơn bà con.",
    ),
    PresetSpec(
        "system_test",
        "Phát thử hệ thống",
        "Đây là bản tin phát thử của hệ thống loa an ninh. Bà con không cần làm gì. Xin "
        "nhắc lại: đây chỉ là bản tin phát thử. Xin cảm ơn bà con.",
    ),
    PresetSpec(GONG_KEY, "Chuông báo hiệu", None),
)
SPECS = {spec.key: spec for spec in PRESETS}


def missing_presets(session: Session) -> list[PresetSpec]:
    have = set(session.scalars(select(Preset.key)))
    return [spec for spec in PRESETS if spec.key not in have]


def make_preset_audio(spec: PresetSpec, store: AudioStore, work: Path, voice: Voice) -> AudioMeta:
    """Speak (or synthesise the gong) and import it like any upload: normalised, stored."""
    work.mkdir(parents=True, exist_ok=True)
    if spec.text is None:
        wav = make_gong_wav(work / f"{spec.key}.wav")
    else:
        wav = synthesize_speech(spec.text, work, voice)
    return store.import_file(wav, f"preset-{spec.key}.wav")


def _add(session: Session, spec: PresetSpec, meta: AudioMeta) -> None:
    add_audio(session, meta, spec.title, None)
    session.add(Preset(key=spec.key, title=spec.title, text=spec.text, audio_sha256=meta.sha256))


def ensure_presets(
    db: Database, media_dir: Path, *, voice: Voice = Voice.NORTH, jobs: int | None = None
) -> list[str]:
    """Generate every preset that is missing; the keys created (none on a second run).

    Presets replaced by staff are never touched. Generation runs `jobs` items at a time
    (default: one per CPU, at most 4); ffmpeg does the work in its own processes.
    """
    with db.session() as session:
        missing = missing_presets(session)
    if not missing:
        return []
    store = AudioStore(media_dir)
    workers = max(1, min(jobs or os.cpu_count() or 1, 4, len(missing)))
    with (
        tempfile.TemporaryDirectory(prefix="loa-presets-") as tmp,
        ThreadPoolExecutor(workers, thread_name_prefix="preset") as pool,
    ):
        work = Path(tmp)
        metas = list(
            pool.map(lambda spec: make_preset_audio(spec, store, work / spec.key, voice), missing)
        )
    return _store(db, missing, metas)


def _store(db: Database, specs: Sequence[PresetSpec], metas: Sequence[AudioMeta]) -> list[str]:
    created: list[str] = []
    with db.write_session() as session:
        for spec, meta in zip(specs, metas, strict=True):
            try:
                with session.begin_nested():
                    if session.get(Preset, spec.key) is not None:
                        continue  # made meanwhile (by staff or another process)
                    _add(session, spec, meta)
            except IntegrityError:
                log.info("preset %s was created meanwhile by another process", spec.key)
                continue
            created.append(spec.key)
        if created:
            bump_config_revision(session)  # the worker pushes them to every device
    log.info("presets generated: %s", ", ".join(created) or "none")
    return created
