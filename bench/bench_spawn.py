"""Starting 200 jobs in a row, in-process: the fork server (spawn.start) against subprocess.Popen.

    .venv/bin/python bench/bench_spawn.py [--jobs 200] [--rounds 5] [--ballast-mib 16]

Each job is `sh -c 'date +%s.%N >> FILE'`, started the way runner starts jobs (new session,
stdin on /dev/null, stdout and stderr piped, the job's own env and workdir). Per round and way:
the loop's wall time (first start called until the last start returned), this process's CPU in
the loop (utime+stime), and when the last job's `date` ran, from the loop's start. `--ballast-mib`
touches that much memory first, so this process is about the daemon's size (~28 MiB) and a fork
from it costs what it costs there. The rounds alternate the two ways; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cronflow import spawn


def with_popen(argv: list[str], env: dict[str, str], cwd: str) -> spawn.Started:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=cwd, env=env,
                            start_new_session=True)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    return spawn.Started(proc.pid, proc.stdout, proc.stderr, proc)


def one_round(way: str, jobs: int, folder: Path) -> tuple[float, float, float]:
    stamps = folder / f"stamps-{way}"
    stamps.unlink(missing_ok=True)
    argv = ["sh", "-c", f"date +%s.%N >> {stamps}"]
    env = {"PATH": os.environ["PATH"], "LC_ALL": "C", "HOME": str(folder)}
    start = spawn.start if way == "server" else with_popen
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0, t0 = time.perf_counter(), time.time()
    started = [start(argv, env, str(folder)) for _ in range(jobs)]
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for s in started:
        s.stdout.read()
        s.stdout.close()
        s.stderr.close()
        _, status, _ = os.wait4(s.pid, 0)
        if s.direct is not None:
            s.direct.returncode = os.waitstatus_to_exitcode(status)
    last = max(float(x) for x in stamps.read_text().split())
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return wall * 1000, cpu * 1000, (last - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ballast-mib", type=int, default=16)
    args = parser.parse_args()
    ballast = bytearray(args.ballast_mib * 1024 * 1024)
    ballast[::4096] = b"x" * (len(ballast) // 4096)
    rss = next(x for x in Path("/proc/self/status").read_text().splitlines() if "VmRSS" in x)
    print(f"{args.jobs} starts per round, {args.rounds} rounds; this process: {rss.split(':')[1]}")
    print(f"load: {Path('/proc/loadavg').read_text().strip()}")
    if spawn.helper_path() is None:
        raise SystemExit("no C compiler: the fork server cannot be built")
    with tempfile.TemporaryDirectory() as tmp:
        one_round("server", 5, Path(tmp))  # warm: the server is up, the page cache too
        results: dict[str, list[tuple[float, float, float]]] = {"server": [], "popen": []}
        for _ in range(args.rounds):
            for way in results:
                results[way].append(one_round(way, args.jobs, Path(tmp)))
    print(f"{'way':<8} {'loop wall ms':>13} {'loop CPU ms':>12} {'last job ran ms':>16}")
    for way, rows in results.items():
        wall, cpu, last = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"{way:<8} {wall:>13.1f} {cpu:>12.1f} {last:>16.1f}")


if __name__ == "__main__":
    main()
