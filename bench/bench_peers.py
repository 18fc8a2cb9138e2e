"""Peers side by side: Debian cron, yacron and cronflow on the same jobs, in one run.

    .venv/bin/python bench/bench_peers.py [--jobs 200] [--minutes 3] [--idle-jobs 1000]
        [--idle-seconds 60] [--peers cron,yacron,cronflow]

Each peer in turn gets --jobs jobs `* * * * *` whose command is `date +%s.%N` appended to a
file, and runs for --minutes minute boundaries; for each boundary, the first and the last job's
own clock minus the minute is its lag (the job's own clock includes the shell's start: an upper
bound on when it began). Then each peer gets --idle-jobs jobs that are never due
(`0 3 1 1 *`) for --idle-seconds: CPU seconds (utime+stime of its process tree, /proc) and RSS.

- cron: Debian's `cron -f` as a child, jobs in a file in /etc/cron.d (needs root, and the
  `cron` package: `apt-get install cron`; skipped with that hint otherwise). The file is removed
  at the end.
- yacron: installed with pip into a venv in the temp directory (the registry must be reachable;
  skipped otherwise), `yacron -c FILE`.
- cronflow: `cronflow daemon` with `[daemon] max_parallel` = --jobs, state in the temp dir.

Peers run one after the other, never together, so each has both cores. Nothing outside the
temp directory is touched but /etc/cron.d/cronflow-bench-peers, which is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CRON_FILE = Path("/etc/cron.d/cronflow-bench-peers")
_children: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class Lag:
    first: list[float]  # ms after each minute
    last: list[float]


@dataclass(frozen=True)
class Idle:
    cpu: float  # seconds over the window
    rss_mb: float


def tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{entry.name}/stat").read_bytes()
            ppid = int(raw[raw.rfind(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/stat").read_bytes()
            fields = raw[raw.rfind(b")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def rss_mb(root: int) -> float:
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_minutes(stamps: Path, minutes: int, jobs: int) -> Lag:
    """Wait until `minutes` minute boundaries have passed, then read the jobs' own clocks."""
    start = time.time()
    first_minute = int(start // 60 + 1) * 60
    if first_minute - start < 5:  # too close: the peer may not be ready for it
        first_minute += 60
    end = first_minute + 60 * (minutes - 1) + 15
    while time.time() < end:
        time.sleep(min(5.0, max(0.1, end - time.time())))
    per_minute: dict[int, list[float]] = {}
    for line in stamps.read_text().split() if stamps.exists() else []:
        moment = float(line)
        minute = int(moment // 60) * 60
        if first_minute <= minute < first_minute + 60 * minutes:
            per_minute.setdefault(minute, []).append((moment - minute) * 1000)
    firsts = [min(v) for v in per_minute.values()]
    lasts = [max(v) for v in per_minute.values() if len(v) >= jobs * 0.9]
    return Lag(firsts, lasts)


def measure_idle(proc: subprocess.Popen[bytes], seconds: float) -> Idle:
    time.sleep(3)  # settle after start-up
    before = cpu_seconds(proc.pid)
    time.sleep(seconds)
    return Idle(cpu_seconds(proc.pid) - before, rss_mb(proc.pid))


# --- the peers ---------------------------------------------------------------------------------


class Peer:
    name = ""

    def __init__(self, root: Path) -> None:
        self.root = root / self.name
        self.root.mkdir()

    def available(self) -> str | None:
        """None if it can run here, else why not."""
        return None

    def start(self, command: str, schedule: str, jobs: int) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class Cron(Peer):
    name = "cron"

    def available(self) -> str | None:
        if os.geteuid() != 0:
            return "needs root (jobs go in /etc/cron.d)"
        if shutil.which("cron") is None:
            return "Debian's cron is not installed: apt-get install cron"
        return None

    def start(self, command: str, schedule: str, jobs: int) -> subprocess.Popen[bytes]:
        # In a crontab a bare % ends the command (the rest is its stdin): escape it.
        escaped = command.replace("%", "\\%")
        lines = [f"{schedule} root {escaped}\n" for _ in range(jobs)]
        CRON_FILE.write_text("SHELL=/bin/sh\n" + "".join(lines))
        os.chmod(CRON_FILE, 0o644)
        return spawn(["cron", "-f"], dict(os.environ), self.root / "log")

    def cleanup(self) -> None:
        CRON_FILE.unlink(missing_ok=True)


class Yacron(Peer):
    name = "yacron"

    def available(self) -> str | None:
        venv = self.root / "venv"
        made = subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True
        )
        if made.returncode == 0:
            made = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "yacron"],
                capture_output=True,
                text=True,
            )
        return None if made.returncode == 0 else f"cannot install yacron: {made.stderr[-300:]}"

    def start(self, command: str, schedule: str, jobs: int) -> subprocess.Popen[bytes]:
        config = self.root / f"jobs-{jobs}.yaml"
        entries = "".join(
            f'  - name: j{i}\n    command: "{command}"\n    shell: /bin/sh\n'
            f'    schedule: "{schedule}"\n    captureStdout: false\n    captureStderr: false\n'
            for i in range(jobs)
        )
        config.write_text("jobs:\n" + entries)
        return spawn(
            [str(self.root / "venv" / "bin" / "yacron"), "-c", str(config)],
            dict(os.environ),
            self.root / "log",
        )


class Cronflow(Peer):
    name = "cronflow"

    def start(self, command: str, schedule: str, jobs: int) -> subprocess.Popen[bytes]:
        config = self.root / f"jobs-{jobs}.toml"
        body = "".join(
            f'[jobs.j{i}]\nschedule = "{schedule}"\ncommand = "{command}"\n' for i in range(jobs)
        )
        config.write_text(f"[daemon]\nmax_parallel = {jobs}\n{body}")
        env = {**os.environ, "CRONFLOW_STATE_DIR": str(self.root / f"state-{jobs}")}
        cronflow = Path(sys.executable).parent / "cronflow"
        return spawn([str(cronflow), "daemon", "-c", str(config)], env, self.root / "log")


PEERS = {"cron": Cron, "yacron": Yacron, "cronflow": Cronflow}


def run_peer(peer: Peer, args: argparse.Namespace) -> tuple[Lag, Idle] | str:
    why_not = peer.available()
    if why_not:
        return why_not
    stamps = peer.root / "stamps"
    command = f"date +%s.%N >> {stamps}"
    try:
        proc = peer.start(command, "* * * * *", args.jobs)
        lag = wait_for_minutes(stamps, args.minutes, args.jobs)
        stop(proc)
        peer.cleanup()
        proc = peer.start(command, "0 3 1 1 *", args.idle_jobs)
        idle = measure_idle(proc, args.idle_seconds)
        stop(proc)
    finally:
        peer.cleanup()
    return lag, idle


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.0f}–{max(values):.0f}" if len(values) > 1 else f"{values[0]:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--idle-jobs", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--peers", default="cron,yacron,cronflow")
    args = parser.parse_args()
    results: dict[str, tuple[Lag, Idle] | str] = {}
    with tempfile.TemporaryDirectory(prefix="cronflow-bench-peers-") as tmp:
        try:
            for name in args.peers.split(","):
                print(f"running {name} ...", flush=True)
                results[name] = run_peer(PEERS[name](Path(tmp)), args)
        finally:
            for proc in _children:
                if proc.poll() is None:
                    stop(proc)
            CRON_FILE.unlink(missing_ok=True)
    ours = results.get("cronflow")
    print(f"\n{args.jobs} jobs due at one instant, {args.minutes} minute boundaries each;"
          f" idle: {args.idle_jobs} jobs not due, {args.idle_seconds:g} s")  # fmt: skip
    print(f"{'peer':10} {'first ms':>12} {'last ms (median)':>18} {'idle CPU s':>11} "
          f"{'CPU %':>7} {'RSS MB':>7} {'last vs cronflow':>17}")  # fmt: skip
    for name, result in results.items():
        if isinstance(result, str):
            print(f"{name:10} skipped: {result}")
            continue
        lag, idle = result
        median_last = statistics.median(lag.last) if lag.last else float("nan")
        ratio = ""
        if not isinstance(ours, str) and ours is not None and ours[0].last:
            ratio = f"{median_last / statistics.median(ours[0].last):.1f}x"
        share = 100 * idle.cpu / args.idle_seconds
        print(f"{name:10} {ms(lag.first):>12} {median_last:>18.0f} {idle.cpu:>11.3f} "
              f"{share:>6.3f}% {idle.rss_mb:>7.1f} {ratio:>17}")  # fmt: skip


if __name__ == "__main__":
    main()
