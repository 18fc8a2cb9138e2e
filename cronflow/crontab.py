"""crontab(5) → cronflow jobs. Pure: crontab text in, TOML text and a report out.

Lines are read the way Vixie cron (Debian) and cronie read them:

- `NAME = value` assignments (quotes optional, matching, keep blanks) apply to the job lines
  below them. `SHELL` becomes the job's `shell`, `CRON_TZ` its `timezone`, `HOME` its `workdir`
  (cron starts every job in $HOME) and env, cronie's `RANDOM_DELAY` its `jitter`, `MAILTO` a
  commented `on_failure` mail hook; every other variable goes into the job's `env`, literally,
  as cron does not expand `$VARS`. `LOGNAME` and `USER` are skipped: cron overrides them.
- A command's first unescaped `%` starts its standard input, later ones are newlines and `\\%`
  is a literal `%`. cronflow gives jobs /dev/null as stdin, so that input becomes an exact
  `printf ... |` in front of the command (cron adds a final newline, and so does the printf).
- A crontab's comments stay as TOML comments: a comment block right above a job goes into its
  table, a commented-out job line becomes a commented-out `[jobs.NAME]` block.
- Lines cronflow cannot carry over are reported in `skipped` (and as comments in the TOML).

System crontabs (/etc/crontab, /etc/cron.d/*) have a user column before the command. With
`system=None` a text is read as one when a comment shows that column in the classic header
(`m h dom mon dow user command`), or when every job line has an account-like word
(`[a-z_][a-z0-9_.-]*`) and then a command after its schedule, and at least one of those words
is a well-known account (root, daemon, nobody, www-data, postgres, mysql) or is followed by a
classic `cd / && run-parts ...` line. Anything else is read as a user crontab; pass `system=`
to decide.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronflow.editing import toml_string
from cronflow.schedule import ScheduleError, parse_schedule

CRON_MACROS = (
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)
_BLANKS = " \t"
_SPACE = " \t\n\r\f\v"  # C's isspace()
# A word that reads as one more time field: a seconds field or a year, which cron has not.
_TIME_FIELD_RE = re.compile(r"[0-9*?][0-9*?,/#LW-]*")
_ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_.-]*\$?")
_SYSTEM_ACCOUNTS = frozenset({"root", "daemon", "nobody", "www-data", "postgres", "mysql"})
# The classic run-parts lines after a user: "cd / && run-parts ..." and the anacron guard.
_RUN_PARTS_RE = re.compile(r"(?:test\s+-x\s+\S+\s*\|\|\s*\{?\s*)?(?:cd\s+\S+\s*&&\s*)?run-parts\b")
_USER_COLUMN_RE = re.compile(r"(?:\bdow|\*)\s+user(?:-?name)?\s+command\b", re.IGNORECASE)
_DOC_EXAMPLE_RE = re.compile(r"\bcommand to be executed\b")
_NON_POSIX_SHELLS = frozenset({"csh", "tcsh", "fish", "nu", "elvish", "xonsh"})
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
_REDIRECTION_RE = re.compile(r"[0-9]*(?:[<>]&[0-9-]*|>\||&>>?)")
_INTERPRETER_RE = re.compile(r"(?:ba|z|da|k)?sh|python[0-9.]*|perl|ruby|node|php[0-9.]*")
_PRELUDE_COMMANDS = frozenset({"cd", "test", "[", "sleep", ":", "true", "umask", "export"})
_WRAPPERS = frozenset({"exec", "nohup", "time", "command", "env", "chronic", "{", "(", "!"})
_MAIL_HOOK = 'printf "%s\\n" "$CRONFLOW_LOG_TAIL" | mail -s "cronflow: $CRONFLOW_JOB failed" '


@dataclass(frozen=True)
class Skipped:
    """A crontab line that could not be carried over, and why."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class ImportResult:
    """What `import_crontab` made of a crontab."""

    toml: str  # a job-file fragment: [jobs.NAME] tables with comments
    jobs: dict[str, dict[str, Any]]  # name -> the job's keys as plain values
    skipped: list[Skipped]


def import_crontab(
    text: str,
    *,
    system: bool | None = None,
    existing_names: Collection[str] = frozenset(),
    existing_jobs: Mapping[tuple[str, str, str | None], str] | None = None,
) -> ImportResult:
    """Turn crontab text into cronflow jobs; names in `existing_names` are not reused, and a
    line whose schedule, command and zone a job in `existing_jobs` ((schedule, command, zone
    or None for the system's) -> name) already has is skipped, so importing the same crontab
    twice adds nothing twice.

    Bytes that were not UTF-8 come in as surrogate escapes (decode with "surrogateescape");
    their lines are skipped and kept as comments, escaped.
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if system is None:
        system = _looks_like_system_crontab(lines)
    reader = _Reader(system)
    for number, line in enumerate(lines, start=1):
        reader.read(number, line)
    reader.flush()
    for block in list(reader.blocks):
        if isinstance(block, _JobBlock) and not block.commented:
            key = (block.schedule, block.command, block.settings.timezone or None)
            twin = (existing_jobs or {}).get(key)
            if twin is not None:
                reader.blocks.remove(block)
                why = f"already in the job file as {twin}"
                reader.skipped.append(Skipped(block.line, block.text, why))
    taken = set(existing_names)
    jobs: dict[str, dict[str, Any]] = {}
    for block in reader.blocks:  # real jobs are named first, so comments never shift their names
        if isinstance(block, _JobBlock) and not block.commented:
            block.name = _unique(_slug(block.name_source), taken)
            jobs[block.name] = block.keys()
    for block in reader.blocks:
        if isinstance(block, _JobBlock) and block.commented:
            block.name = _unique(_slug(block.name_source), taken)
    skipped = sorted(reader.skipped, key=lambda s: s.line)
    return ImportResult(_render(reader.blocks, reader.header()), jobs, skipped)


# -- what the lines say ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    """What the assignments above a job line set for it."""

    env: dict[str, str] = field(default_factory=dict)
    shell: str | None = None
    timezone: str | None = None
    timezone_problem: str | None = None
    mailto: str | None = None
    random_delay: int = 0
    home: str | None = None


@dataclass
class _JobBlock:
    line: int
    text: str
    schedule: str
    command: str
    name_source: str
    settings: _Settings
    user: str | None = None
    no_syslog: bool = False
    commented: bool = False
    comments: list[str] = field(default_factory=list)
    name: str = ""

    def keys(self) -> dict[str, Any]:
        """The job's keys as plain values, in the order they are written."""
        s = self.settings
        where = f"imported from crontab line {self.line}"
        keys: dict[str, Any] = {
            "description": f"{where}, as user {self.user}" if self.user else where,
            "schedule": self.schedule,
            "command": self.command,
        }
        if s.timezone:
            keys["timezone"] = s.timezone
        if s.shell is not None:
            keys["shell"] = s.shell
        keys["workdir"] = s.home or "~"
        if s.env:
            keys["env"] = dict(s.env)
        if s.random_delay:
            keys["jitter"] = f"{s.random_delay}m"
        return keys

    def notes(self) -> list[str]:
        """Comments written after the keys: what cron did that cronflow does differently."""
        s, notes = self.settings, []
        if self.user:
            notes.append(f"cron ran this as {self.user}; cronflow runs it as the daemon's user")
        if self.no_syslog:
            notes.append("cronie's '-' prefix (no syslog line) was dropped: runs are recorded")
        if s.random_delay:
            notes.append(
                f"RANDOM_DELAY={s.random_delay}: cronie delays by one random amount per daemon "
                "start, cronflow's jitter picks a new one for each fire"
            )
        if "TZ" in s.env and not s.timezone:
            notes.append(
                "TZ only sets the job's environment; cron read the schedule in the "
                "system's zone, and so does cronflow unless `timezone` is set"
            )
        if s.mailto:
            recipients = [shlex.quote(r) for r in re.split(r"[,\s]+", s.mailto) if r]
            hook = _MAIL_HOOK + " ".join(recipients)
            notes.append(f"cron mailed any output to {s.mailto}; `cronflow logs` keeps it now.")
            notes.append("To be mailed when the job fails, uncomment:")
            notes.append(f"on_failure = {toml_string(hook).as_string()}")
        return notes


@dataclass
class _CommentBlock:
    lines: list[str]


def _take(text: str) -> tuple[str, str]:
    """The first blank-separated word of `text`, and the rest after its blanks."""
    text = text.lstrip(_BLANKS)
    end = next((i for i, ch in enumerate(text) if ch in _BLANKS), len(text))
    return text[:end], text[end:].lstrip(_BLANKS)


def _split_entry(text: str, system: bool) -> tuple[str, str | None, str, bool]:
    """A job line's schedule, user, command (as written) and '-' flag; ValueError if malformed."""
    rest = text.lstrip(_BLANKS)
    no_syslog = rest.startswith("-")
    rest = rest.removeprefix("-")
    if rest.startswith("@"):
        macro, rest = _take(rest)
        if macro not in CRON_MACROS:
            raise ValueError(f"cron has no schedule {macro!r}; it knows {', '.join(CRON_MACROS)}")
        schedule = macro
    elif rest[:1] not in set("0123456789*?"):
        raise ValueError(
            "neither a job (five time fields, then the command) nor a NAME=value setting"
            + (" (are its quotes matched?)" if "=" in rest else "")
        )
    else:
        fields = []
        for _ in range(5):
            word, rest = _take(rest)
            fields.append(word)
        if not fields[-1]:
            what = "a user and a command" if system else "a command"
            raise ValueError(
                f"expected five time fields (minute hour day-of-month month day-of-week) and {what}"
            )
        schedule = " ".join(fields)
    first, after = _take(rest)
    if not first:
        raise ValueError(f"no command after the schedule {schedule!r}")
    if not schedule.startswith("@") and _TIME_FIELD_RE.fullmatch(first):
        raise ValueError(
            f"'{schedule} {first}' looks like a schedule with a seconds or year field; "
            "cron and cronflow schedules have five fields"
        )
    if not system:
        return schedule, None, rest, no_syslog
    if not after:
        raise ValueError(f"expected a user and a command after the schedule {schedule!r}")
    if not _ACCOUNT_RE.fullmatch(first):
        raise ValueError(f"{first!r} is not a user name (this system crontab has a user column)")
    return schedule, first, after, no_syslog


def _assignment(text: str) -> tuple[str, str] | None:
    """(NAME, value) if cron reads the line as an environment setting (cronie's load_env).

    The name ends at a blank or '='; name and value may be quoted with matching quotes; an
    unquoted value runs to the end of the line minus trailing blanks. `NAME=` with nothing
    after it counts as an empty value (cron wants `NAME=""`, but the intent is plain).
    """
    name_first, name, eq1, eq2, value_first, value, done, error = range(8)
    state, quote, parts, i = name_first, "", ([], []), 0
    text = text.lstrip(_SPACE)
    while state != error and i < len(text):
        ch = text[i]
        if state in (name_first, value_first):
            state += 1
            if ch in "'\"":
                quote, i = ch, i + 1
                continue
        if state in (name, value):
            if quote and ch == quote:
                state, i = state + 1, i + 1
            elif quote and state == name and ch == "=":
                state = error
            elif not quote and state == name and (ch in _SPACE or ch == "="):
                state, i = eq1, i + (ch != "=")
            else:
                parts[state == value].append(ch)
                i += 1
        elif state == eq1:
            if ch == "=":
                state, quote = eq2, ""
            elif ch not in _SPACE:
                state = error
            i += 1
        elif ch in _SPACE:  # eq2 or done: skip blanks
            i += 1
        else:
            state += 1  # eq2 → value_first; done → error
    key = "".join(parts[0])
    if not key or not (state in (done, eq2, value_first) or (state == value and not quote)):
        return None
    result = "".join(parts[1])
    return key, result if state == done else result.rstrip(_SPACE)


def _looks_like_system_crontab(lines: list[str]) -> bool:
    """The heuristic in the module docstring."""
    accounts = []
    for line in lines:
        stripped = line.lstrip(_SPACE)
        if stripped.startswith("#"):
            if _USER_COLUMN_RE.search(stripped):
                return True
            continue
        if not stripped or _assignment(stripped):
            continue
        try:
            _schedule, user, command, _flag = _split_entry(stripped, system=True)
        except ValueError:
            if _parses(stripped, system=False):
                return False
            continue  # malformed either way: no vote
        accounts.append(user in _SYSTEM_ACCOUNTS or _RUN_PARTS_RE.match(command))
    return any(accounts)


def _parses(text: str, system: bool) -> bool:
    try:
        _split_entry(text, system)
    except ValueError:
        return False
    return True


# -- commands --------------------------------------------------------------------------------


def _split_percent(command: str) -> tuple[str, str]:
    """cron's reading of '%': the command it runs and the text it writes to its stdin."""
    out: list[str] = []
    escaped = False
    for i, ch in enumerate(command):
        if escaped:
            if ch == "%":
                out[-1] = "%"
            else:
                out.append(ch)
            escaped = False
        elif ch == "%":
            return "".join(out), _stdin_text(command[i + 1 :])
        else:
            out.append(ch)
            escaped = ch == "\\"
    return "".join(out), ""


def _stdin_text(data: str) -> str:
    """What cron writes to the command's stdin for the text after its first '%'."""
    out: list[str] = []
    escaped = need_newline = False
    for ch in data:
        if escaped and ch != "%":
            out.append("\\")
        elif not escaped and ch == "%":
            ch = "\n"
        escaped = ch == "\\"
        if not escaped:
            out.append(ch)
            need_newline = ch != "\n"
    if escaped:
        out.append("\\")
    if need_newline:
        out.append("\n")
    return "".join(out)


def _with_stdin(command: str, data: str) -> str:
    """`command` reading exactly `data` on its stdin, for a POSIX shell."""
    lines = data.split("\n")
    if lines[-1] == "":
        fmt, args = "%s\\n", lines[:-1]
    else:
        fmt, args = "%s\\n" * (len(lines) - 1) + "%s", lines
    printf = " ".join(["printf", shlex.quote(fmt), *(shlex.quote(a) for a in args)])
    # `a; b` or `a && b` after a pipe would feed only `a`: a group keeps cron's meaning, and
    # the newline before `}` survives a trailing comment or `&`.
    plain = _REDIRECTION_RE.sub("", command)
    if any(ch in plain for ch in ";&|\n") or command.startswith("!"):
        return f"{printf} | {{\n{command}\n}}"
    return f"{printf} | {command}"


def _words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: the shell will say so; a name is still needed
        return command.split()


def _name_source(command: str) -> str:
    """The word a job is named after: the first command's program (its script for an
    interpreter, its folder for run-parts), past `cd dir &&`-style preludes."""
    words, program, args, redirected = _words(command), None, [], False
    for word in [*words, ";"]:
        if set(word) <= set("();&|") and set(word) & set(";&|"):  # an operator: next command
            if program is not None and program not in _PRELUDE_COMMANDS:
                break
            program, args, redirected = None, [], False
        elif program is None:
            base = word.rstrip("/").rsplit("/", 1)[-1]
            if base in _WRAPPERS or set(word) <= set("()") or _ASSIGNMENT_RE.fullmatch(word):
                continue
            program = base
        elif redirected or set(word) & set("<>"):
            redirected = True  # what follows a redirection is a file, not an argument
        else:
            args.append(word)
    if program is None:
        return words[0] if words else "job"
    if program == "run-parts" and args:
        return args[-1].rstrip("/").rsplit("/", 1)[-1]
    if _INTERPRETER_RE.fullmatch(program) and args and not args[0].startswith("-"):
        return args[0].rsplit("/", 1)[-1]
    return program


def _slug(word: str) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", word.lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-_")[:40].strip("-_")
    return slug or "job"


def _unique(base: str, taken: set[str]) -> str:
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


# -- reading a crontab -----------------------------------------------------------------------


class _Reader:
    """Walks the lines in order, tracking the assignments in force and the comment blocks."""

    def __init__(self, system: bool) -> None:
        self.system = system
        self.settings = _Settings()
        self.blocks: list[_JobBlock | _CommentBlock] = []
        self.skipped: list[Skipped] = []
        self.pending: list[str] = []  # comment lines not yet placed
        self.literal_vars: dict[str, int] = {}  # variables holding '$', with their line

    def header(self) -> list[str]:
        lines = ["Imported from a crontab by `cronflow import-crontab`. As under cron, each job"]
        lines.append("runs its command with /bin/sh (or the crontab's SHELL) in your home folder.")
        if self.system:
            lines.append("Read as a system crontab: the user column is kept in each description.")
        if self.literal_vars:
            names = ", ".join(f"{var} (line {n})" for var, n in self.literal_vars.items())
            verb = "holds" if len(self.literal_vars) == 1 else "hold"
            lines.append(f"Note: {names} {verb} '$': cron does not expand variables in crontab")
            lines.append("assignments and neither does cronflow; the values are used literally.")
        return lines

    def flush(self) -> None:
        if self.pending:
            self.blocks.append(_CommentBlock(self.pending))
            self.pending = []

    def skip(self, number: int, text: str, reason: str) -> None:
        self.skipped.append(Skipped(number, text, reason))
        self.blocks.append(
            _CommentBlock([*self.pending, f"line {number} was not imported: {reason}", text])
        )
        self.pending = []

    def read(self, number: int, text: str) -> None:
        if _undecodable(text):  # never guess at a command's bytes: show them, run nothing
            self.skip(
                number, _escaped(text), "invalid UTF-8; kept as a comment with its bytes escaped"
            )
            return
        stripped = text.lstrip(_SPACE)
        if not stripped:
            self.flush()
        elif stripped.startswith("#"):
            self.read_comment(number, stripped[1:])
        elif (setting := _assignment(stripped)) is not None:
            self.assign(number, text, *setting)
        else:
            try:
                job = self.job(number, text, stripped)
            except ValueError as exc:
                self.skip(number, text, str(exc))
                return
            job.comments, self.pending = self.pending, []
            self.blocks.append(job)

    def read_comment(self, number: int, body: str) -> None:
        candidate = body.lstrip(_BLANKS)
        if candidate and not _DOC_EXAMPLE_RE.search(candidate) and not _assignment(candidate):
            try:
                job = self.job(number, "#" + body, candidate)
            except ValueError:
                pass
            else:
                job.commented = True
                job.comments, self.pending = self.pending, []
                self.blocks.append(job)
                return
        self.pending.append(body.removeprefix(" "))

    def job(self, number: int, text: str, stripped: str) -> _JobBlock:
        schedule, user, written, no_syslog = _split_entry(stripped, self.system)
        try:
            parse_schedule(schedule)
        except ScheduleError as exc:
            raise ValueError(f"cronflow does not accept the schedule {schedule!r}: {exc}") from None
        command, stdin = _split_percent(written)
        source = _name_source(command)
        if not command.strip() or command.lstrip().startswith("#"):
            raise ValueError("the command is empty (or only a shell comment)")
        if self.settings.timezone_problem:
            raise ValueError(self.settings.timezone_problem)
        if stdin:
            shell = (self.settings.shell or "/bin/sh").rsplit("/", 1)[-1]
            if shell in _NON_POSIX_SHELLS:
                raise ValueError(
                    f"its '%' input cannot be rewritten for SHELL={self.settings.shell}; "
                    "cronflow gives jobs an empty stdin"
                )
            command = _with_stdin(command, stdin)
        return _JobBlock(number, text, schedule, command, source, self.settings, user, no_syslog)

    def assign(self, number: int, text: str, name: str, value: str) -> None:
        s = self.settings
        if name in ("LOGNAME", "USER"):
            self.skip(number, text, f"cron always sets {name} to the crontab's owner")
            return
        if name == "SHELL" and not value:
            self.skip(number, text, "SHELL must name a shell")
            return
        if name == "RANDOM_DELAY" and not value.isdigit():
            self.skip(number, text, "RANDOM_DELAY must be a whole number of minutes")
            return
        if name == "CRON_TZ" and value and not _zone_exists(value):
            problem = f"CRON_TZ {value!r} (line {number}) is not a known time zone"
            self.settings = replace(s, timezone=None, timezone_problem=problem)
            self.skip(number, text, f"{value!r} is not a known time zone; jobs below are skipped")
            return
        if name == "SHELL":
            self.settings = replace(s, shell=value)
        elif name == "CRON_TZ":
            self.settings = replace(s, timezone=value or None, timezone_problem=None)
        elif name == "MAILTO":
            self.settings = replace(s, mailto=value)
        elif name == "RANDOM_DELAY":
            self.settings = replace(s, random_delay=int(value))
        else:
            if "$" in value:
                self.literal_vars[name] = number
            home = value if name == "HOME" else s.home
            self.settings = replace(s, env={**s.env, name: value}, home=home)


def _undecodable(text: str) -> bool:
    """True when `text` holds bytes that were not UTF-8 (decoded with surrogateescape)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _escaped(text: str) -> str:
    """`text` with each undecodable byte written as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# -- writing TOML ----------------------------------------------------------------------------


def _comment(text: str) -> Any:
    """A TOML comment; control characters, which TOML forbids there, are shown escaped."""
    import tomlkit

    return tomlkit.comment(
        re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)
    )


def _job_table(block: _JobBlock) -> Any:
    import tomlkit

    table = tomlkit.table()
    for line in block.comments:
        table.add(_comment(line))
    for key, value in block.keys().items():
        if isinstance(value, dict):
            env = tomlkit.inline_table()
            for name, text in value.items():
                env.append(name, toml_string(text))
            table.add(key, env)
        else:
            table.add(key, toml_string(value))
    for note in block.notes():
        table.add(_comment(note))
    return table


def _commented_job(block: _JobBlock) -> list[str]:
    import tomlkit

    doc = tomlkit.document()
    doc.add("jobs", tomlkit.table(is_super_table=True))
    doc["jobs"].add(block.name, _job_table(replace(block, comments=[])))
    body = doc.as_string().strip("\n").split("\n")
    original = block.text.lstrip(_SPACE).removeprefix("#").strip(_BLANKS)
    lines = [*block.comments, f"commented out in the crontab (line {block.line}): {original}"]
    return lines + body


def _render(blocks: list[_JobBlock | _CommentBlock], header: list[str]) -> str:
    import tomlkit

    doc = tomlkit.document()
    for line in header:
        doc.add(_comment(line))
    jobs = tomlkit.table(is_super_table=True)
    target: Any = doc  # free-standing comments go after the last job written so far
    for block in blocks:
        if isinstance(block, _JobBlock) and not block.commented:
            target = _job_table(block)
            jobs.add(block.name, target)
            continue
        lines = block.lines if isinstance(block, _CommentBlock) else _commented_job(block)
        target.add(tomlkit.nl())
        for line in lines:
            target.add(_comment(line))
    if jobs:
        doc.add("jobs", jobs)
    return doc.as_string()
