"""depends_on_past and on_missed on a real history: the daemon on a virtual clock with the
real engine and real processes, `cronflow run` and backfills through `manual`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from cronflow import manual
from cronflow.config import load_config
from tests.live import LiveDaemon

START = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)


def at(hour: int) -> datetime:
    return datetime(2026, 1, 1, hour, tzinfo=UTC)


HOURLY_PAST = """
[jobs.load]
schedule = "0 * * * *"
command = "test ! -e fail"
depends_on_past = true
"""


def statuses(live: LiveDaemon, job: str) -> list[tuple[int, str, str, str | None]]:
    runs = reversed(live.store.history(job, limit=None))
    return [(r.logical_time.hour, r.trigger, r.status, r.note) for r in runs]


def test_a_failure_holds_later_fires_until_the_past_is_mended(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY_PAST, START)
    (tmp_path / "fail").touch()

    async def main() -> None:
        live.start()
        await live.run_for(3600)  # 01:00 fails (the first run: nothing before holds it)
        (tmp_path / "fail").unlink()
        await live.run_for(2 * 3600)  # 02:00 and 03:00 are held back, the chain too
        await live.stop()

    asyncio.run(main())
    held = "previous run ({}) did not succeed"
    assert statuses(live, "load") == [
        (1, "schedule", "failed", "exit code 1"),
        (2, "schedule", "skipped", held.format("2026-01-01T01:00:00+00:00")),
        (3, "schedule", "skipped", held.format("2026-01-01T02:00:00+00:00")),
    ]
    # A backfill mends the past oldest first (its --parallel notwithstanding).
    config = load_config(live.config)
    template = manual.plan(config, "load", False, at(1), "backfill")
    assert manual.flows_at_once(template, 8) == 1
    plans = [manual.plan(config, "load", False, at(h), "backfill") for h in (1, 2, 3)]
    outcome = manual.run_plans(live.store, plans, max_parallel=4, flows_at_once=1)
    assert [r.status for r in outcome.runs] == ["success"] * 3

    async def later() -> None:
        live.start()
        await live.run_for(3600)  # 04:00 runs: 03:00 succeeded now
        await live.stop()

    asyncio.run(later())
    assert statuses(live, "load")[-1][:3] == (4, "schedule", "success")


def test_manual_runs_honour_it_and_ignore_past_overrides(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY_PAST, START)
    (tmp_path / "fail").touch()
    config = load_config(live.config)
    first = manual.plan(config, "load", False, at(1), "manual")
    assert manual.run_plans(live.store, [first], max_parallel=1).runs[0].status == "failed"
    (tmp_path / "fail").unlink()
    held = manual.plan(config, "load", False, at(2), "manual")
    run = manual.run_plans(live.store, [held], max_parallel=1).runs[0]
    assert (run.status, run.note) == (
        "skipped",
        "previous run (2026-01-01T01:00:00+00:00) did not succeed",
    )
    forced = manual.plan(config, "load", False, at(2), "manual", ignore_past=True)
    assert manual.run_plans(live.store, [forced], max_parallel=1).runs[0].status == "success"
    assert manual.flows_at_once(forced, 8) == 8


def test_a_missed_previous_fire_does_not_hold_the_next_back(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, HOURLY_PAST, START)

    async def main() -> None:
        live.start()
        await live.run_for(3600)  # 01:00 success
        await live.stop()
        live.down_for(3600)  # 02:00 is missed while the daemon is down
        live.start()
        await live.run_for(3600)  # 03:00
        await live.stop()

    asyncio.run(main())
    assert [s[:3] for s in statuses(live, "load")] == [
        (1, "schedule", "success"),
        (2, "catchup", "missed"),
        (3, "schedule", "success"),
    ]


MISSED_HOOK = """
[jobs.backup]
schedule = "0 * * * *"
command = "true"
catchup = "{catchup}"
on_missed = 'echo "$CRONFLOW_STATUS $CRONFLOW_MISSED_COUNT {span}"'
""".replace("{span}", "$CRONFLOW_MISSED_FROM $CRONFLOW_MISSED_TO")


def hook_output(live: LiveDaemon, run_id: int) -> list[tuple[str, int | None, bytes]]:
    hooks = live.store.hooks(run_id)
    chunks = live.store.output(run_id)
    return [(h.hook, h.exit_code, b"".join(c.data for c in chunks if c.hook_id == h.id))
            for h in hooks]  # fmt: skip


def _down_three_hours(live: LiveDaemon) -> None:
    async def main() -> None:
        live.start()
        await live.run_for(3600)  # 01:00 on time
        await live.stop()
        live.down_for(3 * 3600)  # 02:00, 03:00, 04:00 missed
        live.start()
        await live.run_for(5)
        await live.stop()

    asyncio.run(main())


def test_on_missed_runs_with_the_missed_record_under_catchup_none(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, MISSED_HOOK.format(catchup="none"), START)
    _down_three_hours(live)
    missed = live.store.history("backup", status="missed")[0]
    assert hook_output(live, missed.run_id) == [
        (
            "on_missed",
            0,
            b"missed 3 2026-01-01T02:00:00+00:00 2026-01-01T04:00:00+00:00\n",
        )
    ]


def test_on_missed_runs_whatever_catchup_then_does(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, MISSED_HOOK.format(catchup="all"), START)
    _down_three_hours(live)
    runs = list(reversed(live.store.history("backup")))
    assert [(r.logical_time.hour, r.trigger, r.status) for r in runs] == [
        (1, "schedule", "success"),
        (2, "catchup", "success"),
        (3, "catchup", "success"),
        (4, "catchup", "success"),
    ]
    # Once, with the first catch-up run; no `missed` record, since every fire ran late.
    assert hook_output(live, runs[1].run_id) == [
        ("on_missed", 0, b"missed 3 2026-01-01T02:00:00+00:00 2026-01-01T04:00:00+00:00\n")
    ]
    assert hook_output(live, runs[2].run_id) == hook_output(live, runs[3].run_id) == []


def test_on_missed_after_a_suspend(tmp_path: Path) -> None:
    live = LiveDaemon(tmp_path, MISSED_HOOK.format(catchup="latest"), START)

    async def main() -> None:
        live.start()
        await live.run_for(1800)  # to 01:00
        live.sleep_machine(2 * 3600)  # asleep over 02:00 and 03:00 (and 01:00's end)
        await live.run_for(5)
        await live.stop()

    asyncio.run(main())
    runs = list(reversed(live.store.history("backup")))
    assert [(r.logical_time.hour, r.trigger) for r in runs][-1] == (3, "catchup")
    output = hook_output(live, runs[-1].run_id)[0][2]
    assert output.startswith(b"missed ") and output.endswith(b"2026-01-01T03:00:00+00:00\n")
    assert [e.event for e in live.store.daemon_log()] == ["start", "asleep", "stop"]
