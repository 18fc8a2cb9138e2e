"""The commands that change the job file: init, add, set, unset, remove, edit and
import-crontab. Each validates before an atomic write, then nudges a running daemon."""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cronflow import render
from cronflow.cli import (
    ConfigOption,
    _Paths,
    _same_config_flag,
    app,
)
from cronflow.errors import CronflowError


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
    origins = {key: "--" + key.replace("_", "-") for (key,), _ in given}
    if env:
        origins["env"] = "--env"
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
        origins.setdefault(each.key[0], f"--set {each.key[0]}")
    job = editing.NewJob(
        name, command, schedule, upstreams, retries, timeout, on_failure, description,
        extra=tuple(given), origins=tuple(origins.items()),
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
    from cronflow.config import local_zone, parse_config, read_job_file

    path = _Paths.config(config)
    exists = write and path.exists()
    existing = read_job_file(path) if exists else ""
    jobs = parse_config(existing, str(path)).jobs if existing else {}
    local = local_zone()
    result = crontab.import_crontab(
        _crontab_text(source),
        system=system,
        existing_names=set(jobs),
        existing_jobs={
            (j.schedule.text, j.command, None if j.timezone == local else j.timezone.key): n
            for n, j in jobs.items()
            if j.schedule and isinstance(j.command, str)
        },
    )
    for skipped in result.skipped:
        render.warn(f"{source or 'crontab -l'}:{skipped.line}: not imported: {skipped.reason}")
    if not write:
        sys.stdout.write(result.toml if result.toml.endswith("\n") else result.toml + "\n")
        return
    if not result.jobs:
        render.line(f"nothing to add to {path}")
        return
    text = editing.append_block(existing, result.toml)
    parse_config(text, str(path))  # always valid by construction; never write one that isn't
    if exists:
        editing.write_atomic(path, text, expected=existing)
    else:
        editing.write_new(path, text)
    added = len(result.jobs)
    render.line(f"added {added} job{'' if added == 1 else 's'} to {path}")
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
