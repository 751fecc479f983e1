"""Audio for devices: served with ETag and Range, only to authenticated devices."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, send_file

from audio_library import AudioStore
from console.auth import require_device
from console.services import settings

bp = Blueprint("media", __name__, url_prefix="/media")
_NAME = re.compile(r"^(?P<sha>[0-9a-f]{64})\.mp3$")


@bp.get("/<name>")
@require_device
def audio(name: str) -> Response:
    match = _NAME.match(name)
    if match is None:
        abort(404)
    return send_stored(match["sha"])


def send_stored(sha: str) -> Response:
    """A stored delivery file with ETag (304) and Range (206); 404 if it is not stored."""
    try:
        path = AudioStore(settings().media_dir).path_for(sha)
    except (FileNotFoundError, ValueError):
        abort(404)
    response = send_file(path, mimetype="audio/mpeg", conditional=True, etag=sha, max_age=86400)
    response.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return response
