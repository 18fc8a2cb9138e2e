"""Command-line times and durations: every value either parses or is a one-line ValueError."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cronflow.schedule import parse_schedule
from cronflow.units import mask_url, parse_since, parse_time, toml_text

NOW = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01",
        "0001-01-01T00:00+05:00",
        "1899-12-31T23:59",
        "9999-12-31",
        "9999-12-31T23:59",
        "9999-12-31T23:59-05:00",
    ],
)
def test_times_outside_the_supported_years_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="years 1900 to 9998"):
        parse_time(text, UTC)


def test_the_edges_of_the_supported_years_parse() -> None:
    plus14 = timezone(timedelta(hours=14))
    assert parse_time("1900-01-01", UTC) == datetime(1900, 1, 1, tzinfo=UTC)
    assert parse_time("9998-12-31T23:59-12:00", UTC).year == 9998
    assert parse_time("1900-01-01T00:00", plus14).tzinfo is plus14


def test_a_wall_time_is_read_as_a_fixed_time_schedule_reads_it() -> None:
    """In a spring-forward gap: the gap's end, where the schedule fires that day (SPEC §3); in
    a fall-back hour: its first occurrence; an explicit offset stays as written."""
    berlin = ZoneInfo("Europe/Berlin")
    gap = parse_time("2026-03-29T02:30", berlin)
    assert gap.isoformat() == "2026-03-29T03:00:00+02:00"
    assert gap == next_fire("30 2 * * *", datetime(2026, 3, 29, tzinfo=berlin))
    assert parse_time("2026-10-25T02:30", berlin).isoformat() == "2026-10-25T02:30:00+02:00"
    assert parse_time("2026-03-29T02:30+01:00", berlin).isoformat() == "2026-03-29T02:30:00+01:00"
    assert parse_time("2026-03-29", berlin).isoformat() == "2026-03-29T00:00:00+01:00"


def next_fire(text: str, after: datetime) -> datetime | None:
    assert isinstance(after.tzinfo, ZoneInfo)
    return parse_schedule(text).next_fire(after, after.tzinfo)


def test_since_names_a_too_long_duration_as_such() -> None:
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_since("99999d", NOW, UTC)
    with pytest.raises(ValueError, match="years 1900 to 9998"):
        parse_since("0001-01-01", NOW, UTC)
    assert parse_since("7d", NOW, UTC) == NOW - timedelta(days=7)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@db1:6379/0", "redis://:***@db1:6379/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("rediss://cronflow:pw@db1.example:6380/1", "rediss://cronflow:***@db1.example:6380/1"),
        ("unix://:pw@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://db1:6379/0", "redis://db1:6379/0"),
        ("redis://user@db1/0", "redis://user@db1/0"),
        ("unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        # Unencoded / or @ in a password: mask too much rather than print a piece of it.
        ("redis://:pa/ss@h/0", "redis://:***@h/0"),
        ("redis://:p@ss@h/0", "redis://:***@h/0"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_mask_url_hides_passwords(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("value", "spelled"),
    [
        (True, "true"),
        (False, "false"),
        (3, "3"),
        (1.5, "1.5"),
        (float("inf"), "inf"),
        ("soon", "'soon'"),
        ([1, True, "a"], "[1, true, 'a']"),
        ({}, "{}"),
        ({"A": False, "two words": 1}, "{ A = false, 'two words' = 1 }"),
        (datetime(2026, 12, 7, 7, 0), "2026-12-07T07:00:00"),
        (date(2026, 12, 7), "2026-12-07"),
        (time(7, 30), "07:30:00"),
    ],
)
def test_values_are_shown_as_toml_spells_them(value: object, spelled: str) -> None:
    assert toml_text(value) == spelled
