"""The command line: parse arguments, call the core, hand results to render."""

from __future__ import annotations

import typer

from cronflow import __version__

app = typer.Typer(
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    help="cronflow: cron schedules with flows, retries, history and logs.",
)


def _version(value: bool) -> None:
    if value:
        print(f"cronflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """cronflow: cron schedules with flows, retries, history and logs."""


def main() -> None:
    app()
