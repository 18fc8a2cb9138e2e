"""`KEY=VALUE` assignments to one job: `add --set`, `cronflow set` and `cronflow unset`.

A VALUE is read as a TOML value when it parses as one (`3`, `true`, `["a", "b"]`,
`{ A = "1" }`, `"quoted"`), else taken as a string (`90s`, `/usr/bin`, `echo hi`). A dotted
KEY reaches into a table: `env.PATH=/usr/bin` (an `env.NAME` value is always a string, as env
values must be: `env.PORT=8080` is "8080"). Edits go through tomlkit, so every other byte of
the job file stays as it was; the result is validated before the caller writes it atomically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cronflow.config import parse_config
from cronflow.editing import set_in
from cronflow.errors import ConfigError, CronflowError

_KEY_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


@dataclass(frozen=True)
class Assignment:
    key: tuple[str, ...]  # ("env", "PATH")
    value: Any
    given: str  # as typed, for messages

    @property
    def name(self) -> str:
        return ".".join(self.key)


def toml_value(text: str) -> Any:
    """`text` as a TOML value when it parses as one, else the string itself."""
    import tomli

    try:
        return tomli.loads(f"v = {text}")["v"]
    except tomli.TOMLDecodeError:
        return text


def parse_key(text: str, option: str) -> tuple[str, ...]:
    if not _KEY_RE.fullmatch(text):
        raise CronflowError(f"{option}: {text!r} is not a key (like retries or env.PATH)", 2)
    return tuple(text.split("."))


def parse_assignment(text: str, option: str = "--set") -> Assignment:
    """`KEY=VALUE` → Assignment; a usage error (exit 2) without `=` or with a bad key."""
    key, eq, value = text.partition("=")
    if not eq:
        raise CronflowError(f"{option}: expected KEY=VALUE, got {text!r}", 2)
    path = parse_key(key.strip(), option)
    parsed = toml_value(value)
    if path[0] == "env" and len(path) == 2 and not isinstance(parsed, str):
        parsed = value  # env values are strings: env.PORT=8080 means "8080"
    return Assignment(path, parsed, text)


def parse_assignments(texts: Sequence[str], option: str = "--set") -> list[Assignment]:
    """Each assignment once: the same key twice is a usage error."""
    found: dict[tuple[str, ...], Assignment] = {}
    for text in texts:
        each = parse_assignment(text, option)
        if each.key in found:
            raise CronflowError(f"{option}: {each.name} is given twice", 2)
        found[each.key] = each
    return list(found.values())


def _job_table(doc: Any, name: str, path: str) -> Any:
    from cronflow.config import suggest

    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or name not in jobs:
        names = list(jobs) if isinstance(jobs, dict) else []
        raise CronflowError(f"no job named {name!r} in {path}{suggest(name, names)}")
    return jobs[name]


def _parse_doc(text: str, path: str) -> Any:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    parse_config(text, path)  # a broken file is reported as it is on disk, and not edited
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:  # valid for tomli but not tomlkit: leave it to `edit`
        raise CronflowError(
            f"{path}: cannot edit automatically ({exc}); use `cronflow edit`"
        ) from None


def set_keys(text: str, name: str, assignments: Sequence[Assignment], path: str) -> str:
    """`text` with each assignment made in `[jobs.NAME]`, the rest byte for byte; validated."""
    doc = _parse_doc(text, path)
    table = _job_table(doc, name, path)
    for assignment in assignments:
        try:
            set_in(table, assignment.key, assignment.value)
        except ValueError as exc:
            raise CronflowError(f"{assignment.name}: {exc}", 2) from None
    return _validated(doc.as_string(), name, path, "set")


def unset_keys(text: str, name: str, keys: Sequence[tuple[str, ...]], path: str) -> str:
    """`text` without the keys in `[jobs.NAME]`; a key the job does not set is refused."""
    doc = _parse_doc(text, path)
    table = _job_table(doc, name, path)
    for key in keys:
        inner = table
        for part in key[:-1]:
            inner = inner.get(part) if isinstance(inner, dict) else None
        if not isinstance(inner, dict) or key[-1] not in inner:
            raise CronflowError(f"job {name!r} does not set {'.'.join(key)} in {path}")
        del inner[key[-1]]
    return _validated(doc.as_string(), name, path, "unset")


def _validated(result: str, name: str, path: str, verb: str) -> str:
    try:
        parse_config(result, path)
    except ConfigError as exc:
        prefix = f"jobs.{name}."
        lines = dict.fromkeys(
            f"{p.key.removeprefix(prefix)}: {p.message}"
            if p.key and p.key.startswith(prefix)
            else str(p)
            for p in exc.problems
        )
        raise CronflowError(
            f"cannot {verb} in job {name!r}; {path} is unchanged:\n  " + "\n  ".join(lines), 2
        ) from None
    return result
