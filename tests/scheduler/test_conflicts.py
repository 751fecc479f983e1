"""Conflicts: overlap in time AND in zones (a zone overlaps its ancestors and descendants)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler import ScheduledItem, find_conflicts, parse_rule

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2025, 1, 1, tzinfo=UTC)
END = START + timedelta(days=7)
ANCESTORS: Mapping[str, frozenset[str]] = {
    "xa": frozenset(),
    "thon-a": frozenset({"xa"}),
    "thon-b": frozenset({"xa"}),
    "cum-a1": frozenset({"thon-a", "xa"}),
}


def item(
    schedule_id: int,
    times: list[str],
    zones: set[str],
    duration_ms: int = 5 * 60_000,
    **fields: Any,
) -> ScheduledItem:
    rule = parse_rule(
        {"kind": "recurring", "frequency": "daily", "start_date": "2025-01-01", "times": times}
        | fields
    )
    return ScheduledItem(
        schedule_id, f"Bản tin {schedule_id}", rule, duration_ms, frozenset(zones), ANCESTORS
    )


def conflicts(candidate: ScheduledItem, *others: ScheduledItem, **kw: Any) -> list[Any]:
    return find_conflicts(
        candidate, others, tz=HCM, window_start_utc=START, window_end_utc=END, **kw
    )


def test_overlapping_times_in_the_same_zone_conflict() -> None:
    found = conflicts(item(1, ["07:00"], {"thon-a"}), item(2, ["07:03"], {"thon-a"}))
    assert len(found) == 7
    first = found[0]
    assert (first.other_schedule_id, first.other_name) == (2, "Bản tin 2")
    assert first.candidate_start == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)
    assert first.other_start == datetime(2025, 1, 1, 0, 3, tzinfo=UTC)
    assert first.zones == (("thon-a", "thon-a"),)
    assert first.describe(HCM) == "overlaps “Bản tin 2” at 2025-01-01 07:03 in thon-a"


def test_back_to_back_items_do_not_conflict() -> None:
    assert conflicts(item(1, ["07:00"], {"thon-a"}), item(2, ["07:05"], {"thon-a"})) == []


def test_same_time_in_different_zones_does_not_conflict() -> None:
    assert conflicts(item(1, ["07:00"], {"thon-a"}), item(2, ["07:00"], {"thon-b"})) == []


def test_a_hamlet_conflicts_with_its_commune_and_its_clusters() -> None:
    candidate = item(1, ["07:00"], {"thon-a"})
    commune = item(2, ["07:00"], {"xa"}, end_date="2025-01-01")
    cluster = item(3, ["07:02"], {"cum-a1"}, end_date="2025-01-01")
    found = conflicts(candidate, commune, cluster)
    assert [(c.other_schedule_id, c.zones) for c in found] == [
        (2, (("thon-a", "xa"),)),
        (3, (("thon-a", "cum-a1"),)),
    ]
    assert "thon-a/xa" in found[0].describe(HCM)


def test_an_item_still_playing_when_the_window_opens_counts() -> None:
    # The other starts at 06:58 local on the first day, before the window.
    window = START  # 07:00 local
    found = find_conflicts(
        item(1, ["07:00"], {"xa"}, end_date="2025-01-01"),
        [item(2, ["06:58"], {"xa"})],
        tz=HCM,
        window_start_utc=window,
        window_end_utc=window + timedelta(hours=1),
    )
    assert [c.other_start for c in found] == [window - timedelta(minutes=2)]


def test_a_custom_zone_overlap_and_the_candidates_own_old_version() -> None:
    candidate = item(1, ["07:00"], {"a"}, end_date="2025-01-01")
    old_self = item(1, ["07:00"], {"a"})
    other = item(2, ["07:00"], {"b"}, end_date="2025-01-01")
    assert conflicts(candidate, old_self, other) == []
    found = conflicts(candidate, old_self, other, overlaps=lambda a, b: True)
    assert [(c.other_schedule_id, c.zones) for c in found] == [(2, (("a", "b"),))]


def test_once_against_recurring() -> None:
    once = ScheduledItem(
        9,
        "Thông báo",
        parse_rule({"kind": "once", "at": "2025-01-03T17:01:00"}),
        60_000,
        frozenset({"thon-b"}),
    )
    found = conflicts(once, item(2, ["07:00", "17:00"], {"xa"}))
    assert [(c.candidate_start, c.other_start) for c in found] == [
        (datetime(2025, 1, 3, 10, 1, tzinfo=UTC), datetime(2025, 1, 3, 10, 0, tzinfo=UTC))
    ]
