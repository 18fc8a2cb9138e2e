"""A full disk under the state folder: a small tmpfs, filled while the daemon runs."""

from __future__ import annotations

import contextlib
import errno
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, alive, cronflow, wait_until
from tests.e2e.conftest import launch


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and a kernel that lets us mount; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system says ENOSPC."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    with pytest.raises(OSError) as full:
        (folder / "probe").write_bytes(b"\0" * 65536)
    assert full.value.errno == errno.ENOSPC
    return filler


def test_the_daemon_survives_a_full_disk_and_resumes_by_itself(
    daemons, tmp_path: Path, small_disk: Path
) -> None:
    env = {"CRONFLOW_STATE_DIR": str(small_disk / "cronflow")}
    flag = tmp_path / "flag"
    toml = f"""
[jobs.tick]
schedule = "@every 1s"
command = "seq 1 50"
[jobs.chatty]  # running when the disk fills; its output then cannot be stored
schedule = "@reboot"
command = "while [ ! -e {flag} ]; do sleep 0.05; done; seq 1 20000"
"""
    d = launch(daemons, tmp_path, toml, env=env)

    def runs() -> list[dict]:
        return _history(env)

    wait_until(lambda: any(r["status"] == "success" for r in runs()), what="a first success")
    filler = fill(small_disk)
    wait_until(
        lambda: d.log.read_text().count("database or disk is full") >= 3,
        timeout=20,
        what="fires refused by the full disk",
    )
    assert alive(d.proc.pid) and d.proc.poll() is None
    flag.touch()
    wait_until(lambda: "failed chatty" in d.log.read_text(), timeout=20, what="chatty to fail")
    filler.unlink()
    (small_disk / "probe").unlink(missing_ok=True)
    seen = len(runs())
    wait_until(
        lambda: len([r for r in runs() if r["status"] == "success"]) > 0 and len(runs()) > seen,
        timeout=20,
        what="fires to be recorded again",
    )
    wait_until(lambda: "the database takes writes again" in d.log.read_text(), timeout=20)
    wait_until(lambda: not [r for r in runs() if r["status"] == "running"
                            and r["started_at"] is not None and _older(r, 5)],
               timeout=20, what="no run left running")  # fmt: skip
    assert d.stop(signal.SIGTERM) == 0
    log = d.log.read_text()
    assert "Traceback" not in log and "Task exception" not in log
    # Each refusal is one log line of its own (a fire, a step, a job), never a traceback.
    refusals = [line for line in log.splitlines() if "disk is full" in line]
    assert refusals and all(" ERROR " in line or " WARNING " in line for line in refusals)
    assert all(r["status"] != "running" for r in runs())
    (chatty,) = [r for r in runs() if r["job"] == "chatty"]  # recorded once there was room
    assert chatty["status"] == "failed"
    assert chatty["note"].startswith("cronflow error: database or disk is full")
    # It ran to its end: its exit code stands beside the reason, and what it printed that
    # could not be stored is one marker line, not a silent gap.
    assert chatty["exit_code"] == 0 and "of output not stored" in chatty["note"]
    shown = cronflow("logs", str(chatty["run_id"]), env=env).stdout
    assert shown.count("of output not stored: database or disk is full") == 1


def test_cronflow_run_holds_output_on_a_full_disk_and_records_the_end_once_there_is_room(
    tmp_path: Path, small_disk: Path
) -> None:
    """The tester's case: the disk fills while `cronflow run` shows a job's output. No
    traceback; the output it could not store is one marker line; the job fails with the
    reason but keeps its exit code; its end is recorded as soon as space is freed."""
    import os

    env = {"CRONFLOW_STATE_DIR": str(small_disk / "cronflow")}
    started = tmp_path / "started"
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(
        f"""
[jobs.sb]
command = 'touch {started}; for i in $(seq 1 8); do head -c 30000 /dev/urandom | base64; sleep 0.5; done; echo done'
"""  # noqa: E501
    )
    assert cronflow("history", env=env).returncode == 0  # the state folder exists: fill it
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*CRONFLOW, "-c", str(jobs), "run", "sb"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, **env},
        )
    try:
        wait_until(started.exists, what="the job to start")
        filler = fill(small_disk)
        wait_until(lambda: "unrecorded" in err.read_text(), timeout=40, what="the end refused")
        assert proc.poll() is None  # still trying to record it
        filler.unlink()
        (small_disk / "probe").unlink(missing_ok=True)
        assert proc.wait(timeout=30) == 1  # a run failed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shown = err.read_text()
    assert "Traceback" not in shown and "Exception in callback" not in shown
    assert shown.count("output_refused") == 1 and shown.count("output_lost") == 1
    (run,) = _history(env)
    assert (run["status"], run["exit_code"]) == ("failed", 0)
    assert run["cpu_seconds"] is not None
    assert run["note"].startswith("cronflow error: database or disk is full")
    assert "of output not stored" in run["note"]
    markers = [
        line
        for line in cronflow("logs", str(run["run_id"]), env=env).stdout.splitlines()
        if line.startswith("[cronflow:")
    ]
    assert len(markers) == 1 and "of output not stored: database or disk is full" in markers[0]


def _history(env: dict[str, str]) -> list[dict]:
    import json

    result = cronflow("history", "--json", "--limit", "1000", env=env)
    return json.loads(result.stdout) if result.returncode == 0 and result.stdout else []


def _older(run: dict, seconds: float) -> bool:
    from datetime import UTC, datetime

    started = datetime.fromisoformat(run["started_at"])
    return (datetime.now(UTC) - started).total_seconds() > seconds
