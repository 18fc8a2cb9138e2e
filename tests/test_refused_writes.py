"""Output and run ends the store refuses (locked past the busy timeout, disk full): held,
retried, marked when given up, never a traceback; with a real store on a real file and the
write lock held from another connection. (The full disk itself: tests/faults/test_disk_full.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronflow import engine as engine_module
from cronflow import manual
from cronflow.config import parse_config
from cronflow.engine import Engine, FlowRun
from cronflow.errors import CronflowError
from cronflow.store import Store
from tests.conftest import Recorder, WriteLock

LOGICAL = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "cronflow.db", busy_timeout_ms=100)


def _run_under_lock(
    tmp_path: Path, command: str, lock_seconds: float, deadline: float
) -> tuple[int, Engine, Recorder, Store, WriteLock]:
    """Run job `a` while another connection holds the write lock for `lock_seconds` from the
    moment the run is `running`; the engine gives an ended attempt's output `deadline`."""
    config = parse_config(f"[jobs.a]\ncommand = '{command}'\n", str(tmp_path / "jobs.toml"))
    store = _store(tmp_path)
    recorder = Recorder()

    async def main() -> tuple[int, Engine, WriteLock]:
        engine = Engine(store, max_parallel=1, observer=recorder)
        engine.output_deadline, engine.output_retry = deadline, 0.05
        plan = FlowRun(config, "a", ("a",), LOGICAL, "manual")
        flow_run_id, run_ids = engine.create(plan)
        lock = WriteLock(store.path, lock_seconds, when_running=run_ids["a"]).start()
        await engine.execute_created(plan, flow_run_id, run_ids)
        return run_ids["a"], engine, lock

    run_id, engine, lock = asyncio.run(main())
    return run_id, engine, recorder, store, lock


def test_output_refused_by_a_short_lock_is_stored_in_full_and_the_exit_status_stands(
    tmp_path: Path,
) -> None:
    command = "sleep 0.3; for i in 1 2 3 4 5 6; do echo line $i; sleep 0.1; done"
    run_id, engine, recorder, store, lock = _run_under_lock(tmp_path, command, 0.6, deadline=5)
    assert lock.held.is_set()
    run = store.get_run(run_id)
    assert (run.status, run.exit_code, run.note) == ("success", 0, None)
    lines = [c.data for c in store.output(run_id)]
    assert lines == [b"line %d\n" % i for i in range(1, 7)]  # no gap, no marker
    # One line when the store first refused, one when it took the lines again; no more.
    assert len(recorder.told("output_refused")) == 1
    assert "database is locked" in recorder.told("output_refused")[0]
    assert len(recorder.told("output_stored")) == 1
    assert not engine.unrecorded


def test_output_refused_past_the_deadline_is_marked_and_fails_the_run_which_keeps_its_exit(
    tmp_path: Path,
) -> None:
    command = "sleep 0.2; echo one; echo two; exit 3"
    run_id, engine, recorder, store, lock = _run_under_lock(tmp_path, command, 1.2, deadline=0.3)
    assert run_id in engine.unrecorded  # the end too was refused: kept, not lost
    assert store.get_run(run_id).status == "running"
    lock.released.wait(10)
    engine.record_unrecorded()  # what the daemon does at its next wake-up
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert run.exit_code == 3 and run.cpu_seconds is not None and run.max_rss_kb
    assert run.note.startswith("exit code 3; cronflow error: database is locked")
    assert run.note.endswith("2 lines (8 bytes) of output not stored")
    (attempt,) = store.attempts(run_id)
    assert (attempt.status, attempt.exit_code) == ("failed", 3)
    (marker,) = store.output(run_id)
    assert marker.stream == "marker"
    assert marker.data.startswith(b"[cronflow: 2 lines (8 bytes) of output not stored: database")
    assert len(recorder.told("output_lost")) == 1


def test_a_successful_job_whose_output_is_lost_fails_with_the_reason(tmp_path: Path) -> None:
    run_id, engine, _, store, lock = _run_under_lock(tmp_path, "sleep 0.2; echo x", 1.2, 0.2)
    lock.released.wait(10)
    engine.record_unrecorded()
    run = store.get_run(run_id)
    assert (run.status, run.exit_code) == ("failed", 0)
    assert run.note.startswith("cronflow error: database is locked")
    assert [a.status for a in store.attempts(run_id)] == ["success"]  # the job itself did


def test_held_output_is_bounded_the_oldest_lines_give_way_to_one_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "HELD_BYTES", 5 * (8 + engine_module.ROW_COST))
    command = "sleep 0.2; for i in $(seq 10 29); do echo line $i; done"
    run_id, engine, _, store, _ = _run_under_lock(tmp_path, command, 1.0, deadline=5)
    assert not engine.unrecorded
    chunks = store.output(run_id)
    assert chunks[0].stream == "marker"
    assert chunks[0].data.startswith(b"[cronflow: 15 lines (120 bytes) of output not stored")
    assert [c.data for c in chunks[1:]] == [b"line %d\n" % i for i in range(25, 30)]
    run = store.get_run(run_id)
    assert (run.status, run.exit_code) == ("failed", 0)
    assert "15 lines (120 bytes) of output not stored" in run.note


def _manual_plan(tmp_path: Path, command: str) -> manual.FlowRun:
    config = parse_config(f"[jobs.a]\ncommand = '{command}'\n", str(tmp_path / "jobs.toml"))
    return manual.plan(config, "a", True, LOGICAL, "manual")


def test_cronflow_run_retries_its_final_write_and_records_the_end_once_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "OUTPUT_DEADLINE", 0.2)
    monkeypatch.setattr(manual, "END_RETRY", 0.05)
    store = _store(tmp_path)
    lock = WriteLock(store.path, 1.5, when_running=1).start()
    outcome = manual.run_plans(store, [_manual_plan(tmp_path, "sleep 0.2; echo x")], max_parallel=1)
    assert lock.held.is_set()
    (run,) = outcome.runs
    assert (run.status, run.exit_code, outcome.exit_code) == ("failed", 0, 1)
    assert store.output(run.run_id)[0].stream == "marker"


def test_cronflow_run_whose_final_write_cannot_be_made_names_the_run_and_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "OUTPUT_DEADLINE", 0.2)
    monkeypatch.setattr(manual, "END_DEADLINE", 0.5)
    monkeypatch.setattr(manual, "END_RETRY", 0.05)
    store = _store(tmp_path)
    lock = WriteLock(store.path, 2.5, when_running=1).start()
    with pytest.raises(CronflowError) as refused:
        manual.run_plans(store, [_manual_plan(tmp_path, "sleep 0.2; echo x")], max_parallel=1)
    message = refused.value.message
    assert message.startswith("could not record how run 1 (a, failed) ended: database is locked")
    assert "marks it lost" in message
    assert refused.value.exit_code == 1
    lock.released.wait(10)
    assert store.get_run(1).status == "running"  # left to the next `cronflow run` or daemon


def test_a_hooks_lost_output_alone_does_not_fail_cronflow_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's end is stored; only the marker for its hook's output cannot be: a warning,
    not an error saying the run is still `running` (it is `success`)."""
    monkeypatch.setattr(engine_module, "OUTPUT_DEADLINE", 0.2)
    monkeypatch.setattr(manual, "END_DEADLINE", 0.5)
    monkeypatch.setattr(manual, "END_RETRY", 0.05)
    store = _store(tmp_path)
    toml = "[jobs.a]\ncommand = 'echo ok'\non_success = 'sleep 0.3; echo hook'\n"
    config = parse_config(toml, str(tmp_path / "jobs.toml"))
    plan = manual.plan(config, "a", True, LOGICAL, "manual")
    recorder = Recorder()
    lock = WriteLock(store.path, 3.0, when_running=1, status="success").start()
    outcome = manual.run_plans(store, [plan], max_parallel=1, observer=recorder)
    lock.released.wait(10)
    assert [r.status for r in outcome.runs] == ["success"]
    assert store.get_run(1).status == "success"
    assert recorder.told("unrecorded")[-1].startswith(
        "the note that its hook's output was not stored could not be stored: database is locked"
    )


def test_a_stopping_daemon_records_the_ends_the_store_refused_before_it_exits(
    tmp_path: Path,
) -> None:
    """Left unrecorded, the next start would find the run `running`, mark it lost, and maybe
    retry a job that had ended."""
    from cronflow.daemon import Daemon
    from cronflow.systemd import Notifier

    config = tmp_path / "jobs.toml"
    config.write_text("[jobs.a]\ncommand = 'true'\n")
    store = _store(tmp_path)
    daemon = Daemon(config, store, notifier=Notifier(None))
    daemon.engine = Engine(store, max_parallel=1)
    plan = FlowRun(parse_config(config.read_text(), str(config)), "a", ("a",), LOGICAL, "manual")
    _, run_ids = daemon.engine.create(plan)
    lock = WriteLock(store.path, 1.5).start()
    assert lock.held.wait(5)
    daemon.engine.record_end(run_ids["a"], status="success", exit_code=0)
    assert daemon.engine.unrecorded  # refused: the lock outlasts the busy timeout
    asyncio.run(daemon._shutdown())
    assert not daemon.engine.unrecorded
    assert store.get_run(run_ids["a"]).status == "success"
