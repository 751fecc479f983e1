"""Audio for devices over HTTP: only with a device's own credentials, with ETag (a bridge
that has the file is answered 304) and Range (a broken download resumes)."""

from __future__ import annotations

import io
import subprocess
import tomllib
from pathlib import Path

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.console.conftest import token_for


def fetch(client: FlaskClient, url: str, **kwargs: object) -> TestResponse:
    """GET, read the body, and close the file the response streamed from."""
    resp = client.get(url, **kwargs)  # type: ignore[arg-type]
    resp.get_data()
    resp.close()
    return resp


def test_a_device_downloads_audio_with_etag_and_range(client: FlaskClient, tmp_path: Path) -> None:
    admin = token_for(client, "admin")
    zone = {"id": "xa-media", "name": "Xã Media", "kind": "commune"}
    assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    resp = client.post(
        "/api/v1/devices",
        json={"id": "loa-media1", "name": "Loa", "profile": "speaker-node", "zone_id": "xa-media"},
        headers=admin,
    )
    assert resp.status_code == 201, resp.get_json()
    mqtt = tomllib.loads(resp.get_json()["bridge_config"])["mqtt"]
    device = (mqtt["username"], mqtt["password"])

    wav = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=f=440:d=2", "-y",
         str(wav)],
        check=True, timeout=60,
    )  # fmt: skip
    resp = client.post(
        "/api/v1/audio",
        data={"file": (io.BytesIO(wav.read_bytes()), "tone.wav"), "name": "Tone"},
        headers=token_for(client, "operator"),
        content_type="multipart/form-data",
    )
    assert resp.status_code == 201, resp.get_json()
    sha, size = resp.get_json()["sha256"], resp.get_json()["size_bytes"]

    whole = fetch(client, f"/media/{sha}.mp3", auth=device)
    assert whole.status_code == 200 and len(whole.data) == size
    assert whole.headers["ETag"] == f'"{sha}"'
    assert whole.mimetype == "audio/mpeg"

    again = fetch(client, f"/media/{sha}.mp3", auth=device, headers={"If-None-Match": f'"{sha}"'})
    assert again.status_code == 304 and not again.data

    rest = fetch(client, f"/media/{sha}.mp3", auth=device, headers={"Range": "bytes=100-"})
    assert rest.status_code == 206
    assert rest.data == whole.data[100:]
    assert rest.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"

    assert fetch(client, f"/media/{'0' * 64}.mp3", auth=device).status_code == 404
    assert fetch(client, "/media/..%2Fconsole.sqlite3", auth=device).status_code == 404
    assert fetch(client, f"/media/{sha}.mp3", auth=(device[0], "wrong")).status_code == 401
