"""The job file: TOML text → frozen, validated objects, with every problem located by line."""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronflow import flows
from cronflow.errors import ConfigError, CronflowError, NoJobFile, Problem
from cronflow.schedule import Schedule, ScheduleError, parse_schedule
from cronflow.units import mask_url, parse_duration, parse_size, toml_text

RUN_IF = ("success", "failure", "always")
OVERLAP = ("skip", "queue", "allow")
CATCHUP = ("none", "latest", "all")
JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
NOT_IN_DEFAULTS = ("schedule", "after", "command", "description")
SECTIONS = ("defaults", "daemon", "executor", "jobs")
EXECUTOR_KINDS = ("local", "celery")
BROKER_SCHEMES = ("redis://", "rediss://", "unix://")
# Celery queue names become Redis keys and appear on worker command lines: keep them plain.
QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
LOCAL_QUEUE = "local"  # the queue name meaning "in the daemon's own process"
# Upper bounds: a larger value is a typo, or would make a retry loop never end, or hold
# unbounded output in memory (the log cap's tail is kept in memory until the attempt ends).
MAX_RETRIES = 1000
MAX_BACKOFF = 1000.0
MAX_PARALLEL = 10_000
MAX_LOG_BYTES = 1024**3
NO_ENV: MappingProxyType[str, str] = MappingProxyType({})  # shared by every job without `env`


@dataclass(frozen=True)
class Job:
    """One job, with `[defaults]` already merged in."""

    name: str
    command: str | tuple[str, ...]
    schedule: Schedule | None = None
    after: tuple[str, ...] = ()
    run_if: str = "success"
    description: str | None = None
    timezone: ZoneInfo = field(default_factory=lambda: local_zone())
    workdir: str = "."
    env: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))
    shell: str = "/bin/sh"
    retries: int = 0
    retry_delay: float = 30.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 3600.0
    timeout: float | None = None
    kill_grace: float = 10.0
    overlap: str = "skip"
    catchup: str = "none"
    jitter: float = 0.0
    max_log_bytes: int = 1024 * 1024
    on_failure: str | None = None
    on_retry: str | None = None
    on_success: str | None = None
    enabled: bool = True
    queue: str | None = None  # None: the [executor] default_queue
    queue_timeout: float = 600.0
    on_missed: str | None = None  # hook: the daemon recorded fires of this job as missed
    depends_on_past: bool = False  # run only if the run for the previous fire succeeded
    grace: float | None = None  # `cronflow check`: None means one period, at least 5m
    # Absolute paths of dotenv files, read at each attempt; their values are masked (envfile).
    env_file: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        """The argv that runs this job: `shell -c STRING`, or the list as given."""
        if isinstance(self.command, str):
            return [self.shell, "-c", self.command]
        return list(self.command)

    def retry_wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        if self.retry_delay == 0:
            return 0.0
        try:
            wait = self.retry_delay * self.retry_backoff ** (attempt - 1)
        except OverflowError:  # 1000 ** 999 is no float: far beyond any cap
            return self.retry_max_delay
        return min(wait, self.retry_max_delay)


def _new_job(values: dict[str, Any]) -> Job:
    """A Job from checked values, as `Job(**values)` builds it but about 10x faster.

    The generated __init__ of a frozen dataclass sets its 31 fields one `object.__setattr__`
    at a time, which was the largest part of loading a file of 1,000 jobs. The checker has
    already converted every value, and always sets `workdir` and `env`; the two other
    default factories are filled here as __init__ would fill them. A field left at its plain
    default is not stored in the instance: reading it finds the class attribute the dataclass
    keeps, so a typical job's dict holds 6-10 keys (272 bytes) rather than 31 (832 bytes), for
    as long as a daemon runs.
    """
    job = object.__new__(Job)
    attributes = job.__dict__
    if "timezone" not in values:
        attributes["timezone"] = local_zone()
    attributes.update(values)
    return job


@dataclass(frozen=True)
class DaemonSettings:
    max_parallel: int = 32
    stop_timeout: float = 60.0
    keep_history: float | None = 90 * 86400.0


@dataclass(frozen=True)
class ExecutorSettings:
    """Where attempts run (SPEC §8). `broker` as written: $CRONFLOW_BROKER_URL is read at use."""

    kind: str = "local"
    broker: str | None = None
    default_queue: str = LOCAL_QUEUE
    secret_file: str | None = None  # absolute

    def broker_url(self, environ: Mapping[str, str]) -> str | None:
        """The broker to use: $CRONFLOW_BROKER_URL overrides `broker` (SPEC §8). Unmasked."""
        return environ.get("CRONFLOW_BROKER_URL") or self.broker


@dataclass(frozen=True)
class Flow:
    """Jobs joined by `after`; named after its first root in alphabetical order."""

    name: str
    jobs: tuple[str, ...]  # in dependency order
    roots: tuple[str, ...]
    schedule: Schedule | None
    timezone: ZoneInfo

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire strictly after `after`, in the flow's zone; None if none is left."""
        return self.schedule.next_fire(after, self.timezone) if self.schedule else None

    def previous_fire(self, before: datetime) -> datetime | None:
        """The last fire strictly before `before`, in the flow's zone; None without one."""
        return self.schedule.previous_fire(before, self.timezone) if self.schedule else None

    def next_fires(self, after: datetime, count: int) -> list[datetime]:
        fires: list[datetime] = []
        try:
            while len(fires) < count and (fire := self.next_fire(after)) is not None:
                fires.append(fire)
                after = fire
        except (ValueError, OverflowError):  # past year 9999: no more fires to show
            pass
        return fires


@dataclass(frozen=True)
class Config:
    path: str
    jobs: MappingProxyType[str, Job]
    daemon: DaemonSettings
    flows: tuple[Flow, ...]
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)

    def job(self, name: str) -> Job:
        """The job called `name`, or a CronflowError (exit 1) with a did-you-mean."""
        if name in self.jobs:
            return self.jobs[name]
        raise CronflowError(f"no job named {name!r} in {self.path}{suggest(name, self.jobs)}")

    def flow_of(self, job: str) -> Flow:
        return next(f for f in self.flows if job in f.jobs)

    def queue_of(self, job: str) -> str:
        """The queue whose workers run `job`'s attempts; "local" is the daemon's own process."""
        return self.job(job).queue or self.executor.default_queue

    def downstream(self, job: str) -> tuple[str, ...]:
        """`job` and every job after it, in dependency order."""
        return flows.downstream({n: j.after for n, j in self.jobs.items()}, job)

    def size(self) -> str:
        """Says "3 jobs in 2 flows" or "1 job in 1 flow"."""
        jobs, count = len(self.jobs), len(self.flows)
        return f"{jobs} job{'' if jobs == 1 else 's'} in {count} flow{'' if count == 1 else 's'}"


@functools.cache
def local_zone() -> ZoneInfo:
    """The system's zone: $TZ, else the /etc/localtime link, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            link = os.readlink("/etc/localtime")
            name = link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else ""
        except OSError:
            name = ""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo("UTC")


def load_config(path: Path) -> Config:
    """Read and validate the job file at `path` (exit 1 if missing, 2 if invalid)."""
    text = read_job_file(path)
    return parse_config(text, str(path))


def read_job_file(path: Path) -> str:
    """The job file's text, or a one-line CronflowError saying why it cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NoJobFile(str(path)) from None
    except IsADirectoryError:
        raise CronflowError(f"{path}: is a directory, not a job file", 2) from None
    except OSError as exc:
        raise CronflowError(f"{path}: cannot read: {exc.strerror}", 2) from None
    check_owned_safely(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CronflowError(f"{path}:{line}: not a TOML text file (invalid UTF-8)", 2) from None


def check_owned_safely(path: Path) -> None:
    """Refuse a job file that another user could change: whoever writes it runs commands as you.

    As sshd's StrictModes: the file and every folder above it (above the path as given, and
    above a symlink's target) must be owned by you or root and not writable by group or
    others. A sticky folder (like /tmp) may be writable: others cannot replace what they do
    not own in it, and the next folder down must be ours or root's anyway.
    """
    given = path.absolute()
    real = Path(os.path.realpath(given))
    for place in dict.fromkeys([real, *real.parents, *given.parents]):
        try:
            st = os.stat(place)
        except OSError:
            continue  # vanished meanwhile: the read already succeeded or failed on its own
        if st.st_uid not in (os.geteuid(), 0):
            raise CronflowError(
                f"{place} is owned by another user (uid {st.st_uid}); cronflow runs only a job "
                "file that you or root control",
                2,
            )
        sticky_folder = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_mode & 0o022 and not sticky_folder:
            mode = stat.S_IMODE(st.st_mode)
            raise CronflowError(
                f"{place} is writable by others (mode {mode:04o}); run chmod go-w {place}", 2
            )


BOM = "\ufeff"


def parse_config(text: str, path: str = "<job file>") -> Config:
    """Validate job-file text; raise ConfigError listing every problem with its line."""
    import tomli

    if text.startswith(BOM):
        # Refused rather than skipped: add, remove and edit rewrite the file and check that
        # its bytes did not change meanwhile, and most editors can save without the mark.
        raise ConfigError(
            [Problem(path, 1, None, "starts with a byte-order mark (BOM); save it as UTF-8 "
                     "without a BOM (`sed -i '1s/^\\xEF\\xBB\\xBF//' FILE` removes it)")]
        )  # fmt: skip
    try:
        raw = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(
            [Problem(path, exc.lineno, None, f"TOML syntax: {exc.msg} (column {exc.colno})")]
        ) from None
    checker = _Checker(path, text, Path(path).parent)
    return checker.config(raw)


class _Checker:
    """Collects problems while turning raw TOML into a Config."""

    def __init__(self, path: str, text: str, folder: Path) -> None:
        self.path = path
        self.text = text
        self.folder = folder
        self.workdir = str(folder)  # the default workdir of every job
        self.problems: list[Problem] = []
        # Each job's upstreams as soon as its `after` parsed, and the jobs that set a schedule,
        # even when another key of the job is wrong: the graph is checked with the keys.
        self.afters: dict[str, tuple[str, ...]] = {}
        self.scheduled: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.path, self._line(key), key, message))

    @functools.cached_property
    def lines(self) -> dict[str, int]:
        """Scanned only when a problem needs a line: valid files skip the work."""
        return _key_lines(self.text)

    def _line(self, key: str) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            inner = [n for k, n in self.lines.items() if k.startswith(key + ".")]
            if inner:
                return min(inner)
            key = key.rpartition(".")[0]
        return None

    def config(self, raw: dict[str, Any]) -> Config:
        for section in raw:
            if section not in SECTIONS:
                self.problem(
                    section,
                    f"unknown section{suggest(section, SECTIONS)}; allowed: {', '.join(SECTIONS)}",
                )
        defaults = self._table(raw, "defaults")
        for key in NOT_IN_DEFAULTS:
            if key in defaults:
                self.problem(f"defaults.{key}", f"{key!r} cannot be set in [defaults]")
        defaults = self._values(
            "defaults", {k: v for k, v in defaults.items() if k not in NOT_IN_DEFAULTS}
        )
        daemon = self._daemon(self._table(raw, "daemon"))
        executor_raw = self._table(raw, "executor")
        executor = self._executor(executor_raw)
        jobs_raw = self._table(raw, "jobs")
        jobs = {}
        for name, body in jobs_raw.items():
            job = self._job(name, body, defaults)
            if job is not None:
                jobs[name] = job
        if executor_raw.get("kind", "local") == "local":  # not when `kind` is a typo
            self._queues_need_celery(executor, defaults, jobs_raw)
        flow_list = self._flows(jobs, set(jobs_raw))
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda p: p.line or 0))
        return Config(self.path, MappingProxyType(jobs), daemon, flow_list, executor)

    def _table(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if isinstance(value, dict):
            return value
        self.problem(key, f"must be a table ([{key}])")
        return {}

    def _daemon(self, raw: dict[str, Any]) -> DaemonSettings:
        allowed = ("max_parallel", "stop_timeout", "keep_history")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            where = f"daemon.{key}"
            if key not in allowed:
                self.problem(
                    where, f"unknown key{suggest(key, allowed)}; allowed: {', '.join(allowed)}"
                )
            elif key == "max_parallel" and not (_is_int(value) and 1 <= value <= MAX_PARALLEL):
                self.problem(
                    where,
                    f"must be a whole number from 1 to {MAX_PARALLEL}, got {toml_text(value)}",
                )
            elif key == "max_parallel":
                values[key] = value
            elif (seconds := self._convert(where, parse_duration, value)) is not None:
                values[key] = seconds
        if values.get("keep_history") == 0:
            values["keep_history"] = None  # 0 means keep everything
        return DaemonSettings(**values)

    def _executor(self, raw: dict[str, Any]) -> ExecutorSettings:
        return ExecutorSettings(**self._values("executor", raw, _EXECUTOR_KEYS))

    def _queues_need_celery(
        self, executor: ExecutorSettings, defaults: dict[str, Any], jobs_raw: dict[str, Any]
    ) -> None:
        """A queue other than "local" means a worker elsewhere: only the celery kind has them.

        Each problem is reported where the queue is written, once: a queue set in [defaults]
        is not repeated for every job that inherits it.
        """
        places = {"executor.default_queue": executor.default_queue}
        places["defaults.queue"] = defaults.get("queue")
        for name, body in jobs_raw.items():
            queue = body.get("queue") if isinstance(body, dict) else None
            if isinstance(queue, str) and QUEUE_RE.fullmatch(queue):  # else reported already
                places[f"jobs.{name}.queue"] = queue
        for where, queue in places.items():
            if queue is not None and queue != LOCAL_QUEUE:
                self.problem(where, f'queue "{queue}" needs [executor] kind = "celery"')

    def _convert(self, where: str, parse: Any, value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            self.problem(where, str(exc))
            return None

    def _values(
        self,
        where: str,
        raw: dict[str, Any],
        keys: dict[str, Any] | None = None,
        into: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Each key of a job, [defaults] or `keys`' table checked and converted (over `into`,
        when given); problems recorded.

        A small table lists its allowed keys in the problem; the job keys are too many for that.
        """
        keys = _KEYS if keys is None else keys
        values: dict[str, Any] = {} if into is None else into
        for key, value in raw.items():
            check = keys.get(key)
            if check is None:
                allowed = "" if keys is _KEYS else f"; allowed: {', '.join(keys)}"
                self.problem(f"{where}.{key}", f"unknown key{suggest(key, keys)}{allowed}")
                continue
            try:
                values[key] = check(self, value)
            except ValueError as exc:
                self.problem(f"{where}.{key}", str(exc))
        return values

    def _job(self, name: str, body: Any, defaults: dict[str, Any]) -> Job | None:
        where = f"jobs.{name}"
        before = len(self.problems)
        if not JOB_NAME_RE.fullmatch(name):
            self.problem(
                where,
                "job names use letters, digits, '-' and '_', and start with a letter or digit",
            )
        if not isinstance(body, dict):
            self.problem(where, f"must be a table ([jobs.{name}])")
            return None
        if "command" not in body:
            self.problem(where, "missing required key 'command'")
        values = self._values(where, body, into=defaults.copy())
        if "after" in values or "after" not in body:
            self.afters[name] = values.get("after", ())
        if "schedule" in body:
            self.scheduled.add(name)
        if "env" in defaults and "env" in body and isinstance(body["env"], dict):
            values["env"] = {**defaults["env"], **values.get("env", {})}
        if len(self.problems) > before:
            return None
        if "workdir" in values:
            values["workdir"] = str(self.folder / os.path.expanduser(values["workdir"]))
        else:
            values["workdir"] = self.workdir
        env = values.get("env")
        values["env"] = MappingProxyType(env) if env else NO_ENV
        values["name"] = name
        return _new_job(values)

    def _flows(self, jobs: dict[str, Job], names: set[str]) -> tuple[Flow, ...]:
        """Check the graph alongside the keys, so that every problem shows at once: the
        upstreams of every job whose `after` parsed (other keys of it wrong or not); the
        checks that need a flow's schedules only on flows whose every job parsed."""
        afters = self.afters
        whole = len(jobs) == len(names)  # every job parsed, and (below) every upstream exists
        for name, after in afters.items():
            for target in after:
                if target not in names:
                    whole = False
                    self.problem(
                        f"jobs.{name}.after",
                        f"unknown job {target!r}{suggest(target, names - {name})}",
                    )
            if after and name in self.scheduled:
                self.problem(
                    f"jobs.{name}.schedule",
                    "only jobs without 'after' may have a "
                    f"schedule; {name} runs after {', '.join(after)}",
                )
        graph = (
            afters if whole else {n: tuple(t for t in a if t in afters) for n, a in afters.items()}
        )
        cycle = flows.find_cycle(graph)
        if cycle:
            self.problem(f"jobs.{cycle[0]}.after", "cycle: " + " -> ".join(cycle))
            return ()
        result = []
        for members in flows.components(graph):
            # A job that did not parse, or an upstream that is missing or did not parse,
            # leaves the flow's shape unknown: its roots are not checked against each other.
            if whole or all(m in jobs and all(t in jobs for t in afters[m]) for m in members):
                result.append(self._flow(members, jobs))
        return tuple(result)

    def _flow(self, members: tuple[str, ...], jobs: dict[str, Job]) -> Flow:
        if len(members) == 1 and not (job := jobs[members[0]]).after:  # most flows: one job
            return Flow(job.name, members, members, job.schedule, job.timezone)
        roots = tuple(n for n in members if not jobs[n].after)  # some: the graph has no cycle
        scheduled = [jobs[n] for n in roots if jobs[n].schedule]
        first = scheduled[0] if scheduled else jobs[sorted(roots)[0]]
        for other in scheduled[1:]:
            if other.schedule.text != first.schedule.text or other.timezone != first.timezone:
                self.problem(
                    f"jobs.{other.name}.schedule",
                    f"all scheduled roots of a flow share one schedule and timezone; "
                    f"{other.name} differs from {first.name} "
                    f"({first.schedule.text!r} in {first.timezone.key})",
                )
        return Flow(sorted(roots)[0], members, roots, first.schedule, first.timezone)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def suggest(word: str, choices: Any) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices`, or "" when none is close."""
    import difflib  # only when a problem is reported: not held by a daemon

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _string(_: _Checker, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {toml_text(value)}")
    return value


def _nonempty(c: _Checker, value: Any) -> str:
    if not _string(c, value).strip():
        raise ValueError("must not be empty")
    return value


def _command(_: _Checker, value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        "must be a non-empty string (run by the shell) or a non-empty list of "
        "strings (run directly)"
    )


def _choice(*allowed: str) -> Any:
    def check(_: _Checker, value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {toml_text(value)}")
        return value

    return check


def _schedule(_: _Checker, value: Any) -> Schedule:
    if not isinstance(value, str):
        raise ValueError(f'must be a string like "0 3 * * *" or "@daily", got {toml_text(value)}')
    try:
        return parse_schedule(value)
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None


def _timezone(_: _Checker, value: Any) -> ZoneInfo:
    if isinstance(value, str) and value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder
            pass
    raise ValueError(f'unknown timezone {toml_text(value)}; use an IANA name like "Europe/Berlin"')


def _after(_: _Checker, value: Any) -> tuple[str, ...]:
    # One upstream may be written as a string (`after = "up"`), as `command` takes a string
    # or a list: a deliberate convenience (README), not an accident of the checker.
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f'must be a job name or a list of job names (after = ["up"]), got {toml_text(value)}'
    )


def _env(_: _Checker, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError('must be a table of strings, like env = { PATH = "/usr/bin" }')
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    if bad:
        raise ValueError(f"values must be strings; {bad[0]} is {toml_text(value[bad[0]])}")
    return dict(value)


def _retries(_: _Checker, value: Any) -> int:
    if _is_int(value) and 0 <= value <= MAX_RETRIES:
        return value
    raise ValueError(f"must be a whole number from 0 to {MAX_RETRIES}, got {toml_text(value)}")


def _backoff(_: _Checker, value: Any) -> float:
    # The comparison also refuses nan; inf is refused by the upper bound.
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= MAX_BACKOFF:
        return float(value)
    raise ValueError(f"must be a number from 1 to {MAX_BACKOFF:g}, got {toml_text(value)}")


def _bool(_: _Checker, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"must be true or false, got {toml_text(value)}")


def _duration(_: _Checker, value: Any) -> float:
    return parse_duration(value)


def _queue(_: _Checker, value: Any) -> str:
    if isinstance(value, str) and QUEUE_RE.fullmatch(value):
        return value
    raise ValueError(
        "must be a queue name of letters, digits, '_', '.' and '-', starting with a letter "
        f"or digit, got {toml_text(value)}"
    )


def _broker(_: _Checker, value: Any) -> str:
    if isinstance(value, str) and value.startswith(BROKER_SCHEMES):
        return value
    shown = mask_url(value) if isinstance(value, str) else value
    raise ValueError(
        f"must be a Redis URL starting with {', '.join(BROKER_SCHEMES)}, got {shown!r}"
    )


def _secret_file(c: _Checker, value: Any) -> str:
    path = c.folder / os.path.expanduser(_nonempty(c, value))
    return os.path.abspath(path)


def _env_file(c: _Checker, value: Any) -> tuple[str, ...]:
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
        raise ValueError(
            'must be a path or a list of paths, like env_file = "~/.config/app.env", '
            f"got {toml_text(value)}"
        )
    return tuple(os.path.abspath(c.folder / os.path.expanduser(p)) for p in paths)


def env_file_problems(config: Config, text: str) -> list[Problem]:
    """The env files of `config` that are missing or unsafe, each once, located at the
    `env_file` key that names it (the job's, else [defaults]'). For `validate`: loading a
    job file reads no env file, the attempts do, at each run."""
    if not any(job.env_file for job in config.jobs.values()):
        return []  # most files: no line scan of 1,000 jobs for nothing
    from cronflow import envfile

    lines = _key_lines(text)
    found: dict[tuple[str, str], Problem] = {}
    for name, job in config.jobs.items():
        key = f"jobs.{name}.env_file"
        if key not in lines and "defaults.env_file" in lines:
            key = "defaults.env_file"
        for path in job.env_file:
            if (path, key) not in found and (message := envfile.check(path)):
                found[(path, key)] = Problem(config.path, lines.get(key), key, message)
    return list(found.values())


def _size(_: _Checker, value: Any) -> int:
    size = parse_size(value)
    if size > MAX_LOG_BYTES:
        raise ValueError(f"must be at most 1GiB, got {toml_text(value)}")
    return size


_KEYS: dict[str, Any] = {
    "command": _command,
    "schedule": _schedule,
    "after": _after,
    "run_if": _choice(*RUN_IF),
    "description": _string,
    "timezone": _timezone,
    "workdir": _nonempty,
    "env": _env,
    "shell": _nonempty,
    "retries": _retries,
    "retry_delay": _duration,
    "retry_backoff": _backoff,
    "retry_max_delay": _duration,
    "timeout": _duration,
    "kill_grace": _duration,
    "overlap": _choice(*OVERLAP),
    "catchup": _choice(*CATCHUP),
    "jitter": _duration,
    "max_log_bytes": _size,
    "on_failure": _nonempty,
    "on_retry": _nonempty,
    "on_success": _nonempty,
    "enabled": _bool,
    "queue": _queue,
    "queue_timeout": _duration,
    "on_missed": _nonempty,
    "depends_on_past": _bool,
    "grace": _duration,
    "env_file": _env_file,
}

_EXECUTOR_KEYS: dict[str, Any] = {
    "kind": _choice(*EXECUTOR_KINDS),
    "broker": _broker,
    "default_queue": _queue,
    "secret_file": _secret_file,
}

# Only a file with a problem (or an env_file) needs line numbers: these are compiled then.
_HEADER = r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$"
_PART = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_BARE = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_KEY = rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*="


def _dotted(text: str) -> str:
    """`jobs."my job" . env` → `jobs.my job.env`."""
    if re.fullmatch(_BARE, text):
        return text
    parts = re.findall(_PART, text)
    return ".".join(p.strip("\"'") for p in parts)


def _key_lines(text: str) -> dict[str, int]:
    """Line of each table and key ("jobs.backup.retries" → 12): tomli gives no positions."""
    header_re, key_re = re.compile(_HEADER), re.compile(_KEY)
    lines: dict[str, int] = {}
    table = ""
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline:
            in_multiline = line.count('"""') % 2 == 0 and line.count("'''") % 2 == 0
            continue
        if header := header_re.match(line):
            table = _dotted(header.group(1))
            lines.setdefault(table, number)
        elif key := key_re.match(line):
            full = f"{table}.{_dotted(key.group(1))}" if table else _dotted(key.group(1))
            lines.setdefault(full, number)
            rest = line[key.end() :]
            in_multiline = rest.count('"""') % 2 == 1 or rest.count("'''") % 2 == 1
    return lines
