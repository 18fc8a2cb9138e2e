"""Round-trip edits of the job file: add, remove, the starter, atomic writes, the edit loop."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import tomli
from hypothesis import given
from hypothesis import strategies as st

from cronflow import editing
from cronflow.config import load_config, parse_config
from cronflow.editing import NewJob
from cronflow.errors import ConfigError, CronflowError

RICH = """\
# My jobs.   Two spaces after the dot, kept.

[defaults]   # shared by every job
retries   = 1          # aligned comment
retry_delay="5s"

[daemon]
max_parallel = 4

# Nightly backup.
# Two comment lines belong to it.
[jobs.backup]
schedule = "0 3 * * *"
command = 'restic backup "~/my docs"'   # literal string
# retries = 9  (a commented-out key inside the table)

[jobs.backup.env]
RESTIC_REPOSITORY = "/srv/restic"

# ---- reports ----

# The report, after the backup.
[jobs.report]
after = [ "backup" ,]
command = \"\"\"
echo [jobs.fake]
\"\"\"

[jobs.cleanup]
schedule = "@daily"
command = "rm -rf /tmp/scratch"
# trailing note of cleanup

# A comment at the very end, after a blank line.
"""


def test_the_rich_file_is_valid() -> None:
    assert sorted(parse_config(RICH, "jobs.toml").jobs) == ["backup", "cleanup", "report"]


# -- add ---------------------------------------------------------------------------------


def test_add_appends_and_keeps_every_byte_of_the_rest() -> None:
    job = NewJob("weekly", "echo weekly", schedule="@weekly", retries=2, timeout="1h")
    result = editing.add_job(RICH, job, "jobs.toml")
    assert result == RICH + (
        '\n[jobs.weekly]\nschedule = "@weekly"\ncommand = "echo weekly"\n'
        'retries = 2\ntimeout = "1h"\n'
    )
    assert "weekly" in parse_config(result, "jobs.toml").jobs


def test_add_with_every_option_in_a_fixed_order() -> None:
    job = NewJob(
        "publish",
        "./publish.sh",
        after=("report", "backup"),
        retries=0,
        timeout="90",
        on_failure='notify-send "publish failed"',
        description="Push the report",
    )
    block = editing.job_block(job)
    assert block == (
        "[jobs.publish]\n"
        'description = "Push the report"\n'
        'after = ["report", "backup"]\n'
        'command = "./publish.sh"\n'
        "retries = 0\n"
        "timeout = 90\n"  # a bare number of seconds is written as one: "90" would be invalid
        "on_failure = 'notify-send \"publish failed\"'\n"
    )
    cfg = parse_config(editing.add_job(RICH, job, "jobs.toml"), "jobs.toml")
    assert cfg.jobs["publish"].after == ("report", "backup")
    assert cfg.jobs["publish"].timeout == 90


@pytest.mark.parametrize(
    ("command", "written"),
    [
        ("echo hi", '"echo hi"'),
        ('echo "a b"', "'echo \"a b\"'"),
        (r"grep '\d' log", r"'''grep '\d' log'''"),  # ' and \: no escapes needed
        ("printf '%s\\n' \"x\"", "'''printf '%s\\n' \"x\"'''"),
        ("it's", '"it\'s"'),
        ("a\tb\x01", r'"a\tb\u0001"'),
    ],
)
def test_commands_are_quoted_readably_and_exactly(command: str, written: str) -> None:
    block = editing.job_block(NewJob("q", command))
    assert block.splitlines()[1] == f"command = {written}"
    assert tomli.loads(block)["jobs"]["q"]["command"] == command


@given(st.text(min_size=1))
def test_any_command_round_trips(command: str) -> None:
    block = editing.job_block(NewJob("q", command, on_failure=command, description=command))
    job = tomli.loads(block)["jobs"]["q"]
    assert job["command"] == job["on_failure"] == job["description"] == command


def test_add_to_an_empty_file_and_to_one_without_a_final_newline() -> None:
    assert editing.add_job("", NewJob("a", "x"), "j") == '[jobs.a]\ncommand = "x"\n'
    text = '[jobs.a]\ncommand = "x"'
    assert editing.add_job(text, NewJob("b", "y"), "j") == text + '\n\n[jobs.b]\ncommand = "y"\n'


def test_add_keeps_windows_line_ends() -> None:
    text = '# jobs\r\n[jobs.a]\r\ncommand = "x"\r\n'
    result = editing.add_job(text, NewJob("b", "y"), "j")
    assert result == text + '\r\n[jobs.b]\r\ncommand = "y"\r\n'


def test_add_refuses_an_existing_name_with_exit_1() -> None:
    with pytest.raises(CronflowError) as caught:
        editing.add_job(RICH, NewJob("backup", "x"), "jobs.toml")
    assert caught.value.exit_code == 1
    assert "'backup' already exists in jobs.toml" in caught.value.message


@pytest.mark.parametrize(
    ("job", "where"),
    [
        (NewJob("n", "x", after=("ghost",)), "--after: unknown job 'ghost'"),
        (NewJob("n", "x", schedule="*/75 * * * *"), "--schedule: "),
        (NewJob("n", "x", timeout="1h30"), "--timeout: "),
        (NewJob("n", "x", retries=-1), "--retries: must be a whole number"),
        (NewJob("n", "x", schedule="@daily", after=("backup",)), "--schedule: only jobs"),
        (NewJob("bad name", "x"), "bad name: job names use letters"),
        (NewJob("n", "  "), "--command: must be a non-empty string"),
    ],
)
def test_an_invalid_add_says_which_option_is_wrong(job: NewJob, where: str) -> None:
    with pytest.raises(CronflowError) as caught:
        editing.add_job(RICH, job, "jobs.toml")
    assert caught.value.exit_code == 2
    assert "jobs.toml is unchanged" in caught.value.message
    assert where in caught.value.message


def test_adding_to_a_broken_file_reports_its_lines() -> None:
    text = '[jobs.a]\ncommand = "x"\nretires = 3\n'
    with pytest.raises(CronflowError) as caught:
        editing.add_job(text, NewJob("b", "y"), "jobs.toml")
    assert caught.value.exit_code == 2
    assert "jobs.toml:3: jobs.a.retires: unknown key" in caught.value.message


# -- remove ------------------------------------------------------------------------------


def test_remove_takes_the_table_its_sub_tables_and_its_own_comments() -> None:
    text = RICH.replace('after = [ "backup" ,]\n', "")  # nothing depends on backup now
    expected = text.replace(
        "# Nightly backup.\n"
        "# Two comment lines belong to it.\n"
        "[jobs.backup]\n"
        'schedule = "0 3 * * *"\n'
        "command = 'restic backup \"~/my docs\"'   # literal string\n"
        "# retries = 9  (a commented-out key inside the table)\n"
        "\n"
        "[jobs.backup.env]\n"
        'RESTIC_REPOSITORY = "/srv/restic"\n'
        "\n",
        "",
    )
    assert editing.remove_job(text, "backup", "jobs.toml") == expected


def test_remove_keeps_the_comment_of_the_next_table_and_free_standing_comments() -> None:
    expected = RICH.replace(
        '# The report, after the backup.\n[jobs.report]\nafter = [ "backup" ,]\n'
        'command = """\necho [jobs.fake]\n"""\n\n',
        "",
    )
    assert "# ---- reports ----\n\n[jobs.cleanup]" in expected
    assert editing.remove_job(RICH, "report", "jobs.toml") == expected


def test_removing_the_last_table_keeps_a_comment_set_off_by_a_blank_line() -> None:
    expected = RICH.replace(
        '\n[jobs.cleanup]\nschedule = "@daily"\ncommand = "rm -rf /tmp/scratch"\n'
        "# trailing note of cleanup\n",
        "",
    )
    assert editing.remove_job(RICH, "cleanup", "jobs.toml") == expected


def test_removing_the_last_job_leaves_a_valid_file_without_jobs() -> None:
    text = '# header\n\n[daemon]\nmax_parallel = 2\n\n[jobs.only]\ncommand = "x"\n'
    result = editing.remove_job(text, "only", "j")
    assert result == "# header\n\n[daemon]\nmax_parallel = 2\n"
    assert parse_config(result, "j").jobs == {}
    assert editing.remove_job('[jobs.only]\ncommand = "x"\n', "only", "j") == ""


@pytest.mark.parametrize(
    "text",
    [
        '[jobs]\nkeep.command = "k"\ngone.command = "g"\ngone.retries = 1\n',
        'jobs.gone.command = "g"\n[jobs.keep]\ncommand = "k"\n',
        '[jobs]\ngone = { command = "g" }\n\n[jobs.keep]\ncommand = "k"\n',
    ],
)
def test_remove_handles_jobs_written_with_dotted_keys_or_inline(text: str) -> None:
    result = editing.remove_job(text, "gone", "j")
    assert tomli.loads(result) == {"jobs": {"keep": {"command": "k"}}}


def test_remove_refuses_while_named_in_after_and_unknown_names() -> None:
    with pytest.raises(CronflowError) as caught:
        editing.remove_job(RICH, "backup", "jobs.toml")
    assert caught.value.exit_code == 1
    assert "report still names it in `after`" in caught.value.message
    with pytest.raises(CronflowError) as caught:
        editing.remove_job(RICH, "reprot", "jobs.toml")
    assert caught.value.exit_code == 1
    assert caught.value.message == "no job named 'reprot' in jobs.toml (did you mean 'report'?)"


def test_remove_from_a_broken_file_reports_the_lines_on_disk() -> None:
    text = '[jobs.gone]\ncommand = "g"\n\n[jobs.a]\ncommand = "x"\nretires = 3\n'
    with pytest.raises(ConfigError) as caught:
        editing.remove_job(text, "gone", "jobs.toml")
    assert caught.value.problems[0].line == 6
    fixed = editing.remove_job(text, "a", "jobs.toml")  # removing the broken job fixes it
    assert fixed == '[jobs.gone]\ncommand = "g"\n'


def test_remove_from_a_file_that_is_not_toml_is_a_located_error() -> None:
    with pytest.raises(ConfigError) as caught:
        editing.remove_job('[jobs.a]\ncommand = "x\n', "a", "jobs.toml")
    assert caught.value.problems[0].line == 2


# -- the starter -------------------------------------------------------------------------


def test_the_starter_is_valid_and_has_no_jobs() -> None:
    assert parse_config(editing.STARTER, "cronflow.toml").jobs == {}


def test_the_starter_examples_are_valid_once_uncommented() -> None:
    example = re.compile(r"# (\[|\w+ = )")  # a commented table header or key
    uncommented = "\n".join(
        line[2:] if example.match(line) else line for line in editing.STARTER.splitlines()
    )
    cfg = parse_config(uncommented, "cronflow.toml")
    assert sorted(cfg.jobs) == ["backup", "report"]
    backup = cfg.jobs["backup"]
    assert (backup.retries, backup.timeout, backup.on_failure is not None) == (2, 7200, True)
    assert cfg.jobs["report"].after == ("backup",)
    assert cfg.daemon.max_parallel == 4


# -- writing -----------------------------------------------------------------------------


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text("old\n")
    path.chmod(0o600)
    editing.write_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["jobs.toml"]


def test_new_files_are_0644_under_the_umask_with_their_folders(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        editing.write_new(tmp_path / "a" / "b" / "jobs.toml", "x\n")
        os.umask(0o077)
        editing.write_new(tmp_path / "private.toml", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "b" / "jobs.toml").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.toml").stat().st_mode) == 0o600


def test_new_folders_are_not_group_writable_under_a_group_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # Debian's user-private-group umask
    try:
        editing.write_new(tmp_path / "a" / "b" / "jobs.toml", '[jobs.x]\ncommand = "true"\n')
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert list(load_config(tmp_path / "a" / "b" / "jobs.toml").jobs) == ["x"]


def test_write_new_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text("mine\n")
    with pytest.raises(CronflowError, match="already exists"):
        editing.write_new(path, "theirs\n")
    assert path.read_text() == "mine\n"
    assert os.listdir(tmp_path) == ["jobs.toml"]


def test_a_symlinked_job_file_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "cronflow.toml"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "cronflow.toml"
    link.symlink_to(real)
    editing.write_atomic(link, "new\n")
    assert link.is_symlink()
    assert real.read_text() == "new\n"


def test_write_atomic_refuses_when_the_file_is_not_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "jobs.toml"
    path.write_text("theirs\n")
    with pytest.raises(CronflowError, match="changed while cronflow was editing it") as info:
        editing.write_atomic(path, "mine\n", expected="what I read\n")
    assert info.value.exit_code == 1
    assert path.read_text() == "theirs\n"
    assert os.listdir(tmp_path) == ["jobs.toml"]
    editing.write_atomic(path, "mine\n", expected="theirs\n")
    assert path.read_text() == "mine\n"
