"""`run`, backfill, `history` and `logs` through the real `cronflow` command."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import CRONFLOW, alive, cronflow, wait_until


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    return str(path)


def history(config: str, *args: str) -> list[dict]:
    result = cronflow("history", "--json", "-c", config, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_run_flow_with_live_output_summary_and_history(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
[jobs.hello]
command = "echo hello; echo oops >&2"
[jobs.world]
after = ["hello"]
command = ["echo", "world"]
""",
    )
    result = cronflow("run", "hello", "-c", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["hello | hello", "world | world"]
    assert "hello | oops" in result.stderr
    assert "RUN  JOB" in result.stdout
    runs = history(config)
    assert [(r["job"], r["status"], r["trigger"]) for r in runs] == [
        ("world", "success", "manual"),
        ("hello", "success", "manual"),
    ]
    assert set(runs[0]) >= {
        "run_id",
        "job",
        "flow_run_id",
        "logical_time",
        "trigger",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "duration",
        "exit_code",
        "note",
    }
    logs = cronflow("logs", "hello", "-c", config)
    assert logs.stdout.splitlines()[1:3] == ["hello", "oops"]
    only_err = cronflow("logs", "hello", "--stream", "err")
    assert only_err.stdout.splitlines()[1] == "oops"


def test_run_only_and_at_and_exit_code(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
[jobs.a]
command = 'echo "$CRONFLOW_LOGICAL_TIME"; exit 4'
timezone = "Europe/Berlin"
[jobs.b]
after = ["a"]
command = "true"
""",
    )
    result = cronflow("run", "a", "--only", "--at", "2026-03-29T02:30", "-c", config)
    assert result.returncode == 1
    # 02:30 does not exist that night in Berlin; Python resolves it forward.
    assert result.stdout.splitlines()[0].startswith("2026-03-29T0")
    assert [r["job"] for r in history(config)] == ["a"]
    assert history(config)[0]["exit_code"] == 4
    assert history(config, "--status", "failed")[0]["job"] == "a"
    assert history(config, "--status", "success") == []


def test_errors_are_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, '[jobs.a]\ncommand = "true"\n')
    assert cronflow("run", "ghost", "-c", config).stderr == (
        f"error: no job named 'ghost' in {config}\n"
    )
    assert cronflow("logs", "a", "-c", config).returncode == 1
    bad = cronflow("history", "--status", "good", "-c", config)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --status: unknown status")
    bad = cronflow("history", "--since", "last week", "-c", config)
    assert bad.returncode == 2 and "--since" in bad.stderr
    bad = cronflow("run", "a", "--from", "2026-01-01", "-c", config)
    assert bad.returncode == 2 and "both --from and --to" in bad.stderr


def test_backfill_skips_done_times_and_reruns(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        """
[jobs.daily]
schedule = "0 6 * * *"
timezone = "UTC"
command = 'echo "$CRONFLOW_LOGICAL_DATE"'
[jobs.after]
after = ["daily"]
command = "true"
""",
    )
    dry = cronflow(
        "run",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03T23:00",
        "--dry-run",
        "-c",
        config,
    )
    assert dry.stdout.splitlines() == [
        "2026-01-01T06:00:00+00:00",
        "2026-01-02T06:00:00+00:00",
        "2026-01-03T06:00:00+00:00",
    ]
    first = cronflow(
        "run", "daily", "--from", "2026-01-01", "--to", "2026-01-02T06:00", "-c", config
    )
    assert first.returncode == 0, first.stderr
    runs = history(config)
    assert [(r["job"], r["logical_time"], r["trigger"]) for r in reversed(runs)] == [
        ("daily", "2026-01-01T06:00:00+00:00", "backfill"),
        ("after", "2026-01-01T06:00:00+00:00", "backfill"),
        ("daily", "2026-01-02T06:00:00+00:00", "backfill"),
        ("after", "2026-01-02T06:00:00+00:00", "backfill"),
    ]
    second = cronflow(
        "run",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03T06:00",
        "--parallel",
        "2",
        "-c",
        config,
    )
    assert "skipping 2 logical times" in second.stderr
    assert len(history(config)) == 6
    cronflow("run", "daily", "--from", "2026-01-01", "--to", "2026-01-01", "--rerun", "-c", config)
    assert len(history(config)) == 6  # midnight holds no 06:00 fire
    cronflow(
        "run",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-01T07:00",
        "--rerun",
        "--only",
        "-c",
        config,
    )
    assert len(history(config)) == 7


def test_logs_follow_a_live_run_and_ctrl_c(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    config = write(
        tmp_path,
        f"""
[jobs.slow]
command = 'echo first; echo $$ > {pidfile}; sleep 300'
""",
    )
    runner = subprocess.Popen(
        [*CRONFLOW, "run", "slow", "-c", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(pidfile.exists, what="the job to start")
    follower = subprocess.Popen(
        [*CRONFLOW, "logs", "slow", "-f", "-c", config], stdout=subprocess.PIPE, text=True
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(follower.stdout), daemon=True)
    reader.start()
    wait_until(lambda: "first\n" in seen, what="the follower to show the first line")
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=20)
    assert runner.returncode == 130
    assert follower.wait(timeout=20) == 1  # the run ended canceled
    reader.join(timeout=5)
    follower.stdout.close()
    assert not alive(int(pidfile.read_text()))
    assert history(config)[0]["status"] == "canceled"


def test_a_stopped_backfill_says_so_and_keeps_only_what_began(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    config = write(
        tmp_path,
        f"""
[jobs.daily]
schedule = "0 6 * * *"
timezone = "UTC"
command = 'touch {marks}/$CRONFLOW_RUN_ID; sleep 300'
""",
    )
    runner = subprocess.Popen(
        [*CRONFLOW, "run", "daily", "--from", "2026-01-01", "--to", "2026-01-30", "-c", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: list(marks.iterdir()), what="the first job to start")
    runner.send_signal(signal.SIGINT)
    out, _ = runner.communicate(timeout=30)
    assert runner.returncode == 130
    summary = out.splitlines()[-1]
    assert summary == (
        "backfill stopped (SIGINT): 1 of 29 flow runs began, 1 failed or canceled,"
        " 28 not started, 0 skipped as done"
    )
    runs = history(config)
    assert [(r["status"], r["logical_time"][:10]) for r in runs] == [("canceled", "2026-01-01")]


def test_output_that_is_not_utf8_is_kept_and_shown_replaced(tmp_path: Path) -> None:
    config = write(tmp_path, """[jobs.latin]\ncommand = "printf 'caf\\\\351\\\\n'"\n""")
    result = cronflow("run", "latin", "-c", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "caf\ufffd"
    assert cronflow("logs", "latin").stdout.splitlines()[1] == "caf\ufffd"


def test_a_closed_pipe_does_not_kill_the_job(tmp_path: Path) -> None:
    done = tmp_path / "done"
    config = write(
        tmp_path,
        f"""
[jobs.chatty]
command = 'for i in $(seq 1 3000); do echo line $i; done; touch {done}'
""",
    )
    pipeline = subprocess.run(
        f"{' '.join(CRONFLOW)} run chatty -c {config} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pipeline.stdout == "line 1\n"
    assert done.exists()
    assert history(config)[0]["status"] == "success"


def test_extreme_command_line_times_are_usage_errors(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[jobs.h]\nschedule = "0 * * * *"\ncommand = "true"\n'
        '[jobs.leap]\nschedule = "0 0 29 2 *"\ncommand = "true"\n',
    )
    cases = [
        ("run", "h", "--from", "0001-01-01", "--to", "0001-01-02", "--dry-run"),
        ("run", "h", "--from", "2026-01-01", "--to", "9999-12-31T23:59", "--dry-run"),
        ("run", "h", "--from", "9999-12-31T23:00-05:00", "--to", "9999-12-31T23:59-05:00"),
        ("run", "h", "--only", "--at", "0001-01-01T00:00+05:00"),
        ("run", "h", "--only", "--at", "9999-12-31T23:59-05:00"),
        ("next", "h", "--from", "0001-01-01"),
        ("history", "--since", "0001-01-01"),
        ("history", "--since", "99999d"),
    ]
    for args in cases:
        result = cronflow(*args, "-c", config)
        assert (result.returncode, result.stdout) == (2, ""), args
        assert result.stderr.startswith("error: "), args
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)
    # The last years that are allowed still work, even when the next fire is past year 9999.
    edge = cronflow("run", "leap", "--from", "9998-01-01", "--to", "9998-12-31", "--dry-run",
                    "-c", config)  # fmt: skip
    assert (edge.returncode, edge.stdout, edge.stderr) == (0, "", "")
    assert history(config) == []


def test_an_unknown_job_is_refused_with_a_did_you_mean(tmp_path: Path) -> None:
    config = write(tmp_path, '[jobs.backup]\ncommand = "true"\n[jobs.report]\ncommand = "true"\n')
    for command in ("history", "logs", "next", "run", "pause", "resume"):
        result = cronflow(command, "bakcup", "-c", config)
        assert result.returncode == 1, command
        assert result.stderr.startswith("error: no job named 'bakcup' in "), command
        assert result.stderr.endswith(" (did you mean 'backup'?)\n"), (command, result.stderr)
    # Known but never run: an empty history, and logs that say so.
    assert history(config, "backup") == []
    never = cronflow("logs", "backup", "-c", config)
    assert (never.returncode, never.stderr) == (
        1,
        "error: no runs of job 'backup' in the history\n",
    )


def test_a_removed_job_keeps_its_history_even_without_a_job_file(tmp_path: Path) -> None:
    config = write(tmp_path, '[jobs.old]\ncommand = "echo bye"\n[jobs.kept]\ncommand = "true"\n')
    assert cronflow("run", "old", "-c", config).returncode == 0
    Path(config).write_text('[jobs.kept]\ncommand = "true"\n')
    assert [r["job"] for r in history(config, "old")] == ["old"]
    assert cronflow("logs", "old", "-c", config).stdout.splitlines()[1] == "bye"
    Path(config).unlink()
    assert [r["job"] for r in history(config, "old")] == ["old"]
    gone = cronflow("history", "odl", "-c", config)
    assert gone.returncode == 1
    assert gone.stderr == (
        f"error: no job named 'odl' in {config} or in the history (did you mean 'old'?)\n"
    )


def test_history_and_logs_name_the_host_of_a_remote_attempt(tmp_path: Path) -> None:
    config = write(tmp_path, '[jobs.a]\ncommand = "echo here"\n')
    assert cronflow("run", "a", "-c", config).returncode == 0
    plain = cronflow("history", "-c", config).stdout
    assert "HOST" not in plain.splitlines()[0]
    assert history(config)[0]["host"] is None
    assert "attempt 1 ──" in cronflow("logs", "a", "-c", config).stdout

    # A run that went to a worker, as the daemon records it (the worker reports its host).
    from datetime import UTC, datetime

    from cronflow.store import Store

    now = datetime.now(UTC)
    with Store(tmp_path / "state" / "cronflow" / "cronflow.db") as store:
        _, ids = store.create_flow_run("a", now, "manual", ["a"])
        store.start_attempt(ids["a"], 1, now, remote_id="r-1")
        store.attempt_started_remote(ids["a"], 1, now, "gpu1", 4242, None)
        store.add_output(ids["a"], 1, "out", now, b"there\n")
        store.finish_attempt(
            ids["a"], 1, finished_at=now, status="success", exit_code=0, cpu_seconds=0.0,
            max_rss_kb=None,
        )  # fmt: skip
        store.update_run(ids["a"], status="success", finished_at=now, exit_code=0)
    lines = cronflow("history", "-c", config).stdout.splitlines()
    assert lines[0].split()[-1] == "HOST"
    assert lines[1].split()[-1] == "gpu1" and lines[2].split()[-1] == "-"
    assert [r["host"] for r in history(config)] == ["gpu1", None]
    logs = cronflow("logs", "a", "-c", config).stdout.splitlines()
    assert logs[:2] == [f"── a run {ids['a']}, attempt 1 on gpu1 ──", "there"]


def test_a_signal_ignored_on_entry_stays_ignored(tmp_path: Path) -> None:
    """`nohup cronflow run ...` outlives its terminal; `cronflow run ... &` in a script ignores
    the Ctrl-C meant for the foreground: the signal stays ignored in the kernel's eyes, and
    the run goes on to succeed after it was sent."""
    started, go = tmp_path / "started", tmp_path / "go"
    config = write(
        tmp_path,
        f"[jobs.slow]\ncommand = 'touch {started}; while [ ! -e {go} ]; do sleep 0.02; done'\n",
    )
    for ignored, wrapper in ((signal.SIGHUP, ["nohup"]), (signal.SIGINT, [])):
        started.unlink(missing_ok=True)
        go.unlink(missing_ok=True)
        runner = subprocess.Popen(
            [*wrapper, *CRONFLOW, "run", "slow", "-c", config],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda sig=ignored: signal.signal(sig, signal.SIG_IGN),  # type: ignore[misc]
        )
        try:
            wait_until(started.exists, what="the job to start")
            assert ignored in _ignored_signals(runner.pid)
            runner.send_signal(ignored)
        finally:
            go.touch()  # the job ends, and with it the run, whatever happened above
            runner.communicate(timeout=30)
        assert runner.returncode == 0, ignored
        assert history(config)[0]["status"] == "success"


def _ignored_signals(pid: int) -> set[int]:
    """The signals `pid` ignores, from the SigIgn mask in /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(status.split("SigIgn:")[1].split()[0], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_a_stop_during_a_hook_says_what_it_waits_for(tmp_path: Path) -> None:
    hooked, go, err = tmp_path / "hooked", tmp_path / "go", tmp_path / "stderr"
    config = write(
        tmp_path,
        f"[jobs.h]\ncommand = 'true'\n"
        f"on_success = 'touch {hooked}; while [ ! -e {go} ]; do sleep 0.02; done'\n",
    )
    with err.open("w") as stderr:
        runner = subprocess.Popen(
            [*CRONFLOW, "run", "h", "-c", config], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        wait_until(hooked.exists, what="the hook to start")
        runner.send_signal(signal.SIGTERM)
        waiting = (
            "cronflow: h [1] stopping (waiting for its on_success hook to end, at most 60 s)\n"
        )
        wait_until(lambda: waiting in err.read_text(), what="the stopping line")
    finally:
        go.touch()  # the hook ends, and with it the run, whatever happened above
    assert runner.wait(timeout=30) == 143
    assert history(config)[0]["status"] == "success"


def test_backfill_progress_names_skipped_and_failed_flow_runs(tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    config = write(
        tmp_path,
        f"""
[jobs.d]
schedule = "0 6 * * *"
timezone = "UTC"
depends_on_past = true
command = 'test -e {marker} || {{ touch {marker}; exit 1; }}'
""",
    )
    result = cronflow("run", "d", "--from", "2026-01-01", "--to", "2026-01-02T06:00", "-c", config)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert lines == [
        "[1/2] 2026-01-01T06:00:00+00:00 failed",
        "[2/2] 2026-01-02T06:00:00+00:00 skipped",
    ]
