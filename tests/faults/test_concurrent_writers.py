"""Many real writers on one database at once, for 20 s: the daemon firing `@every 1s` flows,
four `cronflow run` loops, a pause/resume loop, a `prune` loop that has thousands of old runs
to delete, and a reader loop. Nobody may see "database is locked", every command succeeds,
and the history holds exactly what happened: every fire once, every run whole, every line of
output."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow.clock import VirtualClock
from cronflow.store import Store
from tests.conftest import CRONFLOW
from tests.e2e.conftest import launch

pytestmark = pytest.mark.slow

SECONDS = 20.0  # the whole suite stays under 8 minutes on 2 cores
MAX_ROUNDS = 300  # per loop: the test stays bounded in count as well as in time
OLD_RUNS = 3000

JOBS = """
[defaults]
timezone = "UTC"

[daemon]
keep_history = 0  # the daemon would prune the old runs itself at start: leave them to the loop

[jobs.steady]
schedule = "@every 1s"
command = "seq 1 100"

[jobs.steady_after]
after = ["steady"]
command = "echo after"

[jobs.chatty]
schedule = "@every 1s"
command = "seq 1 3000"

[jobs.toggled]
schedule = "@every 1s"
command = "true"

[jobs.manual]
command = "seq 1 500"

[jobs.manual_after]
after = ["manual"]
command = "echo done"
"""

SEQ_500 = "".join(f"{i}\n" for i in range(1, 501)).encode()


def _seed_old_runs(db: Path) -> None:
    """Runs finished 100 days ago, with output, for the `prune` loop to delete meanwhile."""
    old = datetime.now(UTC) - timedelta(days=100)
    with Store(db, clock=VirtualClock(old)) as store:
        for i in range(OLD_RUNS):
            _, ids = store.create_flow_run(
                "ancient", old, "schedule", ["ancient"], status="success", finished_at=old
            )
            if i % 3 == 0:
                store.add_output(ids["ancient"], 1, "out", old, b"x" * 1024)


class Loop(threading.Thread):
    """Runs `cronflow` commands one after another until the deadline; keeps every result."""

    def __init__(self, name: str, commands: Callable[[int], list[str]], deadline: float) -> None:
        super().__init__(name=name, daemon=True)
        self.commands = commands
        self.deadline = deadline
        self.results: list[tuple[list[str], subprocess.CompletedProcess[str]]] = []

    def run(self) -> None:
        for round_ in range(MAX_ROUNDS):
            if time.monotonic() > self.deadline:
                return
            args = self.commands(round_)
            result = subprocess.run([*CRONFLOW, *args], capture_output=True, text=True, timeout=60)
            self.results.append((args, result))


def test_many_writers_at_once_never_see_a_locked_database(daemons, tmp_path: Path) -> None:
    state = tmp_path / "state" / "cronflow"
    _seed_old_runs(state / "cronflow.db")
    d = launch(daemons, tmp_path, JOBS)
    config = str(d.config)
    deadline = time.monotonic() + SECONDS
    runners = [Loop(f"run-{i}", lambda n: ["-c", config, "run", "manual"], deadline)
               for i in range(4)]  # fmt: skip
    toggler = Loop(
        "pause", lambda n: ["-c", config, "resume" if n % 2 else "pause", "toggled"], deadline
    )
    pruner = Loop("prune", lambda n: ["prune", "--older-than", "30d"], deadline)
    reader = Loop("history", lambda n: ["history", "--json", "--limit", "50"], deadline)
    loops = [*runners, toggler, pruner, reader]
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join(timeout=SECONDS + 90)
        assert not loop.is_alive(), f"{loop.name} is stuck"
    assert d.stop() == 0

    # Every command succeeded, and none of them saw a locked (or any) database error.
    for loop in loops:
        assert len(loop.results) >= 3, f"{loop.name} ran only {len(loop.results)} commands"
        for args, result in loop.results:
            assert result.returncode == 0, (args, result.stdout[-500:], result.stderr)
            assert "locked" not in result.stderr and "error" not in result.stderr, (args, result)
    log = d.log.read_text()
    assert "locked" not in log and " ERROR " not in log, log[-3000:]
    pruned = sum(int(r.stdout.split()[1]) for _, r in pruner.results)
    assert pruned == OLD_RUNS

    with sqlite3.connect(f"file:{state / 'cronflow.db'}?mode=ro", uri=True) as db:
        notes = [n for (n,) in db.execute("SELECT note FROM runs WHERE note IS NOT NULL")]
        assert not [n for n in notes if "locked" in n], notes
        assert db.execute("SELECT count(*) FROM runs WHERE job = 'ancient'").fetchone()[0] == 0
        statuses = dict(db.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        assert set(statuses) <= {"success", "skipped"}, statuses  # none lost, failed, pending

        # Every `cronflow run` is in the history, whole, with every line of its output.
        invocations = sum(len(r.results) for r in runners)
        manual = dict(db.execute("SELECT id, status FROM runs WHERE job = 'manual'"))
        assert len(manual) == invocations
        assert set(manual.values()) == {"success"}
        output = dict.fromkeys(manual, b"")
        for run_id, data in db.execute(
            "SELECT run_id, data FROM output WHERE stream = 'out' AND run_id IN"
            " (SELECT id FROM runs WHERE job = 'manual') ORDER BY id"
        ):
            output[run_id] += data
        assert [i for i, out in output.items() if out != SEQ_500] == [], "output lost"
        after = db.execute(
            "SELECT count(*) FROM runs WHERE job = 'manual_after' AND status = 'success'"
        )
        assert after.fetchone()[0] == invocations

        # Every fire of an unpaused flow is recorded once, with no slot left out.
        for job in ("steady", "chatty"):
            rows = db.execute(
                "SELECT logical_time, status FROM runs WHERE job = ? ORDER BY logical_time", (job,)
            ).fetchall()
            times = [t for t, _ in rows]
            assert len(times) >= SECONDS / 2, (job, len(times))
            assert times == list(range(times[0], times[-1] + 1, 1_000_000)), f"{job}: gap or twice"
        started = db.execute(
            "SELECT count(*) FROM runs WHERE job = 'steady' AND status = 'success'"
        ).fetchone()[0]
        followed = db.execute(
            "SELECT count(*) FROM runs WHERE job = 'steady_after' AND status = 'success'"
        ).fetchone()[0]
        assert followed == started
        chatty = db.execute(
            "SELECT count(*) FROM runs r WHERE job = 'chatty' AND status = 'success' AND"
            " (SELECT sum(length(data)) FROM output WHERE run_id = r.id) != ?",
            (len("".join(f"{i}\n" for i in range(1, 3001))),),
        ).fetchone()[0]
        assert chatty == 0, "a chatty run lost output"
