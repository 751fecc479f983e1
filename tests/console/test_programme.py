"""The commune's programme through the API: quiet hours, conflicts (refuse or queue after),
bulletin levels, edits, previews, a zone's programme, the holiday calendar and its effect on the
scheduler, and the roles and validation of these routes.

The web app runs on a fake clock: now is Tuesday 2030-01-01 07:00 in Asia/Ho_Chi_Minh.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from console import services
from console.app import create_app
from console.broadcasts import record_broadcast
from console.db import Database, alembic_config
from console.models import AudioFile, Base, Broadcast, BroadcastStatus, Schedule
from console.programme import queue_wait
from console.settings import Settings
from console.worker import DbScheduleSource, build_worker
from scheduler import FakeClock, Occurrence, SchedulerService
from tests.console.conftest import token_for

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)  # Tuesday 07:00 local
SHORT, FIVE_MIN, TEN_MIN = "a" * 64, "b" * 64, "c" * 64
ZONES = [
    {"id": "xa-p", "name": "Xã Phú", "kind": "commune"},
    {"id": "thon-p1", "name": "Thôn 1", "kind": "hamlet", "parent_id": "xa-p"},
    {"id": "thon-p2", "name": "Thôn 2", "kind": "hamlet", "parent_id": "xa-p"},
    {"id": "cum-p11", "name": "Cụm 1.1", "kind": "cluster", "parent_id": "thon-p1"},
    {"id": "xa-q", "name": "Xã Quý", "kind": "commune"},
]


@pytest.fixture
def app(settings: Settings, db: Database) -> Iterator[Flask]:
    """The console on a fake clock, with zones and three recordings (1, 5 and 10 min)."""
    application = create_app(settings, db, clock=FakeClock(NOW))
    with db.session() as session:
        for sha, seconds in ((SHORT, 60), (FIVE_MIN, 300), (TEN_MIN, 600)):
            session.add(
                AudioFile(
                    sha256=sha,
                    name=f"Bản tin {seconds} s",
                    original_name=f"{seconds}.mp3",
                    duration_ms=seconds * 1000,
                    size_bytes=1000,
                    mime="audio/mpeg",
                )
            )
    client = application.test_client()
    admin = token_for(client, "admin")
    for zone in ZONES:
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    yield application
    services.close(application)


@pytest.fixture
def operator(client: FlaskClient) -> dict[str, str]:
    return token_for(client, "operator")


def daily(*times: str, start: str = "2030-01-01", **extra: Any) -> dict[str, Any]:
    return {
        "kind": "recurring",
        "frequency": "daily",
        "times": list(times),
        "start_date": start,
    } | extra


def body(
    rule: dict[str, Any], zones: list[str], audio: str = SHORT, **extra: Any
) -> dict[str, Any]:
    return {
        "name": extra.pop("name", "Bản tin"),
        "audio_sha256": audio,
        "rule": rule,
        "zone_ids": zones,
    } | extra


def create(client: FlaskClient, headers: dict[str, str], **kw: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/schedules", json=body(**kw), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return dict(resp.get_json())


def error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_json()
    return dict(resp.get_json()["error"])


# --- quiet hours ----------------------------------------------------------------------------


def test_a_routine_item_in_quiet_hours_is_refused_naming_the_time(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    resp = client.post(
        "/api/v1/schedules", json=body(daily("06:00", "22:30"), ["thon-p1"]), headers=operator
    )
    err = error(resp, 422)
    assert err["code"] == "quiet_hours"
    assert err["field"] == "rule.times" and err["local_time"] == "22:30"
    assert "22:30 is within quiet hours (22:00–05:00)" in err["message"]

    once = {"kind": "once", "at": "2030-01-05T04:30:00"}  # site-local: before 05:00
    err = error(client.post("/api/v1/schedules", json=body(once, ["xa-p"]), headers=operator), 422)
    assert (err["code"], err["field"], err["local_time"]) == ("quiet_hours", "rule.at", "04:30")

    # A priority bulletin is still routine: it does not play at night either.
    resp = client.post(
        "/api/v1/schedules",
        json=body(daily("23:00"), ["xa-p"], bulletin_level="priority"),
        headers=operator,
    )
    assert error(resp, 422)["code"] == "quiet_hours"
    # Outside quiet hours, and the first minute after them: accepted.
    create(client, operator, rule=daily("05:00", "21:00"), zones=["thon-p1"])
    assert client.get("/api/v1/schedules", headers=operator).get_json()[0]["rule"]["times"] == [
        "05:00:00",
        "21:00:00",
    ]


def test_an_announcement_that_would_run_into_quiet_hours_is_refused(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    resp = client.post(
        "/api/v1/schedules",
        json=body(daily("21:58"), ["thon-p1"], audio=FIVE_MIN),
        headers=operator,
    )
    err = error(resp, 422)
    assert err["code"] == "quiet_hours" and err["field"] == "rule.times"
    assert "lasts 5 min" in err["message"] and "end at 22:03" in err["message"]
    create(client, operator, rule=daily("21:55"), zones=["thon-p1"], audio=FIVE_MIN)


def test_quiet_hours_are_set_per_commune_by_an_admin(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    admin, viewer = token_for(client, "admin"), token_for(client, "viewer")
    got = client.get("/api/v1/communes/xa-p/quiet-hours", headers=viewer).get_json()
    assert got | {"updated_at": None} == {
        "zone_id": "xa-p",
        "start": "22:00",
        "end": "05:00",
        "span": "22:00–05:00",
        "none": False,
        "default": True,
        "updated_by": None,
        "updated_at": None,
    }
    create(client, operator, rule=daily("21:30"), zones=["thon-p1"], name="Nhắc an ninh")

    # Quiet from 21:00 would silence an enabled schedule: refused, naming it.
    resp = client.put(
        "/api/v1/communes/xa-p/quiet-hours", json={"start": "21:00", "end": "06:00"}, headers=admin
    )
    err = error(resp, 409)
    assert err["code"] == "schedules_in_quiet_hours"
    assert "Nhắc an ninh" in err["message"] and "21:30" in err["message"]
    assert [s["name"] for s in err["schedules"]] == ["Nhắc an ninh"]

    resp = client.put(
        "/api/v1/communes/xa-p/quiet-hours", json={"start": "21:45", "end": "06:00"}, headers=admin
    )
    assert resp.status_code == 200, resp.get_json()
    got = client.get("/api/v1/communes/xa-p/quiet-hours", headers=viewer).get_json()
    assert (got["start"], got["end"], got["default"]) == ("21:45", "06:00", False)
    assert got["updated_at"] == "2030-01-01T00:00:00Z"

    # The new span applies in xa-p only.
    err = error(
        client.post("/api/v1/schedules", json=body(daily("05:30"), ["cum-p11"]), headers=operator),
        422,
    )
    assert "quiet hours (21:45–06:00)" in err["message"]
    create(client, operator, rule=daily("05:30"), zones=["xa-q"])
    # Equal start and end: no quiet hours at all.
    resp = client.put(
        "/api/v1/communes/xa-q/quiet-hours", json={"start": "00:00", "end": "00:00"}, headers=admin
    )
    assert resp.get_json()["none"] is True
    create(client, operator, rule=daily("23:30"), zones=["xa-q"])

    # Quiet hours belong to communes: a hamlet's URL names its commune.
    resp = client.get("/api/v1/communes/thon-p1/quiet-hours", headers=viewer)
    assert "'xa-p'" in error(resp, 404)["message"]
    assert client.get("/api/v1/communes/nowhere/quiet-hours", headers=viewer).status_code == 404


# --- bulletin levels ------------------------------------------------------------------------


def test_bulletin_levels_map_onto_play_priority(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    rule = daily("07:00")
    normal = create(client, operator, rule=rule, zones=["thon-p1"], bulletin_level="normal")
    assert (normal["priority"], normal["bulletin_level"]) == ("scheduled", "normal")
    first = create(
        client, operator, rule=daily("08:00"), zones=["thon-p1"], bulletin_level="priority"
    )
    assert (first["priority"], first["bulletin_level"]) == ("live", "priority")
    both = create(
        client,
        operator,
        rule=daily("09:00"),
        zones=["thon-p1"],
        bulletin_level="priority",
        priority="live",
    )
    assert both["priority"] == "live"
    legacy = create(client, operator, rule=daily("10:00"), zones=["thon-p1"], priority="live")
    assert legacy["bulletin_level"] == "priority"
    default = create(client, operator, rule=daily("11:00"), zones=["thon-p1"])
    assert (default["priority"], default["bulletin_level"]) == ("scheduled", "normal")

    resp = client.post(
        "/api/v1/schedules",
        json=body(daily("12:00"), ["thon-p1"], bulletin_level="normal", priority="live"),
        headers=operator,
    )
    assert error(resp, 422)["field"] == "bulletin_level"
    for field in ("bulletin_level", "priority"):
        resp = client.post(
            "/api/v1/schedules",
            json=body(daily("12:00"), ["thon-p1"], **{field: "emergency"}),
            headers=operator,
        )
        err = error(resp, 422)
        assert err["field"] == field and "sounded at once" in err["message"]


# --- conflicts ------------------------------------------------------------------------------


def test_an_overlap_on_the_same_speakers_is_refused_naming_the_other(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    morning = create(
        client, operator, rule=daily("07:00"), zones=["thon-p1"], audio=FIVE_MIN, name="Tin sáng"
    )
    # The commune includes thôn 1: 07:03 overlaps the 5 min morning news there.
    resp = client.post(
        "/api/v1/schedules", json=body(daily("07:03"), ["xa-p"], name="Tin xã"), headers=operator
    )
    err = error(resp, 409)
    assert err["code"] == "conflict"
    assert "“Tin sáng”" in err["message"] and f"schedule {morning['id']}" in err["message"]
    assert "queue_after" in err["message"]
    [clash] = err["conflicts"]
    assert clash["schedule_id"] == morning["id"] and clash["name"] == "Tin sáng"
    # Now is 07:00: today's morning news is playing when 07:03 comes.
    assert clash["at_local"] == "2030-01-01T07:03:00+07:00"
    assert clash["other_at_local"] == "2030-01-01T07:00:00+07:00"
    assert clash["at"] == "2030-01-01T00:03:00Z"
    assert clash["zones"] == [["xa-p", "thon-p1"]]
    assert clash["clashes"] == 30  # every day of the 30-day window

    # A sibling hamlet has other speakers; right after the morning news is free too.
    create(client, operator, rule=daily("07:03"), zones=["thon-p2"])
    create(client, operator, rule=daily("07:05"), zones=["cum-p11"])
    # A once item far ahead is checked at its own date.
    resp = client.post(
        "/api/v1/schedules",
        json=body({"kind": "once", "at": "2030-06-01T07:01:00"}, ["cum-p11"]),
        headers=operator,
    )
    assert error(resp, 409)["conflicts"][0]["at_local"] == "2030-06-01T07:01:00+07:00"
    # Nor may an item overlap itself.
    resp = client.post(
        "/api/v1/schedules",
        json=body(daily("12:00", "12:02"), ["thon-p2"], audio=FIVE_MIN),
        headers=operator,
    )
    err = error(resp, 422)
    assert (err["code"], err["field"]) == ("conflict", "rule.times")
    assert "12:00 and 12:02 are 2 min apart but the announcement lasts 5 min" in err["message"]
    # A disabled schedule plays nothing, so clashes with nothing.
    create(client, operator, rule=daily("07:01"), zones=["thon-p1"], enabled=False)


def test_queue_after_is_accepted_and_stored(client: FlaskClient, operator: dict[str, str]) -> None:
    create(client, operator, rule=daily("07:00"), zones=["thon-p1"], audio=FIVE_MIN)
    queued = create(
        client, operator, rule=daily("07:03"), zones=["thon-p1"], on_conflict="queue_after"
    )
    assert queued["on_conflict"] == "queue_after"
    assert (
        client.get(f"/api/v1/schedules/{queued['id']}", headers=operator).get_json()["on_conflict"]
        == "queue_after"
    )


def test_queue_after_is_refused_when_the_pair_would_end_in_quiet_hours(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    create(client, operator, rule=daily("21:47"), zones=["thon-p1"], audio=TEN_MIN, name="Tin tối")
    resp = client.post(
        "/api/v1/schedules",
        json=body(daily("21:50"), ["thon-p1"], audio=FIVE_MIN, on_conflict="queue_after"),
        headers=operator,
    )
    err = error(resp, 422)
    assert err["code"] == "quiet_hours" and err["field"] == "on_conflict"
    assert "“Tin tối”" in err["message"] and "end at 22:02" in err["message"]


# --- edit and delete ------------------------------------------------------------------------


def test_an_edit_runs_the_same_checks(client: FlaskClient, operator: dict[str, str]) -> None:
    morning = create(
        client, operator, rule=daily("07:00"), zones=["thon-p1"], audio=FIVE_MIN, name="Tin sáng"
    )
    later = create(client, operator, rule=daily("09:00"), zones=["thon-p1"], name="Tin trưa")

    # Moved onto the morning news: refused, the stored schedule unchanged.
    resp = client.put(
        f"/api/v1/schedules/{later['id']}",
        json=body(daily("07:02"), ["thon-p1"], name="Tin trưa"),
        headers=operator,
    )
    assert error(resp, 409)["conflicts"][0]["schedule_id"] == morning["id"]
    assert client.get(f"/api/v1/schedules/{later['id']}", headers=operator).get_json()["rule"][
        "times"
    ] == ["09:00:00"]

    # Editing an item in place never clashes with its own older version.
    resp = client.put(
        f"/api/v1/schedules/{morning['id']}",
        json=body(daily("07:01"), ["thon-p1"], audio=FIVE_MIN, name="Tin sáng mới"),
        headers=operator,
    )
    assert resp.status_code == 200, resp.get_json()
    edited = resp.get_json()
    assert edited["name"] == "Tin sáng mới" and edited["rule"]["times"] == ["07:01:00"]
    assert edited["updated_at"] == "2030-01-01T00:00:00Z"

    resp = client.put(
        f"/api/v1/schedules/{later['id']}", json=body(daily("22:15"), ["thon-p1"]), headers=operator
    )
    assert error(resp, 422)["code"] == "quiet_hours"

    # Enabling a disabled clashing item is an edit like any other.
    off = create(client, operator, rule=daily("07:02"), zones=["thon-p1"], enabled=False)
    resp = client.put(
        f"/api/v1/schedules/{off['id']}", json=body(daily("07:02"), ["thon-p1"]), headers=operator
    )
    assert error(resp, 409)["code"] == "conflict"
    resp = client.put(
        f"/api/v1/schedules/{off['id']}",
        json=body(daily("07:02"), ["thon-p1"], on_conflict="queue_after"),
        headers=operator,
    )
    assert resp.status_code == 200 and resp.get_json()["enabled"] is True

    assert (
        client.put(
            "/api/v1/schedules/999", json=body(daily("12:00"), ["thon-p1"]), headers=operator
        ).status_code
        == 404
    )


def test_delete_removes_a_schedule_or_disables_one_that_played(
    client: FlaskClient, operator: dict[str, str], db: Database
) -> None:
    fresh = create(client, operator, rule=daily("07:00"), zones=["thon-p1"])
    played = create(client, operator, rule=daily("08:00"), zones=["thon-p1"])
    with db.session() as session:
        session.add(
            Broadcast(
                id=f"s{played['id']}-20300101T010000Z",
                schedule_id=played["id"],
                audio_sha256=SHORT,
                priority="scheduled",
                zone_ids=["thon-p1"],
                status=BroadcastStatus.SENT,
            )
        )
    assert client.delete(f"/api/v1/schedules/{fresh['id']}", headers=operator).status_code == 204
    assert client.get(f"/api/v1/schedules/{fresh['id']}", headers=operator).status_code == 404
    resp = client.delete(f"/api/v1/schedules/{played['id']}", headers=operator)
    assert resp.status_code == 200 and resp.get_json()["enabled"] is False
    assert client.get(f"/api/v1/schedules/{played['id']}", headers=operator).status_code == 200
    assert client.delete("/api/v1/schedules/999", headers=operator).status_code == 404


# --- previews -------------------------------------------------------------------------------


def test_preview_gives_local_and_utc_times_and_the_holidays_skipped(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    viewer = token_for(client, "viewer")
    weekly = {
        "kind": "recurring",
        "frequency": "weekly",
        "weekdays": [0, 3],
        "times": ["06:30"],
        "start_date": "2030-01-01",
    }
    resp = client.post(
        "/api/v1/schedules/preview", json={"rule": weekly, "count": 4}, headers=viewer
    )
    assert resp.status_code == 200, resp.get_json()
    got = resp.get_json()
    assert got["timezone"] == "Asia/Ho_Chi_Minh" and got["warnings"] == []
    assert got["occurrences"] == [
        {"at": "2030-01-02T23:30:00Z", "local": "2030-01-03T06:30:00+07:00"},
        {"at": "2030-01-06T23:30:00Z", "local": "2030-01-07T06:30:00+07:00"},
        {"at": "2030-01-09T23:30:00Z", "local": "2030-01-10T06:30:00+07:00"},
        {"at": "2030-01-13T23:30:00Z", "local": "2030-01-14T06:30:00+07:00"},
    ]

    # With the commune's calendar: Monday the 7th is a holiday there.
    resp = client.post(
        "/api/v1/communes/xa-p/holidays",
        json={"date": "2030-01-07", "name": "Ngày hội"},
        headers=operator,
    )
    assert resp.status_code == 201
    resp = client.post(
        "/api/v1/schedules/preview",
        json={"rule": weekly, "count": 4, "zone_ids": ["thon-p1"]},
        headers=viewer,
    )
    got = resp.get_json()
    assert got["commune_id"] == "xa-p"
    assert [o["local"][:10] for o in got["occurrences"]] == [
        "2030-01-03",
        "2030-01-10",
        "2030-01-14",
        "2030-01-17",
    ]
    assert got["holidays_skipped"] == [{"date": "2030-01-07", "name": "Ngày hội"}]

    # A rule in quiet hours is previewed with a warning (saving it would be refused).
    resp = client.post(
        "/api/v1/schedules/preview", json={"rule": daily("22:30"), "count": 1}, headers=viewer
    )
    [warning] = resp.get_json()["warnings"]
    assert warning["code"] == "quiet_hours" and warning["local_time"] == "22:30"
    assert resp.get_json()["occurrences"] == [
        {"at": "2030-01-01T15:30:00Z", "local": "2030-01-01T22:30:00+07:00"}
    ]


def test_a_zone_programme_lists_what_its_speakers_will_play(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    commune = create(client, operator, rule=daily("18:00"), zones=["xa-p"], name="Bản tin xã")
    hamlet = create(client, operator, rule=daily("08:00"), zones=["thon-p1"], name="Tin thôn 1")
    cluster = create(client, operator, rule=daily("09:00"), zones=["cum-p11"], name="Cụm 1.1")
    create(client, operator, rule=daily("08:00"), zones=["thon-p2"], name="Tin thôn 2")
    create(client, operator, rule=daily("08:00"), zones=["xa-q"], name="Xã khác")
    off = create(client, operator, rule=daily("10:00"), zones=["thon-p1"], enabled=False)

    viewer = token_for(client, "viewer")
    got = client.get("/api/v1/zones/thon-p1/programme?days=2", headers=viewer).get_json()
    assert (got["zone_id"], got["commune_id"], got["truncated"]) == ("thon-p1", "xa-p", False)
    assert (got["from"], got["to"]) == ("2030-01-01T00:00:00Z", "2030-01-03T00:00:00Z")
    listed = [(i["local"], i["schedule_id"], i["reach"]) for i in got["items"]]
    assert listed == [
        ("2030-01-01T08:00:00+07:00", hamlet["id"], "all"),
        ("2030-01-01T09:00:00+07:00", cluster["id"], "part"),
        ("2030-01-01T18:00:00+07:00", commune["id"], "all"),
        ("2030-01-02T08:00:00+07:00", hamlet["id"], "all"),
        ("2030-01-02T09:00:00+07:00", cluster["id"], "part"),
        ("2030-01-02T18:00:00+07:00", commune["id"], "all"),
    ]
    assert off["id"] not in {i["schedule_id"] for i in got["items"]}
    first = got["items"][0]
    assert first["occurrence_id"] == f"s{hamlet['id']}-20300101T010000Z"
    assert (first["name"], first["audio_sha256"], first["duration_ms"]) == (
        "Tin thôn 1",
        SHORT,
        60_000,
    )
    assert (first["audio_name"], first["bulletin_level"]) == ("Bản tin 60 s", "normal")

    # A holiday of the commune silences its routine items that day.
    client.post(
        "/api/v1/communes/xa-p/holidays",
        json={"date": "2030-01-02", "name": "Nghỉ"},
        headers=operator,
    )
    got = client.get("/api/v1/zones/thon-p1/programme?days=2", headers=viewer).get_json()
    assert [i["local"][:10] for i in got["items"]] == ["2030-01-01"] * 3
    assert got["holidays"] == [{"date": "2030-01-02", "name": "Nghỉ"}]

    # The commune's own programme covers every hamlet.
    got = client.get("/api/v1/zones/xa-p/programme?days=1", headers=viewer).get_json()
    assert {i["name"] for i in got["items"]} == {
        "Bản tin xã",
        "Tin thôn 1",
        "Cụm 1.1",
        "Tin thôn 2",
    }

    for days in ("0", "32", "abc", "-1"):
        resp = client.get(f"/api/v1/zones/thon-p1/programme?days={days}", headers=viewer)
        assert error(resp, 422)["field"] == "days"
    assert client.get("/api/v1/zones/nowhere/programme", headers=viewer).status_code == 404


# --- holidays -------------------------------------------------------------------------------


def test_holidays_can_be_listed_added_and_removed(
    client: FlaskClient, operator: dict[str, str]
) -> None:
    viewer = token_for(client, "viewer")
    url = "/api/v1/communes/xa-p/holidays"
    resp = client.post(
        url,
        json={"date": "2030-02-02", "end_date": "2030-02-06", "name": "Tết Nguyên Đán"},
        headers=operator,
    )
    assert resp.status_code == 201, resp.get_json()
    assert [h["date"] for h in resp.get_json()] == [f"2030-02-0{d}" for d in range(2, 7)]
    for day, name in (
        ("2030-09-02", "Quốc khánh"),
        ("2030-04-30", "Ngày Giải phóng"),
        ("2031-05-01", "Quốc tế Lao động"),
    ):
        assert (
            client.post(url, json={"date": day, "name": name}, headers=operator).status_code == 201
        )

    # The same day twice is refused, naming it; another commune has its own calendar.
    resp = client.post(
        url, json={"date": "2030-02-01", "end_date": "2030-02-03", "name": "x"}, headers=operator
    )
    err = error(resp, 409)
    assert err["field"] == "date" and "2030-02-02" in err["message"] and "Tết" in err["message"]
    assert (
        client.post(
            "/api/v1/communes/xa-q/holidays",
            json={"date": "2030-09-02", "name": "Quốc khánh"},
            headers=operator,
        ).status_code
        == 201
    )

    listed = client.get(url, headers=viewer).get_json()
    assert [h["date"] for h in listed] == sorted(h["date"] for h in listed) and len(listed) == 8
    assert listed[0] | {"created_by": None} == {
        "date": "2030-02-02",
        "name": "Tết Nguyên Đán",
        "created_by": None,
        "created_at": "2030-01-01T00:00:00Z",
    }
    assert [h["date"] for h in client.get(f"{url}?year=2031", headers=viewer).get_json()] == [
        "2031-05-01"
    ]
    assert error(client.get(f"{url}?year=soon", headers=viewer), 422)["field"] == "year"

    assert client.delete(f"{url}/2030-09-02", headers=operator).status_code == 204
    assert client.delete(f"{url}/2030-09-02", headers=operator).status_code == 404
    assert error(client.delete(f"{url}/02-09-2030", headers=operator), 422)["field"] == "date"
    assert len(client.get(url, headers=viewer).get_json()) == 7
    assert len(client.get("/api/v1/communes/xa-q/holidays", headers=viewer).get_json()) == 1
    assert client.get("/api/v1/communes/thon-p1/holidays", headers=viewer).status_code == 404


def test_holidays_reach_the_scheduler_and_silence_routine_items(
    client: FlaskClient, operator: dict[str, str], db: Database
) -> None:
    in_p = create(client, operator, rule=daily("07:00"), zones=["thon-p1"])
    in_q = create(client, operator, rule=daily("07:00"), zones=["xa-q"])
    once = create(
        client, operator, rule={"kind": "once", "at": "2030-01-02T09:00:00"}, zones=["xa-p"]
    )
    source = DbScheduleSource(db)
    before = source.revision()
    resp = client.post(
        "/api/v1/communes/xa-p/holidays",
        json={"date": "2030-01-02", "name": "Nghỉ"},
        headers=operator,
    )
    assert resp.status_code == 201
    assert source.revision() != before  # the worker re-reads its schedules

    specs = {spec.id: spec for spec in source.active_schedules()}
    assert specs[in_p["id"]].holidays == {date(2030, 1, 2)}
    assert specs[in_q["id"]].holidays == frozenset()

    # The service, on a fake clock, over Tuesday to Thursday morning.
    fired: list[Occurrence] = []
    source.set_last_checked(NOW)
    service = SchedulerService(
        source, fired.append, fired.append, clock=FakeClock(NOW), tz=HCM, grace_s=60
    )
    fire, missed = service.due(NOW + timedelta(days=2, hours=1))
    due = sorted(
        (o.schedule_id, o.scheduled_at.astimezone(HCM).date().isoformat()) for o in fire + missed
    )
    # Tuesday 07:00 is the last check itself (accounted for); Wednesday is xa-p's holiday.
    assert due == sorted(
        [
            (in_p["id"], "2030-01-03"),
            (in_q["id"], "2030-01-02"),
            (in_q["id"], "2030-01-03"),
            (once["id"], "2030-01-02"),  # a once item's date was chosen on purpose
        ]
    )


# --- queue after: room on the device ----------------------------------------------------------


def test_a_queued_item_lives_long_enough_to_play_after_the_other(
    client: FlaskClient, operator: dict[str, str], db: Database, settings: Settings
) -> None:
    long = create(client, operator, rule=daily("07:00"), zones=["thon-p1"], audio=TEN_MIN)
    queued = create(
        client, operator, rule=daily("07:03"), zones=["thon-p1"], on_conflict="queue_after"
    )
    # Queued to start before the long one: the long one then waits behind it.
    early = create(
        client,
        operator,
        rule=daily("06:59"),
        zones=["thon-p1"],
        audio=FIVE_MIN,
        on_conflict="queue_after",
    )
    at = {
        s["id"]: datetime.fromisoformat(f"2030-01-02T{s['rule']['times'][0]}+07:00")
        for s in (long, queued, early)
    }
    with db.session() as session:
        waits = {
            sid: queue_wait(session, session.get(Schedule, sid), t, HCM) for sid, t in at.items()
        }
    assert waits == {
        queued["id"]: timedelta(minutes=15),  # behind 06:59 (5 min) and 07:00 (10 min)
        long["id"]: timedelta(minutes=5),  # behind 06:59
        early["id"]: timedelta(0),  # first in line
    }

    worker = build_worker(settings, db=db, clock=FakeClock(NOW))
    try:
        occurrence = Occurrence(queued["id"], at[queued["id"]])
        req = worker.broadcast_request(occurrence, occurrence.scheduled_at)
        assert req is not None
        assert req.ttl == timedelta(seconds=settings.command_ttl_s) + timedelta(minutes=15)
        with db.session() as session:
            broadcast = record_broadcast(session, req)
            assert broadcast.expires_at is not None and broadcast.play_at is not None
            assert broadcast.expires_at - broadcast.play_at == req.ttl
            session.rollback()
        # A missed occurrence is only recorded: nothing to extend.
        missed = worker.broadcast_request(occurrence, NOW, for_play=False)
        assert missed is not None and missed.ttl == timedelta(seconds=settings.command_ttl_s)
    finally:
        worker.link.stop()


# --- roles and validation -------------------------------------------------------------------

QUIET = {"start": "22:00", "end": "05:00"}
ROLE_CASES: list[tuple[str, str, str, dict[str, Any] | None, bool]] = [
    ("viewer", "get", "/communes/xa-p/quiet-hours", None, True),
    ("viewer", "put", "/communes/xa-p/quiet-hours", QUIET, False),
    ("operator", "put", "/communes/xa-p/quiet-hours", QUIET, False),
    ("admin", "put", "/communes/xa-p/quiet-hours", QUIET, True),
    ("viewer", "get", "/communes/xa-p/holidays", None, True),
    ("viewer", "post", "/communes/xa-p/holidays", {"date": "2030-09-02", "name": "x"}, False),
    ("operator", "post", "/communes/xa-p/holidays", {"date": "2030-09-02", "name": "x"}, True),
    ("admin", "post", "/communes/xa-p/holidays", {"date": "2030-04-30", "name": "x"}, True),
    ("viewer", "delete", "/communes/xa-p/holidays/2030-09-02", None, False),
    ("operator", "delete", "/communes/xa-p/holidays/2030-09-02", None, True),
    ("viewer", "put", "/schedules/1", {}, False),
    ("viewer", "delete", "/schedules/1", None, False),
    ("viewer", "post", "/schedules/preview", {"rule": daily("07:00")}, True),
    ("viewer", "get", "/zones/xa-p/programme", None, True),
]


def test_roles_of_the_programme_routes(client: FlaskClient) -> None:
    """Viewers read; operators keep the calendar and the schedules; admins set quiet hours."""
    tokens = {role: token_for(client, role) for role in ("viewer", "operator", "admin")}
    for role, method, path, payload, allowed in ROLE_CASES:
        call = getattr(client, method)
        assert call(f"/api/v1{path}", json=payload).status_code == 401, path
        resp = call(f"/api/v1{path}", json=payload, headers=tokens[role])
        case = (role, method, path, resp.get_json())
        if allowed:
            assert resp.status_code in (200, 201, 204), case
        else:
            assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "forbidden", case


GOOD = body(daily("07:00"), ["thon-p1"])
BAD_SCHEDULES: list[tuple[dict[str, Any], str]] = [
    ({"name": 123}, "name"),
    ({"name": "x" * 5000}, "name"),
    ({"zone_ids": "thon-p1"}, "zone_ids"),
    ({"zone_ids": ["thon-p1", "xa-q"]}, "zone_ids"),  # two communes
    ({"zone_ids": ["thon-p9"]}, "zone_ids"),
    ({"colour": "red"}, "colour"),
    ({"gong": "maybe"}, "gong"),
    ({"volume_pct": 150}, "volume_pct"),
    ({"on_conflict": "later"}, "on_conflict"),
    ({"bulletin_level": "urgent"}, "bulletin_level"),
    ({"audio_sha256": "d" * 64}, "audio_sha256"),
    ({"rule": "daily"}, "rule"),
    ({"rule": daily("07:00", start="2030-02-30")}, "rule.start_date"),
    ({"rule": daily("7 giờ")}, "rule.times.0"),
    ({"rule": daily("07:00", colour="red")}, "rule.colour"),
    ({"rule": daily("07:00", exceptions=["2030-01-05"] * 2000)}, "rule"),
    ({"rule": {"kind": "once", "at": "x" * 100_000}}, "rule"),
]


def test_bad_schedule_bodies_name_the_field(client: FlaskClient, operator: dict[str, str]) -> None:
    for change, field in BAD_SCHEDULES:
        attempts = [("/api/v1/schedules", GOOD | change)]
        if set(change) <= {"rule", "zone_ids"}:  # the preview takes these too
            preview = {"rule": GOOD["rule"], "zone_ids": GOOD["zone_ids"]} | change
            attempts.append(("/api/v1/schedules/preview", preview))
        for path, payload in attempts:
            resp = client.post(path, json=payload, headers=operator)
            assert resp.status_code == 422, (path, change, resp.get_json())
            err = resp.get_json()["error"]
            assert err["field"] == field, (path, change, err)
            assert field.split(".")[0] in err["message"], (path, change, err)
    assert client.get("/api/v1/schedules", headers=operator).get_json() == []


BAD_COMMUNE_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("quiet-hours", {"start": "25:00", "end": "05:00"}, "start"),
    ("quiet-hours", {"start": "22:00", "end": "5:00"}, "end"),
    ("quiet-hours", {"start": 22, "end": "05:00"}, "start"),
    ("quiet-hours", {"start": "22:00"}, "end"),
    ("quiet-hours", {"start": "22:00", "end": "05:00", "days": [1]}, "days"),
    ("holidays", {"date": "30/04/2030", "name": "x"}, "date"),
    ("holidays", {"date": 1903737600, "name": "x"}, "date"),
    ("holidays", {"date": "2030-02-30", "name": "x"}, "date"),
    ("holidays", {"date": "1930-04-30", "name": "x"}, "date"),
    ("holidays", {"date": "2030-04-30T00:00:00", "name": "x"}, "date"),
    ("holidays", {"date": "2030-04-30", "name": ""}, "name"),
    ("holidays", {"date": "2030-04-30", "name": "x" * 5000}, "name"),
    ("holidays", {"date": "2030-04-30", "name": "x", "end_date": "2030-04-29"}, "end_date"),
    ("holidays", {"date": "2030-01-01", "name": "x", "end_date": "2030-03-01"}, "end_date"),
    ("holidays", {"date": "2030-04-30", "name": "x", "kind": "national"}, "kind"),
]


def test_bad_commune_bodies_name_the_field(client: FlaskClient) -> None:
    admin = token_for(client, "admin")
    for path, payload, field in BAD_COMMUNE_BODIES:
        call = client.put if path == "quiet-hours" else client.post
        resp = call(f"/api/v1/communes/xa-p/{path}", json=payload, headers=admin)
        assert resp.status_code == 422, (payload, resp.get_json())
        err = resp.get_json()["error"]
        assert err["field"] == field and field in err["message"], (payload, err)
    assert client.get("/api/v1/communes/xa-p/holidays", headers=admin).get_json() == []


# --- the schema ---------------------------------------------------------------------------------


def test_migration_0003_matches_the_models_and_keeps_existing_schedules(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "0002")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audio_files (sha256, name, original_name, duration_ms, size_bytes,"
                    " mime, created_at) VALUES (:sha, 'a', 'a.mp3', 1000, 10, 'audio/mpeg', :now)"
                ),
                {"sha": SHORT, "now": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO schedules (name, audio_sha256, rule, zone_ids, priority, gong,"
                    " enabled, created_at, updated_at) VALUES ('old', :sha, '{}', '[]',"
                    " 'scheduled', 0, 1, :now, :now)"
                ),
                {"sha": SHORT, "now": NOW},
            )
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT on_conflict FROM schedules")).scalar_one() == "refuse"
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        command.downgrade(config, "0002")
        command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_migration_0003_renders_for_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config("postgresql://loa@localhost/loa"), "0002:0003", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE commune_settings" in sql and "quiet_start TIME WITHOUT TIME ZONE" in sql
    assert "CONSTRAINT uq_holidays_zone_id UNIQUE (zone_id, day)" in sql
    assert (
        "ALTER TABLE schedules ADD COLUMN on_conflict VARCHAR(16) DEFAULT 'refuse' NOT NULL" in sql
    )
