"""`why`, `check` and `run --ignore-past` through the real `cronflow` command."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cronflow


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "jobs.toml"
    path.write_text(text)
    return str(path)


def test_why_explains_a_failed_manual_run_and_a_time_the_schedule_skips(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        '[jobs.backup]\nschedule = "0 3 * * *"\ncommand = "echo no; exit 3"\n'
        'on_failure = "true"\n',
    )
    assert cronflow("run", "backup", "--at", "2026-11-29T03:00", "-c", config).returncode == 1
    result = cronflow("why", "backup", "--at", "2026-11-29T03:00", "-c", config)
    assert result.returncode == 0, result.stderr
    assert "fires at 2026-11-29T03:00:00+00:00" in result.stdout
    assert "failed" in result.stdout and "exit code 3" in result.stdout
    assert "on_failure" in result.stdout
    reasons = json.loads(
        cronflow("why", "backup", "--at", "2026-11-29T03:00", "--json", "-c", config).stdout
    )
    assert {"schedule", "run", "attempt", "hook"} <= {r["kind"] for r in reasons}
    assert all(set(r) == {"kind", "message", "at", "run_id"} for r in reasons)
    skipped = cronflow("why", "backup", "--at", "2026-11-29T03:30", "-c", config).stdout
    assert "its minute field (0) excludes it" in skipped
    unknown = cronflow("why", "bakcup", "-c", config)
    assert unknown.returncode == 1 and "did you mean" in unknown.stderr


def test_check_exit_codes_and_json(tmp_path: Path) -> None:
    config = write(tmp_path, '[jobs.a]\nschedule = "@hourly"\ncommand = "true"\n')
    down = cronflow("check", "-c", config)
    assert down.returncode == 2
    assert down.stdout.splitlines()[0].startswith("daemon not running")
    report = json.loads(cronflow("check", "--json", "-c", config).stdout)
    assert report["exit_code"] == 2 and report["ok"] is False
    assert report["problems"][0]["kind"] == "daemon"
    (tmp_path / "jobs.toml").write_text('[jobs.a]\ncommand = "true"\nretires = 1\n')
    broken = cronflow("check", "--json", "-c", config)
    assert broken.returncode == 2
    assert "config" in {p["kind"] for p in json.loads(broken.stdout)["problems"]}


def test_run_ignore_past_overrides_depends_on_past(tmp_path: Path) -> None:
    flag = tmp_path / "ok"
    config = write(
        tmp_path,
        f'[jobs.d]\nschedule = "0 * * * *"\ndepends_on_past = true\n'
        f'command = "test -e {flag}"\n',
    )
    assert cronflow("run", "d", "--at", "2026-11-29T01:00", "-c", config).returncode == 1
    held = cronflow("run", "d", "--at", "2026-11-29T02:00", "-c", config)
    assert held.returncode == 0  # skipped is not a failure
    runs = json.loads(cronflow("history", "d", "--json", "-c", config).stdout)
    assert (runs[0]["status"], runs[0]["note"]) == (
        "skipped",
        "previous run (2026-11-29T01:00:00+00:00) did not succeed",
    )
    flag.touch()
    forced = cronflow("run", "d", "--at", "2026-11-29T02:00", "--ignore-past", "-c", config)
    assert forced.returncode == 0, forced.stderr
    runs = json.loads(cronflow("history", "d", "--json", "-c", config).stdout)
    assert runs[0]["status"] == "success"
