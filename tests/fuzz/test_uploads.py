"""Uploads (POST /api/v1/audio, multipart): files that are not audio, real audio cut short,
empty files, files over the limit, and file names that try to leave the media folder.
Every answer is JSON below 500; what is stored is named by its content only, inside the
media folder; nothing is left behind (no temporary file, no half-written audio)."""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select

from console.app import create_app
from console.db import Database
from console.models import AudioFile
from console.settings import Settings
from tests.console.conftest import token_for
from tests.fuzz.api_setup import tone
from tests.fuzz.tally import Tally, fuzz_settings
from tests.fuzz.test_api import judge

LIMIT_BYTES = 256 * 1024
STORED = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}\.mp3$")
NAMES = [
    "../../etc/passwd.mp3", "/etc/passwd.mp3", "..\\..\\boot.ini.wav", "a/../../b.mp3", "..",
    ".", "/", "", ".mp3", "x" * 5000 + ".mp3", "Thông báo họp thôn Đông.m4a", "<script>.mp3",
    "a\nb.wav", "CON.wav", "~/.ssh/id_rsa.wav", "%2e%2e%2fpasswd.mp3",
]  # fmt: skip


@pytest.fixture
def small_app(settings: Settings, db: Database) -> Iterator[Flask]:
    """The console with a small upload limit, so 'too large' costs little to send."""
    application = create_app(settings.model_copy(update={"max_upload_bytes": LIMIT_BYTES}), db)
    application.config["WTF_CSRF_ENABLED"] = True
    yield application
    from console import services

    services.close(application)


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, bytes]:
    wav = tone(tmp_path / "t.wav", 1.0).read_bytes()
    mp3 = tone(tmp_path / "t.mp3", 1.0, 660).read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("announcement.mp3", mp3)
    return {
        "wav": wav,
        "mp3": mp3,
        "text": "Thông báo: họp thôn lúc 19 giờ\n".encode() * 20,
        "html": b"<html><script>alert(1)</script></html>",
        "png": b"\x89PNG\r\n\x1a\n" + os.urandom(600),
        "zip": archive.getvalue(),
        "random": os.urandom(4096),
        "id3_only": b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * 200,
        "riff_header_only": wav[:44],
        "empty": b"",
    }


BOUNDARY = "fuzz-boundary-7d1"


def multipart(data: bytes, filename: str) -> bytes:
    """A one-file form body, built here: the test client spools big bodies to a temporary
    file it never closes (a ResourceWarning that is the client's, not the console's)."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def test_uploads_of_anything_under_any_name(
    tally: Tally, small_app: Flask, settings: Settings, db: Database, samples: dict[str, bytes]
) -> None:
    client: FlaskClient = small_app.test_client()
    operator = token_for(client, "operator")
    instance, media = settings.instance_dir, settings.media_dir
    before = {p for p in tree(instance) if not p.startswith("media")}

    @fuzz_settings(0.2)
    @given(kind=st.sampled_from(sorted(samples)), cut=st.floats(0, 1), name=st.one_of(
        st.sampled_from(NAMES), st.text(max_size=40)), field_name=st.sampled_from(["", "Tên <b>đậm</b>", "x" * 300]))  # fmt: skip
    @example(kind="wav", cut=0.37, name="../../etc/passwd.mp3", field_name="")
    @example(kind="mp3", cut=0.5, name="/var/lib/evil.mp3", field_name="")
    @example(kind="empty", cut=1.0, name="rỗng.wav", field_name="")
    def run(kind: str, cut: float, name: str, field_name: str) -> None:
        data = samples[kind]
        if kind in ("wav", "mp3"):
            data = data[: int(len(data) * cut)]  # truncated at any point
        form = {"file": (io.BytesIO(data), name.replace("\x00", ""))}
        if field_name:
            form["name"] = field_name  # type: ignore[assignment]
        with tally.case("upload: content and name") as case:
            resp = client.post("/api/v1/audio", data=form, headers=operator)
            judge(resp, case)
        for path in tree(media):
            assert (media / path).is_dir() or STORED.match(path), f"stray file in media: {path}"
        assert {p for p in tree(instance) if not p.startswith("media")} <= before | {
            "console.sqlite3-wal",
            "console.sqlite3-shm",
        }, "a temporary file was left in the instance folder"

    run()
    with db.session() as s:
        for audio in s.scalars(select(AudioFile)):
            assert "/" not in audio.original_name and "\x00" not in audio.original_name
            assert (media / audio.sha256[:2] / f"{audio.sha256}.mp3").is_file()


def test_an_upload_over_the_limit_is_refused_in_json_and_leaves_nothing(
    tally: Tally, small_app: Flask, settings: Settings, samples: dict[str, bytes]
) -> None:
    client = small_app.test_client()
    operator = token_for(client, "operator")
    media_before, instance_before = tree(settings.media_dir), tree(settings.instance_dir)
    for size in (LIMIT_BYTES + 1, 4 * LIMIT_BYTES):
        with tally.case("upload: over the limit") as case:
            resp = client.post("/api/v1/audio", data=multipart(b"\x00" * size, "big.wav"),
                               content_type=f"multipart/form-data; boundary={BOUNDARY}",
                               headers=operator)  # fmt: skip
            assert resp.status_code == 413, resp.status_code
            assert resp.get_json()["error"]["code"] == "too_large"
            case.refused()
    assert tree(settings.media_dir) == media_before
    assert tree(settings.instance_dir) - instance_before <= {
        "console.sqlite3-wal",
        "console.sqlite3-shm",
    }
    # A good upload still goes through afterwards.
    ok = client.post(
        "/api/v1/audio", data={"file": (io.BytesIO(samples["wav"]), "tốt.wav")}, headers=operator
    )
    assert ok.status_code in (200, 201), ok.get_json()


def test_multipart_without_a_file_or_with_many(tally: Tally, small_app: Flask) -> None:
    client = small_app.test_client()
    operator = token_for(client, "operator")
    for data in ({}, {"name": "chỉ có tên"}, {"file": (io.BytesIO(b"abc"), "")},
                 {"file": [(io.BytesIO(b"a"), "a.wav"), (io.BytesIO(b"b"), "b.wav")]}):  # fmt: skip
        with tally.case("upload: form shape") as case:
            judge(client.post("/api/v1/audio", data=data, headers=operator), case)
    with tally.case("upload: form shape") as case:
        judge(client.post("/api/v1/audio", data=b"--x\r\nbroken", headers=operator,
                          content_type="multipart/form-data; boundary=x"), case)  # fmt: skip
