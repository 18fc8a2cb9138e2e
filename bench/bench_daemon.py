"""The daemon under load: fire lag, fan-out of one instant to many flows, and idle cost.

    .venv/bin/python bench/bench_daemon.py [lag] [fanout] [idle]    (default: all three)
        [--lag-seconds 45] [--lag-jobs 5]
        [--fanout-jobs 200] [--fanout-lead 5] [--fanout-rounds 3]
        [--idle-jobs 1000 ...] [--idle-seconds 60]

Each part starts a real `cronflow daemon` on a job file of its own, in a temp directory that
XDG_CONFIG_HOME, XDG_STATE_HOME and CRONFLOW_STATE_DIR point into, and stops it with SIGTERM
(SIGKILL to its process group if it does not stop, also when the bench fails or is stopped).

Lag is measured two ways per run: `started_at - logical_time` from `cronflow history --json`
(the daemon's own record, which it takes just before it spawns the process), and the job's own
clock - logical_time: each job is `echo "$CRONFLOW_RUN_ID $(date +%s.%N)" >> stamps`, a string
command run by the default /bin/sh like most cron jobs, so this one includes fork/exec of the
shell and of `date` (an upper bound on when the job really began).

- lag: --lag-jobs flows `@every 1s` for --lag-seconds; p50/p99/max of both lags, and the
  daemon's own CPU (utime+stime from /proc, children excluded) per fire. Target p99 < 20 ms.
- fanout: --fanout-jobs flows all `@at` one instant --fanout-lead seconds after the daemon
  started, `[daemon] max_parallel` = --fanout-jobs; the median and the largest lag, i.e. when
  the last job started. Target < 0.5 s on 2 cores.
- idle: --idle-jobs jobs `0 3 1 1 *` (none due), measured over --idle-seconds after a settle:
  CPU from /proc/PID/stat, wake-ups as voluntary context switches from /proc/PID/status, and
  VmRSS / VmHWM. Target < 0.1 % CPU and < 40 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STAMP = 'echo "$CRONFLOW_RUN_ID $(date +%s.%N)" >> {path}'  # run by /bin/sh, as jobs are
PARTS = ("lag", "fanout", "idle")
FINISHED = {"success", "failed", "timeout", "canceled", "skipped", "upstream_failed", "lost"}


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


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


@dataclass(frozen=True)
class ProcSample:
    """One look at /proc/PID: CPU seconds (own), voluntary context switches, memory in KiB."""

    at: float
    cpu: float
    voluntary: int
    involuntary: int
    rss_kb: int
    hwm_kb: int
    threads: int


def proc_sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    return ProcSample(
        time.monotonic(),
        cpu,
        int(status["voluntary_ctxt_switches"]),
        int(status["nonvoluntary_ctxt_switches"]),
        int(status["VmRSS"]),
        int(status["VmHWM"]),
        int(status["Threads"]),
    )


class Daemon:
    """A `cronflow daemon` on its own job file and state, stopped for sure on the way out."""

    def __init__(self, folder: Path, job_file: str, base_env: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.jobs = folder / "cronflow.toml"
        self.jobs.write_text(job_file)
        self.log = folder / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready_after = 0.0
        self.cpu_total = 0.0  # user+sys incl. reaped children, from wait4 at the end
        self.env = {
            **base_env,
            "XDG_CONFIG_HOME": str(folder / "config"),
            "XDG_STATE_HOME": str(folder / "state-home"),
            "CRONFLOW_STATE_DIR": str(folder / "state"),
            "CRONFLOW_CONFIG": str(self.jobs),
            "NO_COLOR": "1",
        }
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            self.env.pop(key, None)

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the daemon and wait until it has loaded the job file."""
        self.started = time.monotonic()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*cronflow_command(), "daemon"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = self.started + timeout
        while "loaded " not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"the daemon did not load its job file:\n{self.log_tail()}")
            time.sleep(0.01)
        self.ready_after = time.monotonic() - self.started

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL to the whole group if it is still there after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.returncode is None and time.monotonic() < deadline:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    self.cpu_total = usage.ru_utime + usage.ru_stime
                else:
                    time.sleep(0.02)
        if proc.returncode is None:
            print("daemon did not stop on SIGTERM: killing its group", file=sys.stderr)
            self._signal(proc, signal.SIGKILL, group=True)
            proc.wait()
        else:
            self._signal(proc, signal.SIGKILL, group=True)  # strays of its jobs, if any

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], signum: int, group: bool = False) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(proc.pid, signum)

    def history(self, limit: int = 1000) -> list[dict[str, object]]:
        out = subprocess.run(
            [*cronflow_command(), "history", "--json", "--limit", str(limit)],
            env=self.env,
            capture_output=True,
            check=True,
        )
        return json.loads(out.stdout)


def read_stamps(path: Path) -> dict[int, float]:
    """run id -> the job's own wall clock, as `date` printed it."""
    stamps = {}
    if path.exists():
        for line in path.read_text().splitlines():
            run_id, _, at = line.partition(" ")
            stamps[int(run_id)] = float(at.replace(",", "."))
    return stamps


def lags(
    runs: list[dict[str, object]], stamps: dict[int, float]
) -> tuple[list[float], list[float]]:
    """Per scheduled run: (started_at - logical_time, job clock - logical_time), in seconds."""
    recorded, in_job = [], []
    for run in runs:
        if run["trigger"] != "schedule" or run["started_at"] is None:
            continue
        logical = datetime.fromisoformat(str(run["logical_time"]))
        recorded.append((datetime.fromisoformat(str(run["started_at"])) - logical).total_seconds())
        if run["run_id"] in stamps:
            in_job.append(stamps[int(str(run["run_id"]))] - logical.timestamp())
    return recorded, in_job


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def lag_row(label: str, values: list[float]) -> str:
    if not values:
        return f"{label:44} {'no runs':>8}"
    return (
        f"{label:44} {len(values):6d} {ms(min(values))} {ms(statistics.median(values))}"
        f" {ms(percentile(values, 99))} {ms(max(values))}"
    )


LAG_HEADER = f"{'':44} {'count':>6} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"


# --- parts -----------------------------------------------------------------------------------


def bench_lag(root: Path, base: dict[str, str], jobs: int, seconds: float) -> None:
    folder = root / "lag"
    stamps = folder / "stamps.txt"
    lines = []
    for i in range(jobs):
        command = toml_string(STAMP.format(path=stamps))
        lines.append(f'[jobs.tick-{i}]\nschedule = "@every 1s"\ncommand = {command}\n')
    print(f"\n## fire lag: {jobs} flows @every 1s for {seconds:g} s")
    with Daemon(folder, "\n".join(lines), base) as daemon:
        before = proc_sample(daemon.pid)
        time.sleep(seconds)
        after = proc_sample(daemon.pid)
        daemon.stop()
        runs = daemon.history(limit=max(1000, int(jobs * seconds * 2)))
    recorded, in_job = lags(runs, read_stamps(stamps))
    failed = [r for r in runs if r["status"] != "success"]
    print(LAG_HEADER)
    print(lag_row("started_at - logical_time (history)", recorded))
    print(lag_row("job's own clock - logical_time (incl. spawn)", in_job))
    fires = len(recorded)
    wall = after.at - before.at
    print(
        f"runs not 'success': {len(failed)}; daemon own CPU {after.cpu - before.cpu:.2f} s"
        f" over {wall:.0f} s ({(after.cpu - before.cpu) / wall:.1%}),"
        f" {(after.cpu - before.cpu) / max(fires, 1) * 1000:.2f} ms per fire;"
        f" total incl. jobs {daemon.cpu_total:.2f} s"
    )
    print(f"machine: {machine_load()}")
    if recorded:
        p99 = percentile(recorded, 99)
        print(f"target p99 < 20 ms: {'met' if p99 < 0.020 else 'NOT met'} ({p99 * 1000:.1f} ms)")


def bench_fanout(root: Path, base: dict[str, str], jobs: int, lead: float, rounds: int) -> None:
    print(f"\n## fan-out: {jobs} flows @at one instant, max_parallel = {jobs}, {rounds} rounds")
    print(
        f"{'round':>5} {'ready s':>8} {'ran':>5} {'first ms':>9} {'p50 ms':>8} {'last ms':>8}"
        f" {'job first':>9} {'job p50':>8} {'job last':>9}"
    )
    worst: list[float] = []
    job_first: list[float] = []
    job_last: list[float] = []
    for round_ in range(rounds):
        folder = root / f"fanout-{round_}"
        stamps = folder / "stamps.txt"
        # Whole seconds: the instant is written without a fraction, as a user would.
        instant = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead + 1)
        command = toml_string(STAMP.format(path=stamps))
        lines = [f"[daemon]\nmax_parallel = {jobs}\n"]
        for i in range(jobs):
            lines.append(
                f'[jobs.fan-{i}]\nschedule = "@at {instant.isoformat()}"\ncommand = {command}\n'
            )
        with Daemon(folder, "\n".join(lines), base) as daemon:
            if datetime.now(UTC) >= instant:
                raise SystemExit(
                    f"the daemon took {daemon.ready_after:.1f} s to load: raise --fanout-lead"
                )
            deadline = time.monotonic() + lead + 120
            while len(read_stamps(stamps)) < jobs and time.monotonic() < deadline:
                time.sleep(0.2)  # cheap: a stat and a small read, no cronflow process
            runs = wait_finished(daemon, jobs, deadline)
            daemon.stop()
        recorded, in_job = lags(runs, read_stamps(stamps))
        if len(recorded) != jobs:
            print(f"warning: {len(recorded)} of {jobs} jobs started", file=sys.stderr)
        worst.append(max(recorded))
        job_first.append(min(in_job))
        job_last.append(max(in_job))
        print(
            f"{round_ + 1:5d} {daemon.ready_after:8.2f} {len(recorded):5d}"
            f" {ms(min(recorded)):>9} {ms(statistics.median(recorded))} {ms(max(recorded))}"
            f" {ms(min(in_job)):>9} {ms(statistics.median(in_job))} {ms(max(in_job)):>9}"
        )
    print(
        "(ms after the instant; first/p50/last from history started_at, job = the job's own"
        " clock, incl. spawn)"
    )
    print(f"machine: {machine_load()}")
    first, last = statistics.median(job_first), statistics.median(job_last)
    verdict = "met" if first < 0.020 and last < 0.250 else "NOT met"
    print(
        f"target (issue 14, the job's own clock) first < 20 ms and last < 250 ms: {verdict}"
        f" (medians of rounds: first {first * 1000:.1f} ms, last {last * 1000:.0f} ms;"
        f" started_at last {statistics.median(worst) * 1000:.0f} ms)"
    )


def wait_finished(daemon: Daemon, jobs: int, deadline: float) -> list[dict[str, object]]:
    while True:
        runs = daemon.history(limit=max(1000, jobs * 2))
        if sum(1 for r in runs if r["status"] in FINISHED) >= jobs:
            return runs
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(runs)} runs after the deadline:\n{daemon.log_tail()}")
        time.sleep(0.5)


def bench_idle(
    root: Path, base: dict[str, str], counts: list[int], seconds: float, settle: float = 3.0
) -> None:
    print(f"\n## idle: jobs `0 3 1 1 *` (none due), measured over {seconds:g} s after {settle:g} s")
    print(
        f"{'jobs':>6} {'load s':>7} {'CPU s':>7} {'CPU %':>7} {'wakeups/s':>10} {'invol':>6}"
        f" {'VmRSS MB':>9} {'VmHWM MB':>9} {'threads':>8}"
    )
    for count in counts:
        folder = root / f"idle-{count}"
        lines = [
            f'[jobs.idle-{i}]\nschedule = "0 3 1 1 *"\ncommand = ["true"]\n' for i in range(count)
        ]
        with Daemon(folder, "\n".join(lines), base) as daemon:
            time.sleep(settle)
            before = proc_sample(daemon.pid)
            time.sleep(seconds)
            after = proc_sample(daemon.pid)
        wall = after.at - before.at
        cpu = after.cpu - before.cpu
        print(
            f"{count:6d} {daemon.ready_after:7.2f} {cpu:7.2f} {cpu / wall:7.3%}"
            f" {(after.voluntary - before.voluntary) / wall:10.2f}"
            f" {after.involuntary - before.involuntary:6d} {after.rss_kb / 1024:9.1f}"
            f" {after.hwm_kb / 1024:9.1f} {after.threads:8d}"
        )
    print(f"(CPU resolution 1/{CLOCK_TICKS} s; load s = from start to the job file loaded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="{lag,fanout,idle}", help="default: all")
    parser.add_argument("--lag-seconds", type=float, default=45.0)
    parser.add_argument("--lag-jobs", type=int, default=5)
    parser.add_argument("--fanout-jobs", type=int, default=200)
    parser.add_argument("--fanout-lead", type=float, default=5.0, help="seconds to the instant")
    parser.add_argument("--fanout-rounds", type=int, default=3)
    parser.add_argument("--idle-jobs", type=int, nargs="+", default=[1000])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    options = parser.parse_args()
    parts = options.parts or list(PARTS)
    if unknown := set(parts) - set(PARTS):
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `with Daemon` unwinds

    now = datetime.now().astimezone()
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {now:%Y-%m-%d %H:%M %Z}")
    print(f"at start: {machine_load()}")
    with tempfile.TemporaryDirectory(prefix="cronflow-bench-daemon-") as tmp:
        root = Path(tmp)
        base = isolated_pycache(dict(os.environ), root)
        if "lag" in parts:
            bench_lag(root, base, options.lag_jobs, options.lag_seconds)
        if "fanout" in parts:
            bench_fanout(
                root, base, options.fanout_jobs, options.fanout_lead, options.fanout_rounds
            )
        if "idle" in parts:
            bench_idle(root, base, options.idle_jobs, options.idle_seconds)
    print(f"\nat end: {machine_load()}")


if __name__ == "__main__":
    main()
