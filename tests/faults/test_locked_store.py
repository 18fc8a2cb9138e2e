"""The database locked beyond the busy timeout (another writer holds it) while a job prints:
no traceback, one log line per refused write, no line of output missing."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import WriteLock, cronflow, wait_until
from tests.e2e.conftest import launch


def test_the_daemon_holds_output_through_a_long_lock_and_stores_it_in_full(
    daemons, tmp_path: Path
) -> None:
    toml = """
[jobs.ticker]
schedule = "@reboot"
command = 'for i in $(seq 1 16); do echo line $i; sleep 0.5; done'
"""
    d = launch(daemons, tmp_path, toml)
    lock = WriteLock(d.state / "cronflow.db", 7.0, when_running=1).start()  # busy timeout: 5s
    wait_until(lambda: "finished ticker" in d.log.read_text(), timeout=40, what="the run's end")
    assert lock.held.is_set()
    assert d.stop(signal.SIGTERM) == 0
    log = d.log.read_text()
    assert "Traceback" not in log and "Exception in callback" not in log
    assert log.count("output_refused ticker (run 1): database is locked") == 1
    assert log.count("output_stored ticker (run 1)") == 1
    (run,) = d.runs()
    assert (run["status"], run["exit_code"]) == ("success", 0)  # stored in full: it stands
    shown = cronflow("logs", "1").stdout
    assert [line for line in shown.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in range(1, 17)
    ]
    assert "not stored" not in shown
