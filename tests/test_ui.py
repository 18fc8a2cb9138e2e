"""`cronflow ui` driven by Textual's own pilot (`App.run_test`), on a real store."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widget import Widget

from cronflow.store import Store
from cronflow.ui.app import Dashboard, FlowsScreen, GridScreen, RunScreen

T0 = datetime(2026, 11, 20, 3, tzinfo=UTC)
FLOWS = (
    '[jobs.extract]\ncommand = "echo x"\nschedule = "0 3 * * *"\ntimezone = "UTC"\n'
    '[jobs.load]\ncommand = "echo y"\nafter = ["extract"]\n'
    '[jobs.report]\ncommand = "echo z"\nafter = ["load"]\n'
    '[jobs.tidy]\ncommand = "true"\nschedule = "@hourly"\n'
)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "jobs.toml"
    config.write_text(FLOWS)
    state = tmp_path / "state" / "cronflow"
    return config, state


def record(store: Store, day: int, statuses: dict[str, str], output: bytes = b"") -> dict[str, int]:
    """A finished flow run of extract at day `day`, each job ending as `statuses` says."""
    moment = T0 + timedelta(days=day)
    _, ids = store.create_flow_run("extract", moment, "schedule", list(statuses))
    for job, status in statuses.items():
        store.start_attempt(ids[job], 1, moment)
        if output:
            store.add_output(ids[job], 1, "out", moment, output)
            store.add_output(ids[job], 1, "err", moment, b"warning: on stderr\n")
        code = 0 if status == "success" else 1
        end = moment + timedelta(seconds=2)
        store.finish_attempt(ids[job], 1, finished_at=end, status=status, exit_code=code,
                             cpu_seconds=0.5, max_rss_kb=2048)  # fmt: skip
        store.update_run(ids[job], status=status, finished_at=end, exit_code=code)
    return ids


def screen_text(app: Dashboard) -> str:
    """The screen as plain text, as a terminal would show it."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system=None, legacy_windows=False)  # fmt: skip
    screen = app.screen
    console.print(screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def _off(app: Dashboard) -> list[str]:
    """The flows shown OFF."""
    return [line.split()[1] for line in screen_text(app).splitlines() if line.startswith(" OFF ")]


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the app run until `condition` holds (a render or the refresh timer may lag)."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    assert condition()


def drive(app: Dashboard, scenario: Callable[[Pilot[Any]], Awaitable[None]], size=(80, 24)):
    async def go() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(pilot)

    asyncio.run(go())


def test_switching_a_flow_off_and_on_changes_the_database(setup) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert isinstance(app.screen, FlowsScreen)
        text = screen_text(app)
        assert "extract" in text and "└ load" in text and "ON" in text
        await pilot.press("space")
        await pilot.pause()
        assert store.paused_jobs() == {"extract"}
        assert "flow extract is OFF" in screen_text(app)
        assert _off(app) == ["extract"]
        await pilot.press("p")
        await pilot.pause()
        assert store.paused_jobs() == set()
        await pilot.press("down", "down", "down", "space")  # tidy's own flow
        await pilot.pause()
        assert store.paused_jobs() == {"tidy"}

    drive(app, scenario)


def test_a_pause_by_another_command_shows_within_a_second(setup) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        assert _off(app) == []
        store.set_paused(["load"], True, T0)  # `cronflow pause load` from another terminal
        await pilot.pause(1.0)
        assert _off(app) == ["extract"]

    drive(app, scenario)


def test_the_grid_shows_a_failed_cell_and_opens_the_run_log(setup) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    for day in range(3):
        record(store, day, {"extract": "success", "load": "success", "report": "success"})
    failed = record(store, 3, {"extract": "success", "load": "failed"}, output=b"loading rows\n")
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, GridScreen))
        await until(pilot, lambda: " F  failed " in screen_text(app))
        text = screen_text(app)
        rows = {line.split()[0]: line for line in text.splitlines() if line.strip()}
        assert rows["load"].split()[1:5] == ["S", "S", "S", "F"]
        assert rows["report"].split()[1:5] == ["S", "S", "S", "·"]
        assert " F  failed " in text  # the legend
        await pilot.press("down")  # load, at the newest time
        await until(pilot, lambda: f"run {failed['load']}" in screen_text(app))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunScreen))
        await until(pilot, lambda: "loading rows" in screen_text(app))
        text = screen_text(app)
        assert f"── load run {failed['load']}, attempt 1 ──" in text
        assert "loading rows" in text and "▌ warning: on stderr" in text
        assert "attempt 1: failed, exit 1" in text and "2.0 MiB" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, GridScreen)

    drive(app, scenario)


def test_the_run_log_follows_a_running_run(setup) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    _, ids = store.create_flow_run("extract", T0, "manual", ["extract"])
    store.start_attempt(ids["extract"], 1, T0)
    store.add_output(ids["extract"], 1, "out", T0, b"first line\n")
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        app.push_screen(RunScreen(ids["extract"]))
        await pilot.pause()
        assert "first line" in screen_text(app)
        store.add_output(ids["extract"], 1, "out", T0, b"second line\n")
        await pilot.pause(1.0)  # within a second of the write
        assert "second line" in screen_text(app)

    drive(app, scenario)


def test_trigger_without_a_daemon_says_so(setup) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        await pilot.press("t")
        await pilot.pause()
        assert "no cronflow daemon is running" in app.status_message
        assert store.pending_triggers() == []

    drive(app, scenario, size=(200, 24))


def test_trigger_and_clear_go_to_the_running_daemon(setup, tmp_path: Path) -> None:
    """`t` and `c` ask a real daemon, which runs the flows (manual, then retry)."""
    from tests.conftest import CRONFLOW, wait_until

    config, state = setup
    config.write_text(
        '[jobs.extract]\ncommand = "echo x"\nschedule = "0 3 * * *"\n'
        '[jobs.load]\ncommand = "test -e ' + str(tmp_path / "ok") + '"\nafter = ["extract"]\n'
    )
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        daemon = subprocess.Popen([*CRONFLOW, "daemon", "-c", str(config)], stdout=out, stderr=out,
                                  env={**os.environ, "CRONFLOW_STATE_DIR": str(state)})  # fmt: skip
    try:
        wait_until(lambda: "started" in log.read_text(), what="the daemon")
        store = Store(state / "cronflow.db")
        app = Dashboard(config, state)

        async def scenario(pilot: Pilot[Any]) -> None:
            await pilot.press("t")
            await pilot.pause()
            assert app.status_message.startswith("trigger extract: ")
            for _ in range(100):
                await pilot.pause(0.1)
                if {r.status for r in store.history()} == {"success", "failed"}:
                    break
            assert [(r.job, r.trigger, r.status) for r in store.history()] == [
                ("load", "manual", "failed"), ("extract", "manual", "success")]  # fmt: skip
            await pilot.pause(0.6)
            assert "the daemon started runs" in app.status_message
            (tmp_path / "ok").touch()
            await pilot.press("enter")  # the grid, with its cursor on the newest time
            await pilot.pause()
            await pilot.press("down", "c")
            await pilot.pause()
            assert app.status_message.startswith("clear run 2 (load): ")  # asked, or started
            for _ in range(100):
                await pilot.pause(0.1)
                if len(store.history()) == 3 and store.history()[0].status == "success":
                    break
            newest = store.history()[0]
            assert (newest.job, newest.trigger, newest.status) == ("load", "retry", "success")
            await pilot.pause(0.6)
            assert "success" in screen_text(app) or "S" in screen_text(app)

        drive(app, scenario, size=(100, 30))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def _leaves(app: Dashboard) -> list[Widget]:
    return [w for w in app.screen.query("*") if w.display and w.region.area and not w.children]


@pytest.mark.parametrize("screen", ["flows", "grid", "run", "help"])
def test_80x24_renders_without_overlap(setup, screen: str) -> None:
    config, state = setup
    store = Store(state / "cronflow.db")
    for day in range(40):  # more times than fit in 80 columns
        record(store, day, {"extract": "success", "load": "failed"}, output=b"line\n" * 50)
    app = Dashboard(config, state)

    async def scenario(pilot: Pilot[Any]) -> None:
        if screen in ("grid", "run"):
            await pilot.press("enter")
            await pilot.pause()
        if screen == "run":
            await pilot.press("enter")
            await pilot.pause()
        if screen == "help":
            await pilot.press("question_mark")
            await pilot.pause()
        leaves = _leaves(app)
        assert leaves
        for widget in leaves:
            region = widget.region
            assert region.right <= 80 and region.bottom <= 24, (widget, region)
        if screen != "help":  # a modal lies over the screen beneath by design
            for a, b in itertools.combinations(leaves, 2):
                assert not a.region.overlaps(b.region), (a, b)
        lines = screen_text(app).splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)

    drive(app, scenario)


def test_the_header_names_the_live_workers_with_remote_execution() -> None:
    from datetime import UTC, datetime

    from cronflow.ui import model

    workers = [
        {"hostname": "gpu1", "queues": ["gpu"], "running": [{"job": "train"}]},
        {"hostname": "db1", "queues": ["db", "default"], "running": []},
    ]
    assert model.workers_text(workers) == (
        "workers: gpu1 (gpu: 1 running), db1 (db,default: 0 running)"
    )
    assert model.workers_text([]) == "workers: none seen"
    line = model.DaemonLine(None, None, Path("/j.toml"), None, "celery", model.workers_text([]))
    assert line.text(datetime(2026, 1, 1, tzinfo=UTC)).splitlines()[1] == "workers: none seen"
