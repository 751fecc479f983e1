"""The audio page: the library (search, preview) for everyone; upload, recording, typed text
and deletion for operators. The page works through the JSON API (console/api_audio.py)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_babel import gettext as _
from flask_login import current_user

from audio_library import ImportLimits
from audio_library.tts import MAX_TEXT_CHARS
from console.auth import require_role
from console.models import Role
from console.services import settings

bp = Blueprint("audio", __name__)
PAGE_SIZE = 20


def _messages(max_upload_mb: int, max_minutes: int) -> dict[str, str]:
    """What the page's script says, by error code or event, in the user's language.

    "%(name)s"-style fields are filled in by the script."""
    return {
        # Refusals, by the API's error code.
        "empty": _("The file is empty."),
        "too_large": _("The file is too large: at most %(mb)d MB.", mb=max_upload_mb),
        "not_audio": _(
            "This file is not audio that can be played. Choose a recording or "
            "an audio file (MP3, WAV, M4A, OGG, AMR…)."
        ),
        "too_short": _("The recording is too short. Record a little longer."),
        "too_long": _("The recording is too long: at most %(min)d minutes.", min=max_minutes),
        "silent": _("No sound was heard in this recording. Check the microphone and try again."),
        "convert_failed": _("The audio could not be processed. Try another file."),
        "tool_failed": _("The audio could not be processed. Try again in a moment."),
        "tts_failed": _("The text could not be spoken. Try again in a moment."),
        "text_empty": _("Type the text to speak."),
        "tts_nothing": _("The text has nothing that can be read aloud: type words."),
        "text_too_long": _("The text is too long: at most %(n)d characters.", n=MAX_TEXT_CHARS),
        "no_file": _("Choose a file first."),
        "not_found": _("This audio is no longer in the library."),
        "unauthorized": _("You are no longer logged in: reload the page and log in again."),
        "bad_request": _("The page is out of date: reload it and try again."),
        "forbidden": _("Your account may not do this."),
        "network": _("The connection was lost. Check the network and try again."),
        "unknown": _("Something went wrong: %(message)s"),
        "invalid_text": _("Type the text to speak (at most %(n)d characters).", n=MAX_TEXT_CHARS),
        "invalid_voice": _("Choose a voice."),
        "invalid_name": _("The name is too long: at most 200 characters."),
        # A file in use.
        "in_use": _(
            "“%(name)s” cannot be deleted: it is played by %(users)s. Give them other audio first."
        ),
        "used_schedule": _("the schedule “%(name)s”"),
        "used_preset": _("the emergency announcement “%(name)s”"),
        "and": _("and"),
        # Progress and results.
        "busy": _("Processing…"),
        "uploading": _("Uploading… %(pct)d%%"),
        "processing": _("Uploaded. Making it ready to broadcast (levelling the volume)…"),
        "added": _("“%(name)s” has been added to the library."),
        "deleted": _("“%(name)s” has been deleted."),
        "hidden": _(
            "“%(name)s” has been removed from the library. It stays playable in the "
            "broadcast history."
        ),
        # The list.
        "count": _("%(n)d files in the library"),
        "found": _("%(n)d found"),
        "none": _("No audio yet."),
        "none_found": _("No audio matches “%(q)s”."),
        "page": _("Page %(page)d of %(pages)d"),
        "loading_failed": _("The list could not be loaded: %(message)s"),
        "added_by": _("Added by %(user)s, %(when)s"),
        "added_at": _("Added %(when)s"),
        "duration": _("Duration"),
        "loudness": _("Loudness"),
        "original": _("original file"),
        "used_by": _("Used by:"),
        "unused": _("Not used by any schedule"),
        "paused": _("(off)"),
        "delete": _("Delete"),
        "confirm_delete": _("Delete “%(name)s”?"),
        "yes_delete": _("Yes, delete"),
        "cancel": _("Cancel"),
        "preview_of": _("Listen to “%(name)s”"),
        # Recording.
        "no_recorder": _(
            "This browser cannot record here. Recording needs a secure "
            "connection (an https:// address) and a current browser; you can "
            "still upload a recording made on the phone."
        ),
        "mic_denied": _(
            "The microphone could not be used. Allow it for this site in the "
            "browser, then try again."
        ),
        "recording": _("Recording…"),
        "recorded": _("Recorded. Listen to it, give it a name and save it."),
        "max_reached": _("The longest possible recording has been reached."),
        "chars": _("%(n)d of %(max)d characters"),
    }


@bp.get("/audio")
@require_role(Role.VIEWER)
def page() -> str:
    max_upload_mb = settings().max_upload_bytes // (1024 * 1024)
    max_minutes = ImportLimits().max_duration_ms // 60_000
    return render_template(
        "audio.html",
        can_edit=current_user.can(Role.OPERATOR),
        messages=_messages(max_upload_mb, max_minutes),
        page_size=PAGE_SIZE,
        max_text_chars=MAX_TEXT_CHARS,
        max_record_s=max_minutes * 60,
        max_upload_mb=max_upload_mb,
        max_upload_bytes=settings().max_upload_bytes,
    )
