"""The user unit `cronflow systemd install` writes, and the sd_notify messages the daemon sends."""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cronflow.errors import CronflowError
from cronflow.systemd import (
    Notifier,
    install_hint,
    quote_word,
    unit_path,
    unit_text,
    worker_unit_text,
)

# --- the unit file --------------------------------------------------------------------------


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(text)
    return {name: dict(parser[name]) for name in parser.sections()}


def systemd_words(value: str) -> list[str]:
    """Split a unit-file value into words the way systemd does (systemd.syntax(7)).

    Specifiers are expanded first (only `%%` is expected here), then the value is split on
    whitespace, honouring double and single quotes and C-style backslash escapes.
    """
    value = value.replace("%%", "\0")
    assert "%" not in value, f"unescaped specifier in {value!r}"
    value = value.replace("\0", "%")
    simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", " ": " "}
    words: list[str] = []
    word: str | None = None
    quote = None
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            nxt = value[i + 1]
            if nxt == "x":
                char, i = chr(int(value[i + 2 : i + 4], 16)), i + 3
            else:
                char, i = simple[nxt], i + 1
            word = (word or "") + char
        elif quote and char == quote:
            quote = None
        elif not quote and char in "\"'":
            quote, word = char, word or ""
        elif not quote and char in " \t":
            if word is not None:
                words.append(word)
            word = None
        else:
            word = (word or "") + char
        i += 1
    assert quote is None, f"unterminated quote in {value!r}"
    if word is not None:
        words.append(word)
    return words


def exec_argv(value: str) -> list[str]:
    """ExecStart= words as the process sees them: `$$` becomes `$` in the arguments only."""
    first, *rest = systemd_words(value)
    return [first, *(arg.replace("$$", "$") for arg in rest)]


def test_unit_has_every_key_with_absolute_paths() -> None:
    unit = parse_unit(
        unit_text("/opt/cf/bin/cronflow", "/home/u/.config/cronflow/c.toml", None, 30)
    )

    assert unit["Unit"] == {"Description": "cronflow job scheduler"}
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert exec_argv(service["ExecStart"]) == [
        "/opt/cf/bin/cronflow",
        "--config",
        "/home/u/.config/cronflow/c.toml",
        "daemon",
    ]
    assert service["ExecReload"] == "kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5s"
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] == "60s"
    assert service["WatchdogSec"] == "60s"
    assert "Environment" not in service
    assert unit["Install"] == {"WantedBy": "default.target"}


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    service = parse_unit(unit_text("bin/cronflow", "c.toml", "state", 30))["Service"]

    assert exec_argv(service["ExecStart"])[::2] == [
        str(tmp_path / "bin/cronflow"),
        str(tmp_path / "c.toml"),
    ]
    assert systemd_words(service["Environment"]) == [f"CRONFLOW_STATE_DIR={tmp_path / 'state'}"]


@pytest.mark.parametrize(
    ("stop_timeout", "expected"), [(30, "60s"), (12.5, "43s"), (0, "30s"), (600, "630s")]
)
def test_stop_timeout_leaves_the_daemon_its_grace_and_a_margin(
    stop_timeout: float, expected: str
) -> None:
    service = parse_unit(unit_text("/bin/cf", "/c.toml", None, stop_timeout))["Service"]
    assert service["TimeoutStopSec"] == expected


def test_watchdog_and_documentation_are_optional() -> None:
    without = parse_unit(unit_text("/bin/cf", "/c.toml", None, 30, watchdog_sec=0))
    assert "WatchdogSec" not in without["Service"]
    assert "Documentation" not in without["Unit"]

    with_both = parse_unit(
        unit_text("/bin/cf", "/c.toml", None, 30, 120, documentation="https://example.org/cf")
    )
    assert with_both["Service"]["WatchdogSec"] == "120s"
    assert with_both["Unit"]["Documentation"] == "https://example.org/cf"


def test_worker_unit_runs_cronflow_worker_on_its_queues() -> None:
    text = worker_unit_text("/opt/cf/bin/cronflow", "/home/u/c.toml", ["gpu", "default"], 4)
    unit = parse_unit(text)

    assert unit["Unit"] == {"Description": "cronflow worker (queues: gpu, default)"}
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert exec_argv(service["ExecStart"]) == [
        "/opt/cf/bin/cronflow", "--config", "/home/u/c.toml", "worker",
        "--queue", "gpu", "--queue", "default", "--concurrency", "4",
    ]  # fmt: skip
    assert service["EnvironmentFile"] == "-%h/.config/cronflow/worker.env"
    assert (service["Restart"], service["KillMode"]) == ("on-failure", "mixed")
    assert service["TimeoutStopSec"] == "90s"  # the worker's 60s stop timeout and a margin
    assert "WatchdogSec" not in service and "NotifyAccess" not in service
    assert unit["Install"] == {"WantedBy": "default.target"}
    # Where to put the secrets is said in the unit, never the secrets themselves.
    assert "# CRONFLOW_BROKER_URL=" not in text and "#   CRONFLOW_BROKER_URL=" in text
    assert "CRONFLOW_WORKER_SECRET" in text
    assert unit_path(Path("/x"), "cronflow-worker.service") == Path(
        "/x/systemd/user/cronflow-worker.service"
    )
    assert "systemctl --user enable --now cronflow-worker" in install_hint("cronflow-worker")


AWKWARD_PATHS = [
    "/home/jo smith/cronflow.toml",
    "/tmp/100% sure/c.toml",
    "/tmp/$HOME/${USER}/c.toml",
    '/tmp/say "hi"/c.toml',
    "/tmp/o'brien/c.toml",
    "/tmp/back\\slash/c.toml",
    "/tmp/tab\there/c.toml",
    "/tmp/semi;colon/c.toml",
    "/tmp/new\nline/c.toml",
    "/tmp/ünïcode ☃/c.toml",
]


@pytest.mark.parametrize("path", AWKWARD_PATHS)
def test_awkward_paths_survive_systemd_quoting(path: str) -> None:
    service = parse_unit(unit_text("/opt/my tools/cronflow", path, path, 30))["Service"]

    assert exec_argv(service["ExecStart"]) == ["/opt/my tools/cronflow", "--config", path, "daemon"]
    # Environment= expands specifiers but not variables: `$` stays as it is.
    assert systemd_words(service["Environment"]) == [f"CRONFLOW_STATE_DIR={path}"]


@pytest.mark.parametrize("path", AWKWARD_PATHS)
def test_worker_unit_quotes_awkward_paths(path: str) -> None:
    service = parse_unit(worker_unit_text("/opt/my tools/cronflow", path, ["q"], 1))["Service"]
    argv = exec_argv(service["ExecStart"])
    assert argv == ["/opt/my tools/cronflow", "--config", path, "worker", "--queue", "q",
                    "--concurrency", "1"]  # fmt: skip


def test_quoting_is_minimal_for_plain_words() -> None:
    assert quote_word("/usr/bin/cronflow") == "/usr/bin/cronflow"
    assert quote_word("/a b") == '"/a b"'
    assert quote_word("/100%") == "/100%%"
    assert quote_word("/$x", exec_arg=True) == "/$$x"
    assert quote_word("") == '""'


@pytest.mark.parametrize("bad", ['/opt/"q"/cronflow', "/home/o'brien/cronflow", "/a\\b/cronflow"])
def test_an_executable_systemd_refuses_is_refused_here(bad: str) -> None:
    with pytest.raises(CronflowError, match="systemd cannot start an executable"):
        unit_text(bad, "/c.toml", None, 30)


def test_unit_path_and_install_hint(tmp_path: Path) -> None:
    assert unit_path(tmp_path) == tmp_path / "systemd" / "user" / "cronflow.service"
    hint = install_hint()
    for command in (
        "systemctl --user daemon-reload",
        "systemctl --user enable --now cronflow",
        "loginctl enable-linger $USER",
        "journalctl --user -u cronflow -f",
    ):
        assert command in hint


# --- systemd-analyze verify -----------------------------------------------------------------
#
# `systemd-analyze verify` exits 0 even for unknown keys and bad values, so the verdict is its
# output. `--user` needs XDG_RUNTIME_DIR (else "Failed to initialize manager"), so the test gives
# it a private one; if the user manager still cannot start, it falls back to system mode, which
# parses the same [Unit]/[Service]/[Install] keys. Every line that names the unit fails the test;
# other lines (none seen on systemd 252 here) would be host noise and are only reported.


def verify(unit: Path, runtime_dir: Path) -> tuple[int, list[str], list[str]]:
    """Run systemd-analyze verify on `unit`; return its exit code, its lines about the unit and
    any other lines."""
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir), "SYSTEMD_LOG_COLOR": "0"}
    for mode in (["--user"], []):
        done = subprocess.run(
            ["systemd-analyze", "verify", *mode, str(unit)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        lines = (done.stdout + done.stderr).splitlines()
        if not any("Failed to initialize manager" in line for line in lines):
            break
    about = [line for line in lines if "cronflow" in line or str(unit) in line]
    return done.returncode, about, [line for line in lines if line not in about]


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


@pytest.fixture
def awkward_executable(tmp_path: Path) -> Iterator[Path]:
    """A real executable under a path with a space, a specifier (`%t`, the runtime directory), a
    `$` and a `;`, which systemd-analyze checks exists: a misquoted ExecStart names another
    file and fails."""
    folder = tmp_path / "my bin 50%t $x;y"
    folder.mkdir()
    executable = folder / "cronflow"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    yield executable


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(tmp_path: Path, awkward_executable: Path) -> None:
    unit = tmp_path / "cronflow.service"
    unit.write_text(
        unit_text(str(awkward_executable), str(tmp_path / "my config/c.toml"), "/st ate", 30)
    )

    code, about, noise = verify(unit, tmp_path / "runtime")

    assert about == [], "\n".join(about)
    assert code == 0, "\n".join(noise)


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_worker_unit(tmp_path: Path, awkward_executable: Path) -> None:
    unit = tmp_path / "cronflow-worker.service"
    unit.write_text(
        worker_unit_text(str(awkward_executable), str(tmp_path / "c.toml"), ["gpu", "db.v2"], 8)
    )

    code, about, noise = verify(unit, tmp_path / "runtime")

    assert about == [], "\n".join(about)
    assert code == 0, "\n".join(noise)


@needs_systemd_analyze
def test_systemd_analyze_check_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: an unknown key and a missing executable are caught."""
    unit = tmp_path / "cronflow.service"
    text = unit_text(str(tmp_path / "missing"), "/c.toml", None, 30)
    unit.write_text(text.replace("KillMode=mixed", "KillMode=mixed\nFrobnicate=yes"))

    _, about, _ = verify(unit, tmp_path / "runtime")

    assert any("Frobnicate" in line for line in about), about
    assert any("missing" in line for line in about), about


# --- sd_notify ------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in tmp_path, standing in for systemd's NOTIFY_SOCKET."""
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        yield server, path


def received(server: socket.socket) -> str:
    return server.recv(4096).decode()


def test_notifier_sends_each_message_as_one_datagram(
    notify_socket: tuple[socket.socket, str],
) -> None:
    server, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled

    notifier.ready("3 jobs, next fire 12:00")
    assert received(server) == "READY=1\nSTATUS=3 jobs, next fire 12:00"
    notifier.ready()
    assert received(server) == "READY=1"
    notifier.status("reloading\njob file")
    assert received(server) == "STATUS=reloading job file"
    notifier.watchdog()
    assert received(server) == "WATCHDOG=1"
    notifier.stopping()
    assert received(server) == "STOPPING=1"
    notifier.send("EXTEND_TIMEOUT_USEC=1000000", STATUS="stopping")
    assert received(server) == "EXTEND_TIMEOUT_USEC=1000000\nSTATUS=stopping"


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"cronflow-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)

        Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).ready("up")

        assert received(server) == "READY=1\nSTATUS=up"


def test_notifier_without_notify_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("a disabled notifier must not open a socket")

    monkeypatch.setattr(socket, "socket", no_socket)
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "1000000"}):
        notifier = Notifier.from_env(environ)
        assert not notifier.enabled
        notifier.ready("up")
        notifier.status("x")
        notifier.watchdog()
        notifier.stopping()
        assert notifier.watchdog_interval() is None


def test_notifier_defaults_to_the_process_environment(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, path = notify_socket
    assert not Notifier.from_env().enabled  # conftest removes NOTIFY_SOCKET
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    Notifier.from_env().stopping()
    assert received(server) == "STOPPING=1"


def test_a_vanished_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})

    with caplog.at_level(logging.DEBUG, logger="cronflow"):
        notifier.ready("up")
        notifier.watchdog()
        Notifier.from_env(
            {"NOTIFY_SOCKET": "@cronflow-test-nobody-" + secrets.token_hex(8)}
        ).ready()

    levels = [(r.name, r.levelno) for r in caplog.records]
    assert levels == [
        ("cronflow", logging.WARNING),
        ("cronflow", logging.DEBUG),  # a watchdog ping every few seconds must not flood the log
        ("cronflow", logging.WARNING),
    ]
    assert "sd_notify" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "5"}, 2.5e-6),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "{pid}"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "{other}"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_our_pid(
    environ: dict[str, str], expected: float | None
) -> None:
    ours = {
        key: value.format(pid=os.getpid(), other=os.getpid() + 1) for key, value in environ.items()
    }
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/run/user/1000/systemd/notify", **ours})
    assert notifier.watchdog_interval() == expected
