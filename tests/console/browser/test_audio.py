"""The audio page as staff use it: an operator uploads a file (progress to the end), records
from the microphone (Chromium's fake device beeps), types text to be spoken, searches, and
deletes (refused while a schedule plays the file); a viewer only lists and listens; a phone
screen never scrolls sideways."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask.testing import FlaskClient
from playwright.sync_api import Page, expect

from tests.console.browser.conftest import PHONE, login
from tests.console.conftest import token_for

# Processing runs ffmpeg (and espeak-ng) in the request: generous on a busy machine.
PROCESSING_MS = 60_000


def tone(tmp_path: Path) -> Path:
    wav = tmp_path / "chuong.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=2", "-y", str(wav)],
        check=True, timeout=60,
    )  # fmt: skip
    return wav


def names(page: Page) -> list[str]:
    return page.locator("#library li h3").all_text_contents()


def test_an_operator_uploads_records_and_searches(page: Page, tmp_path: Path) -> None:
    login(page, "operator")
    page.goto("/audio")
    expect(page.locator("#library-count")).to_have_text("Chưa có âm thanh nào.")

    # Upload: the progress bar runs to the end and the new file heads the list.
    page.set_input_files("#upload-file", tone(tmp_path))
    page.fill("#upload-name", "Chuông thử")
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_have_text(
        "Đã thêm “Chuông thử” vào thư viện.", timeout=PROCESSING_MS
    )
    expect(page.locator("#upload-progress")).to_be_visible()
    assert page.eval_on_selector("#upload-progress", "p => p.value") == 1
    expect(page.locator("#upload-button")).to_be_enabled()
    expect(page.locator("#library li h3")).to_have_text(["Chuông thử"])
    row = page.locator("#library li").first
    expect(row).to_contain_text("Thời lượng: 0:02")
    expect(row).to_contain_text("operator thêm lúc")
    expect(row).to_contain_text("Chưa dùng cho lịch phát nào")
    player = row.locator("audio")
    assert player.get_attribute("preload") == "none"
    assert player.get_attribute("src", timeout=1000).endswith("/file")  # type: ignore[union-attr]

    # A file that is not audio is refused in words, not in a code.
    bad = tmp_path / "ghi-chu.mp3"
    bad.write_text("đây không phải âm thanh")
    page.set_input_files("#upload-file", bad)
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_have_text(
        "Tệp này không phải âm thanh phát được. Hãy chọn một bản ghi âm hoặc tệp âm thanh "
        "(MP3, WAV, M4A, OGG, AMR…).",
        timeout=PROCESSING_MS,
    )
    expect(page.locator("#upload-progress")).to_be_hidden()

    # Record two seconds from the (fake) microphone, listen, then save.
    expect(page.locator("#record-stop")).to_be_hidden()
    expect(page.locator("#pager")).to_be_hidden()  # one page only
    page.click("#record-start")
    expect(page.locator("#record-stop")).to_be_focused()
    expect(page.locator("#record-timer")).to_have_text("0:02")
    page.click("#record-stop")
    expect(page.locator("#record-form")).to_be_visible()
    assert (page.get_attribute("#record-preview", "src") or "").startswith("blob:")
    page.fill("#record-name", "Ghi âm ở xã")
    page.click("#record-save")
    expect(page.locator("#record-status")).to_have_text(
        "Đã thêm “Ghi âm ở xã” vào thư viện.", timeout=PROCESSING_MS
    )
    expect(page.locator("#record-form")).to_be_hidden()
    expect(page.locator("#library li h3")).to_have_text(["Ghi âm ở xã", "Chuông thử"])

    # Search without accents; then clear it.
    page.fill("#search-q", "chuong")
    expect(page.locator("#library li h3")).to_have_text(["Chuông thử"])
    expect(page.locator("#library-count")).to_have_text("Tìm thấy 1 tệp")
    page.fill("#search-q", "khong co")
    expect(page.locator("#library-count")).to_have_text(
        "Không tìm thấy âm thanh nào khớp với “khong co”."
    )
    page.fill("#search-q", "")
    expect(page.locator("#library-count")).to_have_text("Thư viện có 2 tệp")


def test_typed_text_deletion_and_what_a_viewer_sees(
    page: Page, client: FlaskClient, tmp_path: Path
) -> None:
    login(page, "operator")
    page.set_viewport_size(PHONE)
    page.goto("/audio")

    # Typed text, with HTML in its name: spoken, listed, and shown as the characters typed.
    text = "Thông báo: họp thôn lúc 19h30 tối nay tại nhà văn hoá."
    page.fill("#tts-text", text)
    expect(page.locator("#tts-count")).to_have_text(f"{len(text)}/5000 ký tự")
    page.select_option("#tts-voice", "south")
    page.fill("#tts-name", "<b>Họp thôn</b>")
    page.click("#tts-button")
    expect(page.locator("#tts-status")).to_have_text(
        "Đã thêm “<b>Họp thôn</b>” vào thư viện.", timeout=PROCESSING_MS
    )
    expect(page.locator("#tts-button")).to_have_text("Tạo bản tin")
    expect(page.locator("#library li h3")).to_have_text(["<b>Họp thôn</b>"])
    expect(page.locator("#library h3 b")).to_have_count(0)
    # Empty text is refused on the page, before any request.
    page.click("#tts-button")
    expect(page.locator("#tts-status")).to_have_text("Hãy gõ nội dung cần đọc.")
    expect(page.locator("#tts-text")).to_be_focused()

    # A schedule plays it: deleting is refused, naming the schedule.
    operator = token_for(client, "operator")
    zone = {"id": "xa-loa", "name": "Xã Loa", "kind": "commune"}
    assert (
        client.post("/api/v1/zones", json=zone, headers=token_for(client, "admin")).status_code
        == 201
    )
    sha = client.get("/api/v1/audio", headers=operator).get_json()[0]["sha256"]
    start = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    schedule = {
        "name": "Tin tối thứ Sáu",
        "audio_sha256": sha,
        "zone_ids": ["xa-loa"],
        "rule": {
            "kind": "recurring",
            "frequency": "daily",
            "times": ["19:00"],
            "start_date": start,
        },
    }
    resp = client.post("/api/v1/schedules", json=schedule, headers=operator)
    assert resp.status_code == 201, resp.get_json()
    page.reload()
    row = page.locator("#library li").first
    expect(row).to_contain_text("Đang dùng cho: lịch phát “Tin tối thứ Sáu”")
    row.get_by_role("button", name="Xoá “<b>Họp thôn</b>”").click()
    expect(row.get_by_role("button", name="Huỷ")).to_be_focused()
    row.get_by_role("button", name="Đồng ý xoá").click()
    expect(row.locator(".status")).to_have_text(
        "Không xoá được “<b>Họp thôn</b>”: đang được dùng cho lịch phát “Tin tối thứ Sáu”. "
        "Hãy đổi sang âm thanh khác trước."
    )
    expect(page.locator("#library li")).to_have_count(1)

    # Without the schedule it goes, after the confirmation.
    assert (
        client.delete(f"/api/v1/schedules/{resp.get_json()['id']}", headers=operator).status_code
        == 204
    )
    page.reload()
    row = page.locator("#library li").first
    row.get_by_role("button", name="Xoá “<b>Họp thôn</b>”").click()
    row.get_by_role("button", name="Đồng ý xoá").click()
    expect(page.locator("#library-status")).to_have_text("Đã xoá “<b>Họp thôn</b>”.")
    expect(page.locator("#library li")).to_have_count(0)

    # Nothing on the page makes a phone scroll sideways.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the audio page scrolls sideways on a phone ({width} px)"

    # A viewer lists and listens, with no upload, recording, text or delete.
    wav = tone(tmp_path)
    with wav.open("rb") as fh:
        resp = client.post(
            "/api/v1/audio",
            data={"file": (fh, "chuong.wav"), "name": "Chuông"},
            headers=operator,
            content_type="multipart/form-data",
        )
    assert resp.status_code == 201, resp.get_json()
    page.context.clear_cookies()
    login(page, "viewer")
    page.goto("/audio")
    expect(page.locator("#library li h3")).to_have_text(["Chuông"])
    expect(page.locator("#library audio")).to_have_count(1)
    for hidden in ("#upload-form", "#record-start", "#tts-form", "#library li button"):
        expect(page.locator(hidden)).to_have_count(0)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the audio page scrolls sideways on a phone ({width} px)"
