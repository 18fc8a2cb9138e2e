"""`cronflow systemd install`: the systemd user unit of the daemon or of a worker."""

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cronflow import render
from cronflow.cli import (
    ConcurrencyOption,
    ConfigOption,
    QueueOption,
    _load,
    _Paths,
    _queues,
    app,
)
from cronflow.errors import CronflowError

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


def _xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
