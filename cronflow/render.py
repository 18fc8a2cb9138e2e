"""Everything cronflow prints: tables, JSON, messages. The only module that imports rich.

On a terminal tables are rich tables; piped, they are plain aligned text (and rich is not
even imported, which keeps scripted use fast).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from cronflow.units import format_duration

if TYPE_CHECKING:  # imported by the functions that print tables: `validate` prints none
    from cronflow.columns import Cell, Column


def is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, no_color="NO_COLOR" in os.environ or None)


def terminal_width() -> int | None:
    """Columns of the terminal stdout is on; None when piped (scripts get every column)."""
    if not is_terminal():
        return None
    import shutil

    return shutil.get_terminal_size().columns


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    title: str | None = None,
    width: int | None = -1,
) -> None:
    """A table fitted to `width` (default: the terminal's; see cronflow.columns)."""
    from cronflow.columns import fit

    names, texts = fit(columns, rows, terminal_width() if width == -1 else width)
    table(names, texts, title, narrow=False)


# Piped, a newline, tab or other control character in a cell (a multi-line description) is a
# space: one line per row, for `grep`, `cut` and `awk`; --json has the text as written.
_ONE_LINE = dict.fromkeys([*range(32), 127], " ")


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    narrow: bool = True,
) -> None:
    """A table: rich on a terminal, tab-free aligned plain text when piped. A table wider than
    the terminal is narrowed by rich, or with `narrow=False` (fitted already: what is left
    must not be cut) printed in full, its lines wrapped by the terminal."""
    if is_terminal():
        if title is None and _drawn_as_rich_would(columns, rows, narrow):
            return
        from rich.table import Table
        from rich.text import Text

        rich_table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for column in columns:
            rich_table.add_column(column, no_wrap=True)  # fitted before: never wrap a time
        for row in rows:  # Text: a description's "[x]" or ":name:" is shown as written
            rich_table.add_row(*map(Text, row))
        out = console()
        if narrow:
            out.print(rich_table)
            return
        from rich.measure import Measurement

        natural = Measurement.get(out, out.options.update(width=10**6), rich_table).maximum
        out.width = max(out.width, natural)  # print's own `width` is capped at the terminal's
        out.print(rich_table, crop=False)
        return
    if title:
        print(title)
    if not _printable(rows):
        rows = [[cell.translate(_ONE_LINE) for cell in row] for row in rows]  # a row per line
    widths = [max(map(len, column)) for column in zip(columns, *rows, strict=False)]
    # One format for every row ("%-8s  %-12s..." pads as str.ljust does), one write: `list`
    # of 1,000 jobs is 1,001 lines, and this is the most of what it does after reading them.
    line = "  ".join(f"%-{width}s" for width in widths)
    lines = [(line % tuple(row)).rstrip() for row in [columns, *rows]]
    sys.stdout.write("\n".join(lines) + "\n")


def _drawn_as_rich_would(
    columns: Sequence[str], rows: Sequence[Sequence[str]], narrow: bool = True
) -> bool:
    """Print the table as rich draws it (header in bold, every cell padded to its column's
    width, two spaces between columns) without rich's Table, and say so; False, printing
    nothing, when rich would draw something else: a table wider than the terminal (rich
    narrows its columns; with `narrow=False` the lines are printed in full and wrap), or a
    cell with a control character.

    rich measures, pads and crops each cell as a renderable: 0.7 s for `cronflow list` of
    1,000 jobs (7,000 cells), against a few milliseconds for the same lines built here.
    """
    from rich.cells import cell_len
    from rich.text import Text

    every = [columns, *rows]
    if any(len(row) != len(columns) for row in rows):
        return False
    if not _printable(every):
        return False  # a newline, tab or escape: rich breaks, expands or strips it in its cell
    lengths = [[len(c) if c.isascii() else cell_len(c) for c in row] for row in every]
    widths = [max(column) for column in zip(*lengths, strict=True)]
    out = console()
    if narrow and sum(widths) + 2 * (len(widths) - 1) > out.width:
        return False
    lines = [
        "  ".join(
            cell + " " * (width - length)
            for cell, width, length in zip(row, widths, sizes, strict=True)
        )
        for row, sizes in zip(every, lengths, strict=True)
    ]
    out.print(Text(lines[0], style="bold"), soft_wrap=True)
    out.file.write("".join(line + "\n" for line in lines[1:]))
    return True


def _printable(rows: Sequence[Sequence[str]]) -> bool:
    """No cell holds a newline, tab or other control character (one scan in C)."""
    return "".join(cell for row in rows for cell in row).isprintable()


def print_json(document: Any) -> None:
    import json

    json.dump(document, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def problems(found: Sequence[Any]) -> None:
    """A job file's problems: one line each; one problem is just one `error:` line."""
    if len(found) == 1:
        error(str(found[0]))
        return
    for problem in found:
        print(str(problem), file=sys.stderr)
    error(f"{len(found)} problems in the job file")


def ask_edit_again(invalid: Any) -> bool:
    """Show why an edit is invalid and ask `Edit again? [Y/n]`; end of input means no."""
    for problem in invalid.problems:
        print(str(problem), file=sys.stderr)
    while True:
        print("Edit again? [Y/n] ", end="", file=sys.stderr, flush=True)
        answer = sys.stdin.readline()
        if not answer:
            print(file=sys.stderr)
            return False
        answer = answer.strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def line(text: str = "") -> None:
    print(text)


def when(moment: datetime | None, zone: tzinfo | None = None) -> str:
    """A time as the user reads it: "2026-11-25 03:00 CET"."""
    if moment is None:
        return "-"
    local = moment.astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M %Z" if local.second == 0 else "%Y-%m-%d %H:%M:%S %Z")


def relative(moment: datetime, now: datetime) -> str:
    """ "in 3h 12m" or "5m ago"."""
    seconds = (moment - now).total_seconds()
    if seconds >= 0:
        return f"in {format_duration(seconds)}"
    return f"{format_duration(-seconds)} ago"


def job_table(views: Sequence[Any], now: datetime, width: int | None = -1) -> None:
    """`cronflow list`; DESCRIPTION only when a job has one. At 80 columns TIMEZONE goes first,
    then WHEN, SCHEDULE, DESCRIPTION and LAST; JOB and NEXT FIRE stay, and when even they do
    not fit, NEXT FIRE loses its "(in …)" and then a long JOB name is cut."""
    from cronflow.columns import Column, time_cell

    described = any(v.description for v in views)
    rows: list[list[Cell]] = []
    # Many jobs share a fire (same schedule and zone). Keyed with the zone too: equal instants
    # in two zones are equal datetimes, but read differently.
    cells: dict[tuple[datetime, Any], Cell] = {}
    for v in views:
        upcoming: Cell
        if v.next_fire is not None:
            key = (v.next_fire, v.next_fire.tzinfo)
            upcoming = cells.get(key) or cells.setdefault(
                key,
                time_cell(v.next_fire, v.next_fire.tzinfo, now, f" ({relative(v.next_fire, now)})"),
            )
        elif v.paused:
            upcoming = "paused" if v.paused_by == v.name else f"paused by {v.paused_by}"
        elif not v.enabled:
            upcoming = "disabled"
        elif v.schedule and v.schedule.startswith("@at"):
            upcoming = "done"
        else:
            upcoming = "-"
        row: list[Cell] = [v.name, v.schedule or "-", v.meaning, v.timezone, upcoming]
        row.append(v.last_status or "-")
        if described:
            row.append(v.description or "")
        rows.append(row)
    columns = [
        Column("JOB", cut_last=True),
        Column("SCHEDULE", value=30),
        Column("WHEN", value=20),  # dropped, never cut: "at 03:00 every d…" misleads
        Column("TIMEZONE", value=10),
        Column("NEXT FIRE"),
        Column("LAST", value=50),
    ]
    if described:
        columns.append(Column("DESCRIPTION", value=40, cut=True, min_cut=16))
    fitted_table(columns, rows, width=width)


class LiveOutput:
    """Shows a `cronflow run` as it happens: job output on stdout (stderr lines on stderr),
    prefixed with the job's name when several jobs run; progress lines on stderr."""

    def __init__(self, prefix: bool) -> None:
        self.prefix = prefix
        self.closed: set[Any] = set()

    def output(self, job: str, stream: str, data: bytes) -> None:
        target = sys.stderr if stream == "err" else sys.stdout
        if target in self.closed:
            return
        text = data.decode("utf-8", "replace")
        if not text.endswith("\n"):
            text += "\n"
        self._write(target, f"{job} | {text}" if self.prefix else text)

    def status(self, job: str, run_id: int, status: str, detail: str) -> None:
        if status == "running" and detail == "attempt 1":
            detail = ""
        suffix = f" ({detail})" if detail else ""
        if sys.stderr not in self.closed:
            self._write(sys.stderr, f"cronflow: {job} [{run_id}] {status}{suffix}\n")

    def _write(self, target: Any, text: str) -> None:
        try:
            target.write(text)
            target.flush()
        except OSError:
            # `cronflow run job | head -1` (EPIPE) or a closed terminal (EIO): nobody reads
            # any more; the job runs on, its output is still stored. Later writes (and the
            # flush at exit) go to /dev/null.
            self.closed.add(target)
            os.dup2(os.open(os.devnull, os.O_WRONLY), target.fileno())


def run_summary(runs: Sequence[Any]) -> None:
    """The table after `cronflow run`, if anyone still reads: after a hang-up (the terminal
    closed, ssh dropped) writing fails with EIO, and the runs are in the history anyway."""
    try:
        _run_table(runs)
        sys.stdout.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):  # and no failing flush at exit either
            os.dup2(devnull, stream.fileno())


def _run_table(runs: Sequence[Any], width: int | None = -1) -> None:
    """The summary after `cronflow run`, fitted like the other tables: the NOTE is cut, then
    ATTEMPTS, EXIT and DURATION go; a long JOB name is cut last."""
    from cronflow.columns import Column

    rows = [
        [
            str(r.run_id),
            r.job,
            r.status,
            str(r.attempts),
            _seconds(r.duration),
            "-" if r.exit_code is None else str(r.exit_code),
            r.note or "",
        ]
        for r in runs
    ]
    columns = [
        Column("RUN"),
        Column("JOB", cut_last=True),
        Column("STATUS"),
        Column("ATTEMPTS", value=10),
        Column("DURATION", value=30),
        Column("EXIT", value=20),
        Column("NOTE", value=40, cut=True, min_cut=20),
    ]
    fitted_table(columns, rows, width=width)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}s" if value < 60 else format_duration(value)


def flow_outcome(statuses: Sequence[str]) -> str:
    """One word for a flow run from its jobs' statuses: failed, canceled, skipped or ok."""
    from cronflow.flows import FAILED

    found = set(statuses)
    if not found.isdisjoint(FAILED - {"canceled"}):
        return "failed"
    if "canceled" in found:
        return "canceled"
    return "skipped" if found == {"skipped"} else "ok"


class BackfillProgress:
    """A progress bar on a terminal (done/total, failures, ETA); a line per flow run piped."""

    def __init__(self, total: int, zone: tzinfo) -> None:
        from cronflow.flows import FAILED

        self.failed_statuses = FAILED
        self.total = total
        self.zone = zone
        self.done = 0
        self.failures = 0
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("backfill"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failures]} failed"),
                TimeRemainingColumn(),
                console=console(stderr=True),
            )
            self.task = self.bar.add_task("backfill", total=total, failures=0)
            self.bar.start()

    def flow_done(self, logical_time: datetime, statuses: Sequence[str]) -> None:
        """One flow run of the backfill ended, its jobs with `statuses`."""
        self.done += 1
        failed = not self.failed_statuses.isdisjoint(statuses)
        self.failures += failed
        if self.bar is not None:
            self.bar.update(self.task, advance=1, failures=self.failures)
            return
        when_text = logical_time.astimezone(self.zone).isoformat()
        state = flow_outcome(statuses)
        sys.stderr.write(f"[{self.done}/{self.total}] {when_text} {state}\n")  # one write
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def history_table(
    runs: Sequence[Any], zone: tzinfo, now: datetime | None = None, width: int | None = -1
) -> None:
    """`cronflow history`; a HOST column only when a shown run ran on a worker (SPEC §8).
    At 80 columns TRIGGER goes first, then ATTEMPTS, STARTED, HOST, EXIT and DURATION."""
    from cronflow.columns import Column, time_cell

    now = now or datetime.now(zone)
    remote = any(r.host for r in runs)
    rows: list[list[Cell]] = [
        [
            str(r.run_id),
            r.job,
            time_cell(r.logical_time, zone, now),
            r.trigger,
            r.status,
            str(r.attempts),
            time_cell(r.started_at, zone, now),
            _seconds(r.duration),
            "-" if r.exit_code is None else str(r.exit_code),
            *([r.host or "-"] if remote else []),
        ]
        for r in runs
    ]
    columns = [
        Column("RUN"),
        Column("JOB", cut_last=True),
        Column("LOGICAL TIME"),
        Column("TRIGGER", value=10),
        Column("STATUS"),
        Column("ATTEMPTS", value=20),
        Column("STARTED", value=30),
        Column("DURATION", value=60),
        Column("EXIT", value=50),
        *([Column("HOST", value=40)] if remote else []),
    ]
    fitted_table(columns, rows, width=width)


def workers_table(
    workers: Sequence[dict[str, Any]], zone: tzinfo, now: datetime, width: int | None = -1
) -> None:
    """`cronflow workers`: one row per live worker, what it runs now, its last heartbeat;
    fitted like the other tables (RUNNING and QUEUES are cut, never the HEARTBEAT's time)."""
    from cronflow.columns import Column, time_cell

    rows: list[list[Cell]] = []
    for w in workers:
        running = ", ".join(f"{r['job']} (run {r['run_id']})" for r in w["running"]) or "-"
        beat = datetime.fromisoformat(w["heartbeat"]) if w.get("heartbeat") else None
        seen = time_cell(beat, zone, now, f" ({relative(beat, now)})") if beat else "-"
        rows.append([w["hostname"], ", ".join(w["queues"]), running, seen])
    columns = [
        Column("HOSTNAME", cut_last=True),
        Column("QUEUES", cut=True),
        Column("RUNNING", cut=True, min_cut=20),
        Column("HEARTBEAT"),
    ]
    fitted_table(columns, rows, width=width)


def log_lines(lines: Sequence[Any], _zone: object = None) -> None:
    """Output lines of `cronflow logs`; on a terminal stderr lines are marked in red."""
    if not is_terminal():
        sys.stdout.write("".join(f"{line.text}\n" for line in lines))
        sys.stdout.flush()
        return
    out = console()
    from rich.text import Text

    for line in lines:
        if line.kind == "separator":
            out.print(Text(line.text, style="dim"))
        elif line.kind == "err":
            out.print(Text("▌ ", style="red") + Text(line.text, style="red"))
        elif line.kind == "marker":
            out.print(Text(line.text, style="yellow"))
        else:
            out.print(Text(line.text), soft_wrap=True)


def _workers_section(report: dict[str, Any], zone: tzinfo) -> None:
    """The workers of `status` (remote execution only); the broker URL comes masked."""
    line(f"broker: {report['broker'] or 'not set (executor.broker or $CRONFLOW_BROKER_URL)'}")
    if report["workers_error"]:
        line(f"workers: unknown ({report['workers_error']})")
        return
    line(f"workers: {'none' if not report['workers'] else ''}".rstrip())
    for w in report["workers"]:
        beat = datetime.fromisoformat(w["heartbeat"]) if w.get("heartbeat") else None
        jobs = ", ".join(r["job"] for r in w["running"]) or "idle"
        line(f"  {w['hostname']}  queues {', '.join(w['queues'])}  {jobs}  seen {when(beat, zone)}")


def status_report(
    report: dict[str, Any], zone: tzinfo, now: datetime, width: int | None = -1
) -> None:
    """`cronflow status`: the daemon and the job file in lines, then aligned tables of what
    runs now, recent failures, paused flows and the next fires (times in the local zone)."""
    from cronflow.columns import Column, time_cell

    d = report["daemon"]
    if d["running"]:
        since = datetime.fromisoformat(d["since"]) if d["since"] else None
        line(f"daemon: running (pid {d['pid']}, since {when(since, zone)})")
    else:
        line("daemon: not running")
    line(f"job file: {d['config']}")
    if d["config_error"]:
        line(f"job file error: {d['config_error']}")
    for title, runs in (
        ("running now", report["running"]),
        ("recent failures", report["recent_failures"]),
    ):
        if not runs:
            line(f"{title}: none")
            continue
        _section(title)
        remote = any(r.get("host") for r in runs)
        columns = [
            Column("RUN"),
            Column("JOB", cut_last=True),
            Column("STATUS"),
            Column("LOGICAL TIME"),
            *([Column("HOST", value=20)] if remote else []),
            Column("NOTE", value=10, cut=True, min_cut=20),
        ]
        rows = [
            [
                str(r["run_id"]),
                r["job"],
                r["status"] + (", owner gone" if r.get("owner_gone") else ""),
                time_cell(datetime.fromisoformat(r["logical_time"]), zone, now),
                *([r.get("host") or "-"] if remote else []),
                r.get("owner_gone") or r.get("note") or "",
            ]
            for r in runs
        ]
        fitted_table(columns, rows, width=width)
    if report.get("paused"):
        _section("paused flows")
        rows = [[p["flow"], p["job"]] for p in report["paused"]]
        flow, by = Column("FLOW", cut_last=True), Column("PAUSED BY", cut_last=True)
        fitted_table([flow, by], rows, width=width)
    if "workers" in report:
        _workers_section(report, zone)
    if not report["next"]:
        line("next fires: none")
        return
    _section("next fires")
    rows = []
    for item in report["next"][:10]:
        moment = datetime.fromisoformat(item["next_fire"])
        rows.append([item["job"], time_cell(moment, zone, now), relative(moment, now)])
    columns = [Column("JOB", cut_last=True), Column("NEXT FIRE"), Column("IN", value=10)]
    fitted_table(columns, rows, width=width)


def _section(title: str) -> None:
    line(f"{title}:")


def check_report(report: Any) -> None:
    """`cronflow check`: one line per problem, or one line saying all is well."""
    if not report.problems:
        line("ok")
    for problem in report.problems:
        line(problem.message)


def reasons(found: Sequence[Any]) -> None:
    """`cronflow why`: one sentence per line."""
    for reason in found:
        message = reason.message
        line(message[0].upper() + message[1:] + ("" if message.endswith(".") else "."))
