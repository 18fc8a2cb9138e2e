"""Shell completion (bash, zsh, fish): commands, options, and job names from the job file,
without loading rich or the store on the way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, cronflow

JOBS = '[jobs.backup]\ncommand = "x"\n[jobs.build]\ncommand = "y"\n[jobs.other]\ncommand = "z"\n'


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(JOBS)
    return path


def bash(line: str, **env: str) -> list[str]:
    words = line.split(" ")
    done = cronflow(
        env={
            "_CRONFLOW_COMPLETE": "complete_bash",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
            **env,
        }  # fmt: skip
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completes_commands_and_options(job_file: Path) -> None:
    assert bash("cronflow r") == ["run", "resume", "remove"]
    assert {"set", "unset", "status"} <= set(bash("cronflow "))
    assert {"--only", "--at", "--from"} <= set(bash("cronflow run --"))


@pytest.mark.parametrize(
    "command", ["run", "logs", "history", "pause", "resume", "remove", "next", "set", "unset"]
)
def test_job_names_come_from_the_job_file(job_file: Path, command: str) -> None:
    assert bash(f"cronflow -c {job_file} {command} b") == ["backup", "build"]
    assert bash(f"cronflow {command} ", CRONFLOW_CONFIG=str(job_file)) == [
        "backup",
        "build",
        "other",
    ]


def test_no_job_file_completes_nothing(tmp_path: Path) -> None:
    assert bash(f"cronflow -c {tmp_path}/none.toml run ") == []


def test_zsh_and_fish(job_file: Path) -> None:
    zsh = cronflow(
        env={"_CRONFLOW_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "cronflow run --"}
    )
    assert '"--only":"Run JOB alone."' in zsh.stdout
    fish = cronflow(
        env={
            "_CRONFLOW_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": f"cronflow -c {job_file} pause ",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        }
    )
    assert fish.stdout.split() == ["backup", "build", "other"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_the_script(shell: str) -> None:
    # Typer finds the shell among the process's ancestors (none under a detached pytest);
    # its test switch makes --show-completion take the shell's name instead.
    done = cronflow(
        "--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert done.returncode == 0
    assert "_CRONFLOW_COMPLETE" in done.stdout


def test_completion_loads_neither_rich_nor_the_store(job_file: Path) -> None:
    probe = (
        "import sys; sys.argv = ['cronflow']\n"
        "from cronflow import cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('rich', 'sqlite3', 'pydantic')"
        " or m in ('cronflow.store', 'cronflow.config', 'cronflow.schedule', 'tomlkit')]\n"
        "print('LOADED', sorted(heavy), file=sys.stderr)\n"
    )
    env = {
        **os.environ,
        "_CRONFLOW_COMPLETE": "complete_bash",
        "COMP_WORDS": f"cronflow -c {job_file} run b",
        "COMP_CWORD": "4",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert done.stdout.split() == ["backup", "build"]
    assert "LOADED []" in done.stderr
    assert CRONFLOW  # the installed command is what users' shells call
