"""The daemon's time decisions on simulated days: due, missed, catch-up, DST, jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cronflow.schedule import parse_schedule
from cronflow.timing import MAX_CATCHUP, due, jitter_delay

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def simulate(
    expr: str, zone: ZoneInfo, start: datetime, end: datetime, step: float, catchup: str = "none"
) -> list[datetime]:
    """Wake every `step` seconds from start to end, as the daemon does, and collect fires."""
    schedule = parse_schedule(expr)
    accounted, now, fired = start, start, []
    while now < end:
        now += timedelta(seconds=step)
        decision = due(schedule, zone, accounted, now, catchup)
        assert decision.missed is None and not decision.catchup
        fired += decision.on_time
        accounted = max(accounted, now)
    return fired


def test_a_week_of_wake_ups_fires_each_slot_once() -> None:
    fired = simulate("*/15 * * * *", BERLIN, utc(2026, 3, 26), utc(2026, 4, 2), step=7.3)
    # 168 real hours, four quarter hours each: the spring-forward gap removes wall times,
    # not instants, so no real quarter hour is lost or doubled.
    assert len(fired) == 7 * 96
    assert all(f.astimezone(BERLIN).minute % 15 == 0 for f in fired)
    assert len(set(fired)) == len(fired)


def test_fixed_time_job_on_dst_days_fires_once_a_day() -> None:
    spring = simulate("30 2 * * *", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31), step=60)
    assert [f.astimezone(BERLIN).isoformat() for f in spring] == [
        "2026-03-27T02:30:00+01:00",
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    autumn = simulate("30 2 * * *", BERLIN, utc(2026, 10, 24), utc(2026, 10, 27), step=60)
    assert [f.astimezone(BERLIN).isoformat() for f in autumn] == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_clock_following_job_fires_in_both_fall_back_hours() -> None:
    fired = simulate("30 * * * *", BERLIN, utc(2026, 10, 24, 23), utc(2026, 10, 25, 2), step=30)
    assert [f.astimezone(BERLIN).isoformat() for f in fired] == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    ]


def test_a_fire_noticed_late_is_missed_and_catchup_decides() -> None:
    schedule = parse_schedule("0 * * * *")
    accounted, now = utc(2026, 1, 1, 0, 30), utc(2026, 1, 1, 5, 0, 30)
    none = due(schedule, UTC, accounted, now, "none")
    assert none.on_time == [utc(2026, 1, 1, 5)]  # 30 s late is still on time
    assert (none.missed.count, none.missed.first, none.missed.last) == (
        4,
        utc(2026, 1, 1, 1),
        utc(2026, 1, 1, 4),
    )
    assert none.missed.note() == (
        "missed 4 fires from 2026-01-01T01:00:00+00:00 to 2026-01-01T04:00:00+00:00"
    )
    latest = due(schedule, UTC, accounted, now, "latest")
    assert (latest.catchup, latest.missed) == ([utc(2026, 1, 1, 4)], None)
    every = due(schedule, UTC, accounted, now, "all")
    assert every.catchup == [utc(2026, 1, 1, h) for h in (1, 2, 3, 4)] and every.missed is None


def test_catchup_all_is_capped_and_the_rest_recorded_missed() -> None:
    schedule = parse_schedule("@every 1m")
    accounted = utc(2026, 1, 1)
    now = accounted + timedelta(minutes=1500, seconds=61)
    decision = due(schedule, UTC, accounted, now, "all")
    assert len(decision.catchup) == MAX_CATCHUP
    assert decision.missed.count == 1500 - MAX_CATCHUP
    assert decision.catchup[0] > decision.missed.last


def test_a_backwards_clock_jump_never_fires_twice() -> None:
    schedule = parse_schedule("*/5 * * * *")
    assert due(schedule, UTC, utc(2026, 1, 1, 12), utc(2026, 1, 1, 11), "all").on_time == []


def test_a_suspend_over_a_fire_is_missed_not_run() -> None:
    schedule = parse_schedule("0 3 * * *")
    accounted = utc(2026, 1, 1, 2, 59, 59)
    woke = utc(2026, 1, 1, 7, 15)  # the laptop slept through 03:00
    assert due(schedule, UTC, accounted, woke, "none").missed.count == 1
    assert due(schedule, UTC, accounted, woke, "latest").catchup == [utc(2026, 1, 1, 3)]


def test_at_fires_once() -> None:
    schedule = parse_schedule("@at 2026-12-07T07:00")
    first = due(schedule, BERLIN, utc(2026, 12, 7, 5), utc(2026, 12, 7, 6, 0, 1), "none")
    assert first.on_time == [datetime(2026, 12, 7, 7, tzinfo=BERLIN)]
    assert due(schedule, BERLIN, utc(2026, 12, 7, 6, 0, 1), utc(2027, 1, 1), "all") == due(
        schedule, BERLIN, utc(2027, 1, 1), utc(2027, 1, 2), "all"
    )


@pytest.mark.parametrize("jitter", [0.0, 0.5, 30.0, 3600.0])
def test_jitter_stays_within_bounds(jitter: float) -> None:
    rng = random.Random(7)
    delays = [jitter_delay(jitter, rng) for _ in range(2000)]
    assert all(0 <= d <= jitter for d in delays)
    if jitter:
        assert max(delays) > jitter * 0.9 and min(delays) < jitter * 0.1


def test_fires_from_before_the_daemon_woke_are_missed_even_if_recent() -> None:
    schedule = parse_schedule("@every 2s")
    accounted, started = utc(2026, 1, 1, 12), utc(2026, 1, 1, 12, 0, 9)
    decision = due(schedule, UTC, accounted, started, "none", awake_since=started)
    assert decision.on_time == []
    assert decision.missed.count == 4  # 12:00:02, :04, :06, :08 were not seen on time
    running = due(schedule, UTC, started, utc(2026, 1, 1, 12, 0, 10), "none", started)
    assert running.on_time == [utc(2026, 1, 1, 12, 0, 10)] and running.missed is None
