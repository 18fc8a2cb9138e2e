"""`why` and `check` on real histories: the daemon on a virtual clock with the real engine."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cronflow import health
from cronflow.config import load_config
from cronflow.explain import explain, latest_due
from tests.live import LiveDaemon

START = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 1, hour, minute, tzinfo=UTC)


def why(live: LiveDaemon, job: str, moment: datetime, running: bool = False) -> list[str]:
    config = load_config(live.config)
    found = explain(config, live.store, job, moment, live.clock.now(), running)
    return [r.kind + ": " + r.message for r in found]


FLOW = """
[jobs.extract]
schedule = "0 * * * *"
command = "test ! -e {folder}/fail"
retries = 1
retry_delay = "0s"
on_failure = "echo alert"
[jobs.load]
after = ["extract"]
command = "true"
"""


def test_why_success_failure_attempts_hooks_and_upstreams(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, FLOW.replace("{folder}", str(tmp_path)), START)

    async def steps() -> None:
        live.start()
        await live.run_for(3600)  # 01:00 succeeds
        (tmp_path / "fail").touch()
        await live.run_for(3600)  # 02:00 fails twice; load is upstream_failed
        await live.stop()

    asyncio.run(steps())
    ok = why(live, "extract", at(1))
    assert ok[0] == "schedule: its schedule '0 * * * *' (at minute 0 of every hour) fires at " \
        "2026-01-01T01:00:00+00:00" or ok[0].startswith("schedule: its schedule '0 * * * *'")
    assert ok[1].startswith("run: run 1 (schedule) ended success")
    assert ok[2] == "attempt: attempt 1: success, exit 0"
    failed = why(live, "extract", at(2))
    assert "attempt: attempt 1: failed, exit 1" in failed
    assert "attempt: attempt 2: failed, exit 1" in failed
    assert "hook: the on_failure hook ran (exit 0)" in failed
    held = why(live, "load", at(2))
    assert held[0].startswith("schedule: its flow's (extract) schedule")
    assert "upstream: held by its upstreams (extract failed): run_if = success cannot hold" in held


def test_why_a_time_the_schedule_does_not_match_names_the_field_and_the_fires_around(
    tmp_path: Path,
) -> None:
    live = LiveDaemon(tmp_path, FLOW.replace("{folder}", str(tmp_path)), START)
    found = why(live, "extract", at(1, 30))
    assert "does not fire at 2026-01-01T01:30:00+00:00: its minute field (0) excludes it" in (
        found[0]
    )
    assert found[1] == (
        "schedule: the fire before was 2026-01-01T01:00:00+00:00; "
        "the next is 2026-01-01T02:00:00+00:00"
    )


@pytest.mark.parametrize(
    ("schedule", "moment", "excluded"),
    [
        ("0 6 * * *", at(1, 30), "its minute field (0) and its hour field (6) exclude it"),
        (
            "0 6 2 * *",
            at(1, 30),
            "its minute field (0), its hour field (6) and its day-of-month field (2) exclude it",
        ),
    ],
)
def test_why_several_fields_exclude_a_time(
    tmp_path: Path, schedule: str, moment: datetime, excluded: str
) -> None:
    text = FLOW.replace("{folder}", str(tmp_path)).replace("0 * * * *", schedule)
    found = why(LiveDaemon(tmp_path, text, START), "extract", moment)
    assert found[0].endswith(f"does not fire at 2026-01-01T01:30:00+00:00: {excluded}"), found[0]


def test_why_names_a_dst_gap(tmp_path: Path) -> None:
    toml = '[jobs.b]\nschedule = "30 2 * * *"\ntimezone = "Europe/Berlin"\ncommand = "true"\n'
    live = LiveDaemon(tmp_path, toml, START)
    gap = datetime(2026, 3, 29, 3, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    found = why(live, "b", gap)
    assert found[0].endswith("fires at 2026-03-29T03:00:00+02:00")
    assert "dst: on 2026-03-29 at 02:00 the Europe/Berlin clocks go forward to 03:00:" \
        " wall times from 02:00 to 03:00 do not exist" in " | ".join(found)
    back = why(live, "b", datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")))
    assert "dst: on 2026-10-25 at 03:00 the Europe/Berlin clocks go back to 02:00:" \
        " 02:00 to 03:00 happens twice" in " | ".join(back)


HOURLY = """
[jobs.backup]
schedule = "0 * * * *"
command = "true"
catchup = "{catchup}"
on_missed = "echo missed"
"""


def test_why_daemon_down_missed_with_the_catchup_rule_and_hook(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY.format(catchup="none"), START)

    async def steps() -> None:
        live.start()
        await live.run_for(3600)
        await live.stop()
        live.down_for(3 * 3600)
        live.start()
        await live.run_for(5)
        await live.stop()

    asyncio.run(steps())
    found = why(live, "backup", at(3))
    assert found[1] == "none: no run of backup is recorded for 2026-01-01T03:00:00+00:00"
    assert found[2] == (
        "daemon: the daemon was not running: it stopped 2026-01-01T01:30:00+00:00; "
        "it started again 2026-01-01T04:30:00+00:00"
    )
    assert found[3].startswith("catchup: recorded missed (catchup = none): run ")
    assert found[4] == "hook: the on_missed hook ran (exit 0)"


def test_why_catchup_latest_ran_only_the_newest(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY.format(catchup="latest"), START)

    async def steps() -> None:
        live.start()
        await live.run_for(1800)
        live.sleep_machine(3 * 3600)  # asleep over 02:00, 03:00 and 04:00
        await live.run_for(5)
        await live.stop()

    asyncio.run(steps())
    found = why(live, "backup", at(2))
    assert found[2].startswith("asleep: the machine was asleep (or the clock jumped) from")
    assert found[3].startswith(
        "catchup: missed; catchup = latest ran only the newest missed fire, "
        "2026-01-01T04:00:00+00:00"
    )


def test_why_paused_disabled_unseen_future(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY.format(catchup="none"), START)

    async def steps() -> None:
        live.start()
        await live.run_for(1800)  # 01:00 runs
        live.store.set_paused(["backup"], True, live.clock.now())
        await live.run_for(3600)  # 02:00 paused
        live.store.set_paused(["backup"], False, live.clock.now())
        await live.stop()

    asyncio.run(steps())
    paused = why(live, "backup", at(2))
    assert paused[2].startswith("paused: its flow was paused by backup from 2026-01-01T01:00")
    assert why(live, "backup", at(0))[2].startswith("unseen: the daemon first saw backup at")
    future = why(live, "backup", at(5), running=False)
    assert future[1:] == [
        "future: 2026-01-01T05:00:00+00:00 is still to come",
        "daemon: no daemon runs now: it fires only if one runs then",
    ]
    live.config.write_text(HOURLY.format(catchup="none") + "enabled = false\n")
    # 02:00 fell in the pause: that, not today's `enabled = false`, is why it did not run.
    assert why(live, "backup", at(2))[2].startswith(
        "paused: its flow was paused by backup from 2026-01-01T01:00:00+00:00"
        " until 2026-01-01T02:00:00+00:00"
    )
    config_text = HOURLY.format(catchup="none") + "enabled = false\n"
    live.config.write_text(config_text)
    assert why(live, "backup", at(4))[2].startswith("disabled: backup is disabled")


def test_why_overlap_and_depends_on_past_skips(tmp_path: Path) -> None:
    toml = """
[jobs.slow]
schedule = "@every 1m"
command = "test ! -e {f}/fail && sleep 0.3"
depends_on_past = true
""".replace("{f}", str(tmp_path))
    live = LiveDaemon(tmp_path, toml, START)

    async def steps() -> None:
        daemon = live.start()
        live.clock.advance(60)  # 00:31 fires
        daemon._wake_up()
        await asyncio.sleep(0.05)
        live.clock.advance(60)  # 00:32 while 00:31 still runs: skipped (overlap)
        daemon._wake_up()
        await live.settle()
        (tmp_path / "fail").touch()
        await live.run_for(60)  # 00:33 fails (00:32 was skipped by overlap: not held)
        await live.run_for(60)  # 00:34 held back
        await live.stop()

    asyncio.run(steps())
    overlap = why(live, "slow", at(0, 32))
    assert "skipped: skipped: the previous run of its flow was still going (overlap = skip)" in (
        overlap
    )
    past = why(live, "slow", at(0, 34))
    assert (
        "skipped: skipped by depends_on_past: previous run (2026-01-01T00:33:00+00:00) did not "
        "succeed" in past
    )


def test_why_a_queued_run_waits_for_a_slot(tmp_path: Path) -> None:
    toml = """
[daemon]
max_parallel = 1
[jobs.a]
schedule = "0 * * * *"
command = "sleep 0.3"
[jobs.b]
schedule = "0 * * * *"
command = "sleep 0.3"
"""
    live = LiveDaemon(tmp_path, toml, START)
    seen: list[list[str]] = []

    async def steps() -> None:
        daemon = live.start()
        live.clock.advance(1800)
        daemon._wake_up()
        await asyncio.sleep(0.1)
        seen.append(why(live, "a", at(1)) + why(live, "b", at(1)))
        await live.stop()

    asyncio.run(steps())
    assert "queued: waiting for a slot: max_parallel = 1 jobs run at once" in seen[0]


def test_latest_due_is_the_latest_fire_at_or_before_now(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY.format(catchup="none"), START)
    config = load_config(live.config)
    assert latest_due(config, "backup", at(3)) == at(3)
    assert latest_due(config, "backup", at(3, 59)) == at(3)


# --- check -----------------------------------------------------------------------------------


def test_check_daemon_overdue_failing_and_all_well(tmp_path: Path) -> None:
    toml = FLOW.replace("{folder}", str(tmp_path))
    live = LiveDaemon(tmp_path, toml, START)

    async def steps() -> None:
        live.start()
        await live.run_for(3600)  # 01:00 succeeds
        await live.stop()

    asyncio.run(steps())
    config = load_config(live.config)

    def report(now: datetime, running: bool = True) -> health.Health:
        return health.check(config, None, running, live.store, now, UTC)

    assert report(at(1, 30)).problems == []
    assert report(at(1, 30)).exit_code == 0
    # 02:00 never ran (the daemon stopped at 01:00): overdue once its grace (1h) passed.
    late = report(at(3, 1))
    assert [(p.kind, p.message) for p in late.problems] == [
        ("overdue", "extract: last success 2h 1m ago, due at minute 0 past every hour"),
        ("overdue", "load: last success 2h 1m ago, due at minute 0 past every hour"),
    ]
    assert late.exit_code == 1
    down = report(at(1, 30), running=False)
    assert down.problems[0].message == "daemon not running since 2026-01-01 01:30 UTC"
    assert down.exit_code == 2
    broken = health.check(None, "jobs.toml:3: bad", True, live.store, at(1, 30), UTC)
    assert (broken.exit_code, broken.problems[0].kind) == (2, "config")
    (tmp_path / "fail").touch()

    async def failing() -> None:
        live.start()
        await live.run_for(3600)  # 02:00 fails
        await live.stop()

    live.clock.advance(-live.clock.now().timestamp() + at(1, 59).timestamp())
    asyncio.run(failing())
    failed = report(at(2, 30))
    assert [p.kind for p in failed.problems] == ["failing", "failing"]
    assert failed.problems[0].message.startswith("extract: failed at 2026-01-01 02:00 UTC")


def test_grace_defaults_to_one_period_at_least_five_minutes(tmp_path: Path) -> None:
    toml = '[jobs.a]\nschedule = "@every 1m"\ncommand = "true"\n' \
        '[jobs.b]\nschedule = "0 3 * * *"\ncommand = "true"\n' \
        '[jobs.c]\nschedule = "0 3 * * *"\ncommand = "true"\ngrace = "2h"\n'  # fmt: skip
    (tmp_path / "jobs.toml").write_text(toml)
    config = load_config(tmp_path / "jobs.toml")
    now = at(12)
    grace = {n: health.grace(config.jobs[n], config.flow_of(n), now) for n in "abc"}
    assert grace == {"a": 300.0, "b": 86400.0, "c": 7200.0}
    assert timedelta(seconds=grace["b"]) == timedelta(days=1)


def test_check_names_what_a_celery_executor_lacks(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[executor]\nkind = "celery"\n[jobs.a]\ncommand = "true"\nqueue = "q"\n')
    config = load_config(path)
    found = health.check(config, None, True, None, datetime.now(UTC), UTC, environ={})
    assert found.exit_code == 2
    assert [p.message for p in found.problems] == [
        'executor kind = "celery" needs a broker: [executor] broker = "redis://...", or'
        " $CRONFLOW_BROKER_URL"
    ]
    given = {"CRONFLOW_BROKER_URL": "redis://localhost:6379/0"}
    assert health.check(config, None, True, None, datetime.now(UTC), UTC, given).problems == []
