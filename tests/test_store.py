"""The store against a real SQLite file: migrations, modes, every call, concurrency, errors."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from cronflow import processes
from cronflow.clock import VirtualClock
from cronflow.errors import CronflowError
from cronflow.store import (
    _RUN_COLUMNS,
    MIGRATIONS,
    AttemptRecord,
    HookRecord,
    RunRecord,
    Store,
)

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "cronflow.db"


@pytest.fixture
def store(db_path: Path, clock: VirtualClock):
    with Store(db_path, clock=clock) as opened:
        yield opened


def add_run(store: Store, job: str, status: str = "success", when: float = 0, **fields) -> int:
    """A finished run of `job` with logical time T0+when, created and finished at the clock."""
    flow_run = store.new_flow_run(job, at(when), "schedule")
    run_id = store.new_run(flow_run, job, at(when), "schedule", status=status)
    if fields:
        store.update_run(run_id, **fields)
    return run_id


# --- opening and migrating ---------------------------------------------------------------


def test_migrates_a_blank_database(db_path: Path, store: Store) -> None:
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    names = [row[0] for row in raw.execute("SELECT name FROM migrations ORDER BY rowid")]
    assert names == [m.__name__ for m in MIGRATIONS] and names[0] == "m001_initial"
    applied = raw.execute("SELECT applied_at FROM migrations").fetchone()[0]
    assert applied == int(T0.timestamp()) * 1_000_000
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"flow_runs", "runs", "attempts", "hooks", "output", "state", "paused"} <= tables
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_connection_settings(store: Store) -> None:
    conn = store.conn
    assert conn.isolation_level is None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopening_is_a_no_op(db_path: Path, clock: VirtualClock) -> None:
    with Store(db_path, clock=clock) as first:
        run_id = add_run(first, "backup")
    clock.advance(60)
    with Store(db_path, clock=clock) as second:
        assert second.get_run(run_id) is not None
        rows = second.conn.execute("SELECT name, applied_at FROM migrations").fetchall()
    assert rows == [(m.__name__, int(T0.timestamp()) * 1_000_000) for m in MIGRATIONS]


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(CronflowError, match="newer cronflow"):
        Store(db_path)


def test_file_and_folder_modes(tmp_path: Path) -> None:
    old = os.umask(0)  # the laxest umask: modes must not depend on it
    try:
        path = tmp_path / "deep" / "state" / "cronflow.db"
        with Store(path) as store:
            add_run(store, "backup")
            names = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in names}
            assert modes == {p.name: 0o600 for p in names}
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_existing_folder_is_left_alone_and_lax_files_are_tightened(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "cronflow.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


def test_a_state_folder_others_can_write_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    folder.chmod(0o777)
    Store(folder / "cronflow.db").close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_closed_store_refuses_work(store: Store) -> None:
    store.close()
    store.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        store.get_state("x")


# --- writes and reads ---------------------------------------------------------------------


def test_a_run_through_its_life(store: Store, clock: VirtualClock) -> None:
    flow_run = store.new_flow_run("etl", at(0), "manual")
    run_id = store.new_run(flow_run, "extract", at(0), "manual")
    queued = store.get_run(run_id)
    assert queued == RunRecord(
        run_id, "extract", flow_run, at(0), "manual", "queued", 0,
        None, None, None, None, None, None, None,
    )  # fmt: skip
    store.update_run(run_id, status="running", started_at=at(1))
    store.start_attempt(run_id, 1, at(1))
    assert store.get_run(run_id).attempts == 1
    store.finish_attempt(
        run_id, 1, finished_at=at(3), status="failed", exit_code=2, cpu_seconds=0.5, max_rss_kb=900
    )
    store.update_run(run_id, status="retrying")
    store.start_attempt(run_id, 2, at(10))
    store.finish_attempt(
        run_id, 2, finished_at=at(12.5), status="success", exit_code=0, cpu_seconds=0.25,
        max_rss_kb=1000,
    )  # fmt: skip
    store.update_run(
        run_id, status="success", finished_at=at(12.5), exit_code=0, cpu_seconds=0.75,
        max_rss_kb=1000, note="second try",
    )  # fmt: skip
    run = store.get_run(run_id)
    assert (run.status, run.attempts, run.started_at, run.finished_at) == (
        "success",
        2,
        at(1),
        at(12.5),
    )
    assert run.duration == 11.5
    assert run.note == "second try" and run.cpu_seconds == 0.75 and run.max_rss_kb == 1000
    assert store.attempts(run_id) == [
        AttemptRecord(run_id, 1, at(1), at(3), "failed", 2, 0.5, 900),
        AttemptRecord(run_id, 2, at(10), at(12.5), "success", 0, 0.25, 1000),
    ]
    assert store.runs_in_flow_run(flow_run) == [run]
    assert store.latest_run("extract") == run
    assert store.latest_run("nobody") is None
    assert store.get_run(999) is None


def test_update_run_changes_only_given_fields(store: Store) -> None:
    run_id = add_run(store, "a", status="running", started_at=at(5), note="keep")
    store.update_run(run_id, exit_code=3)
    run = store.get_run(run_id)
    assert (run.status, run.started_at, run.note, run.exit_code) == ("running", at(5), "keep", 3)
    store.update_run(run_id)  # nothing given: nothing happens
    assert store.get_run(run_id) == run
    with pytest.raises(KeyError):
        store.update_run(12345, status="failed")
    with pytest.raises(ValueError, match="status"):
        store.update_run(run_id, status="exploded")
    with pytest.raises(ValueError, match="naive"):
        store.update_run(run_id, finished_at=datetime(2026, 1, 1))


def test_times_come_back_as_utc_whatever_zone_went_in(store: Store) -> None:
    berlin_like = timezone(timedelta(hours=1))
    logical = datetime(2026, 3, 1, 7, 0, 0, 123456, tzinfo=berlin_like)
    flow_run = store.new_flow_run("f", logical, "schedule")
    run = store.get_run(store.new_run(flow_run, "f", logical, "schedule"))
    assert run.logical_time == logical and run.logical_time.tzinfo == UTC
    assert run.logical_time.microsecond == 123456


def test_to_json_shape(store: Store) -> None:
    run_id = add_run(store, "a", status="failed", started_at=at(1), finished_at=at(4), exit_code=1)
    data = store.get_run(run_id).to_json()
    assert list(data) == [
        "run_id", "job", "flow_run_id", "logical_time", "trigger", "status", "attempts",
        "started_at", "finished_at", "duration", "exit_code", "note", "cpu_seconds", "max_rss_kb",
        "host",
    ]  # fmt: skip
    assert data["logical_time"] == "2026-03-01T06:00:00+00:00"
    assert data["started_at"] == "2026-03-01T06:00:01+00:00"
    assert data["duration"] == 3.0 and data["note"] is None and data["attempts"] == 0


def test_hooks(store: Store) -> None:
    run_id = add_run(store, "a", status="failed")
    hook_id = store.start_hook(run_id, 1, "on_failure", at(5))
    assert store.hooks(run_id) == [HookRecord(hook_id, run_id, 1, "on_failure", at(5), None, None)]
    store.finish_hook(hook_id, at(6), 0)
    assert store.hooks(run_id) == [HookRecord(hook_id, run_id, 1, "on_failure", at(5), at(6), 0)]


def test_output_order_and_filters(store: Store) -> None:
    run_id = add_run(store, "a", status="running")
    store.add_output(run_id, 1, "out", at(1), b"one\n")
    store.add_outputs(
        [
            (run_id, 1, "err", at(1.5), b"oops\n"),
            (run_id, 1, "marker", at(2), b"[... 10 bytes dropped ...]\n"),
            (run_id, 2, "out", at(3), b"two\n"),
        ]
    )
    hook_id = store.start_hook(run_id, 2, "on_failure", at(4))
    store.add_output(run_id, 2, "err", at(4), b"hook says\n", hook_id=hook_id)
    everything = store.output(run_id)
    assert [c.data for c in everything] == [
        b"one\n", b"oops\n", b"[... 10 bytes dropped ...]\n", b"two\n", b"hook says\n",
    ]  # fmt: skip
    assert [c.id for c in everything] == sorted(c.id for c in everything)
    assert everything[4].hook_id == hook_id and everything[4].at == at(4)
    assert isinstance(everything[0].data, bytes)
    assert [c.stream for c in store.output(run_id, stream="out")] == ["out", "marker", "out"]
    assert [c.stream for c in store.output(run_id, stream="err")] == ["err", "marker", "err"]
    assert [c.data for c in store.output(run_id, attempt=2)] == [b"two\n", b"hook says\n"]
    tail = store.output(run_id, after_id=everything[2].id)
    assert [c.data for c in tail] == [b"two\n", b"hook says\n"]
    assert store.output(run_id + 1) == []
    with pytest.raises(ValueError):
        store.add_output(run_id, 1, "stdout", at(1), b"x")
    with pytest.raises(ValueError):
        store.output(run_id, stream="marker")
    with pytest.raises(TypeError):
        store.add_output(run_id, 1, "out", at(1), "text")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        store.finish_hook(hook_id + 100, at(5), 0)


def test_add_outputs_is_fast(store: Store) -> None:
    run_id = add_run(store, "chatty", status="running")
    rows = [(run_id, 1, "out", at(i / 1000), b"line %d of output\n" % i) for i in range(100_000)]
    started = time.perf_counter()
    store.add_outputs(rows)
    assert time.perf_counter() - started < 2.0
    assert len(store.output(run_id, after_id=0)) == 100_000


def test_state_and_paused(store: Store) -> None:
    assert store.get_state("boot_id") is None
    store.set_state("boot_id", "abc")
    store.set_state("boot_id", "def")
    assert store.get_state("boot_id") == "def"
    store.delete_state("boot_id")
    assert store.get_state("boot_id") is None
    assert store.paused_jobs() == set()
    store.set_paused(["etl"], True, at(0))
    store.set_paused(["etl"], True, at(9))  # pausing twice keeps the first instant
    store.set_paused(["backup"], True, at(1))
    assert store.paused_jobs() == {"etl", "backup"}
    assert store.conn.execute("SELECT since FROM paused WHERE job='etl'").fetchone()[0] == (
        int(T0.timestamp()) * 1_000_000
    )
    store.set_paused(["etl", "never"], False, at(2))
    assert store.paused_jobs() == {"backup"}


# --- queries over many runs ----------------------------------------------------------------


@pytest.fixture
def busy_store(store: Store, clock: VirtualClock) -> Store:
    """12 runs over jobs a/b/c, one an hour, with a pattern of statuses."""
    statuses = ["success", "failed", "success", "timeout", "lost", "success"]
    statuses += ["upstream_failed", "skipped", "success", "canceled", "missed", "failed"]
    for i, status in enumerate(statuses):
        add_run(store, "abc"[i % 3], status=status, when=i * 3600)
        clock.advance(3600)
    return store


def test_history_newest_first_with_filters(busy_store: Store) -> None:
    store = busy_store
    assert [r.run_id for r in store.history()] == list(range(12, 0, -1))
    assert [r.run_id for r in store.history(limit=3)] == [12, 11, 10]
    assert [r.run_id for r in store.history(limit=None)] == list(range(12, 0, -1))
    assert [r.run_id for r in store.history("a")] == [10, 7, 4, 1]
    assert [r.run_id for r in store.history(status="failed")] == [12, 2]
    assert [r.run_id for r in store.history("c", status="failed")] == [12]
    assert store.history("a", status="failed") == []
    # run k was recorded at T0 + (k-1) hours
    assert [r.run_id for r in store.history(since=at(9 * 3600))] == [12, 11, 10]
    assert [r.run_id for r in store.history("b", since=at(4 * 3600))] == [11, 8, 5]
    assert [r.run_id for r in store.history("b", since=at(4 * 3600), limit=1)] == [11]
    assert store.history(since=at(99 * 3600)) == []
    assert store.history("nobody") == []


def test_history_since_after_a_backwards_clock_step(store: Store, clock: VirtualClock) -> None:
    early = add_run(store, "a")  # recorded at T0
    clock.advance(7200)
    late = add_run(store, "a")  # T0+2h
    clock.advance(-3600 * 3)  # the clock steps back to T0-1h: recorded as T0+2h, not before
    stepped = add_run(store, "a")
    assert [r.run_id for r in store.history(since=at(-1800))] == [stepped, late, early]
    assert [r.run_id for r in store.history(since=at(3600))] == [stepped, late]
    assert [r.run_id for r in store.history(since=at(7201))] == []
    clock.advance(3600 * 4)  # T0+3h
    latest = add_run(store, "a")
    assert [r.run_id for r in store.history(since=at(7201))] == [latest]


def test_recent_failures_and_last_status(busy_store: Store) -> None:
    store = busy_store
    assert [r.run_id for r in store.recent_failures()] == [12, 10, 7, 5, 4]
    assert [r.status for r in store.recent_failures(limit=2)] == ["failed", "canceled"]
    assert store.last_status(["a", "b", "c", "nobody"]) == {
        "a": "canceled",
        "b": "missed",
        "c": "failed",
    }
    assert store.last_status([]) == {}


def test_unfinished_runs_and_mark_lost(store: Store) -> None:
    done = add_run(store, "a", status="success", finished_at=at(1))
    queued = add_run(store, "b", status="queued")
    running = add_run(store, "c", status="running", started_at=at(1))
    store.start_attempt(running, 1, at(1), pgid=4242, pgid_start=777)
    retrying = add_run(store, "d", status="retrying", started_at=at(1), attempts=1)
    assert [r.run_id for r in store.active_runs()] == [queued, running, retrying]
    unfinished = store.unfinished_runs()
    assert [u.run.run_id for u in unfinished] == [queued, running, retrying]
    me = processes.me()
    assert {(u.owner_pid, u.owner_start, u.boot_id) for u in unfinished} == {
        (me.pid, me.start, me.boot)
    }
    assert [u.groups for u in unfinished] == [(), ((4242, 777),), ()]
    lost = store.mark_lost({queued: "the daemon died", running: "x", retrying: "y"}, at(100))
    assert [r.run_id for r in lost] == [queued, running, retrying]
    assert [(r.status, r.finished_at, r.note) for r in lost] == [
        ("lost", at(100), "the daemon died"), ("lost", at(100), "x"), ("lost", at(100), "y")
    ]  # fmt: skip
    assert store.attempts(running)[0].status == "lost"
    assert store.attempts(running)[0].finished_at == at(100)
    assert store.active_runs() == [] and store.unfinished_runs() == []
    assert store.get_run(done).status == "success"
    assert store.mark_lost({done: "again", running: "again"}, at(200)) == []


def test_remote_attempts_record_their_host_and_remote_id(store: Store) -> None:
    run_id = add_run(store, "train", status="queued")
    store.start_attempt(run_id, 1, at(1), remote_id="r-1")  # sent; no worker has it yet
    assert store.get_run(run_id).host is None
    assert store.unfinished_runs()[0].remote == ((1, "r-1"),)
    assert store.unfinished_runs()[0].groups == ()
    store.attempt_started_remote(run_id, 1, at(1), "gpu1", 4242, 777)
    first = store.attempts(run_id)[0]
    assert (first.host, first.remote_id) == ("gpu1", "r-1")
    assert store.unfinished_runs()[0].groups == ((4242, 777),)
    store.finish_attempt(
        run_id, 1, finished_at=at(2), status="lost", exit_code=None, cpu_seconds=None,
        max_rss_kb=None,
    )  # fmt: skip
    store.start_attempt(run_id, 2, at(3), host="gpu2", remote_id="r-2")
    assert store.unfinished_runs()[0].remote == ((2, "r-2"),)
    assert store.get_run(run_id).host == "gpu2"  # the latest attempt's
    assert store.history()[0].to_json()["host"] == "gpu2"
    local = add_run(store, "report", status="running")
    store.start_attempt(local, 1, at(4), pgid=99)
    assert store.get_run(local).host is None
    assert store.attempts(local)[0] == AttemptRecord(
        local, 1, at(4), None, "running", None, None, None
    )
    with pytest.raises(KeyError):
        store.attempt_started_remote(run_id, 9, at(1), "gpu1", 1, None)


def test_succeeded_logical_times(store: Store) -> None:
    for hour, status in [(0, "success"), (1, "failed"), (2, "success"), (2, "success"),
                         (3, "success"), (4, "failed")]:  # fmt: skip
        add_run(store, "etl", status=status, when=hour * 3600)
    add_run(store, "other", status="success", when=3600)
    found = store.succeeded_logical_times("etl", at(0), at(3 * 3600))
    assert found == {at(0), at(2 * 3600), at(3 * 3600)}  # both ends included
    assert all(t.tzinfo == UTC for t in found)
    assert store.succeeded_logical_times("etl", at(3601), at(7000)) == set()


def test_prune(store: Store, clock: VirtualClock) -> None:
    old = add_run(store, "a", status="failed", finished_at=at(10))
    store.start_attempt(old, 1, at(1))
    hook = store.start_hook(old, 1, "on_failure", at(11))
    store.add_output(old, 1, "out", at(2), b"old\n")
    store.add_output(old, 1, "out", at(12), b"hook\n", hook_id=hook)
    skipped = add_run(store, "b", status="skipped")  # no finished_at: recorded at T0
    still_running = add_run(store, "c", status="running", started_at=at(1))
    clock.advance(3600)
    orphan_flow_run = store.new_flow_run("z", at(0), "manual")  # never got a run (old enough)
    clock.advance(3600)
    recent = add_run(store, "a", status="success", finished_at=at(7200))
    store.add_output(recent, 1, "out", at(7200), b"new\n")

    assert store.prune(at(3600 * 1.5)) == 2
    assert store.get_run(old) is None and store.get_run(skipped) is None
    assert store.get_run(still_running) is not None and store.get_run(recent) is not None
    assert store.attempts(old) == [] and store.hooks(old) == [] and store.output(old) == []
    assert [c.data for c in store.output(recent)] == [b"new\n"]
    flow_runs = {row[0] for row in store.conn.execute("SELECT id FROM flow_runs")}
    assert flow_runs == {
        store.get_run(still_running).flow_run_id,
        store.get_run(recent).flow_run_id,
    }
    assert orphan_flow_run not in flow_runs
    assert store.prune(at(3600 * 1.5)) == 0
    # ids keep ascending after a prune removed the newest rows
    assert store.prune(at(10**6)) == 1
    assert add_run(store, "a") > recent


def test_prune_works_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import cronflow.store

    monkeypatch.setattr(cronflow.store, "_PRUNE_BATCH", 3)
    for i in range(10):
        add_run(store, "a", finished_at=at(i))
    assert store.prune(at(100)) == 10
    assert store.history() == []
    assert store.conn.execute("SELECT count(*) FROM flow_runs").fetchone()[0] == 0


def test_history_uses_indexes(store: Store) -> None:
    def plan(sql: str, *params: object) -> str:
        rows = store.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return " | ".join(row[3] for row in rows)

    select = f"SELECT {_RUN_COLUMNS} FROM runs"
    by_job = plan(f"{select} WHERE job = ? ORDER BY id DESC LIMIT 20", "a")
    assert "INDEX runs_job (" in by_job and "TEMP B-TREE" not in by_job
    both = plan(f"{select} WHERE job = ? AND status = ? ORDER BY id DESC LIMIT 20", "a", "x")
    assert "INDEX runs_job_status (" in both and "TEMP B-TREE" not in both
    last = plan(f"{select} ORDER BY id DESC LIMIT 20")
    assert "TEMP B-TREE" not in last


# --- concurrency and errors -------------------------------------------------------------


def test_reader_reads_while_a_writer_writes(db_path: Path) -> None:
    with Store(db_path) as writer, Store(db_path, busy_timeout_ms=50) as reader:
        committed = add_run(writer, "a")
        with writer._write() as db:  # hold the write lock mid-transaction
            db.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (committed,))
            started = time.perf_counter()
            assert reader.get_run(committed).status == "success"  # the last committed state
            assert [r.run_id for r in reader.history()] == [committed]
            assert time.perf_counter() - started < 0.5
        assert reader.get_run(committed).status == "failed"


WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from cronflow.store import Store

    path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with Store(path) as store:
        flow_run = store.new_flow_run(name, moment, "manual")
        for i in range(count):
            run_id = store.new_run(flow_run, name, moment, "manual")
            if store.get_run(run_id).status == "queued":  # read, then write
                store.update_run(run_id, status="success", exit_code=0)
            store.add_output(run_id, 1, "out", moment, b"line\\n")
    """
)


def test_two_writer_processes_never_see_a_lock_error(db_path: Path) -> None:
    Store(db_path).close()  # migrate first, so both writers start on the same schema
    count = 1500
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db_path), name, str(count)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for name in ("left", "right")
    ]
    errors = [w.communicate(timeout=60)[1].decode() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    with Store(db_path) as store:
        assert store.last_status(["left", "right"]) == {"left": "success", "right": "success"}
        counts = dict(store.conn.execute("SELECT job, count(*) FROM runs GROUP BY job"))
        assert counts == {"left": count, "right": count}
        assert store.conn.execute("SELECT count(*) FROM output").fetchone()[0] == 2 * count


def test_processes_opening_a_blank_database_at_once_migrate_it_once(db_path: Path) -> None:
    code = "import sys; from cronflow.store import Store; Store(sys.argv[1]).close()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db_path)], env=env, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in openers]
    assert [p.returncode for p in openers] == [0] * 4, errors
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT count(*) FROM migrations").fetchone()[0] == len(MIGRATIONS)
    raw.close()


def test_locked_beyond_the_busy_timeout_is_a_user_error(db_path: Path) -> None:
    with Store(db_path, busy_timeout_ms=100) as store:
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            started = time.perf_counter()
            with pytest.raises(CronflowError) as caught:
                store.set_state("k", "v")
            assert time.perf_counter() - started >= 0.09
        finally:
            other.execute("ROLLBACK")
            other.close()
        message = caught.value.message
        assert message.startswith("database is locked: ") and str(db_path) in message
        assert "\n" not in message and caught.value.exit_code == 1
        assert not store.conn.in_transaction
        store.set_state("k", "v")  # usable again once the lock is gone
        assert store.get_state("k") == "v"


def test_disk_full_is_a_user_error(store: Store) -> None:
    run_id = add_run(store, "a", status="running")
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(CronflowError, match=r"disk is full: .*cronflow\.db"):
        store.add_outputs([(run_id, 1, "out", at(1), b"x" * 4000)] * 50)
    assert not store.conn.in_transaction
    assert store.output(run_id) == []


def test_read_only_is_a_user_error(store: Store) -> None:
    store.conn.execute("PRAGMA query_only = ON")
    with pytest.raises(CronflowError, match=r"read-only: .*cronflow\.db"):
        store.set_state("k", "v")


def test_not_a_database_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "cronflow.db"
    path.write_bytes(b"this is not SQLite at all, just some text " * 100)
    with pytest.raises(CronflowError, match="not a cronflow database"):
        Store(path)


def test_unopenable_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CronflowError, match="cannot open database"):
        Store(tmp_path / "file" / "cronflow.db")


def test_bugs_are_not_disguised(store: Store) -> None:
    with pytest.raises(sqlite3.IntegrityError):  # a run of a flow run that does not exist
        store.new_run(424242, "a", at(0), "manual")
    with pytest.raises(sqlite3.IntegrityError):  # the same attempt twice
        run_id = add_run(store, "a")
        store.start_attempt(run_id, 1, at(0))
        store.start_attempt(run_id, 1, at(0))


def test_create_flow_run_records_every_job_in_one_go(store: Store) -> None:
    flow_run, ids = store.create_flow_run("etl", at(0), "schedule", ["a", "b"])
    assert [r.run_id for r in store.runs_in_flow_run(flow_run)] == [ids["a"], ids["b"]]
    assert {r.status for r in store.runs_in_flow_run(flow_run)} == {"queued"}
    _, missed = store.create_flow_run(
        "etl", at(60), "catchup", ["a"], status="missed", note="missed 3 fires", finished_at=at(61)
    )
    run = store.get_run(missed["a"])
    assert (run.status, run.note, run.finished_at) == ("missed", "missed 3 fires", at(61))


def test_start_attempt_marks_the_run_running_from_its_first_attempt(store: Store) -> None:
    _, ids = store.create_flow_run("f", at(0), "manual", ["a"])
    store.start_attempt(ids["a"], 1, at(5))
    store.start_attempt(ids["a"], 2, at(9))
    run = store.get_run(ids["a"])
    assert (run.status, run.started_at, run.attempts) == ("running", at(5), 2)


def test_state_keys_in_one_transaction_and_checkpoints(store: Store) -> None:
    store.set_states({"a": "1", "b": "2"})
    assert (store.get_state("a"), store.get_state("b")) == ("1", "2")
    store.defer_checkpoints()
    store.checkpoint()
    assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10000


# --- read-only stores (history, logs, list, status) ---------------------------------------

AS_ROOT = os.geteuid() == 0  # root writes through any mode bits, so chmod proves nothing


def test_a_read_only_store_reads_and_cannot_write(db_path: Path, clock: VirtualClock) -> None:
    with Store(db_path, clock=clock) as writer:
        run_id = add_run(writer, "backup")
        writer.set_paused(["backup"], True, at(0))
    with Store(db_path, readonly=True) as reader:
        assert reader.get_run(run_id).job == "backup"
        assert reader.paused_jobs() == {"backup"}
        # Proof independent of file modes (tests may run as root): the connection is mode=ro.
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM runs")
        with pytest.raises(CronflowError, match=r"read-only: .*cronflow\.db"):
            reader.set_state("k", "v")
        assert reader.conn.execute("PRAGMA query_only").fetchone()[0] == 0  # it is the URI
    with Store(db_path) as writer:
        assert writer.get_run(run_id) is not None and writer.get_state("k") is None


def test_a_read_only_store_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cronflow.db"
    with pytest.raises(CronflowError, match="cannot open database"):
        Store(path, readonly=True)
    assert not (tmp_path / "state").exists()


def test_a_read_only_store_leaves_file_modes_alone(db_path: Path) -> None:
    Store(db_path).close()
    db_path.chmod(0o644)
    Store(db_path, readonly=True).close()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o644


def _schema(path: Path, version: int) -> None:
    """A database as cronflow `version` left it: the first `version` migrations only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    for step in MIGRATIONS[:version]:
        step(raw)
    raw.execute(f"PRAGMA user_version = {version}")
    raw.close()


def test_a_reader_does_not_migrate_an_older_schema_and_still_reads_it(db_path: Path) -> None:
    _schema(db_path, 1)  # before m002 added runs.pid, which no read query uses
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("INSERT INTO flow_runs VALUES (1, 'a', 0, 'manual', 0)")
    raw.execute(
        "INSERT INTO runs (id, flow_run_id, job, logical_time, trigger, status, created_at)"
        " VALUES (7, 1, 'a', 0, 'manual', 'success', 0)"
    )
    raw.close()
    with Store(db_path, readonly=True) as reader:
        assert [r.run_id for r in reader.history()] == [7]
        assert reader.last_status(["a"]) == {"a": "success"}
        assert reader.recent_failures() == [] and reader.active_runs() == []
        assert reader.conn.execute("PRAGMA user_version").fetchone()[0] == 1
    with Store(db_path) as writer:  # the next writer migrates it
        assert writer.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert writer.get_run(7).status == "success"


def test_a_reader_of_a_schema_before_hosts_shows_none(db_path: Path) -> None:
    _schema(db_path, 3)  # before m004 added attempts.host and remote_id
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("INSERT INTO flow_runs VALUES (1, 'a', 0, 'manual', 0)")
    raw.execute(
        "INSERT INTO runs (id, flow_run_id, job, logical_time, trigger, status, created_at)"
        " VALUES (7, 1, 'a', 0, 'manual', 'running', 0)"
    )
    raw.execute(
        "INSERT INTO attempts (run_id, number, started_at, status) VALUES (7, 1, 0, 'running')"
    )
    raw.close()
    with Store(db_path, readonly=True) as reader:
        assert [(r.run_id, r.host) for r in reader.history()] == [(7, None)]
        assert [(a.host, a.remote_id) for a in reader.attempts(7)] == [(None, None)]
        assert [u.remote for u in reader.unfinished_runs()] == [()]
        assert reader.get_run(7).to_json()["host"] is None
    with Store(db_path) as writer:
        assert writer.get_run(7).host is None


def test_a_reader_explains_a_schema_it_cannot_read(db_path: Path) -> None:
    _schema(db_path, 0)
    with pytest.raises(CronflowError, match=r"older schema \(0; .*`cronflow daemon`"):
        Store(db_path, readonly=True)
    Store(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(CronflowError, match="newer cronflow"):
        Store(db_path, readonly=True)


def test_a_reader_sees_what_a_live_writer_commits(db_path: Path) -> None:
    with Store(db_path) as writer, Store(db_path, readonly=True) as reader:
        first = add_run(writer, "a")
        assert [r.run_id for r in reader.history()] == [first]
        second = add_run(writer, "a")
        assert [r.run_id for r in reader.history()] == [second, first]


def _die_with_a_commit_in_the_wal(db_path: Path) -> None:
    """A writer that is killed: its -wal (holding its commit) and -shm stay behind."""
    code = (
        "import os, sys; from cronflow.store import Store; s = Store(sys.argv[1]);"
        " s.set_state('k', 'v'); os._exit(0)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code, str(db_path)], env=env, check=True)


def test_a_writer_repairs_wal_files_a_read_only_reader_left_read_only(db_path: Path) -> None:
    # A `mode=ro` reader of a 0400 database in a writable folder creates -wal/-shm with the
    # database's mode and cannot delete them; once the user makes the database writable
    # again, the next writer must not fail on them.
    _die_with_a_commit_in_the_wal(db_path)
    leftovers = [Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
    for path in leftovers:
        path.chmod(0o400)
    with Store(db_path) as writer:
        add_run(writer, "a")
        assert writer.get_state("k") == "v"
        assert [stat.S_IMODE(p.stat().st_mode) for p in leftovers] == [0o600, 0o600]


@pytest.mark.skipif(AS_ROOT, reason="as root, chmod does not stop writes: nothing to prove")
@pytest.mark.parametrize("live_writer", [False, True], ids=["closed", "daemon-open"])
def test_a_reader_reads_a_read_only_database_in_a_read_only_folder(
    db_path: Path, live_writer: bool
) -> None:
    writer = Store(db_path)
    run_id = add_run(writer, "a")
    if not live_writer:
        writer.close()  # SQLite deletes -wal/-shm: the reader must do without them
    db_path.chmod(0o400)
    db_path.parent.chmod(0o500)
    try:
        with Store(db_path, readonly=True) as reader:
            assert reader.get_run(run_id).job == "a"
            if live_writer:
                later = add_run(writer, "a")
                assert reader.get_run(later) is not None
        assert sorted(p.name for p in db_path.parent.iterdir()) == (
            ["cronflow.db", "cronflow.db-shm", "cronflow.db-wal"] if live_writer
            else ["cronflow.db"]
        )
    finally:
        db_path.parent.chmod(0o700)
        writer.close()


@pytest.mark.skipif(AS_ROOT, reason="as root, chmod does not stop writes: nothing to prove")
def test_a_wal_without_its_shm_in_a_read_only_folder_is_one_clear_error(db_path: Path) -> None:
    _die_with_a_commit_in_the_wal(db_path)
    Path(f"{db_path}-shm").unlink()
    db_path.parent.chmod(0o500)
    try:
        with pytest.raises(CronflowError, match=r"folder is read-only and cronflow\.db-shm"):
            Store(db_path, readonly=True)
    finally:
        db_path.parent.chmod(0o700)
