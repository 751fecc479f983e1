"""scripts/screenshots.py keeps working: its demo commune is built (broker, devices, states
through the ingest, audio, programme, history) and one page is photographed into a real PNG
of the expected size. One page only: the whole set is `make screenshots`."""

from __future__ import annotations

import struct
from pathlib import Path

from playwright.sync_api import Browser
from sqlalchemy import select

from console.models import Broadcast, Delivery, DeliveryStatus, Device, DeviceEvent
from scripts import screenshots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's header (its first chunk must be IHDR)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert data[-8:-4] == b"IEND", f"{path.name} is cut short"
    return width, height


def test_the_scene_is_built_and_a_page_is_photographed(browser: Browser, tmp_path: Path) -> None:
    scene = screenshots.build_scene(tmp_path / "scene", presets=False)
    try:
        with scene.db.session() as session:
            devices = list(session.scalars(select(Device)))
            assert len(devices) == len(screenshots.SPEAKERS) + len(screenshots.FIRE_POINTS)
            assert sum(d.online for d in devices) == len(devices) - 2  # one gone, one never came
            report = session.get(Broadcast, scene.report_id)
            assert report is not None
            statuses = list(
                session.scalars(select(Delivery.status).where(Delivery.broadcast_id == report.id))
            )
            assert statuses.count(DeliveryStatus.FINISHED) == len(screenshots.SPEAKERS) - 2
            alarm = session.scalars(
                select(DeviceEvent).where(DeviceEvent.signal_class == "alarm")
            ).one()
            assert alarm.acknowledged_at is None

        [shot] = [s for s in screenshots.SHOTS if s.name == "programme"]
        [path] = screenshots.take_screenshots(scene, tmp_path / "out", [shot], browser)
        assert path == tmp_path / "out" / "programme.png"
        assert png_size(path) == (shot.viewport["width"], shot.viewport["height"])
        assert path.stat().st_size > 20_000  # a page, not a blank image
    finally:
        scene.close()
    assert not scene.broker.running
