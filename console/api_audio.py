"""The audio library through the API: search and paging, text spoken into the library,
deletion that never breaks a schedule, a preset or the broadcast history, and a preview.

Deleting audio that the broadcast history names hides it instead (`deleted_at`): history and
reports keep playing it, and its file is removed only once nothing names it any more.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from flask import Response, jsonify, request
from flask_login import current_user
from pydantic import ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audio_library import AudioError, AudioStore, Voice
from audio_library.tts import MAX_TEXT_CHARS
from console import audit
from console.api import ApiError, Body, audio_json, bp, parse_body, user_id
from console.auth import db, require_role
from console.library import speak_into_library
from console.media import send_stored
from console.models import AudioFile, Broadcast, Preset, Role, Schedule, User, utcnow
from console.services import settings

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 100
MAX_PAGE = 500
NAME_FROM_TEXT_CHARS = 60
VOICES = {"north": Voice.NORTH, "central": Voice.CENTRAL, "south": Voice.SOUTH}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SpeakBody(Body):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, str_max_length=MAX_TEXT_CHARS
    )

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    voice: Literal["north", "central", "south"] = "north"
    name: Annotated[str, Field(max_length=200)] = ""


def fold(text: str) -> str:
    """Lower case without Vietnamese diacritics, so "thong bao" finds "Thông báo"."""
    text = text.replace("đ", "d").replace("Đ", "D")
    bare = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def name_from_text(text: str) -> str:
    """The first words of a typed announcement, as its name when staff gave none."""
    words = " ".join(text.split())
    if len(words) <= NAME_FROM_TEXT_CHARS:
        return words
    cut = words[:NAME_FROM_TEXT_CHARS].rsplit(" ", 1)[0] or words[:NAME_FROM_TEXT_CHARS]
    return cut + "…"


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    # isascii: "²" is a digit to isdigit(), not to int(); 18 digits: int() refuses > 4300.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18) or not low <= int(raw) <= high:
        raise ApiError(
            422, "invalid", f"{name} must be a whole number from {low} to {high}", field=name
        )
    return int(raw)


def usage(session: Session, shas: Iterable[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per file, the schedules (enabled or not) and the presets that play it."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {
        sha: {"schedules": [], "presets": []} for sha in shas
    }
    if not out:
        return out
    schedules = session.execute(
        select(Schedule.id, Schedule.name, Schedule.enabled, Schedule.audio_sha256)
        .where(Schedule.audio_sha256.in_(list(out)))
        .order_by(Schedule.name, Schedule.id)
    )
    for schedule_id, name, enabled, sha in schedules:
        out[sha]["schedules"].append({"id": schedule_id, "name": name, "enabled": enabled})
    presets = session.execute(
        select(Preset.key, Preset.title, Preset.audio_sha256)
        .where(Preset.audio_sha256.in_(list(out)))
        .order_by(Preset.key)
    )
    for key, title, sha in presets:
        out[sha]["presets"].append({"key": key, "title": title})
    return out


def library_json(session: Session, files: list[AudioFile]) -> list[dict[str, Any]]:
    """Files as the library shows them: who added each and what plays it."""
    uses = usage(session, [a.sha256 for a in files])
    user_ids = {a.created_by for a in files if a.created_by is not None}
    names: dict[int, str] = {}
    if user_ids:
        rows = session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
        names = {uid: username for uid, username in rows}
    return [
        audio_json(a)
        | {
            "created_by_name": names.get(a.created_by) if a.created_by else None,
            "used_by": uses[a.sha256],
        }
        for a in files
    ]


def _in_library(session: Session, sha256: str) -> AudioFile:
    audio = session.get(AudioFile, sha256) if _SHA256.match(sha256) else None
    if audio is None or audio.deleted_at is not None:
        raise ApiError(404, "not_found", f"no audio {sha256[:64]!r} in the library")
    return audio


def _quoted(name: str) -> str:
    return f"“{name}”"


# --- routes ------------------------------------------------------------------------------


@bp.get("/audio")
@require_role(Role.VIEWER)
def list_audio() -> Response:
    """The library, newest first: `q` matches words of the name or original file name
    (case and accents ignored); `limit`/`offset` page it; X-Total-Count is the match count."""
    query = request.args.get("q", "")
    if len(query) > MAX_QUERY_CHARS:
        raise ApiError(422, "invalid", f"q: at most {MAX_QUERY_CHARS} characters", field="q")
    limit = _int_arg("limit", None, 1, MAX_PAGE)
    offset = _int_arg("offset", 0, 0, 10**9) or 0
    words = fold(query).split()
    newest_first = (AudioFile.created_at.desc(), AudioFile.sha256)
    with db().session() as session:
        in_library = AudioFile.deleted_at.is_(None)
        if words:
            # Accent folding is done here, not in SQL: portable, and a commune's library is
            # small (thousands of rows at most); only the three columns are read.
            rows = session.execute(
                select(AudioFile.sha256, AudioFile.name, AudioFile.original_name)
                .where(in_library)
                .order_by(*newest_first)
            )
            found = [sha for sha, name, original in rows if _matches(words, name, original)]
            total = len(found)
            page = found[offset : None if limit is None else offset + limit]
            by_sha = {
                a.sha256: a
                for a in session.scalars(select(AudioFile).where(AudioFile.sha256.in_(page)))
            }
            files = [by_sha[sha] for sha in page]
        else:
            total = session.scalar(select(func.count()).where(in_library)) or 0
            stmt = select(AudioFile).where(in_library).order_by(*newest_first).offset(offset)
            files = list(session.scalars(stmt if limit is None else stmt.limit(limit)))
        response = jsonify(library_json(session, files))
    response.headers["X-Total-Count"] = str(total)
    return response


def _matches(words: list[str], name: str, original: str) -> bool:
    haystack = fold(f"{name} {original}")
    return all(word in haystack for word in words)


@bp.post("/audio/tts")
@require_role(Role.OPERATOR)
def speak_text() -> tuple[Response, int]:
    """Typed Vietnamese spoken by espeak-ng into the library (a few seconds, in the request)."""
    body = parse_body(SpeakBody)
    name = body.name or name_from_text(body.text)
    try:
        audio, created = speak_into_library(
            db(), settings(), body.text, name, VOICES[body.voice], user_id()
        )
    except AudioError as exc:
        raise ApiError(422, exc.code, str(exc), field="text") from None
    with db().session() as session:
        stored = session.get(AudioFile, audio.sha256)
        assert stored is not None
        audit.record_here(
            session, "audio_spoken", stored.sha256, name=stored.name, voice=body.voice,
            chars=len(body.text), created=created,
        )  # fmt: skip
        out = library_json(session, [stored])[0]
    return jsonify(out), 201 if created else 200


@bp.delete("/audio/<sha256>")
@require_role(Role.OPERATOR)
def delete_audio(sha256: str) -> Response:
    """Refused (409 in_use) while an enabled schedule or a preset plays the file; hidden but
    kept while the history or a disabled schedule names it; otherwise removed with its file."""
    with db().write_session() as session:
        audio = _in_library(session, sha256)
        uses = usage(session, [sha256])[sha256]
        schedules = [s for s in uses["schedules"] if s["enabled"]]
        presets = uses["presets"]
        if schedules or presets:
            users = [f"schedule {_quoted(s['name'])}" for s in schedules] + [
                f"preset {_quoted(p['title'])}" for p in presets
            ]
            raise ApiError(
                409,
                "in_use",
                f"{_quoted(audio.name)} is played by {', '.join(users)}: give them other audio "
                "before deleting it",
                schedules=[{"id": s["id"], "name": s["name"]} for s in schedules],
                presets=presets,
            )
        played = session.scalar(
            select(func.count()).where(Broadcast.audio_sha256 == sha256)
        ) or 0  # fmt: skip
        kept = bool(played or uses["schedules"])
        audit.record_here(
            session, "audio_deleted", sha256, name=audio.name, kept_for_history=kept,
            broadcasts=played,
        )  # fmt: skip
        if kept:
            audio.deleted_at = utcnow()
        else:
            session.delete(audio)
    if not kept:
        AudioStore(settings().media_dir).delete(sha256)
    log.info(
        "audio %s %s by %s", sha256, "hidden" if kept else "deleted", current_user.username
    )  # fmt: skip
    return jsonify({"sha256": sha256, "kept_for_history": kept})


@bp.get("/audio/<sha256>/file")
@require_role(Role.VIEWER)
def audio_file(sha256: str) -> Response:
    """The stored file for staff to listen to (with ETag and Range, as devices get it).

    Files hidden from the library still play here: the history links to them."""
    with db().session() as session:
        if not _SHA256.match(sha256) or session.get(AudioFile, sha256) is None:
            raise ApiError(404, "not_found", f"no audio {sha256[:64]!r}")
    return send_stored(sha256)
