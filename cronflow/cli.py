"""The command line: parse arguments, call the core, hand results to render. Nothing else."""

import contextlib
import copy
import gc
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cronflow import __version__, render
from cronflow.errors import ConfigError, CronflowError, NoJobFile

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.store import Store

app = typer.Typer(
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion: bash, zsh, fish
    no_args_is_help=True,
    help="cronflow: cron schedules with flows, retries, history and logs.",
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Job file (default: $CRONFLOW_CONFIG, else $XDG_CONFIG_HOME/cronflow/cronflow.toml).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
QueueOption = Annotated[
    list[str] | None,
    typer.Option(
        "--queue",
        "-Q",
        help="Take attempts from this queue (repeatable, or a,b; default: default).",
        show_default=False,
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="Attempts run at once.")
]


class _Paths:
    """Where the job file and the state live, resolved once per command."""

    config_override: Path | None = None
    #: Whether -c chose the job file: then a hint to create it must carry the same -c.
    config_flag: bool = False

    @classmethod
    def config(cls, override: Path | None = None) -> Path:
        cls.config_flag = bool(override or cls.config_override)
        chosen = override or cls.config_override or os.environ.get("CRONFLOW_CONFIG")
        if chosen:
            return Path(chosen).expanduser().absolute()
        if folder := _xdg_folder("XDG_CONFIG_HOME", ".config"):
            return folder / "cronflow.toml"
        from platformdirs import user_config_path

        return user_config_path("cronflow", appauthor=False) / "cronflow.toml"

    @staticmethod
    def state_dir() -> Path:
        chosen = os.environ.get("CRONFLOW_STATE_DIR")
        if chosen:
            return Path(chosen).expanduser().absolute()
        if folder := _xdg_folder("XDG_STATE_HOME", ".local/state"):
            return folder
        from platformdirs import user_state_path

        return user_state_path("cronflow", appauthor=False)


def _xdg_folder(variable: str, under_home: str) -> Path | None:
    """platformdirs' answer on Linux in the plain cases, without importing it (7 ms, most of it
    the tempfile module it imports): `$variable/cronflow` when the variable is an absolute
    path, else `$HOME/under_home/cronflow` when HOME is absolute. None otherwise, and on any
    other system: then platformdirs decides (tests/test_cli.py compares the two)."""
    if sys.platform != "linux" or "ANDROID_DATA" in os.environ:
        return None
    base = os.environ.get(variable, "")
    if not base.startswith("/"):
        home = os.environ.get("HOME", "")
        if not home.startswith("/"):
            return None
        base = os.path.join(home, under_home)
    return Path(base, "cronflow")


def _version(value: bool) -> None:
    if value:
        print(f"cronflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: ConfigOption = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """cronflow: cron schedules with flows, retries, history and logs."""
    _Paths.config_override = config


def _load(config: Path | None) -> "Config":
    from cronflow.config import load_config

    return load_config(_Paths.config(config))


def _now() -> datetime:
    from cronflow.clock import Clock

    return Clock().now()


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check the job file; print every problem with file:line (exit 2 if any)."""
    from cronflow.config import env_file_problems, parse_config, read_job_file

    path = _Paths.config(config)
    text = read_job_file(path)
    cfg = parse_config(text, str(path))
    if problems := env_file_problems(cfg, text):  # read at each run; checked here too
        raise ConfigError(problems)
    render.line(f"OK: {cfg.size()} ({cfg.path})")


@app.command("list")
def list_jobs(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Jobs: schedule, its meaning, timezone, next fire, last status, upstreams, paused."""
    from cronflow import overview

    cfg = _load(config)
    views = overview.jobs(cfg, _now(), _open_store_if_exists(readonly=True))
    if as_json:
        render.print_json([v.to_json() for v in views])
    else:
        render.job_table(views, _now())


@app.command("next")
def next_fires(
    job: Annotated[str, typer.Argument(help="A job of the flow.")],
    count: Annotated[int, typer.Option("-n", min=1, max=10_000, help="How many fires.")] = 5,
    start: Annotated[
        str | None, typer.Option("--from", help="Start after this time (ISO 8601).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The next N fire times of the job's flow after now (or --from), in its zone."""
    from cronflow.units import parse_time

    cfg = _load(config)
    flow = cfg.flow_of(cfg.job(job).name)
    after = _now()
    if start is not None:
        after = _parse(parse_time, start, flow.timezone, option="--from")
    fires = flow.next_fires(after, count)
    if as_json:
        render.print_json([f.isoformat() for f in fires])
    elif flow.schedule is None:
        render.warn(f"{job} has no schedule: its flow ({flow.name}) runs only by hand")
    else:
        for fire in fires:
            render.line(fire.isoformat())


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


def _open_store() -> "Store":
    from cronflow.store import Store

    return Store(_Paths.state_dir() / "cronflow.db")


@app.command()
def history(
    job: Annotated[str | None, typer.Argument(help="Only this job's runs.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="A duration (2h, 7d) or an ISO 8601 time.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=1_000_000, help="At most this many runs.")
    ] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Runs, newest first: id, job, logical time, trigger, status, attempts, start, duration."""
    from cronflow.config import local_zone
    from cronflow.units import parse_since

    if status is not None and status not in STATUSES:
        raise CronflowError(f"--status: unknown status {status!r}; one of {', '.join(STATUSES)}", 2)
    zone = local_zone()
    moment = None if since is None else _parse(parse_since, since, _now(), zone, option="--since")
    store = _open_store_if_exists(readonly=True)
    if job is not None:
        _check_job_known(job, store, config)
    runs = store.history(job, status, moment, limit) if store else []
    if as_json:
        render.print_json([r.to_json() for r in runs])
    else:
        render.history_table(runs, zone)


def _check_job_known(job: str, store: "Store | None", config: Path | None) -> None:
    """Refuse (exit 1, with a did-you-mean) a job neither in the job file nor in the history.

    The history counts: a removed job's runs stay readable. A job file that is missing or
    broken just adds no names, so the history stays readable without one.
    """
    from cronflow.config import suggest

    if store is not None and store.latest_run(job) is not None:
        return  # one indexed lookup: `history JOB` stays fast, the job file is not even read
    path = _Paths.config(config)
    try:
        names = set(_load(config).jobs)
    except CronflowError:
        names = set()
    if job in names:
        return
    names |= store.job_names() if store else set()
    raise CronflowError(f"no job named {job!r} in {path} or in the history{suggest(job, names)}")


STATUSES = (
    "queued",
    "running",
    "retrying",
    "success",
    "failed",
    "timeout",
    "canceled",
    "skipped",
    "upstream_failed",
    "missed",
    "lost",
)


@app.command()
def logs(
    target: Annotated[
        str, typer.Argument(metavar="JOB|RUN_ID", help="A job (its latest run) or a run id.")
    ],
    attempt: Annotated[
        int | None, typer.Option("--attempt", min=1, max=1_000_000, help="Only this attempt.")
    ] = None,
    stream: Annotated[str | None, typer.Option("--stream", help="out or err.")] = None,
    lines: Annotated[
        int | None, typer.Option("-n", min=0, max=100_000_000, help="Only the last LINES lines.")
    ] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Follow a running run until it ends.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Output of the latest run of JOB (or of RUN_ID), attempt by attempt, hooks included."""
    from cronflow import logview

    if stream not in (None, "out", "err"):
        raise CronflowError(f"--stream: must be out or err, got {stream!r}", 2)
    store = _open_store_if_exists(readonly=True)
    if not target.isdigit():
        _check_job_known(target, store, config)
    run = logview.find_run(store, target)
    view = logview.LogView(store, run, attempt=attempt, stream=stream)
    if attempt is not None and not view.attempts and not follow:
        raise CronflowError(f"run {run.run_id} has no attempt {attempt} ({run.attempts} so far)")
    render.log_lines(view.lines(last=lines), view.zone_hint)
    if follow:
        final = logview.follow(view, render.log_lines)
        raise typer.Exit(1 if final.status in logview.FAILED else 0)


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
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Daemon running or not, the job file's error if any, running jobs, next fires."""
    from cronflow import overview
    from cronflow.config import load_config, local_zone
    from cronflow.lock import running_daemon_pid

    path = _Paths.config(config)
    pid = running_daemon_pid(_Paths.state_dir() / "cronflow.lock")
    try:
        store = _open_store_if_exists(readonly=True)
    except CronflowError as exc:  # status answers even when the database cannot be opened
        render.warn(exc.message)
        store = None
    state = store.get_state if store else (lambda key: None)
    cfg, error = None, None
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        error = "; ".join(str(p) for p in exc.problems)
    except CronflowError as exc:
        error = exc.message
    now = _now()
    views = overview.jobs(cfg, now, store) if cfg else []
    report = {
        "daemon": {
            "running": pid is not None,
            "pid": pid,
            "since": state("daemon:since") if pid else None,
            "config": (state("daemon:config") if pid else None) or str(path),
            "config_error": error,
        },
        "running": [r.to_json() for r in store.active_runs()] if store else [],
        "next": sorted(
            ({"job": v.name, "next_fire": v.next_fire.isoformat()} for v in views if v.next_fire),
            key=lambda n: n["next_fire"],
        ),
        "recent_failures": [r.to_json() for r in store.recent_failures(5)] if store else [],
        "paused": _paused_flows(cfg, views),
    }
    if cfg is not None and cfg.executor.kind == "celery":  # never loads Celery otherwise
        report |= _workers_report(cfg)
    if as_json:
        render.print_json(report)
    else:
        render.status_report(report, local_zone(), now)


@app.command()
def why(
    job: Annotated[str, typer.Argument(help="The job to explain.")],
    at: Annotated[
        str | None, typer.Option("--at", help="The fire time (default: its latest due fire).")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Why JOB ran, did not run, or will run at a time, in sentences."""
    from cronflow import explain
    from cronflow.lock import running_daemon_pid
    from cronflow.units import parse_time

    cfg = _load(config)
    zone = cfg.flow_of(cfg.job(job).name).timezone
    now = _now()
    moment = explain.latest_due(cfg, job, now) if at is None else \
        _parse(parse_time, at, zone, option="--at")  # fmt: skip
    running = running_daemon_pid(_Paths.state_dir() / "cronflow.lock") is not None
    store = _open_store_if_exists(readonly=True)
    reasons = explain.explain(cfg, store, job, moment, now, running)
    if as_json:
        render.print_json([r.to_json() for r in reasons])
    else:
        render.reasons(reasons)


@app.command()
def check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """For monitors: exit 0 all well, 1 a job overdue or failing, 2 daemon down or bad file."""
    from cronflow import health
    from cronflow.config import local_zone
    from cronflow.lock import running_daemon_pid

    cfg, error = health.load(_Paths.config(config))
    running = running_daemon_pid(_Paths.state_dir() / "cronflow.lock") is not None
    store = _open_store_if_exists(readonly=True)
    report = health.check(cfg, error, running, store, _now(), local_zone())
    if as_json:
        render.print_json(report.to_json())
    else:
        render.check_report(report)
    raise typer.Exit(report.exit_code)


def _workers_report(cfg: "Config") -> dict[str, Any]:
    """The `status` section on remote execution: the broker (masked) and the live workers.

    `status` answers whatever the broker does: an unreachable one is a note, not an error.
    """
    from cronflow.remote import live_workers
    from cronflow.units import mask_url, mask_urls

    broker = cfg.executor.broker_url(os.environ)
    report: dict[str, Any] = {"broker": mask_url(broker) if broker else None}
    try:
        return report | {"workers": live_workers(cfg), "workers_error": None}
    except CronflowError as exc:
        return report | {"workers": [], "workers_error": mask_urls(exc.message)}


def _paused_flows(cfg: "Config | None", views: list[Any]) -> list[dict[str, str]]:
    """Each paused flow once, with the job whose pause holds it."""
    if cfg is None:
        return []
    held = {v.name: v.paused_by for v in views if v.paused_by}
    return [{"flow": f.name, "job": held[f.jobs[0]]} for f in cfg.flows if f.jobs[0] in held]


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


@app.command()
def workers(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Live workers: their queues, what each runs now, their last heartbeat."""
    from cronflow.config import local_zone
    from cronflow.remote import live_workers

    cfg = _load(config)
    if cfg.executor.kind != "celery":
        raise CronflowError(f'no workers without [executor] kind = "celery" in {cfg.path}')
    found = live_workers(cfg)
    if as_json:
        render.print_json(found)
    else:
        render.workers_table(found, local_zone(), _now())


def _queues(given: list[str] | None) -> list[str]:
    """--queue values (repeated, or a,b) in order, once each; "local" is not a worker's."""
    from cronflow.config import LOCAL_QUEUE, QUEUE_RE

    names = [q.strip() for value in given or ["default"] for q in value.split(",") if q.strip()]
    for name in names:
        if not QUEUE_RE.fullmatch(name):
            raise CronflowError(
                f"--queue: {name!r} is not a queue name (letters, digits, '_', '.' and '-', "
                "starting with a letter or digit)",
                2,
            )
        if name == LOCAL_QUEUE:
            raise CronflowError("--queue: local means the daemon's own process, not a worker", 2)
    return list(dict.fromkeys(names)) or ["default"]


systemd_app = typer.Typer(help="Run the daemon or a worker under systemd.", no_args_is_help=True)
app.add_typer(systemd_app, name="systemd")


@systemd_app.command("install")
def systemd_install(
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the unit, write nothing.")
    ] = False,
    worker: Annotated[
        bool, typer.Option("--worker", help="The unit of `cronflow worker` instead.")
    ] = False,
    queue: QueueOption = None,
    concurrency: ConcurrencyOption = 1,
    config: ConfigOption = None,
) -> None:
    """Write the systemd user unit for `cronflow daemon` (or `worker`); say how to enable it."""
    from cronflow import systemd

    if not worker and (queue or concurrency != 1):
        raise CronflowError("--queue and --concurrency are for --worker", 2)
    path = _Paths.config(config)
    executable = _this_cronflow()
    if worker:
        text = systemd.worker_unit_text(executable, str(path), _queues(queue), concurrency)
        _install_unit(text, systemd.WORKER_UNIT_NAME, print_only)
        return
    stop_timeout = 60.0
    with contextlib.suppress(CronflowError):  # a broken job file still gets a unit
        stop_timeout = _load(config).daemon.stop_timeout
    # The resolved state folder, so the daemon writes where this user's commands read,
    # whatever CRONFLOW_STATE_DIR or XDG_STATE_HOME say in this shell.
    text = systemd.unit_text(executable, str(path), str(_Paths.state_dir()), stop_timeout)
    _install_unit(text, systemd.UNIT_NAME, print_only)


def _install_unit(text: str, name: str, print_only: bool) -> None:
    """Print the unit, or write it where systemd finds the user's units and say what next."""
    from cronflow import systemd

    if print_only:
        render.line(text.rstrip("\n"))
        return
    unit = systemd.unit_path(_xdg_config_home(), name)
    try:
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(text)
    except OSError as exc:
        raise CronflowError(f"{exc.filename or unit}: cannot write: {exc.strerror}") from None
    render.line(f"wrote {unit}")
    render.line(systemd.install_hint(name.removesuffix(".service")))


def _this_cronflow() -> str:
    """The absolute path of the `cronflow` program running now."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "cronflow" and argv0.exists():
        return str(argv0.absolute())
    beside = Path(sys.executable).parent / "cronflow"
    if beside.exists():
        return str(beside)
    raise CronflowError("cannot find the cronflow program; run this as `cronflow`, installed")


def _same_config_flag(path: Path | str) -> str:
    """` -c PATH` when -c chose the job file, for a hint naming a command to type next."""
    if not _Paths.config_flag:
        return ""
    import shlex

    return f" -c {shlex.quote(str(path))}"


def _xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


@app.command()
def init(config: ConfigOption = None) -> None:
    """Write a commented starter job file at the config path; never overwrites."""
    from cronflow import editing

    path = _Paths.config(config)
    editing.write_new(path, editing.STARTER)
    render.line(f"wrote {path}")
    given = _same_config_flag(path)
    render.line(
        f"next: `cronflow add{given} NAME --command CMD --schedule S`, or `cronflow edit{given}`"
    )


@app.command()
def add(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new job's name.")],
    command: Annotated[str, typer.Option("--command", help="What to run (by the shell).")],
    schedule: Annotated[
        str | None, typer.Option("--schedule", help='"0 3 * * *", "@daily", "@every 15m"...')
    ] = None,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="Run after this job (repeatable, or a,b).")
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Extra attempts after a failure.")
    ] = None,
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Per attempt: 90s, 1h30m, or seconds.")
    ] = None,
    on_failure: Annotated[
        str | None, typer.Option("--on-failure", help="Shell command run when the job fails.")
    ] = None,
    description: Annotated[
        str | None, typer.Option("--description", help="Shown by `cronflow list`.")
    ] = None,
    retry_delay: Annotated[
        str | None, typer.Option("--retry-delay", help="Wait before the first retry (30s).")
    ] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help="IANA zone the schedule is read in.")
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("--workdir", help="Folder the job runs in.")
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="KEY=VALUE for the job (repeatable).")
    ] = None,
    env_file: Annotated[
        list[str] | None,
        typer.Option("--env-file", help="A dotenv file of secrets, masked in logs (repeatable)."),
    ] = None,
    overlap: Annotated[str | None, typer.Option("--overlap", help="skip, queue or allow.")] = None,
    catchup: Annotated[str | None, typer.Option("--catchup", help="none, latest or all.")] = None,
    run_if: Annotated[
        str | None, typer.Option("--run-if", help="success, failure or always.")
    ] = None,
    on_success: Annotated[
        str | None, typer.Option("--on-success", help="Shell command run when the job succeeds.")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Any job key (repeatable): retry_backoff=1.5."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the table it would add; write nothing.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Add a job to the job file, keeping the rest as it is.

    Adds [jobs.NAME] (the file is created if missing); the result is validated before an
    atomic write. Keys without an option of their own: --set KEY=VALUE, where VALUE is read as
    TOML when it parses as TOML (3, true, ["a"]), else as a string; env.PATH=/usr/bin sets one
    variable.
    """
    from cronflow import editing, setting
    from cronflow.config import read_job_file

    path = _Paths.config(config)
    exists = path.exists()
    text = read_job_file(path) if exists else ""
    upstreams = tuple(a.strip() for value in after or () for a in value.split(",") if a.strip())
    named = {  # the options for keys that NewJob has no field of its own for
        "retry_delay": int(retry_delay) if retry_delay and retry_delay.isdigit() else retry_delay,
        "timezone": timezone,
        "workdir": workdir,
        "overlap": overlap,
        "catchup": catchup,
        "run_if": run_if,
        "on_success": on_success,
        "env_file": env_file[0] if env_file and len(env_file) == 1 else env_file or None,
    }
    given = [((key,), value) for key, value in named.items() if value is not None]
    for entry in env or ():
        variable, eq, value = entry.partition("=")
        if not eq:
            raise CronflowError(f"--env: expected KEY=VALUE, got {entry!r}", 2)
        given.append((("env", variable), value))  # always a string: env values are
    taken = {k[0] for k, _ in given} | {
        key
        for key, value in (
            ("command", command), ("schedule", schedule), ("after", after), ("retries", retries),
            ("timeout", timeout), ("on_failure", on_failure), ("description", description),
        )
        if value
    }  # fmt: skip
    for each in setting.parse_assignments(sets or ()):
        if each.key[0] in taken and not (each.key[0] == "env" and len(each.key) > 1):
            raise CronflowError(f"--set: {each.name} is also given as an option", 2)
        given.append((each.key, each.value))
    job = editing.NewJob(
        name, command, schedule, upstreams, retries, timeout, on_failure, description,
        extra=tuple(given),
    )  # fmt: skip
    result = editing.add_job(text, job, str(path))
    if dry_run:
        render.line(editing.job_block(job).rstrip("\n"))
        return
    if exists:
        editing.write_atomic(path, result, expected=text)
    else:
        editing.write_new(path, result)
    render.line(f"added job {name} to {path}")
    _nudge_daemon()


@app.command("set")
def set_keys(
    name: Annotated[str, typer.Argument(metavar="JOB", help="The job to change.")],
    assignments: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE...", help="Keys to set.", show_default=False)
    ],
    config: ConfigOption = None,
) -> None:
    """Set keys of a job, validated, keeping the rest of the file.

    VALUE is read as TOML when it parses as TOML (3, true, ["a", "b"]), else as a string
    (90s, /usr/bin). A dotted KEY sets one entry of a table: env.PATH=/usr/bin. The result is
    validated first and written atomically; every other byte of the file stays as it was.
    """
    from cronflow import editing, setting
    from cronflow.config import read_job_file

    path = _Paths.config(config)
    text = read_job_file(path)
    result = setting.set_keys(text, name, setting.parse_assignments(assignments, "set"), str(path))
    editing.write_atomic(path, result, expected=text)
    render.line(f"changed job {name} in {path}")
    _nudge_daemon()


@app.command("unset")
def unset_keys(
    name: Annotated[str, typer.Argument(metavar="JOB", help="The job to change.")],
    keys: Annotated[
        list[str], typer.Argument(metavar="KEY...", help="Keys to remove.", show_default=False)
    ],
    config: ConfigOption = None,
) -> None:
    """Remove keys from a job, back to their defaults.

    The result is validated first (`command` cannot go) and written atomically.
    """
    from cronflow import editing, setting
    from cronflow.config import read_job_file

    path = _Paths.config(config)
    text = read_job_file(path)
    parsed = list(dict.fromkeys(setting.parse_key(k, "unset") for k in keys))
    editing.write_atomic(path, setting.unset_keys(text, name, parsed, str(path)), expected=text)
    render.line(f"changed job {name} in {path}")
    _nudge_daemon()


@app.command()
def remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The job to remove.")],
    config: ConfigOption = None,
) -> None:
    """Remove [jobs.NAME] (refused while other jobs name it in `after`)."""
    from cronflow import editing
    from cronflow.config import read_job_file

    path = _Paths.config(config)
    text = read_job_file(path)
    editing.write_atomic(path, editing.remove_job(text, name, str(path)), expected=text)
    render.line(f"removed job {name} from {path}")
    _nudge_daemon()


@app.command()
def edit(config: ConfigOption = None) -> None:
    """Open the job file in $VISUAL/$EDITOR (else vi); save it only when it is valid."""
    from cronflow import editor as session

    path = _Paths.config(config)
    editor = session.editor_command(os.environ)
    outcome = session.edit_job_file(
        path, lambda copy: session.run_editor(editor, copy), render.ask_edit_again
    )
    if not outcome.saved:
        render.line(f"no changes; {path} is unchanged")
        return
    render.line(f"saved {path}")
    _nudge_daemon()


def _nudge_daemon() -> None:
    """SIGHUP a running daemon so a changed job file applies now, not at its next check."""
    import signal

    from cronflow.lock import running_daemon_pid

    pid = running_daemon_pid(_Paths.state_dir() / "cronflow.lock")
    if pid is None or pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return
    render.line(f"the running daemon (pid {pid}) reloads it now")


@app.command("import-crontab")
def import_crontab(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FILE|-]",
            help="A crontab file, or - for stdin (default: the output of `crontab -l`).",
        ),
    ] = None,
    write: Annotated[bool, typer.Option("--write", help="Add the jobs to the job file.")] = False,
    system: Annotated[
        bool | None,
        typer.Option(
            "--system/--user",
            help="The file has a user column, like /etc/crontab (default: detected).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Turn a crontab into jobs: print the TOML, or add it to the job file with --write."""
    from cronflow import crontab, editing
    from cronflow.config import parse_config, read_job_file

    path = _Paths.config(config)
    exists = write and path.exists()
    existing = read_job_file(path) if exists else ""
    taken = set(parse_config(existing, str(path)).jobs) if existing else set()
    result = crontab.import_crontab(_crontab_text(source), system=system, existing_names=taken)
    for skipped in result.skipped:
        render.warn(f"{source or 'crontab -l'}:{skipped.line}: not imported: {skipped.reason}")
    if not write:
        sys.stdout.write(result.toml if result.toml.endswith("\n") else result.toml + "\n")
        return
    text = editing.append_block(existing, result.toml)
    parse_config(text, str(path))  # always valid by construction; never write one that isn't
    if exists:
        editing.write_atomic(path, text, expected=existing)
    else:
        editing.write_new(path, text)
    render.line(f"added {len(result.jobs)} jobs to {path}")
    _nudge_daemon()


def _crontab_text(source: str | None) -> str:
    """The crontab to import: a file, stdin, or `crontab -l`.

    Bytes that are not UTF-8 are kept as surrogate escapes, never replaced: the importer
    reports their lines and keeps them escaped instead of changing a command silently.
    """
    import subprocess

    if source == "-":
        return sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    if source is not None:
        try:
            return Path(source).read_bytes().decode("utf-8", "surrogateescape")
        except OSError as exc:
            raise CronflowError(f"{source}: cannot read: {exc.strerror}", 2) from None
    try:
        listed = subprocess.run(["crontab", "-l"], capture_output=True, check=False)
    except FileNotFoundError:
        raise CronflowError("no `crontab` command here; pass a FILE, or - for stdin") from None
    if listed.returncode != 0:
        reason = listed.stderr.decode(errors="replace").strip() or f"exit {listed.returncode}"
        raise CronflowError(f"crontab -l: {reason}")
    return listed.stdout.decode("utf-8", "surrogateescape")


def _parse(parser: Callable[..., Any], text: str, *args: Any, option: str) -> Any:
    """Run a units parser on a command-line value; a bad value is a usage error (exit 2)."""
    try:
        return parser(text, *args)
    except ValueError as exc:
        raise CronflowError(f"{option}: {exc}", 2) from None


def _open_store_if_exists(*, readonly: bool) -> "Store | None":
    """The state database, or None when nothing has been recorded yet (then nothing is created).

    The commands that only show things open it `readonly`: they never write, so they work on
    a read-only database or state folder, and never change the schema.
    """
    path = _Paths.state_dir() / "cronflow.db"
    try:
        if path.stat().st_size == 0:  # created by a writer that has not set it up yet
            return None
    except FileNotFoundError:
        return None
    from cronflow.store import Store

    return Store(path, readonly=readonly)


# One line each in `cronflow --help` (click cuts longer first sentences with "..."), and an
# example at the end of each command's own --help. A new command adds its entry here;
# tests/test_help.py checks that every command has both and that the list fits 80 columns.
SHORT_HELP = {
    "validate": "Check the job file, every problem with file:line",
    "list": "Jobs, their schedules, next fires and last status",
    "next": "The next fire times of a job's flow",
    "run": "Run a job's flow now, or backfill a time range",
    "history": "Past runs, newest first",
    "logs": "Output of a job's latest run, or of a run",
    "daemon": "Run the scheduler in the foreground",
    "status": "Daemon, job file, running jobs, failures, next fires",
    "pause": "Stop the daemon firing a job's flow",
    "resume": "Let the daemon fire a paused flow again",
    "prune": "Drop old runs and their logs now",
    "worker": "Run a Celery worker for remote attempts",
    "workers": "Live workers and what they run",
    "init": "Write a commented starter job file",
    "add": "Add a job (any key: --set KEY=VALUE)",
    "set": "Set keys of a job: set backup retries=3",
    "unset": "Remove keys from a job",
    "remove": "Remove a job",
    "edit": "Edit the job file; saved only when valid",
    "import-crontab": "Turn a crontab into jobs",
    "systemd": "Run the daemon or a worker under systemd",
    "systemd install": "Write the systemd user unit",
    "why": "Why a job ran or did not run at a time",
    "check": "Exit 0 if all is well: for monitors",
    "trigger": "Ask the running daemon to start a flow",
    "ui": "The dashboard: flows, run grid, live logs",
}
EXAMPLES = {
    "validate": "cronflow validate",
    "list": "cronflow list --json",
    "next": "cronflow next backup -n 3 --from 2026-03-28",
    "run": "cronflow run extract --from 2026-11-01 --to 2026-11-07 --parallel 4",
    "history": "cronflow history backup --status failed --since 7d",
    "logs": "cronflow logs backup -n 50 -f",
    "daemon": "cronflow daemon",
    "status": "cronflow status",
    "pause": "cronflow pause backup",
    "resume": "cronflow resume backup",
    "prune": "cronflow prune --older-than 30d",
    "worker": "cronflow worker --queue gpu --concurrency 2",
    "workers": "cronflow workers",
    "why": "cronflow why backup --at 2026-11-29T03:00",
    "check": "cronflow check --json",
    "trigger": "cronflow trigger extract --at 2026-11-29",
    "ui": "cronflow ui",
    "init": "cronflow init",
    "add": "cronflow add backup --command 'restic backup ~/docs' --schedule @daily \\\n"
    "      --retries 2 --set retry_backoff=1.5 --env-file ~/.config/restic.env",
    "set": "cronflow set backup retries=3 timeout=2h env.RESTIC_REPOSITORY=/srv/restic",
    "unset": "cronflow unset backup timeout env.DEBUG",
    "remove": "cronflow remove backup",
    "edit": "EDITOR=nano cronflow edit",
    "import-crontab": "crontab -l | cronflow import-crontab - --write",
    "systemd install": "cronflow systemd install --print",
}


def _command_name(info: Any) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def _add_short_helps_and_examples() -> None:
    """Fill in SHORT_HELP and EXAMPLES on the registered commands (before typer builds them)."""
    groups = [("", app), *((f"{g.name} ", g.typer_instance) for g in app.registered_groups)]
    for prefix, group in groups:
        for info in group.registered_commands:
            name = prefix + _command_name(info)
            info.short_help = info.short_help or SHORT_HELP.get(name)
            if name in EXAMPLES and not info.epilog:
                info.epilog = f"\b\nExample:\n  {EXAMPLES[name]}"
    for g in app.registered_groups:
        g.short_help = g.short_help or SHORT_HELP.get(g.name or "")


_add_short_helps_and_examples()

# Commands whose first argument is a job: the shell completes it with the job file's names.
JOB_ARGUMENT_COMMANDS = (
    "run", "logs", "history", "pause", "resume", "remove", "why", "next", "set", "unset",
    "trigger",
)  # fmt: skip


def _complete_job(ctx: typer.Context, incomplete: str) -> list[str]:
    """Job names from the job file (--config on the line, else the default one) that start
    with what is typed. Runs on every <Tab>: reads the file with tomli alone, never the
    store, rich or the schedule parser, and fails silently (a completion has no error)."""
    import tomli

    given = ctx.params.get("config") or (ctx.parent.params.get("config") if ctx.parent else None)
    try:
        jobs = tomli.loads(_Paths.config(given).read_text()).get("jobs", {})
    except (OSError, ValueError):
        return []
    return [name for name in jobs if isinstance(name, str) and name.startswith(incomplete)]


def _complete_job_arguments() -> None:
    """Attach `_complete_job` to the first argument of each command in JOB_ARGUMENT_COMMANDS,
    here in one place, so that a new command that takes a JOB only needs its name listed."""
    import inspect

    for info in app.registered_commands:
        if _command_name(info) not in JOB_ARGUMENT_COMMANDS:
            continue
        for parameter in inspect.signature(info.callback).parameters.values():
            meta = getattr(parameter.annotation, "__metadata__", ())
            argument = next((m for m in meta if isinstance(m, typer.models.ArgumentInfo)), None)
            if argument is not None:
                argument.autocompletion = argument.autocompletion or _complete_job
                argument.metavar = argument.metavar or "JOB"  # not typer's "{job}"
                break


_complete_job_arguments()


def main() -> None:
    """Entry point: run the app and turn user-facing errors into one line and an exit code."""
    if sys.argv[1:] == ["--version"]:  # answered before typer builds all 17 commands
        print(f"cronflow {__version__}")
        return
    # What is loaded by now (typer, click, our modules) lives as long as the process: keep
    # Python's cyclic collector from walking it again each time the thousands of objects of
    # a job file trigger a collection (a few % of `cronflow list` of 1,000 jobs).
    gc.freeze()
    try:
        code = _app_for(sys.argv[1:])(standalone_mode=False)
    except ConfigError as exc:
        render.problems(exc.problems)
        code = exc.exit_code
    except NoJobFile as exc:
        given = _same_config_flag(exc.path)
        exc = NoJobFile(exc.path, f"cronflow init{given}` or `cronflow add{given}")
        render.error(exc.message)
        code = exc.exit_code
    except CronflowError as exc:
        render.error(exc.message)
        code = exc.exit_code
    except typer.Abort:
        code = 130
    except typer.TyperException as exc:  # click's usage errors, vendored by typer 0.28
        exc.show()
        code = getattr(exc, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)


def _app_for(args: list[str]) -> typer.Typer:
    """`app`, or for a plain `cronflow COMMAND ...` a copy holding that one command.

    typer turns every registered command into a click command (signatures, type hints,
    parameters) before it parses anything: about 10 ms for all of them, as much as the rest
    of `cronflow validate`. Parsing, help and errors of one command do not depend on its
    siblings, so the copy behaves the same. Anything else (the group's --help, an unknown or
    misspelled name, a subgroup like `systemd`, shell completion, whose words come in the
    environment) gets the whole app.
    """
    name = _named_command(args)
    chosen = [info for info in app.registered_commands if _command_name(info) == name]
    if not chosen:
        return app
    one = copy.copy(app)
    one.registered_commands = chosen
    one.registered_groups = []
    return one


def _named_command(args: list[str]) -> str | None:
    """The command `args` name after the root options (--config/-c), or None."""
    rest = iter(args)
    for arg in rest:
        if arg in ("-c", "--config"):
            next(rest, None)
        elif arg.startswith("--config=") or (arg.startswith("-c") and arg != "-c"):
            continue
        elif arg.startswith("-"):
            return None  # --help, --version, completion, or a usage error: the whole app
        else:
            return arg
    return None
