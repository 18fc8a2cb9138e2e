"""Start-up cost of everyday commands, as ratios to a minimal typer app and `python -c pass`.

    .venv/bin/python bench/bench_startup.py [--runs 15]

Targets (issue 3): `--version` within 1.2x of the minimal typer app; `validate` and `list`
within 2x; `list` of 1,000 jobs under 0.5 s. All measured in the same run, stdout piped.

Issue 14 adds a second file of 1,000 jobs with varied schedules (yearly, monthly, Feb 29,
`@every`, weekdays) spread over zones with daylight-saving changes, every job its own flow:
`validate` and `list` of it within 1.5x of the minimal typer app, and in-process figures for
`load_config` against the TOML parse alone (target <= 2x) and `next` of a yearly schedule.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MINIMAL_TYPER = """
import typer
app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False)
@app.command()
def hello(name: str = "world") -> None:
    print(f"hello {name}")
app()
"""

SCHEDULES = [
    "0 3 * * *",
    "*/15 * * * *",
    "30 6 * * mon-fri",
    "@hourly",
    "@every 90m",
    "0 0 1,15 * *",
    "5-59/20 * * * *",
    "0 22 * * sun",
]


def job_file(folder: Path, count: int = 1000) -> Path:
    """A file of `count` jobs: a quarter of them downstream of another, in flows of four."""
    lines = ['[defaults]\ntimezone = "Europe/Berlin"\nretries = 1\n']
    for i in range(count):
        lines.append(f'[jobs.job-{i}]\ncommand = "echo {i}"')
        if i % 4:
            lines.append(f'after = ["job-{i - 1}"]')
        else:
            lines.append(f'schedule = "{SCHEDULES[(i // 4) % len(SCHEDULES)]}"')
        lines.append("")
    path = folder / "jobs.toml"
    path.write_text("\n".join(lines))
    return path


VARIED_SCHEDULES = [
    "0 3 1 1 *",
    "@yearly",
    "30 2 29 2 *",
    "0 0 1 * *",
    "@monthly",
    "15 4 1,15 * *",
    "@every 90m",
    "@every 1h30m",
    "@every 7d",
    "30 2 * * *",
    "*/10 1-3 * * sun",
    "0 9 * * mon-fri",
    "@daily",
    "45 23 L * *",
]
VARIED_ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Europe/London",
    "UTC",
]


def varied_job_file(folder: Path, count: int = 1000) -> Path:
    """`count` independent jobs, each with a schedule and zone of its own from the lists above."""
    schedules = [s for s in VARIED_SCHEDULES if " L " not in s]  # every one must be valid
    lines = ["[defaults]\nretries = 1\n"]
    for i in range(count):
        lines.append(f'[jobs.varied-{i}]\ncommand = "echo {i}"')
        lines.append(f'schedule = "{schedules[i % len(schedules)]}"')
        lines.append(f'timezone = "{VARIED_ZONES[(i // 3) % len(VARIED_ZONES)]}"')
        if i % 5 == 0:
            lines.append(f'description = "job number {i}"')
        lines.append("")
    path = folder / "varied.toml"
    path.write_text("\n".join(lines))
    return path


def in_process(path: Path, repeat: int = 15) -> dict[str, float]:
    """Median seconds of the TOML parse alone, of `load_config`, and of a yearly `next`."""
    import tomli

    from cronflow.config import load_config
    from cronflow.schedule import parse_schedule

    def median(fn: object) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    zone, now = ZoneInfo("Europe/Berlin"), datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    def yearly_next() -> None:
        schedule = parse_schedule("0 3 1 1 *")  # fresh each time: no warm caches
        for _ in range(5):  # `cronflow next` shows five fires
            schedule.next_fire(now, zone)

    def leap_next() -> None:
        parse_schedule("30 2 29 2 *").next_fire(now, zone)

    return {
        "tomli.loads": median(lambda: tomli.loads(path.read_text())),
        "load_config": median(lambda: load_config(path)),
        "next 5 fires of 0 3 1 1 *": median(yearly_next),
        "next fire of 30 2 29 2 *": median(leap_next),
    }


def median_seconds(argv: list[str], runs: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    cronflow = str(Path(sys.executable).parent / "cronflow")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = job_file(folder)
        varied = varied_job_file(folder)
        varied_env = {
            **os.environ,
            "XDG_STATE_HOME": str(folder / "state"),
            "CRONFLOW_CONFIG": str(varied),
        }
        varied_env.pop("PYTHONDONTWRITEBYTECODE", None)
        minimal = folder / "minimal.py"
        minimal.write_text(MINIMAL_TYPER)
        env = {**os.environ, "XDG_STATE_HOME": str(folder / "state"), "CRONFLOW_CONFIG": str(jobs)}
        # Users run from compiled bytecode: let Python write it (this machine's environment
        # sets PYTHONDONTWRITEBYTECODE), and warm it up before measuring.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "minimal typer app": [sys.executable, str(minimal)],
            "cronflow --version": [cronflow, "--version"],
            "cronflow validate (1,000 jobs)": [cronflow, "validate"],
            "cronflow list (1,000 jobs)": [cronflow, "list"],
        }
        varied_cases = {
            "cronflow validate (varied)": [cronflow, "validate"],
            "cronflow list (varied)": [cronflow, "list"],
        }
        for argv in cases.values():
            median_seconds(argv, 1, env)
        results = {name: median_seconds(argv, args.runs, env) for name, argv in cases.items()}
        for name, argv in varied_cases.items():
            median_seconds(argv, 1, varied_env)
            results[name] = median_seconds(argv, args.runs, varied_env)
        inside = in_process(varied)
    base, typer_app = results["python -c pass"], results["minimal typer app"]
    print(f"{'command':32} {'median':>9} {'x typer app':>12} {'x python':>9}")
    for name, seconds in results.items():
        print(
            f"{name:32} {seconds * 1000:7.1f}ms {seconds / typer_app:11.2f}x {seconds / base:8.1f}x"
        )
    print(f"\nin-process, varied file (median of 15)  {'ms':>8} {'x tomli':>8}")
    for name, seconds in inside.items():
        ratio = seconds / inside["tomli.loads"]
        print(f"{name:40} {seconds * 1000:8.2f} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
