"""The floor under cronflow's engine: what any asyncio engine that starts jobs the way it does pays.

    .venv/bin/python bench/engine_floor.py N [--store]

Runs N `/bin/true` jobs one after another on an asyncio loop, each started through cronflow's
fork server (`spawn.start_soon`, which a true peak memory needs), its two output pipes read to
EOF with `add_reader`, and reaped. Nothing else: no store, no logging, no retries, no timers.
With --store, each job also commits two small write transactions to a WAL database with
cronflow's pragmas (a start and an end), as the engine must so that a crash never runs a job
twice. bench_engine.py runs this script and puts its cost beside the engine's.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from cronflow import spawn

START = "INSERT INTO runs (status, started) VALUES ('running', ?)"
END = "UPDATE runs SET status = 'success', ended = ? WHERE id = ?"


async def one_job(env: dict[str, str], claimed: set[int]) -> None:
    loop = asyncio.get_running_loop()
    started = await spawn.start_soon(["/bin/true"], env, "/", claimed)
    done = loop.create_future()
    open_fds = {started.stdout.fileno(), started.stderr.fileno()}

    def readable(fd: int) -> None:
        if not os.read(fd, 65536):
            loop.remove_reader(fd)
            open_fds.discard(fd)
            if not open_fds:
                done.set_result(None)

    for fd in open_fds:
        loop.add_reader(fd, readable, fd)
    await done
    os.waitpid(started.pid, 0)
    claimed.discard(started.pid)
    started.stdout.close()
    started.stderr.close()


def open_store(folder: str) -> sqlite3.Connection:
    db = sqlite3.connect(Path(folder) / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT, started INT, ended INT)")
    return db


def commit(db: sqlite3.Connection, sql: str, *args: object) -> int:
    db.execute("BEGIN IMMEDIATE")
    row_id = db.execute(sql, args).lastrowid
    db.execute("COMMIT")
    return row_id or 0


async def main(n: int, with_store: bool) -> None:
    env = dict(os.environ)
    claimed: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="cronflow-floor-") as folder:
        db = open_store(folder) if with_store else None
        for _ in range(n):
            if db is None:
                await one_job(env, claimed)
                continue
            run = commit(db, START, time.time_ns())
            await one_job(env, claimed)
            commit(db, END, time.time_ns(), run)
    spawn.shutdown()  # reaped here, so the fork server's CPU counts in this process's wait4


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), "--store" in sys.argv[2:]))
