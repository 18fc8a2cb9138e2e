"""The engine with real processes and a real SQLite file: statuses, retries, hooks, order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronflow.config import parse_config
from cronflow.engine import Engine, FlowRun
from cronflow.store import Store
from tests.conftest import alive, wait_until

LOGICAL = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lines: list[tuple[str, str, bytes]] = []

    def output(self, job: str, stream: str, data: bytes) -> None:
        self.lines.append((job, stream, data))

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        self.events.append((job, status))


def run_flow(
    tmp_path: Path,
    toml: str,
    jobs: tuple[str, ...] | None = None,
    max_parallel: int = 8,
    stop_after: float | None = None,
):
    config = parse_config(toml, str(tmp_path / "jobs.toml"))
    store = Store(tmp_path / "state" / "cronflow.db")
    recorder = Recorder()

    async def main():
        engine = Engine(store, max_parallel=max_parallel, observer=recorder)
        if stop_after is not None:
            asyncio.get_running_loop().call_later(stop_after, engine.stop.set)
        plan = FlowRun(config, "f", jobs or tuple(config.jobs), LOGICAL, "manual")
        return await engine.execute(plan)

    runs = asyncio.run(main())
    return {r.job: r for r in runs}, recorder, store


def test_success_env_and_workdir(tmp_path: Path) -> None:
    runs, rec, store = run_flow(
        tmp_path,
        """
[jobs.a]
command = '''
echo "$CRONFLOW_JOB $CRONFLOW_ATTEMPT $CRONFLOW_TRIGGER"
echo "$CRONFLOW_LOGICAL_TIME $CRONFLOW_LOGICAL_DATE $GREETING"
pwd'''
timezone = "Europe/Berlin"
env = { GREETING = "hi" }
""",
    )
    run = runs["a"]
    assert (run.status, run.attempts, run.exit_code) == ("success", 1, 0)
    lines = [c.data for c in store.output(run.run_id)]
    assert lines == [
        b"a 1 manual\n",
        b"2026-03-29T03:30:00+02:00 2026-03-29 hi\n",
        f"{tmp_path}\n".encode(),
    ]
    assert rec.events == [("a", "running"), ("a", "success")]
    assert run.cpu_seconds is not None and run.max_rss_kb


def test_retries_then_failure_with_hooks_in_order(tmp_path: Path) -> None:
    runs, rec, store = run_flow(
        tmp_path,
        """
[jobs.a]
command = 'echo attempt $CRONFLOW_ATTEMPT $CRONFLOW_TRIGGER; exit 3'
retries = 2
retry_delay = "0s"
on_retry = 'echo "retry after $CRONFLOW_ATTEMPT: $CRONFLOW_STATUS $CRONFLOW_EXIT_CODE"'
on_failure = 'echo "failed $CRONFLOW_STATUS $CRONFLOW_EXIT_CODE [$CRONFLOW_LOG_TAIL]"; exit 9'
on_success = 'echo never'
""",
    )
    run = runs["a"]
    assert (run.status, run.attempts, run.exit_code, run.note) == ("failed", 3, 3, "exit code 3")
    assert rec.events == [("a", "running"), ("a", "retrying")] * 2 + [
        ("a", "running"),
        ("a", "failed"),
        ("a", "hook_failed"),
    ]
    assert [(a.number, a.status, a.exit_code) for a in store.attempts(run.run_id)] == [
        (1, "failed", 3),
        (2, "failed", 3),
        (3, "failed", 3),
    ]
    hooks = store.hooks(run.run_id)
    assert [(h.attempt, h.hook, h.exit_code) for h in hooks] == [
        (1, "on_retry", 0),
        (2, "on_retry", 0),
        (3, "on_failure", 9),
    ]
    texts = [(c.attempt, c.hook_id is not None, c.data) for c in store.output(run.run_id)]
    assert texts == [
        (1, False, b"attempt 1 manual\n"),
        (1, True, b"retry after 1: failed 3\n"),
        (2, False, b"attempt 2 retry\n"),
        (2, True, b"retry after 2: failed 3\n"),
        (3, False, b"attempt 3 retry\n"),
        (3, True, b"failed failed 3 [attempt 3 retry\n"),
        (3, True, b"]\n"),
    ]


def test_hook_text_is_never_interpolated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    runs, _, store = run_flow(
        tmp_path,
        f"""
[jobs.a]
command = 'echo "$(touch {marker})"; exit 1'
on_failure = 'printf "%s\\n" "$CRONFLOW_LOG_TAIL"'
""",
    )
    # The job itself ran the substitution; the hook only printed the text it was given.
    assert marker.exists()
    marker.unlink()
    runs, _, store = run_flow(
        tmp_path,
        f"""
[jobs.b]
command = ['printf', '$(touch {marker})']
on_failure = 'echo "$CRONFLOW_LOG_TAIL"'
on_success = 'echo "$CRONFLOW_LOG_TAIL"'
""",
    )
    hook_lines = [c.data for c in store.output(runs["b"].run_id) if c.hook_id]
    assert hook_lines == [f"$(touch {marker})\n".encode()]
    assert not marker.exists()


def test_retry_waits_grow(tmp_path: Path) -> None:
    runs, _, store = run_flow(
        tmp_path,
        """
[jobs.a]
command = 'exit 1'
retries = 2
retry_delay = "1s"
retry_backoff = 1.0
""",
    )
    attempts = store.attempts(runs["a"].run_id)
    gaps = [
        (b.started_at - a.finished_at).total_seconds()
        for a, b in zip(attempts, attempts[1:], strict=False)
    ]
    assert all(0.9 <= gap < 5 for gap in gaps), gaps


def test_flow_order_and_run_if(tmp_path: Path) -> None:
    runs, rec, _ = run_flow(
        tmp_path,
        """
[jobs.extract]
command = "exit 1"
[jobs.transform]
after = ["extract"]
command = "echo never"
[jobs.alert]
after = ["extract"]
run_if = "failure"
command = "echo alert"
[jobs.cleanup]
after = ["transform", "alert"]
run_if = "always"
command = "true"
[jobs.ok]
command = "true"
[jobs.only-on-failure]
after = ["ok"]
run_if = "failure"
command = "true"
[jobs.after-skipped]
after = ["only-on-failure"]
command = "true"
""",
    )
    statuses = {name: run.status for name, run in runs.items()}
    assert statuses == {
        "extract": "failed",
        "transform": "upstream_failed",
        "alert": "success",
        "cleanup": "success",
        "ok": "success",
        "only-on-failure": "skipped",
        "after-skipped": "skipped",
    }
    order = [job for job, status in rec.events if status == "running"]
    assert order.index("cleanup") > order.index("alert")


def test_upstreams_outside_the_run_count_as_satisfied(tmp_path: Path) -> None:
    runs, _, _ = run_flow(
        tmp_path,
        """
[jobs.a]
command = "exit 1"
[jobs.b]
after = ["a"]
command = "true"
""",
        jobs=("b",),
    )
    assert list(runs) == ["b"] and runs["b"].status == "success"


def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    runs, _, _ = run_flow(
        tmp_path,
        f"""
[jobs.a]
command = 'sleep 300 & echo $! > {pidfile}; wait'
timeout = "1s"
kill_grace = "1s"
""",
    )
    run = runs["a"]
    assert (run.status, run.exit_code) == ("timeout", 143)
    assert run.note == "timed out after 1s (exit 143)"
    pid = int(pidfile.read_text())
    wait_until(lambda: not alive(pid), timeout=5, what="the grandchild to die")


def test_stop_cancels_running_and_waiting_jobs(tmp_path: Path) -> None:
    runs, _, _ = run_flow(
        tmp_path,
        """
[jobs.a]
command = "sleep 30"
[jobs.b]
after = ["a"]
command = "true"
""",
        stop_after=0.5,
    )
    assert (runs["a"].status, runs["b"].status) == ("canceled", "canceled")


def test_max_parallel_queues_jobs(tmp_path: Path) -> None:
    toml = "".join(f'[jobs.j{i}]\ncommand = "sleep 0.3"\n' for i in range(3))
    runs, _, store = run_flow(tmp_path, toml, max_parallel=1)
    spans = sorted(
        (store.attempts(r.run_id)[0].started_at, store.attempts(r.run_id)[0].finished_at)
        for r in runs.values()
    )
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_a_failure_handler_run_by_hand_runs(tmp_path: Path) -> None:
    runs, _, _ = run_flow(
        tmp_path,
        '[jobs.a]\ncommand = "true"\n[jobs.alert]\nafter = ["a"]\nrun_if = "failure"\n'
        'command = "true"\n',
        jobs=("alert",),
    )
    assert runs["alert"].status == "success"


def _engine_run(tmp_path: Path, toml: str, body):
    """Run `body(engine, config)` on a fresh loop with a real store; returns its result."""
    config = parse_config(toml, str(tmp_path / "jobs.toml"))
    store = Store(tmp_path / "state" / "cronflow.db")

    async def main():
        engine = Engine(store, max_parallel=1, observer=Recorder())
        return await body(engine, config)

    return asyncio.run(main()), store


def test_drain_cancels_a_retry_wait_and_a_queued_job_at_once_but_lets_attempts_finish(
    tmp_path: Path,
) -> None:
    toml = """
[jobs.flaky]
command = "exit 1"
retries = 3
retry_delay = "1h"
[jobs.busy]
command = "sleep 0.5; echo finished"
[jobs.waiting]
command = "echo never"
"""

    async def body(engine: Engine, config):
        plans = [FlowRun(config, j, (j,), LOGICAL, "schedule") for j in ("flaky", "busy")]
        flaky = asyncio.ensure_future(engine.execute(plans[0]))
        await asyncio.sleep(0)  # flaky takes the only slot first
        while engine.store.active_runs()[0].status != "retrying":
            await asyncio.sleep(0.01)
        busy = asyncio.ensure_future(engine.execute(plans[1]))
        while engine.store.active_runs()[-1].status != "running":
            await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(
            engine.execute(FlowRun(config, "waiting", ("waiting",), LOGICAL, "schedule"))
        )
        await asyncio.sleep(0.05)
        engine.drain.set()  # the daemon's SIGTERM
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(flaky, waiting)
        drained_in = asyncio.get_running_loop().time() - started
        return results, await busy, drained_in

    (results, busy, drained_in), store = _engine_run(tmp_path, toml, body)
    (flaky,), (waiting,) = results
    assert drained_in < 5  # not the hour of retry_delay
    assert (flaky.status, flaky.attempts) == ("canceled", 1)
    assert flaky.note == "stopped before a retry; last attempt: exit code 1"
    assert (waiting.status, waiting.attempts) == ("canceled", 0)
    assert busy[0].status == "success"  # a live attempt is not cut short by a drain


def test_spent_attempts_continue_the_budget_and_the_numbering(tmp_path: Path) -> None:
    toml = '[jobs.a]\ncommand = "echo $CRONFLOW_ATTEMPT; exit 1"\nretries = 2\nretry_delay = 0\n'

    async def body(engine: Engine, config):
        plan = FlowRun(config, "a", ("a",), LOGICAL, "retry", spent={"a": 1})
        return await engine.execute(plan)

    (run,), store = _engine_run(tmp_path, toml, body)
    assert (run.status, run.attempts) == ("failed", 3)  # attempts 2 and 3: the budget was 3
    assert [a.number for a in store.attempts(run.run_id)] == [2, 3]
    assert [c.data for c in store.output(run.run_id)] == [b"2\n", b"3\n"]


def test_a_store_that_refuses_writes_fails_the_run_and_records_it_later(
    tmp_path: Path, monkeypatch
) -> None:
    from cronflow.errors import CronflowError

    toml = '[jobs.a]\ncommand = "echo hello"\n'
    full = CronflowError("database or disk is full: x")

    async def body(engine: Engine, config):
        real_update = engine.store.update_run

        def refuse(*args, **kwargs):
            raise full

        monkeypatch.setattr(engine.store, "add_outputs", refuse)
        monkeypatch.setattr(engine.store, "update_run", refuse)
        engine.output_deadline, engine.output_retry = 0.3, 0.05
        plan = FlowRun(config, "a", ("a",), LOGICAL, "schedule")
        flow_run_id, run_ids = engine.create(plan)
        await engine.execute_created(plan, flow_run_id, run_ids)
        pending = dict(engine.unrecorded)
        with pytest.raises(CronflowError):
            engine.record_unrecorded()  # still full
        monkeypatch.setattr(engine.store, "update_run", real_update)  # space was freed
        engine.record_unrecorded()
        return run_ids["a"], pending, engine.unrecorded

    (run_id, pending, left), store = _engine_run(tmp_path, toml, body)
    assert pending[run_id]["status"] == "failed"
    assert left == {}
    run = store.get_run(run_id)
    assert (run.status, run.exit_code) == ("failed", 0)  # the job's own exit code is kept
    assert run.note == (
        "cronflow error: database or disk is full: x; 1 line (6 bytes) of output not stored"
    )
    marker = b"[cronflow: 1 line (6 bytes) of output not stored: database or disk is full: x]\n"
    assert [(c.stream, c.data) for c in store.output(run_id)] == [("marker", marker)]


def test_a_job_costs_three_write_transactions_and_ends_every_attempt(tmp_path: Path) -> None:
    """Created, started, ended: the last attempt's end goes in with the run's (issue 14); a
    retried attempt ends with the `retrying` write. Every attempt row still gets its end."""
    config = parse_config(
        '[jobs.a]\ncommand = "true"\n[jobs.b]\ncommand = "exit 3"\nretries = 1\nretry_delay = 0\n',
        str(tmp_path / "jobs.toml"),
    )
    store = Store(tmp_path / "state" / "cronflow.db")
    writes: list[str] = []
    store.conn.set_trace_callback(
        lambda sql: writes.append(sql) if sql == "BEGIN IMMEDIATE" else None
    )

    async def one(job: str) -> None:
        plan = FlowRun(config, job, (job,), LOGICAL, "manual")
        await Engine(store, max_parallel=1, observer=Recorder()).execute(plan)

    asyncio.run(one("a"))
    assert len(writes) == 3
    writes.clear()
    asyncio.run(one("b"))
    assert len(writes) == 5  # created; started, retrying; started, ended
    for job, statuses in (("a", ["success"]), ("b", ["failed", "failed"])):
        (run,) = store.history(job=job)
        attempts = store.attempts(run.run_id)
        assert [a.status for a in attempts] == statuses
        assert all(a.finished_at is not None and a.exit_code is not None for a in attempts)


def test_a_failure_after_a_runs_end_never_writes_another_end_over_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a hook surfaces, and a store error there is the hook's: the run's recorded
    `success` stands either way."""
    from cronflow import engine as engine_module

    config = parse_config("[jobs.a]\ncommand = 'true'\non_success = 'true'\n", "j.toml")
    store = Store(tmp_path / "s" / "cronflow.db")
    plan = FlowRun(config, "a", ("a",), datetime(2026, 1, 1, tzinfo=UTC), "manual")

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug in a hook")

    monkeypatch.setattr(engine_module._JobRun, "_run_hook_with", broken)
    with pytest.raises(RuntimeError):
        asyncio.run(Engine(store, max_parallel=1).execute(plan))
    assert (store.get_run(1).status, store.get_run(1).note) == ("success", None)
