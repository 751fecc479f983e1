"""The devices page and the live board in a browser: an administrator adds zones, registers
a device and downloads its config file; the board shows it offline, then online and playing
as soon as the device reports with that file (no reload); filters; the phone layout; the
edit and decommission dialogs; what a viewer may not do."""

from __future__ import annotations

import re
import time
import tomllib
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

from console.worker import Worker
from device_profiles import protocol as p
from tests.conftest import Broker
from tests.console.browser.conftest import PHONE, login


def add_zone(page: Page, kind: str, name: str, parent: str | None = None) -> None:
    page.select_option("#zone-kind", kind)
    if parent:
        page.select_option("#zone-parent", parent)
    page.fill("#zone-name", name)
    page.click("#zone-form button[type=submit]")
    expect(page.locator("#zone-ok")).to_contain_text(name)


def connect_as_device(broker: Broker, config: dict[str, object]) -> mqtt.Client:
    """The bridge's MQTT login, made from the downloaded file only."""
    mqtt_cfg = config["mqtt"]
    assert isinstance(mqtt_cfg, dict)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=str(config["device_id"]))
    client.username_pw_set(mqtt_cfg["username"], mqtt_cfg["password"])
    client.connect(broker.host, int(mqtt_cfg["port"]))
    client.loop_start()
    return client


def now_ms() -> int:
    return int(time.time() * 1000)


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways on a phone ({width} px)"


def test_register_download_then_watch_the_device_come_online_live(
    page: Page, worker: Worker, mqtt_broker: Broker, tmp_path: Path
) -> None:
    login(page, "admin")
    page.goto("/devices")
    page.click("#add-zone summary")
    add_zone(page, "commune", "Xã Hòa Bình")
    add_zone(page, "hamlet", "Thôn Đông", parent="xa-hoa-binh")
    add_zone(page, "hamlet", "Thôn Tây", parent="xa-hoa-binh")
    expect(page.locator("#zone-tree")).to_contain_text("Thôn Đông")

    # Register: the id is made from the Vietnamese name.
    page.fill("#dev-name", "Loa cổng chợ")
    expect(page.locator("#dev-id")).to_have_value("loa-cong-cho")
    page.select_option("#dev-profile", "speaker-node")
    page.select_option("#dev-zone", "thon-dong")
    page.click("#device-form button[type=submit]")
    panel = page.locator("#config-panel")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("chỉ hiện một lần")
    with page.expect_download() as download:
        page.click("#config-download")
    saved = tmp_path / "bridge.toml"
    download.value.save_as(saved)
    assert download.value.suggested_filename == "bridge-loa-cong-cho.toml"
    config = tomllib.loads(saved.read_text(encoding="utf-8"))
    assert config["device_id"] == "loa-cong-cho"
    assert config["zones"] == ["thon-dong", "xa-hoa-binh"]
    page.click("#config-close")
    expect(page.locator("#config-text")).to_have_text("")  # the secret left the page

    # A second device whose name is HTML: shown as text, never as markup.
    page.fill("#dev-name", "<img src=x onerror=alert(1)>")
    page.fill("#dev-id", "loa-html")
    page.select_option("#dev-zone", "thon-tay")
    page.click("#device-form button[type=submit]")
    page.click("#config-close")

    # The board: offline, never connected.
    page.goto("/")
    row = page.locator('tr[data-id="loa-cong-cho"]')
    expect(row).to_contain_text("Mất kết nối")
    expect(row).to_contain_text("Chưa kết nối lần nào")
    expect(page.locator('tr[data-id="loa-html"]')).to_contain_text("<img src=x onerror=alert(1)>")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#count-offline")).to_have_text("2")
    page.evaluate("window.notReloaded = true")

    # The device reports with the downloaded file, as its bridge would.
    device = connect_as_device(mqtt_broker, config)
    try:
        online = p.Availability(id=p.new_message_id(), ts=now_ms(), device_id="loa-cong-cho",
                                state="online")  # fmt: skip
        device.publish(p.device_topic("loa-cong-cho", p.Channel.AVAILABILITY), p.encode(online),
                       qos=1, retain=True).wait_for_publish(5)  # fmt: skip
        state = p.DeviceState(
            id=p.new_message_id(), ts=now_ms(), device_id="loa-cong-cho", profile="speaker-node",
            software_version="1.0", volume_pct=65, amplifier_on=True,
            playing=p.Playing(command_id="b-thu", priority="emergency", started_at=now_ms()),
        )  # fmt: skip
        device.publish(p.device_topic("loa-cong-cho", p.Channel.STATE), p.encode(state),
                       qos=1, retain=True).wait_for_publish(5)  # fmt: skip
        expect(row).to_contain_text("Trực tuyến")
        expect(row).to_contain_text("65%")
        expect(row).to_contain_text("Khẩn cấp")
        expect(page.locator("#count-online")).to_have_text("1")
        expect(page.locator("#count-playing")).to_have_text("1")
        assert page.evaluate("window.notReloaded") is True  # updated in place

        # Filters: problem, zone, search; kept in the address.
        page.select_option("#f-problem", "offline")
        expect(page.locator("#board-rows tr")).to_have_count(1)
        expect(page.locator('tr[data-id="loa-html"]')).to_be_visible()
        page.select_option("#f-problem", "")
        page.select_option("#f-zone", "thon-dong")
        expect(page.locator("#board-rows tr")).to_have_count(1)
        expect(row).to_be_visible()
        assert "zone=thon-dong" in page.url
        page.select_option("#f-zone", "")
        page.fill("#f-q", "cổng")
        expect(page.locator("#board-rows tr")).to_have_count(1)
        page.fill("#f-q", "khong-co-dau")
        expect(page.locator("#board-rows")).to_contain_text("Không có thiết bị nào phù hợp")
        page.fill("#f-q", "")
        page.click("#counters button[data-problem=playing]")
        expect(page.locator("#board-rows tr")).to_have_count(1)
        expect(row).to_be_visible()
    finally:
        device.loop_stop()
        device.disconnect()

    # A phone: cards, no sideways scroll, on both pages.
    page.set_viewport_size(PHONE)
    page.goto("/")
    expect(row).to_contain_text("Trực tuyến")
    no_sideways_scroll(page)
    page.goto("/devices")
    expect(page.locator('tr[data-id="loa-cong-cho"]')).to_be_visible()
    no_sideways_scroll(page)


def test_edit_and_decommission_through_dialogs_and_a_viewer_only_reads(page: Page) -> None:
    login(page, "admin")
    page.goto("/devices")
    page.click("#add-zone summary")
    add_zone(page, "commune", "Xã An Phú")
    add_zone(page, "hamlet", "Khu phố 1", parent="xa-an-phu")
    page.fill("#dev-name", "Loa nhà văn hoá")
    page.select_option("#dev-zone", "khu-pho-1")
    page.click("#device-form button[type=submit]")
    page.click("#config-close")
    row = page.locator('tr[data-id="loa-nha-van-hoa"]')

    # Edit: a new name and zone, a bad latitude refused with the API's words.
    row.get_by_role("button", name=re.compile("^Sửa")).click()
    page.fill("#edit-name", "Loa nhà văn hoá mới")
    page.select_option("#edit-zone", "xa-an-phu")
    page.fill("#edit-lat", "95")
    page.click("#edit-save")
    expect(page.locator("#edit-error")).to_contain_text("latitude")
    page.fill("#edit-lat", "10,5")  # a Vietnamese decimal comma is understood
    page.fill("#edit-lon", "106.7")
    page.click("#edit-save")
    expect(page.locator("#edit-dialog")).not_to_be_visible()
    expect(row).to_contain_text("Loa nhà văn hoá mới")
    expect(row).to_contain_text("10.50000, 106.70000")

    # New secret: a fresh file is shown once.
    row.get_by_role("button", name=re.compile("^Cấp mã bí mật mới")).click()
    page.click("#confirm-yes")
    expect(page.locator("#config-panel")).to_be_visible()
    page.click("#config-close")

    # Decommission: cancel first, then confirm.
    row.get_by_role("button", name=re.compile("^Gỡ bỏ")).click()
    expect(page.locator("#confirm-text")).to_contain_text("Không thể hoàn tác")
    page.click("#confirm-no")
    expect(row).to_be_visible()
    row.get_by_role("button", name=re.compile("^Gỡ bỏ")).click()
    page.click("#confirm-yes")
    expect(page.locator("#dev-status")).to_contain_text("Đã gỡ bỏ")
    expect(row).to_have_count(0)

    # A viewer sees the tree, with no forms and no actions.
    page.click("text=Đăng xuất")
    login(page, "viewer")
    page.goto("/devices")
    expect(page.locator("#zone-tree")).to_contain_text("Khu phố 1")
    expect(page.locator("#device-form")).to_have_count(0)
    expect(page.locator("#zone-form")).to_have_count(0)
    expect(page.locator("table.devices button")).to_have_count(0)
