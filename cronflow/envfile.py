"""Env files (SPEC §9): dotenv files that hold a job's secrets, and the masking of their values.

A job's `env_file` is read at each attempt (a rotated token needs no reload) with python-dotenv,
interpolation off, so `$` in a password stays a `$`. The values it gives are secrets: every byte
cronflow stores or shows of a job's output, hooks' output, `CRONFLOW_LOG_TAIL` and notes goes
through a `Masker` that writes `***` in their place. Values shorter than MIN_MASKED characters
are not masked: `1`, `on` or `yes` would blank out ordinary output, and are no secrets.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping

from cronflow.errors import CronflowError

MASK = b"***"
#: Values shorter than this are left as they are (say so in the README).
MIN_MASKED = 4
#: A cut tail may begin with the end of a secret: an end this long or longer is masked too.
MIN_PARTIAL = 2


def mode_problem(path: str, st: os.stat_result) -> str | None:
    """Why an env file with this stat may not be used, or None.

    Others may not read it (it holds secrets); group and others may not write it, and only you
    or root may own it: whoever changes it sets your jobs' environment (PATH, LD_PRELOAD…).
    """
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid not in (os.geteuid(), 0):
        return f"{path} is owned by another user (uid {st.st_uid})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o004:
        return f"{path} is readable by others (mode {mode:04o}); run chmod o-rwx {path}"
    if mode & 0o022:
        return f"{path} is writable by others (mode {mode:04o}); run chmod go-w {path}"
    return None


def check(path: str) -> str | None:
    """What is wrong with the env file at `path` (for `validate`), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    return mode_problem(path, st)


def read(path: str) -> dict[str, str]:
    """The variables of one env file; CronflowError (exit 2) when it is missing or unsafe.

    The mode is checked on the open file, so a file swapped after the check is never read.
    `KEY` lines without `=` carry no value and are left out.
    """
    from dotenv import dotenv_values

    try:
        with open(path, encoding="utf-8") as stream:
            problem = mode_problem(path, os.fstat(stream.fileno()))
            if problem:
                raise CronflowError(f"env_file {problem}", 2)
            values = dotenv_values(stream=stream, interpolate=False)
    except FileNotFoundError:
        raise CronflowError(f"env_file {path}: no such file", 2) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CronflowError(f"env_file {path}: cannot read: {why}", 2) from None
    return {key: value for key, value in values.items() if value is not None}


def read_all(paths: Iterable[str]) -> dict[str, str]:
    """The variables of `paths` in order, a later file winning over an earlier one."""
    merged: dict[str, str] = {}
    for path in paths:
        merged.update(read(path))
    return merged


class Masker:
    """Writes `***` in place of secret values; secrets are given as str and matched as bytes.

    A multi-line value is also masked line by line, since output arrives a line at a time.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        secrets: set[bytes] = set()
        for value in values:
            for piece in (value, *value.splitlines()):
                piece = piece.strip("\r\n")
                if len(piece) >= MIN_MASKED:
                    secrets.add(piece.encode("utf-8"))
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))
        self._pattern = (
            re.compile(b"|".join(re.escape(s) for s in self.secrets)) if self.secrets else None
        )

    @classmethod
    def of(cls, values: Mapping[str, str]) -> Masker:
        return cls(values.values())

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, data: bytes) -> bytes:
        return self._pattern.sub(MASK, data) if self._pattern else data

    def mask_text(self, text: str | None) -> str | None:
        if text is None or self._pattern is None:
            return text
        return self.mask(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def mask_tail(self, tail: bytes, cut: bool) -> bytes:
        """The last bytes of the output, masked; when `cut`, a secret's end at the very start
        (the rest of it fell before the tail) is masked too."""
        if self._pattern is None:
            return tail
        if cut:
            for secret in self.secrets:
                for size in range(len(secret) - 1, MIN_PARTIAL - 1, -1):
                    if tail.startswith(secret[-size:]):
                        tail = MASK + tail[size:]
                        break
                else:
                    continue
                break
        return self.mask(tail)
