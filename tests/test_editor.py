"""The `cronflow edit` loop with a scripted editor."""

from __future__ import annotations

from pathlib import Path

import pytest

from cronflow import editor as session
from cronflow.errors import ConfigError, CronflowError


@pytest.mark.parametrize(
    ("environ", "argv"),
    [
        ({"VISUAL": "code --wait", "EDITOR": "nano"}, ["code", "--wait"]),
        ({"VISUAL": " ", "EDITOR": "emacsclient -t -a ''"}, ["emacsclient", "-t", "-a", ""]),
        ({"EDITOR": "'/opt/my editor/bin/ed' -x"}, ["/opt/my editor/bin/ed", "-x"]),
        ({}, ["vi"]),
    ],
)
def test_editor_command(environ: dict[str, str], argv: list[str]) -> None:
    assert session.editor_command(environ) == argv


def test_an_unsplittable_editor_is_a_usage_error() -> None:
    with pytest.raises(CronflowError) as caught:
        session.editor_command({"EDITOR": "vim 'unclosed"})
    assert caught.value.exit_code == 2


class Editor:
    """A scripted editor: each call applies the next edit to the copy."""

    def __init__(self, *edits) -> None:
        self.edits = list(edits)
        self.seen: list[str] = []

    def __call__(self, copy: Path) -> None:
        assert copy.suffix == ".toml"
        self.seen.append(copy.read_text())
        copy.write_text(self.edits.pop(0)(copy.read_text()))


def test_edit_saves_a_valid_result(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "x"\n')
    outcome = session.edit_job_file(path, Editor(lambda t: t + "retries = 1\n"), _never)
    assert outcome.saved
    assert path.read_text() == '[jobs.a]\ncommand = "x"\nretries = 1\n'


def test_edit_without_changes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "x"\n')
    assert not session.edit_job_file(path, Editor(lambda t: t), _never).saved


def test_edit_again_reopens_the_edited_copy_and_names_the_real_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "x"\n')
    asked: list[ConfigError] = []
    editor = Editor(lambda t: t + "retires = 3\n", lambda t: t.replace("retires", "retries"))
    outcome = session.edit_job_file(path, editor, lambda e: asked.append(e) or True)
    assert outcome.saved
    assert str(asked[0].problems[0]).startswith(f"{path}:3: jobs.a.retires: unknown key")
    assert editor.seen[1].endswith("retires = 3\n")  # the user's edit, not the original
    assert path.read_text().endswith("retries = 3\n")


def test_edit_abandoned_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "x"\n')
    with pytest.raises(CronflowError) as caught:
        session.edit_job_file(path, Editor(lambda t: t + "[[["), _never)
    assert caught.value.exit_code == 2
    assert path.read_text() == '[jobs.a]\ncommand = "x"\n'


def _never(_: ConfigError) -> bool:
    return False
