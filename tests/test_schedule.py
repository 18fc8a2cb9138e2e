"""Tests for cronflow.schedule: cron semantics, DST policy (SPEC §4), errors, descriptions.

The property tests compare against a brute-force reference that walks every UTC minute of a
window, looks at the wall clock in the zone, and applies cron's matching and the DST policy
independently of the module under test.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cronflow.schedule import Schedule, ScheduleError, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")


def iso(fires: list[datetime]) -> list[str]:
    return [f.isoformat() for f in fires]


def between(expr: str, zone: str, start: str, end: str) -> list[str]:
    """Fires of `expr` between two ISO times (read in `zone` when they have no offset)."""
    tz = ZoneInfo(zone)
    lo, hi = (datetime.fromisoformat(t) for t in (start, end))
    lo, hi = (t if t.tzinfo else t.replace(tzinfo=tz) for t in (lo, hi))
    fires = parse_schedule(expr).fires_between(lo, hi, tz)
    assert all(f.tzinfo is tz for f in fires)
    return iso(fires)


# -- DST vectors (2026: EU changes on Mar 29 and Oct 25, US on Mar 8 and Nov 1) ----------------

DST_VECTORS = [
    # fixed-time job in the spring gap: runs once at the end of the gap
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00", "2026-03-30T12:00",
     ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00", "2026-03-09T12:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # fixed-time job in a repeated hour: first occurrence only
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00", "2026-10-26T12:00",
     ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ("30 2 * * *", "America/New_York", "2026-10-31T12:00", "2026-11-02T12:00",
     ["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"]),
    ("30 1 * * *", "Europe/Berlin", "2026-03-28T12:00", "2026-03-30T12:00",
     ["2026-03-29T01:30:00+01:00", "2026-03-30T01:30:00+02:00"]),
    ("30 1 * * *", "Europe/Berlin", "2026-10-24T12:00", "2026-10-26T12:00",
     ["2026-10-25T01:30:00+02:00", "2026-10-26T01:30:00+01:00"]),
    ("30 1 * * *", "America/New_York", "2026-03-07T12:00", "2026-03-09T12:00",
     ["2026-03-08T01:30:00-05:00", "2026-03-09T01:30:00-04:00"]),
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00", "2026-11-02T12:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # several fixed-time fires in one gap run once; fires on the same instant run once
    ("0,30 2 * * *", "Europe/Berlin", "2026-03-29T00:00", "2026-03-29T12:00",
     ["2026-03-29T03:00:00+02:00"]),
    ("0,30 2,3 * * *", "Europe/Berlin", "2026-03-29T00:00", "2026-03-29T12:00",
     ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]),
    # clock-following jobs: no fires in the gap, both occurrences of a repeated hour
    ("0 * * * *", "Europe/Berlin", "2026-03-29T00:00", "2026-03-29T04:00",
     ["2026-03-29T00:00:00+01:00", "2026-03-29T01:00:00+01:00",
      "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]),
    ("0 * * * *", "Europe/Berlin", "2026-10-25T00:00", "2026-10-25T04:00",
     ["2026-10-25T00:00:00+02:00", "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00",
      "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]),
    ("0 * * * *", "America/New_York", "2026-03-08T00:00", "2026-03-08T04:00",
     ["2026-03-08T00:00:00-05:00", "2026-03-08T01:00:00-05:00",
      "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]),
    ("0 * * * *", "America/New_York", "2026-11-01T00:00", "2026-11-01T04:00",
     ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00",
      "2026-11-01T02:00:00-05:00", "2026-11-01T03:00:00-05:00", "2026-11-01T04:00:00-05:00"]),
    ("*/30 * * * *", "Europe/Berlin", "2026-03-29T01:00", "2026-03-29T03:30",
     ["2026-03-29T01:00:00+01:00", "2026-03-29T01:30:00+01:00",
      "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]),
    ("*/30 * * * *", "Europe/Berlin", "2026-10-25T01:30+02:00", "2026-10-25T03:00+01:00",
     ["2026-10-25T01:30:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00",
      "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]),
    ("*/30 * * * *", "America/New_York", "2026-03-08T01:00", "2026-03-08T03:30",
     ["2026-03-08T01:00:00-05:00", "2026-03-08T01:30:00-05:00",
      "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]),
    ("*/30 * * * *", "America/New_York", "2026-11-01T00:30-04:00", "2026-11-01T02:00-05:00",
     ["2026-11-01T00:30:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00",
      "2026-11-01T01:00:00-05:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:00:00-05:00"]),
    ("5-59/15 * * * *", "Europe/Berlin", "2026-03-29T01:00", "2026-03-29T03:30",
     ["2026-03-29T01:05:00+01:00", "2026-03-29T01:20:00+01:00", "2026-03-29T01:35:00+01:00",
      "2026-03-29T01:50:00+01:00", "2026-03-29T03:05:00+02:00", "2026-03-29T03:20:00+02:00"]),
    ("5-59/15 * * * *", "Europe/Berlin", "2026-10-25T01:50+02:00", "2026-10-25T03:05+01:00",
     ["2026-10-25T01:50:00+02:00", "2026-10-25T02:05:00+02:00", "2026-10-25T02:20:00+02:00",
      "2026-10-25T02:35:00+02:00", "2026-10-25T02:50:00+02:00", "2026-10-25T02:05:00+01:00",
      "2026-10-25T02:20:00+01:00", "2026-10-25T02:35:00+01:00", "2026-10-25T02:50:00+01:00",
      "2026-10-25T03:05:00+01:00"]),
    ("5-59/15 * * * *", "America/New_York", "2026-03-08T01:40", "2026-03-08T03:10",
     ["2026-03-08T01:50:00-05:00", "2026-03-08T03:05:00-04:00"]),
    ("5-59/15 * * * *", "America/New_York", "2026-11-01T01:40-04:00", "2026-11-01T01:10-05:00",
     ["2026-11-01T01:50:00-04:00", "2026-11-01T01:05:00-05:00"]),
    # midnight is never in a gap here; weekly and monthly jobs keep their wall time
    ("0 0 * * 7", "Europe/Berlin", "2026-03-20T00:00", "2026-04-06T00:00",
     ["2026-03-22T00:00:00+01:00", "2026-03-29T00:00:00+01:00", "2026-04-05T00:00:00+02:00"]),
    ("0 0 * * 7", "America/New_York", "2026-03-01T00:00", "2026-03-16T00:00",
     ["2026-03-01T00:00:00-05:00", "2026-03-08T00:00:00-05:00", "2026-03-15T00:00:00-04:00"]),
    ("0 0 * * 7", "Europe/Berlin", "2026-10-18T00:00", "2026-11-01T00:00",
     ["2026-10-18T00:00:00+02:00", "2026-10-25T00:00:00+02:00", "2026-11-01T00:00:00+01:00"]),
    ("0 0 * * 7", "America/New_York", "2026-10-25T00:00", "2026-11-08T00:00",
     ["2026-10-25T00:00:00-04:00", "2026-11-01T00:00:00-04:00", "2026-11-08T00:00:00-05:00"]),
    # day-of-month OR day-of-week: the 1st, the 15th, and every Monday
    ("0 0 1,15 * 1", "Europe/Berlin", "2026-03-01T00:00", "2026-04-01T00:00",
     ["2026-03-01T00:00:00+01:00", "2026-03-02T00:00:00+01:00", "2026-03-09T00:00:00+01:00",
      "2026-03-15T00:00:00+01:00", "2026-03-16T00:00:00+01:00", "2026-03-23T00:00:00+01:00",
      "2026-03-30T00:00:00+02:00", "2026-04-01T00:00:00+02:00"]),
    ("0 0 1,15 * 1", "America/New_York", "2026-03-01T00:00", "2026-04-01T00:00",
     ["2026-03-01T00:00:00-05:00", "2026-03-02T00:00:00-05:00", "2026-03-09T00:00:00-04:00",
      "2026-03-15T00:00:00-04:00", "2026-03-16T00:00:00-04:00", "2026-03-23T00:00:00-04:00",
      "2026-03-30T00:00:00-04:00", "2026-04-01T00:00:00-04:00"]),
    ("0 0 1,15 * 1", "Europe/Berlin", "2026-10-24T00:00", "2026-11-16T00:00",
     ["2026-10-26T00:00:00+01:00", "2026-11-01T00:00:00+01:00", "2026-11-02T00:00:00+01:00",
      "2026-11-09T00:00:00+01:00", "2026-11-15T00:00:00+01:00", "2026-11-16T00:00:00+01:00"]),
    ("0 0 1,15 * 1", "America/New_York", "2026-10-24T00:00", "2026-11-16T00:00",
     ["2026-10-26T00:00:00-04:00", "2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00",
      "2026-11-09T00:00:00-05:00", "2026-11-15T00:00:00-05:00", "2026-11-16T00:00:00-05:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "zone", "start", "end", "expected"), DST_VECTORS)
def test_dst_vectors(expr: str, zone: str, start: str, end: str, expected: list[str]) -> None:
    assert between(expr, zone, start, end) == expected


def test_the_2026_change_days_are_sundays() -> None:
    for day in ("2026-03-29", "2026-10-25", "2026-03-08", "2026-11-01"):
        assert datetime.fromisoformat(day).weekday() == 6


NEXT_FIRE_VECTORS = [
    # `after` inside the second pass of a repeated hour
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T02:40+01:00", "2026-10-25T02:45:00+01:00"),
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T02:40+02:00", "2026-10-25T02:45:00+02:00"),
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T02:50+02:00", "2026-10-25T02:00:00+01:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10+01:00", "2026-10-26T02:30:00+01:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T02:10+02:00", "2026-10-25T02:30:00+02:00"),
    # `after` exactly at the end of the gap: the gap fire is not strictly after it
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T03:00+02:00", "2026-03-30T02:30:00+02:00"),
    ("30 2 * * *", "Europe/Berlin", "2026-03-29T01:59:59+01:00", "2026-03-29T03:00:00+02:00"),
    # `after` in another zone; the result is in the job's zone
    ("0 9 * * *", "America/New_York", "2026-06-01T12:00+00:00", "2026-06-01T09:00:00-04:00"),
    ("0 9 * * *", "America/New_York", "2026-06-01T13:00+00:00", "2026-06-02T09:00:00-04:00"),
    ("0 0 29 2 *", "Europe/Berlin", "2026-01-01T00:00+01:00", "2028-02-29T00:00:00+01:00"),
    ("0 0 29 2 mon", "Europe/Berlin", "2026-01-01T00:00+01:00", "2026-02-02T00:00:00+01:00"),
    ("59 23 31 12 *", "UTC", "2026-12-31T23:59+00:00", "2027-12-31T23:59:00+00:00"),
    ("* * * * *", "UTC", "2026-12-31T23:59:30+00:00", "2027-01-01T00:00:00+00:00"),
]


@pytest.mark.parametrize(("expr", "zone", "after", "expected"), NEXT_FIRE_VECTORS)
def test_next_fire_vectors(expr: str, zone: str, after: str, expected: str) -> None:
    fire = parse_schedule(expr).next_fire(datetime.fromisoformat(after), ZoneInfo(zone))
    assert fire is not None
    assert fire.isoformat() == expected


# -- cron fields -------------------------------------------------------------------------------


def days_of(expr: str, start: str = "2026-01-01", end: str = "2026-03-31") -> list[str]:
    return [f[:10] for f in between(expr, "UTC", start + "T00:00", end + "T23:59")]


def test_dom_dow_star_means_and_cron_bug() -> None:
    # `*/2` counts as unrestricted, so both fields must match: Mondays on odd dates
    assert days_of("0 0 */2 * mon") == [
        "2026-01-05", "2026-01-19", "2026-02-09", "2026-02-23", "2026-03-09", "2026-03-23",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "0 0 13 * fri",
            ["2026-01-02", "2026-01-09", "2026-01-13", "2026-01-16", "2026-01-23", "2026-01-30"],
        ),
        ("0 0 * * fri", ["2026-01-02", "2026-01-09", "2026-01-16", "2026-01-23", "2026-01-30"]),
        ("0 0 13 * *", ["2026-01-13"]),
        ("0 0 13 * */1", ["2026-01-13"]),
        ("0 0 */1 * fri", ["2026-01-02", "2026-01-09", "2026-01-16", "2026-01-23", "2026-01-30"]),
        ("0 0 1-31 * fri", [f"2026-01-{d:02d}" for d in range(1, 32)]),
        ("0 0 */10 * *", ["2026-01-01", "2026-01-11", "2026-01-21", "2026-01-31"]),
    ],
)
def test_day_rules(expr: str, expected: list[str]) -> None:
    assert days_of(expr, "2026-01-01", "2026-01-31") == expected


@pytest.mark.parametrize(
    ("expr", "same_as"),
    [
        ("0 0 * * 0", "0 0 * * 7"),
        ("0 0 * * sun", "0 0 * * 7"),
        ("0 0 * * SUN", "0 0 * * 0"),
        ("0 0 * * */7", "0 0 * * 0"),
        ("0 0 * * 5-0", "0 0 * * 5,6,0"),
        ("0 0 * * 5-7", "0 0 * * 5,6,0"),
        ("0 0 * * fri-sun", "0 0 * * 5,6,0"),
        ("0 0 * * Fri-Sun", "0 0 * * 5-0"),
        ("0 0 * * mon-fri", "0 0 * * 1-5"),
        ("0 0 * * 0-7", "0 0 * * *"),
        ("0 0 * * 1-7/2", "0 0 * * 1,3,5,0"),
        ("0 0 * * 5-5", "0 0 * * 5"),
        ("0 0 5-5 * *", "0 0 5 * *"),
        ("0 0 * JAN,mar *", "0 0 * 1,3 *"),
        ("0 0 * jan-mar/2 *", "0 0 * 1,3 *"),
        ("0 0 * Feb *", "0 0 * 2 *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
        ("0-59/20 * * * *", "0,20,40 * * * *"),
        ("10-30/7 * * * *", "10,17,24 * * * *"),
        ("1-5/2,40 * * * *", "1,3,5,40 * * * *"),
        ("  0   0 * * *  ", "0 0 * * *"),
    ],
)
def test_equivalent_expressions(expr: str, same_as: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = datetime(2027, 12, 31, tzinfo=UTC) if "0 0" in same_as else start + timedelta(days=1)
    assert parse_schedule(expr).fires_between(start, end, BERLIN) == parse_schedule(
        same_as
    ).fires_between(start, end, BERLIN)


def test_hourly_macro() -> None:
    assert between("@hourly", "UTC", "2026-01-01T00:30", "2026-01-01T02:30") == [
        "2026-01-01T01:00:00+00:00",
        "2026-01-01T02:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("expr", "follows"),
    [
        ("*/15 * * * *", True),
        ("0 * * * *", True),
        ("* 3 * * *", True),
        ("*/5 9-17 * * *", True),
        ("@hourly", True),
        ("30 2 * * *", False),
        ("0 */2 * * *", True),
        ("0,30 1-3 * * *", False),
        ("@daily", False),
        ("@every 15m", False),
        ("@reboot", False),
        ("@at 2026-12-07T07:00", False),
    ],
)
def test_follows_clock(expr: str, follows: bool) -> None:
    assert parse_schedule(expr).follows_clock is follows


# -- errors ------------------------------------------------------------------------------------

ERRORS = [
    ("5/15 * * * *", ["step without a range", "5-59/15", "*/15"]),
    ("0 0 L * *", ["'L'", "not supported"]),
    ("0 0 15W * *", ["'15W'", "not supported"]),
    ("0 0 LW * *", ["not supported"]),
    ("0 0 * * 5L", ["'5L'", "not supported"]),
    ("0 0 * * mon#2", ["'#'", "not supported"]),
    ("0 0 * * 1#2", ["'#'", "not supported"]),
    ("0 0 ? * mon", ["'?'", "use '*'"]),
    ("0 0 0 * * *", ["5 fields", "got 6", "seconds"]),
    ("0 0 0 * * * 2026", ["5 fields", "got 7"]),
    ("0 0 * *", ["5 fields", "got 4"]),
    ("0 0 * * monday", ["full day names", "'mon'"]),
    ("0 0 * * Monday-Friday", ["full day names", "'mon'"]),
    ("0 0 * january *", ["full month names", "'jan'"]),
    ("0 0 * * foo", ["not a day name", "sun-sat"]),
    ("0 0 * foo *", ["not a month name", "jan-dec"]),
    ("0 0 jan * *", ["not valid in the day-of-month field"]),
    ("10-5 * * * *", ["'10-5'", "reversed", "smaller value first"]),
    ("0 20-4 * * *", ["reversed"]),
    ("0 0 * dec-jan *", ["reversed"]),
    ("0 0 * * sat-mon", ["reversed", "fri-sun"]),
    ("0 0 * * 6-1", ["reversed", "may end at Sunday"]),
    ("60 * * * *", ["60", "minute", "0-59"]),
    ("0 24 * * *", ["24", "hour", "0-23"]),
    ("0 0 0 * *", ["0", "day-of-month", "1-31"]),
    ("0 0 32 * *", ["32", "day-of-month", "1-31"]),
    ("0 0 * 0 *", ["month", "1-12"]),
    ("0 0 * 13 *", ["13", "month", "1-12"]),
    ("0 0 * * 8", ["8", "day-of-week", "0-7", "Sunday is 0 or 7"]),
    ("*/75 * * * *", ["step 75 is larger than the minute field (0-59)", "'@every 75m'"]),
    ("*/60 * * * *", ["step 60", "'@every 60m'"]),
    ("0 */36 * * *", ["step 36", "hour field (0-23)", "'@every 36h'"]),
    ("0 0 */40 * *", ["step 40", "day-of-month", "'@every 40d'"]),
    ("0 0 * */13 *", ["step 13", "month field (1-12)"]),
    ("0 0 * * */8", ["step 8", "day-of-week field (0-7"]),
    ("*/0 * * * *", ["step 0", "at least 1"]),
    ("*/x * * * *", ["step 'x'", "whole number"]),
    ("0 0 31 2 *", ["can never fire", "day 31", "February"]),
    ("0 0 30 2 *", ["can never fire", "day 30", "February"]),
    ("0 0 30,31 2 */2", ["can never fire", "30 and 31"]),
    ("0 0 31 4,6,9,11 *", ["can never fire", "April, June, September and November"]),
    ("1,,2 * * * *", ["empty item", "minute"]),
    ("-5 * * * *", ["'-5'", "not valid in the minute field"]),
    ("*-5 * * * *", ["not valid"]),
    ("1-2-3 * * * *", ["not valid"]),
    ("0 0 * * mon/2", ["step without a range"]),
    ("", ["empty schedule", "@every"]),
    ("   ", ["empty schedule"]),
    ("@foo", ["unknown schedule '@foo'", "@daily", "@every"]),
    ("@daily 5", ["@daily takes nothing"]),
    ("@reboot now", ["@reboot takes nothing"]),
    ("@every", ["@every needs one duration"]),
    ("@every 0s", ["longer than zero"]),
    ("@every 0", ["longer than zero"]),
    ("@every soon", ["@every", "duration"]),
    ("@every 5 m", ["@every needs one duration"]),
    ("@at", ["@at needs an ISO 8601 date-time"]),
    ("@at tomorrow", ["@at needs an ISO 8601 date-time", "'tomorrow'"]),
    ("@at 2026-13-01T00:00", ["@at needs"]),
]


@pytest.mark.parametrize(("expr", "fragments"), ERRORS)
def test_errors_say_what_is_wrong(expr: str, fragments: list[str]) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expr)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "expr",
    [
        "0 0 29 2 *",  # possible every leap year
        "0 0 31 2 mon",  # the OR rule: every Monday
        "0 0 30,31 2,4 *",
        "59 23 31 12 7",
        "0 0 * * 7-0",
        "0 0 * * 0-0",
        "*/59 */23 */31 */12 */7",
        "0-59/59 0-23/23 1-31/31 1-12/12 0-7/7",
        "0 0 1 1 *",
        "@every 1s",
        "@every 1h30m",
        "@every 90",
        "@reboot",
        "@at 2026-12-07",
        "@at 2026-12-07 07:00",
        "@at 2026-12-07T07:00Z",
    ],
)
def test_valid_edge_expressions(expr: str) -> None:
    schedule = parse_schedule(expr)
    assert schedule.text == expr
    if schedule.kind == "cron":
        assert schedule.next_fire(datetime(2026, 1, 1, tzinfo=UTC), BERLIN) is not None


def test_kinds_and_equality() -> None:
    assert parse_schedule("0 0 * * *").kind == "cron"
    assert parse_schedule("@daily").kind == "cron"
    assert parse_schedule("@every 5m").kind == "every"
    assert parse_schedule("@reboot").kind == "reboot"
    assert parse_schedule("@at 2026-12-07T07:00").kind == "at"
    assert parse_schedule("*/5 * * * *") == parse_schedule("*/5 * * * *")
    assert hash(parse_schedule("@daily")) == hash(parse_schedule("@daily"))
    assert isinstance(parse_schedule("@daily"), Schedule)


# -- @every, @reboot, @at ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("@every 1h", "2026-06-01T10:20:00+02:00", "2026-06-01T11:00:00+02:00"),
        ("@every 1h", "2026-06-01T11:00:00+02:00", "2026-06-01T12:00:00+02:00"),
        ("@every 1d", "2026-01-10T12:00:00+01:00", "2026-01-11T01:00:00+01:00"),
        ("@every 90m", "1970-01-01T01:00:00+01:00", "1970-01-01T02:30:00+01:00"),
        ("@every 90m", "2026-01-01T00:00:00+00:00", "2026-01-01T02:30:00+01:00"),
        ("@every 90m", "2026-01-01T00:10:00+00:00", "2026-01-01T02:30:00+01:00"),
        ("@every 7m", "2026-01-01T00:10:00+00:00", "2026-01-01T01:14:00+01:00"),
        ("@every 1s", "2026-01-01T00:00:00.5+00:00", "2026-01-01T01:00:01+01:00"),
    ],
)
def test_every_is_aligned_to_the_epoch(expr: str, after: str, expected: str) -> None:
    fire = parse_schedule(expr).next_fire(datetime.fromisoformat(after), BERLIN)
    assert fire is not None
    assert fire.isoformat() == expected


def test_every_ignores_dst() -> None:
    fires = between(
        "@every 1h", "Europe/Berlin", "2026-10-25T01:00+02:00", "2026-10-25T03:00+01:00"
    )
    assert fires == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    spring = between("@every 30m", "Europe/Berlin", "2026-03-29T01:30", "2026-03-29T03:30")
    assert spring == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


@given(
    seconds=st.integers(1, 3 * 86400),
    after=st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
)
@settings(max_examples=100, deadline=None, derandomize=True)
def test_every_property(seconds: int, after: datetime) -> None:
    schedule = parse_schedule(f"@every {seconds}s")
    fires = schedule.fires_between(after, after + timedelta(seconds=3 * seconds), NEW_YORK)
    assert len(fires) in (3, 4)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for fire in fires:
        assert (fire - epoch) % timedelta(seconds=seconds) == timedelta(0)
    utc = [f.astimezone(UTC) for f in fires]  # aware arithmetic in one zone is wall-clock
    assert all(b - a == timedelta(seconds=seconds) for a, b in zip(utc, utc[1:], strict=False))
    first = schedule.next_fire(after, NEW_YORK)
    assert first is not None and timedelta(0) < first - after <= timedelta(seconds=seconds)


def test_reboot_never_has_a_next_fire() -> None:
    schedule = parse_schedule("@reboot")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.next_fire(now, BERLIN) is None
    assert schedule.fires_between(now, now + timedelta(days=365), BERLIN) == []


@pytest.mark.parametrize(
    ("expr", "zone", "expected"),
    [
        ("@at 2026-12-07T07:00", "Europe/Berlin", "2026-12-07T07:00:00+01:00"),
        ("@at 2026-12-07T07:00", "America/New_York", "2026-12-07T07:00:00-05:00"),
        ("@at 2026-12-07 07:00", "America/New_York", "2026-12-07T07:00:00-05:00"),
        ("@at 2026-12-07T07:00+00:00", "Europe/Berlin", "2026-12-07T08:00:00+01:00"),
        ("@at 2026-12-07T07:00Z", "America/New_York", "2026-12-07T02:00:00-05:00"),
        ("@at 2026-12-07", "Europe/Berlin", "2026-12-07T00:00:00+01:00"),
        ("@at 2026-12-07T07:00:30", "UTC", "2026-12-07T07:00:30+00:00"),
        # the fixed-time DST policy applies to @at too
        ("@at 2026-03-29T02:30", "Europe/Berlin", "2026-03-29T03:00:00+02:00"),
        ("@at 2026-10-25T02:30", "Europe/Berlin", "2026-10-25T02:30:00+02:00"),
    ],
)
def test_at(expr: str, zone: str, expected: str) -> None:
    tz = ZoneInfo(zone)
    schedule = parse_schedule(expr)
    fire = schedule.next_fire(datetime(2026, 1, 1, tzinfo=UTC), tz)
    assert fire is not None
    assert fire.isoformat() == expected
    assert schedule.next_fire(fire, tz) is None  # strictly after
    assert schedule.next_fire(fire.astimezone(UTC) - timedelta(microseconds=1), tz) == fire
    assert schedule.fires_between(fire, fire, tz) == [fire]


def test_at_in_the_past_is_valid_and_done() -> None:
    schedule = parse_schedule("@at 2020-01-01T00:00")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert schedule.next_fire(now, BERLIN) is None
    assert schedule.fires_between(now, now + timedelta(days=1), BERLIN) == []
    past = schedule.fires_between(datetime(2019, 1, 1, tzinfo=UTC), now, BERLIN)
    assert iso(past) == ["2020-01-01T00:00:00+01:00"]


# -- fires_between -----------------------------------------------------------------------------


def test_fires_between_includes_both_ends() -> None:
    assert between("0 * * * *", "UTC", "2026-01-01T10:00", "2026-01-01T12:00") == [
        "2026-01-01T10:00:00+00:00",
        "2026-01-01T11:00:00+00:00",
        "2026-01-01T12:00:00+00:00",
    ]
    assert between("0 * * * *", "UTC", "2026-01-01T10:00:01", "2026-01-01T11:59:59") == [
        "2026-01-01T11:00:00+00:00"
    ]
    assert between("0 * * * *", "UTC", "2026-01-01T12:00", "2026-01-01T10:00") == []


def test_fires_between_limit_keeps_the_oldest() -> None:
    schedule = parse_schedule("*/10 * * * *")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    fires = schedule.fires_between(start, start + timedelta(days=30), UTC_ZONE, limit=3)
    assert iso(fires) == [
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:10:00+00:00",
        "2026-01-01T00:20:00+00:00",
    ]
    assert schedule.fires_between(start, start + timedelta(days=1), UTC_ZONE, limit=0) == []


def test_fires_between_accepts_instants_in_any_zone() -> None:
    start = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    end = datetime(2026, 3, 29, 3, 0, tzinfo=NEW_YORK)
    fires = parse_schedule("0 * * * *").fires_between(start, end, BERLIN)
    assert fires[0].isoformat() == "2026-03-29T01:00:00+01:00"
    assert fires[-1].isoformat() == "2026-03-29T09:00:00+02:00"
    assert len(fires) == 8  # 01:00, then 03:00 through 09:00 (02:00 does not exist)


# -- describe ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("0 6 * * *", "at 06:00 every day"),
        ("*/15 * * * *", "every 15 minutes"),
        ("* * * * *", "every minute"),
        ("0 * * * *", "at minute 0 past every hour"),
        ("@hourly", "at minute 0 past every hour"),
        ("15,45 * * * *", "at minutes 15 and 45 past every hour"),
        ("0 */2 * * *", "at minute 0 past every 2 hours"),
        ("0 3 * * 1-5", "at 03:00 on Monday through Friday"),
        ("0 3 * * mon-fri", "at 03:00 on Monday through Friday"),
        ("0 9 * * sat,sun", "at 09:00 on Saturday and Sunday"),
        ("0 0 * * 5-0", "at 00:00 on Friday through Sunday"),
        ("0 12 * * 0", "at 12:00 on Sunday"),
        ("@weekly", "at 00:00 on Sunday"),
        ("@daily", "at 00:00 every day"),
        ("@monthly", "at 00:00 on day 1 of the month"),
        ("@yearly", "at 00:00 on day 1 of January"),
        ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
        ("0 0 1,15 * 1", "at 00:00 on days 1 and 15 or on Monday"),
        ("0 0 * jun *", "at 00:00 every day in June"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("30 8 * * 1 ", "at 08:30 on Monday"),
        ("@every 90m", "every 90 minutes (aligned to the epoch)"),
        ("@every 1h", "every hour (aligned to the epoch)"),
        ("@every 2d", "every 2 days (aligned to the epoch)"),
        ("@every 45s", "every 45 seconds (aligned to the epoch)"),
        ("@reboot", "once when the daemon starts after boot"),
        ("@at 2026-12-07T07:00", "once at 2026-12-07 07:00"),
        ("@at 2026-12-07T07:00+01:00", "once at 2026-12-07 07:00 +01:00"),
        ("0 0 */2 * mon", "cron: 0 0 */2 * mon"),
    ],
)
def test_describe(expr: str, expected: str) -> None:
    assert parse_schedule(expr).describe() == expected


@pytest.mark.parametrize(
    "expr", ["*/5 9-17 * * 1-5", "1-5/2 3,4 1 2 *", "0 0 */3 * *", "5 4 * * */2"]
)
def test_describe_never_fails(expr: str) -> None:
    assert parse_schedule(expr).describe()


# -- speed and imports -------------------------------------------------------------------------


def test_a_thousand_next_fires_are_fast() -> None:
    exprs = ["*/15 * * * *", "30 2 * * *", "0 9 * * 1-5", "0 0 1,15 * 1", "@every 90m", "@daily"]
    schedules = [parse_schedule(exprs[i % len(exprs)]) for i in range(1000)]
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    started = time.perf_counter()
    for schedule in schedules:
        schedule.next_fire(now, BERLIN)
    assert time.perf_counter() - started < 0.5


def test_importing_schedule_does_not_import_croniter() -> None:
    code = "import sys, cronflow.schedule; print('croniter' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# -- properties against a brute-force reference ------------------------------------------------

FIELD_RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}
DST_HOURS = (0, 1, 2, 3, 23)  # where the property zones change their clocks
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
PROPERTY_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/St_Johns",  # -03:30
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # DST changes at midnight
]


@dataclass(frozen=True)
class Expr:
    text: str
    sets: tuple[frozenset[int], ...]
    dom_star: bool
    dow_star: bool

    def matches(self, wall: datetime) -> bool:
        minutes, hours, doms, months, dows = self.sets
        if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
            return False
        in_dom = wall.day in doms
        in_dow = (wall.weekday() + 1) % 7 in dows
        if self.dom_star or self.dow_star:
            return in_dom and in_dow
        return in_dom or in_dow

    @property
    def follows_clock(self) -> bool:
        return self.text.split()[0][0] == "*" or self.text.split()[1][0] == "*"

    def can_fire(self) -> bool:
        if not (self.dom_star or self.dow_star):
            return True
        limits = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
        return any(d <= limits.get(m, 31) for m in self.sets[3] for d in self.sets[2])


def render(value: int, kind: str, named: bool) -> str:
    if named and kind == "month":
        return MONTHS[value - 1].capitalize() if value % 2 else MONTHS[value - 1]
    if named and kind == "dow" and value < 7:
        return DAYS[value].upper() if value % 2 else DAYS[value]
    return str(value)


@st.composite
def cron_item(draw: st.DrawFn, kind: str) -> tuple[str, set[int]]:
    low, high = FIELD_RANGES[kind]
    named = kind in ("month", "dow") and draw(st.booleans())
    shape = draw(st.sampled_from(["star", "star-step", "value", "range", "range-step"]))
    step = draw(st.integers(1, min(high, 20)))
    if shape == "star":
        return "*", set(range(low, high + 1))
    if shape == "star-step":
        return f"*/{step}", set(range(low, high + 1, step))
    first = draw(st.integers(low, high))
    if kind == "hour" and draw(st.booleans()):
        first = draw(st.sampled_from(DST_HOURS))
    if shape == "value":
        return render(first, kind, named), {first}
    last = draw(st.integers(first, high))
    text = f"{render(first, kind, named)}-{render(last, kind, named)}"
    if kind == "dow" and last == 7 and first > 0 and draw(st.booleans()):
        text = f"{render(first, kind, named)}-0"  # a range ending at Sunday
    if shape == "range":
        return text, set(range(first, last + 1))
    return f"{text}/{step}", set(range(first, last + 1, step))


@st.composite
def cron_field(draw: st.DrawFn, kind: str) -> tuple[str, frozenset[int]]:
    if kind in ("dom", "month", "dow") and draw(st.integers(0, 2)) == 0:
        items = [("*", set(range(FIELD_RANGES[kind][0], FIELD_RANGES[kind][1] + 1)))]
    else:
        items = draw(st.lists(cron_item(kind), min_size=1, max_size=3))
    values = set().union(*(v for _, v in items))
    if kind == "dow" and 7 in values:
        values = (values - {7}) | {0}
    return ",".join(t for t, _ in items), frozenset(values)


@st.composite
def cron_expr(draw: st.DrawFn) -> Expr:
    fields = [draw(cron_field(kind)) for kind in FIELD_RANGES]
    text = " ".join(t for t, _ in fields)
    return Expr(text, tuple(v for _, v in fields), fields[2][0][0] == "*", fields[4][0][0] == "*")


@cache
def transitions(zone: str) -> list[datetime]:
    """UTC instants in 2026 at which the zone's offset changes (to the hour is enough here)."""
    tz = ZoneInfo(zone)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    found, offset = [], moment.astimezone(tz).utcoffset()
    while moment.year == 2026:
        moment += timedelta(hours=1)
        if (now := moment.astimezone(tz).utcoffset()) != offset:
            found.append(moment)
            offset = now
    return found or [datetime(2026, 6, 1, tzinfo=UTC)]


@st.composite
def window(draw: st.DrawFn) -> tuple[ZoneInfo, datetime, datetime]:
    zone = draw(st.sampled_from(PROPERTY_ZONES))
    if draw(st.booleans()):
        base = draw(st.sampled_from(transitions(zone))) - timedelta(hours=24)
    else:
        base = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=draw(st.integers(0, 364)))
    start = base + timedelta(seconds=draw(st.integers(0, 36 * 3600)))
    return ZoneInfo(zone), start, start + timedelta(hours=30)


def brute_force(expr: Expr, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Walk every UTC minute and apply cron matching and the DST policy of SPEC §4."""
    fires = []
    moment = start.replace(second=0, microsecond=0)
    if moment < start:
        moment += timedelta(minutes=1)
    previous_wall = (moment - timedelta(minutes=1)).astimezone(tz).replace(tzinfo=None)
    while moment <= end:
        local = moment.astimezone(tz)
        wall = local.replace(tzinfo=None, fold=0)
        if expr.follows_clock:
            fire = expr.matches(wall)
        else:
            fire = expr.matches(wall) and local.fold == 0
            skipped = previous_wall + timedelta(minutes=1)
            while not fire and skipped < wall:  # wall times jumped over by a gap
                fire = expr.matches(skipped)
                skipped += timedelta(minutes=1)
        if fire:
            fires.append(local)
        previous_wall = wall.replace(fold=0)
        moment += timedelta(minutes=1)
    return fires


@given(expr=cron_expr(), where=window())
@settings(
    max_examples=160,  # about 10 s of the whole suite's 8 minutes; croniter's vectors check too
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_fires_match_brute_force(expr: Expr, where: tuple[ZoneInfo, datetime, datetime]) -> None:
    tz, start, end = where
    if not expr.can_fire():
        with pytest.raises(ScheduleError, match="can never fire"):
            parse_schedule(expr.text)
        return
    schedule = parse_schedule(expr.text)
    assert schedule.follows_clock is expr.follows_clock
    fires = schedule.fires_between(start, end, tz)
    expected = brute_force(expr, tz, start, end)
    assert [f.astimezone(UTC) for f in fires] == [f.astimezone(UTC) for f in expected]
    utc = [f.astimezone(UTC) for f in fires]
    assert all(a < b for a, b in zip(utc, utc[1:], strict=False)), "fires strictly increase"
    for fire in fires:
        assert fire.tzinfo is tz
        wall = fire.replace(tzinfo=None, fold=0)
        minute_before = (fire.astimezone(UTC) - timedelta(minutes=1)).astimezone(tz)
        gap_end = fire.utcoffset() != minute_before.utcoffset()
        assert expr.matches(wall) or (gap_end and not expr.follows_clock), fire
    # next_fire chains through the same fires, and finds the first one from the start
    if fires:
        assert schedule.next_fire(start - timedelta(microseconds=1), tz) == fires[0]
        for a, b in zip(fires, fires[1:], strict=False):
            assert schedule.next_fire(a, tz) == b


@given(expr=cron_expr(), after=st.integers(0, 20 * 365 * 86400))
@settings(max_examples=150, deadline=None, derandomize=True)
def test_next_fire_matches_and_skips_no_matching_day(expr: Expr, after: int) -> None:
    assume(expr.can_fire())
    tz = NEW_YORK
    moment = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=after)
    fire = parse_schedule(expr.text).next_fire(moment, tz)
    assert fire is not None and fire > moment
    # no whole day strictly between `moment` and the fire matches (days without a DST change)
    wall = fire.replace(tzinfo=None)
    assert expr.matches(wall) or not expr.follows_clock
    first_time = {"hour": min(expr.sets[1]), "minute": min(expr.sets[0])}
    day = moment.astimezone(tz).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    day += timedelta(days=1)
    while day.date() < wall.date():
        if day.replace(tzinfo=tz).utcoffset() == day.replace(hour=23, tzinfo=tz).utcoffset():
            assert not expr.matches(day.replace(**first_time)), f"{day} matches before {fire}"
        day += timedelta(days=1)


@st.composite
def around_transition(draw: st.DrawFn) -> tuple[ZoneInfo, datetime, datetime]:
    zone = draw(st.sampled_from([z for z in PROPERTY_ZONES if z not in ("UTC", "Asia/Kolkata")]))
    change = draw(st.sampled_from(transitions(zone)))
    start = change - timedelta(seconds=draw(st.integers(0, 4 * 3600)))
    return ZoneInfo(zone), start, change + timedelta(hours=3)


@given(
    minute=cron_field("minute"),
    hour=cron_field("hour"),
    days=st.sampled_from(["* * *", "* * 0-6", "1-31 * *"]),
    where=around_transition(),
)
@settings(max_examples=300, deadline=None, derandomize=True)
def test_dst_policy_around_every_2026_transition(
    minute: tuple[str, frozenset[int]],
    hour: tuple[str, frozenset[int]],
    days: str,
    where: tuple[ZoneInfo, datetime, datetime],
) -> None:
    text = f"{minute[0]} {hour[0]} {days}"
    every = (frozenset(range(1, 32)), frozenset(range(1, 13)), frozenset(range(7)))
    expr = Expr(text, (minute[1], hour[1], *every), days[0] == "*", days[-1] == "*")
    tz, start, end = where
    fires = parse_schedule(text).fires_between(start, end, tz)
    expected = brute_force(expr, tz, start, end)
    assert [f.astimezone(UTC) for f in fires] == [f.astimezone(UTC) for f in expected]
