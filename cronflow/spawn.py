"""How a job's process is started, so that its peak memory (``ru_maxrss``) is its own.

Linux keeps, in a process's ``ru_maxrss``, the resident size it had before ``exec``: a job forked
(or vforked) straight from cronflow would report cronflow's RSS at the fork, about 28 MiB for
``true`` under the daemon. So jobs are started by ``spawn.c``, a tiny static fork server that
this process starts once (on its first job) and talks to over a ``SOCK_SEQPACKET`` socketpair: it
clones each job with ``CLONE_PARENT``, so the job is still *our* child (pidfd, ``wait4`` and its
rusage, process group and session work as for a direct child) but what it held before exec is the
server's ~1 MiB. One message per job, no exec of a helper per job.

A job inherits from the server what a fork would have given it from us and cronflow never
changes after start-up: user, umask, resource limits, cgroup; the server resets signal
dispositions and mask to the defaults, and holds no descriptor but /dev/null (the job's stdin).

`start` is synchronous: it returns once the job has exec'd (or raises as ``subprocess.Popen``
would), so the caller learns the pid before its event loop can run ``runner.reap_adopted``.

The server is compiled on first use with the system C compiler (``$CC`` or ``cc``) into the
user cache folder, keyed by its source and the machine, and reused by later cronflow processes.
Without a compiler (or when the server cannot be started) jobs are started with
``subprocess.Popen`` as before, and their peak memory includes cronflow's RSS at the fork
(`Started.direct` tells which way). A server that died (killed, or its parent thread exited:
``PR_SET_PDEATHSIG``) is replaced on the next start; a forked child of this process starts its own.
"""

from __future__ import annotations

import array
import asyncio
import binascii
import collections
import contextlib
import errno
import functools
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SOURCE = Path(__file__).with_name("spawn.c")
#: Larger requests (argv + env + workdir) are started with Popen: REQUEST_BYTES in spawn.c.
MAX_REQUEST = 128 * 1024
#: Combined once: `|` on socket.MsgFlag members runs Python code (enum) on every call.
_SEND_FLAGS = int(socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)


@dataclass(frozen=True)
class Started:
    """A running job: its pid (= its process group and session) and the read ends of its output."""

    pid: int
    stdout: IO[bytes]
    stderr: IO[bytes]
    #: Set when the job was started with Popen (no server): tell it of the reaping.
    direct: subprocess.Popen[bytes] | None = None


def start(argv: list[str], env: dict[str, str], cwd: str) -> Started:
    """Start ``argv`` in a new session with stdin on /dev/null and both output streams piped.

    Raises OSError (or ValueError) as ``subprocess.Popen`` would when it cannot be started: a bad
    workdir (``filename`` = ``cwd``) or a program that cannot be executed (``filename`` = it).
    """
    request = _request(argv, env, cwd)
    if len(request) <= MAX_REQUEST:
        with _lock:
            started = _through_server(argv, cwd, request)
        if started is not None:
            return started
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    return Started(proc.pid, proc.stdout, proc.stderr, proc)


async def start_soon(argv: list[str], env: dict[str, str], cwd: str, claimed: set[int]) -> Started:
    """`start`, but the event loop goes on while the server clones the job and it execs.

    Many jobs due at once are then started as a pipeline: while one job execs (most of the
    wall time of a start, spent in the kernel), the loop prepares and records the next. The
    server answers in order; the job's pid is added to `claimed` (the pids the caller reaps
    itself) as soon as the reply is read, before anything else runs on the loop. A job whose
    awaiting task is cancelled, or whose loop closed meanwhile, is killed and reaped here.
    While any request is unanswered, `in_flight()` is true: a reaper must not reap unknown
    children then.
    """
    loop = asyncio.get_running_loop()
    request = _request(argv, env, cwd)
    _replies.settle_orphans()
    sent = None
    if len(request) <= MAX_REQUEST and _replies.usable_by(loop):
        with _lock:
            sent = _send_soon(request, _Waiting(loop.create_future(), argv[0], cwd, claimed))
    if sent is None:
        started = start(argv, env, cwd)
        claimed.add(started.pid)
        return started
    server, waiting = sent
    _replies.expect(loop, server, waiting)
    try:
        return await waiting.future
    except asyncio.CancelledError:
        future = waiting.future
        if future.done() and not future.cancelled() and future.exception() is None:
            _abandon(future.result(), claimed)  # answered, but its caller is gone
        raise


def _abandon(started: Started, claimed: set[int]) -> None:
    """Kill and reap a job nobody will watch, and close its pipes."""
    started.stdout.close()
    started.stderr.close()
    _kill_and_reap(started.pid)
    claimed.discard(started.pid)


def _kill_and_reap(pid: int) -> None:
    """SIGKILL a job's group and reap the job (our child): it returns at once."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _send_soon(request: bytes, waiting: _Waiting) -> tuple[_Server, _Waiting] | None:
    """Send a `start_soon` request with new output pipes (a server found dead while idle is
    replaced once); None: use Popen."""
    for _ in range(2):
        server = _running_server()
        if server is None or _replies.server not in (None, server):
            return None
        with _pipes() as (out_r, err_r, ends):
            try:
                sent = _send(server, request, ends)
            except BrokenPipeError:
                sent = None
        if sent:
            waiting.out_r, waiting.err_r = out_r, err_r
            return server, waiting
        os.close(out_r)
        os.close(err_r)
        if sent is False or _replies.waiting:  # its reader sees the EOF and fails those
            return None
        _stop(server)  # it died while idle: nothing started
    return None


def warm() -> None:
    """Build and start the server now (a daemon at start-up), not on the first job's path."""
    with _lock:
        _running_server()


def in_flight() -> bool:
    """Whether some job may have been started whose pid its caller does not know yet."""
    _replies.settle_orphans()
    return bool(_replies.waiting)


@dataclass
class _Waiting:
    """A request sent by `start_soon`, answered in the order sent."""

    future: asyncio.Future[Started]
    program: str
    cwd: str
    claimed: set[int]
    out_r: int = -1
    err_r: int = -1


class _Replies:
    """The unanswered `start_soon` requests of the one event loop that sends them.

    The server's socket stays registered with that loop between requests (until the loop
    closes, another loop takes over while it is not running, or the server stops): one
    reader for many jobs, not an add_reader and remove_reader per job.
    """

    def __init__(self) -> None:
        self.owner: asyncio.AbstractEventLoop | None = None
        self.server: _Server | None = None
        self.fd = -1  # the socket's, as registered (it may be closed when we let go)
        self.waiting: collections.deque[_Waiting] = collections.deque()

    def usable_by(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether `loop` may send `start_soon` requests now (taking over an idle registration
        of a loop that is not running)."""
        if self.owner is None or self.owner is loop:
            return True
        if self.waiting or self.owner.is_running():
            return False
        self._idle()
        return True

    def expect(self, loop: asyncio.AbstractEventLoop, server: _Server, waiting: _Waiting) -> None:
        if self.owner is not loop or self.server is not server:
            self._idle()
            self.owner, self.server, self.fd = loop, server, server.sock.fileno()
            loop.add_reader(self.fd, self.read)
        self.waiting.append(waiting)

    def read(self) -> None:
        server = self.server
        assert server is not None
        if not self.waiting:  # readable with nothing asked: the server has exited
            self._idle()
            return
        while self.waiting:
            try:
                reply = server.sock.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:  # reset: it died with our requests
                reply = b""
            if not reply:  # it died with our requests: those jobs may have started, no retry
                self.fail_all(server)
                return
            self._answer(self.waiting.popleft(), reply)

    def _answer(self, waiting: _Waiting, reply: bytes) -> None:
        """Settle one request's future, whatever happens: a task never waits forever."""
        future = waiting.future
        try:
            self._settle(waiting, reply)
        except Exception as exc:  # a malformed reply, or a job already reaped elsewhere
            if not future.done():
                future.set_exception(OSError(errno.EIO, f"the job starter's reply: {exc}"))

    def _settle(self, waiting: _Waiting, reply: bytes) -> None:
        future = waiting.future
        try:
            pid, error, which = _parse(reply)
        except ValueError:
            os.close(waiting.out_r)
            os.close(waiting.err_r)
            raise
        if error or future.cancelled():
            os.close(waiting.out_r)
            os.close(waiting.err_r)
        if error:
            if pid:  # it has exited with 127 after its failed chdir or exec: our child
                os.waitpid(pid, 0)
            if not future.cancelled():
                name = {"c": waiting.cwd, "x": waiting.program}.get(which)
                future.set_exception(OSError(error, os.strerror(error), name))
        elif future.cancelled():  # nobody will watch it
            _kill_and_reap(pid)
        else:
            waiting.claimed.add(pid)
            out = os.fdopen(waiting.out_r, "rb", buffering=0)
            err = os.fdopen(waiting.err_r, "rb", buffering=0)
            future.set_result(Started(pid, out, err))

    def fail_all(self, server: _Server) -> None:
        with _lock:
            _stop(server)
        dead = OSError(errno.EIO, "the job starter (cronflow-spawn) died")
        while self.waiting:
            waiting = self.waiting.popleft()
            os.close(waiting.out_r)
            os.close(waiting.err_r)
            if not waiting.future.cancelled():
                waiting.future.set_exception(dead)
        self._idle()

    def settle_orphans(self) -> None:
        """Requests left by an event loop that has closed (nobody awaits them): take their
        replies now, kill and reap the jobs that started, and free their pipes."""
        if self.owner is None or not self.owner.is_closed():
            return
        server = self.server
        assert server is not None
        while self.waiting:
            waiting = self.waiting.popleft()
            try:
                reply = server.sock.recv(64)
                pid = _parse(reply)[0] if reply else 0
            except (OSError, ValueError):
                pid = 0
            os.close(waiting.out_r)
            os.close(waiting.err_r)
            if pid:
                _kill_and_reap(pid)
        self._idle()

    def _idle(self) -> None:
        if self.owner is not None and not self.owner.is_closed():
            self.owner.remove_reader(self.fd)
        self.owner = self.server = None
        self.fd = -1


_replies = _Replies()


def _request(argv: list[str], env: dict[str, str], cwd: str) -> bytes:
    """The server's request (see spawn.c); ValueError for what Popen refuses too."""
    if not argv:
        raise ValueError("empty command")
    if "=" in "".join(env):  # a key holding "=" (joined: one scan in C, not one per key)
        raise ValueError("illegal environment variable name")
    strings = [os.fsdecode(cwd), *map(os.fsdecode, argv), *map("=".join, env.items())]
    text = "\0".join(strings)
    if text.count("\0") != len(strings) - 1:
        raise ValueError("embedded null byte")
    # One encode for the whole request, as os.fsencode would encode each string.
    data = text.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
    return struct.pack("=II", len(argv), len(env)) + data + b"\0"


@contextlib.contextmanager
def _pipes() -> Iterator[tuple[int, int, tuple[int, int]]]:
    """A job's output pipes: our read ends (closed here if the block fails) and its write
    ends, closed here once the block has sent them."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        yield out_r, err_r, (out_w, err_w)
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)


def _through_server(argv: list[str], cwd: str, request: bytes) -> Started | None:
    """Start the job through the server; None when there is none (the caller uses Popen)."""
    with _pipes() as (out_r, err_r, ends):
        reply = _ask(request, ends)
    if reply is None or reply[1]:
        os.close(out_r)
        os.close(err_r)
    if reply is None:
        return None
    pid, error, which = reply
    if error:
        if pid:  # the job has exited with 127 after its failed chdir or exec: it is our child
            os.waitpid(pid, 0)
        filename = {"c": cwd, "x": argv[0]}.get(which)
        raise OSError(error, os.strerror(error), filename)
    return Started(pid, os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0))


def _ask(request: bytes, fds: tuple[int, int]) -> tuple[int, int, str] | None:
    """Send one request, wait for its reply; restart a server found dead while idle. None:
    use Popen (no server, or `start_soon` requests are still unanswered: their replies come
    first)."""
    if _replies.waiting:
        return None
    for _ in range(2):
        server = _running_server()
        if server is None:
            return None
        try:
            if not _send(server, request, fds):
                return None
        except BrokenPipeError:  # it died while idle: nothing started
            _stop(server)
            continue
        reply = server.sock.recv(64)
        if not reply:  # it died with our request: the job may have started, so do not retry
            _stop(server)
            raise OSError(errno.EIO, "the job starter (cronflow-spawn) died")
        return _parse(reply)
    return None


def _send(server: _Server, request: bytes, fds: tuple[int, int]) -> bool:
    """Send one request with the job's output pipes; False when it is too large for the
    socket (use Popen). A server found dead is stopped and BrokenPipeError raised: nothing
    was started."""
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    try:
        while True:
            try:
                server.sock.sendmsg([request], rights, _SEND_FLAGS)
                break
            except BlockingIOError:
                # The server is behind. If its unread replies fill its socket it stops reading
                # requests, and a blocking send here would wait for good: read them meanwhile.
                if _replies.server is server:
                    _replies.read()
                if server.sock.fileno() < 0:  # it had died: read() saw the end and let go
                    raise BrokenPipeError(errno.EPIPE, "closed") from None
                select.select([server.sock], [server.sock], [])
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise BrokenPipeError(errno.EPIPE, "the job starter (cronflow-spawn) has exited") from exc
    except OSError as exc:
        if exc.errno in (errno.EMSGSIZE, errno.ENOBUFS):
            return False
        raise
    return True


def _parse(reply: bytes) -> tuple[int, int, str]:
    pid, error, which = reply.decode().split()
    return int(pid), int(error), which


@dataclass
class _Server:
    sock: socket.socket
    pid: int
    pidfd: int
    stopped: bool = False


_lock = threading.RLock()
_server: _Server | None = None


def _running_server() -> _Server | None:
    global _server
    if _server is None:
        helper = helper_path()
        if helper is None:
            return None
        with contextlib.suppress(OSError):
            _server = _launch(helper)
    return _server


def _launch(helper: str) -> _Server:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        os.set_inheritable(theirs.fileno(), True)
        null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        # Its own session: a Ctrl-C meant for `cronflow run` in a terminal does not reach it.
        pid = os.posix_spawn(
            helper,
            [helper, str(theirs.fileno()), str(os.getpid())],
            {},  # no environment: nothing of ours in /proc/PID/environ (see processes.carrying)
            file_actions=null,
            setsid=True,
        )
        # A pidfd, not the pid: it may be reaped by reap_adopted, and its pid reused, any time.
        pidfd = os.pidfd_open(pid)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Server(ours, pid, pidfd)


def _stop(server: _Server) -> None:
    """Close our end and reap the server (unless reap_adopted already has)."""
    global _server
    if _server is server:
        _server = None
    if _replies.server is server:  # unregistered before its descriptor number can be reused
        _replies._idle()
    if server.stopped:
        return
    server.stopped = True
    server.sock.close()
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(server.pidfd, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PIDFD, server.pidfd, os.WEXITED)
    os.close(server.pidfd)


def shutdown() -> None:
    """Stop this process's server, if any (the next start launches another)."""
    if _replies.server is not None:
        _replies.fail_all(_replies.server)
    with _lock:
        if _server is not None:
            _stop(_server)


def _forget_after_fork() -> None:
    """In a forked child: the server belongs to the parent (its jobs would be the parent's)."""
    global _server, _lock, _replies
    _lock = threading.RLock()
    _replies = _Replies()
    if _server is not None:
        _server.sock.close()
        os.close(_server.pidfd)
        _server = None


os.register_at_fork(after_in_child=_forget_after_fork)


@functools.cache
def helper_path() -> str | None:
    """The compiled server, built once per source version and machine; None without a C
    compiler (or when building fails)."""
    source = SOURCE.read_bytes()
    # CRC-32, not a cryptographic hash: hashlib would load OpenSSL into a lean daemon (MBs).
    key = f"{binascii.crc32(source + os.uname().machine.encode()):08x}-{len(source)}"
    target = _cache_folder() / f"cronflow-spawn-{key}"
    if os.access(target, os.X_OK):
        return str(target)
    return _build(target)


def _build(target: Path) -> str | None:
    """Compile spawn.c to `target` (imports only a first start needs)."""
    import shlex
    import shutil
    import tempfile

    compiler = shlex.split(os.environ.get("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        return None
    with contextlib.suppress(OSError):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
        os.close(fd)
        try:
            # Static when the C library allows it: exec is quicker and the RSS smallest.
            for extra in (["-static"], []):
                built = subprocess.run(
                    [*compiler, "-O2", *extra, "-o", scratch, str(SOURCE)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                if built.returncode == 0:
                    os.chmod(scratch, 0o755)
                    os.replace(scratch, target)  # atomic: racing builders write the same file
                    return str(target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)
    return None


def _cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cronflow"
