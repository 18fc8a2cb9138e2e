"""The two user-facing error types; the CLI shows them in one place with their exit code."""

from __future__ import annotations

from typing import NamedTuple


class CronflowError(Exception):
    """A user-facing error: a one-line message and the exit code the CLI ends with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Problem(NamedTuple):
    """One problem in a job file, located by file, line and dotted key. A NamedTuple, not a
    dataclass: every command imports this module, and a frozen dataclass costs about a
    millisecond to create (it compiles its methods), a NamedTuple a fifth of that."""

    path: str
    line: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class NoJobFile(CronflowError):
    """No job file at the path; `init` or `add` creates it (with the same -c, if one was given)."""

    def __init__(self, path: str, create: str = "cronflow init` or `cronflow add") -> None:
        super().__init__(f"no job file at {path}; create one with `{create}`")
        self.path = path


class ConfigError(CronflowError):
    """An invalid job file: every problem found, reported together (exit 2)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems), exit_code=2)

    def summary(self) -> str:
        """One line for a log or a status: the problem, or how many and the first."""
        if len(self.problems) == 1:
            return str(self.problems[0])
        return f"{len(self.problems)} problems; first: {self.problems[0]}"


class OutputLost(CronflowError):
    """A remote attempt's output the store refused until past the deadline: what was held is
    given up (a marker stands for it), and a job still running on its worker is stopped."""


class Detached(BaseException):
    """A stopping daemon leaves a remote attempt running to the daemon that starts next, which
    follows it to its end. A BaseException, so that no `except Exception` records it as failed."""
