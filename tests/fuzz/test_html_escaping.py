"""HTML and script in every text staff or devices can store (zone, device, audio, schedule,
broadcast, holiday and user names, a device's reported state and events, the audit log)
appears escaped in the raw HTML of every page that shows it, and only as JSON (served as
application/json, never sniffed) in the API the pages' scripts read."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.db import Database
from console.ingest import Incoming, Ingest
from device_profiles import protocol as p
from tests.fuzz.api_setup import COMMUNE, DEVICE, HAMLET, Console, expect, set_up_console, tone
from tests.fuzz.tally import Tally
from tests.fuzz.test_queries import logged_in

VECTORS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'><svg/onload=alert(3)>",
    "</script><script>alert(4)</script>",
    '<a href="javascript:alert(5)">Thôn</a>',
    "{{7*7}}<b>đậm</b>",
]
# What must never appear raw in a page: the markup each vector would inject.
RAW_MARKUP = ["<script>alert(", "<img src=x", "<svg/onload", '<a href="javascript:', "<b>đậm</b>"]
PAGES = ["/", "/devices", "/programme", "/audio", "/history", "/audit", "/users", "/emergency",
         "/account", "/history/{broadcast}", f"/programme?zone={HAMLET}"]  # fmt: skip


@pytest.fixture
def console(client: FlaskClient, db: Database, tmp_path: Path) -> Console:
    return set_up_console(client, db, tmp_path)


def store_everywhere(console: Console, db: Database, tmp: Path) -> str:
    """Every kind of stored text gets one of the vectors; returns a broadcast id."""
    vector = itertools.cycle(VECTORS)
    c, admin = console.client, console.admin
    post = lambda url, body, who=admin: c.post(url, json=body, headers=who)  # noqa: E731
    expect(c.patch(f"/api/v1/devices/{DEVICE}", json={"name": next(vector)}, headers=admin), 200)
    for i in range(len(VECTORS)):
        expect(post("/api/v1/zones", {"id": f"cum-x{i}", "name": next(vector), "kind": "cluster",
                                      "parent_id": HAMLET}), 201)  # fmt: skip
    with tone(tmp / "x.wav", 0.8, 550).open("rb") as fh:
        # The file name without quotes or slashes: the test client cannot quote them.
        up = c.post("/api/v1/audio", data={"file": (fh, "<img src=x onerror=alert(8)>.wav"), "name": next(vector)},
                    headers=console.operator)  # fmt: skip
    sha = expect(up, 201)["sha256"]
    expect(post("/api/v1/schedules", {"name": next(vector), "audio_sha256": sha, "zone_ids": [HAMLET],
                                      "rule": {"kind": "recurring", "frequency": "daily",
                                               "times": ["20:15"], "start_date": "2027-03-01"}}), 201)  # fmt: skip
    broadcast = expect(post("/api/v1/broadcasts", {"audio_sha256": sha, "zone_ids": [HAMLET],
                                                   "title": next(vector)}), 201)  # fmt: skip
    expect(
        post(f"/api/v1/communes/{COMMUNE}/holidays", {"date": "2027-04-30", "name": next(vector)}),
        201,
    )
    expect(post("/api/v1/users", {"username": "<script>alert(6)</script>", "role": "viewer"}), 201)
    expect(
        post("/api/v1/users", {"username": '"><img/src=x/onerror=alert(7)>', "role": "viewer"}), 201
    )
    # What a device reports: its state and an event with a detail.
    now = int(datetime.now(UTC).timestamp() * 1000)
    state = p.DeviceState(id="st-x", ts=now, device_id=DEVICE, profile=next(vector)[:100],
                          software_version=next(vector)[:50], volume_pct=70,
                          counters={next(vector)[:60]: 1})  # fmt: skip
    event = p.Event(id="ev-x", ts=now, device_id=DEVICE, signal_class=p.SignalClass.ALARM,
                    signal="call_point", active=True, detail=next(vector))  # fmt: skip
    Ingest(db).handle_batch([
        Incoming(p.device_topic(DEVICE, p.Channel.STATE), p.encode(state), datetime.now(UTC)),
        Incoming(p.device_topic(DEVICE, p.Channel.EVENT), p.encode(event), datetime.now(UTC)),
    ])  # fmt: skip
    return str(broadcast["id"])


def test_stored_markup_is_escaped_on_every_page(
    tally: Tally, app: Flask, console: Console, db: Database, tmp_path: Path
) -> None:
    broadcast = store_everywhere(console, db, tmp_path)
    browser = logged_in(app, "admin")
    shown_escaped = 0
    for page in PAGES:
        path = page.format(broadcast=broadcast)
        with tally.case(f"html: {page.split('?')[0]}") as case:
            resp = browser.get(path)
            html = resp.get_data(as_text=True)
            assert resp.status_code == 200, (path, resp.status_code, html[:300])
            for markup in RAW_MARKUP:
                assert markup not in html, f"{path} shows {markup!r} unescaped"
            shown_escaped += html.count("&lt;script&gt;alert(") + html.count(
                "\\u003cscript\\u003ealert("
            )
            case.refused()  # the markup was neutralised
    assert shown_escaped, "no page showed any stored name: the check would prove nothing"
    # The API the pages' scripts read: JSON, never sniffed as HTML.
    for path in ("/api/v1/zones", "/api/v1/devices", f"/api/v1/devices/{DEVICE}", "/api/v1/audio",
                 "/api/v1/schedules", "/api/v1/users", "/api/v1/alarms", f"/api/v1/broadcasts/{broadcast}",
                 "/api/v1/audit", "/api/v1/reports/broadcasts"):  # fmt: skip
        with tally.case("html: API answers") as case:
            resp = console.client.get(path, headers=console.admin)
            assert resp.status_code == 200 and resp.mimetype == "application/json", path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            case.refused()
    # A CSV download keeps the text as text (a spreadsheet does not run HTML).
    csv = console.client.get("/api/v1/reports/broadcasts.csv", headers=console.admin)
    assert csv.mimetype == "text/csv"
    _ = io.StringIO(csv.get_data(as_text=True))
