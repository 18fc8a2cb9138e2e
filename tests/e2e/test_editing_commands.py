"""`init`, `add`, `remove` and `edit` through the real `cronflow` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, cronflow, wait_until

COMMENTED = """\
# My jobs   (spacing kept)
[defaults]
retries = 1   # for all

# the backup
[jobs.backup]
schedule = "0 3 * * *"
command = 'restic backup "~/docs"'
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(COMMENTED)
    return path


def default_job_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "cronflow" / "cronflow.toml"


# -- init ---------------------------------------------------------------------------------


def test_init_writes_a_valid_commented_starter_and_never_overwrites(tmp_path: Path) -> None:
    result = cronflow("init")
    path = default_job_file(tmp_path)
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, f"wrote {path}")
    text = path.read_text()
    for teaches in ("[jobs.backup]", "schedule =", "retries =", "timeout =", "on_failure ="):
        assert f"# {teaches}" in text
    assert '# after = ["backup"]' in text and "# [defaults]" in text and "# [daemon]" in text
    assert cronflow("validate").stdout == f"OK: 0 jobs in 0 flows ({path})\n"

    path.write_text("# mine\n")
    again = cronflow("init")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert path.read_text() == "# mine\n"


# -- add ----------------------------------------------------------------------------------


def test_add_appends_a_job_and_keeps_the_rest_byte_for_byte(job_file: Path) -> None:
    result = cronflow(
        "add", "report", "--command", 'echo "done" \\o/', "--after", "backup",
        "--retries", "2", "--timeout", "5m", "--on-failure", "notify-send failed",
        "-c", str(job_file),
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, f"added job report to {job_file}\n")
    assert job_file.read_text() == COMMENTED + (
        "\n[jobs.report]\n"
        'after = ["backup"]\n'
        "command = 'echo \"done\" \\o/'\n"
        "retries = 2\n"
        'timeout = "5m"\n'
        'on_failure = "notify-send failed"\n'
    )
    listed = json.loads(cronflow("list", "--json", "-c", str(job_file)).stdout)
    assert [(j["name"], j["after"]) for j in listed] == [("backup", []), ("report", ["backup"])]


def test_add_refuses_an_existing_name(job_file: Path) -> None:
    result = cronflow("add", "backup", "--command", "x", "-c", str(job_file))
    assert result.returncode == 1
    assert "'backup' already exists" in result.stderr
    assert job_file.read_text() == COMMENTED


def test_an_invalid_add_exits_2_says_where_and_changes_nothing(job_file: Path) -> None:
    before = job_file.read_bytes()
    result = cronflow("add", "report", "--command", "x", "--after", "ghost", "-c", str(job_file))
    assert result.returncode == 2
    assert result.stderr == (
        f"error: cannot add job 'report'; {job_file} is unchanged:\n"
        "  --after: unknown job 'ghost'\n"
    )
    assert job_file.read_bytes() == before
    assert os.listdir(job_file.parent) == ["jobs.toml"]  # no temp file left behind either


def test_add_dry_run_prints_the_table_and_writes_nothing(tmp_path: Path, job_file: Path) -> None:
    result = cronflow(
        "add", "weekly", "--command", "echo hi", "--schedule", "@weekly", "--dry-run",
        "-c", str(job_file),
    )  # fmt: skip
    assert result.returncode == 0
    assert result.stdout == '[jobs.weekly]\nschedule = "@weekly"\ncommand = "echo hi"\n'
    assert job_file.read_text() == COMMENTED
    missing = cronflow("add", "a", "--command", "x", "--dry-run")
    assert missing.returncode == 0
    assert not default_job_file(tmp_path).parent.exists()


def test_add_creates_the_job_file_and_its_folders(tmp_path: Path) -> None:
    result = cronflow("add", "hello", "--command", "echo hello", "--schedule", "@hourly")
    path = default_job_file(tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.read_text() == '[jobs.hello]\nschedule = "@hourly"\ncommand = "echo hello"\n'
    assert cronflow("validate").stdout == f"OK: 1 job in 1 flow ({path})\n"


# -- remove -------------------------------------------------------------------------------


def test_remove_refused_while_named_in_after_then_removes(job_file: Path) -> None:
    added = cronflow("add", "report", "--command", "x", "--after", "backup", "-c", str(job_file))
    assert added.returncode == 0
    with_report = job_file.read_text()
    refused = cronflow("remove", "backup", "-c", str(job_file))
    assert refused.returncode == 1
    assert "report still names it in `after`" in refused.stderr
    assert job_file.read_text() == with_report

    unknown = cronflow("remove", "nope", "-c", str(job_file))
    assert (unknown.returncode, job_file.read_text()) == (1, with_report)

    removed = cronflow("remove", "report", "-c", str(job_file))
    assert (removed.returncode, removed.stdout) == (0, f"removed job report from {job_file}\n")
    assert job_file.read_text() == COMMENTED


def test_removing_the_last_job_leaves_a_valid_file(job_file: Path) -> None:
    assert cronflow("remove", "backup", "-c", str(job_file)).returncode == 0
    assert (
        job_file.read_text() == "# My jobs   (spacing kept)\n[defaults]\nretries = 1   # for all\n"
    )
    assert cronflow("validate", "-c", str(job_file)).stdout.startswith("OK: 0 jobs")


def test_remove_and_edit_without_a_job_file_hint_at_init(tmp_path: Path) -> None:
    for command in (["remove", "a"], ["edit"]):
        result = cronflow(*command, env={"EDITOR": "false"})
        assert result.returncode == 1
        assert "cronflow init" in result.stderr
    assert not (tmp_path / "config" / "cronflow").exists()


# -- edit ---------------------------------------------------------------------------------

EDITOR = """\
import pathlib, sys

mode, copy = sys.argv[1], pathlib.Path(sys.argv[2])
calls = pathlib.Path(__file__).with_name("calls.txt")
with calls.open("a") as log:
    log.write(f"{copy}\\n")
n = len(calls.read_text().splitlines())
text = copy.read_text()
if mode == "fail":
    sys.exit(3)
if mode == "bad" or (mode == "bad-then-fix" and n == 1):
    text += "retires = 3\\n"
elif mode == "bad-then-fix":
    text = text.replace("retires", "retries")
copy.write_text(text)
"""


def scripted_editor(tmp_path: Path, mode: str) -> dict[str, str]:
    """$EDITOR as a user writes it: a program with a space in its path, plus an argument."""
    folder = tmp_path / "my editor"
    folder.mkdir(exist_ok=True)
    (folder / "edit.py").write_text(EDITOR)
    return {"EDITOR": f"{sys.executable} '{folder / 'edit.py'}' {mode}"}


def editor_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "my editor" / "calls.txt"
    return calls.read_text().splitlines() if calls.exists() else []


def test_edit_asks_again_and_saves_the_fixed_copy(tmp_path: Path, job_file: Path) -> None:
    env = scripted_editor(tmp_path, "bad-then-fix")
    result = cronflow("edit", "-c", str(job_file), input="y\n", env=env)
    assert (result.returncode, result.stdout) == (0, f"saved {job_file}\n")
    assert result.stderr == (
        f"{job_file}:9: jobs.backup.retires: unknown key (did you mean 'retries'?)\n"
        "Edit again? [Y/n] "
    )
    assert job_file.read_text() == COMMENTED + "retries = 3\n"
    first, second = editor_calls(tmp_path)
    assert first == second != str(job_file)  # the same private copy, reopened
    assert first.endswith(".toml")
    assert not Path(first).parent.exists()  # cleaned up


@pytest.mark.parametrize("answer", ["", "n\n", "maybe\nno\n"])
def test_edit_abandoned_exits_2_and_keeps_the_file(
    tmp_path: Path, job_file: Path, answer: str
) -> None:
    before = job_file.read_bytes()
    result = cronflow(
        "edit", "-c", str(job_file), input=answer, env=scripted_editor(tmp_path, "bad")
    )
    assert result.returncode == 2
    assert result.stderr.endswith(f"error: not saved; {job_file} is unchanged\n")
    assert job_file.read_bytes() == before
    assert len(editor_calls(tmp_path)) == 1


def test_edit_refuses_to_overwrite_a_concurrent_change(tmp_path: Path, job_file: Path) -> None:
    racing = tmp_path / "racing_editor.py"
    racing.write_text(
        "import pathlib, sys\n"
        "copy = pathlib.Path(sys.argv[1])\n"
        "copy.write_text(copy.read_text() + 'retries = 2\\n')\n"
        f"pathlib.Path({str(job_file)!r}).write_text({COMMENTED!r} + '# theirs\\n')\n"
    )
    result = cronflow("edit", "-c", str(job_file), env={"EDITOR": f"{sys.executable} {racing}"})
    assert (result.returncode, result.stdout) == (1, "")
    assert len(result.stderr.splitlines()) == 1
    assert f"error: {job_file} changed while cronflow was editing it" in result.stderr
    assert job_file.read_text() == COMMENTED + "# theirs\n"
    kept = Path(result.stderr.split("your edit is kept in ")[1].split(";")[0])
    assert kept.read_text() == COMMENTED + "retries = 2\n"
    kept.unlink()


def test_edit_without_changes(tmp_path: Path, job_file: Path) -> None:
    result = cronflow("edit", "-c", str(job_file), env=scripted_editor(tmp_path, "same"))
    assert (result.returncode, result.stdout) == (0, f"no changes; {job_file} is unchanged\n")


def test_edit_when_the_editor_fails(tmp_path: Path, job_file: Path) -> None:
    result = cronflow("edit", "-c", str(job_file), env=scripted_editor(tmp_path, "fail"))
    assert result.returncode == 1
    assert "the editor exited with status 3" in result.stderr
    assert job_file.read_text() == COMMENTED


def test_visual_wins_over_editor(tmp_path: Path, job_file: Path) -> None:
    env = {**scripted_editor(tmp_path, "same"), "VISUAL": "false"}
    assert cronflow("edit", "-c", str(job_file), env=env).returncode == 1
    assert editor_calls(tmp_path) == []


# -- the running daemon hears about changes -----------------------------------------------

FAKE_DAEMON = """\
import fcntl, os, pathlib, signal, sys

lock, heard = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
lock.parent.mkdir(parents=True, exist_ok=True)
fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
signal.signal(signal.SIGHUP, lambda *_: heard.write_text(heard.read_text() + "HUP\\n"))
heard.write_text("")
while True:
    signal.pause()
"""


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_add_remove_and_edit_send_sighup_to_the_daemon(
    tmp_path: Path, job_file: Path, processes: list
) -> None:
    heard = tmp_path / "heard.txt"
    lock = tmp_path / "state" / "cronflow" / "cronflow.lock"
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    proc = subprocess.Popen([sys.executable, str(script), str(lock), str(heard)])
    processes.append(proc)
    wait_until(heard.exists, what="the fake daemon to hold the lock")

    added = cronflow("add", "b", "--command", "x", "-c", str(job_file))
    assert f"the running daemon (pid {proc.pid}) reloads it now" in added.stdout
    wait_until(lambda: heard.read_text() == "HUP\n", what="SIGHUP after add")
    assert cronflow("remove", "b", "-c", str(job_file)).returncode == 0
    wait_until(lambda: heard.read_text() == "HUP\nHUP\n", what="SIGHUP after remove")
    cronflow("edit", "-c", str(job_file), env=scripted_editor(tmp_path, "bad"), input="n\n")
    cronflow("add", "b", "--command", "x", "--after", "ghost", "-c", str(job_file))
    assert heard.read_text() == "HUP\nHUP\n"  # refused edits change nothing and nudge no one


def test_a_running_daemon_picks_up_an_added_job(tmp_path: Path, processes: list) -> None:
    config = tmp_path / "jobs.toml"
    config.write_text('[jobs.first]\nschedule = "@every 1s"\ncommand = "true"\n')
    log = tmp_path / "daemon.log"
    with log.open("ab") as out:
        daemon = subprocess.Popen([*CRONFLOW, "daemon", "-c", str(config)], stdout=out, stderr=out)
    processes.append(daemon)
    wait_until(lambda: "started" in log.read_text(), what="the daemon to start")

    added = cronflow(
        "add", "second", "--command", "echo second", "--schedule", "@every 1s", "-c", str(config)
    )
    assert added.returncode == 0, added.stderr
    assert f"(pid {daemon.pid})" in added.stdout

    def second_ran() -> bool:
        runs = json.loads(cronflow("history", "second", "--json").stdout or "[]")
        return any(r["status"] == "success" for r in runs)

    wait_until(second_ran, timeout=20, what="the added job to run under the daemon")
