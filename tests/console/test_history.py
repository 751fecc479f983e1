"""Broadcast history and delivery reports: outcomes, filters, paging, CSV, the pages."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from console.db import Database
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
    Device,
    Schedule,
    Zone,
    ZoneKind,
)
from console.reports import BroadcastFilters, Paging, broadcast_report, list_broadcasts
from tests.console.conftest import PASSWORDS, token_for

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
SHA = "c" * 64
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # 07:00 on 1 March, site time


def _delivery(broadcast_id: str, device_id: str, status: DeliveryStatus, at: datetime,
              reason: str | None = None) -> Delivery:  # fmt: skip
    played = status in (DeliveryStatus.STARTED, DeliveryStatus.FINISHED, DeliveryStatus.STOPPED,
                        DeliveryStatus.PREEMPTED)  # fmt: skip
    ended = status in (DeliveryStatus.FINISHED, DeliveryStatus.STOPPED, DeliveryStatus.PREEMPTED)
    return Delivery(
        broadcast_id=broadcast_id,
        device_id=device_id,
        status=status,
        reason=reason,
        received_at=at + timedelta(seconds=1) if status is not DeliveryStatus.PENDING else None,
        started_at=at + timedelta(seconds=2) if played else None,
        ended_at=at + timedelta(seconds=12) if ended else None,
        updated_at=at,
    )


@pytest.fixture
def history(db: Database) -> Database:
    """A commune, two hamlets and a cluster; four speakers; four broadcasts of each kind."""
    with db.session() as s:
        s.add_all([
            Zone(id="xa-h", name="Xã Hoà", kind=ZoneKind.COMMUNE),
            Zone(id="thon-h1", name="Thôn Một", kind=ZoneKind.HAMLET, parent_id="xa-h"),
            Zone(id="thon-h2", name="Thôn Hai", kind=ZoneKind.HAMLET, parent_id="xa-h"),
            Zone(id="cum-h1a", name="Cụm 1A", kind=ZoneKind.CLUSTER, parent_id="thon-h1"),
        ])  # fmt: skip
        s.flush()
        for device_id, zone in (("loa-1", "thon-h1"), ("loa-2", "thon-h1"), ("loa-3", "thon-h2"),
                                ("loa-4", "cum-h1a")):  # fmt: skip
            s.add(Device(id=device_id, name=f"Loa {device_id[-1]}", profile="speaker-node",
                         zone_id=zone, secret_sha256="x"))  # fmt: skip
        s.add(AudioFile(sha256=SHA, name="Tin <b>sáng</b>", original_name="a.mp3",
                        duration_ms=10_000, size_bytes=1, mime="audio/mpeg"))  # fmt: skip
        s.flush()
        s.add(Schedule(id=7, name="Nhắc an ninh", audio_sha256=SHA, rule={}, zone_ids=["xa-h"]))
        s.flush()
        s.add_all([
            Broadcast(id="b-sched", schedule_id=7, audio_sha256=SHA, priority="scheduled",
                      zone_ids=["xa-h"], status=BroadcastStatus.SENT, scheduled_for=T0,
                      fired_at=T0, play_at=T0, expires_at=T0 + timedelta(minutes=2), repeat=1),
            Broadcast(id="b-live", audio_sha256=SHA, priority="live", zone_ids=["thon-h2"],
                      status=BroadcastStatus.SENT, fired_at=T0 + timedelta(days=1),
                      expires_at=T0 + timedelta(days=1, minutes=2), created_by=2),
            # 17:30 UTC on 2 March is 00:30 on 3 March, site time.
            Broadcast(id="b-emerg", audio_sha256=SHA, priority="emergency", zone_ids=["thon-h1"],
                      status=BroadcastStatus.SENT, fired_at=T0 + timedelta(days=1, hours=17.5),
                      expires_at=T0 + timedelta(days=1, hours=17.5, minutes=2), created_by=2),
            Broadcast(id="b-missed", schedule_id=7, audio_sha256=SHA, priority="scheduled",
                      zone_ids=["xa-h"], status=BroadcastStatus.MISSED,
                      scheduled_for=T0 + timedelta(days=3)),
        ])  # fmt: skip
        s.flush()
        s.add_all([
            _delivery("b-sched", "loa-1", DeliveryStatus.FINISHED, T0),
            _delivery("b-sched", "loa-2", DeliveryStatus.FAILED, T0,
                      reason="=HYPERLINK(\"http://x\") audio <i>hash</i> mismatch"),
            _delivery("b-sched", "loa-3", DeliveryStatus.PREEMPTED, T0, reason="emergency"),
            _delivery("b-sched", "loa-4", DeliveryStatus.PENDING, T0),
            _delivery("b-live", "loa-3", DeliveryStatus.FINISHED, T0 + timedelta(days=1)),
            _delivery("b-emerg", "loa-1", DeliveryStatus.FINISHED, T0 + timedelta(days=1.5)),
            _delivery("b-emerg", "loa-2", DeliveryStatus.STOPPED, T0 + timedelta(days=1.5)),
            _delivery("b-emerg", "loa-4", DeliveryStatus.RECEIVED, T0 + timedelta(days=1.5)),
        ])  # fmt: skip
    return db


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(
        r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).get_data(as_text=True)
    )
    assert match, f"no CSRF token on {path}"
    return match[1]


def web_login(client: FlaskClient, role: str) -> None:
    """Log in through the form, as a browser does (with the form's CSRF token)."""
    resp = client.post("/login", data={"username": role, "password": PASSWORDS[role],
                                       "csrf_token": csrf_token(client)})  # fmt: skip
    assert resp.status_code == 302, resp.get_data(as_text=True)


def ids(client: FlaskClient, headers: dict[str, str], **query: str) -> list[str]:
    resp = client.get("/api/v1/reports/broadcasts", query_string=query, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return [item["id"] for item in resp.get_json()["items"]]


def test_a_broadcast_report_counts_each_device_and_the_success_rate(history: Database) -> None:
    with history.session() as s:
        report = broadcast_report(s, "b-sched")
    assert report is not None
    b = report.broadcast
    assert b.kind == "scheduled" and b.schedule_name == "Nhắc an ninh"
    assert b.counts == {"finished": 1, "failed": 1, "preempted": 1, "pending": 1}
    assert (b.targeted, b.finished, b.success_rate, b.outcome) == (4, 1, 0.25, "partial")
    assert b.first_started_at == T0 + timedelta(seconds=2)
    assert b.last_finished_at == T0 + timedelta(seconds=12)
    # Problems first: failed, then no answer, then interrupted, then played.
    assert [d.status for d in report.devices] == ["failed", "pending", "preempted", "finished"]
    failed = report.devices[0]
    assert (failed.device_id, failed.zone_name) == ("loa-2", "Thôn Một")
    assert failed.reason and "mismatch" in failed.reason
    with history.session() as s:
        missed = broadcast_report(s, "b-missed")
        assert broadcast_report(s, "nope") is None
    assert missed is not None
    assert (missed.broadcast.outcome, missed.broadcast.success_rate, missed.devices) == (
        "missed",
        None,
        [],
    )


def test_the_list_filters_by_kind_zone_outcome_and_site_days(
    client: FlaskClient, history: Database
) -> None:
    viewer = token_for(client, "viewer")
    assert ids(client, viewer) == ["b-missed", "b-emerg", "b-live", "b-sched"]  # newest first
    assert ids(client, viewer, kind="scheduled") == ["b-missed", "b-sched"]
    assert ids(client, viewer, kind="live") == ["b-live"]
    assert ids(client, viewer, kind="emergency") == ["b-emerg"]
    # A zone sees what was sent to it, to a zone above it, or to a zone below it.
    assert ids(client, viewer, zone="thon-h2") == ["b-missed", "b-live", "b-sched"]
    assert ids(client, viewer, zone="cum-h1a") == ["b-missed", "b-emerg", "b-sched"]
    assert ids(client, viewer, zone="xa-h") == ["b-missed", "b-emerg", "b-live", "b-sched"]
    assert ids(client, viewer, status="missed") == ["b-missed"]
    assert ids(client, viewer, status="complete") == ["b-live"]
    assert ids(client, viewer, status="partial") == ["b-emerg", "b-sched"]
    assert ids(client, viewer, status="not_played") == []
    # Days are the site's: 17:30 UTC on 2 March is already 3 March in Vietnam.
    assert ids(client, viewer, **{"from": "2026-03-03", "to": "2026-03-03"}) == ["b-emerg"]
    assert ids(client, viewer, **{"from": "2026-03-02", "to": "2026-03-02"}) == ["b-live"]
    assert ids(client, viewer, **{"to": "2026-03-01"}) == ["b-sched"]
    assert ids(client, viewer, kind="scheduled", zone="thon-h1", status="partial") == ["b-sched"]


def test_the_list_answers_counts_totals_and_pages(client: FlaskClient, history: Database) -> None:
    viewer = token_for(client, "viewer")
    resp = client.get("/api/v1/reports/broadcasts?per_page=2&page=2", headers=viewer)
    data = resp.get_json()
    assert (data["timezone"], data["total"], data["page"], data["per_page"]) == (
        "Asia/Ho_Chi_Minh",
        4,
        2,
        2,
    )
    assert [i["id"] for i in data["items"]] == ["b-live", "b-sched"]
    sched = data["items"][1]
    assert sched["counts"] == {"pending": 1, "received": 0, "started": 0, "finished": 1,
                               "failed": 1, "preempted": 1, "stopped": 0}  # fmt: skip
    assert (sched["targeted"], sched["finished"], sched["success_rate"]) == (4, 1, 0.25)
    assert (sched["kind"], sched["outcome"], sched["schedule_name"]) == (
        "scheduled",
        "partial",
        "Nhắc an ninh",
    )
    assert sched["at"] == "2026-03-01T00:00:00Z" and sched["at_local"].endswith("07:00:00+07:00")
    assert data["items"][0]["sent_by"] == "operator"
    # Totals cover every match, not only the page: 1 + 1 + 1 of 4 + 1 + 3 speakers.
    assert data["totals"] == {"broadcasts": 4, "missed": 1, "targeted": 8, "finished": 3,
                              "success_rate": 0.375}  # fmt: skip
    page9 = client.get("/api/v1/reports/broadcasts?page=9", headers=viewer).get_json()
    assert page9["items"] == [] and page9["total"] == 4
    one = client.get("/api/v1/reports/broadcasts/b-emerg", headers=viewer).get_json()
    assert [d["status"] for d in one["devices"]] == ["stopped", "received", "finished"]
    assert one["outcome"] == "partial" and one["in_progress"] is False


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-02-30"}, "from"),
        ({"from": "1850-01-01"}, "from"),
        ({"from": "2026-03-05", "to": "2026-03-01"}, "to"),
        ({"to": "x" * 10_000}, "to"),
        ({"zone": "nowhere"}, "zone"),
        ({"zone": "<script>alert(1)</script>"}, "zone"),
        ({"kind": "fire"}, "kind"),
        ({"status": "played"}, "status"),
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1e3"}, "page"),
        ({"per_page": "100000"}, "per_page"),
    ],
)
def test_bad_filters_get_a_clear_error(
    client: FlaskClient, history: Database, query: dict[str, str], field: str
) -> None:
    viewer = token_for(client, "viewer")
    for path in ("/api/v1/reports/broadcasts", "/api/v1/reports/broadcasts.csv"):
        if path.endswith(".csv") and field in ("page", "per_page"):
            continue  # a download has no pages
        resp = client.get(path, query_string=query, headers=viewer)
        assert resp.status_code == 422, (path, query)
        error = resp.get_json()["error"]
        assert (error["code"], error["field"]) == ("invalid", field)
    assert client.get("/api/v1/reports/broadcasts", headers=viewer).status_code == 200


def read_csv(resp: Any) -> list[list[str]]:
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf"), "no UTF-8 byte-order mark for Excel"
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def test_the_history_downloads_as_csv_in_site_time(client: FlaskClient, history: Database) -> None:
    viewer = token_for(client, "viewer")
    resp = client.get("/api/v1/reports/broadcasts.csv?kind=scheduled", headers=viewer)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="broadcasts-')
    header, *rows = read_csv(resp)
    assert header[0] == "Mã lượt phát"  # Vietnamese by default
    assert "Asia/Ho_Chi_Minh" in header[1] and "UTC+07:00" in header[1]
    assert [r[0] for r in rows] == ["b-missed", "b-sched"]
    missed, sched = rows
    assert sched[1] == "2026-03-01 07:00:00"
    assert sched[2:7] == ["Theo lịch", "Tin <b>sáng</b>", "Nhắc an ninh", "xa-h", "Phát một phần"]
    assert sched[7:16] == ["4", "1", "0", "0", "1", "1", "0", "1", "25"]
    assert missed[1] == "2026-03-04 07:00:00" and missed[15] == ""
    # Semicolons for an Excel set to a regional format that expects them.
    semi = client.get("/api/v1/reports/broadcasts.csv?sep=semicolon", headers=viewer)
    assert semi.get_data().decode("utf-8-sig").splitlines()[0].count(";") == len(header) - 1


def test_a_broadcast_downloads_as_csv_one_row_per_device(
    client: FlaskClient, history: Database
) -> None:
    viewer = token_for(client, "viewer")
    resp = client.get("/api/v1/broadcasts/b-sched/report.csv", headers=viewer)
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"] == 'attachment; filename="broadcast-b-sched.csv"'
    header, *rows = read_csv(resp)
    assert len(header) == 10 and all("Asia/Ho_Chi_Minh" in h for h in header[7:])
    assert [(r[0], r[5]) for r in rows] == [
        ("loa-2", "failed"),
        ("loa-4", "pending"),
        ("loa-3", "preempted"),
        ("loa-1", "finished"),
    ]
    assert rows[0][4] == "Lỗi" and rows[1][4] == "Không phản hồi"
    # Text a device reported can never run as an Excel formula.
    assert rows[0][6].startswith("'=HYPERLINK(")
    assert rows[3][7:] == ["2026-03-01 07:00:01", "2026-03-01 07:00:02", "2026-03-01 07:00:12"]
    unknown = client.get("/api/v1/broadcasts/nope/report.csv", headers=viewer)
    assert unknown.status_code == 404 and unknown.get_json()["error"]["code"] == "not_found"
    long_id = client.get("/api/v1/broadcasts/" + "x" * 5000 + "/report.csv", headers=viewer)
    assert long_id.status_code == 404


def test_the_english_csv_has_english_headers(client: FlaskClient, history: Database) -> None:
    web_login(client, "viewer")
    client.get("/lang/en")
    resp = client.get("/api/v1/broadcasts/b-live/report.csv")  # a GET needs no CSRF token
    header, row = read_csv(resp)
    assert header[0] == "Device" and row[4] == "Played"


def count_statements(db: Database) -> tuple[list[str], Any]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    return seen, lambda: event.remove(db.engine, "before_cursor_execute", before)


def test_a_page_costs_the_same_few_queries_however_many_rows(history: Database) -> None:
    def queries() -> int:
        seen, stop = count_statements(history)
        try:
            with history.session() as s:
                page, _ = list_broadcasts(s, BroadcastFilters(zone_id="xa-h", outcome="partial"),
                                          TZ, Paging(per_page=200))  # fmt: skip
                assert page.items
        finally:
            stop()
        return len(seen)

    few = queries()
    assert few <= 8, f"{few} statements for one page"
    with history.session() as s:
        for n in range(40):
            s.add(Broadcast(id=f"b-more-{n}", audio_sha256=SHA, priority="live",
                            zone_ids=["thon-h1"], status=BroadcastStatus.SENT,
                            fired_at=T0 + timedelta(hours=n)))  # fmt: skip
            s.flush()
            s.add(_delivery(f"b-more-{n}", "loa-1", DeliveryStatus.FINISHED, T0))
            s.add(_delivery(f"b-more-{n}", "loa-2", DeliveryStatus.PENDING, T0))
    assert queries() == few


def test_the_history_page_lists_and_links_each_broadcast(
    client: FlaskClient, history: Database
) -> None:
    web_login(client, "viewer")
    html = client.get("/history").get_data(as_text=True)
    assert 'href="/history/b-sched"' in html and 'href="/history/b-missed"' in html
    assert "Tin &lt;b&gt;sáng&lt;/b&gt;" in html and "<b>sáng" not in html  # escaped
    assert "Nhắc an ninh" in html and "Bị lỡ" in html and "25%" in html
    assert "/api/v1/reports/broadcasts.csv" in html
    filtered = client.get("/history?kind=emergency&zone=cum-h1a").get_data(as_text=True)
    assert "/history/b-emerg" in filtered and "/history/b-sched" not in filtered
    assert "reports/broadcasts.csv?zone=cum-h1a&amp;kind=emergency" in filtered
    bad = client.get("/history?from=not-a-day&zone=" + "z" * 5000)
    assert bad.status_code == 422
    assert "Ngày không hợp lệ." in bad.get_data(as_text=True)


def test_the_report_page_shows_every_device_and_why(client: FlaskClient, history: Database) -> None:
    web_login(client, "viewer")
    html = client.get("/history/b-sched").get_data(as_text=True)
    for text in ("Loa 1", "Loa 2", "Loa 3", "Loa 4", "Thôn Một", "Cụm 1A", "Không phản hồi",
                 "Bị ngắt", "Lỗi", "25%", "01/03/2026 07:00:12"):  # fmt: skip
        assert text in html, text
    assert "audio &lt;i&gt;hash&lt;/i&gt; mismatch" in html
    assert "/api/v1/broadcasts/b-sched/report.csv" in html
    missed = client.get("/history/b-missed").get_data(as_text=True)
    assert "không được phát bù" in missed
    unknown = client.get("/history/%3Cscript%3E")
    assert unknown.status_code == 404
    assert "&lt;script&gt;" in unknown.get_data(as_text=True)
