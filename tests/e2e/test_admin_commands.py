"""`status`, `prune`, `systemd install`, and @reboot/@at through the real command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cronflow.clock import VirtualClock
from cronflow.store import Store
from tests.conftest import cronflow, wait_until
from tests.e2e.conftest import launch

STATE = Path("state") / "cronflow" / "cronflow.db"


def test_status_without_daemon_reports_an_invalid_job_file(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[jobs.a]\ncommand = "x"\nretires = 1\n')
    result = cronflow("status", "-c", str(config))
    assert result.returncode == 0
    assert "daemon: not running" in result.stdout
    assert "retires" in result.stdout
    report = json.loads(cronflow("status", "--json", "-c", str(config)).stdout)
    assert report["daemon"]["running"] is False and report["daemon"]["pid"] is None
    assert report["daemon"]["config"] == str(config)
    assert "unknown key" in report["daemon"]["config_error"]
    assert report["running"] == [] and report["next"] == []


def test_prune_drops_old_runs(tmp_path: Path) -> None:
    clock = VirtualClock(datetime(2020, 1, 1, tzinfo=UTC))
    with Store(tmp_path / STATE, clock=clock) as store:
        flow_run = store.new_flow_run("a", clock.now(), "manual")
        old = store.new_run(flow_run, "a", clock.now(), "manual", status="success")
        store.update_run(old, finished_at=clock.now())
        store.add_output(old, 1, "out", clock.now(), b"old line\n")
    with Store(tmp_path / STATE) as store:
        now = datetime.now(UTC)
        new = store.new_run(
            store.new_flow_run("a", now, "manual"), "a", now, "manual", status="success"
        )
        store.update_run(new, finished_at=now)
    assert cronflow("prune", "--older-than", "30d").stdout == "pruned 1 runs older than 30d\n"
    runs = json.loads(cronflow("history", "--json").stdout)
    assert [r["run_id"] for r in runs] == [new]
    assert cronflow("prune", "--older-than", "soon").returncode == 2


def test_systemd_unit_print_and_install(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[daemon]\nstop_timeout = "2m"\n')
    printed = cronflow("systemd", "install", "--print", "-c", str(config)).stdout
    assert f"--config {config} daemon" in printed
    assert "Type=notify" in printed and "TimeoutStopSec=150s" in printed
    exec_start = next(line for line in printed.splitlines() if line.startswith("ExecStart="))
    assert os.path.isabs(exec_start.split("=", 1)[1].split()[0])
    result = cronflow("systemd", "install", "-c", str(config))
    unit = tmp_path / "config" / "systemd" / "user" / "cronflow.service"
    assert result.stdout.startswith(f"wrote {unit}")
    assert "loginctl enable-linger" in result.stdout
    assert unit.read_text().strip() == printed.strip()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    # systemd-analyze exits 0 even for unknown keys: any word about our unit is a failure.
    assert "cronflow.service" not in verify.stdout + verify.stderr, verify.stderr


def test_reboot_fires_once_per_boot_and_at_fires_once(daemons, tmp_path: Path) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    toml = f"""
[jobs.boot]
schedule = "@reboot"
command = "true"
[jobs.once]
schedule = "@at {soon.isoformat()}"
command = "true"
[jobs.clock]
schedule = "@every 1s"
command = "true"
"""
    d = launch(daemons, tmp_path, toml)
    wait_until(lambda: d.runs("once"), what="the @at job")
    assert d.stop() == 0
    d2 = launch(daemons, tmp_path, toml)
    seen = len(d2.runs("clock"))
    wait_until(lambda: len(d2.runs("clock")) >= seen + 2, what="two more seconds of fires")
    assert len(d2.runs("boot")) == 1
    assert len(d2.runs("once")) == 1
    listing = json.loads(cronflow("list", "--json", "-c", str(d2.config)).stdout)
    assert {j["name"]: j["next_fire"] for j in listing}["once"] is None


def test_list_and_status_say_which_job_holds_a_flow_paused(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text(
        '[jobs.m]\nschedule = "@hourly"\ncommand = "x"\n[jobs.n]\nafter = ["m"]\ncommand = "x"\n'
    )
    paused = cronflow("pause", "n", "-c", str(config))
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == "paused flow m (held by n for as long as it is in the flow)\n"
    listed = cronflow("list", "-c", str(config)).stdout
    assert "paused by n" in listed.splitlines()[1]  # the row of m, the flow's scheduled root
    views = json.loads(cronflow("list", "--json", "-c", str(config)).stdout)
    assert [(v["name"], v["paused"], v["paused_by"]) for v in views] == [
        ("m", True, "n"),
        ("n", True, "n"),
    ]
    shown = cronflow("status", "-c", str(config)).stdout
    assert "paused flows:\nFLOW  PAUSED BY\nm     n\n" in shown
    report = json.loads(cronflow("status", "--json", "-c", str(config)).stdout)
    assert report["paused"] == [{"flow": "m", "job": "n"}]
    assert cronflow("resume", "m", "-c", str(config)).returncode == 0
    assert json.loads(cronflow("status", "--json", "-c", str(config)).stdout)["paused"] == []


def test_systemd_worker_unit_print_and_install(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[executor]\nkind = "celery"\nbroker = "redis://:s3cret@db1:6379/0"\n')
    args = ["systemd", "install", "--worker", "-c", str(config)]
    printed = cronflow(*args, "--print", "--queue", "gpu,db", "-Q", "gpu", "--concurrency", "4")
    assert printed.returncode == 0, printed.stderr
    assert f"--config {config} worker --queue gpu --queue db --concurrency 4" in printed.stdout
    assert "Type=simple" in printed.stdout and "TimeoutStopSec=90s" in printed.stdout
    assert "s3cret" not in printed.stdout
    result = cronflow(*args)
    unit = tmp_path / "config" / "systemd" / "user" / "cronflow-worker.service"
    assert result.stdout.startswith(f"wrote {unit}")
    assert "systemctl --user enable --now cronflow-worker" in result.stdout
    assert "--queue default --concurrency 1" in unit.read_text()
    assert not (unit.parent / "cronflow.service").exists()
    for bad, message in [
        (["--queue", "gpu"], "--queue and --concurrency are for --worker"),
        (["--worker", "--queue", "local"], "local means the daemon's own process"),
        (["--worker", "--queue", "a b"], "'a b' is not a queue name"),
    ]:
        refused = cronflow("systemd", "install", "--print", *bad, "-c", str(config))
        assert refused.returncode == 2 and message in refused.stderr, (bad, refused.stderr)
    assert cronflow(*args, "--concurrency", "0").returncode == 2
