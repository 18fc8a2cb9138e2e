"""`cronflow check`: a monitor's view of the daemon and the jobs, as problems and an exit code.

0 all well; 1 a job overdue (a fire older than its `grace` has no successful run) or failing
(its latest run failed); 2 the daemon not running or the job file broken.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronflow.errors import ConfigError, CronflowError
from cronflow.units import format_duration

if TYPE_CHECKING:
    from cronflow.config import Config, Flow, Job
    from cronflow.records import DaemonEvent
    from cronflow.store import Store

MIN_GRACE = 300.0  # a default grace is one period of the schedule, at least this
FAILING = ("failed", "timeout", "canceled", "upstream_failed", "lost")
SEEN = "seen:"  # the daemon's record of when it first saw a job (cronflow.daemon.STATE_SEEN)


@dataclass(frozen=True)
class Problem:
    kind: str  # daemon | config | overdue | failing
    message: str
    job: str | None = None
    since: datetime | None = None  # overdue: the fire not done; daemon: when it stopped

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "message": self.message,
            "since": self.since.isoformat() if self.since else None,
        }


@dataclass(frozen=True)
class Health:
    problems: list[Problem] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(p.kind in ("daemon", "config") for p in self.problems):
            return 2
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "exit_code": self.exit_code,
            "problems": [p.to_json() for p in self.problems],
        }


def load(path: Path) -> tuple[Config | None, str | None]:
    """The job file, or why it cannot be used."""
    from cronflow.config import load_config

    try:
        return load_config(path), None
    except ConfigError as exc:
        return None, "; ".join(str(p) for p in exc.problems)
    except CronflowError as exc:
        return None, exc.message


def check(
    config: Config | None,
    config_error: str | None,
    daemon_running: bool,
    store: Store | None,
    now: datetime,
    zone: tzinfo,
    environ: Mapping[str, str] = os.environ,
) -> Health:
    """Every problem, daemon and job file first."""
    problems: list[Problem] = []
    if not daemon_running:
        problems.append(daemon_down(store.daemon_log() if store else [], zone))
    if config_error is not None:
        problems.append(Problem("config", f"job file invalid: {config_error}"))
    if config is not None:
        problems += executor_problems(config, environ)
        problems += job_problems(config, store, now, zone)
    return Health(problems)


def executor_problems(config: Config, environ: Mapping[str, str]) -> list[Problem]:
    """What keeps `kind = "celery"` from sending an attempt: no broker, or no Celery extra.
    `validate` cannot tell (the broker may come from the environment the daemon gets)."""
    if config.executor.kind != "celery":
        return []
    found = []
    if not config.executor.broker_url(environ):
        found.append('needs a broker: [executor] broker = "redis://...", or $CRONFLOW_BROKER_URL')
    if missing := [m for m in ("celery", "redis") if importlib.util.find_spec(m) is None]:
        extra = "pip install 'cronflow[celery]'"
        found.append(f"needs the Celery extra ({', '.join(missing)} missing): {extra}")
    return [Problem("config", f'executor kind = "celery" {why}') for why in found]


def daemon_down(events: list[DaemonEvent], zone: tzinfo) -> Problem:
    """"daemon not running since …", from its recorded starts and stops."""
    ends = [e for e in events if e.event in ("start", "stop")]
    if not ends:
        return Problem("daemon", "daemon not running (no start recorded)")
    last = ends[-1]
    if last.event == "stop":
        return Problem("daemon", f"daemon not running since {_when(last.at, zone)}", since=last.at)
    return Problem(
        "daemon",
        f"daemon not running (last started {_when(last.at, zone)}; it did not stop cleanly)",
    )


def job_problems(
    config: Config, store: Store | None, now: datetime, zone: tzinfo
) -> list[Problem]:
    seen = {k[len(SEEN):]: datetime.fromisoformat(v) for k, v in store.states(SEEN).items()} \
        if store else {}  # fmt: skip
    paused = store.paused_jobs() if store else set()
    problems: list[Problem] = []
    for flow in config.flows:
        held = not paused.isdisjoint(flow.jobs)
        for name in flow.jobs:
            job = config.jobs[name]
            late = None if held else overdue(job, flow, store, now, seen.get(name), zone)
            problems += [p for p in (late, failing(job, store, zone)) if p is not None]
    return problems


def grace(job: Job, flow: Flow, now: datetime) -> float:
    """The job's `grace`, else one period of its flow's schedule, at least MIN_GRACE."""
    if job.grace is not None:
        return job.grace
    last = flow.previous_fire(now)
    before = flow.previous_fire(last) if last else None
    period = (last - before).total_seconds() if last and before else 0.0
    return max(period, MIN_GRACE)


def overdue(
    job: Job,
    flow: Flow,
    store: Store | None,
    now: datetime,
    seen: datetime | None,
    zone: tzinfo,
) -> Problem | None:
    """A fire older than the grace with no successful run at it or after it."""
    if not job.enabled or flow.schedule is None or flow.schedule.kind == "reboot":
        return None
    fire = flow.previous_fire(now - timedelta(seconds=grace(job, flow, now)))
    if fire is None or (seen is not None and fire < seen):
        return None
    last = store.last_success(job.name) if store else None
    if last is not None and last.logical_time >= fire:
        return None
    done = last.finished_at if last else None
    success = f"last success {format_duration((now - done).total_seconds())} ago" if done \
        else "never succeeded"  # fmt: skip
    due = flow.schedule.describe()
    return Problem("overdue", f"{job.name}: {success}, due {due}", job.name, since=fire)


def failing(job: Job, store: Store | None, zone: tzinfo) -> Problem | None:
    """The job's latest run failed."""
    latest = store.latest_run(job.name) if store else None
    if latest is None or latest.status not in FAILING:
        return None
    moment = latest.finished_at or latest.logical_time
    note = f" ({latest.note})" if latest.note else ""
    message = f"{job.name}: {latest.status} at {_when(moment, zone)}{note}"
    return Problem("failing", message, job.name, since=moment)


def _when(moment: datetime, zone: tzinfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
