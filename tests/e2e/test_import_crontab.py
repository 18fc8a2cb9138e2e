"""`cronflow import-crontab` through the real command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import CRONFLOW, cronflow

CRONTABS = Path(__file__).parents[1] / "crontabs"


def test_prints_toml_that_validates_and_reports_skipped_lines(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_text("0 3 * * * backup.sh\n0 0 L * * month-end.sh\nnot a job line\n")
    result = cronflow("import-crontab", str(crontab))
    assert result.returncode == 0
    assert "[jobs.backup-sh]" in result.stdout and 'schedule = "0 3 * * *"' in result.stdout
    skipped = result.stderr.splitlines()
    assert skipped[0].startswith(f"warning: {crontab}:2: not imported: ")
    assert skipped[1].startswith(f"warning: {crontab}:3: not imported: ")
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(result.stdout)
    assert cronflow("validate", "-c", str(jobs)).stdout.startswith("OK: 1 job in")


def test_every_fixture_imports_to_a_valid_file(tmp_path: Path) -> None:
    for crontab in sorted(CRONTABS.iterdir()):
        out = tmp_path / f"{crontab.name}.toml"
        out.write_text(cronflow("import-crontab", str(crontab)).stdout)
        assert cronflow("validate", "-c", str(out)).returncode == 0, crontab.name


def test_write_appends_to_the_job_file_keeping_it(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    original = '# my jobs\n[jobs.backup-sh]\ncommand = "true"\n'
    config.write_text(original)
    result = cronflow(
        "import-crontab",
        "-",
        "--write",
        "-c",
        str(config),
        input="0 3 * * * backup.sh\n@reboot agent --start\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added 2 jobs to {config}\n"
    text = config.read_text()
    assert text.startswith(original)
    names = [j["name"] for j in json.loads(cronflow("list", "--json", "-c", str(config)).stdout)]
    assert names == ["backup-sh", "backup-sh-2", "agent"]


def test_importing_the_same_crontab_twice_adds_each_line_once(tmp_path: Path) -> None:
    config = tmp_path / "jobs.toml"
    crontab = "0 3 * * * backup.sh\n@reboot agent --start\n"
    first = cronflow("import-crontab", "-", "--write", "-c", str(config), input=crontab)
    assert first.stdout == f"added 2 jobs to {config}\n", first.stderr
    crontab += "*/5 * * * * poll.sh\n"
    again = cronflow("import-crontab", "-", "--write", "-c", str(config), input=crontab)
    assert again.returncode == 0
    assert again.stdout == f"added 1 job to {config}\n"
    assert again.stderr.splitlines() == [
        "warning: -:1: not imported: already in the job file as backup-sh",
        "warning: -:2: not imported: already in the job file as agent",
    ]
    third = cronflow("import-crontab", "-", "--write", "-c", str(config), input=crontab)
    assert third.stdout == f"nothing to add to {config}\n"
    # The same line under another CRON_TZ fires at another instant: a job of its own.
    zoned = "CRON_TZ=Asia/Tokyo\n0 3 * * * backup.sh\n"
    fourth = cronflow("import-crontab", "-", "--write", "-c", str(config), input=zoned)
    assert fourth.stdout == f"added 1 job to {config}\n", fourth.stderr
    names = [j["name"] for j in json.loads(cronflow("list", "--json", "-c", str(config)).stdout)]
    assert names == ["backup-sh", "agent", "poll-sh", "backup-sh-2"]


def test_write_creates_a_missing_job_file(tmp_path: Path) -> None:
    config = tmp_path / "new" / "jobs.toml"
    result = cronflow(
        "import-crontab", str(CRONTABS / "small.crontab"), "--write", "-c", str(config)
    )
    assert result.returncode == 0, result.stderr
    assert cronflow("validate", "-c", str(config)).returncode == 0


def test_unreadable_source_is_one_line(tmp_path: Path) -> None:
    result = cronflow("import-crontab", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert (
        result.stderr == f"error: {tmp_path / 'missing'}: cannot read: No such file or directory\n"
    )


def test_invalid_utf8_is_warned_about_and_kept_escaped(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab"
    crontab.write_bytes(b"0 3 * * * backup.sh\n0 4 * * * echo \xff >> log\n")
    for source, data in ((str(crontab), None), ("-", crontab.read_bytes())):
        result = subprocess.run(
            [*CRONFLOW, "import-crontab", source], input=data, capture_output=True, check=False
        )
        assert result.returncode == 0
        assert result.stderr.decode() == (
            f"warning: {source}:2: not imported: "
            "invalid UTF-8; kept as a comment with its bytes escaped\n"
        )
        out = result.stdout.decode("utf-8")
        assert "# 0 4 * * * echo \\xff >> log\n" in out and "\ufffd" not in out
        assert out.count("[jobs.") == 1
