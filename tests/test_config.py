from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronflow.config import ExecutorSettings, Job, load_config, parse_config
from cronflow.errors import ConfigError, CronflowError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "jobs.toml")
    return [str(p) for p in info.value.problems]


def test_empty_and_comment_only_files_have_no_jobs() -> None:
    for text in ["", "# nothing yet\n", "[defaults]\nretries = 1\n[daemon]\nmax_parallel = 2\n"]:
        assert dict(parse_config(text).jobs) == {}


def test_defaults_are_merged_and_job_keys_win() -> None:
    cfg = parse_config(
        """
[defaults]
retries = 2
retry_delay = "1m"
timezone = "Europe/Berlin"
env = { A = "1", B = "2" }

[jobs.a]
command = "echo a"
retries = 5
env = { B = "3" }
""",
        "/srv/jobs.toml",
    )
    job = cfg.jobs["a"]
    assert job.retries == 5
    assert job.retry_delay == 60
    assert job.timezone.key == "Europe/Berlin"
    assert dict(job.env) == {"A": "1", "B": "3"}
    assert job.workdir == "/srv"
    assert job.argv() == ["/bin/sh", "-c", "echo a"]


def test_every_key_with_its_type() -> None:
    cfg = parse_config(
        """
[daemon]
max_parallel = 4
stop_timeout = "2m"
keep_history = "30d"

[jobs.full]
command = ["python", "etl.py"]
schedule = "0 6 * * mon-fri"
description = "all keys"
timezone = "UTC"
workdir = "sub/dir"
shell = "/bin/bash"
retries = 1
retry_delay = "1h30m"
retry_backoff = 1.5
retry_max_delay = 7200
timeout = "2h"
kill_grace = "5s"
overlap = "queue"
catchup = "all"
jitter = "30s"
max_log_bytes = "512KiB"
on_failure = "echo failed"
on_retry = "echo retry"
on_success = "echo ok"
enabled = false
""",
        "/srv/jobs.toml",
    )
    job = cfg.jobs["full"]
    assert job.argv() == ["python", "etl.py"]
    assert (job.retry_delay, job.retry_backoff, job.retry_max_delay) == (5400, 1.5, 7200)
    assert (job.timeout, job.kill_grace, job.jitter) == (7200, 5, 30)
    assert job.max_log_bytes == 512 * 1024
    assert job.workdir == "/srv/sub/dir"
    assert (job.overlap, job.catchup, job.enabled) == ("queue", "all", False)
    assert (cfg.daemon.max_parallel, cfg.daemon.stop_timeout, cfg.daemon.keep_history) == (
        4,
        120,
        30 * 86400,
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("retires = 3", "jobs.toml:3: jobs.a.retires: unknown key (did you mean 'retries'?)"),
        (
            "retries = -1",
            "jobs.toml:3: jobs.a.retries: must be a whole number from 0 to 1000, got -1",
        ),
        (
            'retries = "2"',
            "jobs.toml:3: jobs.a.retries: must be a whole number from 0 to 1000, got '2'",
        ),
        (
            "retries = true",
            "jobs.toml:3: jobs.a.retries: must be a whole number from 0 to 1000, got true",
        ),
        # a value is echoed as TOML spells it, never as Python's repr (True, datetime(...))
        (
            "jitter = true",
            'jobs.toml:3: jobs.a.jitter: expected a duration like "90s", '
            '"5m", "1h30m", "2d", or a whole number of seconds, got true',
        ),
        (
            "max_log_bytes = [false]",
            "jobs.toml:3: jobs.a.max_log_bytes: expected a size like "
            '"512KiB", "1MiB", or a whole number of bytes, got [false]',
        ),
        (
            "schedule = 2026-12-07T07:00:00",
            "jobs.toml:3: jobs.a.schedule: must be a string like "
            '"0 3 * * *" or "@daily", got 2026-12-07T07:00:00',
        ),
        ("env = { A = false }", "jobs.toml:3: jobs.a.env: values must be strings; A is false"),
        (
            "after = [1, true]",
            "jobs.toml:3: jobs.a.after: must be a job name or a list of job "
            'names (after = ["up"]), got [1, true]',
        ),
        ('timeout = "1h30"', "jobs.toml:3: jobs.a.timeout: expected a duration"),
        ("timeout = -5", "jobs.toml:3: jobs.a.timeout: must not be negative"),
        ('max_log_bytes = "1 lot"', "jobs.toml:3: jobs.a.max_log_bytes: expected a size"),
        ('run_if = "sometimes"', "jobs.toml:3: jobs.a.run_if: must be one of success, failure"),
        ('overlap = "wait"', "jobs.toml:3: jobs.a.overlap: must be one of skip, queue, allow"),
        ("catchup = true", "jobs.toml:3: jobs.a.catchup: must be one of none, latest, all"),
        ('timezone = "Mars/Olympus"', "jobs.toml:3: jobs.a.timezone: unknown timezone"),
        ('timezone = "Europe"', "jobs.toml:3: jobs.a.timezone: unknown timezone"),
        ('schedule = "61 * * * *"', "jobs.toml:3: jobs.a.schedule: "),
        ("schedule = 5", "jobs.toml:3: jobs.a.schedule: must be a string"),
        ("env = { A = 1 }", "jobs.toml:3: jobs.a.env: values must be strings; A is 1"),
        ("retry_backoff = 0.5", "jobs.toml:3: jobs.a.retry_backoff: must be a number from 1 to"),
        ("retry_backoff = 1e300", "jobs.toml:3: jobs.a.retry_backoff: must be a number from 1 to"),
        ("retry_backoff = inf", "jobs.toml:3: jobs.a.retry_backoff: must be a number from 1 to"),
        ("retry_backoff = nan", "jobs.toml:3: jobs.a.retry_backoff: must be a number from 1 to"),
        ("retries = 1_000_000", "jobs.toml:3: jobs.a.retries: must be a whole number from 0 to"),
        ('max_log_bytes = "5000GiB"', "jobs.toml:3: jobs.a.max_log_bytes: must be at most 1GiB"),
        ('enabled = "yes"', "jobs.toml:3: jobs.a.enabled: must be true or false"),
    ],
)
def test_bad_values_name_file_line_and_key(body: str, expected: str) -> None:
    found = problems(f'[jobs.a]\ncommand = "x"\n{body}\n')
    assert len(found) == 1
    assert found[0].startswith(expected)


def test_all_problems_are_reported_together_in_line_order() -> None:
    found = problems(
        """[jobs.a]
command = "x"
retires = 3

[jobs.b]
timeout = "soon"
"""
    )
    assert found == [
        "jobs.toml:3: jobs.a.retires: unknown key (did you mean 'retries'?)",
        "jobs.toml:5: jobs.b: missing required key 'command'",
        'jobs.toml:6: jobs.b.timeout: expected a duration like "90s", "5m", "1h30m", "2d", or '
        "a whole number of seconds, got 'soon'",
    ]


def test_toml_syntax_error_has_line_and_column() -> None:
    assert problems('[jobs.a]\ncommand = "x\n') == [
        "jobs.toml:2: TOML syntax: Illegal character '\\n' (column 13)"
    ]


def test_a_byte_order_mark_is_named_as_such() -> None:
    """Notepad's BOM: refused with its name and the fix, not "Invalid statement"."""
    assert problems('\ufeff[jobs.a]\ncommand = "x"\n') == [
        "jobs.toml:1: starts with a byte-order mark (BOM); save it as UTF-8 without a BOM "
        "(`sed -i '1s/^\\xEF\\xBB\\xBF//' FILE` removes it)"
    ]


def test_sections_and_defaults_are_checked() -> None:
    assert problems('[job.a]\ncommand = "x"\n') == [
        "jobs.toml:1: job: unknown section (did you mean 'jobs'?); "
        "allowed: defaults, daemon, executor, jobs"
    ]
    assert problems('[defaults]\nschedule = "@daily"\n') == [
        "jobs.toml:2: defaults.schedule: 'schedule' cannot be set in [defaults]"
    ]
    assert problems('[defaults]\nretires = 1\n[jobs.a]\ncommand = "x"\n') == [
        "jobs.toml:2: defaults.retires: unknown key (did you mean 'retries'?)"
    ]
    assert problems("[daemon]\nmax_parallel = 0\n") == [
        "jobs.toml:2: daemon.max_parallel: must be a whole number from 1 to 10000, got 0"
    ]


def test_quoted_and_dotted_keys_are_located() -> None:
    found = problems('[jobs."a"]\ncommand = "x"\n\n[jobs.b]\ncommand = "y"\nenv.A = 1\n')
    assert found == ["jobs.toml:6: jobs.b.env: values must be strings; A is 1"]


def test_multiline_strings_do_not_confuse_the_line_scanner() -> None:
    found = problems('[jobs.a]\ncommand = """\nretries = 1\n"""\nretries = -2\n')
    assert found == ["jobs.toml:5: jobs.a.retries: must be a whole number from 0 to 1000, got -2"]


def test_flow_problems() -> None:
    assert problems('[jobs.a]\ncommand = "x"\nafter = ["ghost"]\n') == [
        "jobs.toml:3: jobs.a.after: unknown job 'ghost'"
    ]
    cycle = problems(
        '[jobs.a]\ncommand = "x"\nafter = ["b"]\n[jobs.b]\ncommand = "x"\nafter = ["a"]\n'
    )
    assert cycle == ["jobs.toml:3: jobs.a.after: cycle: a -> b -> a"]
    assert problems(
        '[jobs.a]\ncommand = "x"\n[jobs.b]\ncommand = "x"\nafter = ["a"]\nschedule = "@daily"\n'
    ) == [
        "jobs.toml:6: jobs.b.schedule: only jobs without 'after' may have a schedule; "
        "b runs after a"
    ]
    two = problems(
        '[jobs.a]\ncommand = "x"\nschedule = "@daily"\n'
        '[jobs.b]\ncommand = "x"\nschedule = "@hourly"\n'
        '[jobs.c]\ncommand = "x"\nafter = ["a", "b"]\n'
    )
    assert two == [
        "jobs.toml:6: jobs.b.schedule: all scheduled roots of a flow share one schedule and "
        "timezone; b differs from a ('@daily' in UTC)"
    ]


def test_flows_are_components_named_by_first_root() -> None:
    cfg = parse_config(
        """
[jobs.zeta]
command = "x"
schedule = "@daily"
[jobs.report]
command = "x"
after = ["load"]
[jobs.load]
command = "x"
after = ["zeta", "alpha"]
[jobs.alpha]
command = "x"
[jobs.lonely]
command = "x"
"""
    )
    assert [(f.name, f.jobs) for f in cfg.flows] == [
        ("alpha", ("zeta", "alpha", "load", "report")),
        ("lonely", ("lonely",)),
    ]
    assert cfg.flows[0].schedule.text == "@daily"
    assert cfg.downstream("alpha") == ("alpha", "load", "report")
    with pytest.raises(CronflowError, match="no job named 'lod'.*did you mean 'load'"):
        cfg.job("lod")


def test_retry_wait_grows_and_is_capped() -> None:
    job = parse_config(
        '[jobs.a]\ncommand = "x"\nretry_delay = "10s"\nretry_backoff = 3\nretry_max_delay = "1m"\n'
    ).jobs["a"]
    assert [job.retry_wait(k) for k in (1, 2, 3, 4)] == [10, 30, 60, 60]


@pytest.mark.parametrize("backoff", [2, 1000])
def test_retry_wait_never_overflows(backoff: int) -> None:
    job = parse_config(
        f'[jobs.a]\ncommand = "x"\nretries = 1000\nretry_backoff = {backoff}\n'
    ).jobs["a"]
    assert job.retry_wait(1000) == job.retry_max_delay == 3600
    zero = Job("z", "x", retry_delay=0, retry_backoff=1000)
    assert zero.retry_wait(1000) == 0


def test_absurd_daemon_numbers_are_refused() -> None:
    found = problems("[daemon]\nmax_parallel = 100_000_000\n")
    assert found == [
        "jobs.toml:2: daemon.max_parallel: must be a whole number from 1 to 10000, got 100000000"
    ]


def test_next_fires_of_a_flow() -> None:
    cfg = parse_config('[jobs.a]\ncommand = "x"\nschedule = "0 3 * * *"\ntimezone = "UTC"\n')
    fires = cfg.flows[0].next_fires(datetime(2026, 1, 1, 3, 0, tzinfo=UTC), 2)
    assert [f.isoformat() for f in fires] == [
        "2026-01-02T03:00:00+00:00",
        "2026-01-03T03:00:00+00:00",
    ]


def test_unreadable_files_give_one_line(tmp_path: Path) -> None:
    with pytest.raises(CronflowError, match="no job file at .*cronflow init") as info:
        load_config(tmp_path / "missing.toml")
    assert info.value.exit_code == 1
    with pytest.raises(CronflowError, match="is a directory") as info:
        load_config(tmp_path)
    assert info.value.exit_code == 2
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"a = 1\n\xff\xfe\x00garbage")
    with pytest.raises(CronflowError, match=r"binary.toml:2: not a TOML text file"):
        load_config(binary)


def test_graph_problems_show_beside_key_problems() -> None:
    found = problems(
        '[jobs.a]\ncommand = "x"\nretires = 3\n'
        '[jobs.b]\ncommand = "x"\nafter = ["ghost"]\nschedule = "@daily"\n'
        '[jobs.c]\ncommand = "x"\nafter = ["a"]\n'
    )
    assert found == [
        "jobs.toml:3: jobs.a.retires: unknown key (did you mean 'retries'?)",
        "jobs.toml:6: jobs.b.after: unknown job 'ghost'",
        "jobs.toml:7: jobs.b.schedule: only jobs without 'after' may have a schedule; "
        "b runs after ghost",
    ]


def test_graph_problems_of_a_job_with_key_problems_show_at_once() -> None:
    """The job whose keys are wrong still has its `after` checked: unknown targets, a cycle
    and a schedule after an upstream, beside the key problems (not one fix later)."""
    found = problems(
        '[jobs.d]\ncommand = "x"\nafter = ["ghost"]\nretires = 1\n'
        '[jobs.c]\ncommand = "x"\nafter = ["e"]\njitter = "soon"\n'
        '[jobs.e]\nafter = ["c"]\n'
        '[jobs.f]\ncommand = "x"\nafter = 3\nschedule = "0 3 * * *"\n'
        '[jobs.g]\ncommand = "x"\nafter = ["f"]\nschedule = "@daly"\n'
    )
    assert found == [
        "jobs.toml:3: jobs.d.after: unknown job 'ghost'",
        "jobs.toml:4: jobs.d.retires: unknown key (did you mean 'retries'?)",
        "jobs.toml:7: jobs.c.after: cycle: c -> e -> c",
        'jobs.toml:8: jobs.c.jitter: expected a duration like "90s", "5m", "1h30m", "2d", or '
        "a whole number of seconds, got 'soon'",
        "jobs.toml:9: jobs.e: missing required key 'command'",
        "jobs.toml:13: jobs.f.after: must be a job name or a list of job names "
        '(after = ["up"]), got 3',
        "jobs.toml:18: jobs.g.schedule: unknown schedule '@daly'; expected 5 cron fields "
        "(minute hour day-of-month month day-of-week), @yearly, @annually, @monthly, @weekly, "
        "@daily, @midnight, @hourly, @every DURATION, @reboot or @at DATE-TIME",
        "jobs.toml:18: jobs.g.schedule: only jobs without 'after' may have a schedule; "
        "g runs after f",
    ]


def test_a_flow_with_a_broken_job_is_not_checked_for_its_roots_schedules() -> None:
    """a did not parse: whether a and b share a schedule is not known yet, so not said."""
    found = problems(
        '[jobs.a]\ncommand = "x"\nschedule = "@daily"\ntimeout = "1h30"\n'
        '[jobs.b]\ncommand = "x"\nschedule = "@hourly"\n'
        '[jobs.c]\ncommand = "x"\nafter = ["a", "b"]\n'
    )
    assert [p.split(": ", 2)[1] for p in found] == ["jobs.a.timeout"]


def test_array_of_jobs_tables_is_located() -> None:
    assert problems('[[jobs]]\ncommand = "x"\n') == ["jobs.toml:1: jobs: must be a table ([jobs])"]


# -- who may write the job file ----------------------------------------------------------------


def _job_file(folder: Path, mode: int = 0o644) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "jobs.toml"
    path.write_text('[jobs.a]\ncommand = "x"\n')
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o622])
def test_a_job_file_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = _job_file(tmp_path / "jobs", mode)
    with pytest.raises(CronflowError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    assert info.value.message == (
        f"{path} is writable by others (mode {mode:04o}); run chmod go-w {path}"
    )


def test_a_job_file_in_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _job_file(tmp_path / "jobs")
    path.parent.chmod(0o777)
    with pytest.raises(CronflowError, match="jobs is writable by others \\(mode 0777\\)"):
        load_config(path)
    path.parent.chmod(0o755)
    assert list(load_config(path).jobs) == ["a"]


def test_a_sticky_folder_like_tmp_is_accepted(tmp_path: Path) -> None:
    path = _job_file(tmp_path / "jobs")
    path.parent.chmod(0o1777)  # others may add files there, but not replace ours
    assert list(load_config(path).jobs) == ["a"]


def test_a_symlinked_job_file_is_checked_where_it_points(tmp_path: Path) -> None:
    target = _job_file(tmp_path / "dotfiles", 0o666)
    link = tmp_path / "jobs.toml"
    link.symlink_to(target)
    with pytest.raises(CronflowError, match=f"^{target} is writable by others"):
        load_config(link)


CELERY = '[executor]\nkind = "celery"\nbroker = "redis://:s3cret@db1:6379/0"\n'


def test_executor_defaults_to_local_and_jobs_to_the_default_queue() -> None:
    cfg = parse_config('[jobs.a]\ncommand = "x"\n')
    assert cfg.executor == ExecutorSettings("local", None, "local", None)
    assert (cfg.jobs["a"].queue, cfg.jobs["a"].queue_timeout) == (None, 600.0)
    assert cfg.queue_of("a") == "local"
    with pytest.raises(CronflowError, match="no job named 'b'"):
        cfg.queue_of("b")


def test_executor_table_and_queue_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = parse_config(
        CELERY
        + 'default_queue = "default"\nsecret_file = "secrets/worker.key"\n'
        + '[defaults]\nqueue_timeout = "2m"\n'
        + '[jobs.train]\ncommand = "x"\nqueue = "gpu.v100"\n'
        + '[jobs.report]\ncommand = "x"\nafter = ["train"]\nqueue_timeout = 30\n'
        + '[jobs.notify]\ncommand = "x"\nqueue = "local"\n',
        "/srv/jobs.toml",
    )
    assert cfg.executor == ExecutorSettings(
        "celery", "redis://:s3cret@db1:6379/0", "default", "/srv/secrets/worker.key"
    )
    assert (cfg.jobs["train"].queue, cfg.jobs["train"].queue_timeout) == ("gpu.v100", 120.0)
    assert cfg.jobs["report"].queue_timeout == 30.0
    assert [cfg.queue_of(n) for n in ("train", "report", "notify")] == [
        "gpu.v100",
        "default",
        "local",
    ]
    home = parse_config(CELERY + 'secret_file = "~/.config/cronflow/worker.key"\n', "jobs.toml")
    assert home.executor.secret_file == str(tmp_path / "home/.config/cronflow/worker.key")
    relative = parse_config(CELERY + 'secret_file = "worker.key"\n', "jobs.toml")
    assert relative.executor.secret_file == str(Path.cwd() / "worker.key")


def test_queue_in_defaults_is_every_jobs_queue() -> None:
    cfg = parse_config(CELERY + '[defaults]\nqueue = "db"\n[jobs.a]\ncommand = "x"\n')
    assert cfg.queue_of("a") == "db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[executor]\nkind = "kubernetes"\n',
            "jobs.toml:2: executor.kind: must be one of local, celery, got 'kubernetes'",
        ),
        (
            '[executor]\nbrokr = "redis://h"\n',
            "jobs.toml:2: executor.brokr: unknown key (did you mean 'broker'?); "
            "allowed: kind, broker, default_queue, secret_file",
        ),
        (
            '[executor]\nkind = "celery"\nbroker = "amqp://u:pw@h//"\n',
            "jobs.toml:3: executor.broker: must be a Redis URL starting with redis://, rediss://, "
            "unix://, got 'amqp://u:***@h//'",
        ),
        (
            "[executor]\nbroker = 6379\n",
            "jobs.toml:2: executor.broker: must be a Redis URL starting with redis://, rediss://, "
            "unix://, got 6379",
        ),
        (
            '[executor]\nkind = "celery"\ndefault_queue = "gpu box"\n',
            "jobs.toml:3: executor.default_queue: must be a queue name of letters, digits, '_', "
            "'.' and '-', starting with a letter or digit, got 'gpu box'",
        ),
        ('[executor]\nsecret_file = ""\n', "jobs.toml:2: executor.secret_file: must not be empty"),
        ("executor = 1\n", "jobs.toml:1: executor: must be a table ([executor])"),
        (
            CELERY + '[jobs.a]\ncommand = "x"\nqueue = "-gpu"\n',
            "jobs.toml:6: jobs.a.queue: must be a queue name of letters, digits, '_', '.' and '-', "
            "starting with a letter or digit, got '-gpu'",
        ),
        (
            CELERY + '[jobs.a]\ncommand = "x"\nqueue_timeout = "soon"\n',
            "jobs.toml:6: jobs.a.queue_timeout: expected a duration like",
        ),
    ],
)
def test_executor_and_queue_problems(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_queue_without_the_celery_executor_is_an_error_where_it_is_written() -> None:
    found = problems(
        '[executor]\ndefault_queue = "default"\n'
        '[defaults]\nqueue = "db"\n'
        '[jobs.a]\ncommand = "x"\nqueue = "gpu"\n'
        '[jobs.b]\ncommand = "x"\n'
        '[jobs.c]\ncommand = "x"\nqueue = "local"\n'
    )
    assert found == [
        'jobs.toml:2: executor.default_queue: queue "default" needs [executor] kind = "celery"',
        'jobs.toml:4: defaults.queue: queue "db" needs [executor] kind = "celery"',
        'jobs.toml:7: jobs.a.queue: queue "gpu" needs [executor] kind = "celery"',
    ]
    assert problems('[jobs.a]\ncommand = "x"\nqueue = "a b"\n') == [
        "jobs.toml:3: jobs.a.queue: must be a queue name of letters, digits, '_', '.' and '-', "
        "starting with a letter or digit, got 'a b'"
    ]
    local = parse_config('[executor]\nkind = "local"\n[jobs.a]\ncommand = "x"\nqueue = "local"\n')
    assert local.queue_of("a") == "local"


def test_after_takes_one_name_as_a_string_deliberately() -> None:
    """`after = "up"` means `after = ["up"]` (README: as `command`, a string or a list)."""
    text = '[jobs.up]\ncommand = "true"\n[jobs.down]\ncommand = "true"\nafter = "up"\n'
    config = parse_config(text)
    assert config.jobs["down"].after == ("up",)
    with pytest.raises(ConfigError, match=r"jobs\.down\.after: unknown job 'upp'"):
        parse_config(text.replace('after = "up"', 'after = "upp"'))
    with pytest.raises(
        ConfigError, match=r'a job name or a list of job names \(after = \["up"\]\)'
    ):
        parse_config(text.replace('after = "up"', "after = 3"))
