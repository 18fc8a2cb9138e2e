"""`cronflow ui`: the Textual app. Screens lay out what `model` builds; actions go through the
same store calls as `pause`/`resume` and through `cronflow.trigger` like `cronflow trigger`.

Refresh: every half second the app asks SQLite for `PRAGMA data_version` (no table is read) and
stats the job file; only a change (or the 5 s tick that moves relative times on) reloads what
the current screen shows. The app's own writes are short `BEGIN IMMEDIATE` transactions.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, RichLog, Static

from cronflow import trigger as triggering
from cronflow.clock import Clock
from cronflow.config import load_config, local_zone
from cronflow.errors import ConfigError, CronflowError
from cronflow.logview import LogView
from cronflow.ui import model

if TYPE_CHECKING:
    from cronflow.config import Config, Flow
    from cronflow.records import RunRecord
    from cronflow.store import Store

POLL_SECONDS = 0.5  # a change shows within this (plus the reload)
WORKERS_EVERY = 5.0  # the header asks the broker for live workers at most this often
TICK_SECONDS = 5.0  # relative times ("in 3m") and the daemon's state move on at least this often

KEYS = [
    ("space / p", "switch the flow ON or OFF (as `pause` / `resume`)"),
    ("enter", "open: flows → the flow's grid → the run"),
    ("arrows", "move"),
    ("t", "trigger the flow now: the daemon runs it (manual)"),
    ("c", "clear a failed run: rerun it and downstream (retry)"),
    ("/", "filter by name; enter or escape closes it"),
    ("escape", "back"),
    ("?", "these keys"),
    ("q", "quit"),
]


def _legend() -> Text:
    text = Text()
    for status, (letter, color) in model.STATUS_LOOK.items():
        text.append(f" {letter} ", style=f"bold black on {color}")
        text.append(f" {status.replace('_', ' ')}  ")
    return text


def _cell(status: str | None) -> Text:
    if status is None:
        return Text(f" {model.NO_RUN} ", style="dim")
    letter, color = model.STATUS_LOOK.get(status, ("?", "white"))
    return Text(f" {letter} ", style=f"bold black on {color}")


def _status_text(status: str | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    letter, color = model.STATUS_LOOK.get(status, ("?", "white"))
    return Text(f"{letter} ", style=f"bold {color}") + Text(status.replace("_", " "))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class Dashboard(App[None]):
    """The dashboard of one job file and one state folder."""

    TITLE = "cronflow"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #header { height: auto; background: $boost; padding: 0 1; }
    #status { height: 1; background: $boost; padding: 0 1; }
    #title, #detail { height: auto; padding: 0 1; }
    #legend { height: auto; padding: 0 1; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    DataTable { height: 1fr; }
    #attempts { height: auto; max-height: 6; }
    #log { height: 1fr; border-top: solid $primary; }
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 78; height: auto; max-width: 100%; background: $panel;
                            border: solid $primary; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "keys"),
    ]

    def __init__(self, config_path: Path, state_dir: Path, *, store: Store | None = None) -> None:
        super().__init__()
        self.config_path = config_path
        self.state_dir = state_dir
        self.clock = Clock()
        self.config: Config | None = None
        self.config_error: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._remote_workers_at = 0.0
        self._remote_workers_seen = ""
        self._store = store
        self._version: int | None = None
        self._last_tick = 0.0
        self.requests: dict[int, str] = {}  # pending trigger requests -> what was asked
        self.status_message = ""
        self._load_config()

    # --- data ------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            from cronflow.store import Store

            self._store = Store(self.state_dir / "cronflow.db")
        return self._store

    def now(self) -> datetime:
        return self.clock.now()

    def _load_config(self) -> None:
        try:
            st = os.stat(self.config_path)
            self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            self._stamp = None
        try:
            self.config = load_config(self.config_path)
            self.config_error = None
        except ConfigError as exc:
            self.config_error = exc.summary()
        except CronflowError as exc:
            self.config_error = exc.message

    def _remote_workers(self) -> str:
        """Live workers, when the job file sends attempts to them; asked at most every 5 s
        (the broker is another machine: the header must not wait on it at each refresh)."""
        if self.config is None or self.config.executor.kind != "celery":
            return ""
        now = self.clock.monotonic()
        if now - self._remote_workers_at < WORKERS_EVERY and self._remote_workers_seen:
            return self._remote_workers_seen
        self._remote_workers_at = now
        try:
            from cronflow.remote import live_workers

            self._remote_workers_seen = model.workers_text(live_workers(self.config))
        except CronflowError as exc:
            from cronflow.units import mask_urls

            self._remote_workers_seen = f"workers: {mask_urls(exc.message)}"
        return self._remote_workers_seen

    def _config_changed(self) -> bool:
        try:
            st = os.stat(self.config_path)
            return (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp
        except OSError:
            return self._stamp is not None

    def daemon_line(self) -> Text:
        pid = triggering.daemon_pid(self.state_dir)
        since = self.store.get_state("daemon:since") if pid else None
        executor = self.config.executor.kind if self.config else "local"
        line = model.DaemonLine(
            pid, since, self.config_path, self.config_error, executor, self._remote_workers()
        )
        text = Text(line.text(self.now()), style="bold" if pid else "bold yellow")
        if self.config_error:
            text.append(f"\njob file error: {self.config_error}", style="bold red")
        return text

    # --- life ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._version = self.store.data_version()
        self._last_tick = self.clock.monotonic()
        self.push_screen(FlowsScreen())
        self.set_interval(POLL_SECONDS, self.poll)

    def poll(self) -> None:
        """Reload the screen when the database or the job file changed, or a tick passed."""
        changed = False
        if self._config_changed():
            self._load_config()
            changed = True
        try:
            version = self.store.data_version()
        except CronflowError as exc:
            self.say(exc.message)
            return
        if version != self._version:
            self._version = version
            changed = True
        if self.clock.monotonic() - self._last_tick >= TICK_SECONDS:
            changed = True
        if changed:
            self.reload()

    def reload(self) -> None:
        """Show the state as it is now (also after this app's own writes)."""
        self._last_tick = self.clock.monotonic()
        self._check_requests()
        screen = self.screen
        if isinstance(screen, BaseScreen):
            try:
                screen.reload()
            except CronflowError as exc:
                self.say(exc.message)

    def say(self, message: str) -> None:
        """One line in the status bar of every screen: what the last action did."""
        self.status_message = message
        for screen in self.screen_stack:
            if isinstance(screen, BaseScreen):
                screen.show_status(message)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    # --- actions shared by the screens ------------------------------------------------------

    def toggle(self, flow: Flow) -> None:
        """Switch a flow ON or OFF: the store calls of `cronflow resume` / `pause`."""
        paused = set(self.store.paused_jobs()) & set(flow.jobs)
        if paused:
            self.store.set_paused(flow.jobs, False, self.now())  # whichever of its jobs held it
            self.say(f"flow {flow.name} is ON: the daemon fires it from its next fire on")
        else:
            self.store.set_paused([flow.jobs[0]], True, self.now())
            self.say(f"flow {flow.name} is OFF: the daemon fires nothing of it until it is ON")
        self.reload()

    def trigger(self, job: str, logical_time: datetime | None, trigger: str, what: str) -> None:
        """Ask the running daemon to run `job`'s flow from `job` (trigger manual or retry)."""
        if self.config is None:
            self.say(f"cannot {what}: the job file is not valid")
            return
        if any(asked == what for asked in self.requests.values()):
            self.say(f"{what}: already asked; waiting for the daemon to take it")
            return
        moment = logical_time or self.now().replace(microsecond=0)
        try:
            sent = triggering.request(
                self.store, self.config, self.state_dir, job, moment, trigger=trigger,
                now=self.now(),
            )  # fmt: skip
        except CronflowError as exc:
            self.say(exc.message)
            return
        self.requests[sent.request_id] = what
        self.say(f"{what}: asked the daemon (pid {sent.pid}), request {sent.request_id}")
        self.reload()

    def _check_requests(self) -> None:
        for request_id, what in list(self.requests.items()):
            taken = self.store.get_trigger(request_id)
            if taken is None or taken.taken_at is None:
                continue
            del self.requests[request_id]
            if taken.note:
                self.say(f"{what}: the daemon did not run it: {taken.note}")
                continue
            runs = triggering.runs_of(self.store, taken)
            ids = ", ".join(f"{r.run_id} {r.job}" for r in runs)
            self.say(f"{what}: the daemon started runs {ids}")


class BaseScreen(Screen[None]):
    """A screen with the daemon's line on top and the status line at the bottom."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter"),
        Binding("escape", "back", "back"),
    ]
    filter_text = ""
    is_mounted_once = False

    @property
    def dash(self) -> Dashboard:
        app = self.app
        assert isinstance(app, Dashboard)
        return app

    def compose_header(self) -> ComposeResult:
        yield Static(id="header")

    def compose_footer(self) -> ComposeResult:
        yield Static(self.dash.status_message, id="status")
        yield Input(placeholder="filter by name", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    def on_screen_resume(self) -> None:
        self.show_status(self.dash.status_message)
        if self.is_mounted_once:  # back from a screen above: show what changed meanwhile
            self.reload()
        self.is_mounted_once = True

    def reload(self) -> None:
        self.query_one("#header", Static).update(self.dash.daemon_line())

    def show_status(self, message: str) -> None:
        self.query_one("#status", Static).update(Text(message))

    def action_back(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_class("shown"):
            self._close_filter()
        elif len(self.app.screen_stack) > 2:  # the default screen, then the flows
            self.app.pop_screen()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.value = self.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter()

    def _close_filter(self) -> None:
        self.query_one("#filter", Input).remove_class("shown")
        self.query_one(DataTable).focus()
        shown = f"filter: {self.filter_text}" if self.filter_text else "filter cleared"
        self.dash.say(shown)

    def matches(self, *names: str) -> bool:
        return not self.filter_text or any(self.filter_text in n for n in names)


class FlowsScreen(BaseScreen):
    """Home: every flow, its jobs as an `after` tree, schedule, next fire, last status, ON/OFF."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space,p", "switch", "ON/OFF"),
        Binding("t", "trigger", "trigger"),
        Binding("enter", "open", "grid", show=True, priority=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.model: model.FlowsModel | None = None
        self._shown: list[tuple[Any, ...]] = []
        self._added = 0  # rows of _shown in the table so far

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield DataTable(id="flows", cursor_type="row", zebra_stripes=False)
        yield from self.compose_footer()

    def _add_columns(self, rows: list[model.JobRow]) -> None:
        """Columns sized to the names shown and the terminal's width (once, at the start)."""
        table = self.query_one("#flows", DataTable)
        longest = max((len(r.job) + 2 * r.depth + (2 if r.depth else 0) for r in rows), default=8)
        self._widths = {"on": 3, "job": max(10, min(28, longest)), "next": 11, "last": 17}
        rest = self.app.size.width - sum(self._widths.values()) - 2 * 5 - 2
        self._widths["schedule"] = max(10, rest)
        for key, label in (("on", ""), ("job", "flow / job"), ("schedule", "schedule"),
                           ("next", "next"), ("last", "last")):  # fmt: skip
            table.add_column(label, key=key, width=self._widths[key])

    def reload(self) -> None:
        super().reload()
        config = self.dash.config
        table = self.query_one("#flows", DataTable)
        if config is None:
            self.model = None
            table.clear()
            self._shown = []
            return
        now = self.dash.now()
        self.model = model.flows_model(config, self.dash.store, now)
        if not table.columns:
            self._add_columns(self.model.rows)
        rows = [r for r in self.model.rows if self.matches(r.flow, r.job)]
        shown = [self._cells(r, now) for r in rows]
        keys = [r.job for r in rows]
        if keys == [row[0] for row in self._shown]:
            for old, new in zip(self._shown[: self._added], shown, strict=False):
                for column, (before, after) in enumerate(zip(old[1:], new[1:], strict=True)):
                    if str(before) != str(after):
                        table.update_cell(new[0], _FLOW_COLUMNS[column], after)
            self._shown = shown
            return
        selected = self.selected_job()
        table.clear()
        self._shown, self._added = shown, 0
        wanted = keys.index(selected) + 1 if selected in keys else 0
        self._add_rows(max(self.app.size.height + FIRST_ROWS, wanted))
        if selected in keys:
            table.move_cursor(row=keys.index(selected))

    def _add_rows(self, count: int) -> None:
        """Add the next `count` rows; the rest follow in batches once the screen is drawn.

        Textual's DataTable measures every cell it is given, so a thousand jobs at once would
        hold the first screen back; a screenful and a margin come first.
        """
        table = self.query_one("#flows", DataTable)
        start = self._added
        for row in self._shown[start : start + count]:
            table.add_row(*row[1:], key=row[0])
        self._added = min(len(self._shown), start + count)
        if self._added < len(self._shown):
            batch = self._added
            self.set_timer(0.02, lambda: self._more_rows(batch))

    def _more_rows(self, expected: int) -> None:
        if self._added == expected:  # not rebuilt meanwhile (a filter, a reload)
            self._add_rows(BATCH_ROWS)

    def _cells(self, row: model.JobRow, now: datetime) -> tuple[Any, ...]:
        w = self._widths
        on: Text | str = ""
        if row.first:
            on = Text("OFF", style="bold yellow") if row.paused_by else Text("ON", style="green")
        indent = "  " * row.depth + ("└ " if row.depth else "")
        name = Text(_fit(indent + row.job, w["job"]), style="bold" if row.first else "")
        nxt = model.relative(row.next_fire, now) if row.first else ""
        return (row.job, on, name, _fit(row.meaning, w["schedule"]), nxt,
                _status_text(row.last_status))  # fmt: skip

    def selected_job(self) -> str | None:
        table = self.query_one("#flows", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def selected_flow(self) -> Flow | None:
        job = self.selected_job()
        if job is None or self.model is None:
            self.dash.say("no flow selected")
            return None
        return self.model.flow_of(job)

    def action_switch(self) -> None:
        flow = self.selected_flow()
        if flow is not None:
            self.dash.toggle(flow)

    def action_trigger(self) -> None:
        flow = self.selected_flow()
        if flow is not None:
            self.dash.trigger(flow.jobs[0], None, "manual", f"trigger {flow.name}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        flow = self.selected_flow()
        if flow is not None:
            self.app.push_screen(GridScreen(flow.name))


FIRST_ROWS = 10  # rows beyond a screenful added before the first screen is drawn
BATCH_ROWS = 200  # then this many per step
_FLOW_COLUMNS = ("on", "job", "schedule", "next", "last")


class GridScreen(BaseScreen):
    """A flow's jobs × its last logical times (as many as fit), one colored letter per run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("t", "trigger", "trigger"),
        Binding("c", "clear", "clear"),
    ]

    def __init__(self, flow: str) -> None:
        super().__init__()
        self.flow_name = flow
        self.grid: model.Grid | None = None
        self._shown: tuple[Any, ...] = ()

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Static(id="title")
        yield DataTable(id="grid", cursor_type="cell", cell_padding=0)
        yield Static(id="detail")
        yield Static(_legend(), id="legend")
        yield from self.compose_footer()

    def flow(self) -> Flow | None:
        config = self.dash.config
        return next((f for f in config.flows if f.name == self.flow_name), None) if config else None

    def reload(self) -> None:
        super().reload()
        flow = self.flow()
        table = self.query_one("#grid", DataTable)
        if flow is None:
            self.query_one("#title", Static).update(
                f"flow {self.flow_name} is no longer in the file"
            )
            table.clear(columns=True)
            return
        name_width = min(24, max(len(j) for j in flow.jobs) + 1)
        columns = max(1, min(60, (self.app.size.width - name_width - 3) // 3))
        self.grid = model.grid(self.dash.store, flow, columns)
        jobs = [j for j in flow.jobs if self.matches(j)]
        cells = tuple((j, t, r.run_id, r.status) for (j, t), r in self.grid.cells.items())
        shown = (tuple(self.grid.times), tuple(jobs), cells)
        self._title(flow)
        if shown != self._shown:
            row, column = table.cursor_coordinate
            table.clear(columns=True)
            table.add_column("job", key="job", width=name_width)
            for index, _ in enumerate(self.grid.times):
                table.add_column("", key=str(index), width=3)
            for job in jobs:
                runs = [self.grid.run(job, t) for t in self.grid.times]
                row_cells = [_cell(r.status if r else None) for r in runs]
                table.add_row(Text(_fit(job, name_width)), *row_cells, key=job)
            if self._shown == () and self.grid.times:  # first show: the newest time of the root
                row, column = 0, len(self.grid.times)
            table.move_cursor(row=min(row, max(0, len(jobs) - 1)), column=column)
            self._shown = shown
        self._detail()

    def _title(self, flow: Flow) -> None:
        assert self.grid is not None
        times = self.grid.times
        zone = flow.timezone
        span = ""
        if times:
            first, last = (
                t.astimezone(zone).strftime("%Y-%m-%d %H:%M") for t in (times[0], times[-1])
            )
            span = f" · {len(times)} logical times, {first} … {last} ({zone.key})"
        self.query_one("#title", Static).update(Text(f"flow {flow.name}{span}", style="bold"))

    def selected(self) -> tuple[str | None, RunRecord | None, datetime | None]:
        """The job, run and logical time under the cursor."""
        table = self.query_one("#grid", DataTable)
        if self.grid is None or not table.row_count:
            return None, None, None
        row, column = table.cursor_coordinate
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        job = None if key is None else str(key)
        if column == 0 or column > len(self.grid.times) or job is None:
            return job, None, None
        moment = self.grid.times[column - 1]
        return job, self.grid.run(job, moment), moment

    def _detail(self) -> None:
        job, run, moment = self.selected()
        flow = self.flow()
        zone = flow.timezone if flow else local_zone()
        if job is None:
            text = Text("no runs yet" if self.grid and not self.grid.times else "")
        elif moment is None:
            text = Text(f"{job}: ← → to pick a logical time, enter opens the run")
        elif run is None:
            text = Text(f"{job} at {moment.astimezone(zone).isoformat()}: no run")
        else:
            text = Text(f"{job} at {moment.astimezone(zone).isoformat()}: run {run.run_id} ")
            text += _status_text(run.status)
            extra = [f"{run.trigger}", f"attempt {run.attempts}"]
            if run.exit_code is not None:
                extra.append(f"exit {run.exit_code}")
            if run.host:
                extra.append(f"on {run.host}")
            text.append(" (" + ", ".join(extra) + ")")
        self.query_one("#detail", Static).update(text)

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self._detail()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        _, run, _ = self.selected()
        if run is None:
            self.dash.say("no run there to open")
            return
        self.app.push_screen(RunScreen(run.run_id))

    def action_trigger(self) -> None:
        flow = self.flow()
        if flow is not None:
            self.dash.trigger(flow.jobs[0], None, "manual", f"trigger {flow.name}")

    def action_clear(self) -> None:
        _, run, _ = self.selected()
        clear(self.dash, run)


def clear(dash: Dashboard, run: RunRecord | None) -> None:
    """Rerun a failed run's logical time from its job downstream, through the daemon."""
    if run is None:
        dash.say("clear: select a failed run first")
        return
    if run.status not in model.CLEARABLE:
        dash.say(f"clear: run {run.run_id} is {run.status}; only a failed run is cleared")
        return
    what = f"clear run {run.run_id} ({run.job})"
    dash.trigger(run.job, run.logical_time, "retry", what)


class RunScreen(BaseScreen):
    """One run: its attempts and its log (`cronflow logs`), followed while it goes on."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("c", "clear", "clear")]

    def __init__(self, run_id: int) -> None:
        super().__init__()
        self.run_id = run_id
        self.view: LogView | None = None
        self._keys: set[tuple[object, ...]] = set()

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Static(id="title")
        yield DataTable(id="attempts", cursor_type="none", cell_padding=1)
        yield RichLog(id="log", wrap=False, markup=False, highlight=False)
        yield from self.compose_footer()

    def on_mount(self) -> None:
        table = self.query_one("#attempts", DataTable)
        for label in ("#", "status", "exit", "duration", "cpu", "peak memory", "host"):
            table.add_column(label, key=label)
        super().on_mount()

    def reload(self) -> None:
        super().reload()
        store = self.dash.store
        if self.view is None:
            run = store.get_run(self.run_id)
            if run is None:
                self.query_one("#title", Static).update(f"run {self.run_id} is not in the history")
                return
            self.view = LogView(store, run)
        else:
            self.view.refresh()
        run = self.view.run
        zone = local_zone()
        if self.dash.config and run.job in self.dash.config.jobs:
            zone = self.dash.config.jobs[run.job].timezone
        moment = run.logical_time.astimezone(zone).isoformat()
        title = Text(f"run {run.run_id} · {run.job} at {moment} · {run.trigger} · ", style="bold")
        title += _status_text(run.status)
        if run.note:
            title.append(f" · {run.note}", style="dim")
        self.query_one("#title", Static).update(title)
        table = self.query_one("#attempts", DataTable)
        table.clear()
        for a in self.view.attempts:
            seconds = (a.finished_at - a.started_at).total_seconds() if a.finished_at else None
            table.add_row(
                str(a.number), _status_text(a.status),
                "-" if a.exit_code is None else str(a.exit_code),
                model.duration_text(seconds),
                "-" if a.cpu_seconds is None else f"{a.cpu_seconds:.2f}s",
                "-" if not a.max_rss_kb else f"{a.max_rss_kb / 1024:.1f} MiB",
                a.host or "here",
            )  # fmt: skip
        log = self.query_one("#log", RichLog)
        for line in self.view.lines():
            if line.key in self._keys:
                continue
            self._keys.add(line.key)
            log.write(_log_text(line.kind, line.text))

    def action_clear(self) -> None:
        clear(self.dash, self.view.run if self.view else None)


def _log_text(kind: str, text: str) -> Text:
    """As `cronflow logs` shows it on a terminal: stderr marked, separators dim."""
    if kind == "separator":
        return Text(text, style="dim")
    if kind == "err":
        return Text("▌ ", style="red") + Text(text, style="red")
    if kind == "marker":
        return Text(text, style="yellow")
    return Text(text)


class HelpScreen(ModalScreen[None]):
    """Every key; any key closes it."""

    def compose(self) -> ComposeResult:
        text = Text("keys\n", style="bold")
        for key, what in KEYS:
            text.append(f"{key:>10}  ", style="bold")
            text.append(f"{what}\n")
        text.append("\nstatus letters:\n", style="bold")
        text += _legend()
        with Vertical():
            yield Static(text)

    def on_key(self, event: Any) -> None:
        event.stop()
        self.app.pop_screen()


def run_ui(config_path: Path, state_dir: Path) -> None:
    Dashboard(config_path, state_dir).run()
