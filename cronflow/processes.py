"""What /proc tells about processes: identities that pid reuse cannot fool, the processes an
attempt left behind, and the child subreaper that keeps escaped descendants ours. Linux only.

A process is identified by (boot id, pid, start time in clock ticks since boot): a pid can be
reused, but not with the same start time in the same boot.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import select
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
_PF_EXITING = 0x4  # task flag in /proc/PID/stat: the process is in do_exit()
#: After SIGKILL, how long to wait for processes to be gone before giving up on them.
KILL_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class _Stat:
    pid: int
    ppid: int
    pgid: int
    start: int  # clock ticks after boot
    dead: bool  # a zombie, or exiting


@dataclass(frozen=True)
class Identity:
    """One process of one boot: alive only while the same process holds the pid."""

    boot: str
    pid: int
    start: int | None

    def alive(self) -> bool:
        if self.boot != boot_id():
            return False
        stat = _stat(self.pid)
        return stat is not None and not stat.dead and (self.start in (None, stat.start))


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


@functools.cache
def me() -> Identity:
    """This process."""
    return Identity(boot_id(), os.getpid(), start_time(os.getpid()))


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot; None if there is no such process."""
    stat = _stat(pid)
    return stat.start if stat else None


def _stat(pid: int) -> _Stat | None:
    try:  # os.open and one read: no file object, no fstat, isatty or seek (once per job)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # After "(comm)": state ppid pgrp session tty_nr tpgid flags ... starttime is field 22.
    fields = raw[raw.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    dead = fields[0] in (b"Z", b"X") or bool(int(fields[6]) & _PF_EXITING)
    return _Stat(pid, int(fields[1]), int(fields[2]), int(fields[19]), dead)


def _all() -> Iterator[_Stat]:
    try:
        names = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return
    for name in names:
        if (stat := _stat(int(name))) is not None:
            yield stat


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` has a member that is neither a zombie nor exiting.

    `killpg(pgid, 0)` also counts zombies (orphans that init has not reaped yet) and processes
    in the middle of exiting (their pipes are closed before they become zombies), so a positive
    answer is checked against /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(s.pgid == pgid and not s.dead for s in _all())


def carrying(marker: Iterable[str], since: int | None = None) -> list[int]:
    """Live processes whose environment holds every `KEY=VALUE` of `marker` (and that started
    at or after `since`): an attempt's descendants, even those that left its process group."""
    wanted = [b"\0" + entry.encode() + b"\0" for entry in marker]
    if not wanted:
        return []
    found = []
    for stat in _all():
        if stat.dead or stat.pid == os.getpid() or (since is not None and stat.start < since):
            continue
        try:
            with open(f"/proc/{stat.pid}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if all(w in environ for w in wanted):
            found.append(stat.pid)
    return found


def leftovers(pgid: int, start: int | None, marker: Iterable[str] = ()) -> list[int]:
    """The live processes of an attempt whose leader was `pgid` (started at `start`): its
    group, and the processes carrying its `marker` that left the group.

    While any member of a group lives, Linux hands its id to no new process: so a process now
    holding pid `pgid` with another start time means the whole old group is gone. Without a
    recorded start (the job ended before it was read), a live `pgid` is the attempt's only if
    it carries the marker: else it may be anyone's process that got the pid since.
    """
    leader = _stat(pgid)
    marked = set(carrying(marker, since=start))
    if leader is None:
        ours = True
    elif start is None:
        ours = pgid in marked
    else:
        ours = leader.start == start
    found = {s.pid for s in _all() if s.pgid == pgid and not s.dead} if ours else set()
    return sorted(found | marked)


def signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def stop(pids: list[int], grace: float) -> list[int]:
    """SIGTERM `pids`, SIGKILL what is left after `grace` seconds; returns the pids that
    were still there to be killed. Waits on pidfds, so it returns as soon as all are gone."""
    signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, grace)
    if left:
        signal_all(left, signal.SIGKILL)
        _wait_gone(left, KILL_WAIT_SECONDS)
    return left


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until every pid has exited (or `timeout`); returns those still alive."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # already gone
            fds[os.pidfd_open(pid)] = pid
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        waiting = set(fds)
        while waiting and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                waiting.discard(fd)
                poller.unregister(fd)
        return sorted(fds[fd] for fd in waiting if not _gone(fds[fd]))
    finally:
        for fd in fds:
            os.close(fd)


def _gone(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat.dead


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (those that escaped with setsid and
    whose parent died), so they can be found, killed with their run, and reaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_adopted(own: set[int]) -> None:
    """Reap exited children that are not in `own` (the attempts being waited for): adopted
    descendants, which would otherwise stay zombies. Peeks first, so it never takes the exit
    status of an attempt from the code waiting for it."""
    while True:
        try:
            found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if found is None or found.si_pid == 0 or found.si_pid in own:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(found.si_pid, os.WNOHANG)
