"""What the store returns: small frozen records, with the JSON shape `--json` prints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one job (`attempts` is how many attempts started)."""

    run_id: int
    job: str
    flow_run_id: int
    logical_time: datetime
    trigger: str
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    exit_code: int | None
    note: str | None
    cpu_seconds: float | None
    max_rss_kb: int | None
    host: str | None = None  # the worker that ran its latest attempt; None: this machine

    def to_json(self) -> dict[str, Any]:
        """The `history --json` shape of SPEC §7 (plus cpu_seconds, max_rss_kb and host)."""
        return {
            "run_id": self.run_id,
            "job": self.job,
            "flow_run_id": self.flow_run_id,
            "logical_time": _iso(self.logical_time),
            "trigger": self.trigger,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration": self.duration,
            "exit_code": self.exit_code,
            "note": self.note,
            "cpu_seconds": self.cpu_seconds,
            "max_rss_kb": self.max_rss_kb,
            "host": self.host,
        }


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    run_id: int
    number: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    exit_code: int | None
    cpu_seconds: float | None
    max_rss_kb: int | None
    host: str | None = None  # the worker it ran on; None: this machine
    remote_id: str | None = None  # its message to that worker


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How attempt `number` of a run ended, as written with the run's own end (one write)."""

    number: int
    finished_at: datetime
    status: str
    exit_code: int | None
    cpu_seconds: float | None
    max_rss_kb: int | None


@dataclass(frozen=True, slots=True)
class HookRecord:
    id: int
    run_id: int
    attempt: int
    hook: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class OutputChunk:
    id: int
    run_id: int
    attempt: int
    hook_id: int | None
    stream: str
    at: datetime
    data: bytes


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A run still queued, running or retrying, with who drives it and what it runs."""

    run: RunRecord
    owner_pid: int | None  # the cronflow process driving it (daemon or `cronflow run`)
    owner_start: int | None  # that process's start time, in clock ticks after boot
    boot_id: str | None
    groups: tuple[tuple[int, int | None], ...]  # (pgid, leader start) of unfinished attempts
    # (attempt number, remote_id) of the unfinished attempts sent to a worker
    remote: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DaemonEvent:
    """The daemon started, stopped, or noticed it had slept (or the clock jumped) until `until`."""

    event: str  # start | stop | asleep
    at: datetime
    until: datetime | None
    pid: int | None


@dataclass(frozen=True, slots=True)
class PauseRecord:
    """A job paused at `paused_at` and resumed at `resumed_at` (None: still paused)."""

    job: str
    paused_at: datetime
    resumed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TriggerRequest:
    """A request to the running daemon to start a flow run (`cronflow trigger`, the UI)."""

    id: int
    job: str
    logical_time: datetime
    only: bool
    trigger: str  # manual | retry
    created_at: datetime
    taken_at: datetime | None  # None: no daemon has taken it yet
    flow_run_id: int | None  # the flow run the daemon created for it
    note: str | None  # why the daemon could not run it
