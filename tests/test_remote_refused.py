"""A remote attempt's events the store refuses (locked past the busy timeout): the batch is
held and not acknowledged, committed again at the follower's next turn, and acknowledged only
once stored; past the output deadline its lines are given up with a marker, a job still
running is canceled on its worker, and the attempt and run are recorded as ended. The real
`_Follower` turns the events into the engine's callbacks; only the broker is a fake."""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery", reason="the celery extra is not installed")

from cronflow import engine as engine_module  # noqa: E402
from cronflow import remote  # noqa: E402
from cronflow.clock import Clock  # noqa: E402
from cronflow.config import parse_config  # noqa: E402
from cronflow.engine import Engine, FlowRun  # noqa: E402
from cronflow.store import Store  # noqa: E402
from tests.conftest import Recorder, WriteLock  # noqa: E402

LOGICAL = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
TOML = (
    '[executor]\nkind = "celery"\nbroker = "redis://localhost:1/0"\n'
    "[jobs.a]\ncommand = 'true'\nqueue = 'q'\n"
)


class FakeBroker:
    """What RemoteExecutor gives its follower (acks, cancels, the lease), with a worker
    script that sends the attempt's events; everything else is the real `_Follower`."""

    def __init__(self, store: Store, script: Any) -> None:
        self.store = store
        self.script = script
        self.clock = Clock()
        self.detach = False
        self.last_contact = time.monotonic()
        self.settings = remote.Settings("redis://fake", b"s")
        self.acked: list[tuple[str, int]] = []  # (event id, output rows stored when acked)
        self.canceled: list[str] = []
        self.cancel_seen = asyncio.Event()
        self.sent: dict[str, str] = {}  # event id -> type
        self.seq = 0
        self.n = 0

    # -- what the follower calls
    async def ack(self, *ids: str) -> None:
        for entry_id in ids:
            self.acked.append((entry_id, self.store.output_count(1, 1)))

    async def cancel(self, remote_id: str) -> None:
        self.canceled.append(remote_id)
        self.cancel_seen.set()

    async def lease_alive(self, remote_id: str) -> bool:
        return True

    def _complain(self, what: str, exc: Exception) -> None:
        raise AssertionError(f"{what}: {exc}")

    _failed = remote.RemoteExecutor._failed

    # -- the engine's side
    async def run(self, command, on_output, stop, *, queue, queue_timeout, about, on_sent,
                  on_start, flush):  # fmt: skip  # noqa: ANN001, ANN202
        on_sent("rid")
        handle = remote._Handle(asyncio.Queue())
        follower = remote._Follower(self, handle, "rid", on_output, flush, on_start)  # type: ignore[arg-type]
        worker = asyncio.create_task(self.script(self, handle))
        try:
            return await follower.follow(stop, command, queue, queue_timeout, time.time() + 60)
        finally:
            worker.cancel()

    # -- what a worker sends
    def send(self, handle: remote._Handle, kind: str, **fields: Any) -> None:
        self.n += 1
        entry_id = f"0-{self.n}"
        self.sent[entry_id] = kind
        handle.events.put_nowait((entry_id, {"id": "rid", "type": kind, **fields}))

    def started(self, handle: remote._Handle) -> None:
        self.send(handle, "started", host="w1", pid=123, start=456, at=_now())

    def output(self, handle: remote._Handle, *lines: bytes) -> None:
        chunks = []
        for line in lines:
            chunks.append([self.seq, "out", _now(), base64.b64encode(line).decode()])
            self.seq += 1
        self.send(handle, "output", chunks=chunks)

    def finished(self, handle: remote._Handle, status: str = "success", code: int = 0) -> None:
        self.send(
            handle, "finished", status=status, exit_code=code, started_at=_now(),
            finished_at=_now(), cpu_seconds=0.01, max_rss_kb=1000, tail="", host="w1",
        )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _run(
    tmp_path: Path, script: Any, lock_seconds: float, deadline: float
) -> tuple[int, Engine, FakeBroker, Store, WriteLock, Recorder]:
    """Job `a` on the fake worker while another connection holds the write lock for
    `lock_seconds` from the moment the run is `running` (the worker has started it)."""
    config = parse_config(TOML, str(tmp_path / "jobs.toml"))
    store = Store(tmp_path / "state" / "cronflow.db", busy_timeout_ms=100)
    broker = FakeBroker(store, script)
    recorder = Recorder()

    async def main() -> tuple[int, Engine, WriteLock]:
        engine = Engine(store, max_parallel=1, observer=recorder, remote=broker)  # type: ignore[arg-type]
        engine.output_deadline, engine.output_retry = deadline, 0.05
        plan = FlowRun(config, "a", ("a",), LOGICAL, "manual")
        flow_run_id, run_ids = engine.create(plan)
        lock = WriteLock(store.path, lock_seconds, when_running=run_ids["a"]).start()
        await engine.execute_created(plan, flow_run_id, run_ids)
        return run_ids["a"], engine, lock

    run_id, engine, lock = asyncio.run(main())
    return run_id, engine, broker, store, lock, recorder


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "RETRY_SECONDS", 0.05, raising=False)
    # Batches past these would have made `add` write (and drop) on its own.
    monkeypatch.setattr(engine_module, "FLUSH_ROWS", 2)
    monkeypatch.setattr(engine_module, "HELD_BYTES", 3 * (8 + engine_module.ROW_COST))


def test_a_short_lock_holds_the_batch_unacknowledged_and_the_job_status_stands(
    tmp_path: Path,
) -> None:
    async def script(broker: FakeBroker, handle: remote._Handle) -> None:
        broker.started(handle)
        await asyncio.sleep(0.3)  # the lock is taken once the run is `running`
        for i in range(1, 7):
            broker.output(handle, b"line %d\n" % i, b"more %d\n" % i)
            await asyncio.sleep(0.1)
        broker.finished(handle)

    run_id, engine, broker, store, lock, recorder = _run(tmp_path, script, 0.8, deadline=5)
    assert lock.held.is_set()
    run = store.get_run(run_id)
    assert (run.status, run.exit_code, run.note) == ("success", 0, None)
    expected = [line for i in range(1, 7) for line in (b"line %d\n" % i, b"more %d\n" % i)]
    assert [c.data for c in store.output(run_id)] == expected  # no gap, no marker
    (attempt,) = store.attempts(run_id)
    assert (attempt.status, attempt.host) == ("success", "w1")
    assert broker.canceled == []
    # Every event acknowledged once, and each output event only after its lines were stored.
    assert sorted(i for i, _ in broker.acked) == sorted(broker.sent)
    stored_lines = 0
    for entry_id, count in broker.acked:
        if broker.sent[entry_id] == "output":
            stored_lines += 2
            assert count >= stored_lines
    assert len(recorder.told("output_refused")) == 1
    assert len(recorder.told("output_stored")) == 1
    assert not engine.unrecorded


def test_a_lock_past_the_deadline_cancels_the_worker_and_ends_the_attempt_with_a_marker(
    tmp_path: Path,
) -> None:
    async def script(broker: FakeBroker, handle: remote._Handle) -> None:
        broker.started(handle)
        await asyncio.sleep(0.3)
        broker.output(handle, b"one\n")
        broker.output(handle, b"two\n")
        await broker.cancel_seen.wait()  # the job runs until it is told to stop
        await asyncio.sleep(60)  # its report never comes: nobody waits for it

    started = time.monotonic()
    run_id, engine, broker, store, lock, recorder = _run(tmp_path, script, 2.0, deadline=0.4)
    assert time.monotonic() - started < 2.0  # not held until the lock went
    assert broker.canceled == ["rid"]  # the worker is told to stop its job
    assert run_id in engine.unrecorded  # the end too was refused: kept, not lost
    lock.released.wait(10)
    engine.record_unrecorded()  # what the daemon does at its next wake-up
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert run.note.startswith("stopped on its worker: its output could not be stored;")
    assert "cronflow error: database is locked" in run.note
    assert run.note.endswith("2 lines (8 bytes) of output not stored")
    (attempt,) = store.attempts(run_id)
    assert attempt.status == "canceled" and attempt.finished_at is not None
    (marker,) = store.output(run_id)
    assert marker.stream == "marker"
    assert marker.data.startswith(b"[cronflow: 2 lines (8 bytes) of output not stored: database")
    assert len(recorder.told("output_lost")) == 1
    # Nothing was stored but the marker: no event was acknowledged before the end was recorded
    # (the engine acknowledges them with it; here that end went in later, deferred).
    assert all(count == 0 for _, count in broker.acked)


def test_a_finished_event_held_past_the_deadline_keeps_the_jobs_own_end(tmp_path: Path) -> None:
    async def script(broker: FakeBroker, handle: remote._Handle) -> None:
        broker.started(handle)
        await asyncio.sleep(0.3)
        broker.output(handle, b"x\n")
        broker.finished(handle, "failed", 3)

    run_id, engine, broker, store, lock, _ = _run(tmp_path, script, 1.5, deadline=0.3)
    assert broker.canceled == []  # it had ended: nothing to stop
    lock.released.wait(10)
    engine.record_unrecorded()
    run = store.get_run(run_id)
    assert (run.status, run.exit_code) == ("failed", 3)
    assert run.note.startswith("exit code 3; cronflow error: database is locked")
    (attempt,) = store.attempts(run_id)
    assert (attempt.status, attempt.exit_code) == ("failed", 3)
    assert [c.stream for c in store.output(run_id)] == ["marker"]


def test_a_refused_end_is_written_again_before_the_finished_event_is_acknowledged(
    tmp_path: Path,
) -> None:
    async def script(broker: FakeBroker, handle: remote._Handle) -> None:
        broker.started(handle)
        await asyncio.sleep(0.2)
        broker.output(handle, b"x\n")
        await asyncio.sleep(0.2)
        lock = WriteLock(broker.store.path, 0.5).start()  # only the end meets it
        await asyncio.to_thread(lock.held.wait, 10)
        broker.finished(handle)

    run_id, engine, broker, store, _, recorder = _run(tmp_path, script, 0.0, deadline=3)
    run = store.get_run(run_id)
    assert (run.status, run.note) == ("success", None)
    (attempt,) = store.attempts(run_id)
    assert attempt.status == "success"
    assert [c.data for c in store.output(run_id)] == [b"x\n"]
    assert sorted(i for i, _ in broker.acked) == sorted(broker.sent)
    assert not recorder.told("end_refused")


def test_a_remote_that_ignores_a_refused_commit_leaves_the_end_to_the_settle(
    tmp_path: Path,
) -> None:
    """The reviewer's case: a remote returns once its last commit was refused (a short lock).
    The run is not failed with a cronflow error, and its attempt does not stay `running`:
    what is held is written by the attempt's settle, within the deadline."""
    config = parse_config(TOML, str(tmp_path / "jobs.toml"))
    store = Store(tmp_path / "state" / "cronflow.db", busy_timeout_ms=100)
    canceled: list[str] = []

    async def _noop() -> None:
        return None

    class FakeRemote:
        async def run(self, command, on_output, stop, *, queue, queue_timeout, about, on_sent,
                      on_start, flush):  # fmt: skip  # noqa: ANN001, ANN202
            on_sent("rid")
            on_start("w1", 123, 456, None)
            await asyncio.sleep(0.3)  # the lock starts once the run is `running`
            now = datetime.now(UTC)
            on_output("out", now, b"hello\n")
            assert flush() is False  # refused: held, the batch not acknowledged
            await asyncio.sleep(0.1)
            from cronflow.runner import AttemptResult

            return AttemptResult("success", 0, now, datetime.now(UTC), 0.0, 1, b"", None,
                                 host="w1", settle=_noop)  # fmt: skip

        async def cancel(self, remote_id: str) -> None:
            canceled.append(remote_id)

    async def main() -> tuple[int, Engine]:
        engine = Engine(store, max_parallel=1, remote=FakeRemote())  # type: ignore[arg-type]
        engine.output_retry = 0.05
        plan = FlowRun(config, "a", ("a",), LOGICAL, "manual")
        flow_run_id, run_ids = engine.create(plan)
        lock = WriteLock(store.path, 1.0, when_running=run_ids["a"]).start()
        await engine.execute_created(plan, flow_run_id, run_ids)
        lock.released.wait(10)
        return run_ids["a"], engine

    run_id, engine = asyncio.run(main())
    assert not engine.unrecorded
    run = store.get_run(run_id)
    assert (run.status, run.note) == ("success", None)
    (attempt,) = store.attempts(run_id)
    assert attempt.status == "success" and attempt.finished_at is not None
    assert [c.data for c in store.output(run_id)] == [b"hello\n"]
    assert canceled == []
