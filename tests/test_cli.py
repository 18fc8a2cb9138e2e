"""The commands as functions, for races a subprocess cannot stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from cronflow import cli, editing
from cronflow.errors import CronflowError

ORIGINAL = '[jobs.a]\ncommand = "true"\n'
THEIRS = ORIGINAL + "# added by someone else meanwhile\n"


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(ORIGINAL)
    return path


def _racing(monkeypatch: pytest.MonkeyPatch, name: str, path: Path) -> None:
    """Make editing.NAME change the job file on disk after cronflow has read it."""
    real = getattr(editing, name)

    def racing(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        path.write_text(THEIRS)
        return result

    monkeypatch.setattr(editing, name, racing)


def test_add_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path
) -> None:
    _racing(monkeypatch, "add_job", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it") as info:
        cli.add("b", "true", config=job_file)
    assert info.value.exit_code == 1
    assert job_file.read_text() == THEIRS


def test_remove_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path
) -> None:
    _racing(monkeypatch, "remove_job", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it"):
        cli.remove("a", config=job_file)
    assert job_file.read_text() == THEIRS


def test_import_crontab_write_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path, tmp_path: Path
) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("0 3 * * * backup.sh\n")
    _racing(monkeypatch, "append_block", job_file)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it"):
        cli.import_crontab(str(crontab), write=True, config=job_file)
    assert job_file.read_text() == THEIRS
