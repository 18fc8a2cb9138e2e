"""Round-trip edits of the job file: `init`, `add`, `remove` and the `edit` session.

Text in, text out: every edit keeps the rest of the file byte for byte (comments, order,
spacing), the whole result is validated with `config.parse_config` before anything is written,
and writes are atomic (temp file in the same folder, fsync, rename). tomlkit, which we use to
write correctly quoted TOML, is imported only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cronflow.config import parse_config
from cronflow.errors import ConfigError, CronflowError, Problem

STARTER = """\
# cronflow job file: one [jobs.NAME] table per job, the order between them with `after`.
# `cronflow validate` checks this file, `cronflow list` shows the jobs, `cronflow edit`
# opens it in your editor (and refuses to save a broken file), `cronflow add` appends a job.
# Everything below is commented out: remove the leading "# " of a block to use it.

# [defaults]                  # any job key but schedule/after/command/description
# timezone = "Europe/Berlin"  # IANA zone schedules are read in (default: the system's zone)
# retries = 1                 # extra attempts after a failed one
# retry_delay = "30s"         # wait before the first retry; each further wait doubles

# [daemon]
# max_parallel = 4            # jobs running at once (default 32)
# stop_timeout = "60s"        # on SIGTERM, running jobs get this long to finish
# keep_history = "90d"        # older runs and their logs are pruned

# A scheduled job. Durations: "90s", "5m", "1h30m", "2d".
# [jobs.backup]
# description = "Back up ~/docs every night"
# schedule = "0 3 * * *"      # minute hour day-of-month month day-of-week; or @daily, @every 15m
# command = "restic backup ~/docs"
# retries = 2                 # two more attempts after a failure (after 30s, then 60s)
# timeout = "2h"              # per attempt; then the job's processes are stopped
# catchup = "latest"          # asleep at 03:00? run once when the machine wakes
# on_failure = 'notify-send "cronflow: $CRONFLOW_JOB failed"'

# A job that runs once `backup` has succeeded: jobs with `after` have no schedule of their own.
# [jobs.report]
# after = ["backup"]
# run_if = "success"          # success (default) | failure | always
# command = "echo backup for $CRONFLOW_LOGICAL_DATE done"
"""


@dataclass(frozen=True)
class NewJob:
    """What `cronflow add` puts into a new `[jobs.NAME]` table (unset keys stay out)."""

    name: str
    command: str
    schedule: str | None = None
    after: tuple[str, ...] = ()
    retries: int | None = None
    timeout: str | None = None
    on_failure: str | None = None
    description: str | None = None
    # Any other keys (the other options of `add`, and `--set KEY=VALUE`), in order:
    # (("env", "PATH"), "/usr/bin") sets env.PATH.
    extra: tuple[tuple[tuple[str, ...], Any], ...] = ()
    # Where each key of `extra` came from on the command line, to say where a problem is:
    # (("timezone", "--timezone"), ("retry_backoff", "--set retry_backoff")).
    origins: tuple[tuple[str, str], ...] = ()


# Which command-line option each field of NewJob comes from, to say where a problem is.
_OPTIONS = {
    "command": "--command",
    "schedule": "--schedule",
    "after": "--after",
    "retries": "--retries",
    "timeout": "--timeout",
    "on_failure": "--on-failure",
    "description": "--description",
}


# -- add -------------------------------------------------------------------------------------


def job_block(job: NewJob) -> str:
    """The `[jobs.NAME]` table for `job`, as TOML text ending in a newline."""
    import tomlkit

    table = tomlkit.table()
    if job.description is not None:
        table.add("description", toml_string(job.description))
    if job.schedule is not None:
        table.add("schedule", toml_string(job.schedule))
    if job.after:
        after = tomlkit.array()
        after.extend(toml_string(name) for name in job.after)
        table.add("after", after)
    table.add("command", toml_string(job.command))
    if job.retries is not None:
        table.add("retries", job.retries)
    if job.timeout is not None:
        # "90" typed on the command line means 90 seconds; in a TOML string it would not.
        table.add("timeout", int(job.timeout) if job.timeout.isdigit() else job.timeout)
    if job.on_failure is not None:
        table.add("on_failure", toml_string(job.on_failure))
    for key, value in job.extra:
        try:
            set_in(table, key, value)
        except ValueError as exc:
            raise CronflowError(f"--set {'.'.join(key)}: {exc}", 2) from None
    doc = tomlkit.document()
    jobs = tomlkit.table(is_super_table=True)
    jobs.add(job.name, table)
    doc.add("jobs", jobs)
    return doc.as_string().lstrip("\n")


def set_in(table: Any, key: tuple[str, ...], value: Any) -> None:
    """Set `key` (a dotted path) to `value` in a tomlkit table, creating inline tables on the
    way; ValueError when a part of the path holds a value that is not a table."""
    import tomlkit

    head, *rest = key
    if not rest:
        item = toml_string(value) if isinstance(value, str) else tomlkit.item(value)
        if head in table or not _insert_after_last_key(table, head, item):
            table[head] = item
        return
    inner = table.get(head)
    if inner is None:  # filled before it is attached, so that tomlkit lays out the line whole
        fresh = tomlkit.inline_table()
        set_in(fresh, tuple(rest), value)
        table[head] = fresh
    elif isinstance(inner, dict):
        set_in(inner, tuple(rest), value)
    else:
        raise ValueError(f"{head} is not a table")


def _insert_after_last_key(table: Any, key: str, item: Any) -> bool:
    """Put a new key right after the table's last key rather than at the very end of its body:
    tomlkit counts the blank lines and comments before the next table as part of this one, and
    a comment like "# the report follows" must stay above the table it introduces."""
    from tomlkit.items import AoT, Table

    container = getattr(table, "value", None) if isinstance(table, Table) else None
    body = getattr(container, "body", None)
    if container is None or body is None or not hasattr(container, "_insert_after"):
        return False
    keys = [k for k, i in body if k is not None and not isinstance(i, Table | AoT)]
    if not keys:
        return False
    container._insert_after(keys[-1], key, item)  # tomlkit 0.13-0.15; else appended
    return True


def toml_string(value: str) -> Any:
    """A tomlkit string quoted the most readable way that needs no escapes: "basic", then
    'literal' (shell commands with " or \\), then '''multi-line literal'''."""
    import tomlkit

    if any(ord(ch) < 32 and ch not in "\t\n" or ord(ch) == 127 for ch in value):
        return tomlkit.string(value)  # control characters need escapes
    if not any(ch in value for ch in '"\\\n'):
        return tomlkit.string(value)
    if "'" not in value and "\n" not in value:
        return tomlkit.string(value, literal=True)
    if "'''" not in value and value[-1:] != "'" and value[:1] != "\n":
        return tomlkit.string(value, literal=True, multiline=True)
    return tomlkit.string(value)


def add_job(text: str, job: NewJob, path: str) -> str:
    """`text` with `job` appended as a new table; every byte of `text` is kept.

    Refused (exit 1) when the name exists; a result that would not validate is a CronflowError
    (exit 2) naming the option or the file:line at fault.
    """
    raw = _raw_or_none(text)
    if raw is not None and job.name in _jobs(raw):
        raise CronflowError(f"a job named {job.name!r} already exists in {path}")
    result = append_block(text, job_block(job))
    try:
        parse_config(result, path)
    except ConfigError as exc:
        lines = _dedupe(_where(p, job) for p in exc.problems)
        raise CronflowError(
            f"cannot add job {job.name!r}; {path} is unchanged:\n  " + "\n  ".join(lines), 2
        ) from None
    return result


def append_block(text: str, block: str) -> str:
    """`text` followed by `block`, one blank line between, in the file's line-end style."""
    newline = "\r\n" if "\r\n" in text else "\n"
    if text and not text.endswith("\n"):
        text += newline
    if text.strip() and not text.endswith(newline * 2):
        text += newline
    return text + block.replace("\n", newline)


def _where(problem: Problem, job: NewJob) -> str:
    """A problem of the new job names the option it came from (`--retries`, or `--set
    retries` when it came from there); others keep file:line."""
    key, name = problem.key or "", job.name
    if key == f"jobs.{name}":
        return f"{name}: {problem.message}"
    if key.startswith(f"jobs.{name}."):
        field = key.removeprefix(f"jobs.{name}.").split(".")[0]
        option = dict(job.origins).get(field) or _OPTIONS.get(field) or f"--set {field}"
        return f"{option}: {problem.message}"
    return str(problem)


def _dedupe(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


# -- remove ----------------------------------------------------------------------------------


def remove_job(text: str, name: str, path: str) -> str:
    """`text` without the table `[jobs.NAME]` and its sub-tables, the rest byte for byte.

    The comment lines directly above the table's header (no blank line between) and directly
    below its last key go with it; comments separated by a blank line stay. Refused (exit 1)
    for an unknown name or while other jobs name it in `after`.
    """
    raw = _raw_or_none(text)
    if raw is None:
        parse_config(text, path)  # a TOML syntax error: raises it with its line
        raw = {}
    jobs = _jobs(raw)
    if name not in jobs:
        close = difflib.get_close_matches(name, list(jobs), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CronflowError(f"no job named {name!r} in {path}{hint}")
    users = sorted(n for n, body in jobs.items() if n != name and name in _after_of(body))
    if users:
        raise CronflowError(
            f"cannot remove {name!r}: {', '.join(users)} still name{'s' if len(users) == 1 else ''}"
            f" it in `after`; remove or change {'that job' if len(users) == 1 else 'those jobs'}"
            " first"
        )
    expected = _without(raw, name)
    result = _cut_tables(text, name)
    if _raw_or_none(result) != expected:
        result = _tomlkit_remove(text, name)  # e.g. the job was written with dotted keys
        if _raw_or_none(result) != expected:
            raise CronflowError(
                f"cannot remove {name!r} from {path} automatically (its keys are spread over the"
                " file); use `cronflow edit`"
            )
    try:
        parse_config(result, path)
    except ConfigError:
        parse_config(text, path)  # broken before: report the lines as they are on disk
        raise
    return result


def _raw_or_none(text: str) -> dict[str, Any] | None:
    import tomli

    try:
        return _normal(tomli.loads(text))
    except tomli.TOMLDecodeError:
        return None


def _normal(raw: dict[str, Any]) -> dict[str, Any]:
    """An empty `jobs` table means the same as none."""
    if raw.get("jobs") == {}:
        del raw["jobs"]
    return raw


def _jobs(raw: dict[str, Any]) -> dict[str, Any]:
    jobs = raw.get("jobs", {})
    return jobs if isinstance(jobs, dict) else {}


def _after_of(body: Any) -> list[str]:
    after = body.get("after", []) if isinstance(body, dict) else []
    return [after] if isinstance(after, str) else [a for a in after if isinstance(a, str)]


def _without(raw: dict[str, Any], name: str) -> dict[str, Any]:
    jobs = {k: v for k, v in _jobs(raw).items() if k != name}
    return _normal({**raw, "jobs": jobs})


_HEADER_RE = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_PART_RE = re.compile(r"""[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'""")


def _header_path(line: str) -> tuple[str, ...] | None:
    """`[jobs."a" . env]` → ("jobs", "a", "env"); None when the line is no table header."""
    match = _HEADER_RE.match(line)
    if not match:
        return None
    parts = _KEY_PART_RE.findall(match.group(1))
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _line_kinds(lines: list[str]) -> list[str | tuple[str, ...]]:
    """Per line: a header's key path, or "blank", "comment", "other" (keys, strings...)."""
    kinds: list[str | tuple[str, ...]] = []
    in_multiline = False
    for line in lines:
        stripped = line.strip()
        if in_multiline:
            kinds.append("other")
            in_multiline = line.count('"""') % 2 == 0 and line.count("'''") % 2 == 0
        elif not stripped:
            kinds.append("blank")
        elif stripped.startswith("#"):
            kinds.append("comment")
        elif (path := _header_path(line)) is not None:
            kinds.append(path)
        else:
            kinds.append("other")
            in_multiline = line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1
    return kinds


def _cut_tables(text: str, name: str) -> str:
    """Cut the header-introduced tables of job `name` out of `text` by lines."""
    lines = text.splitlines(keepends=True)
    kinds = _line_kinds(lines)
    headers = [i for i, k in enumerate(kinds) if isinstance(k, tuple)]
    spans = []
    for n, start in enumerate(headers):
        if kinds[start][:2] != ("jobs", name):
            continue
        stop = headers[n + 1] if n + 1 < len(headers) else len(lines)
        spans.append(_table_span(kinds, start, stop))
    cut = _merge(spans, kinds)
    kept = [line for i, line in enumerate(lines) if not any(a <= i < b for a, b in cut)]
    return "".join(kept)


def _table_span(kinds: list[Any], header: int, next_header: int) -> tuple[int, int]:
    """Lines [a, b) of the table at `header`: its leading comments, itself, its trailing
    comments, and the blank lines after it (so the spacing around it closes up)."""
    start = header
    while start > 0 and kinds[start - 1] == "comment":
        start -= 1
    # The comment block directly above the next header belongs to that header.
    body_end = next_header
    if next_header < len(kinds):
        while body_end > header + 1 and kinds[body_end - 1] == "comment":
            body_end -= 1
    last = max((i for i in range(header, body_end) if kinds[i] == "other"), default=header)
    end = last + 1
    while end < body_end and kinds[end] == "comment":
        end += 1
    while end < len(kinds) and kinds[end] == "blank":
        end += 1
    return start, end


def _merge(spans: list[tuple[int, int]], kinds: list[Any]) -> list[tuple[int, int]]:
    """Join touching spans; a span that reaches the end also takes the blank lines before it."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    if merged and merged[-1][1] == len(kinds):
        start = merged[-1][0]
        while start > 0 and kinds[start - 1] == "blank":
            start -= 1
        merged[-1] = (start, len(kinds))
    return merged


def _tomlkit_remove(text: str, name: str) -> str:
    """Structural removal for layouts the line cut cannot handle; the caller checks it."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
        del doc["jobs"][name]
    except (TOMLKitError, KeyError):
        return text
    return doc.as_string()


# -- writing ---------------------------------------------------------------------------------

# A new job file is 0644 masked by the umask, as a text editor would create it: the job file
# holds commands, not their output (the state folder, which holds logs, is 0700). An existing
# file keeps its mode, so a user who made it 0600 keeps it private.
NEW_FILE_MODE = 0o644


def write_atomic(path: Path, text: str, expected: str | None = None) -> None:
    """Replace the file at `path` with `text` in one step, keeping its mode (and, as root, its
    owner). A symlinked job file (dotfiles) is written through the link. Folders are created.

    `expected` is the text the edit started from: if the file no longer holds it right before
    the rename, someone changed it meanwhile and the write is refused (exit 1), so that their
    change is not lost. (A change in the microseconds between that check and the rename is
    not caught: there is no lock that every editor of the file would honour.)
    """
    _write(path, text, overwrite=True, expected=expected)


def write_new(path: Path, text: str) -> None:
    """Create `path` holding `text` atomically; refused (exit 1) if it exists, unchanged."""
    _write(path, text, overwrite=False)


class ChangedMeanwhile(CronflowError):
    """The job file changed between our read and our write; nothing was written."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} changed while cronflow was editing it; nothing written, run the command again"
        )
        self.path = path


def _write(path: Path, text: str, overwrite: bool, expected: str | None = None) -> None:
    try:
        _write_file(path, text, overwrite, expected)
    except OSError as exc:  # read-only folder, no such folder, a file where a folder should be
        where = exc.filename or path
        raise CronflowError(f"{where}: cannot write: {exc.strerror}; {path} is unchanged") from None


def _write_file(path: Path, text: str, overwrite: bool, expected: str | None) -> None:
    target = Path(os.path.realpath(path))
    _make_folders(target.parent)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None and not overwrite:
        raise CronflowError(f"{path} already exists; left unchanged")
    temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            if old is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0:
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            _check_unchanged(target, expected, path)
            os.replace(temp, target)
        else:
            _link_new(temp, target, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _fsync_folder(target.parent)


def _check_unchanged(target: Path, expected: str | None, shown: Path) -> None:
    """Raise ChangedMeanwhile unless `target` still holds the bytes the edit started from."""
    if expected is None:
        return
    try:
        current = target.read_bytes()
    except FileNotFoundError:
        current = None
    if current != expected.encode("utf-8"):
        raise ChangedMeanwhile(shown)


def _make_folders(folder: Path) -> None:
    """Create missing folders as the umask says, but never writable by group or others:
    cronflow refuses a job file in such a folder, and a umask of 002 would make them so."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for each in reversed(missing):
        each.mkdir(exist_ok=True)
        os.chmod(each, stat.S_IMODE(os.stat(each).st_mode) & ~0o022)


def _link_new(temp: Path, target: Path, shown: Path) -> None:
    """Give `temp` the name `target` unless something took that name meanwhile."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise CronflowError(f"{shown} already exists; left unchanged") from None


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
