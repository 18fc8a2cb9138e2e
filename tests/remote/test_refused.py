"""A store locked past its busy timeout while a real worker runs the attempt: the engine and
its RemoteExecutor in this process (the store with a 0.1 s busy timeout), a real Redis and a
real `cronflow worker`. Events are acknowledged only once stored; past the output deadline the
job is stopped on its worker and the attempt recorded as ended."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cronflow.clock import Clock
from cronflow.config import parse_config
from cronflow.engine import Engine, FlowRun
from cronflow.store import Store
from tests.conftest import WriteLock, alive, wait_until
from tests.remote.conftest import SECRET, Cluster

LOGICAL = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def _run(
    cluster: Cluster, command: str, lock_seconds: float, deadline: float
) -> tuple[int, Engine, Store, WriteLock, int]:
    """Job `a` on a worker of queue q while another connection holds the store's write lock
    for `lock_seconds` once the run is `running`; returns also the stream's pending count."""
    from cronflow.remote import RemoteExecutor, Settings

    toml = (
        f'[executor]\nkind = "celery"\nbroker = "{cluster.redis.url}"\n'
        f"[jobs.a]\nqueue = 'q'\ncommand = '{command}'\nkill_grace = '1s'\n"
    )
    config = parse_config(toml, str(cluster.tmp_path / "jobs.toml"))
    store = Store(cluster.tmp_path / "state" / "cronflow.db", busy_timeout_ms=100)

    async def main() -> tuple[int, Engine, WriteLock, int]:
        settings = Settings(cluster.redis.url, SECRET.encode())
        executor = RemoteExecutor(settings, f"test-{uuid.uuid4().hex}", Clock())
        await executor.start()
        try:
            engine = Engine(store, max_parallel=1, remote=executor)
            engine.output_deadline, engine.output_retry = deadline, 0.05
            plan = FlowRun(config, "a", ("a",), LOGICAL, "manual")
            flow_run_id, run_ids = engine.create(plan)
            lock = WriteLock(store.path, lock_seconds, when_running=run_ids["a"]).start()
            await engine.execute_created(plan, flow_run_id, run_ids)
            pending = await executor.redis.xpending(executor.stream, "daemon")
            return run_ids["a"], engine, lock, int(pending["pending"])
        finally:
            await executor.close(forget=True)

    run_id, engine, lock, pending = asyncio.run(main())
    return run_id, engine, store, lock, pending


def test_a_lock_past_the_busy_timeout_holds_the_events_and_the_job_status_stands(
    cluster: Cluster,
) -> None:
    cluster.worker("w-l", "q")
    command = "for i in $(seq 1 20); do echo line $i; sleep 0.1; done"
    run_id, engine, store, lock, pending = _run(cluster, command, 1.0, deadline=10)
    assert lock.held.is_set()
    run = store.get_run(run_id)
    assert (run.status, run.exit_code, run.note) == ("success", 0, None)
    assert [c.data for c in store.output(run_id)] == [b"line %d\n" % i for i in range(1, 21)]
    (attempt,) = store.attempts(run_id)
    assert (attempt.status, attempt.host) == ("success", "w-l")
    assert pending == 0  # every event acknowledged, once stored
    assert not engine.unrecorded


def test_a_lock_past_the_output_deadline_stops_the_job_on_its_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.worker("w-x", "q")
    pidfile = tmp_path / "pid"
    command = f"echo $$ > {pidfile}; for i in $(seq 1 600); do echo line $i; sleep 0.1; done"
    run_id, engine, store, lock, _ = _run(cluster, command, 4.0, deadline=0.5)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=5)
    job = int(pidfile.read_text())
    wait_until(lambda: not alive(job), timeout=15, what="the remote job to be stopped")
    lock.released.wait(10)
    engine.record_unrecorded()
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert "stopped on its worker" in run.note
    assert "cronflow error: database is locked" in run.note
    assert "of output not stored" in run.note
    (attempt,) = store.attempts(run_id)
    assert attempt.status == "canceled" and attempt.finished_at is not None
    assert store.output(run_id)[-1].stream == "marker"
