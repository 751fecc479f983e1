"""A whole path through accounts, history and the audit log, in a real browser.

An admin creates an operator; the operator logs in with the password shown once, finds a
broadcast sent earlier in the history, opens its per-device report on a phone and downloads
it as CSV; the audit log is refused to them; the admin then sees their login in it.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

from flask.testing import FlaskClient
from playwright.sync_api import Page, expect
from sqlalchemy import select

from console.db import Database
from console.models import Delivery, DeliveryStatus, utcnow
from tests.console.browser.conftest import PHONE, login
from tests.console.conftest import token_for

DEVICES = {"loa-hist-1": "Loa chợ", "loa-hist-2": "Loa đình", "loa-hist-3": "Loa trường"}


def tone_wav(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1.5",
         "-af", "volume=0.3", "-y", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def send_broadcast(client: FlaskClient, db: Database, tmp_path: Path) -> str:
    """Zones, three speakers and audio through the API, a live broadcast, then what each
    speaker reported (written as the ingest would): played, failed, no answer."""
    admin, operator = token_for(client, "admin"), token_for(client, "operator")
    for zone in ({"id": "xa-hist", "name": "Xã Lịch Sử", "kind": "commune"},
                 {"id": "thon-hist", "name": "Thôn Đông", "kind": "hamlet",
                  "parent_id": "xa-hist"}):  # fmt: skip
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    for device_id, name in DEVICES.items():
        body = {"id": device_id, "name": name, "profile": "speaker-node", "zone_id": "thon-hist"}
        resp = client.post("/api/v1/devices", json=body, headers=admin)
        assert resp.status_code == 201, resp.get_json()
    with tone_wav(tmp_path / "tin.wav").open("rb") as f:
        resp = client.post("/api/v1/audio", data={"file": (f, "tin.wav"), "name": "Tin phòng dịch"},
                           headers=operator)  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    sha = resp.get_json()["sha256"]
    resp = client.post("/api/v1/broadcasts", json={"audio_sha256": sha, "zone_ids": ["thon-hist"]},
                       headers=operator)  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    broadcast_id: str = resp.get_json()["id"]
    now = utcnow()
    with db.session() as s:
        rows = {d.device_id: d for d in s.scalars(
            select(Delivery).where(Delivery.broadcast_id == broadcast_id))}  # fmt: skip
        assert set(rows) == set(DEVICES)
        played = rows["loa-hist-1"]
        played.status, played.received_at, played.started_at, played.ended_at = (
            DeliveryStatus.FINISHED,
            now,
            now,
            now,
        )
        failed = rows["loa-hist-2"]
        failed.status, failed.reason = DeliveryStatus.FAILED, "amplifier <fault>"
    return broadcast_id


def test_a_new_operator_proves_a_broadcast_reached_people_and_the_admin_sees_it(
    page: Page, client: FlaskClient, db: Database, tmp_path: Path
) -> None:
    broadcast_id = send_broadcast(client, db, tmp_path)

    # The admin creates an operator; the password is shown once.
    login(page, "admin")
    page.click("nav.main-nav >> text=Người dùng")
    expect(page.locator("#users-body")).to_contain_text("operator")
    page.fill("#nu-username", "canbo-dong")
    page.select_option("#nu-role", "operator")
    page.click("#new-user button[type=submit]")
    expect(page.locator("#users-result")).to_contain_text("Đã tạo người dùng canbo-dong")
    password = page.locator("[data-testid=new-password]").inner_text()
    assert len(password) >= 10
    row = page.locator("#users-body tr", has_text="canbo-dong")
    expect(row).to_contain_text("Cán bộ vận hành")
    expect(row).to_contain_text("Đang hoạt động")
    page.click("header >> text=Đăng xuất")
    page.wait_for_url("**/login")

    # The operator, on a phone, finds the broadcast and its per-device outcomes.
    page.set_viewport_size(PHONE)
    login(page, "canbo-dong", password)
    expect(page.locator("nav.main-nav")).not_to_contain_text("Nhật ký thao tác")
    page.click("nav.main-nav >> text=Lịch sử phát")
    expect(page.locator("table.stack")).to_contain_text("Tin phòng dịch")
    expect(page.locator("table.stack")).to_contain_text("Phát một phần")
    expect(page.locator("table.stack")).to_contain_text("33%")
    page.select_option("#f-kind", "emergency")
    page.click("form.filters button[type=submit]")
    expect(page.locator("table.stack")).to_contain_text("Không có lượt phát nào phù hợp.")
    page.select_option("#f-kind", "live")
    page.select_option("#f-zone", "thon-hist")
    page.click("form.filters button[type=submit]")
    page.click(f"a[href='/history/{broadcast_id}']")
    report = page.locator("table.stack")
    expect(report.locator("tr", has_text="Loa chợ")).to_contain_text("Đã phát")
    expect(report.locator("tr", has_text="Loa đình")).to_contain_text("Lỗi")
    expect(report.locator("tr", has_text="Loa đình")).to_contain_text("amplifier <fault>")
    expect(report.locator("tr", has_text="Loa trường")).to_contain_text("Không phản hồi")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the report scrolls sideways on a phone ({width} px)"

    with page.expect_download() as info:
        page.click("text=Tải về CSV (Excel)")
    download = info.value
    assert download.suggested_filename == f"broadcast-{broadcast_id}.csv"
    raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    header, *rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert header[:2] == ["Thiết bị", "Tên thiết bị"]
    outcomes = {r[1]: (r[4], r[6]) for r in rows}
    assert outcomes == {"Loa chợ": ("Đã phát", ""), "Loa đình": ("Lỗi", "amplifier <fault>"),
                        "Loa trường": ("Không phản hồi", "")}  # fmt: skip

    refused = page.goto("/audit")
    assert refused is not None and refused.status == 403
    page.goto("/")
    page.click("header >> text=Đăng xuất")
    page.wait_for_url("**/login")

    # The admin sees who logged in, and who made the account.
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, "admin")
    page.click("nav.main-nav >> text=Nhật ký thao tác")
    page.fill("#f-user", "canbo-dong")
    page.click("form.filters button[type=submit]")
    entries = page.locator("table.stack tbody tr")
    expect(entries.first).to_contain_text("Đăng nhập")
    expect(entries.first).to_contain_text("canbo-dong")
    page.goto("/audit?action=user_created")
    expect(page.locator("table.stack")).to_contain_text("canbo-dong")
    expect(page.locator("table.stack")).to_contain_text("admin")
    page.goto("/audit?action=login")
    expect(page.locator("table.stack tbody tr", has_text="canbo-dong")).to_have_count(1)
    expect(page.locator("table.stack tbody tr", has_text="admin").first).to_be_visible()
