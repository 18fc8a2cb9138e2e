"""`cronflow trigger` and the UI's trigger and clear: ask the running daemon to start a flow run.

The request is a row in the database plus a SIGHUP, the nudge `add`/`remove`/`edit` already
send: the daemon takes pending requests at every wake-up, so one sent while it is busy (or
before the signal lands) waits for the next wake-up instead of being lost. The run then belongs
to the daemon (under systemd, not to this terminal) and is recorded like any other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cronflow.errors import CronflowError
from cronflow.lock import running_daemon_pid

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.records import RunRecord, TriggerRequest
    from cronflow.store import Store

WAIT_SECONDS = 10.0  # how long `cronflow trigger` waits for the daemon to take its request
POLL_SECONDS = 0.05

NO_DAEMON = (
    "no cronflow daemon is running to start it; start one (`cronflow daemon`, or "
    "`cronflow systemd install`), or run the flow here in the foreground with `cronflow run {job}`"
)


@dataclass(frozen=True)
class Sent:
    """A request recorded and the daemon nudged."""

    request_id: int
    pid: int


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon of this state folder, or None when none runs."""
    pid = running_daemon_pid(state_dir / "cronflow.lock")
    return None if pid is None or pid <= 0 else pid


def request(
    store: Store,
    config: Config,
    state_dir: Path,
    job: str,
    logical_time: datetime,
    *,
    only: bool = False,
    trigger: str = "manual",
    now: datetime,
) -> Sent:
    """Record a request for JOB's flow from JOB (or JOB alone) and nudge the daemon.

    Refused (exit 1) when JOB is unknown or no daemon runs: nothing is then recorded, so no
    request waits for a daemon that may start days later.
    """
    config.job(job)
    pid = daemon_pid(state_dir)
    if pid is None:
        raise CronflowError(NO_DAEMON.format(job=job))
    request_id = store.request_trigger(job, logical_time, only, trigger, now)
    nudge(pid)
    return Sent(request_id, pid)


def nudge(pid: int) -> None:
    """Wake the daemon now (it also reads the job file again, as after `cronflow add`)."""
    # Gone meanwhile, or not ours: the request still waits for a daemon's next wake-up.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGHUP)


def wait(store: Store, request_id: int, timeout: float = WAIT_SECONDS) -> TriggerRequest | None:
    """The request once the daemon has taken it (or refused it); None if not within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = store.get_trigger(request_id)
        if found is not None and found.taken_at is not None:
            return found
        if time.monotonic() >= deadline:
            return found if found is not None and found.taken_at is not None else None
        time.sleep(POLL_SECONDS)


def runs_of(store: Store, taken: TriggerRequest) -> list[RunRecord]:
    """The runs the daemon created for a taken request (none if it refused it)."""
    return [] if taken.flow_run_id is None else store.runs_in_flow_run(taken.flow_run_id)
