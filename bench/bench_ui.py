"""Start-up of `cronflow ui` on 1,000 jobs and 100,000 runs, to its first drawn screen.

    .venv/bin/python bench/bench_ui.py [--runs 7] [--jobs 1000] [--history 100000]

Target (issue 12): under 0.5 s. Each run is a whole new process, as a user starts it: the
interpreter, `cronflow.cli`, Textual, the job file, the store and the first screen (flows),
drawn by Textual's headless driver, then exit. The flows screen and the grid of the busiest
flow are timed in-process as well. Everything lives in a temp directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench_startup import job_file

from cronflow.config import load_config
from cronflow.store import Store

PROBE = """
import sys, time
from pathlib import Path
from cronflow.cli import app  # as `cronflow ui` does, then the command's own import
from cronflow.ui.app import Dashboard, FlowsScreen, GridScreen

shown = FlowsScreen.on_mount

def on_mount(self):
    shown(self)
    def drawn():  # the first screen is on the terminal: now the grid of the first flow
        first = time.time()
        grid = GridScreen("job-0")
        def done():
            print(f"{first:.6f} {time.time() - first:.6f}", flush=True)
            self.app.exit()
        self.app.push_screen(grid)
        grid.call_after_refresh(done)
    self.call_after_refresh(drawn)

FlowsScreen.on_mount = on_mount
Dashboard(Path(sys.argv[1]), Path(sys.argv[2])).run(headless=True, size=(120, 40))
"""

STATUSES = ["success"] * 17 + ["failed", "upstream_failed", "skipped"]


def fill(store: Store, jobs: list[str], runs: int) -> None:
    """`runs` finished runs, spread over the jobs, each with one attempt and one output chunk."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    per_job = max(1, runs // len(jobs))
    conn = store.conn
    conn.execute("BEGIN IMMEDIATE")
    run_id = 0
    for index in range(per_job):
        moment = start + timedelta(hours=index)
        us = int(moment.timestamp() * 1e6)
        for job in jobs:
            run_id += 1
            status = STATUSES[(run_id * 7) % len(STATUSES)]
            conn.execute(
                "INSERT INTO flow_runs (id, flow, logical_time, trigger, created_at)"
                " VALUES (?, ?, ?, 'schedule', ?)",
                (run_id, job, us, us),
            )
            conn.execute(
                "INSERT INTO runs (id, flow_run_id, job, logical_time, trigger, status, attempts,"
                " created_at, started_at, finished_at, exit_code)"
                " VALUES (?, ?, ?, ?, 'schedule', ?, 1, ?, ?, ?, 0)",
                (run_id, run_id, job, us, status, us, us, us + 1_000_000),
            )
            conn.execute(
                "INSERT INTO attempts (run_id, number, started_at, finished_at, status)"
                " VALUES (?, 1, ?, ?, ?)",
                (run_id, us, us + 1_000_000, status),
            )
            conn.execute(
                "INSERT INTO output (run_id, attempt, stream, at, data) VALUES (?, 1, 'out', ?, ?)",
                (run_id, us, b"done\n"),
            )
    conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--history", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = job_file(folder, args.jobs)
        state = folder / "state"
        names = list(load_config(config).jobs)
        began = time.perf_counter()
        with Store(state / "cronflow.db") as store:
            fill(store, names, args.history)
        print(f"filled {args.history:,} runs in {time.perf_counter() - began:.1f}s")
        env = {**os.environ, "XDG_STATE_HOME": str(folder / "xdg")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled bytecode, warmed
        argv = [sys.executable, "-c", PROBE, str(config), str(state)]
        subprocess.run(argv, capture_output=True, env=env, check=True)
        firsts, grids = [], []
        for _ in range(args.runs):
            start = time.time()
            out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
            first, grid = out.stdout.split()[-2:]
            firsts.append(float(first) - start)
            grids.append(float(grid))
    median = statistics.median
    print(f"{args.jobs:,} jobs, {args.history:,} runs, median of {args.runs} (min):")
    print(
        f"  process start to the flows screen drawn  {median(firsts) * 1000:7.1f} ms"
        f" ({min(firsts) * 1000:.1f})"
    )
    print(
        f"  then the grid of a flow drawn            {median(grids) * 1000:7.1f} ms"
        f" ({min(grids) * 1000:.1f})"
    )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
