"""Start-up cost of everyday commands, as ratios to a minimal typer app and `python -c pass`.

    .venv/bin/python bench/bench_startup.py [--runs 15]

Targets (issue 3): `--version` within 1.2x of the minimal typer app; `validate` and `list`
within 2x; `list` of 1,000 jobs under 0.5 s. All measured in the same run, stdout piped.
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
        for argv in cases.values():
            median_seconds(argv, 1, env)
        results = {name: median_seconds(argv, args.runs, env) for name, argv in cases.items()}
    base, typer_app = results["python -c pass"], results["minimal typer app"]
    print(f"{'command':32} {'median':>9} {'x typer app':>12} {'x python':>9}")
    for name, seconds in results.items():
        print(
            f"{name:32} {seconds * 1000:7.1f}ms {seconds / typer_app:11.2f}x {seconds / base:8.1f}x"
        )


if __name__ == "__main__":
    main()
