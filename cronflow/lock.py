"""One daemon per state directory: an flock held for the daemon's life, with its pid inside."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cronflow.errors import CronflowError


class Lock:
    """One daemon per state directory: an flock held for the daemon's life."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        prepare_state_folder(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode().strip() or "?"
            os.close(fd)
            raise CronflowError(
                f"another cronflow daemon is running (pid {pid}) for {self.path.parent}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_state_folder(folder: Path) -> None:
    """Create the state folder 0700; tighten an existing one of ours that others can write.

    Others who can write it could swap the database or the lock. A folder we do not own is
    left as it is (we could not change it), and a merely readable one too: its files are 0600.
    """
    if not folder.exists():
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(folder, 0o700)  # makedirs' mode is masked by the umask
        return
    st = os.stat(folder)
    if st.st_uid == os.geteuid() and st.st_mode & 0o022:
        os.chmod(folder, 0o700)


def running_daemon_pid(lock_path: Path) -> int | None:
    """The pid of the daemon holding `lock_path`, or None if no daemon holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:  # no lock file (or no state folder): no daemon
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode().strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None
