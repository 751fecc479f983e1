"""The programme page in a browser: schedule through the form and find it in the week, quiet
hours and conflicts refused in words (and "queue after"), play now with its delivery and STOP,
the commune's holidays and quiet hours, and a viewer's day list on a phone.

The console runs on the real clock in Asia/Ho_Chi_Minh; every time used is 07:00 or 08:00 on a
day after today, so the tests pass at any hour (quiet hours are 22:00–05:00).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Page, expect
from sqlalchemy import select

from console.db import Database
from console.models import AudioFile, AuditEntry
from tests.conftest import wait_for
from tests.console.browser.conftest import PHONE, login
from tests.console.conftest import token_for

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NEWS, SHORT = "d" * 64, "e" * 64
ZONES = [
    {"id": "xa-hoa", "name": "Xã Hoà", "kind": "commune"},
    {"id": "thon-dong", "name": "Thôn Đông", "kind": "hamlet", "parent_id": "xa-hoa"},
    {"id": "thon-tay", "name": "Thôn Tây", "kind": "hamlet", "parent_id": "xa-hoa"},
]
WEEKDAYS_VI = ["Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật"]


def today() -> date:
    return datetime.now(HCM).date()


@pytest.fixture
def commune(app: Flask, db: Database, client: FlaskClient) -> dict[str, str]:
    """Zones of one commune and two recordings; returns an operator's API headers."""
    with db.session() as session:
        for sha, name, seconds in ((NEWS, "Bản tin sáng", 120), (SHORT, "Nhắc phòng cháy", 30)):
            session.add(
                AudioFile(
                    sha256=sha,
                    name=name,
                    original_name=f"{sha[:4]}.mp3",
                    duration_ms=seconds * 1000,
                    size_bytes=1000,
                    mime="audio/mpeg",
                )
            )
    admin = token_for(client, "admin")
    for zone in ZONES:
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    return token_for(client, "operator")


def api(client: FlaskClient, headers: dict[str, str], method: str, path: str, **kw: Any) -> Any:
    resp = client.open("/api/v1" + path, method=method, headers=headers, **kw)
    assert resp.status_code < 300, resp.get_json()
    return resp.get_json()


def open_new_schedule(page: Page, name: str) -> None:
    page.click("#new-schedule")
    expect(page.locator("#schedule-dialog")).to_be_visible()
    page.fill("#s-name", name)
    page.select_option("#s-audio", NEWS)


def test_an_operator_schedules_a_weekly_announcement_and_finds_it_in_the_week(
    page: Page, client: FlaskClient, commune: dict[str, str]
) -> None:
    target = today() + timedelta(days=2)
    weekday = target.weekday()
    login(page, "operator")
    page.goto("/programme")
    expect(page.locator("#week-label")).to_contain_text("Tuần")
    expect(page.locator("#week-prev")).to_be_disabled()  # nothing before this week to show

    open_new_schedule(page, "Tin an ninh <b>tuần</b>")
    page.uncheck("#s-zone-xa-hoa")  # the whole commune is chosen by default
    page.check("#s-zone-thon-dong")
    page.select_option("#s-kind", "weekly")
    for day in range(7):  # only the target's weekday
        page.set_checked(f"#s-wd-{day}", day == weekday)
    page.fill("#s-times input", "07:00")
    page.click("#s-time-add")
    page.fill("#s-times .time-row:nth-child(2) input", "08:00")
    page.fill("#s-exception-new", (target + timedelta(days=7)).isoformat())
    page.click("#s-exception-add")
    page.check("#s-level-priority")
    page.fill("#s-volume", "70")

    page.click("#s-preview-btn")
    first = f"{WEEKDAYS_VI[weekday]} {target:%d/%m/%Y} 07:00"
    expect(page.locator("#s-preview li").first).to_have_text(first)
    expect(page.locator("#s-preview li").nth(1)).to_have_text(
        f"{WEEKDAYS_VI[weekday]} {target:%d/%m/%Y} 08:00"
    )
    # The exception: the next firing after the target's is two weeks later.
    after = target + timedelta(days=14)
    expect(page.locator("#s-preview li").nth(2)).to_have_text(
        f"{WEEKDAYS_VI[weekday]} {after:%d/%m/%Y} 07:00"
    )

    page.click("#s-save")
    expect(page.locator("#schedule-dialog")).to_be_hidden()
    expect(page.locator("#page-status")).to_have_text("Đã lưu lịch “Tin an ninh <b>tuần</b>”.")

    [stored] = api(client, commune, "GET", "/schedules")
    assert stored["zone_ids"] == ["thon-dong"] and stored["bulletin_level"] == "priority"
    assert stored["rule"]["weekdays"] == [weekday] and stored["volume_pct"] == 70
    assert stored["rule"]["exceptions"] == [(target + timedelta(days=7)).isoformat()]

    # The list says it in words; the week shows it on its day, at both times.
    row = page.locator(f'#schedules li[data-schedule="{stored["id"]}"]')
    expect(row).to_contain_text(f"Hằng tuần vào {WEEKDAYS_VI[weekday]} lúc 07:00, 08:00")
    expect(row).to_contain_text("Ưu tiên")
    if today().weekday() + 2 > 6:
        page.click("#week-next")
    day = page.locator(f'.day[data-date="{target.isoformat()}"]')
    expect(day.locator(".firing")).to_have_count(2)
    expect(day.locator(".firing").first).to_contain_text("07:00")
    expect(day.locator(".firing").first).to_contain_text("Tin an ninh <b>tuần</b>")
    expect(day.locator(".firing").first).to_contain_text("Ưu tiên")
    assert page.locator(".firing b", has_text="tuần").count() == 0  # text, never markup

    # Choosing a sibling hamlet: nothing plays there that week; back to the hamlet, and
    # the item opens its schedule for editing.
    page.select_option("#zone", "thon-tay")
    expect(page.locator("#week .firing")).to_have_count(0)
    expect(page.locator("#week-empty")).to_be_visible()
    page.select_option("#zone", "thon-dong")
    if today().weekday() + 2 > 6:
        page.click("#week-next")
    page.locator(f'.day[data-date="{target.isoformat()}"] .firing').first.click()
    expect(page.locator("#schedule-title")).to_have_text("Sửa lịch phát")
    expect(page.locator("#s-name")).to_have_value("Tin an ninh <b>tuần</b>")
    expect(page.locator(f"#s-wd-{weekday}")).to_be_checked()
    page.click("#s-cancel")

    # Turned off, it leaves the week; deleting one that never played removes it.
    page.on("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Tắt").click()
    expect(page.locator("#schedules-status")).to_contain_text("Đã tắt lịch")
    expect(page.locator("#week .firing")).to_have_count(0)
    row.get_by_role("button", name="Xoá").click()
    expect(page.locator("#schedules-status")).to_have_text("Đã xoá lịch “Tin an ninh <b>tuần</b>”.")
    assert api(client, commune, "GET", "/schedules") == []


def test_quiet_hours_and_a_conflict_are_refused_in_words_then_saved_to_queue_after(
    page: Page, client: FlaskClient, commune: dict[str, str]
) -> None:
    tomorrow = today() + timedelta(days=1)
    other = api(
        client,
        commune,
        "POST",
        "/schedules",
        json={
            "name": "Tin sáng <i>xã</i>",
            "audio_sha256": SHORT,
            "rule": {"kind": "once", "at": f"{tomorrow.isoformat()}T07:00:00"},
            "zone_ids": ["thon-dong"],
        },
    )
    login(page, "operator")
    page.goto("/programme")
    open_new_schedule(page, "Thông báo họp dân")

    # What the form checks itself.
    page.fill("#s-name", "  ")
    page.click("#s-save")
    expect(page.locator("#s-error")).to_have_text("Hãy nhập tên lịch phát.")
    page.fill("#s-name", "Thông báo họp dân")
    page.select_option("#s-kind", "once")
    page.fill("#s-once-date", "")
    page.click("#s-save")
    expect(page.locator("#s-error")).to_have_text("Hãy chọn ngày.")

    # At night: refused by the API, explained with the commune's quiet hours.
    page.fill("#s-once-date", tomorrow.isoformat())
    page.fill("#s-once-time", "22:30")
    page.click("#s-save")
    expect(page.locator("#s-error")).to_contain_text("Giờ yên tĩnh 22:00–05:00")
    expect(page.locator("#s-error")).to_contain_text("lúc 22:30")
    page.click("#s-preview-btn")  # the preview warns the same way
    expect(page.locator("#s-preview .bad")).to_contain_text("Giờ yên tĩnh 22:00–05:00")

    # At 07:00 on the whole commune: it clashes with the hamlet's morning news.
    page.fill("#s-once-time", "07:00")
    page.click("#s-save")
    conflict = page.locator("#s-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text(
        f"trùng giờ với “Tin sáng <i>xã</i>” ({WEEKDAYS_VI[tomorrow.weekday()]} "
        f"{tomorrow:%d/%m/%Y} 07:00)"
    )
    assert len(api(client, commune, "GET", "/schedules")) == 1  # nothing saved yet
    page.click("#s-change")  # go back and change: the panel closes, the time has focus
    expect(conflict).to_be_hidden()
    expect(page.locator("#s-once-time")).to_be_focused()
    page.click("#s-save")
    page.click("#s-queue-save")  # "Vẫn lưu: phát sau “Tin sáng <i>xã</i>”"
    expect(page.locator("#schedule-dialog")).to_be_hidden()

    saved = [s for s in api(client, commune, "GET", "/schedules") if s["id"] != other["id"]]
    assert [(s["name"], s["on_conflict"], s["zone_ids"]) for s in saved] == [
        ("Thông báo họp dân", "queue_after", ["xa-hoa"])
    ]
    row = page.locator(f'#schedules li[data-schedule="{saved[0]["id"]}"]')
    expect(row).to_contain_text("Phát sau lịch trùng giờ")
    if today().weekday() == 6:
        page.click("#week-next")
    # The commune's week: its own item, and the hamlet's, which plays on part of its speakers.
    firings = page.locator(f'.day[data-date="{tomorrow.isoformat()}"] .firing')
    expect(firings).to_have_count(2)
    expect(firings.filter(has_text="Tin sáng <i>xã</i>")).to_contain_text(
        "Một phần loa của khu vực này (Thôn Đông)"
    )


def test_play_now_reaches_the_speakers_and_stop_is_sent(
    page: Page, client: FlaskClient, db: Database, commune: dict[str, str]
) -> None:
    admin = token_for(client, "admin")
    api(
        client, admin, "POST", "/devices",
        json={"id": "loa-prog-1", "name": "Loa chợ", "profile": "speaker-node",
              "zone_id": "thon-tay"},
    )  # fmt: skip
    login(page, "operator")
    page.goto("/programme?zone=thon-tay")
    page.click("#play-now")
    expect(page.locator("#play-dialog")).to_be_visible()
    page.click("#play-form button[type=submit]")
    expect(page.locator("#p-error")).to_have_text("Hãy chọn bản ghi.")
    page.select_option("#p-audio", SHORT)
    expect(page.locator("#p-zone-thon-tay")).to_be_checked()
    page.fill("#p-volume", "500")
    page.click("#play-form button[type=submit]")
    expect(page.locator("#p-error")).to_contain_text("từ 0 đến 100")
    page.fill("#p-volume", "60")
    page.click("#play-form button[type=submit]")
    expect(page.locator("#p-confirm-text")).to_have_text(
        "Phát ngay “Nhắc phòng cháy” tới: Thôn Tây?"
    )
    page.click("#p-go")

    expect(page.locator("#playing")).to_be_visible()
    expect(page.locator("#playing-title")).to_have_text("Đang phát ngay: “Nhắc phòng cháy”")
    expect(page.locator('#playing-counters [data-status="pending"]')).to_contain_text(
        "1Không phản hồi"
    )
    expect(page.locator("#playing-note")).to_have_text("1 loa cần phát thông báo này.")
    [sent] = api(client, commune, "GET", "/broadcasts")
    assert sent["priority"] == "live" and sent["zone_ids"] == ["thon-tay"]
    assert sent["summary"] == {"pending": 1}

    page.click("#stop")
    expect(page.locator("#playing-note")).to_contain_text("Đã gửi lệnh DỪNG lúc")

    def stop_audited() -> bool:
        with db.session() as session:
            rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "stop"))
            return any(r.detail.get("target_id") == sent["id"] for r in rows)

    wait_for(stop_audited, 10, "the STOP of this broadcast in the audit log")


def test_holidays_and_quiet_hours_of_the_commune(
    page: Page, client: FlaskClient, commune: dict[str, str]
) -> None:
    year = today().year + 1
    api(
        client,
        commune,
        "POST",
        "/schedules",
        json={
            "name": "Nhắc tối",
            "audio_sha256": SHORT,
            "rule": {"kind": "recurring", "frequency": "daily", "times": ["21:30"],
                     "start_date": today().isoformat()},
            "zone_ids": ["xa-hoa"],
        },
    )  # fmt: skip
    page.on("dialog", lambda d: d.accept())
    login(page, "admin")
    page.goto("/programme")
    expect(page.locator("#quiet-text")).to_have_text("Giờ yên tĩnh: 22:00–05:00 (mặc định)")

    page.fill("#h-name", "Tết <Nguyên đán>")
    page.fill("#h-start", f"{year}-02-16")
    page.fill("#h-end", f"{year}-02-18")
    page.click("#holiday-form button[type=submit]")
    expect(page.locator("#holiday-status")).to_have_text("Đã thêm ngày lễ “Tết <Nguyên đán>”.")
    tet = page.locator(f'#holidays li[data-start="{year}-02-16"]')
    expect(tet).to_contain_text(f"Tết <Nguyên đán>: 16/02/{year} – 18/02/{year}")

    page.fill("#h-name", "Trùng")
    page.fill("#h-start", f"{year}-02-17")
    page.click("#holiday-form button[type=submit]")
    expect(page.locator("#holiday-status")).to_have_text(
        f"Ngày 17/02/{year} đã là ngày lễ (“Tết <Nguyên đán>”)."
    )

    # Quiet hours from 21:00 would silence the 21:30 reminder: refused, naming it.
    page.fill("#q-start", "21:00")
    page.fill("#q-end", "05:00")
    page.click("#quiet-form button[type=submit]")
    expect(page.locator("#quiet-status")).to_contain_text("“Nhắc tối” (21:30)")
    page.fill("#q-start", "22:30")
    page.click("#quiet-form button[type=submit]")
    expect(page.locator("#quiet-status")).to_have_text("Giờ yên tĩnh đã đổi thành 22:30–05:00.")
    expect(page.locator("#quiet-text")).to_have_text("Giờ yên tĩnh: 22:30–05:00")

    tet.get_by_role("button", name="Bỏ ngày lễ Tết <Nguyên đán>").click()
    expect(page.locator("#holiday-status")).to_have_text("Đã bỏ ngày lễ “Tết <Nguyên đán>”.")
    assert api(client, commune, "GET", "/communes/xa-hoa/holidays") == []


def test_a_viewer_on_a_phone_reads_the_week_as_a_list_of_days(
    page: Page, client: FlaskClient, commune: dict[str, str]
) -> None:
    tomorrow = today() + timedelta(days=1)
    api(
        client,
        commune,
        "POST",
        "/schedules",
        json={
            "name": "Tin chiều",
            "audio_sha256": NEWS,
            "rule": {"kind": "once", "at": f"{tomorrow.isoformat()}T07:00:00"},
            "zone_ids": ["xa-hoa"],
        },
    )
    page.set_viewport_size(PHONE)
    login(page, "viewer")
    page.goto("/programme")
    if today().weekday() == 6:
        page.click("#week-next")
    item = page.locator(f'.day[data-date="{tomorrow.isoformat()}"] .firing')
    expect(item).to_contain_text("07:00")
    expect(item).to_contain_text("Tin chiều")
    assert item.evaluate("el => el.tagName") == "DIV"  # read only: not a button
    expect(page.locator("#new-schedule")).to_have_count(0)
    expect(page.locator("#schedules")).to_contain_text("Tin chiều")
    expect(page.locator("#schedules button")).to_have_count(0)
    assert page.evaluate("getComputedStyle(document.getElementById('week')).display") == "block"
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"
