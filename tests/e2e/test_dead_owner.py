"""A `cronflow run` killed outright (SIGKILL, the OOM killer) with no daemon in sight: the next
`cronflow run` marks its runs lost and stops what it left running, `logs -f` does not wait for
it forever, `status` says its owner is gone; a live owner's runs are never touched."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, alive, cronflow, wait_until
from tests.e2e.conftest import launch

JOBS = """
[jobs.slow]
command = "echo $$ >> {pids}; echo started; exec sleep 300"

[jobs.after_slow]
after = ["slow"]
command = "echo after"

[jobs.quick]
command = "echo quick"
"""


class Setup:
    def __init__(self, tmp_path: Path, toml: str = JOBS) -> None:
        self.tmp = tmp_path
        self.pids = tmp_path / "pids"
        self.config = tmp_path / "jobs.toml"
        self.config.write_text(toml.format(pids=self.pids))
        self.owners: list[subprocess.Popen[bytes]] = []

    def start_run(self, job: str) -> subprocess.Popen[bytes]:
        """`cronflow run JOB` in the background, once its job's process has started."""
        seen = self.job_pids()
        with open(self.tmp / f"run-{len(self.owners)}.log", "ab") as log:
            proc = subprocess.Popen(
                [*CRONFLOW, "run", job, "-c", str(self.config)], stdout=log, stderr=log
            )
        self.owners.append(proc)
        wait_until(lambda: len(self.job_pids()) > len(seen), what=f"{job} to start")
        # The job writes its pid as it starts, before its run is recorded `running`.
        wait_until(lambda: self.statuses().get(job) == "running", what=f"{job}'s start recorded")
        return proc

    def job_pids(self) -> list[int]:
        return [int(p) for p in self.pids.read_text().split()] if self.pids.exists() else []

    def runs(self, *args: str) -> list[dict]:
        result = cronflow("history", "--json", "--limit", "100", "-c", str(self.config), *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def statuses(self) -> dict[str, str]:
        """The newest run's status per job (history is newest first)."""
        found: dict[str, str] = {}
        for run in self.runs():
            found.setdefault(run["job"], run["status"])
        return found

    def cleanup(self) -> None:
        for proc in self.owners:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in self.job_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.cleanup()


def kill_9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_the_next_cronflow_run_marks_a_killed_runs_rows_lost_and_stops_its_job(
    setup: Setup,
) -> None:
    owner = setup.start_run("slow")
    kill_9(owner)
    job = setup.job_pids()[0]
    assert alive(job)  # its own session: the job outlives the cronflow that ran it
    assert setup.statuses() == {"slow": "running", "after_slow": "queued"}

    result = cronflow("run", "quick", "-c", str(setup.config))
    assert result.returncode == 0, result.stderr
    assert "run 1 of slow was left unfinished" in result.stderr
    assert "stopping the processes it left running" in result.stderr
    assert not alive(job)  # no second live attempt can meet it
    runs = {r["job"]: r for r in setup.runs()}
    assert {job: r["status"] for job, r in runs.items()} == {
        "quick": "success", "slow": "lost", "after_slow": "lost",
    }  # fmt: skip
    assert "the cronflow process running this died" in runs["slow"]["note"]
    assert runs["slow"]["finished_at"] is not None
    assert len(setup.runs("slow")) == 1  # a manual run is not retried by someone else's run

    again = cronflow("run", "quick", "-c", str(setup.config))  # nothing left to recover
    assert again.returncode == 0 and "left unfinished" not in again.stderr


def test_logs_follow_ends_with_exit_1_when_the_runs_cronflow_dies(setup: Setup) -> None:
    owner = setup.start_run("slow")
    follower = subprocess.Popen(
        [*CRONFLOW, "logs", "slow", "-f"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    wait_until(lambda: setup.statuses().get("slow") == "running", what="slow to run")
    assert follower.poll() is None  # a live owner's run is followed
    kill_9(owner)
    out, err = follower.communicate(timeout=15)  # it ends by itself (before: forever)
    assert follower.returncode == 1
    assert b"started" in out
    assert b"will not finish" in err and b"is gone" in err
    assert len(err.decode().strip().splitlines()) == 1

    # Following it again, or its downstream job, ends at once the same way.
    for target in ("slow", "after_slow"):
        result = cronflow("logs", target, "-f", timeout=15)
        assert result.returncode == 1
        assert "will not finish" in result.stderr
    assert setup.statuses()["slow"] == "running"  # readers write nothing


def test_status_says_the_owner_is_gone_and_never_of_a_live_one(setup: Setup) -> None:
    owner = setup.start_run("slow")
    report = json.loads(cronflow("status", "--json", "-c", str(setup.config)).stdout)
    assert [(r["job"], r["owner_gone"]) for r in report["running"]] == [
        ("slow", None), ("after_slow", None),
    ]  # fmt: skip
    kill_9(owner)
    report = json.loads(cronflow("status", "--json", "-c", str(setup.config)).stdout)
    gone = {r["job"]: r["owner_gone"] for r in report["running"]}
    assert set(gone) == {"slow", "after_slow"}
    assert all(note and "is gone" in note for note in gone.values())
    text = cronflow("status", "-c", str(setup.config)).stdout
    assert "running, owner gone" in text and "queued, owner gone" in text


def test_a_live_cronflow_runs_rows_are_never_touched(setup: Setup) -> None:
    live = setup.start_run("slow")
    job = setup.job_pids()[0]
    for _ in range(2):
        result = cronflow("run", "quick", "-c", str(setup.config))
        assert result.returncode == 0 and "left unfinished" not in result.stderr
    assert alive(job) and live.poll() is None
    assert setup.statuses() == {"quick": "success", "slow": "running", "after_slow": "queued"}
    live.send_signal(signal.SIGINT)  # and it still ends its own runs
    assert live.wait(timeout=15) == 130
    assert setup.statuses()["slow"] == "canceled"


def test_recoverers_racing_mark_each_dead_run_lost_once_and_spare_live_ones(
    setup: Setup, daemons, tmp_path: Path
) -> None:
    # The daemon fires this once its start-up recovery is done.
    setup.config.write_text(setup.config.read_text() + '[jobs.up]\nschedule = "@reboot"\n'
                            'command = "true"\n')  # fmt: skip
    live = setup.start_run("slow")  # runs 1 and 2, owned by a live `cronflow run`
    dead = setup.start_run("slow")  # runs 3 and 4, whose owner is then killed
    kill_9(dead)
    live_job, dead_job = setup.job_pids()
    racers = [
        subprocess.Popen(
            [*CRONFLOW, "run", "quick", "-c", str(setup.config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    d = launch(daemons, tmp_path, setup.config.read_text())  # a daemon starting at once
    told = [p.communicate(timeout=30)[1] for p in racers]
    assert [p.returncode for p in racers] == [0, 0]
    wait_until(lambda: d.runs("up"), what="the daemon's recovery to be done")
    runs = setup.runs()
    by_id = {r["run_id"]: r for r in runs}
    assert by_id[3]["status"] == by_id[4]["status"] == "lost"  # the dead owner's slow, after_slow
    assert not alive(dead_job)
    daemon_log = d.log.read_text()
    for run_id in (3, 4):
        line = f"run {run_id} of {by_id[run_id]['job']} was left unfinished"
        marked = [text for text in [*told, daemon_log] if line in text]
        assert len(marked) == 1, (told, daemon_log)  # one marked it; the others found it done
    assert [by_id[2]["status"], by_id[1]["status"]] == ["queued", "running"]
    assert live.poll() is None and alive(live_job)  # the live owner's runs, untouched
    assert [r["status"] for r in runs if r["job"] == "quick"] == ["success", "success"]
    assert d.stop() == 0


def test_a_dead_daemons_scheduled_run_is_left_to_the_next_daemon_which_retries_it(
    setup: Setup, daemons, tmp_path: Path
) -> None:
    toml = f"""
[daemon]
stop_timeout = "1s"

[jobs.nightly]
schedule = "@reboot"
command = "echo $$ >> {setup.pids}; exec sleep 300"
retries = 1
retry_delay = 0

[jobs.quick]
command = "echo quick"
"""
    d = launch(daemons, tmp_path, toml)
    wait_until(setup.job_pids, what="the scheduled job to start")
    # The job writes its pid as it starts, before the daemon records it `running`.
    wait_until(lambda: setup.statuses().get("nightly") == "running", what="its start recorded")
    d.stop(signal.SIGKILL)
    result = cronflow("run", "quick", "-c", str(d.config))
    assert result.returncode == 0 and "left unfinished" not in result.stderr
    assert setup.statuses()["nightly"] == "running"  # its retry is the daemon's to make
    report = json.loads(cronflow("status", "--json", "-c", str(d.config)).stdout)
    assert "the next daemon start marks it lost" in report["running"][0]["owner_gone"]
    d = launch(daemons, tmp_path, toml)
    wait_until(lambda: len(setup.job_pids()) == 2, what="the daemon to retry it")
    first, retry = setup.job_pids()
    assert not alive(first) and alive(retry)
    assert [r["status"] for r in setup.runs("nightly")] == ["running", "lost"]
    assert d.stop() == 0


def test_a_killed_backfill_is_not_retried_whoever_recovers_it(daemons, tmp_path: Path) -> None:
    """README: a run whose `cronflow run` died is lost, not retried — also when a daemon, which
    retries its own lost runs, is the one that finds it first."""
    toml = """
[daemon]
stop_timeout = "1s"

[jobs.daily]
schedule = "0 6 * * *"
timezone = "UTC"
command = "echo $$ >> {pids}; exec sleep 300"
retries = 1
retry_delay = 0

[jobs.quick]
command = "echo quick"
"""
    s = Setup(tmp_path, toml)
    try:
        argv = [*CRONFLOW, "run", "daily", "--from", "2026-01-01", "--to", "2026-01-01T06:00"]
        owner = subprocess.Popen([*argv, "-c", str(s.config)], stdout=subprocess.DEVNULL)
        s.owners.append(owner)
        wait_until(s.job_pids, what="the backfill's job to start")
        kill_9(owner)
        d = launch(daemons, tmp_path, None)
        lost = lambda: any(r["status"] == "lost" for r in s.runs("daily"))  # noqa: E731
        wait_until(lost, what="the daemon's recovery")
        # A trigger is taken after start-up's recovery (and a retry it would start) is done.
        assert cronflow("trigger", "quick", "-c", str(s.config)).returncode == 0
        wait_until(lambda: s.statuses().get("quick") == "success", what="the triggered run")
        assert [r["trigger"] for r in s.runs("daily")] == ["backfill"]
        assert len(s.job_pids()) == 1
        assert d.stop() == 0
    finally:
        s.cleanup()
