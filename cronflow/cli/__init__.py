"""The command line: parse arguments, call the core, hand results to render. Nothing else.

This module holds the app, its root options, what every command shares and the entry point;
the commands live in a module per concern: `showing` (the commands that only show things),
`running`, `jobfile` (the commands that change the job file) and `systemd_units`.
"""

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


def _open_store() -> "Store":
    from cronflow.store import Store

    return Store(_Paths.state_dir() / "cronflow.db")


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
        found = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:  # the state directory is a file, or cannot be searched
        raise CronflowError(f"cannot open database: {path}: {exc.strerror}") from None
    if found.st_size == 0:  # created by a writer that has not set it up yet
        return None
    if path.is_dir():
        raise CronflowError(f"cannot open database: {path}: Is a directory")
    from cronflow.store import Store

    return Store(path, readonly=readonly)


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


def _same_config_flag(path: Path | str) -> str:
    """` -c PATH` when -c chose the job file, for a hint naming a command to type next."""
    if not _Paths.config_flag:
        return ""
    import shlex

    return f" -c {shlex.quote(str(path))}"


# The commands register themselves on `app` as their modules load; they import the shared
# names above from this package, so they load here, after them. They import nothing heavy at
# load: each command imports what it needs when it runs.
from cronflow.cli import jobfile, running, showing, systemd_units  # noqa: E402, F401

# One line each in `cronflow --help` (click cuts longer first sentences with "..."), in the
# order it lists them, and an example at the end of each command's own --help. A new command
# adds its entry here; tests/test_help.py checks that every command has both and that the list
# fits 80 columns.
SHORT_HELP = {
    "validate": "Check the job file, every problem with file:line",
    "list": "Jobs, their schedules, next fires and last status",
    "next": "The next fire times of a job's flow",
    "run": "Run a job's flow now, or backfill a time range",
    "history": "Past runs, newest first",
    "logs": "Output of a job's latest run, or of a run",
    "daemon": "Run the scheduler in the foreground",
    "status": "Daemon, job file, running jobs, failures, next fires",
    "why": "Why a job ran or did not run at a time",
    "check": "Exit 0 if all is well: for monitors",
    "pause": "Stop the daemon firing a job's flow",
    "resume": "Let the daemon fire a paused flow again",
    "trigger": "Ask the running daemon to start a flow",
    "ui": "The dashboard: flows, run grid, live logs",
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


def _list_in_help_order() -> None:
    """Put the registered commands in SHORT_HELP's order: the one `cronflow --help` and shell
    completion list them in, whichever module each is defined in."""
    order = list(SHORT_HELP)
    app.registered_commands.sort(key=lambda info: order.index(_command_name(info)))


_list_in_help_order()
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
    if sys.argv[1:] == ["--version"]:  # answered before typer builds all its commands
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
