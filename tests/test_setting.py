"""`add` options and `--set`, `cronflow set` and `cronflow unset`: KEY=VALUE edits of one job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cronflow import setting
from cronflow.cli import jobfile
from cronflow.config import parse_config
from cronflow.errors import CronflowError

FILE = """\
# my jobs
[defaults]
retries = 1   # everyone

[jobs.backup]  # nightly
command = "restic backup ~/docs"   # keep this comment
schedule = "0 3 * * *"
timeout = "2h"

[jobs.backup.env]
RESTIC_REPOSITORY = "/srv/restic"

# the report follows
[jobs.report]
after = ["backup"]
command = "./report.sh"
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.toml"
    path.write_text(FILE)
    return path


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("1.5", 1.5),
        ("true", True),
        ('["a", "b"]', ["a", "b"]),
        ('{ A = "1" }', {"A": "1"}),
        ('"quoted"', "quoted"),
        ("90s", "90s"),
        ("/usr/bin", "/usr/bin"),
        ("echo hi there", "echo hi there"),
        ("", ""),
    ],
)
def test_a_value_is_toml_when_it_parses_else_a_string(text: str, value: object) -> None:
    assert setting.parse_assignment(f"key={text}").value == value


def test_env_values_stay_strings() -> None:
    assert setting.parse_assignment("env.PORT=8080").value == "8080"
    assert setting.parse_assignment("env.PATH=/usr/bin").key == ("env", "PATH")


@pytest.mark.parametrize("text", ["retries", "=3", "bad key=1", "a..b=1"])
def test_bad_assignments_are_usage_errors(text: str) -> None:
    with pytest.raises(CronflowError) as info:
        setting.parse_assignment(text)
    assert info.value.exit_code == 2


def test_set_changes_only_what_it_sets(job_file: Path) -> None:
    jobfile.set_keys("backup", ["retries=3", "timeout=90", "env.EXTRA=x"], config=job_file)
    text = job_file.read_text()
    assert text == FILE.replace('timeout = "2h"', "timeout = 90\nretries = 3").replace(
        'RESTIC_REPOSITORY = "/srv/restic"\n', 'RESTIC_REPOSITORY = "/srv/restic"\nEXTRA = "x"\n'
    )
    job = parse_config(text, str(job_file)).jobs["backup"]
    assert (job.retries, job.timeout, dict(job.env)["EXTRA"]) == (3, 90.0, "x")


def test_set_refuses_an_invalid_result_and_changes_nothing(job_file: Path) -> None:
    for assignments, says in [
        (["retriez=3"], "retriez: unknown key (did you mean 'retries'?)"),
        (["schedule=@daily", "timeout=forever"], "timeout:"),
        (["overlap=sometimes"], "overlap: must be one of skip, queue, allow"),
    ]:
        with pytest.raises(CronflowError, match=re.escape(says)) as e:
            jobfile.set_keys("backup", assignments, config=job_file)
        assert e.value.exit_code == 2
    with pytest.raises(CronflowError, match="only jobs without 'after' may have a schedule"):
        jobfile.set_keys("report", ["schedule=@daily"], config=job_file)
    with pytest.raises(CronflowError, match="no job named 'bakup'.*did you mean 'backup'") as e:
        jobfile.set_keys("bakup", ["retries=3"], config=job_file)
    assert e.value.exit_code == 1
    assert job_file.read_text() == FILE


def test_unset(job_file: Path) -> None:
    jobfile.unset_keys("backup", ["timeout", "env.RESTIC_REPOSITORY"], config=job_file)
    text = job_file.read_text()
    assert 'timeout = "2h"' not in text and "RESTIC_REPOSITORY" not in text
    assert text.startswith(FILE.split("timeout")[0])  # everything before kept byte for byte
    assert text.endswith(FILE.split("# the report follows")[1])
    with pytest.raises(CronflowError, match="does not set timeout") as e:
        jobfile.unset_keys("backup", ["timeout"], config=job_file)
    assert e.value.exit_code == 1
    with pytest.raises(CronflowError, match="missing required key 'command'") as e:
        jobfile.unset_keys("backup", ["command"], config=job_file)
    assert e.value.exit_code == 2


def test_set_refuses_to_overwrite_a_concurrent_change(
    monkeypatch: pytest.MonkeyPatch, job_file: Path
) -> None:
    real = setting.set_keys

    def racing(*args: object, **kwargs: object) -> str:
        result = real(*args, **kwargs)
        job_file.write_text(FILE + "# theirs\n")
        return result

    monkeypatch.setattr(setting, "set_keys", racing)
    with pytest.raises(CronflowError, match="changed while cronflow was editing it"):
        jobfile.set_keys("backup", ["retries=3"], config=job_file)
    assert job_file.read_text() == FILE + "# theirs\n"


def test_add_options_and_set(job_file: Path) -> None:
    jobfile.add(
        "sync",
        "rsync -a ~/a host:",
        schedule="@hourly",
        retry_delay="90",
        timezone="Europe/Berlin",
        workdir="~",
        env=["HOST=box", "PORT=22"],
        env_file=["sync.env"],
        overlap="queue",
        catchup="latest",
        on_success="true",
        sets=["retry_backoff=1.5", "env.PATH=/usr/bin", "jitter=30s", "enabled=false"],
        config=job_file,
    )
    text = job_file.read_text()
    assert text.startswith(FILE)
    job = parse_config(text, str(job_file)).jobs["sync"]
    assert (job.retry_delay, job.timezone.key, job.overlap, job.catchup) == (
        90.0,
        "Europe/Berlin",
        "queue",
        "latest",
    )
    assert dict(job.env) == {"HOST": "box", "PORT": "22", "PATH": "/usr/bin"}
    assert (job.retry_backoff, job.jitter, job.enabled, job.on_success) == (1.5, 30, False, "true")
    assert job.env_file == (str(job_file.parent / "sync.env"),)


def test_add_set_problems_name_the_key(job_file: Path) -> None:
    with pytest.raises(CronflowError, match="--set retriez: unknown key") as e:
        jobfile.add("x", "true", sets=["retriez=1"], config=job_file)
    assert e.value.exit_code == 2
    with pytest.raises(CronflowError, match="--set: retries is also given as an option"):
        jobfile.add("x", "true", retries=2, sets=["retries=1"], config=job_file)
    with pytest.raises(CronflowError, match="--set: jitter is given twice"):
        jobfile.add("x", "true", sets=["jitter=1", "jitter=2"], config=job_file)
    assert job_file.read_text() == FILE


def test_add_problems_name_the_option_they_came_from(job_file: Path) -> None:
    """`--set retries=abc` is reported under `--set retries`, not `--retries`; `--timezone`,
    `--retry-delay` and the other named options under their own name, not `--set KEY`."""
    with pytest.raises(CronflowError) as e:
        jobfile.add("x", "true", sets=["retries=abc"], config=job_file)
    assert e.value.message.splitlines()[1:] == [
        "  --set retries: must be a whole number from 0 to 1000, got 'abc'"
    ]
    with pytest.raises(CronflowError) as e:
        jobfile.add(
            "x", "true", retries=9999, timezone="Mars", retry_delay="5x", overlap="wait",
            env=["A=1"], sets=["retry_backoff=0", "env.B=2"], config=job_file,
        )  # fmt: skip
    assert [line.split(":")[0].strip() for line in e.value.message.splitlines()[1:]] == [
        "--retries", "--retry-delay", "--timezone", "--overlap", "--set retry_backoff",
    ]  # fmt: skip
    assert job_file.read_text() == FILE
