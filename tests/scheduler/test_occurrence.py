"""Occurrence ids: deterministic, and valid MQTT command ids."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter

from device_profiles.protocol import MessageId
from scheduler import Occurrence, occurrence_id, parse_occurrence_id

AT = datetime(2025, 1, 6, 0, 0, 5, tzinfo=UTC)


def test_occurrence_id_format() -> None:
    assert occurrence_id(12, AT) == "s12-20250106T000005Z"


def test_the_id_is_the_same_instant_in_any_offset() -> None:
    local = AT.astimezone(timezone(timedelta(hours=7)))
    assert occurrence_id(12, local) == occurrence_id(12, AT)


@pytest.mark.parametrize("schedule_id", [0, 1, 2**31, 10**19 - 1])
def test_ids_are_valid_command_ids(schedule_id: int) -> None:
    value = occurrence_id(schedule_id, AT)
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", value)
    assert TypeAdapter(MessageId).validate_python(value) == value
    assert parse_occurrence_id(value) == (schedule_id, AT)


@pytest.mark.parametrize("schedule_id", [-1, 10**19, True])
def test_bad_schedule_ids_are_refused(schedule_id: int) -> None:
    with pytest.raises(ValueError, match="schedule_id"):
        occurrence_id(schedule_id, AT)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        occurrence_id(1, datetime(2025, 1, 6))


@pytest.mark.parametrize("value", ["x1-20250106T000005Z", "s1-20251306T000005Z", "s1-2025"])
def test_parse_refuses_what_is_not_an_occurrence_id(value: str) -> None:
    with pytest.raises(ValueError, match="not an occurrence id"):
        parse_occurrence_id(value)


def test_occurrence_derives_its_id_and_normalises_to_utc() -> None:
    occ = Occurrence(3, AT.astimezone(timezone(timedelta(hours=7))))
    assert occ.id == "s3-20250106T000005Z"
    assert occ.scheduled_at.tzinfo is UTC
    assert occ == Occurrence(3, AT, "s3-20250106T000005Z")
    with pytest.raises(ValueError, match="does not match"):
        Occurrence(3, AT, "s4-20250106T000005Z")
