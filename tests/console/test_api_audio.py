"""The audio library through the API: text spoken by espeak-ng, search and paging, deletion
refused while a schedule or a preset plays the file (hidden, not removed, while the history
names it), the staff preview with Range, and who may do what."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from console.api_audio import fold, name_from_text
from console.db import Database
from console.models import AudioFile, AuditEntry, Broadcast, BroadcastStatus, Preset, User
from console.settings import Settings
from tests.console.conftest import PASSWORDS, token_for

ZONE = {"id": "xa-audio", "name": "Xã Âm Thanh", "kind": "commune"}


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Two short WAV tones (different content, so two library entries)."""
    out = []
    for freq in (440, 660):
        wav = tmp_path_factory.mktemp("tones") / f"tone{freq}.wav"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
             f"sine=frequency={freq}:duration=2", "-y", str(wav)],
            check=True, timeout=60,
        )  # fmt: skip
        out.append(wav.read_bytes())
    return out


def upload(client: FlaskClient, data: bytes, name: str, filename: str = "tone.wav") -> str:
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(data), filename), "name": name},
        headers=token_for(client, "operator"),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["sha256"])


def error(resp: TestResponse, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_json()
    return dict(resp.get_json()["error"])


def fetch(client: FlaskClient, url: str, **kwargs: Any) -> TestResponse:
    """GET, read the body, and close the file the response streamed from."""
    resp = client.get(url, **kwargs)
    resp.get_data()
    resp.close()
    return resp


def audit_actions(db: Database, action: str) -> list[AuditEntry]:
    with db.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def schedule_body(sha: str, name: str, enabled: bool = True) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    rule = {"kind": "recurring", "frequency": "daily", "times": ["08:00"], "start_date": start}
    return {
        "name": name,
        "audio_sha256": sha,
        "rule": rule,
        "zone_ids": [ZONE["id"]],
        "enabled": enabled,
    }


def add_zone(client: FlaskClient) -> None:
    resp = client.post("/api/v1/zones", json=ZONE, headers=token_for(client, "admin"))
    assert resp.status_code == 201, resp.get_json()


# --- text to speech ---------------------------------------------------------------------------


def test_typed_text_is_spoken_into_the_library(client: FlaskClient, db: Database) -> None:
    operator = token_for(client, "operator")
    body = {"text": "Thông báo: họp thôn lúc 19h30 tối nay.", "voice": "south", "name": "Họp thôn"}
    resp = client.post("/api/v1/audio/tts", json=body, headers=operator)
    assert resp.status_code == 201, resp.get_json()
    spoken = resp.get_json()
    assert spoken["name"] == "Họp thôn" and spoken["duration_ms"] > 1000
    assert spoken["created_by_name"] == "operator"
    assert spoken["used_by"] == {"schedules": [], "presets": []}
    with db.session() as session:
        row = session.get(AudioFile, spoken["sha256"])
        assert row is not None and row.duration_ms > 1000 and row.mime == "audio/mpeg"
        assert row.loudness_lufs is not None
        user = session.get(User, row.created_by)
        assert user is not None and user.username == "operator"
    [entry] = audit_actions(db, "audio_spoken")
    assert entry.target == spoken["sha256"] and entry.username == "operator"
    assert entry.detail["voice"] == "south" and entry.detail["created"] is True

    # The same words in the same voice are the same file: stored once, answered 200.
    again = client.post("/api/v1/audio/tts", json=body, headers=operator)
    assert again.status_code == 200 and again.get_json()["sha256"] == spoken["sha256"]

    # Without a name, the first words of the text name it.
    long_text = "Ủy ban nhân dân xã thông báo lịch tiêm phòng dại cho chó mèo " * 3
    resp = client.post("/api/v1/audio/tts", json={"text": long_text}, headers=operator)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["name"] == name_from_text(long_text)
    assert resp.get_json()["name"].startswith("Ủy ban nhân dân xã thông báo")
    assert resp.get_json()["name"].endswith("…") and len(resp.get_json()["name"]) <= 61


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": ""}, "text"),
        ({"text": "   \n "}, "text"),
        ({"text": "a" * 5001}, "text"),
        ({"text": "x" * 1_000_000}, "text"),
        ({"text": 42}, "text"),
        ({"text": ["Thông báo"]}, "text"),
        ({"voice": "north"}, "text"),
        ({"text": "Thông báo", "voice": "hanoi"}, "voice"),
        ({"text": "Thông báo", "voice": None}, "voice"),
        ({"text": "Thông báo", "name": "n" * 201}, "name"),
        ({"text": "Thông báo", "speed": 2}, "speed"),
    ],
)
def test_speech_refusals_name_the_field(
    client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    resp = client.post("/api/v1/audio/tts", json=body, headers=token_for(client, "operator"))
    err = error(resp, 422)
    assert err["code"] == "invalid" and err["field"] == field
    assert err["message"].startswith(f"{field}:")


def test_speech_that_is_not_json_is_refused_and_text_without_sound_too(
    client: FlaskClient,
) -> None:
    operator = token_for(client, "operator")
    resp = client.post("/api/v1/audio/tts", data="text=hello", headers=operator)
    assert error(resp, 400)["code"] == "bad_json"
    # Only punctuation: espeak-ng says nothing, the library refuses silence in plain words.
    resp = client.post("/api/v1/audio/tts", json={"text": "… … …"}, headers=operator)
    err = error(resp, 422)
    assert err["code"] in {"silent", "too_short", "tts_failed"} and err["field"] == "text"
    assert client.get("/api/v1/health").status_code == 200  # and the process carries on


# --- roles ------------------------------------------------------------------------------------


def test_a_viewer_may_list_and_listen_but_not_change_the_library(
    client: FlaskClient, tones: list[bytes]
) -> None:
    sha = upload(client, tones[0], "Chuông")
    viewer = token_for(client, "viewer")
    assert client.get("/api/v1/audio", headers=viewer).status_code == 200
    assert fetch(client, f"/api/v1/audio/{sha}/file", headers=viewer).status_code == 200
    tts = client.post("/api/v1/audio/tts", json={"text": "Thông báo"}, headers=viewer)
    assert error(tts, 403)["code"] == "forbidden"
    assert error(client.delete(f"/api/v1/audio/{sha}", headers=viewer), 403)["code"] == "forbidden"
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(tones[1]), "x.wav")},
        headers=viewer,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 403
    # Nobody logged in: 401 everywhere, the file included.
    assert fetch(client, f"/api/v1/audio/{sha}/file").status_code == 401
    assert client.get("/api/v1/audio").status_code == 401
    assert client.post("/api/v1/audio/tts", json={"text": "Thông báo"}).status_code == 401
    assert client.delete(f"/api/v1/audio/{sha}").status_code == 401


def test_the_page_shows_the_forms_to_operators_only(client: FlaskClient) -> None:
    for role, sees_forms in (("viewer", False), ("operator", True), ("admin", True)):
        login(client, role)
        page = client.get("/audio")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert 'id="library"' in html and 'id="search-q"' in html
        assert ('id="upload-form"' in html) is sees_forms
        assert ('id="tts-form"' in html) is sees_forms
        assert ('id="record-start"' in html) is sees_forms
        client.post("/logout", data={"csrf_token": csrf_of(html)})
    assert client.get("/audio").status_code in (302, 401)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match is not None
    return match[1]


def login(client: FlaskClient, role: str) -> str:
    """Log in through the form; the session's CSRF token."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token is not None
    resp = client.post(
        "/login",
        data={"username": role, "password": PASSWORDS[role], "csrf_token": token[1]},
    )
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return csrf_of(client.get("/").get_data(as_text=True))


# --- deletion ---------------------------------------------------------------------------------


def test_delete_is_refused_while_a_schedule_or_a_preset_plays_the_file(
    client: FlaskClient, db: Database, settings: Settings, tones: list[bytes]
) -> None:
    add_zone(client)
    operator = token_for(client, "operator")
    sha = upload(client, tones[0], "Bản tin sáng")
    other = upload(client, tones[1], "Bản tin khác")
    stored = settings.media_dir / sha[:2] / f"{sha}.mp3"
    assert stored.is_file()

    resp = client.post(
        "/api/v1/schedules", json=schedule_body(sha, "Tin sáng thứ Hai"), headers=operator
    )
    assert resp.status_code == 201, resp.get_json()
    schedule_id = resp.get_json()["id"]
    err = error(client.delete(f"/api/v1/audio/{sha}", headers=operator), 409)
    assert err["code"] == "in_use"
    assert "“Tin sáng thứ Hai”" in err["message"] and "Bản tin sáng" in err["message"]
    assert err["schedules"] == [{"id": schedule_id, "name": "Tin sáng thứ Hai"}]

    resp = client.put("/api/v1/presets/fire", json={"audio_sha256": sha}, headers=operator)
    assert resp.status_code == 200, resp.get_json()
    err = error(client.delete(f"/api/v1/audio/{sha}", headers=operator), 409)
    assert "“Tin sáng thứ Hai”" in err["message"] and "preset “Báo cháy”" in err["message"]
    assert err["presets"] == [{"key": "fire", "title": "Báo cháy"}]
    listed = client.get("/api/v1/audio", headers=operator).get_json()
    used = next(a for a in listed if a["sha256"] == sha)["used_by"]
    assert used == {
        "schedules": [{"id": schedule_id, "name": "Tin sáng thứ Hai", "enabled": True}],
        "presets": [{"key": "fire", "title": "Báo cháy"}],
    }

    # Still refused with only the preset left; nothing was changed by the refusals.
    assert client.delete(f"/api/v1/schedules/{schedule_id}", headers=operator).status_code == 204
    err = error(client.delete(f"/api/v1/audio/{sha}", headers=operator), 409)
    assert err["schedules"] == [] and "Tin sáng" not in err["message"]
    assert stored.is_file() and not audit_actions(db, "audio_deleted")

    # Free: never broadcast, nothing names it, so the row and the file go.
    resp = client.put("/api/v1/presets/fire", json={"audio_sha256": other}, headers=operator)
    assert resp.status_code == 200
    resp = client.delete(f"/api/v1/audio/{sha}", headers=operator)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"sha256": sha, "kept_for_history": False}
    assert not stored.exists()
    with db.session() as session:
        assert session.get(AudioFile, sha) is None
    [entry] = audit_actions(db, "audio_deleted")
    assert entry.target == sha and entry.detail["name"] == "Bản tin sáng"
    assert entry.detail["kept_for_history"] is False and entry.username == "operator"
    assert fetch(client, f"/api/v1/audio/{sha}/file", headers=operator).status_code == 404
    assert error(client.delete(f"/api/v1/audio/{sha}", headers=operator), 404)["code"] == (
        "not_found"
    )
    with db.session() as session:
        preset = session.get(Preset, "fire")
        assert preset is not None and preset.audio_sha256 == other


def test_audio_the_history_names_is_hidden_but_still_plays(
    client: FlaskClient, db: Database, settings: Settings, tones: list[bytes]
) -> None:
    add_zone(client)
    operator = token_for(client, "operator")
    played = upload(client, tones[0], "Đã phát")
    paused = upload(client, tones[1], "Lịch đang tắt")
    with db.session() as session:
        session.add(
            Broadcast(
                id="b-history-1",
                audio_sha256=played,
                priority="live",
                zone_ids=[ZONE["id"]],
                status=BroadcastStatus.SENT,
                fired_at=datetime.now(UTC),
            )
        )
    resp = client.post(
        "/api/v1/schedules", json=schedule_body(paused, "Tạm dừng", enabled=False), headers=operator
    )
    assert resp.status_code == 201, resp.get_json()

    for sha in (played, paused):  # a disabled schedule does not hold the file back
        resp = client.delete(f"/api/v1/audio/{sha}", headers=operator)
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["kept_for_history"] is True
        assert (settings.media_dir / sha[:2] / f"{sha}.mp3").is_file()
    listed = client.get("/api/v1/audio", headers=operator)
    assert listed.get_json() == [] and listed.headers["X-Total-Count"] == "0"
    # The history and its reports still find and play it.
    assert client.get(f"/api/v1/audio/{played}", headers=operator).get_json()["name"] == "Đã phát"
    whole = fetch(client, f"/api/v1/audio/{played}/file", headers=operator)
    assert whole.status_code == 200 and whole.data
    assert client.get("/api/v1/broadcasts/b-history-1", headers=operator).status_code == 200
    # Already gone from the library: a second delete is a 404.
    assert error(client.delete(f"/api/v1/audio/{played}", headers=operator), 404)["code"] == (
        "not_found"
    )

    # The same content uploaded again comes back as new, under its new name.
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(tones[0]), "again.wav"), "name": "Phát lại"},
        headers=operator,
        content_type="multipart/form-data",
    )
    assert resp.status_code == 201 and resp.get_json()["sha256"] == played
    listed = client.get("/api/v1/audio", headers=operator).get_json()
    assert [a["name"] for a in listed] == ["Phát lại"]


@pytest.mark.parametrize("sha", ["0" * 64, "not-a-hash", "A" * 64, "tts", "%3Cscript%3E"])
def test_deleting_or_playing_unknown_audio_is_a_404(client: FlaskClient, sha: str) -> None:
    operator = token_for(client, "operator")
    assert error(client.delete(f"/api/v1/audio/{sha}", headers=operator), 404)["code"] == (
        "not_found"
    )
    assert fetch(client, f"/api/v1/audio/{sha}/file", headers=operator).status_code == 404


def test_a_session_must_send_its_csrf_token_to_delete(
    client: FlaskClient, tones: list[bytes]
) -> None:
    sha = upload(client, tones[0], "Giữ lại")
    csrf = login(client, "operator")
    assert client.delete(f"/api/v1/audio/{sha}").status_code == 400
    resp = client.delete(f"/api/v1/audio/{sha}", headers={"X-CSRFToken": csrf})
    assert resp.status_code == 200, resp.get_json()


# --- search and paging ------------------------------------------------------------------------

NAMES = [  # oldest first
    ("Thông báo họp thôn", "hop-thon.mp3"),
    ("Lịch cắt điện", "cat_dien.m4a"),
    ("THÔNG BÁO tiêm phòng", "tiem.wav"),
    ("Đường Đông ngập nước", "duong.mp3"),
    ('<b>Loa</b> & "ký tự"', "x.amr"),
]


@pytest.fixture
def library(db: Database) -> list[str]:
    """Five rows (no files needed to search), a minute apart; a hidden sixth."""
    start = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    shas = []
    with db.session() as session:
        for i, (name, original) in enumerate([*NAMES, ("Thông báo đã xoá", "gone.mp3")]):
            sha = f"{i + 1:x}" * 64
            session.add(
                AudioFile(
                    sha256=sha,
                    name=name,
                    original_name=original,
                    duration_ms=65_000,
                    size_bytes=520_000,
                    mime="audio/mpeg",
                    loudness_lufs=-16.1,
                    created_at=start + timedelta(minutes=i),
                    deleted_at=start + timedelta(days=1) if i == len(NAMES) else None,
                )
            )
            shas.append(sha)
    return shas[: len(NAMES)]


def names(resp: TestResponse) -> list[str]:
    assert resp.status_code == 200, resp.get_json()
    return [a["name"] for a in resp.get_json()]


def test_search_ignores_case_and_vietnamese_accents(
    client: FlaskClient, library: list[str]
) -> None:
    viewer = token_for(client, "viewer")

    def search(q: str) -> list[str]:
        return names(client.get("/api/v1/audio", query_string={"q": q}, headers=viewer))

    everything = search("")
    assert everything == [n for n, _ in reversed(NAMES)]  # newest first, the hidden one left out
    assert search("thong bao") == ["THÔNG BÁO tiêm phòng", "Thông báo họp thôn"]
    assert search("Thông Báo") == search("THONG BAO") == search("  thong   bao ")
    assert search("tiem") == ["THÔNG BÁO tiêm phòng"]
    assert search("duong dong") == search("đường") == ["Đường Đông ngập nước"]
    assert search("bao hop") == ["Thông báo họp thôn"]  # every word, in any order
    assert search("cat_dien") == ["Lịch cắt điện"]  # the original file name too
    assert search("<b>") == ['<b>Loa</b> & "ký tự"']
    assert search("đã xoá") == []
    assert search("%") == search("_x") == []  # no SQL wildcards
    err = error(client.get("/api/v1/audio", query_string={"q": "a" * 101}, headers=viewer), 422)
    assert err["field"] == "q"


def test_the_library_pages_with_a_total(client: FlaskClient, library: list[str]) -> None:
    viewer = token_for(client, "viewer")

    def page(**query: Any) -> TestResponse:
        return client.get("/api/v1/audio", query_string=query, headers=viewer)

    first, second, last = page(limit=2), page(limit=2, offset=2), page(limit=2, offset=4)
    assert [first.headers["X-Total-Count"], last.headers["X-Total-Count"]] == ["5", "5"]
    assert names(first) + names(second) + names(last) == [n for n, _ in reversed(NAMES)]
    assert names(page(limit=2, offset=50)) == []
    found = page(q="thong bao", limit=1, offset=1)
    assert names(found) == ["Thông báo họp thôn"] and found.headers["X-Total-Count"] == "2"
    row = page(limit=1).get_json()[0]
    assert row["duration_ms"] == 65_000 and row["loudness_lufs"] == -16.1
    assert row["created_at"] == "2026-01-05T01:04:00Z" and row["created_by_name"] is None
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "abc"}, {"offset": -1}, {"limit": "1.5"}):
        field = next(iter(bad))
        assert error(page(**bad), 422)["field"] == field


def test_fold_makes_vietnamese_comparable() -> None:
    assert fold("Thông Báo ĐƯỜNG Đông  Ủy ban") == "thong bao duong dong uy ban"
    assert fold("Thông báo") == fold("Tho\u0302ng ba\u0301o")  # composed or not


# --- preview ----------------------------------------------------------------------------------


def test_staff_listen_with_etag_and_range(client: FlaskClient, tones: list[bytes]) -> None:
    sha = upload(client, tones[0], "Nghe thử")
    viewer = token_for(client, "viewer")
    url = f"/api/v1/audio/{sha}/file"
    whole = fetch(client, url, headers=viewer)
    assert whole.status_code == 200 and whole.mimetype == "audio/mpeg"
    assert whole.headers["ETag"] == f'"{sha}"' and whole.headers["Accept-Ranges"] == "bytes"
    size = len(whole.data)
    part = fetch(client, url, headers=viewer | {"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.data == whole.data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{size}"
    cached = fetch(client, url, headers=viewer | {"If-None-Match": f'"{sha}"'})
    assert cached.status_code == 304 and not cached.data
    # With the browser's session (what the page's players use), no token.
    login(client, "viewer")
    assert fetch(client, url, headers={"Range": "bytes=0-9"}).status_code == 206
