"""Runs left unfinished by a cronflow process that died (a daemon, or a `cronflow run` killed
outright): telling a live owner from a dead one, stopping what a dead one left running, and
marking its runs `lost`. One code path, used by the daemon at start and by every `cronflow run`
before it runs anything; readers (`logs -f`, `status`) use `owner_alive` alone and write nothing.

Each run records its owner as (boot id, pid, start time): a reused pid cannot pass for it, so a
live owner's runs are never touched. Recoverers may race (two `cronflow run`s and a daemon
starting at once): `Store.mark_lost` only changes runs still unfinished, in one write
transaction, so each run is marked lost once and only its marker hears about it (and may retry).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from cronflow import processes

if TYPE_CHECKING:
    from cronflow.config import Config, Job
    from cronflow.records import RunRecord, Unfinished
    from cronflow.store import Store

#: Triggers of the flow runs a `cronflow run` may create (`manual` also comes from a daemon's
#: `cronflow trigger`). Lost, they are not retried, whoever finds them: they were someone's
#: command in the foreground, not the scheduler's. A dead daemon's
#: scheduled, catch-up and retry runs are left to the next daemon start, which retries them
#: while their policy allows.
WITHOUT_DAEMON = frozenset({"manual", "backfill"})

DAEMON_NOTE = "the daemon stopped while this ran"
RUN_NOTE = "the cronflow process running this died (found by a later `cronflow run`)"

#: What a caller does with the dead runs before they are marked lost: returns those to mark
#: (a daemon follows runs on remote workers again instead).
Select = Callable[["list[Unfinished]"], "list[Unfinished]"]


def owner_alive(run: Unfinished) -> bool:
    """Whether the cronflow process that drives `run` still lives (not a reused pid)."""
    if run.owner_pid is None:
        return False
    if run.owner_start is None and run.owner_pid == os.getpid():  # recorded before m003
        return False
    owner = processes.Identity(run.boot_id or processes.boot_id(), run.owner_pid, run.owner_start)
    return owner.alive()


def gone_note(run: Unfinished) -> str:
    """What a reader says about an unfinished run whose owner is gone (readers never write)."""
    who = f"pid {run.owner_pid}" if run.owner_pid is not None else "unknown"
    later = (
        "the next `cronflow run` or daemon start marks it lost"
        if run.run.trigger in WITHOUT_DAEMON and not run.remote
        else "the next daemon start marks it lost"
    )
    return f"its cronflow process ({who}) is gone; {later}"


def dead_owned(store: Store) -> list[Unfinished]:
    """Unfinished runs whose owner process is gone, oldest first."""
    return [u for u in store.unfinished_runs() if not owner_alive(u)]


def recover(
    store: Store,
    config: Config | None,
    now: datetime,
    *,
    note: str,
    tell: Callable[[str], None],
    select: Select | None = None,
) -> list[RunRecord]:
    """Mark `lost` the unfinished runs of dead owners (those `select` keeps), after stopping
    the processes they left running (TERM, `kill_grace`, KILL), so a job never has two live
    attempts for one logical time. `tell` hears what is done, a line at a time. Returns the
    runs this call marked lost: a run another recoverer marked meanwhile is not among them."""
    dead = dead_owned(store)
    if select is not None:
        dead = select(dead)
    if not dead:
        return []
    notes = stop_leftovers(dead, config, note, tell)
    lost = store.mark_lost(notes, now)
    for run in lost:
        tell(f"run {run.run_id} of {run.job} was left unfinished by a cronflow process that died:"
             " marked lost")  # fmt: skip
    return lost


def without_daemon(dead: list[Unfinished]) -> list[Unfinished]:
    """The dead runs a `cronflow run` recovers: whole flow runs a `cronflow run` could have
    created (see WITHOUT_DAEMON) with no attempt on a remote worker (a daemon follows those)."""
    kept: dict[int, list[Unfinished]] = {}
    refused: set[int] = set()
    for u in dead:
        flow_run = u.run.flow_run_id
        if u.remote or u.run.trigger not in WITHOUT_DAEMON:
            refused.add(flow_run)
        kept.setdefault(flow_run, []).append(u)
    return [u for flow_run, runs in kept.items() if flow_run not in refused for u in runs]


def stop_leftovers(
    dead: list[Unfinished], config: Config | None, note: str, tell: Callable[[str], None]
) -> dict[int, str]:
    """Stop what the runs of a dead cronflow still run (TERM, `kill_grace`, KILL); returns
    the note each run is marked lost with."""
    notes: dict[int, str] = {}
    everything: list[int] = []
    grace = 0.0
    for u in dead:
        job = config.jobs.get(u.run.job) if config else None
        pids = leftovers(u, job)
        run_note = note
        if pids:
            shown = " ".join(map(str, pids))
            tell(f"run {u.run.run_id} of {u.run.job}: stopping the processes it left running: "
                 f"{shown}")  # fmt: skip
            grace = max(grace, job.kill_grace if job else 10.0)
            everything += pids
            run_note += f"; its processes still running were stopped ({len(pids)})"
        notes[u.run.run_id] = run_note
    if everything:
        processes.stop(everything, grace)
    return notes


def leftovers(run: Unfinished, job: Job | None) -> list[int]:
    """The live processes of a dead cronflow's run: its attempts' groups, and descendants
    that left them (found by the run's marks in their environment). None after a reboot."""
    if run.boot_id not in (None, processes.boot_id()):
        return []
    from cronflow.engine import marker  # here: readers import this module without the engine

    marks = () if job is None else marker(job, run.run.run_id, run.run.logical_time, None)
    found = {pid for pgid, start in run.groups for pid in processes.leftovers(pgid, start, marks)}
    if not run.groups:  # it may have died between a spawn and its record
        found.update(processes.carrying(marks, since=run.owner_start))
    return sorted(found)
