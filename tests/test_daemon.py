"""The daemon's decisions on a virtual clock: days of ticks in well under a second, no processes.

`_start` (which would hand a flow run to the engine) is replaced by a recorder, so what is
tested is exactly when the daemon decides to fire, skip, or record a miss.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronflow.clock import VirtualClock
from cronflow.daemon import Daemon
from cronflow.engine import Engine
from cronflow.store import Store
from cronflow.systemd import Notifier

BERLIN = ZoneInfo("Europe/Berlin")


class Harness:
    def __init__(self, tmp_path: Path, toml: str, start: datetime) -> None:
        self.config = tmp_path / "jobs.toml"
        self.config.write_text(toml)
        self.clock = VirtualClock(start)
        self.store = Store(tmp_path / "state" / "cronflow.db", clock=self.clock)
        self.fired: list[tuple[str, datetime, str]] = []
        self.daemon = self.new_daemon()

    def new_daemon(self) -> Daemon:
        daemon = Daemon(self.config, self.store, clock=self.clock, notifier=Notifier(None))
        daemon.engine = Engine(self.store, max_parallel=4, clock=self.clock)
        daemon._start = lambda flow, when, trigger, jobs=None: self.fired.append(  # type: ignore[method-assign]
            (flow.name, when.astimezone(UTC), trigger)
        )
        daemon._reload(first=True)
        return daemon

    def run_for(self, seconds: float, step: float = 5.0) -> None:
        end = self.clock.now() + timedelta(seconds=seconds)
        while self.clock.now() < end:
            self.clock.advance(step)
            self.daemon._tick()

    def statuses(self, job: str) -> list[tuple[str, str | None]]:
        return [(r.status, r.note) for r in self.store.history(job, limit=None)]


@pytest.fixture
def berlin_daily(tmp_path: Path) -> Harness:
    toml = '[jobs.backup]\nschedule = "30 2 * * *"\ntimezone = "Europe/Berlin"\ncommand = "x"\n'
    return Harness(tmp_path, toml, datetime(2026, 3, 27, 12, tzinfo=UTC))


def test_days_of_ticks_across_spring_forward_fire_once_a_day(berlin_daily: Harness) -> None:
    berlin_daily.run_for(3 * 86400)
    assert [(f[1].astimezone(BERLIN).isoformat(), f[2]) for f in berlin_daily.fired] == [
        ("2026-03-28T02:30:00+01:00", "schedule"),
        ("2026-03-29T03:00:00+02:00", "schedule"),  # 02:30 did not exist that night
        ("2026-03-30T02:30:00+02:00", "schedule"),
    ]


def test_a_suspend_over_a_fire_records_one_missed_run(berlin_daily: Harness) -> None:
    h = berlin_daily
    h.run_for(12 * 3600)  # to 00:00 UTC on the 28th, before the 01:30 UTC fire
    h.clock.jump_wall(5 * 3600)  # the laptop sleeps through it; monotonic time stood still
    h.run_for(10)
    assert h.fired == []
    assert h.statuses("backup") == [("missed", "missed the fire at 2026-03-28T02:30:00+01:00")]


def test_paused_flows_do_not_fire_and_resume_from_the_next_fire(berlin_daily: Harness) -> None:
    h = berlin_daily
    h.store.set_paused(["backup"], True, h.clock.now())
    h.run_for(86400)
    assert h.fired == [] and h.statuses("backup") == []
    h.store.set_paused(["backup"], False, h.clock.now())
    h.run_for(86400)
    assert [f[1].isoformat() for f in h.fired] == ["2026-03-29T01:00:00+00:00"]


def test_restart_after_downtime_applies_catchup(tmp_path: Path) -> None:
    toml = '[jobs.hourly]\nschedule = "0 * * * *"\ncatchup = "all"\ncommand = "x"\n'
    h = Harness(tmp_path, toml, datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    h.run_for(3600)  # fires 01:00 on time
    h.clock.advance(3 * 3600)  # the daemon is down for three hours
    h.daemon = h.new_daemon()
    h.daemon._tick()
    # One catch-up run starts now; the others wait their turn, oldest first.
    assert [(f[1].hour, f[2]) for f in h.fired] == [(1, "schedule"), (2, "catchup")]
    assert [(t.hour, trigger) for t, trigger in h.daemon.flows["hourly"].pending] == [
        (3, "catchup"),
        (4, "catchup"),
    ]


def test_a_backwards_clock_step_fires_no_slot_twice(tmp_path: Path) -> None:
    toml = '[jobs.q]\nschedule = "*/15 * * * *"\ncommand = "x"\n'
    h = Harness(tmp_path, toml, datetime(2026, 1, 1, tzinfo=UTC))
    h.run_for(3600)
    h.clock.jump_wall(-1800)  # NTP steps the clock back half an hour
    h.run_for(3600)
    times = [f[1] for f in h.fired]
    assert len(times) == len(set(times)) == 6  # 00:15 … 01:30, each once


HOURLY_FLOW = """
[jobs.m]
schedule = "0 * * * *"
command = "x"
[jobs.n]
after = ["m"]
command = "x"
"""
WITH_EARLIER_ROOT = HOURLY_FLOW.replace('after = ["m"]', 'after = ["m", "a"]') + (
    '[jobs.a]\nschedule = "0 * * * *"\ncommand = "x"\n'
)


def test_a_pause_held_by_a_job_survives_a_renamed_flow(tmp_path: Path) -> None:
    h = Harness(tmp_path, HOURLY_FLOW, datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    h.store.set_paused(["n"], True, h.clock.now())  # `cronflow pause n`
    h.run_for(2 * 3600)
    assert h.fired == []
    h.config.write_text(WITH_EARLIER_ROOT)  # the flow is now named "a", after its first root
    h.daemon._reload()
    assert [f.name for f in h.daemon.config.flows] == ["a"]
    h.run_for(2 * 3600)
    assert h.fired == []  # still paused: n holds it
    h.store.set_paused(["a", "m", "n"], False, h.clock.now())  # `cronflow resume a`
    h.run_for(3600)
    assert [(f[0], f[1].hour) for f in h.fired] == [("a", 5)]


def test_the_handled_fire_record_survives_a_renamed_flow(tmp_path: Path) -> None:
    h = Harness(tmp_path, HOURLY_FLOW, datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    h.run_for(3600)  # fires 01:00 on time
    h.clock.advance(3 * 3600)  # down for three hours, while a root is added
    h.config.write_text(WITH_EARLIER_ROOT)
    h.daemon = h.new_daemon()
    h.daemon._tick()
    # Not "a flow never seen before": the fires of 02:00 to 04:00 were missed.
    assert h.statuses("a")[0] == (
        "missed",
        "missed 3 fires from 2026-01-01T02:00:00+00:00 to 2026-01-01T04:00:00+00:00",
    )


def test_of_many_flows_due_at_once_one_is_handled_first(tmp_path: Path) -> None:
    """The daemon's loop starts the first due flow before it looks at the others (issue 14:
    the first start must not wait for 199 other fires' bookkeeping); none is lost or doubled."""
    toml = "".join(f'[jobs.j{n}]\nschedule = "0 3 * * *"\ncommand = "x"\n' for n in range(50))
    harness = Harness(tmp_path, toml, datetime(2026, 5, 1, 2, 59, tzinfo=UTC))
    harness.clock.advance(61)
    harness.daemon._tick(most=1)
    assert len(harness.fired) == 1 and harness.daemon.more_due
    harness.daemon._tick()
    assert not harness.daemon.more_due
    assert sorted(name for name, _, _ in harness.fired) == sorted(f"j{n}" for n in range(50))
    harness.run_for(3600)
    assert len(harness.fired) == 50  # nothing fires again within the hour


def test_the_daemon_wakes_a_little_before_a_fire_for_the_kernels_timer_slack(
    tmp_path: Path,
) -> None:
    toml = '[jobs.j]\nschedule = "0 3 * * *"\ncommand = "x"\n'
    harness = Harness(tmp_path, toml, datetime(2026, 5, 1, 2, 59, 57, tzinfo=UTC))
    wait = harness.daemon._seconds_to_next_event(None)
    assert 3 - 0.1 < wait < 3 - 0.003  # 0.1 % of 3 s and a millisecond of rounding early
    harness.clock.advance(wait)
    last = harness.daemon._seconds_to_next_event(None)
    assert 0 < last <= 0.004 + 1e-9  # the short second sleep


def test_a_bad_edit_is_logged_as_one_problem_or_as_a_count(
    berlin_daily: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line for a single typo used to be "1 problems; first: …"."""
    h = berlin_daily
    h.config.write_text('[jobs.backup]\ncommand = "x"\nretires = 3\n')
    h.daemon._reload()
    one = f"{h.config}:3: jobs.backup.retires: unknown key (did you mean 'retries'?)"
    assert h.daemon.config_error == one
    assert caplog.records[-1].getMessage().endswith(f"(keeping the last good configuration): {one}")
    h.config.write_text('[jobs.backup]\ncommand = "x"\nretires = 3\njitter = true\n')
    h.daemon._reload()
    assert h.daemon.config_error == f"2 problems; first: {one}"
