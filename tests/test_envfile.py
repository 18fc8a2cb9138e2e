"""env_file (SPEC §9): dotenv files read at each run, refused when others can read or write
them, and their values masked as *** in everything cronflow stores or shows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cronflow import envfile
from cronflow.config import env_file_problems, parse_config
from cronflow.engine import Engine, FlowRun
from cronflow.errors import ConfigError, CronflowError
from cronflow.logcap import TAIL_BYTES
from cronflow.runner import AttemptResult
from cronflow.store import Store
from tests.conftest import cronflow

LOGICAL = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
TOKEN = "tok-5up3r-s3cret"


def write_env(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# --- reading --------------------------------------------------------------------------------


def test_dotenv_lines_as_users_write_them(tmp_path: Path) -> None:
    path = write_env(
        tmp_path / "app.env",
        "# a comment\n"
        "PLAIN=one two\n"
        "export EXPORTED=yes\n"
        'QUOTED="a # not a comment"\n'
        "SINGLE='$HOME stays'\n"
        "DOLLAR=pa$word\n"
        "EMPTY=\n"
        "NOVALUE\n"
        "TRAILING=value # comment\n",
    )
    assert envfile.read(str(path)) == {
        "PLAIN": "one two",
        "EXPORTED": "yes",
        "QUOTED": "a # not a comment",
        "SINGLE": "$HOME stays",
        "DOLLAR": "pa$word",  # interpolation off: a $ in a password stays
        "EMPTY": "",
        "TRAILING": "value",
    }


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        (0o644, "readable by others (mode 0644); run chmod o-rwx"),
        (0o604, "readable by others (mode 0604)"),
        (0o620, "writable by others (mode 0620); run chmod go-w"),
        (0o602, "writable by others"),
    ],
)
def test_refused_when_others_can_read_or_group_or_others_can_write(
    tmp_path: Path, mode: int, says: str
) -> None:
    path = write_env(tmp_path / "app.env", "A=secret\n", mode)
    with pytest.raises(CronflowError, match=says.replace("(", r"\(").replace(")", r"\)")):
        envfile.read(str(path))
    assert says in (envfile.check(str(path)) or "")


def test_group_may_read(tmp_path: Path) -> None:
    path = write_env(tmp_path / "app.env", "A=secret\n", 0o640)
    assert envfile.check(str(path)) is None
    assert envfile.read(str(path)) == {"A": "secret"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CronflowError, match="no such file"):
        envfile.read(str(tmp_path / "nope.env"))


def test_later_files_win(tmp_path: Path) -> None:
    a = write_env(tmp_path / "a.env", "A=1\nB=from-a\n")
    b = write_env(tmp_path / "b.env", "B=from-b\n")
    assert envfile.read_all([str(a), str(b)]) == {"A": "1", "B": "from-b"}


# --- masking --------------------------------------------------------------------------------


def test_masker_masks_values_of_four_characters_or_more() -> None:
    masker = envfile.Masker(["abc", "abcd", TOKEN, "two\nlines here"])
    assert masker.mask(f"x abc abcd {TOKEN}!\n".encode()) == b"x abc *** ***!\n"
    assert masker.mask(b"lines here\n") == b"***\n"  # a multi-line value, line by line
    assert masker.mask_text(f"exit 1: {TOKEN}") == "exit 1: ***"
    assert not envfile.Masker(["abc", ""])  # nothing to mask


def test_longest_secret_first() -> None:
    masker = envfile.Masker(["pass", "password123"])
    assert masker.mask(b"password123 pass") == b"*** ***"


def test_a_cut_tail_that_begins_inside_a_secret() -> None:
    masker = envfile.Masker([TOKEN])
    tail = TOKEN[5:].encode() + b" and more"
    assert masker.mask_tail(tail, cut=True) == b"*** and more"
    assert masker.mask_tail(tail, cut=False) == tail  # whole output: no secret was cut


# --- the job file ---------------------------------------------------------------------------


def test_env_file_key_in_jobs_and_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = parse_config(
        '[defaults]\nenv_file = "shared.env"\n'
        '[jobs.a]\ncommand = "true"\n'
        '[jobs.b]\ncommand = "true"\nenv_file = ["~/b.env", "/etc/b.env"]\n',
        str(tmp_path / "jobs.toml"),
    )
    assert config.jobs["a"].env_file == (str(tmp_path / "shared.env"),)
    assert config.jobs["b"].env_file == (str(tmp_path / "home" / "b.env"), "/etc/b.env")


@pytest.mark.parametrize("value", ["1", "[1]", '[""]', '""', "{ a = 1 }"])
def test_env_file_must_be_paths(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"jobs\.a\.env_file: must be a path or a list"):
        parse_config(f'[jobs.a]\ncommand = "true"\nenv_file = {value}\n', "jobs.toml")


def test_validate_names_file_line_key_and_mode(tmp_path: Path) -> None:
    write_env(tmp_path / "open.env", "A=secret\n", 0o644)
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[jobs.a]\ncommand = "true"\n\nenv_file = "open.env"\n')
    text = jobs.read_text()
    problems = env_file_problems(parse_config(text, str(jobs)), text)
    assert [str(p) for p in problems] == [
        f"{jobs}:4: jobs.a.env_file: {tmp_path}/open.env is readable by others (mode 0644); "
        f"run chmod o-rwx {tmp_path}/open.env"
    ]
    done = cronflow("-c", str(jobs), "validate")
    assert done.returncode == 2
    assert f"{jobs}:4: jobs.a.env_file:" in done.stderr and "mode 0644" in done.stderr
    (tmp_path / "open.env").chmod(0o600)
    assert cronflow("-c", str(jobs), "validate").returncode == 0


def test_validate_points_at_defaults_for_an_inherited_file(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.toml"
    text = '[defaults]\nenv_file = "gone.env"\n'
    text += '[jobs.a]\ncommand = "true"\n[jobs.b]\ncommand = "true"\n'
    problems = env_file_problems(parse_config(text, str(jobs)), text)
    assert [(p.line, p.key) for p in problems] == [(2, "defaults.env_file")]  # once, not twice
    assert "no such file" in problems[0].message


# --- runs -----------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.details: list[str] = []

    def output(self, job: str, stream: str, data: bytes) -> None:
        self.lines.append(data)

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        self.details.append(detail)


def run_flow(tmp_path: Path, toml: str, remote=None):
    config = parse_config(toml, str(tmp_path / "jobs.toml"))
    store = Store(tmp_path / "state" / "cronflow.db")
    recorder = Recorder()

    async def main():
        engine = Engine(store, max_parallel=4, observer=recorder, remote=remote)
        return await engine.execute(FlowRun(config, "a", tuple(config.jobs), LOGICAL, "manual"))

    runs = asyncio.run(main())
    return {r.job: r for r in runs}, recorder, store


def stored(store: Store, run_id: int) -> bytes:
    return b"".join(c.data for c in store.output(run_id))


def test_values_reach_the_job_and_are_masked_everywhere(tmp_path: Path) -> None:
    write_env(tmp_path / "app.env", f"TOKEN={TOKEN}\nSHORT=abc\n")
    runs, rec, store = run_flow(
        tmp_path,
        """
[jobs.a]
command = '''
test "$TOKEN" = "tok-5up3r-s3cret" || exit 9
echo "token $TOKEN short $SHORT"
echo "to stderr $TOKEN" >&2
exit 3'''
env_file = "app.env"
on_failure = 'echo "hook sees $TOKEN"; echo "tail: $CRONFLOW_LOG_TAIL"'
""",
    )
    run = runs["a"]
    assert (run.status, run.exit_code) == ("failed", 3)  # not 9: the value reached the job
    out = stored(store, run.run_id)
    assert TOKEN.encode() not in out
    assert b"token *** short abc\n" in out  # under 4 characters: not masked
    assert b"to stderr ***\n" in out
    assert b"hook sees ***\n" in out
    assert b"tail: token *** short abc\n" in out  # CRONFLOW_LOG_TAIL
    assert all(TOKEN.encode() not in line for line in rec.lines)  # live `run` output
    assert b"token *** short abc\n" in rec.lines


def test_the_file_is_read_again_at_each_run(tmp_path: Path) -> None:
    env = write_env(tmp_path / "app.env", "TOKEN=first-token\n")
    toml = '[jobs.a]\ncommand = \'echo "$TOKEN"\'\nenv_file = "app.env"\n'
    first, _, store = run_flow(tmp_path, toml)
    write_env(env, "TOKEN=rotated-token\n")
    second, rec, _ = run_flow(tmp_path, toml)
    assert stored(store, second["a"].run_id) == b"***\n"
    # The job got the rotated value: only the new one is masked in what it printed.
    env.write_text("TOKEN=unrelated\n")
    third, _, _ = run_flow(tmp_path, toml.replace('echo "$TOKEN"', "echo rotated-token"))
    assert stored(store, third["a"].run_id) == b"rotated-token\n"


def test_an_unsafe_file_fails_the_attempt_with_the_reason(tmp_path: Path) -> None:
    write_env(tmp_path / "app.env", "TOKEN=xyzzy-secret\n", 0o644)
    runs, rec, _ = run_flow(
        tmp_path, '[jobs.a]\ncommand = "true"\nenv_file = "app.env"\nretries = 1\nretry_delay = 0\n'
    )
    run = runs["a"]
    assert (run.status, run.attempts) == ("failed", 2)  # the retry policy applies
    assert "readable by others (mode 0644)" in (run.note or "")


def test_secrets_in_a_note_are_masked(tmp_path: Path) -> None:
    write_env(tmp_path / "app.env", f"TOKEN={TOKEN}\n")

    class Remote:
        async def run(self, command, on_output, stop, **kw):
            now = datetime.now(UTC)
            kw["on_sent"]("r1")
            kw["on_start"]("gpu1", None, None, now)
            on_output("out", now, f"remote {command.env['TOKEN']}\n".encode())
            return AttemptResult("failed", 1, now, now, None, None, b"", f"boom {TOKEN}")

    runs, rec, store = run_flow(
        tmp_path,
        '[executor]\nkind = "celery"\nbroker = "redis://localhost/0"\n'
        '[jobs.a]\ncommand = "true"\nenv_file = "app.env"\nqueue = "gpu"\n',
        remote=Remote(),
    )
    run = runs["a"]
    # Output from a worker comes back through the same sink: masked before it is stored.
    assert stored(store, run.run_id) == b"remote ***\n"
    assert rec.lines == [b"remote ***\n"]
    assert run.note == "boom ***"
    assert all(TOKEN not in d for d in rec.details)  # the daemon's log


def test_a_long_tail_cut_inside_a_secret(tmp_path: Path) -> None:
    write_env(tmp_path / "app.env", f"TOKEN={TOKEN}\n")
    # The secret straddles the start of the last 4 KiB: the part inside the tail is masked.
    pad = TAIL_BYTES - 6
    runs, _, store = run_flow(
        tmp_path,
        f"""
[jobs.a]
command = 'printf "%s" "$TOKEN"; head -c {pad} /dev/zero | tr "\\\\0" x; exit 1'
env_file = "app.env"
on_failure = 'printf "%s" "$CRONFLOW_LOG_TAIL" | head -c 20; echo'
""",
    )
    hook = [c.data for c in store.output(runs["a"].run_id) if c.hook_id]
    assert hook == [b"***xxxxxxxxxxxxxxxxx\n"]
