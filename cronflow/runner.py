"""One attempt of one command: the only module in cronflow that starts processes.

An attempt runs in a new session and process group, with stdin on /dev/null and both output
streams captured line by line as they arrive. Timeouts and cancels signal the whole group: SIGTERM,
then SIGKILL after ``kill_grace``. Everything is driven by the running asyncio loop: the child's
exit is learnt from a pidfd, its pipes are read when ready (one epoll set of every attempt's
descriptors, watched by the loop as a single reader: see ``_Watch``), and timers are ``call_later``
handles. We reap the child ourselves with ``os.wait4`` to get its rusage, which is why this does
not use ``asyncio.create_subprocess_exec`` (its child watcher would reap the child first).

How a process starts: through ``spawn``, a tiny fork server (``spawn.c``) that clones the job with
``CLONE_PARENT``, so the job is our own child, as with ``subprocess.Popen``, but its ``ru_maxrss``
is its own, not cronflow's size at the fork (``spawn.py`` says why). Without a C compiler, jobs are
started with ``subprocess.Popen`` (``start_new_session``) as before.

Linux only (pidfd_open needs Linux 5.3+).

Background grandchildren on a normal exit: once the command itself has exited, the output pipes
get ``DRAIN_SECONDS`` to reach EOF, then we stop reading and close them. Processes the command
left running in the background are not signalled (cron does not kill them either); they get
EPIPE/SIGPIPE if they write to the closed pipes. Only timeouts and cancels signal the group,
and with it the descendants that left it (``setsid``), found by the command's ``marker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import resource
import select
import signal
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cronflow import processes, spawn
from cronflow.clock import Clock
from cronflow.logcap import OutputLog, OutputSink

#: After the command exits (or its group was killed), how long its pipes may stay open before we
#: stop reading: a background grandchild holding stdout must not keep the attempt alive.
DRAIN_SECONDS = 0.5
#: A line longer than this with no newline is delivered in pieces of this size.
MAX_LINE_BYTES = 64 * 1024
#: How much one read from a pipe takes at most.
READ_BYTES = 64 * 1024
#: After a kill, when the pipes have closed but /proc still shows a live group member, look again
#: after each of these delays before leaving it the rest of the grace period.
GROUP_LOOKS = (0.02, 0.1, 0.3)
#: After a cancel by task cancellation, how long we wait for the SIGKILLed command to be reaped.
REAP_ON_CANCEL_SECONDS = 5.0
#: While attempts run, adopted descendants are reaped this often (and at each attempt's end);
#: the SIGCHLD handler is back once no attempt has run for REARM_SECONDS (see _Reaping).
REAP_SECONDS = 5.0  # the daemon wakes this often anyway
REARM_SECONDS = 0.2

EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126


@dataclass(frozen=True)
class Command:
    """What to run, fully prepared by the caller (argv already built, env complete)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    timeout: float | None
    kill_grace: float = 10.0
    max_log_bytes: int | None = 1024 * 1024
    #: `KEY=VALUE` entries of `env` that mark this attempt's processes, so that descendants
    #: which left the process group (setsid) are found and killed with it.
    marker: tuple[str, ...] = ()


#: Called once as the attempt starts, with the leader's pid (= its process group) and start
#: time, or (None, None) when the command could not be started at all.
OnStart = Callable[[int | None, int | None], None]

#: Our children that an attempt will reap itself (`reap_adopted` leaves them alone).
_WAITING: set[int] = set()


class Stop(asyncio.Event):
    """An `asyncio.Event` that running attempts watch without a task each: setting it calls
    their watchers (on the next loop turn). A plain Event works too, at a task per attempt."""

    def __init__(self) -> None:
        super().__init__()
        self._watchers: dict[object, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}

    def set(self) -> None:
        if self.is_set():
            return
        super().set()
        for loop, watcher in self._watchers.values():
            loop.call_soon(watcher)
        self._watchers.clear()

    def watch(self, key: object, watcher: Callable[[], None]) -> None:
        """Call `watcher` soon after the event is set (at once if it is), unless unwatched."""
        loop = asyncio.get_running_loop()
        if self.is_set():
            loop.call_soon(watcher)
        else:
            self._watchers[key] = (loop, watcher)

    def unwatch(self, key: object) -> None:
        self._watchers.pop(key, None)


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt ended. ``exit_code`` is 128+N when the command died of signal N."""

    status: str
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    cpu_seconds: float | None
    max_rss_kb: int | None
    tail: bytes
    error: str | None = None
    host: str | None = None  # the worker's, for an attempt that ran elsewhere
    #: For a remote attempt: acknowledge its end to the broker, once the store has it.
    settle: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)


async def run_attempt(
    command: Command,
    on_output: OutputSink,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    on_start: OnStart | None = None,
) -> AttemptResult:
    """Run ``command`` once, streaming its output to ``on_output``, and report how it ended.

    Setting ``stop`` cancels the attempt (status "canceled"); if it is already set, the command is
    not started. User mistakes (command not found, bad workdir) give a "failed" result, never an
    exception. If ``on_output`` raises, the group is killed and the exception propagates. If the
    awaiting task is cancelled, the group is SIGKILLed and reaped before CancelledError propagates.
    """
    clock = clock or Clock()
    log = OutputLog(on_output, command.max_log_bytes)
    started_at = clock.now()
    if stop is not None and stop.is_set():
        return AttemptResult("canceled", None, started_at, started_at, None, None, b"")
    try:
        started = await spawn.start_soon(command.argv, command.env, command.cwd, _WAITING)
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EIO and command.marker:
            # The job starter died with this request: the job may run all the same, unknown
            # to us. Stop it, so that a retry can never run beside it.
            processes.signal_all(processes.carrying(command.marker), signal.SIGKILL)
        if on_start is not None:
            on_start(None, None)
        return _exec_failure(command, exc, log, started_at, clock)
    reap_adopted()  # what exited while the start was in flight
    try:
        start_time = processes.start_time(started.pid)
        if on_start is not None:
            on_start(started.pid, start_time)
        attempt = _Attempt(started, start_time, command, log, clock)
    except BaseException:  # the store refused it, or pidfd_open failed: leave no unwatched job
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(started.pid, signal.SIGKILL)
        started.stdout.close()
        started.stderr.close()
        _, status = os.waitpid(started.pid, 0)  # SIGKILLed: this returns at once
        if started.direct is not None:
            started.direct.returncode = os.waitstatus_to_exitcode(status)
        _WAITING.discard(started.pid)
        raise
    return await attempt.wait(stop, started_at)


def _exec_failure(
    command: Command, exc: Exception, log: OutputLog, started_at: datetime, clock: Clock
) -> AttemptResult:
    """The command could not be started: report it as a shell would, on stderr and as 127/126."""
    code, message = _describe_exec_error(command, exc)
    at = clock.now()
    log.add("err", at, f"cronflow: {message}\n".encode(errors="surrogateescape"))
    log.finish(at)
    return AttemptResult("failed", code, started_at, at, None, None, log.last_bytes(), message)


def _describe_exec_error(command: Command, exc: Exception) -> tuple[int, str]:
    """Exit code and one-line message for an exec failure, in the user's words."""
    program = command.argv[0] if command.argv else ""
    if not isinstance(exc, OSError):  # ValueError: an embedded NUL byte in argv, env or cwd
        return EXIT_CANNOT_EXECUTE, f"cannot execute {program!r}: {exc}"
    code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
    # subprocess reports a failed chdir with the workdir as the filename.
    if exc.filename == command.cwd and (program != command.cwd or not os.path.isdir(command.cwd)):
        if exc.errno == errno.ENOENT:
            return code, f"workdir does not exist: {command.cwd}"
        if exc.errno == errno.ENOTDIR:
            return code, f"workdir is not a directory: {command.cwd}"
        return code, f"workdir not usable: {command.cwd}: {exc.strerror}"
    if exc.errno == errno.ENOENT:
        return code, f"command not found: {program}"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return code, f"permission denied: {program}"
    return code, f"cannot execute {program}: {exc.strerror}"


class _Attempt:
    """The running process: reads its pipes, learns of its exit, and kills its group on demand."""

    def __init__(
        self,
        started: spawn.Started,
        start_time: int | None,
        command: Command,
        log: OutputLog,
        clock: Clock,
    ):
        self._loop = asyncio.get_running_loop()
        self._started = started
        self._pid = started.pid
        self._pgid = started.pid  # the child leads its own session and group
        self._command = command
        self._log = log
        self._clock = clock
        self._exited: asyncio.Future[None] = self._loop.create_future()
        self._reaped = False  # the exit is known (and the child reaped, if it was ours to)
        self._pipes_closed: asyncio.Future[None] = self._loop.create_future()
        self._killed: asyncio.Future[None] = self._loop.create_future()
        self._wait_status: int | None = None
        self._rusage: resource.struct_rusage | None = None
        self._kill_reason: str | None = None  # "timeout" or "canceled" once we signalled the group
        self._kill_handle: asyncio.TimerHandle | None = None
        self._sink_error: Exception | None = None
        self._partial: dict[int, bytearray] = {}
        self._streams: dict[int, str] = {}
        self._start = start_time
        self._watch = _Watch.of(self._loop)
        for pipe, stream in ((started.stdout, "out"), (started.stderr, "err")):
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._streams[fd] = stream
            self._partial[fd] = bytearray()
        # A short job (`true`) has often exited by the time its start is known: then it is
        # reaped here and its pipes read to their end at once, with nothing to watch (no
        # pidfd, no loop turn). Otherwise its exit and pipes are watched until they come.
        self._pidfd = -1
        if self._reap(os.WNOHANG):
            for fd in list(self._streams):
                self._read_to_end(fd)  # its output, then EOF (unless a descendant holds it)
        else:
            self._pidfd = os.pidfd_open(started.pid)
            self._watch.add(self._pidfd, self._on_exit)
        if self._sink_error is None:
            for fd in self._streams:
                self._watch.add(fd, functools.partial(self._on_readable, fd))
        self._reaping = _Reaping.of.get(self._loop)
        if self._reaping is not None:
            self._reaping.busy(self._loop)

    async def wait(self, stop: asyncio.Event | None, started_at: datetime) -> AttemptResult:
        """Wait for the exit (killing the group on timeout or stop), drain the pipes, report."""
        timeout_handle = None
        if self._command.timeout is not None:
            timeout_handle = self._loop.call_later(
                max(0.0, self._command.timeout), self._terminate, "timeout"
            )
        stop_task = None
        if isinstance(stop, Stop):
            stop.watch(self, self._on_stop)
        elif stop is not None:
            stop_task = self._loop.create_task(stop.wait())
            stop_task.add_done_callback(lambda task: task.cancelled() or self._on_stop())
        try:
            if not self._reaped:
                await self._exited  # ours alone: a cancel here is handled below
            if timeout_handle is not None:
                timeout_handle.cancel()
            if self._kill_reason is not None:
                await self._until_group_gone()
            if not self._pipes_closed.done():
                await asyncio.wait({self._pipes_closed}, timeout=DRAIN_SECONDS)
        except asyncio.CancelledError:
            self._kill_now()
            if not self._reaped:
                self._exited = self._loop.create_future()
                await asyncio.wait({self._exited}, timeout=REAP_ON_CANCEL_SECONDS)
            raise
        finally:
            for handle in (timeout_handle, self._kill_handle):
                if handle is not None:
                    handle.cancel()
            if isinstance(stop, Stop):
                stop.unwatch(self)
            elif stop_task is not None:
                stop_task.cancel()
            self._close()
        if self._sink_error is not None:
            raise self._sink_error
        finished_at = self._clock.now()
        self._log.finish(finished_at)
        return self._result(started_at, finished_at)

    def _result(self, started_at: datetime, finished_at: datetime) -> AttemptResult:
        exit_code = None
        if self._wait_status is not None:
            exit_code = os.waitstatus_to_exitcode(self._wait_status)
            if exit_code < 0:
                exit_code = 128 - exit_code
        if self._kill_reason is not None:
            status = self._kill_reason
        else:
            status = "success" if exit_code == 0 else "failed"
        cpu = rss = None
        if self._rusage is not None:
            cpu = self._rusage.ru_utime + self._rusage.ru_stime
            rss = self._rusage.ru_maxrss
        return AttemptResult(
            status, exit_code, started_at, finished_at, cpu, rss, self._log.last_bytes()
        )

    # --- the process's exit -------------------------------------------------------------------

    def _on_exit(self) -> None:
        """The pidfd became readable: the child has exited; reap it and keep its rusage."""
        self._watch.remove(self._pidfd)
        self._reap(0)

    def _reap(self, options: int) -> bool:
        """Reap the child (`os.WNOHANG`: only if it has exited) and keep its status and rusage;
        False if it still runs."""
        direct = self._started.direct
        try:
            pid, status, rusage = os.wait4(self._pid, options)
        except ChildProcessError:  # someone else reaped it (a foreign waitpid(-1)): no status
            if direct is not None:
                direct.returncode = -1
        else:
            if pid == 0:
                return False
            self._wait_status, self._rusage = status, rusage
            # Tell Popen it is reaped, or its __del__ would waitpid() a pid that may be reused.
            if direct is not None:
                direct.returncode = os.waitstatus_to_exitcode(status)
        _WAITING.discard(self._pid)
        self._reaped = True
        reap_adopted()
        if not self._exited.done():
            self._exited.set_result(None)
        return True

    async def _until_group_gone(self) -> None:
        """After a kill, wait until nothing of the group is left, or the SIGKILL has been sent.

        The pipes closing is the usual sign. Members that never held them (or closed them) are
        looked for in /proc a few times (``GROUP_LOOKS``, a bounded backoff, not a polling loop);
        if one is still alive after that, it gets the rest of the grace period before SIGKILL.
        """
        await asyncio.wait({self._pipes_closed, self._killed}, return_when=asyncio.FIRST_COMPLETED)
        for delay in (0.0, *GROUP_LOOKS):
            if delay:
                await asyncio.wait({self._killed}, timeout=delay)
            if self._killed.done():
                return
            if not processes.group_alive(self._pgid):
                if self._kill_handle is not None:
                    self._kill_handle.cancel()
                return
        await asyncio.wait({self._killed})

    # --- killing the group --------------------------------------------------------------------

    def _on_stop(self) -> None:
        self._terminate("canceled")

    def _terminate(self, reason: str) -> None:
        """SIGTERM the group now and SIGKILL it after the grace period (once per attempt)."""
        if self._kill_reason is not None or self._reaped:
            return
        self._kill_reason = reason
        self._signal_group(signal.SIGTERM)
        self._kill_handle = self._loop.call_later(
            max(0.0, self._command.kill_grace), self._kill_group
        )

    def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        if not self._killed.done():
            self._killed.set_result(None)

    def _kill_now(self) -> None:
        """No grace: the caller is going away (task cancelled, or our sink failed)."""
        if self._kill_reason is None:
            self._kill_reason = "canceled"
        if self._kill_handle is not None:
            self._kill_handle.cancel()
        self._kill_group()

    def _signal_group(self, signum: int) -> None:
        # The group id stays reserved while any member (even a zombie leader) exists, and Linux
        # hands out pids cyclically, so this cannot hit an unrelated group in practice.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, signum)
        processes.signal_all(processes.carrying(self._command.marker, self._start), signum)

    # --- output -------------------------------------------------------------------------------

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_BYTES)
        except BlockingIOError:
            return
        self._deliver(fd, data)

    def _read_to_end(self, fd: int) -> None:
        """Read what the pipe holds now, to its EOF if its writers are gone."""
        while fd in self._streams and self._sink_error is None:
            try:
                data = os.read(fd, READ_BYTES)
            except BlockingIOError:
                return
            self._deliver(fd, data)

    def _deliver(self, fd: int, data: bytes) -> None:
        """Lines to the sink, or EOF; a sink that fails stops the job (raised from wait())."""
        try:
            if data:
                self._take(fd, data, self._clock.now())
            else:
                self._close_pipe(fd)
        except Exception as exc:  # the sink failed: stop the job, re-raised from wait()
            self._sink_error = exc
            for open_fd in list(self._streams):
                self._watch.remove(open_fd)
            if not self._pipes_closed.done():
                self._pipes_closed.set_result(None)
            self._kill_now()

    def _take(self, fd: int, data: bytes, at: datetime) -> None:
        """Deliver the complete lines in ``data``; keep the rest for the next read."""
        stream, buf = self._streams[fd], self._partial[fd]
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            end += 1
            while end - start > MAX_LINE_BYTES:
                self._log.add(stream, at, bytes(buf[start : start + MAX_LINE_BYTES]))
                start += MAX_LINE_BYTES
            self._log.add(stream, at, bytes(buf[start:end]))
            start = end
        while len(buf) - start >= MAX_LINE_BYTES:
            self._log.add(stream, at, bytes(buf[start : start + MAX_LINE_BYTES]))
            start += MAX_LINE_BYTES
        del buf[:start]

    def _close_pipe(self, fd: int) -> None:
        """EOF (or we stop reading): flush the partial last line and close the pipe."""
        self._watch.remove(fd)
        stream = self._streams.pop(fd)
        rest = self._partial.pop(fd)
        if rest:
            self._log.add(stream, self._clock.now(), bytes(rest))
        for pipe in (self._started.stdout, self._started.stderr):
            if not pipe.closed and pipe.fileno() == fd:
                pipe.close()
        if not self._streams and not self._pipes_closed.done():
            self._pipes_closed.set_result(None)

    def _close(self) -> None:
        """Stop watching everything; pipes still open are flushed and closed."""
        if self._reaping is not None:
            self._reaping.idle(self._loop)
        if self._pidfd >= 0:
            self._watch.remove(self._pidfd)  # only when cancelled and the reap timed out
            os.close(self._pidfd)
        for fd in list(self._streams):
            if self._sink_error is None:
                self._close_pipe(fd)
            else:
                self._watch.remove(fd)
                self._streams.pop(fd)
        for pipe in (self._started.stdout, self._started.stderr):
            pipe.close()


class _Watch:
    """The descriptors of every running attempt of one loop (output pipes, pidfd) in one epoll
    set of our own, which the loop watches as a single reader.

    Registering a descriptor is then one C call (epoll_ctl), where the loop's add_reader and
    remove_reader cost a few dozen Python calls each: three of each per job. The set lives as
    long as its loop (closed when the loop is collected); level-triggered, as the loop is.
    """

    _of: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watch] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)
        weakref.finalize(loop, self._epoll.close)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Watch:
        watch = cls._of.get(loop)
        if watch is None:
            _forget_closed(cls._of)
            watch = cls._of[loop] = cls(loop)
        return watch

    def close(self) -> None:
        self._epoll.close()

    def add(self, fd: int, handler: Callable[[], None]) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def remove(self, fd: int) -> None:
        """Stop watching `fd` (before it is closed, so its number can be reused safely)."""
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def _ready(self) -> None:
        for fd, _ in self._epoll.poll(0):
            handler = self._handlers.get(fd)  # an earlier handler may have removed it
            if handler is not None:
                handler()


def reap_adopted() -> None:
    """Reap exited children that no attempt waits for: descendants adopted as a subreaper.
    Not while a start is in flight: a job that exits at once is our child before its pid is
    known (the next start or exit reaps what is left)."""
    if not spawn.in_flight():
        processes.reap_adopted(_WAITING)


def _forget_closed(table: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]) -> None:
    """Close and drop what closed loops left in `table`. A loop closed with a timer of ours
    pending stays reachable through it, and would keep its epoll descriptor open for good: a
    remote worker runs one loop per job."""
    for loop in [loop for loop in table if loop.is_closed()]:
        table.pop(loop).close()


def adopt_descendants(loop: asyncio.AbstractEventLoop) -> None:
    """Make this process the subreaper of the jobs it starts: a descendant that escapes its
    process group (setsid) and loses its parent becomes our child, so a timeout or stop can
    still find it, and its exit is reaped here instead of leaving a zombie (see _Reaping)."""
    if processes.become_subreaper():
        _forget_closed(_Reaping.of)
        _Reaping.of[loop] = _Reaping()
        loop.add_signal_handler(signal.SIGCHLD, reap_adopted)


class _Reaping:
    """When a loop that adopts descendants reaps them.

    While no attempt runs, on SIGCHLD, at once. While attempts run, the SIGCHLD handler is
    off: every job's own exit would send one, and wake the loop once more per job for nothing
    (its attempt learns of it from its pidfd and reaps it). Adopted descendants are then reaped
    at each attempt's end and every REAP_SECONDS; the handler comes back once the loop has had
    no attempt for REARM_SECONDS (a backfill keeps it off from its second job on).
    """

    of: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Reaping] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.running = 0  # attempts of the loop
        self.on_signal = True  # the SIGCHLD handler is installed
        self.idle_since = 0.0  # loop time the last attempt ended
        self.check: asyncio.TimerHandle | None = None  # while the handler is off

    def close(self) -> None:
        if self.check is not None:
            self.check.cancel()
            self.check = None

    def busy(self, loop: asyncio.AbstractEventLoop) -> None:
        """An attempt has started."""
        self.running += 1
        if self.on_signal:
            loop.remove_signal_handler(signal.SIGCHLD)
            self.on_signal = False
            self.check = loop.call_later(REAP_SECONDS, self._check, loop)

    def idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """An attempt has ended (its own end reaps what is left: see _Attempt._reap)."""
        self.running -= 1
        if self.running or self.check is None:
            return
        self.idle_since = now = loop.time()
        if self.check.when() > now + REARM_SECONDS:  # not once per job: one timer serves many
            self.check.cancel()
            self.check = loop.call_later(REARM_SECONDS, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reap; back to the handler once idle for REARM_SECONDS, else look again later."""
        self.check = None
        reap_adopted()
        if loop.is_closed():
            return
        if self.running:
            self.check = loop.call_later(REAP_SECONDS, self._check, loop)
            return
        wait = self.idle_since + REARM_SECONDS - loop.time()
        if wait > 0:
            self.check = loop.call_later(wait, self._check, loop)
            return
        loop.add_signal_handler(signal.SIGCHLD, reap_adopted)
        self.on_signal = True
        reap_adopted()  # what exited while nothing listened
