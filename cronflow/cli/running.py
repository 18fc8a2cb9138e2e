"""The commands that run things or change what the daemon does: run (and backfill), daemon,
pause, resume, trigger, ui, prune and worker."""

import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cronflow import render
from cronflow.cli import (
    ConcurrencyOption,
    ConfigOption,
    QueueOption,
    _load,
    _now,
    _open_store,
    _open_store_if_exists,
    _parse,
    _Paths,
    _queues,
    app,
)
from cronflow.errors import CronflowError

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.store import Store


@app.command()
def run(
    job: Annotated[str, typer.Argument(help="The job to run; jobs after it run too.")],
    only: Annotated[bool, typer.Option("--only", help="Run JOB alone.")] = False,
    at: Annotated[str | None, typer.Option("--at", help="Logical time (ISO 8601).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Backfill from (ISO 8601).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Backfill to, inclusive.")] = None,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Backfill: also rerun times that succeeded before.")
    ] = False,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, help="Backfill: flow runs at once.")
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Backfill: list the logical times only.")
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run every job here, whatever its queue.")
    ] = False,
    ignore_past: Annotated[
        bool,
        typer.Option("--ignore-past", help="Run jobs with depends_on_past whatever came before."),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run JOB's flow from JOB now, in the foreground; or backfill with --from/--to."""
    from cronflow import manual
    from cronflow.units import parse_time

    cfg = _load(config)
    zone = cfg.flow_of(cfg.job(job).name).timezone
    if (start is None) != (end is None):
        raise CronflowError("a backfill needs both --from and --to", 2)
    if start is not None and end is not None:
        if at is not None:
            raise CronflowError("--at cannot be combined with --from/--to", 2)
        first = _parse(parse_time, start, zone, option="--from")
        last = _parse(parse_time, end, zone, option="--to")
        raise typer.Exit(
            _backfill(cfg, job, only, first, last, rerun, parallel, dry_run, local, ignore_past)
        )
    if dry_run or rerun or parallel != 1:
        raise CronflowError("--dry-run, --rerun and --parallel need --from and --to", 2)
    moment = _now().replace(microsecond=0)
    if at is not None:
        moment = _parse(parse_time, at, zone, option="--at")
    plan = manual.plan(cfg, job, only, moment, "manual", ignore_past)
    with _open_store() as store:
        _recover(store, cfg)
        outcome = manual.run_plans(
            store,
            [plan],
            max_parallel=cfg.daemon.max_parallel,
            observer=render.LiveOutput(prefix=len(plan.jobs) > 1),
            local=local,
        )
    render.run_summary(outcome.runs)
    raise typer.Exit(outcome.exit_code)


def _backfill(
    cfg: "Config",
    job: str,
    only: bool,
    first: datetime,
    last: datetime,
    rerun: bool,
    parallel: int,
    dry_run: bool,
    local: bool,
    ignore_past: bool = False,
) -> int:
    from cronflow import manual

    times = manual.backfill_times(cfg, job, first, last)
    template = manual.plan(cfg, job, only, first, "backfill", ignore_past)
    with _open_store() as store:
        skip = set() if rerun else manual.already_done(store, template, times)
        todo = [t for t in times if t not in skip]
        if dry_run:
            for moment in times:
                render.line(moment.isoformat() + ("  (done, skipped)" if moment in skip else ""))
            return 0
        _recover(store, cfg)
        if skip:
            render.warn(
                f"skipping {len(skip)} logical times that succeeded before "
                "(--rerun to run them again)"
            )
        plans = manual.at_times(template, todo)
        progress = render.BackfillProgress(len(plans), cfg.flow_of(job).timezone)
        try:
            outcome = manual.run_plans(
                store,
                plans,
                max_parallel=cfg.daemon.max_parallel,
                flows_at_once=manual.flows_at_once(template, parallel),
                on_flow_done=progress.flow_done,
                local=local,
            )
        finally:
            progress.close()
    if outcome.signal is None:
        render.line(
            f"backfill: {len(plans)} flow runs, {progress.failures} failed, "
            f"{len(skip)} skipped as done"
        )
    else:
        import signal

        began = len({run.flow_run_id for run in outcome.runs})
        render.line(
            f"backfill stopped ({signal.Signals(outcome.signal).name}): {began} of {len(plans)}"
            f" flow runs began, {progress.failures} failed or canceled,"
            f" {len(plans) - began} not started, {len(skip)} skipped as done"
        )
    return outcome.exit_code


def _recover(store: "Store", cfg: "Config") -> None:
    """Runs of `cronflow run`s that died become `lost` before this one runs anything. A store
    that refuses the writes (disk full, locked) is a warning: the run goes on, as it would have."""
    from cronflow import manual

    try:
        manual.recover(store, cfg, _now(), tell=render.warn)
    except CronflowError as exc:
        render.warn(f"could not mark the runs of dead cronflow processes lost: {exc.message}")


@app.command()
def daemon(config: ConfigOption = None) -> None:
    """Run the scheduler in the foreground (logs to stderr); SIGTERM stops it gracefully."""
    # The same process (PID) goes on as the daemon's lean entry point, which never imports
    # typer, click or rich: about 8 MB less for as long as the daemon runs.
    state = _Paths.state_dir()
    _open_store().close()  # a state folder or database problem is reported here, as before
    # The job starter is compiled here on a first run, not inside the daemon's event loop.
    from cronflow import spawn

    spawn.helper_path()
    # -P: the working folder is not put on sys.path, so a `cronflow` folder there (a source
    # checkout, or anything else) is never what runs as the daemon.
    argv = ["-P", "-m", "cronflow.daemon_process", str(_Paths.config(config)), str(state)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *argv])


@app.command()
def pause(
    job: Annotated[str, typer.Argument(help="A job of the flow to pause.")],
    config: ConfigOption = None,
) -> None:
    """Stop the daemon firing JOB's flow (kept across restarts); manual runs still work."""
    cfg = _load(config)
    flow = cfg.flow_of(cfg.job(job).name)
    with _open_store() as store:
        store.set_paused([job], True, _now())
    held = "" if flow.name == job else f" (held by {job} for as long as it is in the flow)"
    render.line(f"paused flow {flow.name}{held}")


@app.command()
def resume(
    job: Annotated[str, typer.Argument(help="A job of the flow to resume.")],
    config: ConfigOption = None,
) -> None:
    """Let the daemon fire JOB's flow again, from the next fire on."""
    cfg = _load(config)
    flow = cfg.flow_of(cfg.job(job).name)
    with _open_store() as store:
        store.set_paused(flow.jobs, False, _now())  # whichever of its jobs held it
    render.line(f"resumed flow {flow.name}" + ("" if flow.name == job else f" (of {job})"))


@app.command()
def trigger(
    job: Annotated[str, typer.Argument(help="The job to start; jobs after it run too.")],
    at: Annotated[str | None, typer.Option("--at", help="Logical time (ISO 8601).")] = None,
    only: Annotated[bool, typer.Option("--only", help="Run JOB alone.")] = False,
    config: ConfigOption = None,
) -> None:
    """Ask the running daemon to start JOB's flow now (or for --at); print the run ids."""
    from cronflow import trigger as triggering
    from cronflow.units import parse_time

    cfg = _load(config)
    zone = cfg.flow_of(cfg.job(job).name).timezone
    moment = _now().replace(microsecond=0)
    if at is not None:
        moment = _parse(parse_time, at, zone, option="--at")
    state = _Paths.state_dir()
    if triggering.daemon_pid(state) is None:  # before opening (and maybe creating) the database
        raise CronflowError(triggering.NO_DAEMON.format(job=job))
    with _open_store() as store:
        sent = triggering.request(store, cfg, state, job, moment, only=only, now=_now())
        taken = triggering.wait(store, sent.request_id)
        runs = triggering.runs_of(store, taken) if taken else []
    if taken is None:
        render.warn(
            f"request {sent.request_id} sent, but the daemon (pid {sent.pid}) has not taken it"
            f" within {triggering.WAIT_SECONDS:g}s; it starts the flow at its next wake-up"
            " (see `cronflow history`)"
        )
        return
    if taken.note is not None:
        raise CronflowError(f"the daemon (pid {sent.pid}) did not start it: {taken.note}")
    render.line(
        f"the daemon (pid {sent.pid}) started flow {cfg.flow_of(job).name} at"
        f" {moment.astimezone(zone).isoformat()} (manual)"
    )
    for run_record in runs:
        render.line(f"run {run_record.run_id}  {run_record.job}")


@app.command()
def ui(config: ConfigOption = None) -> None:
    """Full-screen dashboard: flows ON/OFF, the run grid, live logs; trigger and clear."""
    from cronflow.ui import run_ui

    run_ui(_Paths.config(config), _Paths.state_dir())


@app.command()
def prune(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="A duration like 30d (default: keep_history, else 90d)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Drop runs and their logs that finished before a cutoff, now."""
    from datetime import timedelta

    from cronflow.config import DaemonSettings
    from cronflow.units import format_duration, parse_duration

    keep = DaemonSettings().keep_history
    if older_than is not None:
        keep = _parse(parse_duration, older_than, option="--older-than")
        if keep == 0:  # as keep_history = 0, zero never means "delete everything"
            raise CronflowError("--older-than: must be more than 0", 2)
    elif _Paths.config(config).exists():
        keep = _load(config).daemon.keep_history
    if keep is None:
        render.line("keep_history = 0 keeps every run: nothing pruned (use --older-than)")
        return
    store = _open_store_if_exists(readonly=False)
    removed = store.prune(_now() - timedelta(seconds=keep)) if store else 0
    render.line(f"pruned {removed} runs older than {format_duration(keep)}")


@app.command()
def worker(
    queue: QueueOption = None,
    concurrency: ConcurrencyOption = 1,
    stop_timeout: Annotated[
        str,
        typer.Option(
            "--stop-timeout", help="On SIGTERM, give running attempts this long, then stop them."
        ),
    ] = "60s",
    hostname: Annotated[
        str | None,
        typer.Option(
            "--hostname",
            help="The name `workers`, `history` and `logs` show (default: this machine's).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run a Celery worker that runs attempts sent to its queues (needs cronflow[celery])."""
    from cronflow.units import parse_duration
    from cronflow.worker import run_worker

    seconds = _parse(parse_duration, stop_timeout, option="--stop-timeout")
    run_worker(_Paths.config(config), _queues(queue), concurrency, seconds, hostname)
