"""How fast is `history` at a million runs? Whole `cronflow history` processes and in-process calls.

    .venv/bin/python bench/bench_history.py [--runs 1000000] [--jobs 200] [--repeat 7] [--rebuild]

The database is built once (schema from `Store`, rows by executemany with the indexes dropped
and re-created) and cached under /tmp/cronflow-bench/, keyed by size and schema version. It is
not ANALYZEd, because users' databases are not either: the planner must choose well without
statistics. Timings are medians of --repeat runs after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cronflow.store import MIGRATIONS, Store

CACHE = Path(tempfile.gettempdir()) / "cronflow-bench"
SPAN = timedelta(days=365)
STATUSES = ["success"] * 88 + ["failed"] * 7 + ["timeout"] * 2 + ["skipped", "canceled", "missed"]


def job_name(index: int) -> str:
    return f"job-{index:03d}"


JOB = job_name(42)  # the bench uses --jobs > 42


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def build(path: Path, runs: int, jobs: int) -> None:
    """`runs` finished runs over `jobs` jobs, evenly over the year before now, one per flow run."""
    shutil.rmtree(path.parent, ignore_errors=True)
    Store(path).close()  # the real schema, made by the real migrations
    db = sqlite3.connect(path, isolation_level=None)
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('runs', 'flow_runs')"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    rng = random.Random(42)
    start = us(datetime.now(UTC) - SPAN)
    step = SPAN // timedelta(microseconds=1) // runs
    db.execute("BEGIN IMMEDIATE")
    chunk = 100_000
    for first in range(1, runs + 1, chunk):
        ids = range(first, min(first + chunk, runs + 1))
        flow_runs, rows, attempts = [], [], []
        for run_id in ids:
            job = job_name(rng.randrange(jobs))
            created = start + run_id * step
            logical = created - created % 60_000_000
            status = rng.choice(STATUSES)
            ran = status not in ("skipped", "missed")
            duration = rng.randrange(100_000, 600_000_000)
            exit_code = {"success": 0, "failed": 1, "timeout": 143, "canceled": 130}.get(status)
            flow_runs.append((run_id, job, logical, "schedule", created))
            rows.append(
                (run_id, run_id, job, logical, "schedule", status, 1 if ran else 0, created,
                 created if ran else None, created + duration, exit_code,
                 rng.random() if ran else None, rng.randrange(2000, 90000) if ran else None)
            )  # fmt: skip
            if ran:  # one attempt each, so the host of a run's latest attempt has rows to find
                attempts.append((run_id, 1, created, created + duration, status, exit_code))
        db.executemany("INSERT INTO flow_runs VALUES (?, ?, ?, ?, ?)", flow_runs)
        db.executemany(
            "INSERT INTO attempts (run_id, number, started_at, finished_at, status, exit_code)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            attempts,
        )
        db.executemany(
            "INSERT INTO runs (id, flow_run_id, job, logical_time, trigger, status, attempts,"
            " created_at, started_at, finished_at, exit_code, cpu_seconds, max_rss_kb)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        print(f"  {ids[-1]:,} runs", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    for _, sql in indexes:
        db.execute(sql)
    db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name IN ('runs', 'flow_runs')", (runs,))
    db.execute("INSERT INTO state (key, value) VALUES ('bench_complete', '1')")
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def database(runs: int, jobs: int, rebuild: bool) -> Path:
    path = CACHE / f"history-{runs}-{jobs}-schema{len(MIGRATIONS)}" / "cronflow.db"
    ready = False
    if path.exists() and not rebuild:
        with Store(path) as store:
            ready = store.get_state("bench_complete") == "1"
    if not ready:
        print(f"building {path} ...", file=sys.stderr)
        started = time.perf_counter()
        build(path, runs, jobs)
        print(f"built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def median_ms(call: Callable[[], object], repeat: int) -> float:
    call()  # warm-up: page cache, statement cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "cronflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cronflow"]


def time_cli(args: list[str], state_dir: Path, repeat: int) -> str:
    """Median wall time of a whole `cronflow ...` process, or why it could not run."""
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "CRONFLOW_STATE_DIR": str(state_dir),
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_STATE_HOME": f"{home}/state",
            "NO_COLOR": "1",
        }
        command = cli_command() + args

        def run() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(command, env=env, capture_output=True)

        first = run()
        if first.returncode != 0:
            why = (first.stderr.decode().strip().splitlines() or ["no message"])[-1]
            return f"n/a (exit {first.returncode}: {why[:60]})"
        return f"{median_ms(run, repeat):.1f}"


def in_process(path: Path, repeat: int, jobs: int) -> list[tuple[str, float, int]]:
    results = []
    opened = median_ms(lambda: Store(path).close(), repeat)
    results.append(("Store(path) open + close", opened, 0))
    with Store(path) as store:
        newest = store.history(limit=1)[0]
        now = newest.logical_time
        all_jobs = [job_name(i) for i in range(jobs)]
        week, hours, months = (now - timedelta(days=7), now - timedelta(hours=2),
                               now - timedelta(days=300))  # fmt: skip
        calls: list[tuple[str, Callable[[], object]]] = [
            ("history(limit=20)", lambda: store.history(limit=20)),
            (f"history({JOB!r}, status='failed')", lambda: store.history(JOB, status="failed")),
            (f"history({JOB!r}, limit=20)", lambda: store.history(JOB, limit=20)),
            ("history(status='timeout', limit=20)",
             lambda: store.history(status="timeout", limit=20)),
            ("history(since=7d, limit=20)", lambda: store.history(since=week, limit=20)),
            (f"history({JOB!r}, since=2h)", lambda: store.history(JOB, since=hours)),
            ("history(since=300d, limit=20)", lambda: store.history(since=months, limit=20)),
            (f"last_status({jobs} jobs)", lambda: store.last_status(all_jobs)),
            ("recent_failures(5)", lambda: store.recent_failures(5)),
            ("active_runs()", store.active_runs),
            (f"latest_run({JOB!r})", lambda: [store.latest_run(JOB)]),
            (f"succeeded_logical_times({JOB!r}, 30d)",
             lambda: store.succeeded_logical_times(JOB, now - timedelta(days=30), now)),
        ]  # fmt: skip
        for label, call in calls:
            found = call()
            results.append((label, median_ms(call, repeat), len(found)))  # type: ignore[arg-type]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    options = parser.parse_args()

    path = database(options.runs, options.jobs, options.rebuild)
    size = sum(p.stat().st_size for p in path.parent.glob("cronflow.db*")) / 2**20
    print(f"database: {path} ({options.runs:,} runs, {options.jobs} jobs, {size:.0f} MiB)")
    print(f"median of {options.repeat} runs; SQLite {sqlite3.sqlite_version}\n")

    print(f"{'in-process call':<44} {'ms':>8} {'rows':>6}")
    for label, ms, rows in in_process(path, options.repeat, options.jobs):
        print(f"{label:<44} {ms:>8.2f} {rows:>6}")

    print(f"\n{'whole process (' + ' '.join(cli_command()[-1:]) + ' ...)':<44} {'ms':>8}")
    print(f"{'cronflow --version':<44} {time_cli(['--version'], path.parent, options.repeat):>8}")
    for args in (["history", "--limit", "20"], ["history", JOB, "--status", "failed"]):
        label = "cronflow " + " ".join(args)
        print(f"{label:<44} {time_cli(args, path.parent, options.repeat):>8}")


if __name__ == "__main__":
    main()
