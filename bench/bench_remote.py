"""Remote execution: backfill throughput through Celery workers, and fire -> start lag on one.

    .venv/bin/python bench/bench_remote.py [throughput] [lag]    (default: both)
        [--jobs 500] [--runs 3] [--parallel 8] [--workers 2] [--concurrency 4] [--run-timeout 120]
        [--lag-fires 60] [--lag-jobs 5] [--lag-concurrency 5]

Everything runs here, in a temp directory that XDG_CONFIG_HOME, XDG_STATE_HOME and
CRONFLOW_STATE_DIR point into: a `redis-server` on a Unix socket in it (persistence off; the
broker URL is `unix://PATH`), real `cronflow worker` processes, and real `cronflow run` /
`cronflow daemon` processes, all with $CRONFLOW_BROKER_URL and $CRONFLOW_WORKER_SECRET set. Each
is stopped by its pid (SIGTERM, then SIGKILL to its process group), also on an error or SIGTERM.

- throughput: a job file `[executor] kind = "celery"`, `[jobs.t] schedule = "@every 1m"`,
  `command = ["true"]`, `queue = "q"`, backfilled over --jobs fire times
  (`cronflow run t --from A --to B --parallel 8`) through --workers workers
  (`cronflow worker --queue q --concurrency 4` each), against the same backfill with `--local`
  (the local engine), each run on a fresh state directory, interleaved, medians of --runs.
  Wall time and jobs/s; CPU per job of the `cronflow run` process (user+sys incl. reaped
  children, from `os.wait4`), and separately of the workers (utime+stime+cutime+cstime of every
  process in each worker's tree, from /proc/PID/stat, before and after; a pool process reaps its
  jobs, so their CPU is in its cutime) and of redis-server. Every run is checked: --jobs
  successful backfill runs, and for remote runs how they were spread over the workers.
- lag: a real `cronflow daemon` with --lag-jobs flows `@every 1s` whose command is
  `date +%s.%N` (a string, run by /bin/sh on the worker), `queue = "q"`, on one worker
  (`--concurrency` --lag-concurrency, so the flows of one second do not queue behind each
  other), until --lag-fires scheduled runs have finished. Lag = the time the job printed (read
  from the state database, read-only: the `output` table, what `cronflow logs RUN_ID` shows)
  minus its logical time; p50/p99/max. Also shown: the daemon's `started_at` (the daemon's
  clock when it recorded the run started) - logical time. Target p99 < 50 ms.

Both parts print the load average and CPU pressure: this 2-core machine is shared with other
work, and wall-clock figures move with it while CPU-time figures move much less.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FIRST = datetime(2025, 1, 1, tzinfo=UTC)
SECRET = "bench-secret-0123456789abcdef"
QUEUE = "q"
PARTS = ("throughput", "lag")
FINISHED = {"success", "failed", "timeout", "canceled", "skipped", "upstream_failed", "lost"}
THROUGHPUT_FILE = (
    '[executor]\nkind = "celery"\n\n'
    f'[jobs.t]\nschedule = "@every 1m"\ncommand = ["true"]\nqueue = "{QUEUE}"\n'
)

_procs: list[subprocess.Popen[bytes]] = []  # everything started here, stopped by pid at the end


# --- helpers shared with bench_engine.py / bench_daemon.py (each bench is self-contained) ----


def isolated_pycache(env: dict[str, str], folder: Path) -> dict[str, str]:
    """Byte-code cached in the temp dir, as an installed cronflow has it, not compiled per start.

    The sandbox sets PYTHONDONTWRITEBYTECODE, and the tree is being edited meanwhile; a prefix
    in the temp dir keeps the checkout untouched. One import warms it before anything is timed.
    """
    env = {**env, "PYTHONPYCACHEPREFIX": str(folder / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    warm = (
        "import cronflow.cli, cronflow.daemon, cronflow.manual, cronflow.store, cronflow.render,"
        " cronflow.remote, cronflow.worker, celery.bin.worker, celery.worker.consumer,"
        " kombu.transport.redis"
    )
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


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def wait_for(check, timeout: float, what: str, log: Path | None = None) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = "\n" + tail_of(log) if log is not None else ""
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(0.02)


def tail_of(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return f"({path.name}: empty)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- processes, and their CPU from /proc -----------------------------------------------------


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group, so strays can be killed with it
        )
    _procs.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM to the pid, then SIGKILL to its process group if it is still there."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    if proc.poll() is None:
        print(
            f"pid {proc.pid} ({' '.join(map(str, proc.args[1:3]))}) did not stop"
            f" {timeout:g} s after SIGTERM: killing its group; its group then:",
            file=sys.stderr,
        )
        subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etime,args", "-g", str(proc.pid)])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group: pool processes and jobs, if any
    proc.wait()
    with contextlib.suppress(ValueError):
        _procs.remove(proc)


def stop_all() -> None:
    for proc in reversed(list(_procs)):
        stop(proc, timeout=10.0)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()  # fields from the 3rd (state) on


def tree_cpu(root: int) -> float:
    """CPU seconds of `root` and every live descendant, each with its reaped children.

    utime+stime+cutime+cstime of each: a pool process's cutime holds the jobs it reaped, and
    the root's holds any pool process that ended. Only processes still alive are summed, so the
    figure is exact as long as no pool process ends between two samples (none is recycled).
    """
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        fields = _stat_fields(pid)
        if fields is None:
            continue
        total += sum(int(f) for f in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
        todo.extend(parents.get(pid, []))
    return total


def own_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# --- the cluster: redis on a Unix socket, workers ---------------------------------------------


class Cluster:
    """A redis-server and `cronflow worker`s in `folder`, with the environment that finds them."""

    def __init__(self, folder: Path, base_env: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.socket = folder / "redis.sock"
        self.redis: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **base_env,
            "XDG_CONFIG_HOME": str(folder / "config"),
            "XDG_STATE_HOME": str(folder / "state-home"),
            "CRONFLOW_STATE_DIR": str(folder / "state"),
            "CRONFLOW_BROKER_URL": f"unix://{self.socket}",
            "CRONFLOW_WORKER_SECRET": SECRET,
            "NO_COLOR": "1",
        }
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            self.env.pop(key, None)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        for name, proc in self.workers.items():
            began = time.monotonic()
            stop(proc, timeout=20.0)
            took = time.monotonic() - began
            if took > 10.0:  # --stop-timeout is 5s and no attempt is running
                log = self.folder / f"worker-{name}.log"
                print(f"worker {name} took {took:.1f} s to stop; its log ends:\n{tail_of(log, 25)}")
        self.workers.clear()
        if self.redis is not None:
            stop(self.redis)
            self.redis = None

    def start_redis(self) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.redis = spawn(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--loglevel", "warning"],
            self.env, self.folder / "redis.log",
        )  # fmt: skip
        wait_for(self.ping, 15, "redis to answer", self.folder / "redis.log")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket)).ping())
        except (redis.RedisError, OSError):
            return False

    def start_worker(self, name: str, concurrency: int) -> None:
        log = self.folder / f"worker-{name}.log"
        self.workers[name] = proc = spawn(
            [*cronflow_command(), "worker", "--queue", QUEUE, "--hostname", name,
             "--concurrency", str(concurrency), "--stop-timeout", "5s"],
            self.env, log,
        )  # fmt: skip

        def ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"worker {name} exited {proc.returncode}:\n{tail_of(log)}")
            return log.exists() and "ready" in log.read_text(errors="replace")

        wait_for(ready, 60, f"worker {name} to be ready", log)

    def worker_cpu(self) -> float:
        return sum(tree_cpu(proc.pid) for proc in self.workers.values())

    def redis_cpu(self) -> float:
        return own_cpu(self.redis.pid) if self.redis is not None else 0.0

    def history(self, env: dict[str, str], limit: int) -> list[dict[str, object]]:
        out = subprocess.run(
            [*cronflow_command(), "history", "--json", "--limit", str(limit)],
            env=env,
            capture_output=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"cronflow history exited {out.returncode}: {out.stderr.decode()}")
        return json.loads(out.stdout)


# --- throughput ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    cpu: float  # user+sys of `cronflow run` and its reaped children (wait4)
    workers: float  # CPU of the worker trees over the run
    redis: float  # CPU of redis-server over the run


def run_backfill(
    cluster: Cluster, jobs_file: Path, state: Path, n: int, parallel: int, local: bool
) -> Sample:
    """One backfill on a fresh state directory; given up after --run-timeout seconds."""
    env = {**cluster.env, "CRONFLOW_STATE_DIR": str(state), "CRONFLOW_CONFIG": str(jobs_file)}
    last = FIRST + timedelta(minutes=n - 1)
    argv = [*cronflow_command(), "run", "t", "--from", iso(FIRST), "--to", iso(last)]
    argv += ["--parallel", str(parallel)] + (["--local"] if local else [])
    workers_before, redis_before = cluster.worker_cpu(), cluster.redis_cpu()
    state.mkdir(parents=True)
    errors = state.parent / f"{state.name}.stderr"
    started = time.perf_counter()
    with errors.open("wb") as err_file:  # a file, not a pipe: the wait below polls
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=err_file, start_new_session=True
        )
    _procs.append(proc)
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > run_timeout:
                done = [r for r in cluster.history(env, n + 10) if r["status"] in FINISHED]
                now_hosts = Counter(str(r.get("host")) for r in done)
                all_hosts.update(now_hosts)
                stuck = unreturned(cluster)
                raise SystemExit(
                    f"{' '.join(argv[1:])} still running after {run_timeout:g} s, {len(done)}"
                    f" of {n} runs finished ({dict(now_hosts)}); attempts whose pool process"
                    f" never returned, per worker: {stuck}; worker logs end:\n"
                    + "\n".join(tail_of(cluster.folder / f"worker-{w}.log", 3) for w in stuck)
                )
            time.sleep(0.005)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:
            stop(proc)
        with contextlib.suppress(ValueError):
            _procs.remove(proc)
    err = errors.read_bytes()
    sample = Sample(
        wall,
        usage.ru_utime + usage.ru_stime,
        cluster.worker_cpu() - workers_before,
        cluster.redis_cpu() - redis_before,
    )
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip().splitlines()[-3:] or ["no message"]
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n" + "\n".join(why))
    runs = cluster.history(env, n + 10)
    ok = [r for r in runs if r["status"] == "success" and r["trigger"] == "backfill"]
    if len(ok) != n:
        statuses = Counter(str(r["status"]) for r in runs)
        raise SystemExit(f"expected {n} successful backfill runs, found {len(ok)}: {statuses}")
    hosts = Counter(str(r.get("host")) for r in ok)
    if not local and set(hosts) - set(cluster.workers):
        raise SystemExit(f"remote runs on unexpected hosts: {dict(hosts)}")
    if not local:
        run_hosts.append(hosts)
        all_hosts.update(hosts)
    shutil.rmtree(state)
    return sample


run_timeout = 120.0  # --run-timeout
run_hosts: list[Counter[str]] = []  # per measured run
all_hosts: Counter[str] = Counter()  # every run, warm-up included


def unreturned(cluster: Cluster) -> dict[str, int]:
    """Per worker: attempts it ran (history's host) minus those it logged as ended.

    A worker logs "success ..." once `asyncio.run` of the attempt has returned in its pool
    process; an attempt the daemon saw finish but that never got that line left its pool
    process stuck (a concurrency slot lost until the worker is killed).
    """
    missing = {}
    for name in cluster.workers:
        log = (cluster.folder / f"worker-{name}.log").read_text(errors="replace")
        missing[name] = all_hosts[name] - log.count(" INFO success ")
    return missing


def bench_throughput(
    root: Path, base: dict[str, str], n: int, runs: int, parallel: int, workers: int, conc: int
) -> None:
    print(
        f"\n## throughput: {n} `true` fires, `cronflow run t --from --to --parallel {parallel}`,"
        f" {workers} workers x --concurrency {conc} vs --local; median of {runs}"
    )
    with Cluster(root / "throughput", base) as cluster:
        jobs_file = cluster.folder / "cronflow.toml"
        jobs_file.write_text(THROUGHPUT_FILE)
        cluster.start_redis()
        for i in range(workers):
            cluster.start_worker(f"w{i + 1}", conc)
        count = 0

        def once(local: bool, fires: int = n) -> Sample:
            nonlocal count
            count += 1
            state = cluster.folder / f"state-{count}"
            return run_backfill(cluster, jobs_file, state, fires, parallel, local)

        once(True, 2)  # warm-up: page cache, byte-code, the first database, the workers
        once(False, 2 * workers * conc)
        run_hosts.clear()
        time.sleep(1.0)
        idle_before, idle_at = cluster.worker_cpu(), time.monotonic()
        time.sleep(2.0)
        idle = (cluster.worker_cpu() - idle_before) / (time.monotonic() - idle_at)
        results: dict[str, list[Sample]] = {"local": [], "remote": []}
        for round_ in range(runs):  # interleaved, so drift hits both cases alike
            results["remote"].append(once(False))
            results["local"].append(once(True))
            print(f"  round {round_ + 1}/{runs} done ({machine_load()})", file=sys.stderr)
        spread = [dict(h) for h in run_hosts]
        time.sleep(1.0)
        stuck = unreturned(cluster)

    print(
        f"\n{'case':34} {'wall ms':>9} {'jobs/s':>8} {'run CPU':>9} {'workers':>9}"
        f" {'redis':>7} {'total':>9}"
    )
    print(f"{'':34} {'':>9} {'':>8} {'ms/job':>9} {'ms/job':>9} {'ms/job':>7} {'ms/job':>9}")
    for name, label in (("local", "--local (local engine)"), ("remote", f"{workers} workers")):
        samples = results[name]
        wall = statistics.median(s.wall for s in samples)
        cpu = statistics.median(s.cpu for s in samples) / n * 1000
        work = statistics.median(s.workers for s in samples) / n * 1000
        red = statistics.median(s.redis for s in samples) / n * 1000
        print(
            f"{label:34} {wall * 1000:9.0f} {n / wall:8.0f} {cpu:9.2f} {work:9.2f} {red:7.2f}"
            f" {cpu + work + red:9.2f}"
        )
    print(
        "(run CPU: `cronflow run` incl. its reaped children, wait4; workers: the worker trees"
        " incl. jobs, /proc; redis: redis-server, /proc)"
    )
    print(f"runs per worker, remote runs: {spread}")
    print(
        f"attempts whose pool process never returned (slot lost), per worker: {stuck}"
        f" of {dict(all_hosts)} run"
    )
    print(f"idle workers between runs: {idle * 1000:.1f} ms CPU/s (in the workers column too)")
    print(f"machine: {machine_load()}")


# --- lag -------------------------------------------------------------------------------------


def bench_lag(
    root: Path, base: dict[str, str], jobs: int, fires: int, conc: int, timeout: float
) -> None:
    print(
        f"\n## fire -> start lag: daemon, {jobs} flows @every 1s `date +%s.%N` on queue {QUEUE},"
        f" one worker --concurrency {conc}, {fires} fires"
    )
    with Cluster(root / "lag", base) as cluster:
        jobs_file = cluster.folder / "cronflow.toml"
        lines = ['[executor]\nkind = "celery"\n']
        for i in range(jobs):
            lines.append(
                f'[jobs.tick-{i}]\nschedule = "@every 1s"\ncommand = {toml_string("date +%s.%N")}'
                f'\nqueue = "{QUEUE}"\n'
            )
        jobs_file.write_text("\n".join(lines))
        env = {**cluster.env, "CRONFLOW_CONFIG": str(jobs_file)}
        cluster.start_redis()
        cluster.start_worker("w1", conc)
        log = cluster.folder / "daemon.log"
        daemon = spawn([*cronflow_command(), "daemon"], env, log)
        wait_for(
            lambda: "loaded " in log.read_text(errors="replace") or daemon.poll() is not None,
            60,
            "the daemon to load its job file",
            log,
        )
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited {daemon.returncode}:\n{tail_of(log)}")
        db = cluster.folder / "state" / "cronflow.db"
        wait_for(db.exists, 30, "the state database", log)
        started = time.monotonic()
        cpu_before = (own_cpu(daemon.pid), cluster.worker_cpu(), cluster.redis_cpu())
        deadline = started + fires / jobs + timeout
        rows: list[tuple] = []
        while True:
            rows = read_lag_rows(db)
            if sum(1 for r in rows if r[2] in FINISHED) >= fires:
                break
            if daemon.poll() is not None:
                raise SystemExit(f"the daemon exited {daemon.returncode}:\n{tail_of(log)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(rows)} runs by the deadline:\n{tail_of(log)}")
            time.sleep(0.5)
        wall = time.monotonic() - started
        cpu_after = (own_cpu(daemon.pid), cluster.worker_cpu(), cluster.redis_cpu())
        stop(daemon)
        rows = read_lag_rows(db)
        runs_after_stop = len(rows)

    done = [r for r in rows if r[2] in FINISHED]
    done.sort(key=lambda r: r[0])
    done = done[:fires]
    failed = Counter(str(r[2]) for r in done if r[2] != "success")
    first_second = min(r[1] for r in done)

    def job_lag(r: tuple) -> float:
        return float(r[5].split()[0]) - r[1] / 1e6

    printed = [r for r in done if r[5] and r[5].strip()]
    in_job = [job_lag(r) for r in printed]
    later = [job_lag(r) for r in printed if r[1] != first_second]
    recorded = [(r[3] - r[1]) / 1e6 for r in done if r[3] is not None]
    attempt = [(r[4] - r[1]) / 1e6 for r in done if r[4] is not None]
    header = f"{'':52} {'count':>6} {'min ms':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(header)
    for label, values in (
        ("job's own clock (`date` on the worker) - logical", in_job),
        ("  same, the first second's fires left out", later),
        ("runs.started_at - logical (daemon's record)", recorded),
        ("attempts.started_at - logical (daemon got 'started')", attempt),
    ):
        if not values:
            print(f"{label:52} {'no runs':>6}")
            continue
        print(
            f"{label:52} {len(values):6d} {ms(min(values))} {ms(statistics.median(values))}"
            f" {ms(percentile(values, 99))} {ms(max(values))}"
        )
    by_job: dict[str, list[float]] = {}
    for r in printed:
        by_job.setdefault(str(r[6]), []).append(job_lag(r))
    print(
        "job's own clock p50 per flow (ms): "
        + ", ".join(f"{job} {statistics.median(v) * 1000:.0f}" for job, v in sorted(by_job.items()))
    )
    cpu = [after - before for before, after in zip(cpu_before, cpu_after, strict=True)]
    per_fire = max(runs_after_stop, 1)
    print(
        f"runs not 'success': {dict(failed) or 0}; over {wall:.0f} s ({runs_after_stop} runs):"
        f" daemon own CPU {cpu[0] / per_fire * 1000:.2f} ms/fire,"
        f" worker tree {cpu[1] / per_fire * 1000:.2f} ms/fire,"
        f" redis {cpu[2] / per_fire * 1000:.2f} ms/fire"
    )
    print(f"machine: {machine_load()}")
    if in_job:
        p99 = percentile(in_job, 99)
        print(f"target p99 < 50 ms: {'met' if p99 < 0.050 else 'NOT met'} ({p99 * 1000:.1f} ms)")


def read_lag_rows(db: Path) -> list[tuple]:
    """(run id, logical us, status, runs.started_at us, attempts.started_at us, first output,
    job).

    Read-only (`mode=ro`), while the daemon writes: WAL lets a reader in without blocking it.
    """
    query = """
        SELECT r.id, r.logical_time, r.status, r.started_at, a.started_at,
               (SELECT CAST(o.data AS TEXT) FROM output o
                 WHERE o.run_id = r.id AND o.attempt = 1 AND o.stream = 'out'
                 ORDER BY o.id LIMIT 1), r.job
          FROM runs r LEFT JOIN attempts a ON a.run_id = r.id AND a.number = 1
         WHERE r.trigger = 'schedule'
         ORDER BY r.id
    """
    for attempt in range(20):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                conn.execute("PRAGMA busy_timeout = 2000")
                return conn.execute(query).fetchall()
        except sqlite3.OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.1)
    return []


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", metavar="{throughput,lag}", help="default: both")
    parser.add_argument("--jobs", type=int, default=500, help="fires in the backfill")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; medians reported")
    parser.add_argument("--parallel", type=int, default=8, help="backfill --parallel")
    parser.add_argument("--workers", type=int, default=2, help="workers for the backfill")
    parser.add_argument("--concurrency", type=int, default=4, help="--concurrency of each")
    parser.add_argument(
        "--run-timeout", type=float, default=120.0, help="give a backfill up after this long"
    )
    parser.add_argument("--lag-fires", type=int, default=60, help="scheduled fires to measure")
    parser.add_argument("--lag-jobs", type=int, default=5, help="flows @every 1s")
    parser.add_argument("--lag-concurrency", type=int, default=5, help="the lag worker's")
    parser.add_argument("--lag-timeout", type=float, default=60.0, help="extra seconds allowed")
    options = parser.parse_args()
    parts = options.parts or list(PARTS)
    if unknown := set(parts) - set(PARTS):
        parser.error(
            f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}"
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `with` unwinds
    global run_timeout
    run_timeout = options.run_timeout

    now = datetime.now().astimezone()
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {now:%Y-%m-%d %H:%M %Z}")
    print(f"at start: {machine_load()}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="cronflow-bench-remote-") as tmp:
        root = Path(tmp)
        try:
            base = isolated_pycache(dict(os.environ), root)
            if "throughput" in parts:
                failed += part_failed(
                    bench_throughput,
                    root,
                    base,
                    options.jobs,
                    options.runs,
                    options.parallel,
                    options.workers,
                    options.concurrency,
                )
            if "lag" in parts:
                failed += part_failed(
                    bench_lag,
                    root,
                    base,
                    options.lag_jobs,
                    options.lag_fires,
                    options.lag_concurrency,
                    options.lag_timeout,
                )
        finally:
            stop_all()
    print(f"\nat end: {machine_load()}")
    if failed:
        sys.exit(1)


def part_failed(part, *args: object) -> int:  # noqa: ANN001
    """Run one part; if it fails, say why and go on with the next (1 if it failed)."""
    try:
        part(*args)
    except SystemExit as exc:
        if exc.code == 143 or isinstance(exc.code, int):
            raise  # SIGTERM, or a plain exit
        print(f"\nFAILED: {exc.code}")
        return 1
    return 0


if __name__ == "__main__":
    main()
