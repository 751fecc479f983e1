"""The duty officer's paths on a phone: sound an emergency (preset, until stopped) with one
confirmation, watch the speakers answer, press STOP and see it confirmed; then a fire-point
alarm appears on another page, a viewer sees it, an operator acknowledges it.

Devices are played by the test: it publishes their acknowledgements on the real broker (as a
bridge would) and the console worker's ingest stores them.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import Browser, Locator, Page, expect

from console.db import Database
from console.models import DeviceEvent, User
from console.worker import Worker
from device_profiles import protocol
from tests.conftest import wait_for
from tests.console.browser.conftest import PHONE, login
from tests.console.test_emergency import (  # noqa: F401  (commune and zone_commands: fixtures)
    COMMUNE,
    FIRE_POINT,
    add_event,
    commands_on,
    commune,
    zone_commands,
)
from tests.firmware_bridge.mqtt_tools import Listener


def ack(
    listener: Listener, device_id: str, command_id: str, status: str, reason: str | None = None
) -> None:
    """Publish an acknowledgement as the device would."""
    listener.publish(
        protocol.device_topic(device_id, protocol.Channel.ACK),
        protocol.Ack(
            id=protocol.new_message_id(),
            ts=int(time.time() * 1000),
            device_id=device_id,
            command_id=command_id,
            status=protocol.AckStatus(status),
            reason=reason,
        ),
    )


def counter(page: Page, name: str) -> Locator:
    return page.locator(f'[data-counter="{name}"] b')


def test_an_emergency_on_a_phone_until_stopped_then_a_fire_alarm_is_acknowledged(
    page: Page,
    browser: Browser,
    live_server: str,
    db: Database,
    commune: None,  # noqa: F811
    zone_commands: Listener,  # noqa: F811
    worker: Worker,
) -> None:
    page.set_viewport_size(PHONE)
    login(page, "operator")
    page.click(".emergency-entry")
    expect(page.locator("h1")).to_have_text("Khẩn cấp")

    # Step 1: the whole commune is chosen; its hamlets are shown included.
    expect(page.get_by_role("checkbox", name=re.compile("Xã Khẩn"))).to_be_checked()
    hamlet = page.get_by_role("checkbox", name=re.compile("Thôn A"))
    expect(hamlet).to_be_checked()
    expect(hamlet).to_be_disabled()

    # Nothing chosen to play: a clear message, no dialog.
    page.get_by_role("button", name="Phát khẩn cấp…").click()
    expect(page.locator("#em-error")).to_have_text("Hãy chọn một bản tin.")
    expect(page.locator("#em-confirm")).not_to_be_visible()

    # Step 2 and 3 with the keyboard-reachable controls, then the ONE confirmation.
    page.get_by_role("radio", name=re.compile("^Báo cháy")).check()
    page.get_by_role("radio", name="Đến khi bấm DỪNG").check()
    page.get_by_role("button", name="Phát khẩn cấp…").click()
    dialog = page.locator("#em-confirm")
    expect(dialog).to_be_visible()
    expect(page.locator("#em-confirm-text")).to_have_text(
        "Phát KHẨN CẤP “Báo cháy” tới toàn bộ Xã Khẩn (3 loa)?"
    )
    expect(page.locator("#em-confirm-detail")).to_contain_text("cho đến khi có người bấm DỪNG")
    expect(page.locator("#em-cancel")).to_be_focused()  # Enter on its own does not send it
    page.get_by_role("button", name="Phát ngay").click()

    # The live panel.
    expect(page.locator("#em-live-title")).to_have_text("Đang phát KHẨN CẤP: Báo cháy")
    command = wait_for(lambda: commands_on(zone_commands, COMMUNE), 10, "the emergency")[0]
    assert isinstance(command, protocol.PlayCommand)
    assert command.repeat == protocol.REPEAT_UNTIL_STOPPED and command.volume_pct == 100
    assert f"broadcast={command.id}" in page.url  # a reload keeps following it
    expect(counter(page, "silent")).to_have_text("3")

    ack(zone_commands, "loa-khan-a1", command.id, "received")
    ack(zone_commands, "loa-khan-a1", command.id, "started")
    ack(zone_commands, "loa-khan-a2", command.id, "failed", "<b>không tải được</b>")
    expect(counter(page, "playing")).to_have_text("1")
    expect(counter(page, "failed")).to_have_text("1")
    expect(counter(page, "silent")).to_have_text("1")
    failures = page.locator("#em-failures")
    expect(failures).to_contain_text("Loa A2 (Thôn A) — <b>không tải được</b>")  # as text
    expect(failures.locator("b")).to_have_count(0)  # no HTML from a device
    expect(page.locator("#em-live-summary")).to_contain_text(
        "3 loa: 1 đang phát, 1 lỗi, 1 không phản hồi."
    )
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width} px)"

    # STOP, acknowledged by the speaker that plays it.
    page.get_by_role("button", name="DỪNG", exact=True).click()
    expect(page.locator("#em-stop-status")).to_contain_text("Đã gửi lệnh DỪNG")
    stop = wait_for(
        lambda: [c for c in commands_on(zone_commands, COMMUNE) if c.type == "stop"], 10, "STOP"
    )[0]
    assert isinstance(stop, protocol.StopCommand) and stop.target_id == command.id
    ack(zone_commands, "loa-khan-a1", command.id, "stopped")
    expect(counter(page, "stopped")).to_have_text("1")
    expect(page.locator("#em-stop-status")).to_have_text("Đã dừng: không còn loa nào đang phát.")

    # A fire point raises an alarm while staff are on another page.
    page.goto("/")
    expect(page.locator("#alarm-banner")).to_be_hidden()
    event_id = add_event(db, "press-1")
    banner = page.locator("#alarm-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("BÁO CHÁY")
    expect(banner).to_contain_text("Có người nhấn nút báo cháy — Điểm chữa cháy A (Thôn A)")
    expect(banner).not_to_contain_text("null")
    assert banner.get_attribute("data-tone") in ("on", "blocked")  # blocked: until a click

    # A viewer sees it too, without the acknowledge button.
    viewer_context = browser.new_context(base_url=live_server, locale="vi-VN")
    try:
        viewer = viewer_context.new_page()
        login(viewer, "viewer")
        expect(viewer.locator("#alarm-banner")).to_contain_text("Điểm chữa cháy A")
        expect(viewer.get_by_role("button", name="Đã biết")).to_have_count(0)
        viewer.get_by_role("button", name="Tắt chuông trên máy này").click()
        expect(viewer.locator("#alarm-banner")).to_have_attribute("data-tone", "off")
    finally:
        viewer_context.close()

    # The operator acknowledges it: the banner and its tone go, on every screen.
    page.get_by_role("button", name="Đã biết").click()
    expect(banner).to_be_hidden()
    expect(banner).to_have_attribute("data-tone", "off")
    with db.session() as session:
        event = session.get(DeviceEvent, event_id)
        assert event is not None and event.acknowledged_at is not None
        who = session.get(User, event.acknowledged_by)
        assert who is not None and who.username == "operator"
    assert event.device_id == FIRE_POINT
