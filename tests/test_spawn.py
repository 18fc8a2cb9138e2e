"""spawn: jobs started by the fork server are our children, clean, and measured on their own.

Real processes throughout; waits poll with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cronflow import spawn
from tests.conftest import alive, wait_until

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}

pytestmark = pytest.mark.skipif(spawn.helper_path() is None, reason="no C compiler for spawn.c")


@dataclass
class Ended:
    pid: int
    out: bytes
    err: bytes
    exit_code: int
    max_rss_kb: int


def finish(started: spawn.Started) -> Ended:
    """Read both streams to EOF, then reap the job with its rusage."""
    out, err = started.stdout.read(), started.stderr.read()
    started.stdout.close()
    started.stderr.close()
    _, status, rusage = os.wait4(started.pid, 0)
    return Ended(started.pid, out, err, os.waitstatus_to_exitcode(status), rusage.ru_maxrss)


def job(argv: list[str], env: dict[str, str] | None = None, cwd: str = "/") -> Ended:
    started = spawn.start(argv, ENV if env is None else env, cwd)
    assert started.direct is None, "started with Popen: the server is not running"
    return finish(started)


def test_true_has_its_own_small_peak_memory() -> None:
    """This test process holds far more than 5 MiB: none of it may show in the job's figure."""
    ended = job(["true"])
    assert ended.exit_code == 0
    assert 0 < ended.max_rss_kb < 5 * 1024


def test_environment_and_workdir_reach_the_job(tmp_path: Path) -> None:
    ended = job(["sh", "-c", 'echo "$GREETING"; pwd; env | wc -l'],
                {**ENV, "GREETING": "hello there"}, str(tmp_path))  # fmt: skip
    greeting, cwd, count = ended.out.decode().splitlines()
    assert greeting == "hello there"
    assert cwd == str(tmp_path)
    assert int(count) == len(ENV) + 1 + 1  # ours, GREETING, and sh's own PWD


def test_program_is_looked_up_in_the_jobs_path(tmp_path: Path) -> None:
    program = tmp_path / "only-here"
    program.write_text("#!/bin/sh\necho found\n")
    program.chmod(0o755)
    ended = job(["only-here"], {**ENV, "PATH": f"/nonexistent:{tmp_path}"})
    assert ended.out == b"found\n"
    with pytest.raises(FileNotFoundError):
        spawn.start(["only-here"], ENV, "/")


def test_the_job_is_our_child_and_leads_its_own_session() -> None:
    ended = job(["cat", "/proc/self/stat"])
    fields = ended.out.decode().rsplit(")", 1)[1].split()
    ppid, pgrp, session = int(fields[1]), int(fields[2]), int(fields[3])
    assert ppid == os.getpid()
    assert pgrp == session == ended.pid


def test_the_job_holds_no_stray_file_descriptors() -> None:
    """Only stdin, stdout, stderr (and ls's own handle on the folder): not the server's socket,
    nor the pipes of other jobs."""
    first = spawn.start(["sleep", "5"], ENV, "/")
    try:
        ended = job(["ls", "/proc/self/fd"])
    finally:
        os.kill(first.pid, signal.SIGKILL)
        finish(first)
    assert sorted(ended.out.split()) == [b"0", b"1", b"2", b"3"]
    links = job(["readlink", "/proc/self/fd/0"])
    assert links.out == b"/dev/null\n"


def test_the_job_has_default_signal_dispositions_and_an_empty_mask() -> None:
    """Python ignores SIGPIPE and a background shell SIGINT: a job must not inherit either."""
    ended = job(["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
    masks = dict(line.split(b":") for line in ended.out.splitlines())
    assert int(masks[b"SigIgn"], 16) == 0
    assert int(masks[b"SigBlk"], 16) == 0


def our_zombies() -> set[int]:
    """Our exited children nobody has reaped (earlier tests may have left some)."""
    found = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.add(int(name))
    return found


def test_exec_failures_are_reported_like_popen(tmp_path: Path) -> None:
    zombies_before = our_zombies()
    with pytest.raises(FileNotFoundError) as missing:
        spawn.start(["no-such-program-here"], ENV, "/")
    assert missing.value.filename == "no-such-program-here"
    script = tmp_path / "script"
    script.write_text("echo no shebang\n")
    script.chmod(0o644)
    with pytest.raises(PermissionError) as denied:
        spawn.start([str(script)], ENV, "/")
    assert denied.value.filename == str(script)
    with pytest.raises(FileNotFoundError) as workdir:
        spawn.start(["true"], ENV, str(tmp_path / "gone"))
    assert workdir.value.filename == str(tmp_path / "gone")
    with pytest.raises(NotADirectoryError) as not_dir:
        spawn.start(["true"], ENV, str(script))
    assert not_dir.value.filename == str(script)
    with pytest.raises(ValueError):
        spawn.start(["echo", "a\0b"], ENV, "/")
    with pytest.raises(ValueError):
        spawn.start(["true"], {"A=B": "c"}, "/")
    # A failed start leaves no zombie: the job that exited with 127 was reaped.
    assert our_zombies() <= zombies_before


def test_many_jobs_in_a_row_all_start() -> None:
    started = [spawn.start(["sh", "-c", f"echo {n}"], ENV, "/") for n in range(50)]
    ended = [finish(s) for s in started]
    assert [e.out for e in ended] == [f"{n}\n".encode() for n in range(50)]
    assert all(e.exit_code == 0 for e in ended)


def test_a_killed_server_is_replaced() -> None:
    job(["true"])
    server = spawn._server
    assert server is not None
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: not alive(server.pid), what="the server to die")
    assert job(["echo", "again"]).out == b"again\n"
    assert spawn._server is not None and spawn._server.pid != server.pid


def test_a_large_request_goes_through_popen() -> None:
    big = {**ENV, **{f"BIG{n}": "x" * (spawn.MAX_REQUEST // 2) for n in range(3)}}
    started = spawn.start(["sh", "-c", 'echo "${#BIG2}"'], big, "/")
    assert started.direct is not None
    assert finish(started).out == f"{spawn.MAX_REQUEST // 2}\n".encode()
    started.direct.returncode = 0


SERVER_OF_A_CHILD = textwrap.dedent(
    """
    import os, sys
    from cronflow import spawn
    env = {"PATH": os.environ["PATH"]}
    first = spawn.start(["true"], env, "/")
    os.waitpid(first.pid, 0)
    print(spawn._server.pid, flush=True)
    if sys.argv[1] == "fork":
        child = os.fork()
        if child == 0:
            job = spawn.start(["cat", "/proc/self/stat"], env, "/")
            ppid = int(job.stdout.read().decode().rsplit(")", 1)[1].split()[1])
            os.waitpid(job.pid, 0)
            os._exit(0 if ppid == os.getpid() and spawn._server.pid else 1)
        print(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]), flush=True)
    else:
        sys.stdin.read()  # until the test kills us
    """
)


def test_a_forked_child_starts_jobs_of_its_own() -> None:
    done = subprocess.run([sys.executable, "-c", SERVER_OF_A_CHILD, "fork"], env={**os.environ},
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "0"


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_the_server_ends_with_its_process(how: str) -> None:
    with subprocess.Popen([sys.executable, "-c", SERVER_OF_A_CHILD, "wait"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        server = int(proc.stdout.readline())
        assert alive(server)
        if how == "kill":
            proc.kill()
        proc.stdin.close()
        proc.wait(timeout=10)
    wait_until(lambda: not alive(server), what="the server to exit")


@pytest.fixture
def no_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh-cache"))
    spawn.shutdown()
    spawn.helper_path.cache_clear()
    yield
    spawn.helper_path.cache_clear()


def test_without_a_compiler_jobs_start_with_popen(no_compiler: None, tmp_path: Path) -> None:
    assert spawn.helper_path() is None
    started = spawn.start(["sh", "-c", "pwd; echo err >&2; exit 3"], ENV, str(tmp_path))
    assert started.direct is not None
    ended = finish(started)
    started.direct.returncode = ended.exit_code
    assert (ended.out, ended.err, ended.exit_code) == (f"{tmp_path}\n".encode(), b"err\n", 3)
    with pytest.raises(FileNotFoundError):
        spawn.start(["no-such-program-here"], ENV, "/")


def our_sleepers() -> list[int]:
    """Our children running `sleep`, zombies included (a job killed but never reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                if "(sleep)" in stat and int(fields[1]) == os.getpid():
                    found.append(int(entry))
    return found


class Claimed(set[int]):
    """The caller's set of pids it reaps itself, remembering the order they were added in."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[int] = []

    def add(self, pid: int) -> None:
        self.order.append(pid)
        super().add(pid)


def test_starts_in_flight_together_are_answered_in_order() -> None:
    """`start_soon`: the loop goes on while jobs exec; each caller gets its own job, and its
    pid is claimed before anything else on the loop can run."""
    claimed = Claimed()

    async def main() -> list[spawn.Started]:
        starts = [
            asyncio.create_task(spawn.start_soon(["sh", "-c", f"echo {n}"], ENV, "/", claimed))
            for n in range(40)
        ]
        await asyncio.sleep(0)  # every request is sent: none is answered yet
        assert spawn.in_flight()
        return await asyncio.gather(*starts)

    started = asyncio.run(main())
    assert not spawn.in_flight()
    assert all(s.direct is None for s in started), "started with Popen: no server"
    assert claimed.order == [s.pid for s in started]
    assert [finish(s).out for s in started] == [f"{n}\n".encode() for n in range(40)]


def test_a_burst_larger_than_the_sockets_can_hold_does_not_deadlock() -> None:
    """600 starts asked for in one loop turn: the requests in flight are capped, so the
    server's replies never fill its socket while ours block on sending (found in review)."""
    claimed: set[int] = set()

    async def main() -> list[spawn.Started]:
        starts = [spawn.start_soon(["true"], ENV, "/", claimed) for _ in range(600)]
        return await asyncio.wait_for(asyncio.gather(*starts), timeout=60)

    started = asyncio.run(main())
    assert len({s.pid for s in started}) == 600 and claimed == {s.pid for s in started}
    assert all(finish(s).exit_code == 0 for s in started)


def test_a_start_canceled_after_its_answer_kills_and_reaps_its_job() -> None:
    claimed: set[int] = set()

    async def main() -> None:
        start = asyncio.create_task(spawn.start_soon(["sleep", "60"], ENV, "/", claimed))
        await asyncio.sleep(0)  # sent
        while spawn.in_flight():  # answered: the job runs, its task has not resumed yet
            spawn._replies.read()
        assert claimed
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start

    sleepers_before = set(our_sleepers())
    asyncio.run(main())
    assert not claimed, "the killed job is reaped and no longer claimed"
    assert not set(our_sleepers()) - sleepers_before


def test_starts_left_by_a_closed_loop_are_stopped_and_spawn_goes_on() -> None:
    claimed: set[int] = set()

    async def leave() -> None:
        for _ in range(20):
            asyncio.get_running_loop().create_task(
                spawn.start_soon(["sleep", "60"], ENV, "/", claimed)
            )
        await asyncio.sleep(0)  # sent, not answered: the loop closes with them in flight

    spawn.warm()  # its socket and pidfd are not what this counts
    fds_before = len(os.listdir("/proc/self/fd"))
    sleepers_before = set(our_sleepers())  # other tests' leftovers are not this test's
    with contextlib.suppress(Exception):
        asyncio.run(leave())
    assert not spawn.in_flight()  # taken and stopped on the next look
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert not set(our_sleepers()) - sleepers_before
    assert job(["echo", "still"]).out == b"still\n"


def test_a_start_soon_that_cannot_exec_raises_like_popen(tmp_path: Path) -> None:
    async def main(argv: list[str], cwd: str) -> spawn.Started:
        return await spawn.start_soon(argv, ENV, cwd, set())

    with pytest.raises(FileNotFoundError) as missing:
        asyncio.run(main(["no-such-program-here"], "/"))
    assert missing.value.filename == "no-such-program-here"
    with pytest.raises(FileNotFoundError) as no_dir:
        asyncio.run(main(["true"], str(tmp_path / "gone")))
    assert no_dir.value.filename == str(tmp_path / "gone")


def test_a_start_canceled_in_flight_kills_its_job() -> None:
    """Nobody will watch it: it must not run on, nor stay a zombie."""
    sleepers_before = set(our_sleepers())

    async def main() -> None:
        start = asyncio.create_task(spawn.start_soon(["sleep", "60"], ENV, "/", set()))
        await asyncio.sleep(0)  # sent
        start.cancel()
        with pytest.raises(asyncio.CancelledError):
            await start
        while spawn.in_flight():  # its reply comes: the job is killed then
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert not set(our_sleepers()) - sleepers_before
