"""`validate`, `list` and `next` through the real `cronflow` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cronflow

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_validates(example: str) -> None:
    result = cronflow("validate", "-c", str(EXAMPLES / example))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")


def test_validate_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\ncommand = "x"\nretires = 3\nschedule = "0 0 31 2 *"\n')
    result = cronflow("-c", str(job_file), "validate")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{job_file}:3: jobs.a.retires: unknown key (did you mean 'retries'?)"
    assert lines[1].startswith(f"{job_file}:4: jobs.a.schedule: ")
    assert lines[-1] == "error: 2 problems in the job file"
    assert "Traceback" not in result.stderr


def test_missing_job_file_exits_1_with_a_hint_and_creates_nothing(tmp_path: Path) -> None:
    for command in ("validate", "list"):
        result = cronflow(command)
        assert result.returncode == 1
        assert "cronflow init" in result.stderr
    assert not (tmp_path / "config" / "cronflow").exists()
    assert not (tmp_path / "state").exists()


def test_a_missing_job_file_named_by_c_is_created_by_the_hints_with_the_same_c(
    tmp_path: Path,
) -> None:
    job_file = tmp_path / "my jobs.toml"
    result = cronflow("-c", str(job_file), "list")
    assert result.returncode == 1
    quoted = f"'{job_file}'"
    assert f"`cronflow init -c {quoted}` or `cronflow add -c {quoted}`" in result.stderr
    made = cronflow("init", "-c", str(job_file))
    assert made.returncode == 0 and job_file.exists()
    assert f"`cronflow add -c {quoted} NAME" in made.stdout
    assert cronflow("validate", "-c", str(job_file)).returncode == 0


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x01\x02binary\xff" * 1000, bytes(range(32, 127)) * 55_000],  # 5 MB garbage
)
def test_empty_is_valid_and_garbage_is_one_line(tmp_path: Path, content: bytes) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_bytes(content)
    result = cronflow("validate", "-c", str(job_file))
    if content:
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1
    else:
        assert result.stdout == f"OK: 0 jobs in 0 flows ({job_file})\n"


def test_directory_as_job_file(tmp_path: Path) -> None:
    result = cronflow("validate", "-c", str(tmp_path))
    assert (result.returncode, result.stderr) == (
        2,
        f"error: {tmp_path}: is a directory, not a job file\n",
    )


def test_default_path_and_environment_override(tmp_path: Path) -> None:
    default = tmp_path / "config" / "cronflow" / "cronflow.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[jobs.a]\ncommand = "x"\n')
    assert cronflow("validate").stdout == f"OK: 1 job in 1 flow ({default})\n"
    other = tmp_path / "other.toml"
    other.write_text("")
    result = cronflow("validate", env={"CRONFLOW_CONFIG": str(other)})
    assert result.stdout == f"OK: 0 jobs in 0 flows ({other})\n"


def test_list_json_shape() -> None:
    result = cronflow("list", "--json", "-c", str(EXAMPLES / "etl.toml"))
    assert result.returncode == 0, result.stderr
    jobs = json.loads(result.stdout)
    assert [j["name"] for j in jobs] == ["extract", "transform", "load", "report"]
    extract = jobs[0]
    assert set(extract) == {
        "name",
        "description",
        "schedule",
        "timezone",
        "next_fire",
        "last_status",
        "after",
        "paused",
        "paused_by",
        "enabled",
    }
    assert extract["schedule"] == "0 6 * * *"
    assert extract["timezone"] == "Europe/Berlin"
    assert extract["next_fire"].endswith(("+01:00", "+02:00"))
    assert jobs[1]["after"] == ["extract"] and jobs[1]["next_fire"] is None


def test_list_piped_is_a_plain_table() -> None:
    result = cronflow("-c", str(EXAMPLES / "ml.toml"), "list")
    lines = result.stdout.splitlines()
    header = ["JOB", "SCHEDULE", "WHEN", "TIMEZONE", "NEXT", "FIRE", "LAST", "DESCRIPTION"]
    assert lines[0].split() == header
    assert lines[1].startswith("batch-inference  */30 * * * *  every 30 minutes")
    assert lines[1].endswith("  Score the newest batch")  # piped: never cut
    assert "after evaluate, export" in lines[5]
    assert "\x1b[" not in result.stdout


def test_next_on_a_dst_day(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text(
        '[jobs.a]\ncommand = "x"\nschedule = "30 2 * * *"\n'
        'timezone = "Europe/Berlin"\n[jobs.b]\ncommand = "y"\nafter = ["a"]\n'
    )
    result = cronflow("next", "b", "-n", "3", "--from", "2026-03-28T12:00", "-c", str(job_file))
    assert result.stdout.splitlines() == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that day: first instant after
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    as_json = cronflow(
        "next", "a", "-n", "1", "--json", "--from", "2026-10-25", "-c", str(job_file)
    )
    assert json.loads(as_json.stdout) == ["2026-10-25T02:30:00+02:00"]


def test_next_errors(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\ncommand = "x"\nschedule = "@daily"\n')
    unknown = cronflow("next", "b", "-c", str(job_file))
    assert (unknown.returncode, unknown.stderr) == (1, f"error: no job named 'b' in {job_file}\n")
    bad = cronflow("next", "a", "--from", "yesterday", "-c", str(job_file))
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: --from: 'yesterday' is not an ISO 8601 date")


def test_plain_commands_do_not_import_rich_or_croniter(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\ncommand = "x"\nschedule = "0 3 * * *"\n')
    probe = (
        "import sys\nfrom cronflow.cli import main\n"
        f"sys.argv = ['cronflow', '-c', {str(job_file)!r}, sys.argv[1]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('MODULES', sorted(m for m in ('rich', 'sqlite3', 'tomlkit') if m in sys.modules))"
    )
    for command in ("validate", "list"):
        out = subprocess.run(
            [sys.executable, "-c", probe, command], capture_output=True, text=True, check=True
        ).stdout
        assert out.splitlines()[-1] == "MODULES []", (command, out)


def test_a_job_file_others_can_write_is_refused_by_every_reader(tmp_path: Path) -> None:
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\ncommand = "true"\n')
    job_file.chmod(0o666)
    expected = f"error: {job_file} is writable by others (mode 0666); run chmod go-w {job_file}\n"
    for args in (["validate"], ["list"], ["run", "a"], ["remove", "a"], ["edit"]):
        result = cronflow(*args, "-c", str(job_file), env={"EDITOR": "true"})
        assert (result.returncode, result.stderr) == (2, expected), args
    status = json.loads(cronflow("status", "--json", "-c", str(job_file)).stdout)
    assert "writable by others" in status["daemon"]["config_error"]
    assert job_file.read_text() == '[jobs.a]\ncommand = "true"\n'


def test_everyday_commands_never_import_celery_or_redis(tmp_path: Path) -> None:
    """Only the remote commands may pay for Celery (SPEC §8), and only `cronflow ui` for
    Textual (SPEC §9): the start-up bench must not move."""
    job_file = tmp_path / "jobs.toml"
    job_file.write_text('[jobs.a]\ncommand = "x"\nschedule = "0 3 * * *"\n')
    probe = (
        "import sys\nfrom cronflow.cli import main\n"
        f"sys.argv = ['cronflow', '-c', {str(job_file)!r}, *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('MODULES', sorted(m for m in ('celery', 'kombu', 'redis', 'textual')"
        " if m in sys.modules))"
    )
    everyday = (["--version"], ["list"], ["validate"], ["status"], ["history"], ["trigger", "a"])
    for command in everyday:
        out = subprocess.run(
            [sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True
        ).stdout
        assert out.splitlines()[-1] == "MODULES []", (command, out)


def test_a_state_folder_that_is_a_file_or_a_database_that_is_a_folder_is_one_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "afile").touch()
    (tmp_path / "folder" / "cronflow.db").mkdir(parents=True)
    for state, why in (("afile", "Not a directory"), ("folder", "Is a directory")):
        env = {"CRONFLOW_STATE_DIR": str(tmp_path / state)}
        for command in (["history"], ["logs", "a"], ["prune", "--older-than", "1d"]):
            result = cronflow(*command, env=env)
            assert result.returncode == 1, command
            assert (
                result.stderr
                == f"error: cannot open database: {tmp_path / state}/cronflow.db: {why}\n"
            )
