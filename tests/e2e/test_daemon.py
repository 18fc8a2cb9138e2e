"""The real daemon as a subprocess, with `@every 1s` jobs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow import spawn
from cronflow.store import Store
from tests.conftest import CRONFLOW, alive, cronflow, wait_until
from tests.e2e.conftest import Daemon, launch

EVERY_SECOND = '[jobs.tick]\nschedule = "@every 1s"\ncommand = "echo tick"\n'


def test_fires_repeatedly_and_stops_cleanly(daemons, tmp_path: Path) -> None:
    d = launch(
        daemons, tmp_path, EVERY_SECOND + '[jobs.tock]\nafter = ["tick"]\ncommand = "true"\n'
    )
    wait_until(lambda: len(d.runs("tick")) >= 3, what="three fires")
    runs = d.runs("tick")
    assert {r["trigger"] for r in runs} == {"schedule"}
    times = sorted(datetime.fromisoformat(r["logical_time"]) for r in runs)
    assert all(t.microsecond == 0 for t in times)
    started = [datetime.fromisoformat(r["started_at"]) for r in runs if r["started_at"]]
    lags = [
        (s - datetime.fromisoformat(r["logical_time"])).total_seconds()
        for s, r in zip(started, runs, strict=False)
    ]
    assert all(0 <= lag < 1 for lag in lags), lags
    status = d.status()
    assert status["daemon"]["running"] and status["daemon"]["pid"] == d.proc.pid
    assert d.stop() == 0
    assert not d.status()["daemon"]["running"]
    assert any(r["job"] == "tock" and r["status"] == "success" for r in d.runs())


def test_second_daemon_is_refused(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, EVERY_SECOND)
    second = cronflow("daemon", "-c", str(d.config), timeout=20)
    assert second.returncode == 1
    assert f"another cronflow daemon is running (pid {d.proc.pid})" in second.stderr


def test_hot_reload_and_a_bad_edit_keeps_the_old_jobs(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, EVERY_SECOND)
    d.config.write_text(EVERY_SECOND + '[jobs.new]\nschedule = "@every 1s"\ncommand = "true"\n')
    wait_until(lambda: d.runs("new"), what="the added job to fire")
    d.config.write_text(EVERY_SECOND + "[jobs.broken]\nretires = 3\n")
    wait_until(lambda: "job file invalid" in d.log.read_text(), what="the error to be logged")
    assert "retires" in d.status()["daemon"]["config_error"]
    before = len(d.runs("new"))
    wait_until(lambda: len(d.runs("new")) >= before + 2, what="old jobs to keep firing")
    d.config.write_text(EVERY_SECOND)
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_until(lambda: d.status()["daemon"]["config_error"] is None, what="the fix")


def test_a_job_file_others_can_write_keeps_the_old_jobs(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, EVERY_SECOND)
    # "started" comes before the first load: a mode changed before it would refuse the file
    # at once, leaving no old jobs to keep.
    wait_until(lambda: "loaded " in d.log.read_text(), what="the first load")
    d.config.chmod(0o666)
    d.config.write_text(EVERY_SECOND + '[jobs.new]\nschedule = "@every 1s"\ncommand = "true"\n')
    wait_until(lambda: d.status()["daemon"]["config_error"], timeout=30, what="the refusal")
    assert "writable by others (mode 0666)" in d.status()["daemon"]["config_error"]
    before = len(d.runs())
    wait_until(lambda: len(d.runs()) >= before + 2, timeout=30, what="old jobs to keep firing")
    assert d.runs("new") == []
    d.config.chmod(0o644)  # no edit, no SIGHUP: the daemon notices the mode changed
    wait_until(lambda: d.runs("new"), timeout=30, what="the fixed file to load")


def test_sigterm_lets_a_running_job_finish(daemons, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    d = launch(
        daemons,
        tmp_path,
        f"""
[jobs.slow]
schedule = "@every 1s"
command = "touch {marker}; sleep 1; echo done"
""",
    )
    wait_until(marker.exists, what="the job to start")
    assert d.stop() == 0
    runs = d.runs("slow")
    assert runs[0]["status"] == "success"
    assert "canceled" not in {r["status"] for r in runs}


def test_stop_timeout_cancels_a_long_job(daemons, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    d = launch(
        daemons,
        tmp_path,
        f"""
[daemon]
stop_timeout = "1s"
[jobs.slow]
schedule = "@every 1s"
command = "touch {marker}; sleep 60"
""",
    )
    wait_until(marker.exists, what="the job to start")
    assert d.stop() == 0
    assert d.runs("slow")[0]["status"] == "canceled"


def test_kill_9_then_restart_stops_the_orphan_before_marking_lost(daemons, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    toml = f'[jobs.slow]\nschedule = "@every 1s"\ncommand = "echo $$ > {pidfile}; exec sleep 60"\n'
    d = launch(daemons, tmp_path, toml)
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the job to start")
    d.stop(signal.SIGKILL)
    orphan = int(pidfile.read_text())
    assert alive(orphan)  # kill -9 leaves the job running, orphaned
    # (`queued` when the kill came between the spawn and the record of its start)
    assert d.runs("slow")[0]["status"] in ("running", "queued")
    d2 = launch(daemons, tmp_path, toml)
    wait_until(lambda: any(r["status"] == "lost" for r in d2.runs("slow")), what="lost")
    assert not alive(orphan)  # stopped before the run was declared lost
    lost = [r for r in d2.runs("slow") if r["status"] == "lost"]
    assert lost[0]["note"] == (
        "the daemon stopped while this ran; its processes still running were stopped (1)"
    )


def test_overlap_skip_records_skipped(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, '[jobs.slow]\nschedule = "@every 1s"\ncommand = "sleep 3"\n')
    wait_until(lambda: any(r["status"] == "skipped" for r in d.runs("slow")), what="a skip")
    skipped = [r for r in d.runs("slow") if r["status"] == "skipped"]
    assert "still going" in skipped[0]["note"]


def test_max_parallel_bounds_running_jobs(daemons, tmp_path: Path) -> None:
    toml = "[daemon]\nmax_parallel = 1\n" + "".join(
        f'[jobs.j{i}]\nschedule = "@every 1s"\ncommand = "sleep 0.5"\noverlap = "allow"\n'
        for i in range(3)
    )
    d = launch(daemons, tmp_path, toml)
    wait_until(
        lambda: len([r for r in d.runs() if r["status"] == "success"]) >= 4,
        timeout=20,
        what="several runs",
    )
    d.stop()
    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in d.runs()
        if r["status"] == "success"
    )
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - timedelta(milliseconds=5)


def test_pause_and_resume(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, EVERY_SECOND)
    wait_until(lambda: d.runs("tick"), what="a first fire")
    assert cronflow("pause", "tick", "-c", str(d.config)).stdout == "paused flow tick\n"
    count = len(d.runs("tick"))
    assert cronflow("list", "--json", "-c", str(d.config)).stdout.count('"paused": true') == 1
    resume_at = datetime.now(UTC) + timedelta(seconds=2.5)
    wait_until(lambda: datetime.now(UTC) > resume_at, what="time to pass")
    assert len(d.runs("tick")) <= count + 1  # a fire already under way may finish
    cronflow("resume", "tick", "-c", str(d.config))
    wait_until(lambda: len(d.runs("tick")) >= count + 3, what="fires after resume")


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("none", [("missed", "catchup")]),
        ("latest", [("success", "catchup")]),
    ],
)
def test_missed_fires_while_down(daemons, tmp_path: Path, catchup: str, expected) -> None:
    toml = f'[jobs.m]\nschedule = "*/1 * * * *"\ncatchup = "{catchup}"\ncommand = "true"\n'
    d = launch(daemons, tmp_path, toml)
    d.stop()
    with Store(d.state / "cronflow.db") as store:
        earlier = (datetime.now(UTC) - timedelta(minutes=10, seconds=30)).replace(second=0)
        store.set_state("accounted:m", earlier.isoformat())
    d2 = launch(daemons, tmp_path, toml)
    wait_until(
        lambda: [
            r
            for r in d2.runs("m")
            if r["trigger"] == "catchup" and r["status"] != "queued" and r["status"] != "running"
        ],
        what="the catch-up decision",
    )
    d2.stop()
    catchups = [(r["status"], r["trigger"]) for r in d2.runs("m") if r["trigger"] == "catchup"]
    assert catchups == expected
    if catchup == "none":
        note = [r["note"] for r in d2.runs("m") if r["status"] == "missed"][0]
        count = int(note.split()[1])
        assert 9 <= count <= 11 and " fires from " in note, note


def test_sd_notify_ready_and_stopping(daemons, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    try:
        d = launch(daemons, tmp_path, EVERY_SECOND, env={"NOTIFY_SOCKET": address})
        messages = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert d.stop() == 0
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
    finally:
        sock.close()


def test_daemon_without_job_file_waits_for_it(daemons, tmp_path: Path) -> None:
    d = Daemon(tmp_path, None)
    daemons.append(d)
    d.start()
    wait_until(lambda: "waiting for it" in d.log.read_text(), what="the waiting message")
    d.config.write_text(EVERY_SECOND)
    wait_until(lambda: d.runs("tick"), what="the new file's job to fire")


def test_overlap_queue_keeps_one_waiting_run(daemons, tmp_path: Path) -> None:
    d = launch(
        daemons,
        tmp_path,
        """
[jobs.slow]
schedule = "@every 1s"
overlap = "queue"
command = "sleep 1.5"
""",
    )
    wait_until(
        lambda: len([r for r in d.runs("slow") if r["status"] == "success"]) >= 2,
        timeout=20,
        what="two queued runs to finish",
    )
    d.stop()
    runs = sorted(d.runs("slow"), key=lambda r: r["run_id"])
    done = [r for r in runs if r["status"] == "success"]
    assert any(r["status"] == "skipped" for r in runs)  # a third fire found the queue full
    first, second = done[0], done[1]
    gap = (
        datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(first["finished_at"])
    ).total_seconds()
    assert 0 <= gap < 0.5  # the queued run started as soon as the previous one ended


def test_starting_the_daemon_leaves_a_live_manual_run_alone(daemons, tmp_path: Path) -> None:
    started = tmp_path / "started"
    config = tmp_path / "jobs.toml"
    config.write_text(f'[jobs.slow]\ncommand = "touch {started}; sleep 2"\nretries = 1\n')
    manual = subprocess.Popen(
        [*CRONFLOW, "run", "slow", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(started.exists, what="the manual run to start")
        d = launch(daemons, tmp_path, None)
        assert manual.wait(timeout=30) == 0
        d.stop()
    finally:
        if manual.poll() is None:
            manual.kill()
            manual.wait()
    runs = d.runs("slow")
    assert [(r["status"], r["trigger"]) for r in runs] == [("success", "manual")]
    assert "lost" not in d.log.read_text()


def test_sigterm_cancels_a_run_waiting_for_its_retry_at_once(daemons, tmp_path: Path) -> None:
    toml = """
[jobs.flaky]
schedule = "@reboot"
command = "exit 3"
retries = 2
retry_delay = "1h"
"""
    d = launch(daemons, tmp_path, toml)  # stop_timeout: the default 60 s
    wait_until(lambda: d.runs("flaky") and d.runs("flaky")[0]["status"] == "retrying")
    assert d.stop() == 0  # within the harness's 30 s, so not after stop_timeout
    (run,) = d.runs("flaky")
    assert (run["status"], run["attempts"]) == ("canceled", 1)
    assert run["note"] == "stopped before a retry; last attempt: exit code 3"


def test_many_flows_due_at_one_instant_each_run_once(daemons, tmp_path: Path) -> None:
    """Fires of one wake-up are recorded together and begun together (issue 14): each flow
    gets exactly one flow run, every job its own process and peak memory, and a flow of two
    jobs among them still runs in order."""
    at = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0).isoformat()
    jobs = "".join(f'[jobs.f{n}]\nschedule = "@at {at}"\ncommand = "echo {n}"\n' for n in range(30))
    jobs += '[jobs.f0-next]\nafter = ["f0"]\ncommand = "true"\n'
    d = launch(daemons, tmp_path, jobs)
    wait_until(lambda: len([r for r in d.runs() if r["status"] == "success"]) == 31,
               timeout=30, what="31 successful runs")  # fmt: skip
    runs = d.runs()
    assert sorted(r["job"] for r in runs) == sorted([f"f{n}" for n in range(30)] + ["f0-next"])
    assert len({r["flow_run_id"] for r in runs}) == 30
    # Each job's own peak memory, not the daemon's (without a C compiler: the daemon's too).
    ceiling = 20 * 1024 if spawn.helper_path() else 1024**2
    assert all(r["attempts"] == 1 and 0 < r["max_rss_kb"] < ceiling for r in runs)
    by_job = {r["job"]: r for r in runs}
    assert by_job["f0-next"]["started_at"] >= by_job["f0"]["finished_at"]
    assert d.stop() == 0
