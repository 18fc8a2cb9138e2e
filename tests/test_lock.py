from __future__ import annotations

import os
from pathlib import Path

import pytest

from cronflow.errors import CronflowError
from cronflow.lock import Lock, running_daemon_pid


def test_one_holder_per_state_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cronflow.lock"
    assert running_daemon_pid(path) is None
    first = Lock(path)
    first.acquire()
    assert running_daemon_pid(path) == os.getpid()
    with pytest.raises(
        CronflowError, match=f"another cronflow daemon is running \\(pid {os.getpid()}\\)"
    ):
        Lock(path).acquire()
    first.release()
    assert running_daemon_pid(path) is None
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_no_state_folder_means_no_daemon(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert running_daemon_pid(not_a_folder / "cronflow.lock") is None


def test_a_lax_state_folder_of_ours_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(0o777)
    Lock(folder / "cronflow.lock").acquire()
    assert (folder.stat().st_mode & 0o777) == 0o700
