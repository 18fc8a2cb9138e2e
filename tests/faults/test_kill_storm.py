"""kill -9 of the daemon, again and again, while its job runs: recovery never duplicates."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import alive, wait_until
from tests.e2e.conftest import launch

KILLS = 8


def test_kill_9_storm_never_runs_two_attempts_at_once_nor_beyond_the_budget(
    daemons, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    toml = f"""
[jobs.slow]
schedule = "@reboot"      # fires once; every later start only recovers
command = "echo $$ >> {pids}; exec sleep 300"
retries = 1
retry_delay = 0
"""
    d = launch(daemons, tmp_path, toml)
    attempts_seen = 0
    for _ in range(KILLS):

        def settled(d=d, seen=attempts_seen) -> bool:
            return (
                pids.exists() and len(pids.read_text().split()) > seen or not d.status()["running"]
            )

        wait_until(settled, what="an attempt to start, or nothing left to run")
        started = [int(p) for p in pids.read_text().split()] if pids.exists() else []
        attempts_seen = len(started)
        assert len([p for p in started if alive(p)]) <= 1  # never two live attempts
        d.stop(signal.SIGKILL)
        d = launch(daemons, tmp_path, toml)
    wait_until(lambda: not d.status()["running"], what="recovery to settle")
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2  # attempt 1, and its one retry: the budget spans the restarts
    assert not [p for p in started if alive(p)]  # no orphan left behind
    runs = d.runs("slow")
    assert [r["status"] for r in runs] == ["lost", "lost"]
    assert sorted(r["attempts"] for r in runs) == [1, 2]
    assert len({r["logical_time"] for r in runs}) == 1
    assert d.stop() == 0
