"""One flow run: which job starts when, retries, hooks and statuses.

The same engine serves `cronflow run`, backfills and the daemon, so every trigger behaves the
same way. It runs on the caller's asyncio loop; processes are started only through `runner`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cronflow import envfile, flows
from cronflow.clock import Clock
from cronflow.errors import CronflowError, Detached, OutputLost
from cronflow.logcap import TAIL_BYTES
from cronflow.records import AttemptEnd
from cronflow.runner import AttemptResult, Command, Stop, run_attempt

if TYPE_CHECKING:
    from cronflow.config import Config, Job
    from cronflow.records import RunRecord
    from cronflow.remote import RemoteExecutor
    from cronflow.store import Store

HOOK_TIMEOUT = 60.0
HOOK_KILL_GRACE = 5.0
FLUSH_SECONDS = 0.05  # output reaches the database (and `logs -f`) this often
FLUSH_ROWS = 500
FLUSH_BYTES = 256 * 1024  # or once this much is waiting
# Output the store refuses (disk full, locked past the busy timeout) is held and written again
# every RETRY_SECONDS; at most HELD_BYTES of it per attempt (the oldest lines go first, each
# counted as ROW_COST bytes more, so that many tiny lines count too). Once the attempt ended,
# what is held waits OUTPUT_DEADLINE more; then a marker stands for it (see _OutputWriter).
RETRY_SECONDS = 1.0
HELD_BYTES = 1024 * 1024
ROW_COST = 64
OUTPUT_DEADLINE = 10.0

RunAttempt = Callable[..., Awaitable[AttemptResult]]
OnRemoteStart = Callable[[str, "int | None", "int | None", "datetime | None"], None]
DETACHED = "detached"  # not a status: a job left unfinished to the next daemon (see Detached)


class Observer(Protocol):
    """What the engine reports as it goes; `run` shows it live, the daemon logs it."""

    def output(self, job: str, stream: str, data: bytes) -> None: ...

    def status(self, job: str, run_id: int, status: str, detail: str) -> None: ...


class Quiet:
    def output(self, job: str, stream: str, data: bytes) -> None:
        pass

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        pass


@dataclass(frozen=True)
class FlowRun:
    """What to run: `jobs` of `config` for one logical time."""

    config: Config
    flow: str
    jobs: tuple[str, ...]
    logical_time: datetime
    trigger: str  # schedule | manual | backfill | catchup | retry
    # Attempts a job already used at this logical time in a run that was lost: a recovery
    # continues that run's retry budget and attempt numbers, it does not start afresh.
    spent: Mapping[str, int] = field(default_factory=dict)
    # Remote attempts a previous daemon sent and a worker still runs: (attempt, remote id) per
    # job. The run follows them to their end instead of starting them again.
    attach: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    # `run --ignore-past`: jobs with depends_on_past start whatever their previous fire did.
    ignore_past: bool = False
    # Fires the daemon found missed: the roots' `on_missed` hooks run with this run.
    missed: MissedFires | None = None


@dataclass(frozen=True)
class MissedFires:
    """Fires of a flow the daemon did not run on time (down, asleep, a clock jump)."""

    count: int
    first: datetime
    last: datetime


# The note of a run held back by depends_on_past; such a skip holds the next fire back too.
HELD_BY_PAST = "previous run ({}) did not succeed"
UNFINISHED_PAST = "previous run ({}) has not finished"


class Engine:
    """Runs flow runs; all of them share one `max_parallel` limit on running jobs."""

    def __init__(
        self,
        store: Store,
        *,
        max_parallel: int,
        clock: Clock | None = None,
        observer: Observer | None = None,
        stop: Stop | None = None,
        drain: asyncio.Event | None = None,
        run: RunAttempt = run_attempt,
        base_env: dict[str, str] | None = None,
        remote: RemoteExecutor | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or Clock()
        self.observer = observer or Quiet()
        # `stop` kills running attempts; `drain` only starts nothing new: waits for a retry or
        # a slot end at once as `canceled`, running attempts finish (the daemon's SIGTERM).
        self.stop = stop or Stop()
        self.drain = drain or asyncio.Event()
        self.slots = asyncio.Semaphore(max_parallel)
        # Run ends the store refused (disk full): recorded again by `record_unrecorded`.
        self.unrecorded: dict[int, dict[str, Any]] = {}
        # How long an ended attempt's output may wait for a store that refuses it, and how
        # often it is tried again (attributes: tests shorten them).
        self.output_deadline = OUTPUT_DEADLINE
        self.output_retry = RETRY_SECONDS
        self._run = run
        self._base_env = dict(os.environ if base_env is None else base_env)
        # Attempts of jobs whose queue is not "local" go to workers through it.
        self.remote = remote
        self.remote_problem: str | None = None  # why `remote` is missing, when it should not be
        self.force_local = False  # `cronflow run --local`: every attempt runs here

    def create(self, plan: FlowRun, note: str | None = None) -> tuple[int, dict[str, int]]:
        """Record the flow run and one `queued` run per job; returns their ids."""
        return self.store.create_flow_run(
            plan.flow, plan.logical_time, plan.trigger, plan.jobs, note=note
        )

    def create_together(self, plans: Sequence[FlowRun]) -> list[tuple[int, dict[str, int]]]:
        """`create` for each plan, in one transaction (many fires due at one instant)."""
        return self.store.create_flow_runs(
            [(p.flow, p.logical_time, p.trigger, p.jobs) for p in plans]
        )

    async def execute(self, plan: FlowRun) -> list[RunRecord]:
        """Run `plan` to its end and return the runs it recorded."""
        flow_run_id, run_ids = self.create(plan)
        return await self.execute_created(plan, flow_run_id, run_ids)

    @property
    def halting(self) -> bool:
        """Nothing new starts: stopping or draining."""
        return self.stop.is_set() or self.drain.is_set()

    def cancel(self, plan: FlowRun, run_ids: dict[str, int], note: str) -> None:
        """Record created runs that will never start as `canceled`."""
        for job in plan.jobs:
            self._finish(run_ids[job], job, "canceled", None, note)

    def record_end(self, run_id: int, **fields: Any) -> None:
        """Record how a run ended (or, with `outputs` alone, the marker of a hook's output
        that could not be stored). If the store refuses (disk full) the write is kept, and
        `record_unrecorded` makes it later: a run is never left `running` for good. A write
        still kept for the run goes in with this one."""
        pending = self.unrecorded.pop(run_id, None)
        if pending is not None:
            outputs = [*pending.get("outputs", ()), *fields.get("outputs", ())]
            fields = {**pending, **fields, "outputs": outputs}
        try:
            self.store.update_run(run_id, **fields)
        except CronflowError:
            self.unrecorded[run_id] = fields

    def record_unrecorded(self) -> None:
        """Write the run ends the store refused before (raises CronflowError while it still
        refuses)."""
        for run_id, fields in list(self.unrecorded.items()):
            self.store.update_run(run_id, **fields)
            del self.unrecorded[run_id]

    async def execute_created(
        self, plan: FlowRun, flow_run_id: int, run_ids: dict[str, int]
    ) -> list[RunRecord]:
        """Run a recorded flow run to its end and return its runs as the store has them."""
        await self.run_created(plan, run_ids)
        return self.store.runs_in_flow_run(flow_run_id)

    async def run_created(self, plan: FlowRun, run_ids: dict[str, int]) -> dict[str, str]:
        """Run a recorded flow run to its end; how each job ended, as the engine decided it
        (a backfill reads the stored runs once at its end, not once per flow run)."""
        done: dict[str, asyncio.Future[str]] = {
            job: asyncio.get_running_loop().create_future() for job in plan.jobs
        }
        if len(plan.jobs) == 1 and plan.missed is None:
            # One job: run it in this task, so that its process starts before the loop turns
            # to the next fire's bookkeeping (many flows due at one instant).
            (job,) = plan.jobs
            await self._job(plan, job, run_ids[job], done)
        else:
            tasks = [
                asyncio.create_task(self._job(plan, job, run_ids[job], done), name=f"job:{job}")
                for job in plan.jobs
            ]
            if plan.missed is not None:  # the first catch-up run after missed fires
                tasks.append(asyncio.create_task(self.missed_hooks(plan, run_ids)))
            await asyncio.gather(*tasks)
        return {job: future.result() for job, future in done.items()}

    async def _job(
        self, plan: FlowRun, name: str, run_id: int, done: dict[str, asyncio.Future[str]]
    ) -> None:
        job = plan.config.jobs[name]
        status = "canceled"
        try:
            upstream = [await done[up] for up in job.after if up in done]
            if DETACHED in upstream:  # left to the next daemon with the job it waits for
                status = DETACHED
                raise Detached(name)
            # Upstreams outside this run count as satisfied, whatever run_if asks for.
            decision = flows.decide(job.run_if, upstream) if upstream else "run"
            if self.halting:
                status = "canceled"
                self._finish(run_id, name, status, None, note="stopped before it started")
            elif decision != "run":
                status = decision
                self._finish(run_id, name, status, None, note=_why_not(decision, job.after))
            elif (held := self.held_by_past(plan, job)) is not None:
                status = "skipped"
                self._finish(run_id, name, status, None, note=held)
            else:
                status = await self._job_run(_JobRun(self, plan, job, run_id))
        except Detached:
            status = DETACHED
            raise
        finally:
            done[name].set_result(status)

    async def _job_run(self, job_run: _JobRun) -> str:
        """Run one job; a store that refuses writes (disk full) fails it with the reason."""
        try:
            return await job_run.run()
        except CronflowError as exc:
            if job_run.ended:  # after its end (a hook's store error): that end stands
                return job_run.ended
            note = f"cronflow error: {exc.message}"
            now = self.clock.now()
            self.record_end(
                job_run.run_id, status="failed", finished_at=now, note=note,
                attempt=job_run.take_end(), outputs=job_run.take_output(),
            )  # fmt: skip
            self.observer.status(job_run.job.name, job_run.run_id, "failed", note)
            return "failed"
        except Exception as exc:  # a bug: never leave the run `running`, then show it
            with contextlib.suppress(Exception):
                if job_run.ended:
                    raise
                self.record_end(
                    job_run.run_id,
                    status="failed",
                    finished_at=self.clock.now(),
                    note=f"cronflow error: {exc!r}",
                    attempt=job_run.take_end(),
                    outputs=job_run.take_output(),
                )
            raise

    def held_by_past(self, plan: FlowRun, job: Job) -> str | None:
        """Why `job` may not start at this logical time under depends_on_past, or None.

        The previous fire is the schedule's (for a flow without one: the job's latest earlier
        logical time with a run). No run there at all (the first run, a pruned history, a
        `missed` record) holds nothing back; a run skipped by this very rule does.
        """
        if not job.depends_on_past or plan.ignore_past:
            return None
        flow = plan.config.flow_of(job.name)
        previous = flow.previous_fire(plan.logical_time) if flow.schedule else None
        if previous is None and (flow.schedule is None or flow.schedule.kind == "reboot"):
            previous = self.store.previous_logical_time(job.name, plan.logical_time)
        if previous is None:
            return None
        runs = [r for r in self.store.runs_at(job.name, previous) if r.status != "missed"]
        shown = previous.astimezone(job.timezone).isoformat()
        if not runs or any(r.status == "success" or _skipped_freely(r) for r in runs):
            return None
        if any(r.status in ("queued", "running", "retrying") for r in runs):
            return UNFINISHED_PAST.format(shown)
        return HELD_BY_PAST.format(shown)

    async def missed_hooks(self, plan: FlowRun, run_ids: Mapping[str, int]) -> None:
        """The `on_missed` hook of each root of `plan` that has one, kept with its run."""
        assert plan.missed is not None
        for name in plan.jobs:
            job = plan.config.jobs[name]
            if job.on_missed and not job.after and name in run_ids:
                await _JobRun(self, plan, job, run_ids[name]).missed_hook(plan.missed)

    def _finish(
        self, run_id: int, job: str, status: str, exit_code: int | None, note: str | None = None
    ) -> None:
        now = self.clock.now()
        self.record_end(run_id, status=status, finished_at=now, exit_code=exit_code, note=note)
        self.observer.status(job, run_id, status, note or "")

    def environment(
        self,
        job: Job,
        plan: FlowRun,
        run_id: int,
        attempt: int,
        here: bool = True,
        files: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The daemon's environment (for an attempt that runs here), then the `env_file`
        values (`files`, else read now), then `env`, then the CRONFLOW_* variables (SPEC §5).
        A worker lays it over its own environment."""
        logical = plan.logical_time.astimezone(job.timezone)
        if files is None:
            files = envfile.read_all(job.env_file)
        return {
            **(self._base_env if here else {}),
            **files,
            **job.env,
            "CRONFLOW_JOB": job.name,
            "CRONFLOW_RUN_ID": str(run_id),
            "CRONFLOW_ATTEMPT": str(attempt),
            "CRONFLOW_TRIGGER": plan.trigger if attempt == 1 else "retry",
            "CRONFLOW_LOGICAL_TIME": logical.isoformat(),
            "CRONFLOW_LOGICAL_DATE": logical.date().isoformat(),
        }


def marker(job: Job, run_id: int, logical_time: datetime, attempt: int | None) -> tuple[str, ...]:
    """Environment entries that mark the processes of a run (or of one of its attempts), even
    those that left its process group: run ids repeat across state folders, so the job and
    logical time are part of it."""
    entries = (
        f"CRONFLOW_RUN_ID={run_id}",
        f"CRONFLOW_JOB={job.name}",
        f"CRONFLOW_LOGICAL_TIME={logical_time.astimezone(job.timezone).isoformat()}",
    )
    return entries if attempt is None else (*entries, f"CRONFLOW_ATTEMPT={attempt}")


class _JobRun:
    """One job of one flow run: its attempts, waits between them, and hooks."""

    def __init__(self, engine: Engine, plan: FlowRun, job: Job, run_id: int) -> None:
        self.engine = engine
        self.plan = plan
        self.job = job
        self.run_id = run_id
        self.store = engine.store
        self.cpu = 0.0
        self.rss = 0
        self.host: str | None = None  # where the last attempt ran, when not here
        # The env_file values of the latest attempt (re-read at each one) and their mask: what
        # the job prints of them is stored and shown as ***, its hooks' output too.
        self.files: dict[str, str] = {}
        self.masker = envfile.Masker()
        # The end of the latest local attempt, not yet written: it goes in with the run's next
        # write (retrying, or its end), one transaction where there were two.
        self.pending_end: AttemptEnd | None = None
        # Markers of output the store refused until past the deadline: they go in with the
        # run's next write too. What was lost, over all attempts, fails the run (see `run`).
        self.pending_output: list[tuple[Any, ...]] = []
        self.lost_lines = 0
        self.lost_bytes = 0
        self.lost_reason = ""
        self.ended: str | None = None  # the status its end was recorded with (or kept to be)
        # A remote attempt stopped on its worker because its output could not be stored: the
        # run fails with the reason (it is not retried, as for any lost output).
        self.stopped_for_output = False

    def take_end(self) -> AttemptEnd | None:
        end, self.pending_end = self.pending_end, None
        return end

    def take_output(self) -> list[tuple[Any, ...]]:
        rows, self.pending_output = self.pending_output, []
        return rows

    async def _settle(self, sink: _OutputWriter) -> None:
        """The attempt's output stored in full, or its marker kept for the next write."""
        self.pending_output.extend(await sink.settle())
        if sink.lost_lines or sink.gave_up:
            self.lost_lines += sink.lost_lines
            self.lost_bytes += sink.lost_bytes
            self.lost_reason = sink.lost_reason

    def _with_loss(self, status: str, note: str | None) -> tuple[str, str | None]:
        """A job whose output could not be stored fails with the reason; its exit code, CPU
        and memory stay as they were. A run that failed anyway keeps its status."""
        if not self.lost_lines and not self.stopped_for_output:
            return status, note
        loss = f"cronflow error: {self.lost_reason}"
        if self.lost_lines:
            loss += f"; {_lines(self.lost_lines)} ({self.lost_bytes} bytes) of output not stored"
        if status == "success":
            return "failed", loss
        if self.stopped_for_output:  # cronflow stopped it: not the job's own end
            status = "failed"
        return status, f"{note}; {loss}" if note else loss

    def _read_env_files(self) -> None:
        """Read the job's env files now (a rotated token needs no reload); CronflowError if
        one is missing or unsafe."""
        self.files = envfile.read_all(self.job.env_file)
        self.masker = envfile.Masker.of(self.files)

    def _status(self, status: str, detail: str | None) -> None:
        """Tell the observer (live `run` output, the daemon's log), secrets masked."""
        detail = self.masker.mask_text(detail) or ""
        self.engine.observer.status(self.job.name, self.run_id, status, detail)

    async def run(self) -> str:
        job, engine = self.job, self.engine
        first_start: datetime | None = None
        result: AttemptResult | None = None
        attempts = self.plan.spent.get(job.name, 0)  # the budget spans lost-run recoveries
        attached = self.plan.attach.get(job.name)
        while attached or not engine.halting:
            if attached:  # a worker runs it still: follow it to its end, then go on as usual
                attempts, remote_id = attached
                attached = None
                result = await self._follow(attempts, remote_id)
            else:
                slots = engine.slots  # a reload may replace it: the slot goes back to its own
                if not await _acquire_unless(slots, engine.stop, engine.drain):
                    break
                try:
                    attempts += 1
                    result = await self._attempt(attempts)
                finally:
                    slots.release()
            first_start = first_start or result.started_at
            if result.status in ("success", "canceled") or attempts > job.retries:
                break
            if engine.halting:
                break
            wait = job.retry_wait(attempts)
            self.store.update_run(
                self.run_id,
                status="retrying",
                attempt=self.pending_end,
                outputs=self.pending_output,
            )
            self.pending_end = None  # written; a refused write leaves it to the failed end
            self.pending_output = []
            self._status("retrying", f"attempt {attempts} {result.status}; retry in {wait:g}s")
            await self._hook("on_retry", attempts, result)
            await _sleep_unless(wait, engine.stop, engine.drain)
        status = self._final_status(result, attempts)
        note = _failure_note(result, job) if status != "success" else None
        if result is not None and status == "canceled" and result.status != "canceled":
            note = f"stopped before a retry; last attempt: {note}"
        status, note = self._with_loss(status, note)
        note = self.masker.mask_text(note)
        engine.record_end(
            self.run_id,
            status=status,
            finished_at=engine.clock.now(),
            exit_code=result.exit_code if result else None,
            attempts=attempts,
            note=note,
            started_at=first_start,
            cpu_seconds=self.cpu if result else None,
            max_rss_kb=self.rss if result else None,
            attempt=self.take_end(),
            outputs=self.take_output(),
        )
        self.ended = status  # nothing may write another end over this one
        self._status(status, note)
        if result is not None:
            hook = "on_success" if status == "success" else "on_failure"
            await self._hook(hook, attempts, result, status)
        return status

    def _final_status(self, result: AttemptResult | None, attempts: int) -> str:
        if result is None:
            return "canceled"
        if result.status == "failed" and self.engine.stop.is_set():
            return "canceled"
        retry_due = result.status in ("failed", "timeout") and attempts <= self.job.retries
        if retry_due and self.engine.halting:  # stopped while a retry was still to come
            return "canceled"
        return result.status

    async def _attempt(self, attempt: int) -> AttemptResult:
        engine, job = self.engine, self.job
        engine.observer.status(job.name, self.run_id, "running", f"attempt {attempt}")
        queue = "local" if engine.force_local else self.plan.config.queue_of(job.name)
        here = queue == "local"
        if not here and engine.remote is None:
            now = engine.clock.now()
            problem = engine.remote_problem or "remote execution is not set up"
            return AttemptResult("failed", None, now, now, None, None, b"", problem)
        try:
            self._read_env_files()
        except CronflowError as exc:  # the attempt fails with the reason; retries apply
            now = engine.clock.now()
            return AttemptResult("failed", None, now, now, None, None, b"", exc.message)
        command = Command(
            argv=job.argv(),
            env=engine.environment(job, self.plan, self.run_id, attempt, here, self.files),
            cwd=job.workdir,
            timeout=job.timeout,
            kill_grace=job.kill_grace,
            max_log_bytes=job.max_log_bytes,
            marker=marker(job, self.run_id, self.plan.logical_time, attempt),
        )
        with _OutputWriter(engine, job.name, self.run_id, attempt, masker=self.masker) as sink:
            if here:
                result = await engine._run(
                    command, sink.add, engine.stop, engine.clock, on_start=self._started(attempt)
                )
            else:
                with sink.following():
                    result = await self._send(command, queue, attempt, sink)
                self.stopped_for_output = sink.gave_up and result.status == "canceled"
            await self._settle(sink)
        return await self._ended(attempt, result)

    def _started(self, attempt: int) -> Callable[[int | None, int | None], None]:
        def started(pgid: int | None, pgid_start: int | None) -> None:
            # Recorded with its process group: a daemon starting after a crash finds it.
            self.store.start_attempt(
                self.run_id, attempt, self.engine.clock.now(), pgid, pgid_start
            )

        return started

    async def _send(
        self, command: Command, queue: str, attempt: int, sink: _OutputWriter
    ) -> AttemptResult:
        """The attempt on a worker of `queue`: `queued` until one takes it."""
        assert self.engine.remote is not None
        return await self.engine.remote.run(
            command,
            sink.add,
            self.engine.stop,
            queue=queue,
            queue_timeout=self.job.queue_timeout,
            about={"job": self.job.name, "run_id": self.run_id, "attempt": attempt},
            on_sent=lambda remote_id: self.store.queue_remote_attempt(
                self.run_id, attempt, self.engine.clock.now(), remote_id, queue
            ),
            on_start=sink.deferring(self._remote_started(attempt)),
            flush=sink.commit,
        )

    def _remote_started(self, attempt: int) -> OnRemoteStart:
        def started(
            host: str, pgid: int | None, pgid_start: int | None, at: datetime | None
        ) -> None:
            at = at or self.engine.clock.now()  # the worker's clock, as for the attempt's end
            self.store.attempt_started_remote(self.run_id, attempt, at, host, pgid, pgid_start)
            self._status("running", f"on {host}")

        return started

    async def _follow(self, attempt: int, remote_id: str) -> AttemptResult:
        """An attempt a previous daemon sent: follow it to its end (see FlowRun.attach)."""
        assert self.engine.remote is not None
        with contextlib.suppress(CronflowError):  # unreadable now: nothing more to mask by
            self._read_env_files()
        with _OutputWriter(
            self.engine, self.job.name, self.run_id, attempt, masker=self.masker
        ) as sink:
            with sink.following():
                result = await self.engine.remote.attach(
                    remote_id,
                    self.job.kill_grace,
                    sink.add,
                    self.engine.stop,
                    flush=sink.commit,
                    on_start=sink.deferring(self._remote_started(attempt)),
                    stored=self.store.output_count(self.run_id, attempt),
                )
            self.stopped_for_output = sink.gave_up and result.status == "canceled"
            await self._settle(sink)
        return await self._ended(attempt, result)

    async def _ended(self, attempt: int, result: AttemptResult) -> AttemptResult:
        end = AttemptEnd(
            attempt,
            result.finished_at,
            result.status,
            result.exit_code,
            result.cpu_seconds,
            result.max_rss_kb,
        )
        if result.settle is None:
            self.pending_end = end
        elif await self._store_end(end):  # remote: the broker may forget the attempt only now
            await result.settle()
        self.cpu += result.cpu_seconds or 0.0
        self.rss = max(self.rss, result.max_rss_kb or 0)
        self.host = result.host or self.host
        return result

    async def _store_end(self, end: AttemptEnd) -> bool:
        """A remote attempt's end (and the marker of its lost output) stored now, or within
        `output_deadline` while the store refuses, as for its output. Past that it goes in with
        the run's next write (which `record_end` keeps until the store takes it) and False:
        the worker's last events stay unacknowledged, so a daemon that dies meanwhile finds
        the attempt unfinished and follows it again."""
        engine = self.engine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + engine.output_deadline
        while True:
            try:
                self.store.update_run(self.run_id, attempt=end, outputs=self.pending_output)
            except CronflowError as exc:
                left = deadline - loop.time()
                if left <= 0 or engine.stop.is_set():
                    self.pending_end = end
                    self._status("end_refused", f"attempt {end.number}: {exc.message}")
                    return False
                await _sleep_unless(min(engine.output_retry, left), engine.stop)
                continue
            self.pending_output = []
            return True

    async def _hook(
        self, hook: str, attempt: int, result: AttemptResult, status: str | None = None
    ) -> None:
        """Run a hook; its output is stored, and it can never change the run (SPEC §5)."""
        if not getattr(self.job, hook):
            return
        try:
            await self._run_hook(hook, attempt, result, status)
        except CronflowError as exc:  # the store refused a write: the run's status stands
            self._status("hook_failed", f"{hook} cronflow error: {exc.message}")

    async def _run_hook(
        self, hook: str, attempt: int, result: AttemptResult, status: str | None
    ) -> None:
        # The env files as the attempt it follows saw them: a hook is the alert, it runs even
        # when they became unreadable since.
        env = self.engine.environment(self.job, self.plan, self.run_id, attempt, files=self.files)
        tail = self.masker.mask_tail(result.tail, cut=len(result.tail) >= TAIL_BYTES)
        env.update(
            CRONFLOW_STATUS=status or result.status,
            CRONFLOW_EXIT_CODE="" if result.exit_code is None else str(result.exit_code),
            CRONFLOW_DURATION=f"{(result.finished_at - result.started_at).total_seconds():.3f}",
            CRONFLOW_LOG_TAIL=tail.decode("utf-8", "replace"),
            CRONFLOW_HOST=result.host or _this_host(),
        )
        await self._run_hook_with(hook, attempt, env)

    async def missed_hook(self, missed: MissedFires) -> None:
        """`on_missed`, kept with this run as attempt 0 (no attempt ran for missed fires)."""
        zone = self.job.timezone
        env = self.engine.environment(self.job, self.plan, self.run_id, 1)
        env.update(
            CRONFLOW_ATTEMPT="0",
            CRONFLOW_STATUS="missed",
            CRONFLOW_EXIT_CODE="",
            CRONFLOW_DURATION="0",
            CRONFLOW_LOG_TAIL="",
            CRONFLOW_HOST=_this_host(),
            CRONFLOW_MISSED_COUNT=str(missed.count),
            CRONFLOW_MISSED_FROM=missed.first.astimezone(zone).isoformat(),
            CRONFLOW_MISSED_TO=missed.last.astimezone(zone).isoformat(),
        )
        try:
            await self._run_hook_with("on_missed", 0, env)
        except CronflowError as exc:  # the store refused a write: logged, nothing else changes
            note = f"on_missed cronflow error: {exc.message}"
            self.engine.observer.status(self.job.name, self.run_id, "hook_failed", note)

    async def _run_hook_with(self, hook: str, attempt: int, env: dict[str, str]) -> None:
        """Run hook `hook` of the job with `env`; its output and exit code are stored."""
        text = getattr(self.job, hook)
        engine = self.engine
        hook_id = self.store.start_hook(self.run_id, attempt, hook, engine.clock.now())
        command = Command(
            argv=[self.job.shell, "-c", text],
            env=env,
            cwd=self.job.workdir,
            timeout=HOOK_TIMEOUT,
            kill_grace=HOOK_KILL_GRACE,
            max_log_bytes=self.job.max_log_bytes,
        )
        # A hook is not stopped by a shutdown: it is short, bounded, and often the alert. Who
        # asked for the stop hears why it does not happen at once.
        wait = f"waiting for its {hook} hook to end, at most {HOOK_TIMEOUT:g} s"
        engine.stop.watch(hook_id, lambda: self._status("stopping", wait))
        try:
            with _OutputWriter(
                engine, f"{self.job.name}:{hook}", self.run_id, attempt, hook_id, masker=self.masker
            ) as sink:
                outcome = await engine._run(command, sink.add, None, engine.clock)
                marker = await sink.settle()
        finally:
            engine.stop.unwatch(hook_id)
        if marker:  # a hook's lost output is marked; it never changes the run (SPEC §5)
            engine.record_end(self.run_id, outputs=marker)
        self.store.finish_hook(hook_id, outcome.finished_at, outcome.exit_code)
        if outcome.status != "success":
            self._status("hook_failed", f"{hook} {_failure_note(outcome)}")


class _OutputWriter:
    """Batches output lines into the store: at most every FLUSH_SECONDS, and at the end.

    Every line, from this machine or a worker, passes here: `masker` writes *** in place of
    env_file values before anything stores or shows it.

    A write the store refuses (disk full, locked past the busy timeout) is handled here, in
    the timer that made it: the lines are held (at most HELD_BYTES, the oldest dropped first)
    and written again every `output_retry` seconds; the observer hears one line when the store
    first refuses them and one when it takes them again. Dropped lines are never a silent
    gap: a marker line saying how many, and why, is stored in their place.

    While an attempt runs on a worker (`following`), the follower's batch `commit` alone
    writes: its events are acknowledged only once the store has them, so `add` neither
    writes nor drops on its own; a refused batch stays held, unacknowledged, until a later
    commit stores it or `output_deadline` of refusals gives it up.
    """

    def __init__(
        self,
        engine: Engine,
        label: str,
        run_id: int,
        attempt: int,
        hook_id: int | None = None,
        masker: envfile.Masker | None = None,
    ) -> None:
        self.engine = engine
        self.masker = masker
        self.label = label
        self.run_id = run_id
        self.attempt = attempt
        self.hook_id = hook_id
        self.rows: collections.deque[tuple[Any, ...]] = collections.deque()
        self.held = 0  # bytes in `rows`, ROW_COST each more
        self.timer: asyncio.TimerHandle | None = None
        self.refused: str | None = None  # why the store refuses our writes, while it does
        self.refusals = 0
        # Lines dropped since the last stored marker (the gap), and in all (for the run).
        self.gap_lines = 0
        self.gap_bytes = 0
        self.gap_at: datetime | None = None
        self.lost_lines = 0
        self.lost_bytes = 0
        self.lost_reason = ""
        # Following a worker: the batch commit decides (see `commit`).
        self.remote = False
        self.refused_since: float | None = None  # when the store began refusing commits
        self.next_try = 0.0
        self.gave_up = False  # a commit gave up what was held past the deadline
        self.given_up: list[tuple[Any, ...]] = []  # the marker standing for it
        # Writes of the follower's events the store refused (a worker's start), made before
        # the held lines at the next write.
        self.pending: list[Callable[[], None]] = []

    @contextlib.contextmanager
    def following(self) -> Any:
        """While a worker runs the attempt: only `commit` writes."""
        self.remote = True
        try:
            yield
        finally:
            self.remote = False

    def deferring(self, write: Callable[..., None]) -> Callable[..., None]:
        """`write` (a store write a worker's event asks for), made now or, if the store
        refuses it, held and made first by the next write: the follower's commit then says
        whether the batch was stored."""

        def call(*args: Any) -> None:
            if not self.pending:
                try:
                    write(*args)
                    return
                except CronflowError as exc:
                    self._refused(exc.message)
            self.pending.append(lambda: write(*args))

        return call

    def add(self, stream: str, at: datetime, data: bytes) -> None:
        if self.masker:
            data = self.masker.mask(data)
        self.rows.append((self.run_id, self.attempt, stream, at, data, self.hook_id))
        self.held += len(data) + ROW_COST
        self.engine.observer.output(self.label, stream, data)
        if self.remote:  # the follower commits each batch of events, or holds it
            return
        if self.refused is None and (len(self.rows) >= FLUSH_ROWS or self.held >= FLUSH_BYTES):
            self.flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
        if self.held > HELD_BYTES:
            self._drop_oldest()

    def flush(self) -> None:
        """Write the held lines now; if the store refuses, try again in `output_retry`."""
        self._cancel_timer()
        if not self._write():
            self.timer = asyncio.get_running_loop().call_later(self.engine.output_retry, self.flush)

    def commit(self) -> bool:
        """A worker's batch of events: write what is held now. True once the store has it
        (only then may the events be acknowledged); False if it refuses: the rows stay held,
        and the follower calls again at its next turn (the store is tried at most every
        `output_retry`). After `output_deadline` of refusals in a row what is held is given
        up: raises OutputLost, and `given_up` is its marker, for the attempt's end."""
        self._cancel_timer()
        now = asyncio.get_running_loop().time()
        if self.refused is None or now >= self.next_try:
            if self._write():
                self.refused_since = None
                return True
            self.next_try = now + self.engine.output_retry
        if self.refused_since is None:
            self.refused_since = now
        if now - self.refused_since < self.engine.output_deadline:
            return False
        reason = self.lost_reason
        self.pending.clear()  # the attempt's end stands for its start
        self.given_up.extend(self._give_up())
        self.gave_up = True
        self.refused_since = None
        if self.lost_lines:
            reason += f"; {_lines(self.lost_lines)} ({self.lost_bytes} bytes) of output not stored"
        raise OutputLost(reason)

    async def settle(self) -> list[tuple[Any, ...]]:
        """At the end: write what is held, trying again for up to `output_deadline` while
        the store refuses (less if the run is being stopped). Then give it up: returns the
        marker row that stands for it (to go in with the run's next write), or []."""
        self._cancel_timer()
        engine = self.engine
        loop = asyncio.get_running_loop()
        deadline = loop.time() + engine.output_deadline
        given_up, self.given_up = self.given_up, []
        while not self._write():
            left = deadline - loop.time()
            if left <= 0 or engine.stop.is_set():
                self.pending.clear()
                return [*given_up, *self._give_up()]
            await _sleep_unless(min(engine.output_retry, left), engine.stop)
        return given_up

    def _write(self) -> bool:
        """Store the held lines (after a marker for dropped ones); False if refused."""
        if not self.rows and not self.gap_lines and not self.pending:
            return True
        rows = [*self._gap_marker(), *self.rows]
        try:
            while self.pending:
                self.pending[0]()
                self.pending.pop(0)
            self.engine.store.add_outputs(rows)
        except CronflowError as exc:
            self._refused(exc.message)
            return False
        self.rows.clear()
        self.held = 0
        self.gap_lines = self.gap_bytes = 0
        self.gap_at = None
        if self.refused is not None:
            self._tell("output_stored", f"after {_count(self.refusals, 'refused write')}")
            self.refused = None
            self.refusals = 0
        return True

    def _refused(self, reason: str) -> None:
        self.refusals += 1
        self.lost_reason = reason
        if reason != self.refused:  # one line while the same refusal repeats
            self._tell(
                "output_refused",
                f"{reason}; {_lines(len(self.rows))} held, tried again every"
                f" {self.engine.output_retry:g}s",
            )
        self.refused = reason

    def _drop_oldest(self) -> None:
        while self.held > HELD_BYTES and len(self.rows) > 1:
            self._drop(self.rows.popleft())

    def _drop(self, row: tuple[Any, ...]) -> None:
        data = row[4]
        self.held -= len(data) + ROW_COST
        self.gap_lines += 1
        self.gap_bytes += len(data)
        self.gap_at = self.gap_at or row[3]
        self.lost_lines += 1
        self.lost_bytes += len(data)

    def _gap_marker(self) -> list[tuple[Any, ...]]:
        """The marker line standing for the lines dropped since the last one, if any."""
        if not self.gap_lines:
            return []
        text = (
            f"[cronflow: {_lines(self.gap_lines)} ({self.gap_bytes} bytes) of output not"
            f" stored: {self.lost_reason}]\n"
        )
        return [(self.run_id, self.attempt, "marker", self.gap_at, text.encode(), self.hook_id)]

    def _give_up(self) -> list[tuple[Any, ...]]:
        """Drop every held line; the marker that stands for them."""
        while self.rows:
            self._drop(self.rows.popleft())
        self.held = 0
        marker = self._gap_marker()
        if marker:
            self._tell(
                "output_lost",
                f"{_lines(self.gap_lines)} ({self.gap_bytes} bytes) of output not stored:"
                f" {self.lost_reason}",
            )
        self.gap_lines = self.gap_bytes = 0
        self.gap_at = None
        return marker

    def _tell(self, what: str, detail: str) -> None:
        self.engine.observer.status(self.label, self.run_id, what, detail)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def __enter__(self) -> _OutputWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """After `settle` nothing is left; on the way out of an error, one last try, and
        what the store still refuses is marked with the run's end. A worker's attempt left
        to the next daemon (Detached) keeps nothing: what was not stored was not
        acknowledged either, and comes again to that daemon."""
        self._cancel_timer()
        if not self._write():
            self.pending.clear()
            if kind is not None and issubclass(kind, Detached):
                self.rows.clear()
                self.held = 0
                return
            self.engine.record_end(self.run_id, outputs=self._give_up())


async def _until(
    events: Sequence[asyncio.Event], *also: asyncio.Future[Any], timeout: float | None = None
) -> bool:
    """Wait until one of `events` is set, one of `also` is done, or `timeout` passed; True if
    an event is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([*waits, *also], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return any(e.is_set() for e in events)


async def _sleep_unless(seconds: float, *events: asyncio.Event) -> bool:
    """Sleep `seconds`, or until one of `events` is set; True if one was."""
    return any(e.is_set() for e in events) or await _until(events, timeout=seconds)


async def _acquire_unless(slots: asyncio.Semaphore, *events: asyncio.Event) -> bool:
    """Take a slot, unless one of `events` is set first; True if the slot was taken."""
    if any(e.is_set() for e in events):
        return False
    if not slots.locked():  # a free slot is taken at once, without yielding to the loop
        await slots.acquire()
        return True
    take = asyncio.ensure_future(slots.acquire())
    if not await _until(events, take):
        return True
    if take.done() and not take.cancelled():
        slots.release()  # taken in the same instant as the event: give it back
    else:
        take.cancel()  # the semaphore passes a slot it was about to give on to the next
    return False


def _this_host() -> str:
    import socket

    return socket.gethostname()


def _skipped_freely(run: RunRecord) -> bool:
    """A skipped run that does not hold the next fire back: not one held back itself."""
    held = HELD_BY_PAST.split("(")[0]
    return run.status == "skipped" and not (run.note or "").startswith(held)


def _why_not(decision: str, after: Sequence[str]) -> str:
    if decision == "upstream_failed":
        return f"an upstream failed ({', '.join(after)})"
    return "run_if cannot hold"


def _failure_note(result: AttemptResult | None, job: Job | None = None) -> str | None:
    """Why an attempt failed, in the user's words: exit code, signal, timeout."""
    if result is None or result.status == "success":
        return None
    if result.error:
        return result.error
    if result.status == "timeout":
        limit = f" after {job.timeout:g}s" if job and job.timeout else ""
        return f"timed out{limit} (exit {result.exit_code})"
    if result.status == "canceled":
        return "canceled"
    code = result.exit_code
    if code is not None and code > 128:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(code - 128).name} (exit {code})"
    return f"exit code {code}"


def _lines(count: int) -> str:
    return _count(count, "line")


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
