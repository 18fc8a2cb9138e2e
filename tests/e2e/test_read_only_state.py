"""The commands that only show things (`history`, `logs`, `list`, `status`, `next`) never write:
they work on a database in a read-only state folder, with or without a daemon writing it.

Not as root, the folder is made 0500 and the database 0400. Root writes through any mode bits,
so as root the readers run in a private mount namespace where the state folder is a read-only
bind mount (EROFS even for root); where that cannot be set up, the test is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, wait_until
from tests.e2e.conftest import launch

# `sh -c SCRIPT STATE cronflow ARGS...`: mount STATE read-only over itself, then run cronflow.
_RO_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _read_only_mount_works(folder: Path) -> str | None:
    """None when a private read-only bind mount of `folder` works here, else why not."""
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", _RO_MOUNT, str(folder), "touch", str(folder / "probe")],
        capture_output=True,
        text=True,
    )
    if (folder / "probe").exists():
        (folder / "probe").unlink()
        return "the read-only bind mount did not stop root writing"
    if probe.returncode == 0 or "Read-only file system" not in probe.stderr:
        return f"cannot make a read-only mount (unshare -m): {probe.stderr.strip()[:200]}"
    return None


class ReadOnlyState:
    """Runs `cronflow` with the state folder read-only, for root and for everyone else."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.as_root = os.geteuid() == 0

    @contextmanager
    def applied(self) -> Iterator[ReadOnlyState]:
        if self.as_root:
            reason = _read_only_mount_works(self.state)
            if reason:
                pytest.skip(f"running as root, where chmod does not stop writes, and {reason}")
            yield self
            return
        db = self.state / "cronflow.db"
        db.chmod(0o400)
        self.state.chmod(0o500)
        try:
            yield self
        finally:
            self.state.chmod(0o700)
            db.chmod(0o600)

    def cronflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        prefix = ["unshare", "-m", "sh", "-c", _RO_MOUNT, str(self.state)] if self.as_root else []
        return subprocess.run(
            [*prefix, *CRONFLOW, *args], capture_output=True, text=True, timeout=60
        )

    def ok(self, *args: str) -> str:
        result = self.cronflow(*args)
        assert (result.returncode, result.stderr) == (0, ""), (args, result)
        return result.stdout


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_readers_work_on_a_read_only_state_folder(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\nschedule = "@hourly"\ncommand = "echo hello"\n')
    state = tmp_path / "state" / "cronflow"
    run = subprocess.run([*CRONFLOW, "-c", str(job_file), "run", "a"], capture_output=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in state.iterdir()) == ["cronflow.db"]  # no -wal, no -shm
    before = _snapshot(state)
    with ReadOnlyState(state).applied() as ro:
        runs = json.loads(ro.ok("history", "--json"))
        assert [(r["job"], r["status"]) for r in runs] == [("a", "success")]
        assert "hello" in ro.ok("logs", "a")
        assert "hello" in ro.ok("logs", str(runs[0]["run_id"]))
        listed = json.loads(ro.ok("list", "--json", "-c", str(job_file)))
        assert [(j["name"], j["last_status"], j["paused"]) for j in listed] == [
            ("a", "success", False)
        ]
        status = json.loads(ro.ok("status", "--json", "-c", str(job_file)))
        assert status["daemon"]["running"] is False and status["recent_failures"] == []
        assert len(json.loads(ro.ok("next", "a", "-n", "2", "--json", "-c", str(job_file)))) == 2
        refused = ro.cronflow("pause", "a", "-c", str(job_file))  # a writer says why, in a line
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused
        assert "Traceback" not in refused.stderr
    assert _snapshot(state) == before


def test_readers_follow_a_live_daemon_through_a_read_only_state_folder(
    daemons, tmp_path: Path
) -> None:
    d = launch(daemons, tmp_path, '[jobs.tick]\nschedule = "@every 1s"\ncommand = "echo tick"\n')
    wait_until(lambda: d.runs("tick"), what="a first fire")
    with ReadOnlyState(d.state).applied() as ro:

        def recorded() -> int:
            return len(json.loads(ro.ok("history", "tick", "--json", "--limit", "1000")))

        first = recorded()
        wait_until(lambda: recorded() >= first + 2, what="the reader to see new fires")
        status = json.loads(ro.ok("status", "--json", "-c", str(d.config)))
        assert status["daemon"]["running"] and status["daemon"]["pid"] == d.proc.pid
        assert "tick" in ro.ok("logs", "tick")
    assert d.stop() == 0
    assert "database" not in d.log.read_text()  # the daemon never hit a store error
