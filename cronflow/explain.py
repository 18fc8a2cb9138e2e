"""`cronflow why JOB [--at T]`: the reasons a fire did or did not run (or will), as sentences.

Built from the job file as it is now, the runs, the daemon's recorded starts, stops and sleeps,
and the pause log. Each reason is one sentence; `--json` prints them with their kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any

from cronflow.errors import CronflowError

if TYPE_CHECKING:
    from cronflow.config import Config, Flow, Job
    from cronflow.records import RunRecord
    from cronflow.store import Store

_TICK = timedelta(microseconds=1)
_SLOT_WAIT = 1.0  # a run that waited longer than this for a slot says so


@dataclass(frozen=True)
class Reason:
    kind: str  # schedule | dst | future | paused | disabled | unseen | daemon | asleep |
    # catchup | run | attempt | hook | skipped | upstream | queued | none
    message: str
    at: datetime | None = None
    run_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "at": self.at.isoformat() if self.at else None,
            "run_id": self.run_id,
        }


def latest_due(config: Config, job: str, now: datetime) -> datetime:
    """The job's latest fire at or before now (the default TIME of `why`)."""
    flow = config.flow_of(config.job(job).name)
    fire = flow.previous_fire(now + _TICK)
    if fire is None:
        raise CronflowError(f"{job} has no fire at or before now; give a time with --at")
    return fire


def explain(
    config: Config, store: Store | None, name: str, at: datetime, now: datetime, running: bool
) -> list[Reason]:
    """Every reason, in the order a reader follows them: schedule, then what happened."""
    job = config.job(name)
    flow = config.flow_of(name)
    reasons, fires = _schedule(flow, job, at)
    runs = store.runs_at(name, at) if store else []
    if runs:
        return reasons + [r for run in runs for r in _run(config, store, job, run)]
    if not fires:
        return reasons
    if at > now:
        return reasons + _future(config, store, job, flow, at, running)
    return reasons + _absent(config, store, job, flow, at, now)


# --- the schedule ------------------------------------------------------------------------------


def _schedule(flow: Flow, job: Job, at: datetime) -> tuple[list[Reason], bool]:
    """Whether the flow's schedule fires at `at`; if not, the fires around it and why."""
    zone = flow.timezone
    if flow.schedule is None:
        text = f"{job.name} has no schedule: its flow ({flow.name}) runs only by hand"
        return [Reason("schedule", text)], False
    sched = flow.schedule
    whose = "its" if job.name in flow.roots else f"its flow's ({flow.name})"
    reasons = _dst(zone, at)
    if flow.previous_fire(at + _TICK) == at:
        text = f"{whose} schedule {sched.text!r} ({sched.describe()}) fires at {_t(at, zone)}"
        return [Reason("schedule", text, at), *reasons], True
    before, after = flow.previous_fire(at), flow.next_fire(at)
    fields = sched.excluded_by(at, zone)
    named = [f"its {f} field ({sched.field_text(f) or '…'})" for f in fields]
    text = f"{whose} schedule {sched.text!r} ({sched.describe()}) does not fire at {_t(at, zone)}"
    if len(named) == 1:
        text += f": {named[0]} excludes it"
    elif named:  # "its minute field (0) and its hour field (6) exclude it"
        text += f": {', '.join(named[:-1])} and {named[-1]} exclude it"
    around = [f"the fire before was {_t(before, zone)}" if before else "there is no fire before",
              f"the next is {_t(after, zone)}" if after else "there is none after"]  # fmt: skip
    return [Reason("schedule", text, at), Reason("schedule", "; ".join(around)), *reasons], False


def _dst(zone: tzinfo, at: datetime) -> list[Reason]:
    """A daylight-saving change within three hours of `at`, named with its wall times."""
    moment = at.astimezone(UTC)  # arithmetic on instants, not on wall times
    lo, hi = moment - timedelta(hours=3), moment + timedelta(hours=3)
    early, late = lo.astimezone(zone).utcoffset(), hi.astimezone(zone).utcoffset()
    if early is None or late is None or early == late:
        return []
    while hi - lo > timedelta(minutes=1):  # the instant of the change, to the minute
        mid = lo + (hi - lo) / 2
        lo, hi = (mid, hi) if mid.astimezone(zone).utcoffset() == early else (lo, mid)
    change = hi.astimezone(UTC).replace(tzinfo=None)
    old, new = change + early, change + late  # the wall clock just before, and just after
    name = getattr(zone, "key", str(zone))
    when = f"on {old:%Y-%m-%d} at {old:%H:%M} the {name} clocks go"
    if late > early:
        text = (f"{when} forward to {new:%H:%M}: wall times from {old:%H:%M} to {new:%H:%M} do"
                f" not exist (a fixed-time job's fire in the gap runs once at {new:%H:%M},"
                " a clock-following one has none)")  # fmt: skip
    else:
        text = (f"{when} back to {new:%H:%M}: {new:%H:%M} to {old:%H:%M} happens twice"
                " (a fixed-time job fires at its first occurrence only, a clock-following"
                " one in both)")  # fmt: skip
    return [Reason("dst", text, at)]


# --- a fire with runs ---------------------------------------------------------------------------


def _run(config: Config, store: Store | None, job: Job, run: RunRecord) -> list[Reason]:
    assert store is not None
    zone = job.timezone
    started = f", started {_t(run.started_at, zone)}" if run.started_at else ""
    text = f"run {run.run_id} ({run.trigger}) ended {run.status}{started}"
    if run.status in ("queued", "running", "retrying"):
        text = f"run {run.run_id} ({run.trigger}) is {run.status}{started}"
    reasons = [Reason("run", text, run.logical_time, run.run_id)]
    reasons += _held(config, store, job, run)
    for attempt in store.attempts(run.run_id):
        code = f", exit {attempt.exit_code}" if attempt.exit_code is not None else ""
        host = f" on {attempt.host}" if attempt.host else ""
        message = f"attempt {attempt.number}{host}: {attempt.status}{code}"
        reasons.append(Reason("attempt", message, attempt.started_at, run.run_id))
    for hook in store.hooks(run.run_id):
        ended = "still running" if hook.finished_at is None else f"exit {hook.exit_code}"
        reasons.append(Reason("hook", f"the {hook.hook} hook ran ({ended})", hook.started_at,
                              run.run_id))  # fmt: skip
    if run.note and run.status in ("failed", "timeout", "lost", "canceled", "missed"):
        reasons.append(Reason("run", f"note: {run.note}", None, run.run_id))
    return reasons


def _held(config: Config, store: Store, job: Job, run: RunRecord) -> list[Reason]:
    """Why a run did not start, or started late: overlap, past, upstreams, run_if, slots."""
    note = run.note or ""
    if run.status == "skipped" and "overlap" in note:
        text = "skipped: the previous run of its flow was still going (overlap = skip)"
        return [Reason("skipped", text, None, run.run_id)]
    if run.status == "skipped" and note.startswith("previous run ("):
        return [Reason("skipped", f"skipped by depends_on_past: {note}", None, run.run_id)]
    if run.status in ("upstream_failed", "skipped") and job.after:
        siblings = {r.job: r for r in store.runs_in_flow_run(run.flow_run_id)}
        ups = ", ".join(f"{u} {siblings[u].status}" for u in job.after if u in siblings)
        text = f"held by its upstreams ({ups}): run_if = {job.run_if} cannot hold"
        return [Reason("upstream", text, None, run.run_id)]
    if run.status == "queued" and run.attempts == 0:
        limit = config.daemon.max_parallel
        text = f"waiting for a slot: max_parallel = {limit} jobs run at once"
        return [Reason("queued", text, None, run.run_id)]
    created = store.created_at(run.run_id)
    if created and run.started_at and not job.after:
        waited = (run.started_at - created).total_seconds()
        if waited > _SLOT_WAIT:
            text = f"waited {waited:.0f}s for a slot (max_parallel = {config.daemon.max_parallel})"
            return [Reason("queued", text, None, run.run_id)]
    return []


# --- a fire without runs -------------------------------------------------------------------------


def _absent(
    config: Config, store: Store | None, job: Job, flow: Flow, at: datetime, now: datetime
) -> list[Reason]:
    zone = job.timezone
    none = Reason("none", f"no run of {job.name} is recorded for {_t(at, zone)}", at)
    if store is None:
        return [none]
    for pause in store.pause_log(flow.jobs):
        if pause.paused_at <= at and (pause.resumed_at is None or at <= pause.resumed_at):
            until = f" until {_t(pause.resumed_at, zone)}" if pause.resumed_at else " (still)"
            text = (f"its flow was paused by {pause.job} from {_t(pause.paused_at, zone)}{until}:"
                    " paused fires are neither run nor recorded as missed")  # fmt: skip
            return [none, Reason("paused", text, pause.paused_at)]
    if not job.enabled:
        text = f"{job.name} is disabled (enabled = false): the daemon does not fire it"
        return [none, Reason("disabled", text)]
    seen = store.get_state("seen:" + job.name)
    if seen and datetime.fromisoformat(seen) > at:
        text = f"the daemon first saw {job.name} at {_t(datetime.fromisoformat(seen), zone)}"
        return [none, Reason("unseen", text)]
    down = _daemon_at(store, at, zone)
    if down:
        return [none, *down, *_catchup(config, store, job, flow, at, now)]
    return [none]


def _daemon_at(store: Store, at: datetime, zone: tzinfo) -> list[Reason]:
    """Whether the daemon was down or asleep at `at`, from its recorded starts, stops, sleeps."""
    events = store.daemon_log()
    for e in events:
        if e.event == "asleep" and e.until and e.at <= at <= e.until:
            text = (f"the machine was asleep (or the clock jumped) from {_t(e.at, zone)} to "
                    f"{_t(e.until, zone)}: the daemon did not see the fire on time")  # fmt: skip
            return [Reason("asleep", text, e.at)]
    before = [e for e in events if e.event in ("start", "stop") and e.at <= at]
    after = next((e for e in events if e.event == "start" and e.at > at), None)
    if before and before[-1].event == "start":
        return []  # running at that time
    again = f"; it started again {_t(after.at, zone)}" if after else "; it has not started since"
    if not before:
        return [Reason("daemon", f"the daemon had not run before {_t(at, zone)}{again}")]
    stopped = before[-1]
    return [Reason("daemon", f"the daemon was not running: it stopped {_t(stopped.at, zone)}"
                   f"{again}", stopped.at)]  # fmt: skip


def _catchup(
    config: Config, store: Store, job: Job, flow: Flow, at: datetime, now: datetime
) -> list[Reason]:
    """What `catchup` did with the missed fire (the flow's first scheduled root's rule): the
    first catch-up record after it."""
    rule = next(config.jobs[r].catchup for r in flow.roots if config.jobs[r].schedule)
    later = [r for r in store.runs_between(flow.roots, at, now) if r.trigger == "catchup"]
    if not later:
        return [Reason("catchup", f"missed; catchup = {rule}, nothing recorded for it yet")]
    first = later[0]
    if first.status == "missed":
        text = f"recorded missed (catchup = {rule}): run {first.run_id}, {first.note}"
        hooks = [h for h in store.hooks(first.run_id) if h.hook == "on_missed"]
        reasons = [Reason("catchup", text, first.logical_time, first.run_id)]
        return reasons + [Reason("hook", f"the on_missed hook ran (exit {h.exit_code})",
                                 h.started_at, first.run_id) for h in hooks]  # fmt: skip
    text = (f"missed; catchup = {rule} ran only the newest missed fire, "
            f"{_t(first.logical_time, job.timezone)} (run {first.run_id}, {first.status})")
    return [Reason("catchup", text, first.logical_time, first.run_id)]


# --- a fire to come ------------------------------------------------------------------------------


def _future(
    config: Config, store: Store | None, job: Job, flow: Flow, at: datetime, running: bool
) -> list[Reason]:
    zone = job.timezone
    reasons = [Reason("future", f"{_t(at, zone)} is still to come", at)]
    paused = store.paused_jobs() if store else set()
    holder = next((j for j in flow.jobs if j in paused), None)
    if holder:
        text = f"it will not fire unless resumed: its flow is paused by {holder}"
        reasons.append(Reason("paused", text))
    if not job.enabled:
        reasons.append(Reason("disabled", f"{job.name} is disabled (enabled = false)"))
    if not running:
        reasons.append(Reason("daemon", "no daemon runs now: it fires only if one runs then"))
    if job.depends_on_past:
        before = flow.previous_fire(at)
        if before is not None:
            text = f"depends_on_past: it runs only if the run for {_t(before, zone)} succeeds"
            reasons.append(Reason("future", text, before))
    if len(reasons) == 1:
        reasons.append(Reason("future", "the daemon will fire it then"))
    return reasons


def _t(moment: datetime | None, zone: tzinfo) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(zone).isoformat()

