"""A closed terminal (or a dropped ssh session) during `cronflow run`: the kernel's SIGHUP."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import termios
from pathlib import Path

from tests.conftest import CRONFLOW, alive, cronflow, wait_until


def _controlling_terminal() -> None:  # in the child, after setsid: fd 0 becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_closing_the_terminal_cancels_the_run_and_stops_the_job(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    config = tmp_path / "jobs.toml"
    config.write_text(f'[jobs.slow]\ncommand = "echo $$ > {pidfile}; exec sleep 300"\n')
    master, slave = os.openpty()
    run = subprocess.Popen(
        [*CRONFLOW, "run", "slow", "-c", str(config)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=_controlling_terminal,
    )
    os.close(slave)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the job")
    job = int(pidfile.read_text())
    os.close(master)  # the terminal goes away: SIGHUP to its session leader, `cronflow run`
    assert run.wait(timeout=30) == 129
    wait_until(lambda: not alive(job), timeout=10, what="the job to be stopped")
    runs = json.loads(cronflow("history", "--json", "-c", str(config)).stdout)
    assert [(r["job"], r["status"], r["note"]) for r in runs] == [("slow", "canceled", "canceled")]
