"""The live board's API: the paged and filtered device list (10,000 devices), its counters,
and the live stream of changed devices fed by the ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, insert, select

from console.api_devices import PROBLEM_SQL
from console.db import Database
from console.device_status import PROBLEMS, faults, fire_alarm, matches, playing
from console.ingest import Incoming, Ingest
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Device,
    Schedule,
    Zone,
    ZoneKind,
)
from device_profiles import protocol as p
from tests.console.conftest import token_for

NOW_MS = 1_790_000_000_000
SHA = "b" * 64
NOW_ISO = "2030-01-01T00:00:00Z"  # a cursor in the future: only a resumed id sends


def state(device_id: str, **fields: Any) -> dict[str, Any]:
    """A retained state as the ingest stores it."""
    msg = p.DeviceState(
        id=p.new_message_id(),
        ts=NOW_MS,
        device_id=device_id,
        profile="speaker-node",
        software_version="1.0",
        volume_pct=fields.pop("volume_pct", 80),
        **fields,
    )
    return msg.model_dump(mode="json")


def fire(*signals: tuple[str, str]) -> p.FirePointState:
    return p.FirePointState(
        siren_on=any(cls == "alarm" for cls, _ in signals),
        signals=[p.ActiveSignal(signal_class=c, signal=s, since=NOW_MS) for c, s in signals],
    )


def telemetry(device_id: str, **fields: Any) -> dict[str, Any]:
    msg = p.Telemetry(id=p.new_message_id(), ts=NOW_MS, device_id=device_id, uptime_s=10, **fields)
    return msg.model_dump(mode="json")


ZONES = [
    ("xa", "Xã Hòa Bình", ZoneKind.COMMUNE, None),
    ("thon-dong", "Thôn Đông", ZoneKind.HAMLET, "xa"),
    ("thon-tay", "Thôn Tây", ZoneKind.HAMLET, "xa"),
    ("cum-cho", "Cụm Chợ", ZoneKind.CLUSTER, "thon-dong"),
]
PLAYING = p.Playing(command_id="b-sang", priority="scheduled", started_at=NOW_MS)


def fleet_rows() -> list[dict[str, Any]]:
    """Devices in every condition the board distinguishes (what state/telemetry say)."""

    def dev(device_id: str, zone: str, online: bool, **extra: Any) -> dict[str, Any]:
        return {
            "id": device_id,
            "name": extra.pop("name", f"Loa {device_id}"),
            "profile": "speaker-node",
            "zone_id": zone,
            "secret_sha256": "x",
            "online": online,
            "state": extra.pop("state", state(device_id)),
            "telemetry": extra.pop("telemetry", telemetry(device_id, disk_free_mb=5000)),
        }

    return [
        dev("loa-idle", "thon-dong", True, name="Loa Đầu Làng"),
        dev("loa-off", "thon-dong", False, state=None, telemetry=None),
        dev(
            "loa-play", "cum-cho", True, state=state("loa-play", playing=PLAYING, amplifier_on=True)
        ),
        # Offline with a stale "playing": not counted as playing.
        dev("loa-play-off", "thon-tay", False, state=state("loa-play-off", playing=PLAYING)),
        dev(
            "cc-alarm",
            "cum-cho",
            True,
            state=state("cc-alarm", fire_point=fire(("alarm", "call_point"))),
        ),
        dev(
            "cc-cabinet",
            "thon-tay",
            True,
            state=state("cc-cabinet", fire_point=fire(("supervisory", "cabinet_open"))),
        ),
        dev(
            "cc-mains",
            "thon-tay",
            False,
            state=state("cc-mains", fire_point=fire(("trouble", "mains_lost"))),
        ),
        dev("cc-normal", "thon-tay", True, state=state("cc-normal", fire_point=fire())),
        dev("loa-disk", "xa", True, telemetry=telemetry("loa-disk", disk_free_mb=50)),
        dev("loa-clock", "xa", True, telemetry=telemetry("loa-clock", clock_offset_ms=-5000)),
        dev("loa-hot", "xa", True, telemetry=telemetry("loa-hot", cpu_temp_c=85.5)),
    ]


@pytest.fixture
def fleet(db: Database) -> list[dict[str, Any]]:
    rows = fleet_rows()
    with db.session() as s:
        for zone_id, name, kind, parent in ZONES:
            s.add(Zone(id=zone_id, name=name, kind=kind, parent_id=parent))
            s.flush()
        s.add(AudioFile(sha256=SHA, name="ban-tin.mp3", original_name="a.mp3", duration_ms=1000,
                        size_bytes=1, mime="audio/mpeg"))  # fmt: skip
        s.flush()
        s.add(Schedule(id=7, name="Tin sáng", audio_sha256=SHA, rule={}, zone_ids=["xa"]))
        s.flush()
        s.add(Broadcast(id="b-sang", schedule_id=7, audio_sha256=SHA, priority="scheduled",
                        zone_ids=["xa"], status=BroadcastStatus.SENT))  # fmt: skip
        s.execute(insert(Device), rows)
    return rows


def page(client: FlaskClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = client.get("/api/v1/devices", query_string={"limit": 500, **params}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["X-Total-Count"] == str(resp.get_json()["total"])
    return dict(resp.get_json())


def test_each_problem_filter_lists_exactly_the_devices_with_that_problem(
    client: FlaskClient, fleet: list[dict[str, Any]]
) -> None:
    viewer = token_for(client, "viewer")
    assert set(PROBLEM_SQL) == set(PROBLEMS)
    for problem in PROBLEMS:
        expected = sorted(
            r["id"] for r in fleet if matches(problem, r["online"], r["state"], r["telemetry"])
        )
        got = page(client, viewer, problem=problem)
        assert [d["id"] for d in got["items"]] == expected, problem
        assert got["total"] == len(expected) == got["summary"]["matching"]
    # Spelled out, so the shared definitions cannot both be wrong the same way.
    ids = lambda **q: [d["id"] for d in page(client, viewer, **q)["items"]]  # noqa: E731
    assert ids(problem="offline") == ["cc-mains", "loa-off", "loa-play-off"]
    assert ids(problem="fault") == ["cc-cabinet", "cc-mains", "loa-clock", "loa-disk", "loa-hot"]
    assert ids(problem="fire_alarm") == ["cc-alarm"]
    assert ids(problem="playing") == ["loa-play"]
    summary = page(client, viewer)["summary"]
    assert summary == {"total": 11, "online": 8, "offline": 3, "fault": 5, "fire_alarm": 1,
                       "playing": 1, "matching": 11}  # fmt: skip


def test_a_page_carries_what_the_board_shows(
    client: FlaskClient, fleet: list[dict[str, Any]]
) -> None:
    viewer = token_for(client, "viewer")
    rows = {d["id"]: d for d in page(client, viewer)["items"]}
    playing_row = rows["loa-play"]
    assert playing_row["playing"]["command_id"] == "b-sang"
    assert playing_row["playing"]["title"] == "Tin sáng"  # the schedule's name
    assert playing_row["amplifier_on"] is True and playing_row["volume_pct"] == 80
    assert rows["loa-play-off"]["playing"] is None
    assert rows["cc-alarm"]["fire_state"] == "alarm" and rows["cc-alarm"]["fire_alarm"]
    assert rows["cc-cabinet"]["fire_state"] == "supervisory"
    assert rows["cc-mains"]["fire_state"] == "trouble"
    assert rows["cc-normal"]["fire_state"] == "normal"
    assert rows["loa-idle"]["fire_state"] is None  # not a fire point
    assert [f["signal"] for f in rows["cc-mains"]["faults"]] == ["mains_lost"]
    assert rows["loa-hot"]["faults"] == [
        {"signal": "overheating", "class": "health", "since": None}
    ]
    for row in fleet:
        assert rows[row["id"]]["faults"] == faults(row["state"], row["telemetry"])
        assert rows[row["id"]]["fire_alarm"] == fire_alarm(row["state"])
        assert (rows[row["id"]]["playing"] is None) == (
            playing(row["online"], row["state"]) is None
        )


def test_zone_search_and_paging_filters(client: FlaskClient, fleet: list[dict[str, Any]]) -> None:
    viewer = token_for(client, "viewer")
    ids = lambda **q: [d["id"] for d in page(client, viewer, **q)["items"]]  # noqa: E731
    # A hamlet includes its clusters; the commune includes everything.
    assert ids(zone="thon-dong") == ["cc-alarm", "loa-idle", "loa-off", "loa-play"]
    assert ids(zone="cum-cho") == ["cc-alarm", "loa-play"]
    assert len(ids(zone="xa")) == len(fleet)
    assert ids(zone="thon-dong", problem="offline") == ["loa-off"]
    counts = page(client, viewer, zone="thon-dong", problem="offline")["summary"]
    assert (counts["total"], counts["offline"], counts["matching"]) == (4, 1, 1)
    # Search by id or name, Vietnamese letters in any case.
    assert ids(q="đầu làng") == ["loa-idle"]
    assert ids(q="LOA-HOT") == ["loa-hot"]
    assert ids(q="100%") == []  # LIKE wildcards are plain characters
    # Paging.
    first = page(client, viewer, limit=4, offset=0)
    second = page(client, viewer, limit=4, offset=4)
    assert first["total"] == second["total"] == len(fleet)
    assert [d["id"] for d in first["items"] + second["items"]] == sorted(r["id"] for r in fleet)[:8]
    assert page(client, viewer, limit=4, offset=100)["items"] == []


def test_the_plain_list_stays_a_list_for_older_callers(
    client: FlaskClient, fleet: list[dict[str, Any]]
) -> None:
    viewer = token_for(client, "viewer")
    resp = client.get("/api/v1/devices", headers=viewer)
    body = resp.get_json()
    assert isinstance(body, list) and len(body) == len(fleet)
    assert resp.headers["X-Total-Count"] == str(len(fleet))
    assert set(body[0]) >= {"id", "name", "zone_id", "online", "last_seen_at", "state", "telemetry"}
    # Filters apply to it too.
    offline = client.get("/api/v1/devices?problem=offline", headers=viewer).get_json()
    assert sorted(d["id"] for d in offline) == ["cc-mains", "loa-off", "loa-play-off"]


BAD_FILTERS = [
    ({"zone": "khong-co"}, "zone"),
    ({"zone": "x" * 5000}, "zone"),
    ({"zone": "<script>alert(1)</script>"}, "zone"),
    ({"problem": "dancing"}, "problem"),
    ({"q": "a" * 101}, "q"),
]
BAD_PAGING = [
    ({"limit": "abc"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"offset": "1e3"}, "offset"),
]


def test_bad_filters_get_clear_errors(client: FlaskClient, fleet: list[dict[str, Any]]) -> None:
    viewer = token_for(client, "viewer")
    cases = [(q, f, "/api/v1/devices") for q, f in BAD_FILTERS + BAD_PAGING]
    cases += [(q, f, "/api/v1/devices/live") for q, f in BAD_FILTERS]
    cases += [({"since": "yesterday"}, "since", "/api/v1/devices/live")]
    cases += [({"since": "2026-01-01T00:00:00"}, "since", "/api/v1/devices/live")]  # no zone
    for query, field, path in cases:
        resp = client.get(path, query_string=query, headers=viewer)
        assert resp.status_code == 422, (path, query)
        error = resp.get_json()["error"]
        assert error["field"] == field and len(error["message"]) < 200, error
    assert client.get("/api/v1/devices", headers=viewer).status_code == 200  # still serving


def test_ten_thousand_devices_a_page_and_its_total_in_a_fixed_number_of_queries(
    client: FlaskClient, db: Database
) -> None:
    with db.session() as s:
        s.add(Zone(id="xa-lon", name="Xã Lớn", kind=ZoneKind.COMMUNE))
        s.flush()
        for n in range(10):
            s.add(Zone(id=f"thon-{n}", name=f"Thôn {n}", kind=ZoneKind.HAMLET, parent_id="xa-lon"))
        s.flush()
        s.execute(
            insert(Device),
            [
                {
                    "id": f"loa-{i:05d}",
                    "name": f"Loa số {i}",
                    "profile": "speaker-node",
                    "zone_id": f"thon-{i % 10}",
                    "secret_sha256": "x",
                    "online": i % 7 != 0,
                    "state": state(f"loa-{i:05d}", playing=PLAYING) if i % 100 == 0 else None,
                    "telemetry": None,
                }
                for i in range(10_000)
            ],
        )
    viewer = token_for(client, "viewer")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    page(client, viewer, limit=1)  # the counters, counted once (then kept until a change)
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        page(client, viewer, limit=50, offset=9_900)  # one playing device among them
        small = len(statements)
        statements.clear()
        big = page(client, viewer, limit=500, offset=0)  # five
        assert len(statements) == small  # no query per device
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    last = page(client, viewer, limit=50, offset=9_975)
    assert last["total"] == 10_000
    assert [d["id"] for d in last["items"]] == [f"loa-{i:05d}" for i in range(9_975, 10_000)]
    assert len(big["items"]) == 500 and big["items"][0]["id"] == "loa-00000"
    assert big["summary"]["offline"] == len(range(0, 10_000, 7))
    offline = page(client, viewer, limit=50, problem="offline", zone="thon-3")
    assert offline["total"] == sum(1 for i in range(10_000) if i % 7 == 0 and i % 10 == 3)
    assert all(not d["online"] and d["zone_id"] == "thon-3" for d in offline["items"])
    # Online devices playing (i % 100 == 0 and i % 7 != 0).
    playing_total = page(client, viewer, limit=1, problem="playing")["total"]
    assert playing_total == sum(1 for i in range(0, 10_000, 100) if i % 7 != 0)


def test_the_zone_tree_counts_devices_in_each_zone_and_below(
    client: FlaskClient, fleet: list[dict[str, Any]]
) -> None:
    tree = client.get("/api/v1/zones/tree", headers=token_for(client, "viewer")).get_json()
    assert len(tree) == 1
    commune = tree[0]
    assert (commune["id"], commune["kind"], commune["devices"], commune["devices_total"]) == (
        "xa", "commune", 3, len(fleet))  # fmt: skip
    hamlets = {h["id"]: h for h in commune["children"]}
    assert [h["name"] for h in commune["children"]] == ["Thôn Đông", "Thôn Tây"]
    assert (hamlets["thon-dong"]["devices"], hamlets["thon-dong"]["devices_total"]) == (2, 4)
    [cluster] = hamlets["thon-dong"]["children"]
    assert (cluster["id"], cluster["kind"], cluster["devices_total"]) == ("cum-cho", "cluster", 2)


# --- the live stream ----------------------------------------------------------------------


class Stream:
    """Reads server-sent events from a streamed test-client response."""

    def __init__(self, client: FlaskClient, url: str, headers: dict[str, str]) -> None:
        self.resp = client.get(url, headers=headers, buffered=False)
        assert self.resp.status_code == 200
        assert self.resp.mimetype == "text/event-stream"
        self._chunks: Iterator[bytes] = iter(self.resp.response)
        self._buffer = ""
        self.last_id: str | None = None

    def next_event(self) -> tuple[str, Any]:
        while "\n\n" not in self._buffer:
            chunk = next(self._chunks)
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self._buffer = self._buffer.split("\n\n", 1)
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line.startswith("id: "):
                self.last_id = line[4:]
        if not name:
            return self.next_event()  # retry: or a comment
        return name, json.loads("\n".join(data))

    def until(self, name: str, pred: Any = lambda data: True, max_events: int = 50) -> Any:
        for _ in range(max_events):
            got, data = self.next_event()
            if got == name and pred(data):
                return data
        raise AssertionError(f"no {name} event")

    def close(self) -> None:
        self.resp.close()


def availability(device_id: str, online: bool) -> Incoming:
    msg = p.Availability(id=p.new_message_id(), ts=NOW_MS, device_id=device_id,
                         state="online" if online else "offline")  # fmt: skip
    return Incoming(p.device_topic(device_id, p.Channel.AVAILABILITY), p.encode(msg),
                    datetime.now(UTC))  # fmt: skip


def test_the_stream_sends_devices_the_ingest_changed_within_the_filter(
    client: FlaskClient, db: Database, fleet: list[dict[str, Any]]
) -> None:
    viewer = token_for(client, "viewer")
    query = urlencode({"zone": "thon-dong", "problem": "offline",
                       "since": (datetime.now(UTC) - timedelta(seconds=5)).isoformat()})  # fmt: skip
    stream = Stream(client, f"/api/v1/devices/live?{query}", viewer)
    try:
        first = stream.until("summary")
        assert (first["total"], first["offline"], first["matching"]) == (4, 1, 1)
        ingest = Ingest(db)  # the real clock: changed_at is when it was stored
        # Out of the zone: not sent. In the zone, going offline: sent, and counted.
        ingest.handle_batch([availability("loa-hot", False), availability("loa-idle", False)])
        got = stream.until("devices")
        assert [d["id"] for d in got["items"]] == ["loa-idle"] and got["left"] == []
        assert got["items"][0]["online"] is False
        counts = stream.until("summary")
        assert (counts["offline"], counts["matching"]) == (2, 2)
        # Back online: it leaves the "offline" filter; the page learns it by its id.
        ingest.handle_batch([availability("loa-idle", True)])
        got = stream.until("devices")
        assert got == {"items": [], "left": ["loa-idle"]}
        assert stream.until("summary")["offline"] == 1
        # A state (something started playing) moves the cursor too.
        playing_state = p.DeviceState(id="s1", ts=NOW_MS, device_id="loa-off", profile="speaker-node",
                                      software_version="1.0", volume_pct=70, playing=PLAYING)  # fmt: skip
        ingest.handle_batch([Incoming(p.device_topic("loa-off", p.Channel.STATE),
                                      p.encode(playing_state), datetime.now(UTC))])  # fmt: skip
        got = stream.until("devices")
        assert got["items"][0]["id"] == "loa-off" and got["items"][0]["volume_pct"] == 70
        # A device registered in the zone: the counters follow.
        with db.session() as s:
            s.add(Device(id="loa-moi", name="Loa mới", profile="speaker-node",
                         zone_id="cum-cho", secret_sha256="x"))  # fmt: skip
        counts = stream.until("summary", lambda c: c["total"] == 5)
        assert (counts["offline"], counts["matching"]) == (2, 2)
        resume_from = stream.last_id
        assert resume_from is not None  # the cursor, sent back on reconnect
    finally:
        stream.close()
    # A browser reconnecting sends the last id it saw: changes from then on come again.
    ingest.handle_batch([availability("loa-off", True)])
    again = Stream(client, f"/api/v1/devices/live?zone=thon-dong&problem=offline&since={NOW_ISO}",
                   {**viewer, "Last-Event-ID": resume_from})  # fmt: skip
    try:
        got = again.until("devices")
        assert "loa-off" in got["left"]  # back online: out of the "offline" filter
    finally:
        again.close()


def test_telemetry_moves_the_cursor_only_when_a_health_fault_changes(db: Database) -> None:
    with db.session() as s:
        s.add(Zone(id="xa-t", name="Xã", kind=ZoneKind.COMMUNE))
        s.flush()
        s.add(Device(id="loa-t", name="Loa", profile="speaker-node", zone_id="xa-t",
                     secret_sha256="x"))  # fmt: skip
    ticks = iter(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n) for n in range(100))
    ingest = Ingest(db, clock=lambda: next(ticks))

    def send(**fields: Any) -> datetime | None:
        msg = p.Telemetry(id=p.new_message_id(), ts=NOW_MS, device_id="loa-t", uptime_s=1, **fields)
        ingest.handle_batch([Incoming(p.device_topic("loa-t", p.Channel.TELEMETRY), p.encode(msg),
                                      datetime.now(UTC))])  # fmt: skip
        with db.session() as s:
            return s.scalar(select(Device.changed_at).where(Device.id == "loa-t"))

    first = send(disk_free_mb=900)
    assert first is None  # nothing the board shows
    low = send(disk_free_mb=100)
    assert low is not None
    assert send(disk_free_mb=90) == low  # still low: nothing new
    assert send(disk_free_mb=900) != low
