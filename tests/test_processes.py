"""Which live processes belong to an attempt that outlived its cronflow (real processes)."""

from __future__ import annotations

import os
import subprocess

from cronflow import processes


def _sleeper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`sleep` leading its own process group, as a job does."""
    return subprocess.Popen(["sleep", "30"], env={**os.environ, **env}, start_new_session=True)


def test_without_a_recorded_start_a_live_group_leader_is_ours_only_if_marked() -> None:
    mark = f"CRONFLOW_TEST_MARK={os.getpid()}"
    stranger, job = _sleeper({}), _sleeper({"CRONFLOW_TEST_MARK": str(os.getpid())})
    try:
        # A pid reused by someone else's process since: never taken for the attempt's (the
        # marked job is found by its marker either way).
        assert processes.leftovers(stranger.pid, None, [mark]) == [job.pid]
        assert processes.leftovers(job.pid, None, [mark]) == [job.pid]
        start = processes.start_time(stranger.pid)
        assert processes.leftovers(stranger.pid, start, [mark]) == sorted([stranger.pid, job.pid])
    finally:
        for proc in (stranger, job):
            proc.kill()
            proc.wait()
