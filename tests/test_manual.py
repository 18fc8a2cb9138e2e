"""`manual.run_plans`: a backfill's flow runs recorded ahead in batches, oldest first, and
what an interrupted one leaves behind."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow import manual
from cronflow.config import parse_config
from cronflow.errors import CronflowError
from cronflow.store import Store

FIRST = datetime(2026, 1, 1, tzinfo=UTC)
JOBS = """
[jobs.a]
schedule = "@every 1m"
command = ["true"]

[jobs.b]
after = ["a"]
command = ["true"]
"""


def plans(tmp_path: Path, count: int) -> list[manual.FlowRun]:
    config = parse_config(JOBS, str(tmp_path / "jobs.toml"))
    return [
        manual.plan(config, "a", False, FIRST + timedelta(minutes=i), "backfill")
        for i in range(count)
    ]


def test_a_backfill_runs_every_plan_oldest_first_in_few_transactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "cronflow.db")
    commits = []
    store.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    outcome = manual.run_plans(store, plans(tmp_path, 40), max_parallel=4, flows_at_once=1)
    assert [r.status for r in outcome.runs] == ["success"] * 80
    flow_runs = [r.flow_run_id for r in outcome.runs]
    assert flow_runs == sorted(flow_runs)
    times = [r.logical_time for r in outcome.runs if r.job == "a"]
    assert times == [FIRST + timedelta(minutes=i) for i in range(40)]
    # Per job: its attempt's start and its end; the 40 flow runs took a handful of creations.
    assert len(commits) < 2 * 80 + 10


def test_an_interrupted_backfill_leaves_nothing_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "cronflow.db")
    done: list[int] = []

    def flow_done(logical_time: object, statuses: list[str]) -> None:
        done.append(len(statuses))
        if len(done) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop's handler stops the run

    outcome = manual.run_plans(
        store, plans(tmp_path, 200), max_parallel=4, flows_at_once=1, on_flow_done=flow_done
    )
    assert outcome.signal == signal.SIGINT and outcome.exit_code == 130
    runs = store.history(None, limit=None)
    assert not [r for r in runs if r.status in ("queued", "running", "retrying")]
    assert len([r for r in runs if r.status == "success"]) >= 6  # three flow runs of two jobs
    # Only what began is in history: the flow runs created ahead and not started are gone.
    assert len({r.flow_run_id for r in runs}) <= 4  # a fourth may have begun at the signal
    assert {r.status for r in runs} <= {"success", "canceled"}
    left = store.conn.execute("SELECT count(*) FROM flow_runs").fetchone()[0]
    assert left == len({r.flow_run_id for r in runs})


def test_a_store_that_refuses_to_forget_still_lets_the_backfill_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while deleting the flow runs created ahead: they stay `queued` (a daemon marks
    them `lost`), and the stopped backfill still ends with its own outcome."""
    store = Store(tmp_path / "state" / "cronflow.db")

    def refuse(flow_run_ids: object) -> None:
        raise CronflowError("database or disk is full")

    monkeypatch.setattr(store, "forget_flow_runs", refuse)

    def flow_done(logical_time: object, statuses: list[str]) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    outcome = manual.run_plans(
        store, plans(tmp_path, 50), max_parallel=4, flows_at_once=1, on_flow_done=flow_done
    )
    assert outcome.exit_code == 130
    queued = [r for r in store.history(None, limit=None) if r.status == "queued"]
    assert 0 < len(queued) <= 2 * manual.CREATE_AHEAD
