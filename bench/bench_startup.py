"""Start-up cost of everyday commands, as ratios to a minimal typer app and `python -c pass`.

    .venv/bin/python bench/bench_startup.py [--runs 15]

Targets (issue 3): `--version` within 1.2x of the minimal typer app; `validate` and `list`
within 2x; `list` of 1,000 jobs under 0.5 s. All measured in the same run, stdout piped, in
rounds of every case once; a ratio is the median over the rounds of the two times taken in
the same round. Each row shows wall time and CPU time (user + sys of the process).

Issue 14 adds a second file of 1,000 jobs with varied schedules (yearly, monthly, Feb 29,
`@every`, weekdays) spread over zones with daylight-saving changes, every job its own flow:
`validate` and `list` of it within 1.5x of the minimal typer app, and in-process figures for
`load_config` against the TOML parse alone (target <= 2x) and `next` of a yearly schedule.
"""

from __future__ import annotations

import argparse
import os
import resource
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


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + sys of the process: the growth of RUSAGE_CHILDREN
    across the run, which counts the reaped child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, env=env, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def rounds(
    cases: dict[str, tuple[list[str], dict[str, str]]], runs: int
) -> dict[str, list[tuple[float, float]]]:
    """`runs` rounds of every case once, in turn: on a shared machine the speed drifts by
    tens of per cent within seconds, and a ratio taken within one round cancels most of it."""
    for argv, env in cases.values():
        measure(argv, env)  # warm the byte-code caches
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (argv, env) in cases.items():
            found[name].append(measure(argv, env))
    return found


def ratio_to(found: list[tuple[float, float]], base: list[tuple[float, float]], cpu: int) -> float:
    """Median over the rounds of this case's time over `base`'s in the same round."""
    return statistics.median(a[cpu] / b[cpu] for a, b in zip(found, base, strict=True))


def _load() -> str:
    """The 1-minute load average: wall times move with it (the machine is shared), CPU times
    (user + sys of each process) much less."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    load_before = _load()
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
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "minimal typer app": ([sys.executable, str(minimal)], env),
            "cronflow --version": ([cronflow, "--version"], env),
            "cronflow validate (1,000 jobs)": ([cronflow, "validate"], env),
            "cronflow list (1,000 jobs)": ([cronflow, "list"], env),
            "cronflow validate (varied)": ([cronflow, "validate"], varied_env),
            "cronflow list (varied)": ([cronflow, "list"], varied_env),
        }
        results = rounds(cases, args.runs)
        inside = in_process(varied)
    python, typer_app = results["python -c pass"], results["minimal typer app"]
    print(f"load average before and after: {load_before} / {_load()}")
    print(
        f"{'command':32} {'median':>9} {'x typer app':>12} {'x python':>9}"
        f" {'CPU':>9} {'CPU x typer':>12}"
    )
    for name, found in results.items():
        wall = statistics.median(w for w, _ in found)
        cpu = statistics.median(c for _, c in found)
        print(
            f"{name:32} {wall * 1000:7.1f}ms {ratio_to(found, typer_app, 0):11.2f}x"
            f" {ratio_to(found, python, 0):8.1f}x {cpu * 1000:7.1f}ms"
            f" {ratio_to(found, typer_app, 1):11.2f}x"
        )
    print(f"\nin-process, varied file (median of 15)  {'ms':>8} {'x tomli':>8}")
    for name, seconds in inside.items():
        ratio = seconds / inside["tomli.loads"]
        print(f"{name:40} {seconds * 1000:8.2f} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
