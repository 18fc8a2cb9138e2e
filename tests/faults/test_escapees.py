"""A job child that leaves its process group with setsid is still stopped with its run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.conftest import alive, cronflow, wait_until
from tests.e2e.conftest import launch

ESCAPING = """
command = '''
setsid sh -c 'echo $$ > {escapee}; exec sleep 300' &
sleep 300'''
timeout = "1s"
kill_grace = "1s"
"""


def test_a_setsid_escapee_is_stopped_at_the_timeout_of_cronflow_run(tmp_path: Path) -> None:
    escapee = tmp_path / "escapee"
    config = tmp_path / "jobs.toml"
    config.write_text("[jobs.escape]" + ESCAPING.format(escapee=escapee))
    result = cronflow("run", "escape", "-c", str(config))
    assert result.returncode == 1, result.stderr
    pid = int(escapee.read_text())
    assert os.getsid(pid) != os.getsid(0) if alive(pid) else True
    wait_until(lambda: not alive(pid), timeout=10, what="the escapee to be stopped")
    runs = json.loads(cronflow("history", "--json", "-c", str(config)).stdout)
    assert runs[0]["status"] == "timeout"


def test_the_daemon_stops_and_reaps_an_escapee(daemons, tmp_path: Path) -> None:
    escapee = tmp_path / "escapee"
    toml = '[jobs.escape]\nschedule = "@reboot"' + ESCAPING.format(escapee=escapee)
    d = launch(daemons, tmp_path, toml)
    wait_until(lambda: escapee.exists() and escapee.read_text().strip(), what="the escapee")
    pid = int(escapee.read_text())
    wait_until(lambda: d.runs("escape") and d.runs("escape")[0]["status"] == "timeout")
    # Reaped, not just dead: a zombie would keep its /proc entry (its parent, the daemon as
    # subreaper, is the one to reap it).
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the escapee reaped")
    assert d.stop(signal.SIGTERM) == 0
