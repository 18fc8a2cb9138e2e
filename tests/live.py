"""A real daemon (real engine, real processes, real SQLite) on a virtual clock: a history
built in a second that `why` and `check` can then be asked about."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from cronflow.clock import VirtualClock
from cronflow.daemon import Daemon
from cronflow.engine import Engine
from cronflow.store import Store
from cronflow.systemd import Notifier


class LiveDaemon:
    """Drive with `await run_for(...)`, `await stop()`, `start()`; inside one event loop."""

    def __init__(self, tmp_path: Path, toml: str, start: datetime) -> None:
        self.folder = tmp_path
        self.config = tmp_path / "jobs.toml"
        self.config.write_text(toml)
        self.clock = VirtualClock(start)
        self.store = Store(tmp_path / "state" / "cronflow.db", clock=self.clock)
        self.daemon: Daemon | None = None

    def start(self) -> Daemon:
        daemon = Daemon(self.config, self.store, clock=self.clock, notifier=Notifier(None))
        daemon.engine = Engine(
            self.store, max_parallel=4, clock=self.clock, drain=daemon.stopping, base_env={}
        )
        daemon._reload(first=True)
        daemon._record_start()
        daemon._recover()
        self.daemon = daemon
        return daemon

    async def run_for(self, seconds: float, step: float = 5.0) -> None:
        assert self.daemon is not None
        end = self.clock.now() + timedelta(seconds=seconds)
        while self.clock.now() < end:
            self.clock.advance(step)
            self.daemon._wake_up()
            await self.settle()

    async def settle(self) -> None:
        """Wait (in real time) for every flow run and hook the daemon started."""
        assert self.daemon is not None
        while self.daemon.tasks:
            await asyncio.wait(set(self.daemon.tasks))
            await asyncio.sleep(0)

    async def stop(self) -> None:
        assert self.daemon is not None
        await self.settle()
        self.daemon.stopping.set()
        await self.daemon._shutdown()
        self.daemon = None

    def sleep_machine(self, seconds: float) -> None:
        """Wall time moves, monotonic time does not: a suspend."""
        self.clock.jump_wall(seconds)

    def down_for(self, seconds: float) -> None:
        self.clock.advance(seconds)
