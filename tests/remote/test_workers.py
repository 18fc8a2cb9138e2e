"""Attempts on real `cronflow worker` processes through a real Redis: routing, output, flows,
timeouts, cancels, lost workers, a daemon that dies, a broker that goes away, signatures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import CRONFLOW, alive, cronflow, wait_until
from tests.e2e.conftest import launch
from tests.remote.conftest import Cluster


def job_file(cluster: Cluster, body: str) -> Path:
    path = cluster.tmp_path / "jobs.toml"
    path.write_text(f'[executor]\nkind = "celery"\nbroker = "{cluster.redis.url}"\n{body}')
    return path


def run(cluster: Cluster, config: Path, *args: str, timeout: float = 90):
    return cronflow("run", *args, "-c", str(config), env=cluster.env, timeout=timeout)


def start_run(cluster: Cluster, config: Path, job: str) -> subprocess.Popen[bytes]:
    """`cronflow run JOB` in the background, as from a terminal."""
    return subprocess.Popen(
        [*CRONFLOW, "run", job, "-c", str(config)],
        env={**os.environ, **cluster.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def history(cluster: Cluster, config: Path) -> list[dict]:
    result = cronflow("history", "--json", "--limit", "1000", "-c", str(config), env=cluster.env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_routing_output_and_host(cluster: Cluster) -> None:
    cluster.worker("w-gpu", "gpu")
    cluster.worker("w-db", "db")
    config = job_file(
        cluster,
        """
[jobs.train]
queue = "gpu"
command = 'echo "on $CRONFLOW_JOB"; seq 1 2000; echo oops >&2'
""",
    )
    result = run(cluster, config, "train")
    assert result.returncode == 0, result.stderr
    (train,) = history(cluster, config)
    assert (train["status"], train["host"]) == ("success", "w-gpu")
    logs = cronflow("logs", "train", "-c", str(config), env=cluster.env).stdout.splitlines()
    body = [line for line in logs if not line.startswith("──") and "attempt" not in line]
    assert body[0] == "on train"
    assert body[1:2001] == [str(i) for i in range(1, 2001)]  # complete and in order
    assert "oops" in body[-1]
    assert "train" not in (cluster.tmp_path / "worker-w-db.log").read_text()  # never routed there
    gpu_log = cluster.tmp_path / "worker-w-gpu.log"
    wait_until(lambda: "success train run" in gpu_log.read_text(), timeout=10)


def test_a_flow_across_two_workers_and_the_daemon_machine_in_order_with_hooks(
    cluster: Cluster,
) -> None:
    cluster.worker("w-a", "qa")
    cluster.worker("w-b", "qb")
    hooks = cluster.tmp_path / "hooks"
    config = job_file(
        cluster,
        f"""
[jobs.one]
queue = "qa"
command = "echo one from $CRONFLOW_JOB"
on_success = 'echo "$CRONFLOW_JOB $CRONFLOW_HOST" >> {hooks}'
[jobs.two]
after = ["one"]
queue = "qb"
command = "echo two"
on_success = 'echo "$CRONFLOW_JOB $CRONFLOW_HOST" >> {hooks}'
[jobs.three]
after = ["two"]
command = "echo three here"
""",
    )
    result = run(cluster, config, "one")
    assert result.returncode == 0, result.stderr
    runs = {r["job"]: r for r in history(cluster, config)}
    assert [runs[j]["host"] for j in ("one", "two", "three")] == ["w-a", "w-b", None]
    assert runs["one"]["finished_at"] <= runs["two"]["started_at"]
    assert runs["two"]["finished_at"] <= runs["three"]["started_at"]
    assert hooks.read_text().splitlines() == ["one w-a", "two w-b"]


def test_timeout_on_a_worker_leaves_no_process_behind(cluster: Cluster) -> None:
    cluster.worker("w-t", "q")
    pidfile = cluster.tmp_path / "pid"
    config = job_file(
        cluster,
        f"""
[jobs.slow]
queue = "q"
command = "echo $$ > {pidfile}; exec sleep 300"
timeout = "2s"
kill_grace = "1s"
""",
    )
    result = run(cluster, config, "slow")
    assert result.returncode == 1
    (slow,) = history(cluster, config)
    assert slow["status"] == "timeout"
    wait_until(lambda: not alive(int(pidfile.read_text())), timeout=10)


def test_ctrl_c_of_cronflow_run_stops_the_remote_job(cluster: Cluster) -> None:
    cluster.worker("w-c", "q")
    pidfile = cluster.tmp_path / "pid"
    config = job_file(
        cluster, f'[jobs.slow]\nqueue = "q"\ncommand = "echo $$ > {pidfile}; exec sleep 300"\n'
    )
    runner = start_run(cluster, config, "slow")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30)
    job = int(pidfile.read_text())
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=60) == 130
    wait_until(lambda: not alive(job), timeout=15, what="the remote job to be killed")
    assert history(cluster, config)[0]["status"] == "canceled"


def test_a_killed_worker_is_lost_then_retried_once_on_the_other(cluster: Cluster) -> None:
    first = cluster.worker("w-1", "q")
    pidfile = cluster.tmp_path / "pids"
    config = job_file(
        cluster,
        f"""
[jobs.slow]
queue = "q"
command = "echo $$ >> {pidfile}; sleep 4; echo done"
retries = 1
retry_delay = 0
""",
    )
    done = {}
    thread = threading.Thread(target=lambda: done.update(r=run(cluster, config, "slow")))
    thread.start()
    wait_until(lambda: pidfile.exists(), timeout=30)
    os.killpg(first.proc.pid, signal.SIGKILL)  # the worker and its job: the machine is gone
    cluster.worker("w-2", "q")
    thread.join(timeout=120)
    assert done["r"].returncode == 0, done["r"].stderr
    (slow,) = history(cluster, config)
    assert (slow["status"], slow["attempts"], slow["host"]) == ("success", 2, "w-2")
    attempts = cronflow("logs", "slow", "-c", str(config), env=cluster.env).stdout
    assert "lease" in attempts or "lost" in attempts


def test_no_worker_for_a_queue_fails_after_queue_timeout(cluster: Cluster) -> None:
    config = job_file(
        cluster, '[jobs.orphan]\nqueue = "nobody"\ncommand = "true"\nqueue_timeout = "2s"\n'
    )
    result = run(cluster, config, "orphan")
    assert result.returncode == 1
    (orphan,) = history(cluster, config)
    assert orphan["status"] == "failed"
    assert orphan["note"] == "queued for nobody: no worker took it within 2s"


def test_an_unsigned_message_is_refused(cluster: Cluster) -> None:
    worker = cluster.worker("w-s", "q")
    marker = cluster.tmp_path / "pwned"
    from cronflow.remote import Settings, make_app

    app = make_app(Settings(cluster.redis.url, b"wrong secret"))
    message = {"id": "x", "argv": ["touch", str(marker)]}
    app.send_task("cronflow.attempt", args=[message, "0" * 64], queue="q")
    wait_until(lambda: "signature" in worker.log.read_text(), timeout=30)
    assert not marker.exists()


def test_run_local_runs_a_remote_job_here(cluster: Cluster) -> None:
    config = job_file(cluster, '[jobs.gpu]\nqueue = "gpu"\ncommand = "echo here"\n')
    result = run(cluster, config, "gpu", "--local")
    assert result.returncode == 0, result.stderr
    assert history(cluster, config)[0]["host"] is None


def test_daemon_killed_mid_attempt_follows_it_again_and_records_it_once(
    daemons, cluster: Cluster
) -> None:
    cluster.worker("w-d", "q")
    started = cluster.tmp_path / "started"
    config_body = f"""
[jobs.remote]
schedule = "@reboot"
queue = "q"
command = "touch {started}; sleep 4; echo finished"
"""
    config = job_file(cluster, config_body)
    toml = config.read_text()
    d = launch(daemons, cluster.tmp_path, toml, env=cluster.env)
    wait_until(started.exists, timeout=30, what="the remote job to start")
    d.stop(signal.SIGKILL)
    d2 = launch(daemons, cluster.tmp_path, toml, env=cluster.env)
    wait_until(
        lambda: [r["status"] for r in history(cluster, d2.config)] == ["success"],
        timeout=60,
        what="the followed run to end",
    )
    (run_,) = history(cluster, d2.config)
    assert run_["attempts"] == 1 and run_["host"] == "w-d"
    logs = cronflow("logs", "remote", "-c", str(d2.config), env=cluster.env).stdout
    assert logs.count("finished") == 1


def test_logs_follow_shows_remote_lines_live(cluster: Cluster) -> None:
    cluster.worker("w-f", "q")
    gate = cluster.tmp_path / "gate"
    config = job_file(
        cluster,
        f"""
[jobs.chatty]
queue = "q"
command = 'echo first; while [ ! -e {gate} ]; do sleep 0.05; done; echo second'
""",
    )
    runner = start_run(cluster, config, "chatty")
    wait_until(lambda: history(cluster, config) and history(cluster, config)[0]["host"])
    follower = subprocess.Popen(
        [*CRONFLOW, "logs", "chatty", "-f", "-c", str(config)],
        env={**os.environ, **cluster.env},
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(follower.stdout), daemon=True)
    reader.start()
    wait_until(lambda: "first\n" in seen, timeout=10, what="the first remote line, live")
    assert "second\n" not in seen
    gate.touch()
    assert follower.wait(timeout=30) == 0
    reader.join(timeout=5)
    follower.stdout.close()
    assert "second\n" in seen
    assert runner.wait(timeout=30) == 0


def test_redis_going_away_mid_flow_leaves_clear_notes_and_no_stuck_row(
    daemons, cluster: Cluster
) -> None:
    cluster.worker("w-r", "q")
    started = cluster.tmp_path / "started"
    toml = job_file(
        cluster,
        f"""
[jobs.remote]
schedule = "@reboot"
queue = "q"
command = "touch {started}; sleep 3"
[jobs.here]
schedule = "@every 1s"
command = "true"
""",
    ).read_text()
    d = launch(daemons, cluster.tmp_path, toml, env=cluster.env)
    wait_until(started.exists, timeout=30, what="the remote job to start")
    cluster.redis.stop()
    # Local jobs keep firing while the broker is away.
    count = len([r for r in history(cluster, d.config) if r["job"] == "here"])
    wait_until(
        lambda: len([r for r in history(cluster, d.config) if r["job"] == "here"]) > count + 2,
        timeout=20,
    )
    cluster.redis.start()
    wait_until(
        lambda: all(r["status"] not in ("running", "queued")
                    for r in history(cluster, d.config) if r["job"] == "remote"),
        timeout=90,
        what="the remote run to end",
    )  # fmt: skip
    (remote_run,) = [r for r in history(cluster, d.config) if r["job"] == "remote"]
    assert remote_run["status"] in ("lost", "success")
    if remote_run["status"] == "lost":
        assert "lease" in remote_run["note"] or "broker" in remote_run["note"]
    log = d.log.read_text()
    assert "Traceback" not in log
    assert log.count("unreachable") <= 3  # one line a minute, not one per fire
    assert d.stop() == 0


def test_workers_lists_what_runs_and_sigterm_stops_it_after_stop_timeout(
    cluster: Cluster,
) -> None:
    worker = cluster.worker("w-g", "q")  # --stop-timeout 5s
    pidfile = cluster.tmp_path / "pid"
    config = job_file(
        cluster, f'[jobs.long]\nqueue = "q"\ncommand = "echo $$ > {pidfile}; exec sleep 300"\n'
    )
    runner = start_run(cluster, config, "long")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30)
    listed = cronflow("workers", "--json", "-c", str(config), env=cluster.env)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert entry["hostname"] == "w-g" and entry["queues"] == ["q"]
    assert [(r["job"], r["attempt"]) for r in entry["running"]] == [("long", 1)]
    table = cronflow("workers", "-c", str(config), env=cluster.env).stdout
    assert "w-g" in table and "long (run 1)" in table
    assert worker.stop(signal.SIGTERM) == 0  # after the 5 s stop timeout, not the job's 300
    assert not alive(int(pidfile.read_text()))
    assert runner.wait(timeout=30) == 1
    assert history(cluster, config)[0]["status"] == "canceled"


def test_without_the_celery_extra_a_remote_job_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[executor]\nkind = "celery"\n[jobs.a]\nqueue = "q"\ncommand = "true"\n')
    hide = "import sys; sys.modules['celery'] = None; from cronflow.cli import main; main()"
    import sys

    result = subprocess.run(
        [sys.executable, "-c", hide, "run", "a", "-c", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "CRONFLOW_BROKER_URL": "redis://localhost/0"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: remote execution needs the Celery extra (celery is missing):"
        " pip install 'cronflow[celery]'"
    ]


def test_a_daemon_stopped_with_sigterm_leaves_remote_attempts_to_the_next_one(
    daemons, cluster: Cluster
) -> None:
    cluster.worker("w-u", "q")
    started = cluster.tmp_path / "started"
    toml = job_file(
        cluster,
        f"""
[daemon]
stop_timeout = "1s"
[jobs.remote]
schedule = "@reboot"
queue = "q"
command = "echo $$ > {started}; sleep 5; echo finished"
[jobs.after]
after = ["remote"]
command = "echo after"
""",
    ).read_text()
    d = launch(daemons, cluster.tmp_path, toml, env=cluster.env)
    wait_until(lambda: started.exists() and started.read_text().strip(), timeout=30)
    job = int(started.read_text())
    assert d.stop(signal.SIGTERM) == 0  # an upgrade: systemctl restart
    assert alive(job)  # the worker goes on
    d2 = launch(daemons, cluster.tmp_path, toml, env=cluster.env)
    wait_until(
        lambda: sorted((r["job"], r["status"]) for r in history(cluster, d2.config))
        == [("after", "success"), ("remote", "success")],
        timeout=60,
        what="the remote run and the job after it to succeed once",
    )
    assert d2.stop() == 0
