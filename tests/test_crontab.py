"""Tests for cronflow.crontab: crontab(5) text → cronflow jobs.

Fixtures in tests/crontabs/ are realistic crontabs. Two oracles are written here independently
of the module: a port of cron's '%' handling (do_command.c) whose stdin bytes are compared with
what the imported command really prints under /bin/sh, and a brute-force cron matcher whose
fires are compared with the imported schedules' `next_fire`.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import tomli
from hypothesis import given, settings
from hypothesis import strategies as st

from cronflow.config import parse_config
from cronflow.crontab import ImportResult, Skipped, import_crontab
from cronflow.schedule import parse_schedule

CRONTABS = Path(__file__).parent / "crontabs"
FIXTURES = sorted(p.name for p in CRONTABS.iterdir())


def load(name: str) -> str:
    return (CRONTABS / name).read_text()


def imported(text: str, **kwargs: object) -> ImportResult:
    """Import, and check on the way that the TOML is a valid job file holding `jobs`."""
    result = import_crontab(text, **kwargs)
    assert tomli.loads(result.toml).get("jobs", {}) == result.jobs
    parse_config(result.toml, "/tmp/imported.toml")
    return result


def only_job(text: str, **kwargs: object) -> dict:
    result = imported(text, **kwargs)
    assert len(result.jobs) == 1, (result.jobs, result.skipped)
    return next(iter(result.jobs.values()))


def reasons(result: ImportResult) -> dict[int, str]:
    return {s.line: s.reason for s in result.skipped}


# -- one small crontab, exactly ------------------------------------------------------------------

SMALL_TOML = """\
# Imported from a crontab by `cronflow import-crontab`. As under cron, each job
# runs its command with /bin/sh (or the crontab's SHELL) in your home folder.

[jobs.backup-sh]
# nightly work
description = "imported from crontab line 4"
schedule = "0 3 * * *"
command = "/usr/local/bin/backup.sh --full"
shell = "/bin/bash"
workdir = "~"
# cron mailed any output to ops@example.com; `cronflow logs` keeps it now.
# To be mailed when the job fails, uncomment:
# on_failure = 'printf "%s\\n" "$CRONFLOW_LOG_TAIL" | mail -s "cronflow: $CRONFLOW_JOB failed" \
ops@example.com'

[jobs.cat]
description = "imported from crontab line 6"
schedule = "30 7 * * mon-fri"
command = '''printf '%s\\n' hello world | cat'''
timezone = "Europe/Berlin"
shell = "/bin/bash"
workdir = "~"
# cron mailed any output to ops@example.com; `cronflow logs` keeps it now.
# To be mailed when the job fails, uncomment:
# on_failure = 'printf "%s\\n" "$CRONFLOW_LOG_TAIL" | mail -s "cronflow: $CRONFLOW_JOB failed" \
ops@example.com'
"""


def test_small_crontab_exact_toml() -> None:
    result = imported(load("small.crontab"))
    assert result.toml == SMALL_TOML
    assert result.skipped == []
    assert result.jobs["cat"] == {
        "description": "imported from crontab line 6",
        "schedule": "30 7 * * mon-fri",
        "command": "printf '%s\\n' hello world | cat",
        "timezone": "Europe/Berlin",
        "shell": "/bin/bash",
        "workdir": "~",
    }


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_imports_to_a_valid_job_file(name: str) -> None:
    for system in (None, True, False):
        result = imported(load(name), system=system)
        assert result.toml.endswith("\n")
        for skipped in result.skipped:
            assert load(name).split("\n")[skipped.line - 1] == skipped.text


@pytest.mark.parametrize("name", FIXTURES)
def test_commented_out_jobs_become_valid_jobs_when_uncommented(name: str) -> None:
    result = imported(load(name))
    lines = result.toml.split("\n")
    blocks = [i for i, line in enumerate(lines) if line.startswith("# [jobs.")]
    for start in blocks:
        end = lines.index("", start)
        block = "\n".join(line.removeprefix("# ") for line in lines[start:end])
        config = parse_config(block, "/tmp/uncommented.toml")
        assert len(config.jobs) == 1
        assert not set(config.jobs) & set(result.jobs)


# -- the user crontab fixture --------------------------------------------------------------------


def test_user_crontab_jobs() -> None:
    result = imported(load("user.crontab"))
    assert list(result.jobs) == [
        "backup-sh",
        "backup-sh-2",
        "git",
        "start-agent",
        "fetch_feeds-py",
        "find",
        "mail",
        "tar",
        "market-open-sh",
        "market-close-sh",
    ]
    env = {
        "PATH": "/home/alice/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "GREETING": "  hello, world  ",
    }
    assert result.jobs["backup-sh"] == {
        "description": "imported from crontab line 12",
        "schedule": "0 3 * * *",
        "command": "/usr/local/bin/backup.sh --full",
        "shell": "/bin/bash",
        "workdir": "~",
        "env": env,
    }
    assert all(job["env"] == env and job["shell"] == "/bin/bash" for job in result.jobs.values())
    schedules = {name: job["schedule"] for name, job in result.jobs.items()}
    assert schedules["start-agent"] == "@reboot"
    assert schedules["fetch_feeds-py"] == "@hourly"
    assert schedules["find"] == "@weekly"
    assert result.jobs["mail"]["command"] == (
        "printf '%s\\n' 'Standup at 9.' 'Bring 10% more coffee.' "
        '| mail -s "standup" team@example.com'
    )
    assert result.jobs["tar"]["command"] == "tar czf ~/archive/docs-$(date +%Y-%m).tgz ~/docs"
    # CRON_TZ applies from its line on, and an empty CRON_TZ goes back to the local zone
    zones = {name: job.get("timezone") for name, job in result.jobs.items()}
    assert zones.pop("market-open-sh") == zones.pop("market-close-sh") == "America/New_York"
    assert set(zones.values()) == {None}


def test_user_crontab_skipped_lines() -> None:
    result = imported(load("user.crontab"))
    got = reasons(result)
    assert sorted(got) == [33, 34, 35, 36, 37, 38, 40, 41, 42]
    assert "'#' (nth weekday of the month)" in got[33]
    assert "'L' or 'W'" in got[34]
    assert "seconds or year field" in got[35]
    assert "full day names like 'monday'" in got[36]
    assert got[37] == "'Mars/Olympus_Mons' is not a known time zone; jobs below are skipped"
    assert got[38] == "CRON_TZ 'Mars/Olympus_Mons' (line 37) is not a known time zone"
    assert got[40].startswith("neither a job (five time fields, then the command)")
    assert got[41] == "cron always sets LOGNAME to the crontab's owner"
    assert got[42].startswith("cron has no schedule '@every'")
    assert result.skipped[0] == Skipped(33, "0 9 * * 1#2 ~/bin/second-monday.sh", got[33])
    # ... and the TOML says so next to the original line
    assert "# line 35 was not imported: '0 */5 * * * *' looks like" in result.toml
    assert "\n# 0 */5 * * * * ~/bin/every-five-hours.sh\n" in result.toml


def test_user_crontab_comments_are_kept() -> None:
    toml = imported(load("user.crontab")).toml
    assert "\n# m h  dom mon dow   command\n" in toml
    # a comment right above a job goes into its table
    assert "[jobs.backup-sh]\n# nightly backup of the documents\n" in toml
    assert "[jobs.mail]\n# a reminder on weekday mornings;" in toml
    # commented-out jobs become commented-out tables with names that do not clash
    assert (
        "# commented out in the crontab (line 29): 0 4 * * * /usr/local/bin/backup.sh --verify\n"
        "# [jobs.backup-sh-3]\n"
        '# description = "imported from crontab line 29"\n'
        '# schedule = "0 4 * * *"\n'
        '# command = "/usr/local/bin/backup.sh --verify"\n'
    ) in toml
    assert "# commented out in the crontab (line 30): 30 2 * * * rm -rf ~/cache/*\n" in toml


def test_comments_only_crontab() -> None:
    text = load("comments-only.crontab")
    result = imported(text)
    assert result.jobs == {} and result.skipped == []
    for line in text.splitlines():
        assert line.rstrip("#").strip() in result.toml


@pytest.mark.parametrize("text", ["", "\n", "\n\n   \n"])
def test_empty_crontab(text: str) -> None:
    result = imported(text)
    assert result.jobs == {} and result.skipped == []
    assert result.toml.startswith("# Imported from a crontab")


# -- assignments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "name", "value"),
    [
        ("FOO=bar", "FOO", "bar"),
        ("FOO = bar", "FOO", "bar"),
        ("FOO\t=\tbar baz  ", "FOO", "bar baz"),
        ("  FOO=bar", "FOO", "bar"),
        ('FOO="  padded  "', "FOO", "  padded  "),
        ("FOO='it \"is\"'", "FOO", 'it "is"'),
        ('FOO=""', "FOO", ""),
        ("FOO=", "FOO", ""),
        ("FOO=a=b", "FOO", "a=b"),
        ("FOO=x # not a comment", "FOO", "x # not a comment"),
        ("FOO=it's", "FOO", "it's"),
        ("FOO=$HOME/bin", "FOO", "$HOME/bin"),
        ("'MY VAR'=1", "MY VAR", "1"),
        ("my.var=1", "my.var", "1"),
    ],
)
def test_assignment_syntax(line: str, name: str, value: str) -> None:
    job = only_job(f"{line}\n0 3 * * * true\n")
    assert job["env"] == {name: value}


@pytest.mark.parametrize("line", ['FOO="unterminated', "FOO='a' b", "FOO BAR=1", '"A=B"=1'])
def test_broken_assignments_are_skipped(line: str) -> None:
    result = imported(f"{line}\n0 3 * * * true\n")
    assert [s.line for s in result.skipped] == [1]
    assert result.jobs["true"].get("env") is None


def test_variables_apply_to_the_lines_below_only() -> None:
    text = "0 1 * * * first\nA=1\n0 2 * * * second\nA=2\nB=3\n0 3 * * * third\n"
    jobs = imported(text).jobs
    assert "env" not in jobs["first"]
    assert jobs["second"]["env"] == {"A": "1"}
    assert jobs["third"]["env"] == {"A": "2", "B": "3"}


def test_shell_home_and_random_delay() -> None:
    text = "SHELL=/bin/zsh\nHOME=/srv/app\nRANDOM_DELAY=5\n0 3 * * * ./nightly\n"
    result = imported(text)
    assert result.jobs["nightly"] == {
        "description": "imported from crontab line 4",
        "schedule": "0 3 * * *",
        "command": "./nightly",
        "shell": "/bin/zsh",
        "workdir": "/srv/app",  # cron starts jobs in $HOME
        "env": {"HOME": "/srv/app"},
        "jitter": "5m",
    }
    assert "cronie delays by one random amount per daemon start" in result.toml


def test_cron_only_variables_are_skipped_or_noted() -> None:
    text = "LOGNAME=x\nUSER=y\nSHELL=\nRANDOM_DELAY=soon\nTZ=Asia/Tokyo\n0 3 * * * true\n"
    result = imported(text)
    assert sorted(reasons(result)) == [1, 2, 3, 4]
    assert reasons(result)[4] == "RANDOM_DELAY must be a whole number of minutes"
    job = result.jobs["true"]
    assert job["env"] == {"TZ": "Asia/Tokyo"} and "timezone" not in job and "shell" not in job
    assert "# TZ only sets the job's environment" in result.toml


def test_dollar_in_values_is_noted_as_literal() -> None:
    result = imported("PATH=$HOME/bin:$PATH\n0 3 * * * true\n")
    assert result.jobs["true"]["env"] == {"PATH": "$HOME/bin:$PATH"}
    assert "# Note: PATH (line 1) holds '$': cron does not expand variables" in result.toml


def test_cron_tz_switches_and_resets() -> None:
    text = (
        "0 1 * * * a\nCRON_TZ=Asia/Tokyo\n0 2 * * * b\nCRON_TZ=Nowhere/Land\n0 3 * * * c\n"
        "CRON_TZ=Europe/Berlin\n0 4 * * * d\nCRON_TZ=\n0 5 * * * e\n"
    )
    result = imported(text)
    assert {n: j.get("timezone") for n, j in result.jobs.items()} == {
        "a": None,
        "b": "Asia/Tokyo",
        "d": "Europe/Berlin",
        "e": None,
    }
    assert sorted(reasons(result)) == [4, 5]
    assert "env" not in result.jobs["b"]


@pytest.mark.parametrize("zone", ["Europe", "../etc/passwd", "/etc/localtime", "UTC+1"])
def test_odd_cron_tz_values_are_unknown_zones(zone: str) -> None:
    result = imported(f"CRON_TZ={zone}\n0 3 * * * true\n")
    assert result.jobs == {}
    assert [s.line for s in result.skipped] == [1, 2]


def test_mailto() -> None:
    text = (
        "0 1 * * * unset\nMAILTO=a@example.com, b@example.com\n0 2 * * * two\n"
        'MAILTO=""\n0 3 * * * none\n'
    )
    result = imported(text)
    hook = (
        '# on_failure = \'printf "%s\\n" "$CRONFLOW_LOG_TAIL" | '
        'mail -s "cronflow: $CRONFLOW_JOB failed" a@example.com b@example.com\''
    )
    assert result.toml.count("# on_failure =") == 1
    assert hook in result.toml
    assert "on_failure" not in str(result.jobs)
    # the suggested hook is valid TOML and a valid job key once uncommented
    uncommented = result.toml.replace("# on_failure", "on_failure")
    assert (
        parse_config(uncommented, "/tmp/x.toml")
        .jobs["two"]
        .on_failure.endswith("a@example.com b@example.com")
    )


# -- '%' in commands -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "command"),
    [
        ("date +\\%F", "date +%F"),
        ("echo 100\\%", "echo 100%"),
        ("echo a\\\\b", "echo a\\\\b"),
        ("cat%", "cat"),
        ("cat%hello", "printf '%s\\n' hello | cat"),
        ("cat%a%b%", "printf '%s\\n' a b | cat"),
        ("cat %it's", "printf '%s\\n' 'it'\"'\"'s' | cat "),
        ("wc -l%x%y", "printf '%s\\n' x y | wc -l"),
        ("tr a-z A-Z > out%x", "printf '%s\\n' x | tr a-z A-Z > out"),
        ("sort 2>&1%x", "printf '%s\\n' x | sort 2>&1"),
        ("read a; echo $a%x", "printf '%s\\n' x | {\nread a; echo $a\n}"),
        ("cat & wait%x", "printf '%s\\n' x | {\ncat & wait\n}"),
        ("cat # note%x", "printf '%s\\n' x | cat # note"),
        ("! grep -q y%x", "printf '%s\\n' x | {\n! grep -q y\n}"),
    ],
)
def test_percent_becomes_printf(written: str, command: str) -> None:
    assert only_job(f"* * * * * {written}\n")["command"] == command


def cron_stdin(command: str) -> tuple[str, bytes]:
    """Oracle: what cron runs and writes to its stdin (cronie do_command.c, transliterated)."""
    cmd = list(command) + ["\0"]
    p = i = 0
    escaped = False
    input_at = None
    while cmd[i] != "\0":
        ch = cmd[i]
        cmd[p] = ch
        if escaped:
            if ch == "%":
                p -= 1
                cmd[p] = ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            input_at = i + 1
            break
        i, p = i + 1, p + 1
    run = "".join(cmd[:p])
    out: list[str] = []
    if input_at is not None and input_at < len(command):
        escaped = need_newline = False
        for ch in command[input_at:]:
            if escaped:
                if ch != "%":
                    out.append("\\")
            elif ch == "%":
                ch = "\n"
            escaped = ch == "\\"
            if not escaped:
                out.append(ch)
                need_newline = ch != "\n"
        if escaped:
            out.append("\\")
        if need_newline:
            out.append("\n")
    return run, "".join(out).encode()


def run_job(job: dict, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    """Run an imported command as cronflow does: shell -c, stdin /dev/null."""
    return subprocess.run(
        [job.get("shell", "/bin/sh"), "-c", job["command"]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=tmp_path,
        timeout=10,
    )


@pytest.mark.parametrize(
    ("written", "stdin"),
    [
        ("cat%hello%world", b"hello\nworld\n"),
        ("cat%a%b%", b"a\nb\n"),
        ("cat%%", b"\n"),
        ("cat%", b""),
        ("cat%100\\% sure", b"100% sure\n"),
        ("cat%a\\b\\\\c", b"a\\b\\\\c\n"),
        ("cat%ends with \\", b"ends with \\\n"),
        ("cat%\\\\%x", b"\\%x\n"),
        ('cat%it\'s "quoted" $HOME `x`', b'it\'s "quoted" $HOME `x`\n'),
        ("cat%  spaced  %", b"  spaced  \n"),
        ("cat%-n%--", b"-n\n--\n"),
        ('read a; read b; echo "$b-$a"%one%two', b"two-one\n"),
        ("head -1 && cat%x%y", b"x\ny\n"),
    ],
)
def test_percent_stdin_matches_cron(written: str, stdin: bytes, tmp_path: Path) -> None:
    job = only_job(f"* * * * * {written}\n")
    run, data = cron_stdin(written)
    assert data == stdin or run != "cat"
    expected = subprocess.run(["/bin/sh", "-c", run], input=data, capture_output=True).stdout
    assert run_job(job, tmp_path).stdout == expected


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab %\\'\"$`;&|#\t", max_size=20))
def test_percent_stdin_property(tail: str) -> None:
    written = "cat%" + tail
    result = import_crontab(f"* * * * * {written}\n")
    job = result.jobs["cat"]
    _run, data = cron_stdin(written)
    got = subprocess.run(
        ["/bin/sh", "-c", job["command"]], stdin=subprocess.DEVNULL, capture_output=True
    )
    assert got.stdout == data


def test_stdin_for_a_non_posix_shell_is_skipped() -> None:
    result = imported("SHELL=/usr/bin/fish\n0 3 * * * cat%x\n0 4 * * * ls\n")
    assert list(result.jobs) == ["ls"]
    assert reasons(result) == {
        2: "its '%' input cannot be rewritten for SHELL=/usr/bin/fish; "
        "cronflow gives jobs an empty stdin"
    }


@pytest.mark.parametrize("written", ["%x", "  %x", "# just a comment"])
def test_empty_commands_are_skipped(written: str) -> None:
    result = imported(f"0 3 * * * {written}\n")
    assert result.jobs == {}
    assert "the command is empty" in reasons(result)[1]


# -- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "macro", ["@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"]
)
def test_macros_are_kept(macro: str) -> None:
    assert only_job(f"{macro}\tbackup\n")["schedule"] == macro


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("@Daily x", "cron has no schedule '@Daily'"),
        ("@every 5m x", "cron has no schedule '@every'"),
        ("@daily", "no command after the schedule '@daily'"),
        ("0 3 * *", "expected five time fields"),
        ("0 3 * * *", "no command after the schedule '0 3 * * *'"),
        ("0 3 * * * *", "'0 3 * * * *' looks like a schedule with a seconds or year field"),
        ("0 3 * * * 2026 x", "looks like a schedule with a seconds or year field"),
        ("0 0 31 2 * x", "can never fire"),
        ("10-5 * * * * x", "reversed"),
        ("*/75 * * * * x", "@every 75m"),
        ("5/15 * * * * x", "has a step without a range"),
        ("0 0 ? * * x", "'?' (no specific value"),
        ("0 0 15W * * x", "'L' or 'W'"),
        ("0 0 * * 5L x", "'L' or 'W'"),
        ("0 0 * january * x", "full month names"),
        ("60 * * * * x", "out of range"),
        ("x=", None),
    ],
)
def test_schedules_cronflow_does_not_take(line: str, reason: str | None) -> None:
    result = imported(line + "\n")
    assert result.jobs == {}
    if reason is None:
        assert result.skipped == []
    else:
        assert reason in reasons(result)[1]


def test_names_and_case_of_schedules_are_kept() -> None:
    assert only_job("0 9 * JAN-MAR Mon-Fri x\n")["schedule"] == "0 9 * JAN-MAR Mon-Fri"
    assert only_job("  0\t9  *   *\t*   x\n")["schedule"] == "0 9 * * *"


def test_cronie_dash_prefix_is_dropped_with_a_note() -> None:
    result = imported("-*/5 * * * * poll\n")
    assert result.jobs["poll"]["schedule"] == "*/5 * * * *"
    assert "# cronie's '-' prefix (no syslog line) was dropped" in result.toml


MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def cron_sets(fields: list[str]) -> list[set[int]]:
    """Oracle: the values each of cron's five fields allows (day-of-week 7 is Sunday)."""
    specs = [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, MONTHS), (0, 7, DAYS)]
    sets = []
    for text, (low, high, names) in zip(fields, specs, strict=True):

        def number(word: str, low: int = low, names: list[str] = names) -> int:
            return (
                int(word)
                if word.isdigit()
                else names.index(word.lower()) + (low if names is MONTHS else 0)
            )

        values: set[int] = set()
        for part in text.split(","):
            span, _, step = part.partition("/")
            if span == "*":
                first, last = low, high
            else:
                a, _, b = span.partition("-")
                first = number(a)
                last = number(b) if b else first
                if names is DAYS and last < first:
                    last += 7  # fri-sun
            values |= {
                v % 8 if names is DAYS else v for v in range(first, last + 1, int(step or 1))
            }
        if names is DAYS and values & {0, 7}:
            values |= {0, 7}
        sets.append(values)
    return sets


def cron_fires(written: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """Oracle: the next `count` fires of a cron line, walking wall-clock days, with SPEC §4's
    reading of DST (a gap moves fixed-time fires to its end, a repeat fires them once)."""
    fields = MACROS.get(written, written).split()
    minutes, hours, doms, months, dows = cron_sets(fields)
    either_day = not (fields[2].startswith("*") or fields[4].startswith("*"))
    fixed = not (fields[0].startswith("*") or fields[1].startswith("*"))
    found: set[datetime] = set()
    day = after.astimezone(zone).date() - timedelta(days=1)
    while len([f for f in found if f > after]) < count:
        day += timedelta(days=1)
        dom_ok, dow_ok = day.day in doms, (day.weekday() + 1) % 7 in dows
        if day.month not in months or not (
            (dom_ok or dow_ok) if either_day else (dom_ok and dow_ok)
        ):
            continue
        for hour in sorted(hours):
            for minute in sorted(minutes):
                found.update(instants(datetime.combine(day, time(hour, minute)), zone, fixed))
    return sorted(f for f in found if f > after)[:count]


def exists(wall: datetime, zone: ZoneInfo) -> bool:
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def instants(wall: datetime, zone: ZoneInfo, fixed: bool) -> list[datetime]:
    first, second = wall.replace(tzinfo=zone), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    if exists(wall, zone):  # a repeated wall time
        return [first.astimezone(UTC)] if fixed else [first.astimezone(UTC), second.astimezone(UTC)]
    if not fixed:
        return []
    while not exists(wall, zone):
        wall += timedelta(minutes=1)
    return [wall.replace(tzinfo=zone).astimezone(UTC)]


EXTRA_LINES = """\
30 2 * * * gap
0,30 1-3 * * * around
0 0 */2 * mon odd-mondays
15 10 * * fri-sun weekend
0 12 1,15 * 5 fifteenth-or-friday
*/7 */5 * * * sevens
0 0 29 2 * leap
0 22 * * 7 sunday-late
"""
STARTS = [datetime(2026, m, d, 20, tzinfo=UTC) for m, d in ((3, 7), (3, 28), (10, 24), (10, 31))]


@pytest.mark.parametrize("name", [*FIXTURES, "extra"])
def test_imported_schedules_fire_like_cron(name: str) -> None:
    text = EXTRA_LINES if name == "extra" else load(name)
    result = imported(text)
    lines = text.split("\n")
    compared = 0
    scheduled = [job for job in result.jobs.values() if job["schedule"] != "@reboot"]
    for job in result.jobs.values():
        line = int(job["description"].split("line ")[1].split(",")[0])
        written = " ".join(lines[line - 1].lstrip("-").split()[:5])
        if written.startswith("@"):
            written = written.split()[0]
        zone = ZoneInfo(job.get("timezone", "Europe/Berlin"))  # Berlin stands in for local
        schedule = parse_schedule(job["schedule"])
        if written == "@reboot":
            assert schedule.next_fire(STARTS[0], zone) is None
            continue
        for start in STARTS:
            count = 10 if written in ("@yearly", "@annually", "0 0 29 2 *") else 50
            got, moment = [], start
            for _ in range(count):
                moment = schedule.next_fire(moment, zone)
                got.append(moment.astimezone(UTC))
            assert got == cron_fires(written, zone, start, count), (written, zone, start)
            compared += 1
    assert compared == len(STARTS) * len(scheduled)


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("/usr/local/bin/backup.sh --full", "backup-sh"),
        ("~/bin/Sync_Photos.PY", "sync_photos-py"),
        ("$HOME/bin/x.sh", "x-sh"),
        ('"/opt/My App/run me" now', "run-me"),
        ("cd ~/site && make deploy", "make"),
        ("cd /srv && FOO=1 ./run.sh", "run-sh"),
        ("sleep $((RANDOM \\% 60)) && fetch-mail", "fetch-mail"),
        ("test -x /usr/bin/x || { cd / && run-parts --report /etc/cron.daily; }", "cron-daily"),
        ("run-parts /etc/cron.hourly > /dev/null", "cron-hourly"),
        ("python3 /home/me/sync.py --all", "sync-py"),
        ("/usr/bin/env python3 tool.py", "tool-py"),
        ("php artisan schedule:run", "artisan"),
        ("bash -c 'echo hi'", "bash"),
        ("nohup ./server &", "server"),
        ("(cd /x; ./y)", "y"),
        ("cd /tmp", "cd"),
        ("echo 'unbalanced", "echo"),
        ("'---'", "job"),
        ("7z a backup.7z ~/docs", "7z"),
        ("__init__.py", "init__-py"),
        ("x" * 60, "x" * 40),
        ("données.sh", "donn-es-sh"),
    ],
)
def test_job_names(command: str, name: str) -> None:
    assert list(imported(f"* * * * * {command}\n").jobs) == [name]


def test_duplicate_and_existing_names() -> None:
    text = "0 1 * * * backup.sh\n0 2 * * * ~/backup.sh\n0 3 * * * /bin/backup.sh\n"
    assert list(imported(text).jobs) == ["backup-sh", "backup-sh-2", "backup-sh-3"]
    taken = {"backup-sh", "backup-sh-3"}
    assert list(imported(text, existing_names=taken).jobs) == [
        "backup-sh-2",
        "backup-sh-4",
        "backup-sh-5",
    ]


def test_commented_out_job_with_stdin_uncomments_to_the_same_command() -> None:
    result = imported("# 0 3 * * * read a; echo $a%x\n0 3 * * * read a; echo $a%x\n")
    lines = result.toml.split("\n")
    start = lines.index("# [jobs.read-2]")
    block = "\n".join(line.removeprefix("# ") for line in lines[start : lines.index("", start)])
    assert tomli.loads(block)["jobs"]["read-2"]["command"] == result.jobs["read"]["command"]
    assert result.jobs["read"]["command"] == "printf '%s\\n' x | {\nread a; echo $a\n}"


def test_commented_jobs_do_not_shift_real_names() -> None:
    text = "# 0 1 * * * backup.sh\n0 2 * * * backup.sh\n"
    result = imported(text)
    assert list(result.jobs) == ["backup-sh"]
    assert "# [jobs.backup-sh-2]" in result.toml


# -- system crontabs -----------------------------------------------------------------------------


def test_etc_crontab() -> None:
    result = imported(load("etc-crontab"))
    assert list(result.jobs) == ["cron-hourly", "cron-daily", "cron-weekly", "cron-monthly"]
    assert result.jobs["cron-daily"] == {
        "description": "imported from crontab line 20, as user root",
        "schedule": "25 6 * * *",
        "command": "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
        "shell": "/bin/sh",
        "workdir": "~",
    }
    assert result.toml.count("# cron ran this as root; cronflow runs it as the daemon's user") == 4
    assert "# Read as a system crontab" in result.toml
    assert result.skipped == []
    # the header's example line is documentation, not a commented-out job
    assert "# *  *  *  *  * user-name command to be executed\n" in result.toml
    assert "[jobs.user-name]" not in result.toml


def test_cron_d_file_without_header() -> None:
    result = imported(load("cron.d-sitemaint"))
    assert list(result.jobs) == ["perl", "warm-cache", "artisan"]
    assert result.jobs["warm-cache"]["description"].endswith(", as user www-data")
    assert result.jobs["artisan"]["command"] == "php /srv/site/artisan schedule:run"


@pytest.mark.parametrize(
    ("text", "system"),
    [
        ("0 * * * * root /usr/bin/x\n", True),
        ("0 * * * * nobody /usr/bin/x\n@daily root y\n", True),
        ("0 * * * * alice cd / && run-parts /home/alice/cron\n", True),
        ("# m h dom mon dow user command\n0 * * * * alice ./x\n", True),
        ("0 * * * * echo hello\n", False),
        ("0 * * * * backup\n", False),
        ("0 * * * * alice ./x\n", False),  # could be either: no well-known account
        ("0 * * * * root /usr/bin/x\n0 * * * * /usr/bin/y\n", False),
        ("0 * * * * root /usr/bin/x\n0 * * * * date\n", False),
        ("0 * * * * root /usr/bin/x\n0 0 * * * *\n", True),  # a broken line has no vote
        ("# root is fine\n", False),
        ("# the user command below\n0 * * * * date\n", False),
        ("# *  *  *  *  * user-name command to be executed\n0 * * * * alice ./x\n", True),
    ],
)
def test_system_crontab_detection(text: str, system: bool) -> None:
    result = imported(text)
    users = ["as user" in job["description"] for job in result.jobs.values()]
    assert users and set(users) == {system} or not result.jobs


def test_system_can_be_forced() -> None:
    as_user = imported(load("etc-crontab"), system=False)
    assert as_user.jobs["root"]["command"].startswith("root\tcd / && run-parts")
    forced = imported("0 * * * * alice ./x\n0 1 * * * /bin/y z\n", system=True)
    assert forced.jobs["x"]["description"] == "imported from crontab line 1, as user alice"
    assert reasons(forced) == {
        2: "'/bin/y' is not a user name (this system crontab has a user column)"
    }


# -- TOML quoting --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=30),
    st.booleans(),
)
def test_any_line_gives_valid_toml(tail: str, commented: bool) -> None:
    line = ("# " if commented else "") + "0 3 * * * x" + tail
    result = import_crontab(f"V={tail}\n{line}\n# {tail}\n")
    assert tomli.loads(result.toml).get("jobs", {}) == result.jobs
    parse_config(result.toml, "/tmp/x.toml")


def test_crlf_line_endings() -> None:
    job = only_job("A=1\r\n0 3 * * * backup.sh\r\n")
    assert job["env"] == {"A": "1"} and job["command"] == "backup.sh"


def test_control_characters_are_escaped() -> None:
    result = imported("0 3 * * * printf '\x1b[1m'\n# bell \x07\n")
    assert result.jobs["printf"]["command"] == "printf '\x1b[1m'"
    assert "# bell \\x07" in result.toml


def test_dates_in_the_oracle_are_what_cron_means() -> None:
    """The oracles themselves, on a case worked out by hand."""
    fires = cron_fires("0 0 */2 * mon", ZoneInfo("UTC"), datetime(2026, 1, 1, tzinfo=UTC), 3)
    assert [f.date() for f in fires] == [date(2026, 1, 5), date(2026, 1, 19), date(2026, 2, 9)]
    assert cron_stdin("a\\%b%c\\%d%e") == ("a%b", b"c%d\ne\n")


def test_a_line_with_invalid_utf8_is_kept_as_an_escaped_comment_never_changed() -> None:
    raw = b"0 3 * * * echo caf\xe9 > /tmp/out\n0 4 * * * ok.sh\n# note \xff\n"
    result = import_crontab(raw.decode("utf-8", "surrogateescape"))
    assert list(result.jobs) == ["ok-sh"]
    assert [(s.line, s.reason) for s in result.skipped] == [
        (1, "invalid UTF-8; kept as a comment with its bytes escaped"),
        (3, "invalid UTF-8; kept as a comment with its bytes escaped"),
    ]
    assert "# 0 3 * * * echo caf\\xe9 > /tmp/out\n" in result.toml
    assert "# # note \\xff\n" in result.toml
    assert "\ufffd" not in result.toml
    parse_config(result.toml)
