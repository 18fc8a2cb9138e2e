"""Engine overhead: 500 `true` jobs through the real `cronflow run` backfill, against shell loops.

    .venv/bin/python bench/bench_engine.py [--jobs 500] [--runs 3]

A job file with `[jobs.t] schedule = "@every 1m"`, `command = ["true"]` is backfilled over a
range holding exactly --jobs fire times (`cronflow run t --from A --to B`, and again with
`--parallel 4`), each run on a fresh state directory. Wall time and CPU (user+sys of the
process and every child it reaped, from `os.wait4`) are medians of --runs runs, and are put
next to three baselines measured in the same run:

- `sh -c 'for i in $(seq N); do true; done'`: `true` is a shell builtin, so no process starts;
- `sh -c 'for i in $(seq N); do /bin/true; done'`: N processes, the honest floor for cron;
- `python -c '... subprocess.run(["/bin/true"]) ...'`: N processes started from Python;
- `engine_floor.py N [--store]`: the floor of the design itself: an asyncio loop starting each
  job through cronflow's fork server and reading its pipes to EOF, nothing else (with --store,
  two small SQLite commits per job, as recording a start and an end needs).

A one-fire backfill gives cronflow's fixed cost (interpreter, imports, database), so the
marginal cost per job is (T(N) - T(1)) / (N - 1). Nothing outside the temp directory is touched:
XDG_CONFIG_HOME, XDG_STATE_HOME and CRONFLOW_STATE_DIR all point into it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

FIRST = datetime(2025, 1, 1, tzinfo=UTC)
FLOOR = str(Path(__file__).with_name("engine_floor.py"))
JOB_FILE = '[jobs.t]\nschedule = "@every 1m"\ncommand = ["true"]\n'
PYTHON_LOOP = "import subprocess\nfor _ in range({n}):\n    subprocess.run(['/bin/true'])\n"

_children: set[subprocess.Popen[bytes]] = set()


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # user + sys seconds of the process and its reaped children


def isolated_pycache(env: dict[str, str], folder: Path) -> dict[str, str]:
    """Byte-code cached in the temp dir, as an installed cronflow has it, not compiled per start.

    The sandbox sets PYTHONDONTWRITEBYTECODE, and the tree is being edited meanwhile; a prefix
    in the temp dir keeps the checkout untouched. One import warms it before anything is timed.
    """
    env = {**env, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = "import cronflow.cli, cronflow.daemon, cronflow.manual, cronflow.store, cronflow.render"
    subprocess.run([sys.executable, "-c", warm], env=env, check=True)
    return env


def machine_load() -> str:
    """Load average and CPU pressure: others share these 2 cores, and it shows in wall times."""
    load = Path("/proc/loadavg").read_text().split()[0]
    try:
        pressure = Path("/proc/pressure/cpu").read_text().split()[1].partition("=")[2]
    except (OSError, IndexError):
        pressure = "n/a"
    return f"load {load}, CPU pressure avg10 {pressure}%"


def cronflow_command() -> list[str]:
    script = Path(sys.executable).parent / "cronflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cronflow"]


def measure(argv: list[str], env: dict[str, str]) -> Sample:
    """Run `argv` to its end; its wall time and the CPU that `wait4` reports for it."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    _children.add(proc)
    try:
        assert proc.stderr is not None
        err = proc.stderr.read()  # drained before the wait, so a chatty child cannot block
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        _children.discard(proc)
        if proc.returncode is None:
            _kill(proc)
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {why[0]}")
    return Sample(wall, usage.ru_utime + usage.ru_stime)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_children() -> None:
    for proc in list(_children):
        _kill(proc)
    _children.clear()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Backfill:
    """`cronflow run t --from A --to B` on a fresh state directory each time."""

    def __init__(self, folder: Path, base_env: dict[str, str]) -> None:
        self.folder = folder
        self.base_env = base_env
        self.jobs = folder / "cronflow.toml"
        self.jobs.write_text(JOB_FILE)
        self.count = 0

    def env(self, state: Path) -> dict[str, str]:
        return {
            **self.base_env,
            "XDG_CONFIG_HOME": str(self.folder / "config"),
            "XDG_STATE_HOME": str(self.folder / "state-home"),
            "CRONFLOW_STATE_DIR": str(state),
            "CRONFLOW_CONFIG": str(self.jobs),
            "NO_COLOR": "1",
        }

    def run(self, fires: int, parallel: int) -> Sample:
        self.count += 1
        state = self.folder / f"state-{self.count}"
        last = FIRST + timedelta(minutes=fires - 1)
        argv = [*cronflow_command(), "run", "t", "--from", iso(FIRST), "--to", iso(last)]
        if parallel > 1:
            argv += ["--parallel", str(parallel)]
        sample = measure(argv, self.env(state))
        self.check(state, fires)
        shutil.rmtree(state)
        return sample

    def check(self, state: Path, fires: int) -> None:
        """Every fire ran and succeeded: the bench must not time a run that did nothing."""
        out = subprocess.run(
            [*cronflow_command(), "history", "--json", "--limit", str(fires + 10)],
            env=self.env(state),
            capture_output=True,
            check=True,
        )
        runs = json.loads(out.stdout)
        ok = sum(1 for r in runs if r["status"] == "success" and r["trigger"] == "backfill")
        if ok != fires:
            raise SystemExit(f"expected {fires} successful backfill runs, found {ok}")


def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.wall for s in samples), statistics.median(s.cpu for s in samples)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="fires in the backfill")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; medians reported")
    options = parser.parse_args()
    n = options.jobs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="cronflow-bench-engine-") as tmp:
        folder = Path(tmp)
        base_env = isolated_pycache(dict(os.environ), folder)
        backfill = Backfill(folder, base_env)
        plain = {**base_env, "HOME": str(folder)}
        cases = {
            f"sh loop, builtin true x{n}": lambda: measure(
                ["sh", "-c", f"for i in $(seq {n}); do true; done"], plain
            ),
            f"sh loop, /bin/true x{n}": lambda: measure(
                ["sh", "-c", f"for i in $(seq {n}); do /bin/true; done"], plain
            ),
            f"python subprocess.run x{n}": lambda: measure(
                [sys.executable, "-c", PYTHON_LOOP.format(n=n)], plain
            ),
            "asyncio floor, 1 job": lambda: measure([sys.executable, FLOOR, "1"], plain),
            f"asyncio floor x{n}": lambda: measure([sys.executable, FLOOR, str(n)], plain),
            f"asyncio floor + 2 commits x{n}": lambda: measure(
                [sys.executable, FLOOR, str(n), "--store"], plain
            ),
            "cronflow run, 1 fire": lambda: backfill.run(1, 1),
            f"cronflow run, {n} fires": lambda: backfill.run(n, 1),
            f"cronflow run, {n} fires --parallel 4": lambda: backfill.run(n, 4),
        }
        results: dict[str, list[Sample]] = {name: [] for name in cases}
        load_before = machine_load()
        try:
            backfill.run(2, 1)  # warm-up: page cache, byte-code, first database
            measure([sys.executable, FLOOR, "2"], plain)  # and the fork server built for HOME
            for round_ in range(options.runs):  # interleaved, so drift hits every case alike
                for name, case in cases.items():
                    results[name].append(case())
                print(f"  round {round_ + 1}/{options.runs} done", file=sys.stderr)
        finally:
            kill_children()

    medians = {name: median_sample(samples) for name, samples in results.items()}
    report(medians, n)
    print(f"\nmachine: {os.cpu_count()} CPUs; before: {load_before}; after: {machine_load()}")


def report(medians: dict[str, Sample], n: int) -> None:
    loop = medians[f"sh loop, /bin/true x{n}"]  # n real processes: the floor for cron
    print(f"\n{n} jobs per case, median of runs; CPU = user+sys incl. children (wait4)\n")
    header = f"{'case':38} {'wall ms':>9} {'jobs/s':>8} {'CPU ms':>8} {'CPU ms/job':>11}"
    print(header + f" {'wall x':>7} {'CPU x':>6}")
    for name, s in medians.items():
        jobs = 1 if name.endswith(("1 fire", "1 job")) else n
        print(
            f"{name:38} {s.wall * 1000:9.1f} {jobs / s.wall:8.0f} {s.cpu * 1000:8.1f}"
            f" {s.cpu * 1000 / jobs:11.3f} {s.wall / loop.wall:7.2f} {s.cpu / loop.cpu:6.2f}"
        )
    print("(wall x / CPU x: ratio to the `/bin/true` shell loop)\n")
    print("marginal cost per job, fixed start-up cost (the 1-fire or 1-job run) taken out:")
    floor = marginal(medians[f"asyncio floor + 2 commits x{n}"], medians["asyncio floor, 1 job"], n)
    marginals = {
        name: marginal(s, medians["asyncio floor, 1 job"], n)
        for name, s in medians.items()
        if name.startswith("asyncio floor x") or name.startswith("asyncio floor +")
    }
    fixed = medians["cronflow run, 1 fire"]
    for name, s in medians.items():
        if name.startswith("cronflow run") and not name.endswith("1 fire"):
            marginals[name] = marginal(s, fixed, n)
    for name, (wall, cpu) in marginals.items():
        print(
            f"  {name:38} {wall * 1000:6.2f} ms wall/job ({1 / wall:5.0f} jobs/s),"
            f" {cpu * 1000:6.2f} ms CPU/job, {cpu / (loop.cpu / n):5.1f}x the /bin/true loop,"
            f" {cpu / floor[1]:4.2f}x the floor with commits"
        )


def marginal(total: Sample, fixed: Sample, n: int) -> tuple[float, float]:
    """Wall and CPU seconds per job beyond the fixed cost of a one-job run."""
    return (total.wall - fixed.wall) / (n - 1), (total.cpu - fixed.cpu) / (n - 1)


if __name__ == "__main__":
    main()
