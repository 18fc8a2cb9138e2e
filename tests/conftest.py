"""Every test gets its own config and state folders, so nothing leaks into $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session: the job starter (spawn.c) is compiled there once,
    up front, so that no test's timing includes that compile."""
    folder = tmp_path_factory.mktemp("cache")
    done = subprocess.run(
        [sys.executable, "-c", "from cronflow import spawn; spawn.helper_path()"],
        env={**os.environ, "XDG_CACHE_HOME": str(folder)},
        check=False,
    )
    assert done.returncode == 0
    return folder


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_cache))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in (
        "CRONFLOW_CONFIG",
        "CRONFLOW_STATE_DIR",
        "CRONFLOW_BROKER_URL",
        "CRONFLOW_WORKER_SECRET",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "JOURNAL_STREAM",
        "VISUAL",
        "EDITOR",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TZ", "UTC")
    return tmp_path


def wait_until(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


_SCRIPT = Path(sys.executable).parent / "cronflow"
CRONFLOW = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cronflow"]


def cronflow(
    *args: str, input: str | None = None, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real `cronflow` command as a user would."""
    return subprocess.run(
        [*CRONFLOW, *args],
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie nobody reaped (PID 1 here may not) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


class Recorder:
    """An engine observer that keeps what it is told: (job, status, detail)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def output(self, job: str, stream: str, data: bytes) -> None:
        pass

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        self.events.append((job, status, detail))

    def told(self, status: str) -> list[str]:
        return [detail for _, s, detail in self.events if s == status]


class WriteLock:
    """Another connection holding the database's write lock (BEGIN IMMEDIATE), in a thread:
    from `start` (or once run `when_running` is `running`) for `seconds`, as a long writer
    elsewhere would. Every write of cronflow then waits its busy timeout and is refused."""

    def __init__(
        self, db: Path, seconds: float, when_running: int | None = None, status: str = "running"
    ) -> None:
        import threading

        self.status = status  # `when_running` waits for this status of that run
        self.db = db
        self.seconds = seconds
        self.when_running = when_running
        self.held = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def start(self) -> WriteLock:
        self.thread.start()
        return self

    def _hold(self) -> None:
        import sqlite3

        conn = sqlite3.connect(self.db, isolation_level=None, timeout=30)
        try:
            while self.when_running is not None:
                row = conn.execute(
                    "SELECT status FROM runs WHERE id = ?", (self.when_running,)
                ).fetchone()
                if row and row[0] == self.status:
                    break
                time.sleep(0.005)
            conn.execute("BEGIN IMMEDIATE")
            self.held.set()
            time.sleep(self.seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()
            self.released.set()
