"""`cronflow daemon`: decides *when* flows run; the engine decides *what* happens in a run.

One asyncio loop. The daemon sleeps until the next fire or a short check interval (to notice
a changed job file, a paused flow, or a suspend: the monotonic clock stops while the machine
sleeps, so only a wake-up that compares wall time can see it), a finished flow run or a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronflow import processes, recovery, spawn, timing
from cronflow.clock import Clock
from cronflow.config import Config, Flow, Job, load_config
from cronflow.engine import Engine, FlowRun, MissedFires
from cronflow.errors import ConfigError, CronflowError, Detached
from cronflow.lock import Lock
from cronflow.runner import adopt_descendants
from cronflow.systemd import Notifier
from cronflow.units import format_duration

if TYPE_CHECKING:
    from cronflow.records import RunRecord, Unfinished
    from cronflow.store import Store

log = logging.getLogger("cronflow")

# Longest sleep between fires: a stat of the job file (2 µs; `add`, `remove`, `edit` and SIGHUP
# reload at once) and a look for a suspend or wall-clock jump, which a sleep on the monotonic
# clock cannot see.
CHECK_SECONDS = 5.0
# At a stop, run ends the store refuses are tried this much longer (systemd's TimeoutStopSec=90s
# is past the default stop_timeout of 60 s plus this).
END_WAIT_AT_STOP = 10.0
PRUNE_EVERY = timedelta(hours=1)
TRIGGER_EXPIRES = timedelta(hours=1)  # a `cronflow trigger` request not taken by then is dropped
# + job name: instant up to which fires of the job's flow are accounted for. Kept per job, so a
# flow keeps its record when a root is added, removed or renamed (which renames the flow).
STATE_ACCOUNTED = "accounted:"
STATE_REBOOT = "reboot:"  # + flow name: boot id at which @reboot last fired
# + job name: when the daemon first saw the job (`check` holds no older fire against it).
STATE_SEEN = "seen:"


@dataclass(slots=True)
class FlowState:
    """What the daemon tracks per flow between wake-ups."""

    accounted: datetime  # fires up to here are handled (persisted when something happened)
    next_fire: datetime | None = None
    active: int = 0
    # Fires waiting for the flow's run to end; None until the first one: an empty deque holds
    # a 512-byte block, 0.7 MB over 1,000 flows that never queue anything.
    pending: deque[tuple[datetime, str]] | None = None

    def queue(self) -> deque[tuple[datetime, str]]:
        """`pending`, created on first use."""
        if self.pending is None:
            self.pending = deque()
        return self.pending


class Daemon:
    def __init__(
        self,
        config_path: Path,
        store: Store,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config_path = config_path
        self.store = store
        self.clock = clock or Clock()
        self.notifier = notifier or Notifier.from_env()
        self.config: Config | None = None
        self.config_error: str | None = None
        self.file_stamp: tuple[int, int, int] | None = None
        self.flows: dict[str, FlowState] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        # During a wake-up: the flow runs it fires, begun together once it is done.
        self.deferred: list[tuple[_Recorded | None, Callable[[], None]]] | None = None
        self.more_due = False  # the last `_tick` stopped at its `most` due flows
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.reload_asked = False
        self.last_prune: datetime | None = None
        self.engine: Engine | None = None
        self.started = self.clock.now()
        self.awake_since = self.started  # fires before this were missed (down or asleep)
        self.last_look = (self.started, self.clock.monotonic())
        self.dirty = True  # written since the last checkpoint
        self.store_error: str | None = None  # the store's last refusal, logged once
        self.recovered = False
        self.unpersisted: set[str] = set()  # flows whose `accounted` is newer than the store's
        # Missed fires whose on_missed hooks run with the catch-up run at (flow, logical time).
        self.missed_with: dict[tuple[str, datetime], MissedFires] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._ask_stop)
        loop.add_signal_handler(signal.SIGHUP, self._ask_reload)
        adopt_descendants(loop)
        spawn.warm()  # the fork server: compiled and started before the first fire
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        }
        self.engine = Engine(
            self.store,
            max_parallel=32,
            clock=self.clock,
            observer=_LogObserver(),
            drain=self.stopping,  # SIGTERM: nothing new starts, running attempts may finish
            base_env=env,
        )
        self.store.defer_checkpoints()
        self._reload(first=True)
        self._store_step("recording the daemon's start", self._record_start)
        await self._connect_workers()  # before recovery: remote attempts are followed again
        self._store_step("recovering unfinished runs", self._recover)
        self._store_step("firing @reboot jobs", self._fire_reboot)
        self.notifier.ready(self._summary())
        watchdog = self.notifier.watchdog_interval()
        next_ping = self.clock.monotonic()
        while not self.stopping.is_set():
            self.deferred = []
            self._wake_up(most=1)  # the first due flow starts before the others are looked at
            await self._begin_deferred()
            while self.more_due:  # the rest of a burst of fires due at one instant
                self.deferred = []
                self._store_step("scheduling", self._tick)
                await self._begin_deferred()
            await self._connect_workers()
            if watchdog and self.clock.monotonic() >= next_ping:
                self.notifier.watchdog()
                next_ping = self.clock.monotonic() + watchdog
            wait = self._seconds_to_next_event(watchdog)
            if wait > 1.0 and self.dirty:  # now, rather than inside the write of a fire
                self.dirty = not self._store_step("checkpointing", self.store.checkpoint)
            await self._sleep(wait)
        await self._shutdown()

    def _wake_up(self, most: int | None = None) -> None:
        """One wake-up's duties (with `most`, scheduling as many due flows at most: see
        `_tick`). A store that refuses writes (disk full, locked) never ends the daemon: each
        duty that needs it is logged once and tried again at later wake-ups."""
        ok = True
        if self.reload_asked or self._file_changed():
            self.reload_asked = False
            ok &= self._store_step("reloading the job file", self._reload)
        if not self.recovered:
            ok &= self._store_step("recovering unfinished runs", self._recover)
        assert self.engine is not None
        if self.engine.unrecorded:
            ok &= self._store_step("recording how runs ended", self.engine.record_unrecorded)
        ok &= self._store_step("scheduling", partial(self._tick, most=most))
        ok &= self._store_step("starting triggered runs", self._take_triggers)
        if ok and self.store_error is not None:
            log.info("the database takes writes again")
            self.store_error = None

    def _store_step(self, what: str, step: Callable[[], None]) -> bool:
        """Run `step`; a CronflowError from the store is logged (once while it repeats)."""
        try:
            step()
        except CronflowError as exc:
            if exc.message != self.store_error:
                log.error("%s failed: %s", what, exc.message)
            self.store_error = exc.message
            return False
        return True

    def _ask_stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _ask_reload(self) -> None:
        self.reload_asked = True
        self.wake.set()

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=max(0.0, seconds))

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        timeout = self.config.daemon.stop_timeout if self.config else 60.0
        if self.tasks:
            log.info(
                "stopping: waiting up to %gs for %d running flow runs", timeout, len(self.tasks)
            )
            _, pending = await asyncio.wait(self.tasks, timeout=timeout)
            if pending:
                log.info("stop timeout reached: canceling %d flow runs", len(pending))
                assert self.engine is not None
                if self.engine.remote is not None:
                    self.engine.remote.detach = True  # workers go on; the next daemon follows
                self.engine.stop.set()
                await asyncio.wait(pending)
        await self._record_ends_before_exit()

        def persist() -> None:
            self._persist_accounted()
            self.store.delete_state("daemon:pid")
            self.store.log_daemon("stop", self.clock.now(), pid=os.getpid())

        self._store_step("recording the daemon's stop", persist)
        if self.engine is not None and self.engine.remote is not None:
            await self.engine.remote.close()
        log.info("stopped")

    async def _record_ends_before_exit(self) -> None:
        """Run ends the store still refuses (disk full, locked) are tried for END_WAIT_AT_STOP
        more: left unrecorded, the next start would find those runs `running`, mark them lost
        and maybe retry jobs that had ended."""
        engine, loop = self.engine, asyncio.get_running_loop()
        deadline = loop.time() + END_WAIT_AT_STOP
        while engine is not None and engine.unrecorded:
            if self._store_step("recording how runs ended", engine.record_unrecorded):
                return
            if loop.time() >= deadline:
                log.error(
                    "stopping with the ends of %d runs not recorded; the next start marks them"
                    " lost",
                    len(engine.unrecorded),
                )
                return
            await asyncio.sleep(1.0)

    # --- configuration ---------------------------------------------------------------------

    def _file_changed(self) -> bool:
        return self._stamp() != self.file_stamp

    def _stamp(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)  # mode: a chmod go-w fix

    def _reload(self, first: bool = False) -> None:
        self.file_stamp = self._stamp()
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self._config_problem(exc.summary())
            return
        except CronflowError as exc:
            if self.file_stamp is None:
                if first or self.config is not None:
                    log.info("no job file at %s yet: waiting for it", self.config_path)
                self.config = None
                self.config_error = None
                return
            self._config_problem(exc.message)
            return
        self.config_error = None
        self.store.delete_state("daemon:config_error")
        assert self.engine is not None
        if self.config is None or config.daemon.max_parallel != self.config.daemon.max_parallel:
            # Jobs holding a slot of the old limit release it there; new ones use the new one.
            self.engine.slots = asyncio.Semaphore(config.daemon.max_parallel)
        now = self.clock.now()
        stored: dict[str, str] | None = None
        flows: dict[str, FlowState] = {}
        for flow in config.flows:
            state = self.flows.get(flow.name)
            if state is None:
                stored = self.store.states(STATE_ACCOUNTED) if stored is None else stored
                accounted = _stored_accounted(flow, stored)
                if accounted is None:  # a flow never seen before has no missed fires
                    accounted = now
                self.unpersisted.add(flow.name)  # under its jobs' names, as they are now
                state = FlowState(accounted)
            flows[flow.name] = state
            state.next_fire = _utc(flow.next_fire(state.accounted)) if flow.schedule else None
        # Flows gone from the file are forgotten, unless a run of theirs is still going.
        self.flows = flows | {n: s for n, s in self.flows.items() if s.active and n not in flows}
        verb = "loaded" if first else "reloaded"
        log.info("%s %s: %s", verb, self.config_path, config.size())
        self.config = config
        self._note_seen(config, now)
        self.notifier.status(self._summary())

    def _note_seen(self, config: Config, now: datetime) -> None:
        """Record when each job was first seen (once): `check` judges no fire before it."""
        seen = self.store.states(STATE_SEEN)
        new = {STATE_SEEN + j: now.isoformat() for j in config.jobs if STATE_SEEN + j not in seen}
        if new:
            self.store.set_states(new)

    def _config_problem(self, message: str) -> None:
        keeping = "keeping the last good configuration" if self.config else "running nothing"
        log.error("job file invalid (%s): %s", keeping, message)
        self.config_error = message
        self.store.set_state("daemon:config_error", message)
        self.notifier.status(self._summary())

    def _record_start(self) -> None:
        self.store.log_daemon("start", self.started, pid=os.getpid())
        self.store.set_state("daemon:pid", str(os.getpid()))
        self.store.set_state("daemon:since", self.started.isoformat())
        self.store.set_state("daemon:config", str(self.config_path))

    # --- scheduling ------------------------------------------------------------------------

    def _persist_accounted(self) -> None:
        """Store, in one transaction, how far each flow handled since the last time got."""
        if not self.unpersisted or self.config is None:
            return
        self.store.set_states(
            {STATE_ACCOUNTED + job: self.flows[flow.name].accounted.isoformat()
             for flow in self.config.flows if flow.name in self.unpersisted
             for job in flow.jobs}
        )  # fmt: skip
        self.unpersisted.clear()

    def _tick(self, most: int | None = None) -> None:
        """Account for every fire up to now: run, catch up, or record as missed. With `most`,
        for that many due flows only; `more_due` then says whether others wait."""
        self.more_due = False
        if self.config is None:
            return
        now = self.clock.now()
        self._notice_jump(now)
        paused: set[str] | None = None
        handled: list[str] = []
        for flow in self.config.flows:
            state = self.flows[flow.name]
            if state.next_fire is None or state.next_fire > now or flow.schedule is None:
                continue  # nothing due (also after a backwards clock jump)
            if flow.schedule.kind == "reboot":
                continue
            if most is not None and len(handled) >= most:
                self.more_due = True
                break
            paused = self.store.paused_jobs() if paused is None else paused
            if paused.isdisjoint(flow.jobs) and self._enabled(flow):
                decision = timing.due(
                    flow.schedule,
                    flow.timezone,
                    state.accounted,
                    now,
                    self._root(flow).catchup,
                    self.awake_since,
                )
                # A fire the store cannot record is one line in the log; the others go on.
                self._store_step(f"{flow.name}: the fire", partial(self._apply, flow, decision))
            state.accounted = now
            state.next_fire = _utc(flow.next_fire(now))
            handled.append(flow.name)
        self.dirty = self.dirty or bool(handled) or bool(self.tasks)
        self.unpersisted.update(handled)
        self._persist_accounted()  # one transaction for every flow handled at this wake-up
        if not self.more_due:
            self._prune(now)

    def _notice_jump(self, now: datetime) -> None:
        """Wall time running ahead of monotonic time means a suspend or a clock step:
        fires from before it were not seen on time."""
        wall, mono = self.last_look
        self.last_look = (now, self.clock.monotonic())
        if (now - wall).total_seconds() - (self.last_look[1] - mono) > timing.LATE_AFTER.seconds:
            log.warning(
                "the clock jumped or the machine slept: %s was not seen on time",
                f"{wall.isoformat()} to {now.isoformat()}",
            )
            self.awake_since = now
            self._store_step("recording the sleep", partial(self._record_asleep, wall, now))

    def _record_asleep(self, since: datetime, until: datetime) -> None:
        self.store.log_daemon("asleep", since, until, pid=os.getpid())

    def _apply(self, flow: Flow, decision: timing.Due) -> None:
        missed = _missed_fires(decision)
        if decision.missed:
            self._record_missed(flow, decision.missed, missed)
        elif missed is not None:  # all run late: the hooks run with the first catch-up run
            self.missed_with[(flow.name, _utc(decision.catchup[0]))] = missed
        if decision.catchup:
            log.info("%s: catching up %d missed fires", flow.name, len(decision.catchup))
            state = self.flows[flow.name]
            state.queue().extend((t, "catchup") for t in decision.catchup)
            self._start_pending(flow.name)
        for fire in decision.on_time:
            self._fire(flow, fire, "schedule")

    def _root(self, flow: Flow) -> Job:
        """The flow's first scheduled root: its overlap, catchup and jitter are the flow's."""
        assert self.config is not None
        scheduled = [self.config.jobs[r] for r in flow.roots if self.config.jobs[r].schedule]
        return scheduled[0] if scheduled else self.config.jobs[flow.roots[0]]

    def _enabled(self, flow: Flow) -> bool:
        assert self.config is not None
        return any(self.config.jobs[r].enabled for r in flow.roots if self.config.jobs[r].schedule)

    def _fire(self, flow: Flow, logical_time: datetime, trigger: str) -> None:
        """A fire is due: start it, queue it or skip it, as the flow's `overlap` says."""
        state = self.flows[flow.name]
        overlap = self._root(flow).overlap
        if not state.active or overlap == "allow":
            self._start(flow, logical_time, trigger)
        elif overlap == "queue" and not state.pending:
            state.queue().append((logical_time, trigger))
        else:  # skip, or a queue that already holds its one waiting run
            self._record_skipped(flow, logical_time, trigger)

    def _start_pending(self, flow_name: str) -> None:
        state = self.flows.get(flow_name)
        if not state or state.active or not state.pending or self.stopping.is_set():
            return
        flow = self._flow(flow_name)
        if flow is None:
            state.pending.clear()
            return
        logical_time, trigger = state.pending.popleft()
        self._start(flow, logical_time, trigger)

    def _flow(self, name: str) -> Flow | None:
        if self.config is None:
            return None
        return next((f for f in self.config.flows if f.name == name), None)

    def _start(
        self,
        flow: Flow,
        logical_time: datetime,
        trigger: str,
        jobs: tuple[str, ...] | None = None,
        spent: dict[str, int] | None = None,
    ) -> None:
        assert self.config is not None and self.engine is not None
        jobs = jobs or tuple(j for j in flow.jobs if self.config.jobs[j].enabled)
        missed = self.missed_with.pop((flow.name, _utc(logical_time)), None)
        plan = FlowRun(self.config, flow.name, jobs, logical_time, trigger, spent or {},
                       missed=missed)  # fmt: skip
        delay = timing.jitter_delay(self._root(flow).jitter) if trigger == "schedule" else 0.0
        log.info(
            "fire %s at %s (%s)%s",
            flow.name,
            logical_time.astimezone(flow.timezone).isoformat(),
            trigger,
            f" after {delay:.1f}s jitter" if delay else "",
        )
        recorded = _Recorded(plan)
        self._launch(flow, plan, self._execute(recorded, delay), recorded)

    def _launch(
        self,
        flow: Flow,
        plan: FlowRun,
        work: Coroutine[Any, Any, Any],
        recorded: _Recorded | None = None,
    ) -> None:
        """Run `work` (a flow run of `flow`) as a task the daemon keeps count of; during a
        wake-up, once it is done (see `_begin_deferred`)."""
        state = self.flows[flow.name]
        state.active += 1  # now: the flow's `overlap` counts it from here

        def begin() -> None:
            task = asyncio.create_task(work)
            self.tasks.add(task)
            task.add_done_callback(finished)
            self.notifier.status(self._summary())

        def finished(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            state.active -= 1
            self._start_pending(flow.name)
            self.notifier.status(self._summary())
            self.wake.set()

        if self.deferred is None:
            begin()
        else:  # `recorded`: its flow run is not in the store yet (`_execute` records it)
            self.deferred.append((recorded, begin))

    async def _begin_deferred(self) -> None:
        """Begin the flow runs of the last look at the schedules in one loop turn (their
        starts come before the bookkeeping of jobs that have already ended), their new flow
        runs recorded in one transaction."""
        begun, self.deferred = self.deferred or [], None
        if not begun:
            return
        self._record_together([recorded for recorded, _ in begun if recorded is not None])
        for _, begin in begun:
            begin()
        await asyncio.sleep(0)  # one loop turn: the new tasks run to their first wait

    def _record_together(self, fires: list[_Recorded]) -> None:
        """Record these fires' flow runs in one transaction, not one each; if that fails,
        each fire records its own and reports a refusal as usual."""
        assert self.engine is not None
        if len(fires) < 2:
            return
        try:
            ids = self.engine.create_together([fire.plan for fire in fires])
        except Exception as exc:  # noqa: BLE001 - each fire then tries on its own
            log.debug("recording %d fires together failed: %s", len(fires), exc)
            return
        for fire, created in zip(fires, ids, strict=True):
            fire.ids = created

    async def _execute(self, fire: _Recorded, delay: float) -> None:
        assert self.engine is not None
        plan = fire.plan
        try:
            flow_run_id, run_ids = fire.ids or self.engine.create(plan)
        except CronflowError as exc:  # the store refused a write: disk full, locked…
            zone = plan.config.jobs[plan.jobs[0]].timezone
            moment = plan.logical_time.astimezone(zone).isoformat()
            log.error("fire %s at %s not run: %s", plan.flow, moment, exc.message)
            self.store_error = exc.message
            return
        if delay:
            await _sleep_unless(self.stopping, delay)
        if self.stopping.is_set():  # stopped during the jitter delay: fire nothing new
            self.engine.cancel(plan, run_ids, "the daemon stopped before the run started")
            return
        await self._run_created(plan, flow_run_id, run_ids)

    async def _run_created(self, plan: FlowRun, flow_run_id: int, run_ids: dict[str, int]) -> None:
        """Run a recorded flow run to its end, and log how it ended."""
        assert self.engine is not None
        try:
            runs = await self.engine.execute_created(plan, flow_run_id, run_ids)
        except CronflowError as exc:
            log.error("flow %s: %s", plan.flow, exc.message)
            return
        except Detached:
            log.info("left flow %s to the next daemon: a worker still runs it", plan.flow)
            return
        failed = [r.job for r in runs if r.status not in ("success", "skipped")]
        log.info(
            "finished %s: %s", plan.flow, f"failed: {', '.join(failed)}" if failed else "success"
        )

    def _record_missed(
        self, flow: Flow, missed: timing.Missed, fires: MissedFires | None = None
    ) -> None:
        log.warning("%s: %s", flow.name, missed.note())
        _, run_ids = self.store.create_flow_run(
            flow.name,
            missed.last,
            "catchup",
            flow.roots,
            status="missed",
            note=missed.note(),
            finished_at=self.clock.now(),
        )
        self._missed_hooks(flow, fires or MissedFires(missed.count, missed.first, missed.last),
                           run_ids)  # fmt: skip

    def _missed_hooks(self, flow: Flow, fires: MissedFires, run_ids: dict[str, int]) -> None:
        """Run the roots' on_missed hooks in the background, kept with their `missed` runs."""
        assert self.config is not None and self.engine is not None
        if not any(self.config.jobs[r].on_missed for r in flow.roots):
            return
        plan = FlowRun(self.config, flow.name, flow.roots, fires.last, "catchup", missed=fires)
        task = asyncio.get_running_loop().create_task(self.engine.missed_hooks(plan, run_ids))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _record_skipped(self, flow: Flow, logical_time: datetime, trigger: str) -> None:
        note = "the previous run of this flow was still going (overlap)"
        log.info("%s: skipped the fire at %s: %s", flow.name, logical_time.isoformat(), note)
        self.store.create_flow_run(
            flow.name,
            logical_time,
            trigger,
            flow.roots,
            status="skipped",
            note=note,
            finished_at=self.clock.now(),
        )

    def _seconds_to_next_event(self, watchdog: float | None) -> float:
        wait = min(CHECK_SECONDS, watchdog or CHECK_SECONDS)
        fires = [s.next_fire for s in self.flows.values() if s.next_fire is not None]
        if fires and self.config is not None:
            until = (min(fires) - self.clock.now()).total_seconds()
            # Linux lets a timed epoll wait end late by 0.1 % of its length (timer slack, up to
            # 100 ms), plus up to 1 ms of rounding: aim that much early, then wait the rest in
            # a short second sleep whose slack is microseconds.
            wait = min(wait, until - min(until / 1000 + 0.001, 0.1) if until > 0.004 else until)
        return wait

    # --- trigger requests (`cronflow trigger`, the UI's trigger and clear) -------------------

    def _take_triggers(self) -> None:
        """Start the flow runs asked for through the database (see cronflow.trigger). Like
        `cronflow run`, a requested run starts whatever the flow's pause and overlap say."""
        if self.stopping.is_set():
            return  # left pending: nothing new starts now
        for request in self.store.pending_triggers():
            now = self.clock.now()
            if now - request.created_at > TRIGGER_EXPIRES:
                # Asked of a daemon that died before taking it: running it hours later, when
                # nobody waits for it, would surprise more than it helps.
                limit = format_duration(TRIGGER_EXPIRES.total_seconds())
                note = f"expired: no daemon took it within {limit}"
                log.warning("trigger request %d not run: %s", request.id, note)
                self.store.refuse_trigger(request.id, note, now)
                continue
            if self.config is None or request.job not in self.config.jobs:
                note = (
                    f"no job named {request.job!r} in the daemon's job file {self.config_path}"
                    if self.config is not None
                    else f"the daemon has no valid job file loaded ({self.config_path})"
                )
                log.warning("trigger request %d not run: %s", request.id, note)
                self.store.refuse_trigger(request.id, note, now)
                continue
            flow = self.config.flow_of(request.job)
            only = (request.job,)
            jobs = only if request.only else self.config.downstream(request.job)
            created = self.store.take_trigger(request.id, flow.name, jobs, now)
            if created is None:
                continue  # taken meanwhile
            plan = FlowRun(self.config, flow.name, jobs, request.logical_time, request.trigger)
            log.info(
                "fire %s at %s (%s, request %d)",
                flow.name,
                request.logical_time.astimezone(flow.timezone).isoformat(),
                request.trigger,
                request.id,
            )
            self._launch(flow, plan, self._run_created(plan, *created))

    def _recover(self) -> None:
        """Runs whose cronflow process died become `lost` (see `recovery`): their processes
        that still run are stopped first, so a job never has two live attempts for one logical
        time; runs on remote workers are followed again instead; then each lost job is retried
        while its retry budget for that logical time lasts."""
        lost = recovery.recover(
            self.store, self.config, self.clock.now(),
            note=recovery.DAEMON_NOTE, tell=log.warning, select=self._follow_remote,
        )  # fmt: skip
        self._retry_lost(lost)
        self.recovered = True

    async def _connect_workers(self) -> None:
        """Connect to the broker once the job file asks for workers (`[executor] kind`)."""
        assert self.engine is not None
        if self.config is None or self.config.executor.kind != "celery" or self.engine.remote:
            return
        try:
            import uuid

            from cronflow.remote import RemoteExecutor, Settings

            settings = Settings.from_config(self.config)
            if settings_need_tls(self.config) and _started_without_tls():
                raise CronflowError(
                    "this daemon started without TLS support (its job file named no workers "
                    "then); restart it to reach a rediss:// broker"
                )
            token = self.store.get_state("remote:token") or uuid.uuid4().hex
            self.store.set_state("remote:token", token)
        except CronflowError as exc:
            if exc.message != self.engine.remote_problem:
                log.error("remote execution unavailable: %s", exc.message)
            self.engine.remote_problem = exc.message
            return
        self.engine.remote = RemoteExecutor(settings, token, self.clock)
        self.engine.remote_problem = None
        self.recovered = False  # remote attempts of a dead daemon can be followed now
        log.info("remote execution through %s", settings.shown)

    def _follow_remote(self, dead: list[Unfinished]) -> list[Unfinished]:
        """Flow runs of a dead daemon with attempts on workers are followed to their end, with
        their jobs still queued; returns the rest, which become `lost`."""
        remote = self.engine.remote if self.engine else None
        if remote is None or self.config is None:
            return dead
        on_workers = {u.run.flow_run_id for u in dead if u.remote}
        for flow_run_id in on_workers:
            runs = [u for u in dead if u.run.flow_run_id == flow_run_id]
            ours = [u for u in runs if u.remote or u.run.attempts == 0]
            if not all(u.run.job in self.config.jobs for u in ours):
                continue  # its jobs left the file: nothing to go on with
            attach = {u.run.job: u.remote[-1] for u in ours if u.remote}
            for _, remote_id in attach.values():
                remote.expect(remote_id)  # its events are kept from now on
            self.store.adopt_runs([u.run.run_id for u in ours])
            self._resume(ours, attach)
            dead = [u for u in dead if u not in ours]
        if remote.reader is None:
            asyncio.get_running_loop().create_task(remote.start())
        return dead

    def _resume(self, runs: list[Unfinished], attach: dict[str, tuple[int, str]]) -> None:
        """Go on with the unfinished runs of one flow run, following its remote attempts."""
        assert self.config is not None and self.engine is not None
        first = runs[0].run
        flow = self.config.flow_of(first.job)
        run_ids = {u.run.job: u.run.run_id for u in runs}
        jobs = tuple(j for j in flow.jobs if j in run_ids)
        plan = FlowRun(self.config, flow.name, jobs, first.logical_time, first.trigger,
                       {}, attach)  # fmt: skip
        log.info("following %s again (run %s on a worker)", ", ".join(attach), first.run_id)
        self._launch(flow, plan, self._run_created(plan, first.flow_run_id, run_ids))

    def _retry_lost(self, lost: list[RunRecord]) -> None:
        """Retry each lost flow run once, from its lost jobs on, continuing their budgets."""
        if self.config is None:
            return
        by_flow_run: dict[int, list[RunRecord]] = {}
        for run in lost:
            by_flow_run.setdefault(run.flow_run_id, []).append(run)
        for runs in by_flow_run.values():
            # `attempts` is the highest attempt number: the budget used at this logical time.
            spent = {r.job: r.attempts for r in runs if r.job in self.config.jobs}
            again = [
                job for job, used in spent.items()
                if runs[0].trigger not in recovery.WITHOUT_DAEMON
                and 0 < used <= self.config.jobs[job].retries
            ]  # fmt: skip
            if not again:
                continue
            flow = self.config.flow_of(again[0])
            wanted = {j for job in again for j in self.config.downstream(job) if j in flow.jobs}
            spent_all = {j for j, used in spent.items() if used > self.config.jobs[j].retries}
            jobs = tuple(j for j in flow.jobs if j in wanted - spent_all)
            log.info("retrying lost %s (%s)", ", ".join(again), runs[0].logical_time.isoformat())
            self._start(flow, runs[0].logical_time, "retry", jobs=jobs, spent=spent)

    def _fire_reboot(self) -> None:
        if self.config is None:
            return
        current = processes.boot_id()
        for flow in self.config.flows:
            if not flow.schedule or flow.schedule.kind != "reboot" or not self._enabled(flow):
                continue
            key = STATE_REBOOT + flow.name
            if self.store.get_state(key) != current:
                self.store.set_state(key, current)
                self._start(flow, self.clock.now(), "schedule")

    def _prune(self, now: datetime) -> None:
        keep = self.config.daemon.keep_history if self.config else None
        if keep is None or (self.last_prune and now - self.last_prune < PRUNE_EVERY):
            return
        self.last_prune = now
        removed = self.store.prune(now - timedelta(seconds=keep))
        if removed:
            log.info("pruned %d runs older than %s", removed, keep)

    def _summary(self) -> str:
        if self.config is None:
            return "no job file yet"
        running = len(self.tasks)  # flow runs going: counted, not summed over every flow
        problem = "; job file invalid, running the last good one" if self.config_error else ""
        return f"{len(self.config.jobs)} jobs, {running} flow runs going{problem}"


def _missed_fires(decision: timing.Due) -> MissedFires | None:
    """All fires of one decision that did not run on time, run late or not at all."""
    if decision.missed is None and not decision.catchup:
        return None
    count = len(decision.catchup) + (decision.missed.count if decision.missed else 0)
    first = decision.missed.first if decision.missed else decision.catchup[0]
    last = decision.catchup[-1] if decision.catchup else decision.missed.last  # type: ignore[union-attr]
    return MissedFires(count, first, last)


def _stored_accounted(flow: Flow, stored: dict[str, str]) -> datetime | None:
    """The latest instant to which any job of `flow` was accounted for."""
    keys = [STATE_ACCOUNTED + job for job in flow.jobs]
    return max((datetime.fromisoformat(stored[k]) for k in keys if k in stored), default=None)


def _utc(moment: datetime | None) -> datetime | None:
    """Instants in UTC: two times in one zone would compare by wall clock, ignoring fold."""
    return moment.astimezone(UTC) if moment is not None else None


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)


class _LogObserver:
    """The daemon's log: one line per start, finish, retry."""

    def output(self, job: str, stream: str, data: bytes) -> None:
        pass

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        if status in ("running",) and detail == "attempt 1":
            log.info("start %s (run %d)", job, run_id)
            return
        log.log(
            logging.INFO
            if status in ("success", "running", "skipped", "output_stored")
            else logging.WARNING,
            "%s %s (run %d)%s",
            status,
            job,
            run_id,
            f": {detail}" if detail else "",
        )


def setup_logging() -> None:
    """stderr; no timestamps of our own under journald, which adds them."""
    handler = logging.StreamHandler()
    fmt = (
        "%(levelname)s %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else "%(asctime)s %(levelname)s %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def settings_need_tls(config: Config) -> bool:
    url = config.executor.broker_url(os.environ) or ""
    return url.startswith("rediss://")


def _started_without_tls() -> bool:
    """True in a daemon_process that imported asyncio with `ssl` hidden (see there)."""
    sslproto = sys.modules.get("asyncio.sslproto")
    return sslproto is not None and getattr(sslproto, "ssl", True) is None


def run_daemon(config_path: Path, store: Store, lock_path: Path) -> None:
    """Hold the lock and run until SIGTERM/SIGINT."""
    lock = Lock(lock_path)
    lock.acquire()
    setup_logging()
    try:
        log.info("cronflow daemon started (pid %d), job file %s", os.getpid(), config_path)
        asyncio.run(Daemon(config_path, store).run())
    finally:
        lock.release()


@dataclass
class _Recorded:
    """A fire's flow run: its ids once recorded together with other fires (`_record_together`),
    else None and `_execute` records it."""

    plan: FlowRun
    ids: tuple[int, dict[str, int]] | None = None
