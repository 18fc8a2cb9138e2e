"""`cronflow logs`: a run's output as lines, attempt by attempt, hooks after their attempt."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cronflow import recovery
from cronflow.errors import CronflowError
from cronflow.flows import FAILED, FINISHED
from cronflow.units import format_duration

if TYPE_CHECKING:
    from cronflow.records import AttemptRecord, HookRecord, OutputChunk, RunRecord
    from cronflow.store import Store

FOLLOW_POLL_SECONDS = 0.1  # `logs -f` shows a line within this (plus the engine's flush)
OWNER_CHECK_SECONDS = 1.0  # `logs -f` looks this often whether the run's cronflow still lives

__all__ = ["FAILED", "LogLine", "LogView", "find_run", "follow"]


@dataclass(frozen=True)
class LogLine:
    """One line to show. `kind`: "out", "err", "marker" or "separator"; `key` is stable so
    that `-f` prints each line once."""

    key: tuple[object, ...]
    kind: str
    text: str


def find_run(store: Store | None, target: str) -> RunRecord:
    """The run with id TARGET, or the latest run of job TARGET."""
    run = None
    if store is not None and not (target.isdigit() and int(target) >= 2**63):
        run = store.get_run(int(target)) if target.isdigit() else store.latest_run(target)
    if run is None:
        what = f"run {target}" if target.isdigit() else f"runs of job {target!r}"
        raise CronflowError(f"no {what} in the history")
    return run


class LogView:
    """The output of one run, fetched incrementally so that it can be followed."""

    def __init__(
        self, store: Store, run: RunRecord, attempt: int | None = None, stream: str | None = None
    ) -> None:
        self.store = store
        self.run = run
        self.attempt = attempt
        self.stream = stream
        self.chunks: list[OutputChunk] = []
        self.attempts: list[AttemptRecord] = []
        self.hooks: list[HookRecord] = []
        self.zone_hint = None
        # Why the run will never end, once its cronflow process is found gone (`follow`).
        self.owner_gone: str | None = None
        self.refresh()

    def refresh(self) -> None:
        after = self.chunks[-1].id if self.chunks else 0
        self.chunks += self.store.output(self.run.run_id, self.attempt, self.stream, after)
        self.attempts = [
            a for a in self.store.attempts(self.run.run_id) if self.attempt in (None, a.number)
        ]
        self.hooks = self.store.hooks(self.run.run_id)
        self.run = self.store.get_run(self.run.run_id) or self.run

    def lines(self, last: int | None = None) -> list[LogLine]:
        result: list[LogLine] = []
        if self.attempt is None:  # on_missed: attempt 0, before any attempt (or none at all)
            result += self._hook_lines(0)
        for attempt in self.attempts:
            result.append(
                LogLine(
                    ("attempt", attempt.number),
                    "separator",
                    f"── {self.run.job} run {self.run.run_id}, attempt {attempt.number}"
                    + (f" on {attempt.host}" if attempt.host else "")
                    + " ──",
                )
            )
            result += self._output(attempt.number, None)
            if attempt.finished_at is not None:
                result.append(
                    LogLine(
                        ("ended", attempt.number),
                        "separator",
                        f"── attempt {attempt.number}: {_ending(attempt)} ──",
                    )
                )
            result += self._hook_lines(attempt.number)
        return _last_lines(result, last) if last is not None else result

    def _hook_lines(self, attempt: int) -> list[LogLine]:
        result: list[LogLine] = []
        for hook in (h for h in self.hooks if h.attempt == attempt):
            result.append(LogLine(("hook", hook.id), "separator", f"── {hook.hook} hook ──"))
            result += self._output(attempt, hook.id)
            if hook.finished_at is not None:
                result.append(
                    LogLine(
                        ("hook-ended", hook.id),
                        "separator",
                        f"── {hook.hook} hook: exit {hook.exit_code} ──",
                    )
                )
        return result

    def _output(self, attempt: int, hook_id: int | None) -> list[LogLine]:
        return [
            LogLine(("chunk", c.id), c.stream, c.data.decode("utf-8", "replace").rstrip("\n"))
            for c in self.chunks
            if c.attempt == attempt and c.hook_id == hook_id
        ]


def _ending(attempt: AttemptRecord) -> str:
    parts = [attempt.status]
    if attempt.exit_code is not None:
        parts.append(f"exit {attempt.exit_code}")
    if attempt.finished_at and attempt.started_at:
        seconds = (attempt.finished_at - attempt.started_at).total_seconds()
        parts.append(f"{seconds:.2f}s" if seconds < 60 else format_duration(seconds))
    if attempt.cpu_seconds is not None:
        parts.append(f"cpu {attempt.cpu_seconds:.2f}s")
    if attempt.max_rss_kb:
        parts.append(f"peak memory {attempt.max_rss_kb / 1024:.1f} MiB")
    return ", ".join(parts)


def _last_lines(lines: list[LogLine], count: int) -> list[LogLine]:
    """The last `count` output lines, under the separator of the section they start in."""
    if count == 0:
        return []
    output_at = [i for i, line in enumerate(lines) if line.kind != "separator"]
    if len(output_at) <= count:
        return lines
    start = output_at[-count]
    header = next((lines[i] for i in range(start, -1, -1) if lines[i].kind == "separator"), None)
    return ([header] if header else []) + lines[start:]


def follow(view: LogView, show: Callable[[Sequence[LogLine], object], None]) -> RunRecord:
    """Show new lines as they are stored until the run has ended, or until its cronflow
    process is found gone (`view.owner_gone` then says so); return the run as it stands."""
    shown = {line.key for line in view.lines()}
    next_check = 0.0
    while True:
        ended = view.run.status in FINISHED
        if not ended and time.monotonic() >= next_check:
            next_check = time.monotonic() + OWNER_CHECK_SECONDS
            view.owner_gone = _owner_gone(view.store, view.run.run_id)
        view.refresh()
        new = [line for line in view.lines() if line.key not in shown]
        if new:
            show(new, view.zone_hint)
            shown.update(line.key for line in new)
        if view.run.status in FINISHED:
            view.owner_gone = None  # it ended after all (its owner wrote the end, then exited)
            if ended and not new:
                return view.run
        elif view.owner_gone is not None and not new:
            return view.run  # its output is all shown: the dead owner writes no more
        time.sleep(FOLLOW_POLL_SECONDS)


def _owner_gone(store: Store, run_id: int) -> str | None:
    """Why run `run_id` will never end by itself (its owner died), or None."""
    found = store.unfinished_runs(run_id)
    if not found or recovery.owner_alive(found[0]):
        return None
    return recovery.gone_note(found[0])
