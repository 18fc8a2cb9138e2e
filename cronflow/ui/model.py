"""What the dashboard shows, built from the job file and the store's own read functions.

No Textual here and no SQL: the rows of each screen are plain records, so they are tested
without a terminal, and the app only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cronflow import overview
from cronflow.flows import FAILED
from cronflow.units import format_duration

if TYPE_CHECKING:
    from cronflow.config import Config, Flow
    from cronflow.records import RunRecord
    from cronflow.store import Store

# A letter as well as a color for each status, so the grid reads without color (NO_COLOR).
STATUS_LOOK: dict[str, tuple[str, str]] = {
    "success": ("S", "green"),
    "failed": ("F", "red"),
    "timeout": ("T", "red"),
    "running": ("R", "cyan"),
    "retrying": ("W", "yellow"),
    "queued": ("Q", "grey62"),
    "skipped": ("K", "magenta"),
    "upstream_failed": ("U", "dark_orange"),
    "missed": ("M", "khaki1"),
    "lost": ("L", "medium_purple"),
    "canceled": ("C", "grey50"),
}
NO_RUN = "·"
CLEARABLE = FAILED  # a run that ended like this can be cleared (rerun from it downstream)


def letter(status: str | None) -> str:
    return NO_RUN if status is None else STATUS_LOOK.get(status, ("?", ""))[0]


def relative(moment: datetime | None, now: datetime) -> str:
    """ "in 3h 12m", "5m ago", or "-"."""
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {format_duration(seconds)}" if seconds > 0 else f"{format_duration(-seconds)} ago"


@dataclass(frozen=True)
class JobRow:
    """One line of the flows screen: a job, indented under the jobs it runs after."""

    flow: str
    job: str
    depth: int
    first: bool  # the flow's first line, which carries ON/OFF and the next fire
    meaning: str
    next_fire: datetime | None
    last_status: str | None
    paused_by: str | None


@dataclass(frozen=True)
class FlowsModel:
    rows: list[JobRow]
    flows: dict[str, Flow]

    def flow_of(self, job: str) -> Flow:
        return next(f for f in self.flows.values() if job in f.jobs)


def flows_model(config: Config, store: Store | None, now: datetime) -> FlowsModel:
    """Every flow with its jobs as an indented `after` tree, through overview.jobs (`list`)."""
    views = {v.name: v for v in overview.jobs(config, now, store)}
    rows: list[JobRow] = []
    for flow in config.flows:
        depth: dict[str, int] = {}
        fire = next((views[j].next_fire for j in flow.jobs if views[j].next_fire), None)
        for index, name in enumerate(flow.jobs):  # dependency order: upstreams come first
            job = config.jobs[name]
            depth[name] = 1 + max((depth[a] for a in job.after if a in depth), default=-1)
            view = views[name]
            rows.append(
                JobRow(flow.name, name, depth[name], index == 0, view.meaning, fire,
                       view.last_status, view.paused_by)
            )  # fmt: skip
    return FlowsModel(rows, {f.name: f for f in config.flows})


def flow_status(rows: list[JobRow], flow: str) -> str | None:
    """A flow's status at a glance: a failure of any job, else one still going, else its
    last job's."""
    statuses = [r.last_status for r in rows if r.flow == flow]
    for status in statuses:
        if status in FAILED:
            return status
    for status in statuses:
        if status in ("queued", "running", "retrying"):
            return status
    return statuses[-1] if statuses else None


@dataclass(frozen=True)
class Grid:
    """A flow's jobs × its last logical times, oldest left; each cell the newest run there."""

    flow: str
    jobs: tuple[str, ...]
    times: list[datetime]
    cells: dict[tuple[str, datetime], RunRecord]

    def run(self, job: str, moment: datetime) -> RunRecord | None:
        return self.cells.get((job, moment))


def grid(store: Store | None, flow: Flow, columns: int) -> Grid:
    """The last `columns` logical times of `flow`, from each job's newest runs (`history`)."""
    cells: dict[tuple[str, datetime], RunRecord] = {}
    if store is not None:
        for job in flow.jobs:
            # Clears and retries add runs at one logical time: twice the width covers them.
            for run in store.history(job, limit=columns * 2):
                cells.setdefault((job, run.logical_time), run)  # newest first: keep the first
    times = sorted({moment for _, moment in cells})[-columns:] if columns > 0 else []
    kept = {key: run for key, run in cells.items() if key[1] in times}
    return Grid(flow.name, flow.jobs, times, kept)


@dataclass(frozen=True)
class DaemonLine:
    """The header: the daemon, the job file and its error, the executor."""

    pid: int | None
    since: str | None
    config_path: Path
    config_error: str | None
    executor: str
    workers: str = ""  # with remote execution: who is alive, on which queues

    def text(self, now: datetime) -> str:
        if self.pid is None:
            daemon = "daemon: not running (`cronflow daemon` starts it)"
        else:
            since = ""
            if self.since:
                try:
                    up = (now - datetime.fromisoformat(self.since)).total_seconds()
                    since = f", up {format_duration(up)}"
                except ValueError:
                    since = ""
            daemon = f"daemon: running (pid {self.pid}{since})"
        return f"{daemon} · {self.config_path}" + (
            f" · executor: {self.executor}" if self.executor != "local" else ""
        ) + (f"\n{self.workers}" if self.workers else "")


def workers_text(workers: list[dict[str, object]]) -> str:
    """The header's line on remote workers: each with its queues and how many attempts run."""
    if not workers:
        return "workers: none seen"
    shown = (
        f"{w['hostname']} ({','.join(w['queues'])}: {len(w['running'])} running)"  # type: ignore[arg-type]
        for w in workers
    )
    return "workers: " + ", ".join(shown)


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.2f}s" if seconds < 60 else format_duration(seconds)
