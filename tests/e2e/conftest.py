"""The real daemon as a subprocess, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, cronflow, wait_until


class Daemon:
    def __init__(self, tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> None:
        self.config = tmp_path / "jobs.toml"
        if toml is not None:
            self.config.write_text(toml)
        self.state = tmp_path / "state" / "cronflow"
        self.env = {**os.environ, **(env or {})}
        self.log = tmp_path / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*CRONFLOW, "daemon", "-c", str(self.config)], stdout=log, stderr=log, env=self.env
            )
        # This daemon's own line: the log file is shared by every daemon a test starts.
        started = f"started (pid {self.proc.pid})"
        wait_until(lambda: started in self.log.read_text(), what="the daemon to start")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def runs(self, *args: str) -> list[dict]:
        result = cronflow("history", "--json", "--limit", "1000", *args)
        return json.loads(result.stdout) if result.stdout else []

    def status(self) -> dict:
        return json.loads(cronflow("status", "--json", "-c", str(self.config)).stdout)


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def launch(daemons: list, tmp_path: Path, toml: str, **kw) -> Daemon:
    d = Daemon(tmp_path, toml, **kw).start()
    daemons.append(d)
    return d
