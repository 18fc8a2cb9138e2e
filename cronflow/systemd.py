"""The systemd user units for `cronflow daemon` and `cronflow worker`, and sd_notify.

Standard library only: sd_notify is one datagram on an AF_UNIX socket, not worth a package.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from cronflow.errors import CronflowError

log = logging.getLogger("cronflow")

UNIT_NAME = "cronflow.service"
WORKER_UNIT_NAME = "cronflow-worker.service"
# `cronflow worker --stop-timeout`'s default: the unit gives the worker that plus the margin.
WORKER_STOP_TIMEOUT = 60.0
# Where the worker unit reads the broker URL and the shared secret: secrets stay out of the unit
# file (which `systemctl cat` shows to anyone) and out of the job file, which may be shared.
WORKER_ENV_FILE = "%h/.config/cronflow/worker.env"

# systemd may stop the unit only after the daemon's own grace has run out and it has had time to
# stop the jobs and record them `canceled`; at TimeoutStopSec systemd SIGKILLs everything left.
STOP_MARGIN_SEC = 30


def quote_word(word: str, *, exec_arg: bool = False) -> str:
    """Quote one word for a unit file per systemd.syntax(7), so that systemd reads back `word`.

    `%` starts a specifier everywhere, so it is doubled; in the arguments of Exec*= lines `$`
    starts a variable, so it is doubled too (not in the executable, nor in Environment=). A word
    with a space, quote, backslash or control character goes in double quotes, C-escaped.
    """
    word = word.replace("%", "%%")
    if exec_arg:
        word = word.replace("$", "$$")
    if word and not any(c.isspace() or c in "\"'\\;" or _is_control(c) for c in word):
        return word
    escaped = "".join(
        f"\\x{ord(c):02x}" if _is_control(c) else "\\" + c if c in '"\\' else c for c in word
    )
    return f'"{escaped}"'


def _is_control(char: str) -> bool:
    return ord(char) < 0x20 or ord(char) == 0x7F


def _check_executable(path: str) -> None:
    """systemd refuses an executable name holding a quote, backslash or control character.

    The refusal is fatal ("Executable name contains special characters", measured with
    systemd-analyze verify on systemd 252) however the name is quoted, so say so now.
    """
    if any(c in "\"'\\" or _is_control(c) for c in path):
        raise CronflowError(
            f"systemd cannot start an executable whose path holds a quote, backslash or control "
            f"character: {path!r}; install cronflow under another path"
        )


def unit_text(
    executable: str,
    config_path: str,
    state_dir: str | None,
    stop_timeout: float,
    watchdog_sec: int = 60,
    *,
    documentation: str | None = None,
) -> str:
    """The text of the user unit `cronflow.service` that runs `cronflow daemon` under systemd.

    There is no After=: a user manager starts services after basic.target by default, and
    ordering after default.target, which pulls this unit in, would make an ordering cycle.
    """
    executable = os.path.abspath(executable)
    _check_executable(executable)
    config = quote_word(os.path.abspath(config_path), exec_arg=True)
    exec_start = f"{quote_word(executable)} --config {config} daemon"
    unit = ["[Unit]", "Description=cronflow job scheduler"]
    if documentation:
        unit.append(f"Documentation={documentation}")
    service = ["", "[Service]", "Type=notify", "NotifyAccess=main", f"ExecStart={exec_start}"]
    # The daemon re-reads the job file on SIGHUP: `systemctl --user reload cronflow`.
    service.append("ExecReload=kill -HUP $MAINPID")
    if state_dir is not None:
        env = f"CRONFLOW_STATE_DIR={os.path.abspath(state_dir)}"
        service.append(f"Environment={quote_word(env)}")
    service += [
        "Restart=on-failure",
        "RestartSec=5s",
        # SIGTERM goes to the daemon alone, which stops its jobs' process groups itself; whatever
        # is left at TimeoutStopSec is SIGKILLed, jobs included.
        "KillMode=mixed",
        f"TimeoutStopSec={math.ceil(stop_timeout) + STOP_MARGIN_SEC}s",
    ]
    if watchdog_sec > 0:
        service.append(f"WatchdogSec={watchdog_sec}s")
    install = ["", "[Install]", "WantedBy=default.target"]
    return "\n".join(unit + service + install) + "\n"


def worker_unit_text(
    executable: str,
    config_path: str,
    queues: Sequence[str],
    concurrency: int = 1,
    stop_timeout: float = WORKER_STOP_TIMEOUT,
) -> str:
    """The text of the user unit `cronflow-worker.service` that runs `cronflow worker`.

    Type=simple: the worker does not speak sd_notify. KillMode=mixed as for the daemon: SIGTERM
    to the worker alone, which gives its attempts `stop_timeout` and reports them.
    """
    executable = os.path.abspath(executable)
    _check_executable(executable)
    config = quote_word(os.path.abspath(config_path), exec_arg=True)
    words = [quote_word(executable), "--config", config, "worker"]
    for queue in queues:
        words += ["--queue", quote_word(queue, exec_arg=True)]
    words += ["--concurrency", str(concurrency)]
    description = f"cronflow worker (queues: {', '.join(queues)})".replace("%", "%%")
    unit = ["[Unit]", f"Description={description}"]
    service = [
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(words)}",
        "# The broker and the shared secret, when not in the job file's [executor] table, as",
        "#   CRONFLOW_BROKER_URL=rediss://cronflow:PASSWORD@db1:6380/0",
        "#   CRONFLOW_WORKER_SECRET=...",
        "# in this file, readable by you alone (chmod 600); the leading - makes it optional.",
        f"EnvironmentFile=-{WORKER_ENV_FILE}",
        "Restart=on-failure",
        "RestartSec=5s",
        "KillMode=mixed",
        f"TimeoutStopSec={math.ceil(stop_timeout) + STOP_MARGIN_SEC}s",
    ]
    install = ["", "[Install]", "WantedBy=default.target"]
    return "\n".join(unit + service + install) + "\n"


def unit_path(xdg_config_home: Path, name: str = UNIT_NAME) -> Path:
    """Where systemd looks for the user's own units."""
    return Path(xdg_config_home) / "systemd" / "user" / name


def install_hint(service: str = "cronflow") -> str:
    """What to run after writing the unit to start it now, at every boot, and to watch it."""
    return (
        f"To start {service} now and at every login:\n"
        "  systemctl --user daemon-reload\n"
        f"  systemctl --user enable --now {service}\n"
        "To keep it running when you are logged out (and start it at boot):\n"
        "  loginctl enable-linger $USER\n"
        "To follow its log:\n"
        f"  journalctl --user -u {service} -f\n"
    )


class Notifier:
    """Sends sd_notify(3) messages to systemd; does nothing when not started by systemd.

    A failure to send is logged and swallowed: a missing socket must never stop the daemon.
    """

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self.enabled = bool(address)
        self._failed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Read NOTIFY_SOCKET, and WATCHDOG_USEC when WATCHDOG_PID is unset or is us."""
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        watchdog = int(usec) if usec.isdigit() and int(usec) > 0 and ours else None
        return cls(environ.get("NOTIFY_SOCKET") or None, watchdog)

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, text: str = "", **fields: object) -> None:
        """Send `text` and `KEY=VALUE` lines as one datagram; a no-op when disabled."""
        if not self.enabled:
            return
        lines = [text] if text else []
        lines += [f"{key}={value}" for key, value in fields.items()]
        address = self.address or ""
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), address)
        except OSError as exc:
            # Warn once; after that (a watchdog ping every few seconds) only at debug level.
            log.log(logging.DEBUG if self._failed else logging.WARNING, "sd_notify: %s", exc)
            self._failed = True

    def ready(self, status: str = "") -> None:
        self.send(READY=1, **({"STATUS": _one_line(status)} if status else {}))

    def status(self, text: str) -> None:
        self.send(STATUS=_one_line(text))

    def stopping(self) -> None:
        self.send(STOPPING=1)

    def watchdog(self) -> None:
        self.send(WATCHDOG=1)


def _one_line(text: str) -> str:
    """STATUS= ends at the newline, so a multi-line summary is folded into one line."""
    return " ".join(text.split())
