"""`cronflow run`: one flow run now, or a backfill over a range, on the shared engine."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cronflow import recovery
from cronflow.engine import Engine, FlowRun, Observer
from cronflow.errors import CronflowError
from cronflow.flows import FAILED
from cronflow.runner import Stop, adopt_descendants

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.records import RunRecord
    from cronflow.remote import RemoteExecutor
    from cronflow.store import Store

MAX_BACKFILL = 100_000
# Flow runs of a backfill recorded ahead of running them, in one transaction (see _Feed).
CREATE_AHEAD = 8
# Run ends the store refused (disk full, locked) are tried again this long before `run` exits.
END_DEADLINE = 30.0
END_RETRY = 1.0


FlowDone = Callable[[datetime, list[str]], None]  # a flow run's logical time, its statuses

# Ctrl-C, kill, and a closed terminal or dropped ssh session all stop the run the same way.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Outcome:
    runs: list[RunRecord]
    signal: int | None  # the signal that stopped the runs, if one did

    @property
    def failed(self) -> bool:
        return any(run.status in FAILED for run in self.runs)

    @property
    def exit_code(self) -> int:
        """128+N when stopped by signal N (130 for Ctrl-C), as shells report it."""
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.failed else 0


def plan(
    config: Config,
    job: str,
    only: bool,
    logical_time: datetime,
    trigger: str,
    ignore_past: bool = False,
) -> FlowRun:
    """JOB and everything downstream of it (or JOB alone) at one logical time."""
    config.job(job)
    jobs = (job,) if only else config.downstream(job)
    return FlowRun(
        config, config.flow_of(job).name, jobs, logical_time, trigger, ignore_past=ignore_past
    )


def recover(
    store: Store, config: Config, now: datetime, tell: Callable[[str], None]
) -> list[RunRecord]:
    """Before a `cronflow run` runs anything: the runs of `cronflow run`s that died (SIGKILL,
    the OOM killer) become `lost`, what they left running stopped first, so users without a
    daemon never keep runs `running` forever. Not retried: a `cronflow run` is no scheduler,
    and it would run someone else's job in this terminal. A dead daemon's scheduled runs are
    left to the next daemon start, which retries them (see `recovery.without_daemon`)."""
    return recovery.recover(
        store, config, now, note=recovery.RUN_NOTE, tell=tell, select=recovery.without_daemon
    )


def at_times(template: FlowRun, times: list[datetime]) -> list[FlowRun]:
    """`template` at each of `times` (its jobs worked out once, not per fire)."""
    return [dataclasses.replace(template, logical_time=moment) for moment in times]


def flows_at_once(template: FlowRun, parallel: int) -> int:
    """A backfill of jobs with depends_on_past runs oldest first, one flow run at a time:
    each logical time waits for the previous one's outcome (unless --ignore-past)."""
    depends = any(template.config.jobs[j].depends_on_past for j in template.jobs)
    return 1 if depends and not template.ignore_past else parallel


def backfill_times(config: Config, job: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire times T of JOB's flow with start <= T <= end, oldest first."""
    flow = config.flow_of(config.job(job).name)
    if flow.schedule is None or flow.schedule.kind in ("reboot",):
        raise CronflowError(f"{job}'s flow has no time schedule to backfill", 2)
    if end < start:
        raise CronflowError("--to is before --from", 2)
    times = flow.schedule.fires_between(start, end, flow.timezone, limit=MAX_BACKFILL + 1)
    if len(times) > MAX_BACKFILL:
        raise CronflowError(f"the range holds more than {MAX_BACKFILL} fire times; narrow it", 2)
    return times


def already_done(store: Store, plan: FlowRun, times: list[datetime]) -> set[datetime]:
    """Logical times at which every job of the plan has succeeded before."""
    if not times:
        return set()
    done: set[datetime] | None = None
    for job in plan.jobs:
        ok = store.succeeded_logical_times(job, times[0], times[-1])
        done = ok if done is None else done & ok
    return done or set()


def run_plans(
    store: Store,
    plans: list[FlowRun],
    *,
    max_parallel: int,
    flows_at_once: int = 1,
    observer: Observer | None = None,
    on_flow_done: FlowDone | None = None,
    local: bool = False,
) -> Outcome:
    """Run flow runs (at most `flows_at_once` together) in the foreground; Ctrl-C cancels.
    Jobs with a remote queue go to workers, as under the daemon, unless `local`.
    `on_flow_done` hears of each flow run's end: its logical time and its jobs' statuses."""
    return asyncio.run(
        _run_plans(store, plans, max_parallel, flows_at_once, observer, on_flow_done, local)
    )


async def _run_plans(
    store: Store,
    plans: list[FlowRun],
    max_parallel: int,
    flows_at_once: int,
    observer: Observer | None,
    on_flow_done: FlowDone | None,
    local: bool = False,
) -> Outcome:
    stop = Stop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    loop = asyncio.get_running_loop()
    # A signal ignored on entry stays ignored, as the shell keeps it for its children:
    # `nohup cronflow run ...` outlives the terminal, and `cronflow run ... &` in a script
    # is not stopped by the Ctrl-C meant for the foreground.
    caught = [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]
    for signum in caught:
        loop.add_signal_handler(signum, on_signal, signum)
    adopt_descendants(loop)
    engine = Engine(store, max_parallel=max_parallel, observer=observer, stop=stop)
    engine.force_local = local
    remote_jobs = {j for p in plans for j in p.jobs if p.config.queue_of(j) != "local"}
    if remote_jobs and not local:  # a broker is needed only for jobs that go to workers
        engine.remote = await _remote(plans[0].config)
    feed = _Feed(engine, plans, flows_at_once)
    ran: list[int] = []  # the flow runs that ran, read back from the store once at the end
    jobs: dict[int, str] = {}  # run id → job, to name a run whose end could not be recorded

    async def worker() -> None:
        while not stop.is_set() and (created := feed.next()) is not None:
            plan, flow_run_id, run_ids = created
            jobs.update({run_id: job for job, run_id in run_ids.items()})
            statuses = await engine.run_created(plan, run_ids)
            ran.append(flow_run_id)
            if on_flow_done:
                on_flow_done(plan.logical_time, list(statuses.values()))

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(flows_at_once, len(plans))))))
    finally:
        feed.forget_rest()
    try:
        await _record_ends(engine, stop, jobs)
    finally:
        for signum in (*caught, signal.SIGCHLD):
            loop.remove_signal_handler(signum)
        if engine.remote is not None:
            await engine.remote.close(forget=True)
    return Outcome(store.runs_in_flow_runs(ran), received[0] if received else None)


async def _record_ends(engine: Engine, stop: Stop, jobs: dict[int, str]) -> None:
    """Write the run ends the store refused (disk full, locked past the busy timeout), trying
    again until END_DEADLINE (at once given up on Ctrl-C); then one clear error naming each
    run left unrecorded. Nothing else ends a run started here, so this is the last chance."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + END_DEADLINE
    told = False
    while True:
        try:
            engine.record_unrecorded()
            return
        except CronflowError as exc:
            reason = exc.message
        if stop.is_set() or loop.time() >= deadline:
            break
        if not told:
            told = True
            for run_id in engine.unrecorded:
                job = jobs.get(run_id, "?")
                detail = f"its end is not recorded yet: {reason}; trying for {END_DEADLINE:g}s"
                engine.observer.status(job, run_id, "unrecorded", detail)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=END_RETRY)
    ends = {r: f for r, f in engine.unrecorded.items() if "status" in f}
    for run_id in engine.unrecorded.keys() - ends.keys():  # its end is stored; a hook's marker
        detail = f"the note that its hook's output was not stored could not be stored: {reason}"
        engine.observer.status(jobs.get(run_id, "?"), run_id, "unrecorded", detail)
    if not ends:
        return
    left = ", ".join(f"run {r} ({jobs.get(r, '?')}, {f['status']})" for r, f in ends.items())
    raise CronflowError(
        f"could not record how {left} ended: {reason}. History shows it as it was (`running`"
        " or `queued`) until the next `cronflow run` or daemon start marks it lost."
    )


class _Feed:
    """The flow runs of `run_plans` in order, their rows created ahead in batches.

    One write transaction records a batch (growing from `flows_at_once` to CREATE_AHEAD flow
    runs), not one per flow run: a long backfill costs a third fewer commits. Rows created but
    not started when the run is stopped are deleted again (`forget_rest`): history shows what
    ran. A `cronflow run` killed outright leaves at most one batch `queued`, which the next
    `cronflow run` or daemon start marks `lost` (`recover`; not retried).
    """

    def __init__(self, engine: Engine, plans: list[FlowRun], flows_at_once: int) -> None:
        self.engine = engine
        self.plans = plans
        self.taken = 0  # plans created so far
        self.batch = max(1, flows_at_once)
        self.ready: collections.deque[tuple[FlowRun, int, dict[str, int]]] = collections.deque()

    def next(self) -> tuple[FlowRun, int, dict[str, int]] | None:
        """The next flow run to execute, created; None when all are handed out."""
        if not self.ready:
            batch = self.plans[self.taken : self.taken + self.batch]
            if not batch:
                return None
            self.taken += len(batch)
            self.batch = min(max(CREATE_AHEAD, self.batch), self.batch * 2)
            created = self.engine.create_together(batch)
            self.ready.extend((plan, *ids) for plan, ids in zip(batch, created, strict=True))
        return self.ready.popleft()

    def forget_rest(self) -> None:
        """Delete the created flow runs that will not start now."""
        if self.ready:
            # A store that refuses (disk full) leaves them `queued`: a later recovery marks
            # them `lost`; the backfill still reports how it ended.
            with contextlib.suppress(CronflowError):
                self.engine.store.forget_flow_runs([fr for _, fr, _ in self.ready])
            self.ready.clear()


async def _remote(config: Config) -> RemoteExecutor:
    """A broker connection of this `cronflow run` alone: its own event stream."""
    import uuid

    from cronflow.clock import Clock
    from cronflow.remote import RemoteExecutor, Settings

    executor = RemoteExecutor(Settings.from_config(config), f"run-{uuid.uuid4().hex}", Clock())
    await executor.start()
    return executor
