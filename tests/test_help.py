"""`cronflow --help` lists every command on one line that fits, and each command's own --help
ends with an example."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cronflow import cli

runner = CliRunner()


def _commands() -> list[str]:
    group = typer.main.get_command(cli.app)
    names = []
    for name, command in group.commands.items():
        names.append(name)
        names += [f"{name} {sub}" for sub in getattr(command, "commands", {})]
    return names


def test_the_command_list_fits_80_columns_uncut() -> None:
    result = runner.invoke(cli.app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    listed = result.output.split("Commands:")[1].splitlines()[1:]
    assert listed and all(len(line) <= 80 for line in listed), listed
    assert not any(line.endswith("...") for line in listed)
    assert len([line for line in listed if line.strip()]) == len(
        [n for n in _commands() if " " not in n]
    )  # one line each


@pytest.mark.parametrize("name", _commands())
def test_each_command_has_a_short_help_and_an_example(name: str) -> None:
    assert len(cli.SHORT_HELP.get(name, "")) in range(1, 56), name
    if name == "systemd":
        return  # a group: its command has the example
    result = runner.invoke(cli.app, [*name.split(), "--help"], terminal_width=80)
    assert result.exit_code == 0
    example = result.output.split("Example:\n")[1]
    assert example.strip().startswith(("cronflow", "crontab -l | cronflow", "EDITOR="))
    assert all(len(line) <= 80 for line in example.splitlines())


@pytest.mark.parametrize("name", [n for n in _commands() if " " not in n and n != "systemd"])
def test_a_command_built_alone_parses_and_helps_as_in_the_whole_app(name: str) -> None:
    """main() builds only the command the line names (cli._app_for): its help and its usage
    errors are the very ones of the whole app."""
    alone = cli._app_for([name])
    assert alone is not cli.app
    for args in ([name, "--help"], [name, "--no-such-option"]):
        whole = runner.invoke(cli.app, args, terminal_width=80)
        one = runner.invoke(alone, args, terminal_width=80)
        assert (one.exit_code, one.output) == (whole.exit_code, whole.output), args
