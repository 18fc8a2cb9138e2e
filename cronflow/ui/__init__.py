"""`cronflow ui`: the dashboard in the terminal (Textual). Only this package imports textual,
and only `cronflow ui` imports this package's app: every other command starts without it."""

from __future__ import annotations

from pathlib import Path


def run_ui(config_path: Path, state_dir: Path) -> None:
    from cronflow.ui.app import run_ui as run

    run(config_path, state_dir)
