"""`cronflow trigger` against a real daemon, and without one."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import cronflow, wait_until
from tests.e2e.conftest import launch

FLOW = (
    '[jobs.extract]\ncommand = "echo extracted"\nschedule = "0 3 * * *"\n'
    '[jobs.load]\ncommand = "echo loaded"\nafter = ["extract"]\n'
)


def test_trigger_runs_the_flow_under_the_daemon(daemons, tmp_path: Path) -> None:
    d = launch(daemons, tmp_path, FLOW)
    result = cronflow("trigger", "extract", "-c", str(d.config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"the daemon (pid {d.proc.pid}) started flow extract at ")
    ids = [int(line.split()[1]) for line in lines[1:]]
    assert [line.split()[2] for line in lines[1:]] == ["extract", "load"]
    wait_until(lambda: {r["status"] for r in d.runs()} == {"success"}, what="the runs to end")
    runs = {r["run_id"]: r for r in d.runs()}
    assert sorted(runs) == sorted(ids)
    assert {r["trigger"] for r in runs.values()} == {"manual"}
    assert "(manual, request 1)" in d.log.read_text()
    only = cronflow("trigger", "load", "--only", "--at", "2026-01-02T03:00", "-c", str(d.config))
    assert only.returncode == 0, only.stderr
    assert only.stdout.splitlines()[1].split()[2] == "load" and len(only.stdout.splitlines()) == 2
    assert "2026-01-02T03:00:00" in only.stdout


def test_trigger_without_a_daemon_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(FLOW)
    result = cronflow("trigger", "load", "-c", str(config))
    assert result.returncode == 1
    assert result.stderr.startswith("error: no cronflow daemon is running")
    assert "`cronflow run load`" in result.stderr
    assert not (tmp_path / "state" / "cronflow" / "cronflow.db").exists()


def test_trigger_of_an_unknown_job_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(FLOW)
    result = cronflow("trigger", "lod", "-c", str(config))
    assert result.returncode == 1 and "no job named 'lod'" in result.stderr
