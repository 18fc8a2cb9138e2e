"""Every command has help and is shown in the README, the user's manual."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from cronflow.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()


def _commands() -> list[tuple[str, object]]:
    group = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found += [(f"{name} {sub}", c) for sub, c in subcommands.items()]
        else:
            found.append((name, command))
    return found


@pytest.mark.parametrize(("name", "command"), _commands(), ids=lambda v: str(v))
def test_command_has_help_and_is_in_the_readme(name: str, command: object) -> None:
    assert (command.help or "").strip(), f"`cronflow {name}` has no help"
    assert f"cronflow {name}" in README, f"README does not show `cronflow {name}`"
