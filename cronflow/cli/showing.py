"""The commands that only show things: validate, list, next, history, logs, status, why,
check and workers. They read the job file, the state and the broker, and never write."""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cronflow import render
from cronflow.cli import (
    ConfigOption,
    JsonOption,
    _load,
    _now,
    _open_store_if_exists,
    _parse,
    _Paths,
    app,
)
from cronflow.errors import ConfigError, CronflowError

if TYPE_CHECKING:
    from cronflow.config import Config
    from cronflow.store import Store


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
        if view.owner_gone is not None:  # it will never end: as good as lost (exit 1)
            render.warn(f"run {final.run_id} of {final.job} will not finish: {view.owner_gone}")
            raise typer.Exit(1)
        raise typer.Exit(1 if final.status in logview.FAILED else 0)


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
        "running": _running_now(store) if store else [],
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


def _running_now(store: "Store") -> list[dict[str, Any]]:
    """Runs queued, running or retrying; `owner_gone` says why one whose cronflow process
    died will never end (null while its owner lives). `status` reads: it marks nothing lost."""
    from cronflow import recovery

    return [
        u.run.to_json()
        | {"owner_gone": None if recovery.owner_alive(u) else recovery.gone_note(u)}
        for u in store.unfinished_runs()
    ]


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
