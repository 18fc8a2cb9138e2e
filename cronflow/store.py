"""SQLite: connection setup, migrations, runs/attempts/hooks/output/state; the only SQL module.

Times are stored as INTEGER microseconds since 1970-01-01T00:00Z (UTC). Integers compare,
index and subtract cheaply, and cannot carry a stray offset; every read returns them as aware
UTC datetimes. Ids are AUTOINCREMENT integers, so they ascend and are never reused after a prune.
Every write runs in its own `BEGIN IMMEDIATE` transaction: with WAL, readers never wait, and a
writer waits (up to the busy timeout) for the write lock at the start instead of failing halfway.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cronflow import processes
from cronflow.clock import Clock
from cronflow.errors import CronflowError
from cronflow.lock import prepare_state_folder
from cronflow.records import (
    AttemptEnd,
    AttemptRecord,
    DaemonEvent,
    HookRecord,
    OutputChunk,
    PauseRecord,
    RunRecord,
    TriggerRequest,
    Unfinished,
)

STATUSES = frozenset(
    {"queued", "running", "retrying", "success", "failed", "timeout", "canceled", "skipped",
     "upstream_failed", "missed", "lost"}
)  # fmt: skip
ACTIVE_STATUSES = ("queued", "running", "retrying")
FAILURE_STATUSES = ("failed", "timeout", "canceled", "upstream_failed", "lost")
STREAMS = ("out", "err", "marker")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PRUNE_BATCH = 1000  # runs per prune transaction, so other writers never wait long


def _to_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (UTC)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime given to the store: {moment!r}")
    return (moment - _EPOCH) // _MICROSECOND


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


_INSERT_OUTPUT = (
    "INSERT INTO output (run_id, attempt, hook_id, stream, at, data) VALUES (?, ?, ?, ?, ?, ?)"
)


def _output_values(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Output rows (run_id, attempt, stream, at, data[, hook_id]) as `_INSERT_OUTPUT` takes
    them."""
    values = []
    for row in rows:
        run_id, attempt, stream, at, data, *rest = row
        if stream not in STREAMS:
            raise ValueError(f"unknown output stream {stream!r}")
        if isinstance(data, str):
            raise TypeError("output data must be bytes, not str")
        values.append((run_id, attempt, rest[0] if rest else None, stream, _to_us(at), data))
    return values


def _end_attempt(db: sqlite3.Connection, run_id: int, end: AttemptEnd) -> None:
    _check_status(end.status)
    cursor = db.execute(
        "UPDATE attempts SET finished_at = ?, status = ?, exit_code = ?, cpu_seconds = ?,"
        " max_rss_kb = ? WHERE run_id = ? AND number = ?",
        (_to_us(end.finished_at), end.status, end.exit_code, end.cpu_seconds, end.max_rss_kb,
         run_id, end.number),
    )  # fmt: skip
    if cursor.rowcount != 1:
        raise KeyError(f"no attempt {end.number} of run {run_id}")


_RUN_COLUMNS = (
    "id, job, flow_run_id, logical_time, trigger, status, attempts, started_at, finished_at,"
    " exit_code, note, cpu_seconds, max_rss_kb"
)
# The host of a run's latest attempt: one probe of the attempts primary key per row shown, so
# `history` pays for the rows it prints, never for the million it skips.
_HOST_OF_RUN = "(SELECT host FROM attempts WHERE run_id = runs.id ORDER BY number DESC LIMIT 1)"
_RUN_WIDTH = 14  # columns of a run row: _RUN_COLUMNS and the host


_TRIGGER_COLUMNS = "id, job, logical_time, only, trigger, created_at, taken_at, flow_run_id, note"


def _trigger(row: Sequence[Any]) -> TriggerRequest:
    return TriggerRequest(
        row[0], row[1], _EPOCH + timedelta(microseconds=row[2]), bool(row[3]), row[4],
        _EPOCH + timedelta(microseconds=row[5]), _from_us(row[6]), row[7], row[8],
    )  # fmt: skip


def _run(row: Sequence[Any]) -> RunRecord:
    started, finished = _from_us(row[7]), _from_us(row[8])
    duration = None if started is None or finished is None else (row[8] - row[7]) / 1e6
    return RunRecord(
        row[0], row[1], row[2], _from_us(row[3]), row[4], row[5], row[6],
        started, finished, duration, row[9], row[10], row[11], row[12], row[13],
    )  # fmt: skip


# --- migrations: append-only; never edit one that has shipped -------------------------------

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    statements = [
        "CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
        """CREATE TABLE flow_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL,
            logical_time INTEGER NOT NULL, trigger TEXT NOT NULL, created_at INTEGER NOT NULL)""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            flow_run_id INTEGER NOT NULL REFERENCES flow_runs(id),
            job TEXT NOT NULL, logical_time INTEGER NOT NULL, trigger TEXT NOT NULL,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,
            exit_code INTEGER, note TEXT, cpu_seconds REAL, max_rss_kb INTEGER)""",
        """CREATE TABLE attempts (
            run_id INTEGER NOT NULL REFERENCES runs(id), number INTEGER NOT NULL,
            started_at INTEGER NOT NULL, finished_at INTEGER, status TEXT NOT NULL,
            exit_code INTEGER, cpu_seconds REAL, max_rss_kb INTEGER,
            PRIMARY KEY (run_id, number)) WITHOUT ROWID""",
        """CREATE TABLE hooks (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id),
            attempt INTEGER NOT NULL, hook TEXT NOT NULL, started_at INTEGER NOT NULL,
            finished_at INTEGER, exit_code INTEGER)""",
        # hook_id has no REFERENCES on purpose: deleting a hook would then scan all output.
        """CREATE TABLE output (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL REFERENCES runs(id),
            attempt INTEGER NOT NULL, hook_id INTEGER,
            stream TEXT NOT NULL CHECK (stream IN ('out', 'err', 'marker')),
            at INTEGER NOT NULL, data BLOB NOT NULL)""",
        "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE paused (flow TEXT PRIMARY KEY, since INTEGER NOT NULL)",
        "CREATE INDEX runs_job ON runs (job, id DESC)",
        "CREATE INDEX runs_status ON runs (status, id DESC)",
        "CREATE INDEX runs_job_status ON runs (job, status, id DESC)",
        "CREATE INDEX runs_job_logical_time ON runs (job, logical_time)",
        "CREATE INDEX runs_logical_time ON runs (logical_time)",
        "CREATE INDEX runs_flow_run ON runs (flow_run_id)",
        "CREATE INDEX runs_created_at ON runs (created_at)",
        "CREATE INDEX runs_finished_at ON runs (finished_at)",
        "CREATE INDEX flow_runs_created_at ON flow_runs (created_at)",
        "CREATE INDEX hooks_run ON hooks (run_id, id)",
        "CREATE INDEX output_run ON output (run_id, attempt, id)",
    ]
    for statement in statements:
        db.execute(statement)


@migration
def m002_run_owner(db: sqlite3.Connection) -> None:
    # The pid of the process driving a run, so a daemon starting up marks `lost` only the
    # runs of dead processes, never those of a `cronflow run` still going in a terminal.
    db.execute("ALTER TABLE runs ADD COLUMN pid INTEGER")


@migration
def m003_process_identity(db: sqlite3.Connection) -> None:
    # pid + start time + boot id: a reused pid can no longer pass for a run's live owner, and
    # each attempt's process group is known, so a starting daemon can find a dead daemon's
    # jobs still running. Pauses belong to a job: a flow's name changes as roots come and go.
    for statement in (
        "ALTER TABLE runs ADD COLUMN pid_start INTEGER",
        "ALTER TABLE runs ADD COLUMN boot_id TEXT",
        "ALTER TABLE attempts ADD COLUMN pgid INTEGER",
        "ALTER TABLE attempts ADD COLUMN pgid_start INTEGER",
        "ALTER TABLE paused RENAME COLUMN flow TO job",
    ):
        db.execute(statement)


@migration
def m004_remote_attempts(db: sqlite3.Connection) -> None:
    # Where an attempt ran (a worker's host name; NULL on the daemon's machine) and the id of
    # its message to that worker, so a restarted daemon can re-attach to it.
    db.execute("ALTER TABLE attempts ADD COLUMN host TEXT")
    db.execute("ALTER TABLE attempts ADD COLUMN remote_id TEXT")


@migration
def m005_daemon_log_and_pauses(db: sqlite3.Connection) -> None:
    # What `cronflow why` and `cronflow check` need to know about the past: when the daemon
    # started and stopped, when it noticed a suspend or clock jump (event 'asleep', from `at`
    # to `until`), and when each job was paused and resumed.
    db.execute(
        """CREATE TABLE daemon_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL,
            at INTEGER NOT NULL, until INTEGER, pid INTEGER)"""
    )
    db.execute("CREATE INDEX daemon_log_at ON daemon_log (at)")
    db.execute(
        """CREATE TABLE pause_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
            paused_at INTEGER NOT NULL, resumed_at INTEGER)"""
    )
    db.execute("CREATE INDEX pause_log_job ON pause_log (job, paused_at)")


@migration
def m006_trigger_requests(db: sqlite3.Connection) -> None:
    # `cronflow trigger` (and the UI's trigger and clear) ask the running daemon to start a
    # flow run: a row here plus a nudge. The daemon takes it at its next wake-up, creating the
    # flow run in the same transaction, so a request is run once and never lost if it is busy.
    db.execute(
        """CREATE TABLE trigger_requests (
            id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
            logical_time INTEGER NOT NULL, only INTEGER NOT NULL, trigger TEXT NOT NULL,
            created_at INTEGER NOT NULL, taken_at INTEGER, flow_run_id INTEGER, note TEXT)"""
    )
    db.execute(
        "CREATE INDEX trigger_requests_pending ON trigger_requests (id) WHERE taken_at IS NULL"
    )


# The oldest schema the read queries work on (read-only stores do not migrate). Raise it when a
# migration adds something that `history`, `logs`, `list` or `status` cannot do without.
READER_MIN_SCHEMA = 1
# The first schema with attempts.host and remote_id. A reader of an older database shows no
# hosts instead of refusing it: no remote attempt can be in it.
HOSTS_SCHEMA = 4
# The first schema with daemon_log and pause_log; readers of an older one see no such past.
DAEMON_LOG_SCHEMA = 5
# The first schema with trigger_requests (`cronflow trigger`, the UI's trigger and clear).
TRIGGERS_SCHEMA = 6


def _file_uri(path: Path, query: str) -> str:
    """An SQLite `file:` URI for `path`; `%`, `?` and `#` are the characters it must escape."""
    escaped = str(path.absolute()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{escaped}?{query}"


_SQLITE_CANTOPEN = 14
_SQLITE_READONLY_DIRECTORY = 8 | (6 << 8)

# --- errors ----------------------------------------------------------------------------------

_P = ParamSpec("_P")
_R = TypeVar("_R")

# SQLite primary result codes that mean "the environment", not "a bug in cronflow".
_USER_ERRORS = {
    5: "database is locked: {path} (another cronflow is writing; try again)",  # BUSY
    6: "database is locked: {path} (another cronflow is writing; try again)",  # LOCKED
    8: "database is read-only: {path} (check its permissions and the disk)",  # READONLY
    10: "disk I/O error on database: {path}",  # IOERR
    11: "database is damaged: {path}",  # CORRUPT
    13: "database or disk is full: {path} (free space on its file system; cronflow goes on by"
    " itself once there is room, and `cronflow prune` then keeps it smaller)",  # FULL
    14: "cannot open database: {path} (check the state directory)",  # CANTOPEN
    26: "not a cronflow database: {path}",  # NOTADB
}


def _user_errors(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a locked/full/read-only database into a one-line CronflowError naming the path."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except sqlite3.DatabaseError as error:
            code = getattr(error, "sqlite_errorcode", None)
            template = _USER_ERRORS.get(code & 0xFF) if code is not None else None
            if template is None:
                raise
            raise CronflowError(template.format(path=args[0].path)) from error

    return wrapper


class _Transaction:
    """`with store._write() as db`: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on any error
    (also after a failed COMMIT, disk full: never left open). A class, not a generator-based
    context manager: it is on the path of every job, twice."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None:
                self.conn.execute("COMMIT")
        finally:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")


# --- the store -------------------------------------------------------------------------------


class Store:
    """The state database: one connection, used from one thread; migrates on open.

    `readonly=True` is for the commands that only show things (`history`, `logs`, `list`,
    `status`): the file is opened with SQLite's `mode=ro`, so they work on a read-only database
    or state folder, never create or chmod a file, and never migrate (see `_check_readable`).
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 5000,
        clock: Clock | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._clock = clock or Clock()
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._hosts = False  # the schema has attempts.host and remote_id (set by _open)
        self._open()

    # -- lifecycle

    @_user_errors
    def _open(self) -> None:
        if self.readonly:
            self._conn = self._connect_readonly()
        else:
            self._prepare_files()
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=self._busy_timeout_ms / 1000
            )
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            if self.readonly:
                self._check_readable()
            else:
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA foreign_keys = ON")
                self._migrate()
            self._hosts = self._user_version() >= HOSTS_SCHEMA
        except BaseException:
            self._conn.close()
            self._conn = None
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        """A `mode=ro` connection that has read the schema (which opens the WAL files).

        SQLite 3.40 reads a WAL database read-only when its -wal and -shm files exist, or when
        it may create them in the folder. A read-only folder without them (the last writer
        closed, so SQLite deleted them) fails with READONLY_DIRECTORY or CANTOPEN. Then, if no
        -wal file holds anything, every commit is in the database file itself and no writer
        is active (an open WAL connection keeps a -wal file, and a new one would have to create
        it in this folder): `immutable=1` reads that file as it is. With a non-empty -wal but no
        -shm, the newest runs are only in the -wal and cannot be read without writing: refuse.
        """
        timeout = self._busy_timeout_ms / 1000
        conn = sqlite3.connect(
            _file_uri(self.path, "mode=ro"), uri=True, isolation_level=None, timeout=timeout
        )
        try:
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        except sqlite3.OperationalError as error:
            conn.close()
            code = getattr(error, "sqlite_errorcode", 0)
            if code not in (_SQLITE_READONLY_DIRECTORY, _SQLITE_CANTOPEN):
                raise
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise CronflowError(
                    f"cannot read database: {self.path}: its folder is read-only and"
                    f" {self.path.name}-shm is missing, which SQLite needs to read the"
                    f" {self.path.name}-wal file; make the folder writable"
                ) from error
        return sqlite3.connect(
            _file_uri(self.path, "mode=ro&immutable=1"),
            uri=True,
            isolation_level=None,
            timeout=timeout,
        )

    def _check_readable(self) -> None:
        """A reader takes the schema as it is: newer is refused, older is read if it can be.

        The read queries need nothing added after READER_MIN_SCHEMA (m002 and m003 only added
        what the daemon reads; `paused_jobs` reads m003's renamed column by position; m004's
        hosts are read only when present, see HOSTS_SCHEMA), so a database not yet migrated by
        a writer is shown as it is; an older one than that names the command that upgrades it.
        """
        version = self._user_version()
        known = len(MIGRATIONS)
        if version > known:
            raise CronflowError(
                f"database {self.path} was written by a newer cronflow "
                f"(schema {version}, this one knows {known}); upgrade cronflow"
            )
        if version < READER_MIN_SCHEMA:
            raise CronflowError(
                f"database {self.path} has an older schema ({version}; this cronflow reads "
                f"{READER_MIN_SCHEMA} to {known}); a command that records something "
                "(`cronflow daemon`, `run`, `pause`, `resume` or `prune`) upgrades it"
            )

    def _prepare_files(self) -> None:
        """Folder 0700 (if we create it, or others can write ours) and database 0600 before
        SQLite opens it.

        SQLite creates the -wal and -shm files with the database file's permissions, so they
        are 0600 too; leftovers from an older, laxer run are tightened here. A read-only reader
        of a 0400 database leaves them 0400, which would make this writer fail even once the
        database is writable again: they are set to 0600 as well.
        """
        try:
            prepare_state_folder(self.path.parent)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
                os.chmod(self.path, 0o600)
            for name in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                if name.exists() and stat.S_IMODE(name.stat().st_mode) != 0o600:
                    os.chmod(name, 0o600)
        except OSError as error:
            raise CronflowError(f"cannot open database: {self.path}: {error.strerror}") from error

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        for number, step in enumerate(MIGRATIONS, start=1):
            if self._user_version() >= number:
                continue
            with self._write():
                if self._user_version() >= number:  # another process migrated meanwhile
                    continue
                step(self.conn)
                self.conn.execute(
                    "INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                    (step.__name__, _to_us(self._clock.now())),
                )
                self.conn.execute(f"PRAGMA user_version = {number}")
        if self._user_version() > known:
            raise CronflowError(
                f"database {self.path} was written by a newer cronflow "
                f"(schema {self._user_version()}, this one knows {known}); upgrade cronflow"
            )

    def _user_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    @property
    def _run_columns(self) -> str:
        """The columns `_run` reads; a host only where the schema has one."""
        return f"{_RUN_COLUMNS}, {_HOST_OF_RUN if self._hosts else 'NULL'}"

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, for tests and the bench; cronflow's other modules use the methods."""
        if self._conn is None:
            raise RuntimeError(f"store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> _Transaction:
        """One write transaction; IMMEDIATE takes the write lock up front (waiting if busy)."""
        return _Transaction(self.conn)

    # -- writes

    @_user_errors
    def new_flow_run(self, flow: str, logical_time: datetime, trigger: str) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO flow_runs (flow, logical_time, trigger, created_at)"
                " VALUES (?, ?, ?, ?)",
                (flow, _to_us(logical_time), trigger, _to_us(self._clock.now())),
            )
        return cursor.lastrowid

    @_user_errors
    def create_flow_run(
        self,
        flow: str,
        logical_time: datetime,
        trigger: str,
        jobs: Sequence[str],
        status: str = "queued",
        note: str | None = None,
        finished_at: datetime | None = None,
    ) -> tuple[int, dict[str, int]]:
        """A flow run and one run per job, in one transaction; returns their ids."""
        _check_status(status)
        now = _to_us(self._clock.now())
        when = _to_us(logical_time)
        done = None if finished_at is None else _to_us(finished_at)
        with self._write() as db:
            return _insert_flow_run(db, flow, when, trigger, jobs, status, note, done, now)

    @_user_errors
    def create_flow_runs(
        self, flow_runs: Sequence[tuple[str, datetime, str, Sequence[str]]]
    ) -> list[tuple[int, dict[str, int]]]:
        """`create_flow_run` of each (flow, logical time, trigger, jobs), all `queued`, in one
        transaction; their ids in the same order."""
        now = _to_us(self._clock.now())
        with self._write() as db:
            return [
                _insert_flow_run(db, flow, _to_us(when), trigger, jobs, "queued", None, None, now)
                for flow, when, trigger, jobs in flow_runs
            ]

    @_user_errors
    def forget_flow_runs(self, flow_run_ids: Sequence[int]) -> None:
        """Delete flow runs created ahead that never started (every run `queued`, no attempt):
        a stopped backfill leaves in history only what it ran."""
        ids = json.dumps(list(flow_run_ids))
        with self._write() as db:
            db.execute(
                "DELETE FROM runs WHERE flow_run_id IN (SELECT value FROM json_each(?))"
                " AND status = 'queued' AND NOT EXISTS (SELECT 1 FROM attempts"
                " WHERE attempts.run_id = runs.id)",
                (ids,),
            )
            db.execute(
                "DELETE FROM flow_runs WHERE id IN (SELECT value FROM json_each(?))"
                " AND NOT EXISTS (SELECT 1 FROM runs WHERE flow_run_id = flow_runs.id)",
                (ids,),
            )

    @_user_errors
    def new_run(
        self,
        flow_run_id: int,
        job: str,
        logical_time: datetime,
        trigger: str,
        status: str = "queued",
        note: str | None = None,
    ) -> int:
        _check_status(status)
        with self._write() as db:
            # created_at never goes below an earlier run's, even if the clock steps back, so
            # "recorded since" is always one id range (see history).
            me = processes.me()
            cursor = db.execute(
                "INSERT INTO runs (flow_run_id, job, logical_time, trigger, status, note, pid,"
                " pid_start, boot_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " max(?, coalesce((SELECT max(created_at) FROM runs), 0)))",
                (flow_run_id, job, _to_us(logical_time), trigger, status, note, me.pid, me.start,
                 me.boot, _to_us(self._clock.now())),
            )  # fmt: skip
        return cursor.lastrowid

    @_user_errors
    def update_run(
        self,
        run_id: int,
        *,
        status: str | None = None,
        attempts: int | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        exit_code: int | None = None,
        note: str | None = None,
        cpu_seconds: float | None = None,
        max_rss_kb: int | None = None,
        attempt: AttemptEnd | None = None,
        outputs: Sequence[tuple[Any, ...]] = (),
    ) -> None:
        """Change only the fields given (None means "leave as is"); with `attempt`, record
        that attempt's end in the same transaction (one write where a job ends), and with
        `outputs` these output rows (as `add_outputs` takes them: the marker of output that
        could not be stored goes in with the run's end)."""
        if status is not None:
            _check_status(status)
        changes = {
            "status": status,
            "attempts": attempts,
            "started_at": None if started_at is None else _to_us(started_at),
            "finished_at": None if finished_at is None else _to_us(finished_at),
            "exit_code": exit_code,
            "note": note,
            "cpu_seconds": cpu_seconds,
            "max_rss_kb": max_rss_kb,
        }
        changes = {column: value for column, value in changes.items() if value is not None}
        if not changes and attempt is None and not outputs:
            return
        values = _output_values(outputs)
        assignments = ", ".join(f"{column} = ?" for column in changes)
        with self._write() as db:
            if values:
                db.executemany(_INSERT_OUTPUT, values)
            if attempt is not None:
                _end_attempt(db, run_id, attempt)
            if changes:
                cursor = db.execute(
                    f"UPDATE runs SET {assignments} WHERE id = ?", (*changes.values(), run_id)
                )
                if cursor.rowcount != 1:
                    raise KeyError(f"no run {run_id}")

    @_user_errors
    def start_attempt(
        self,
        run_id: int,
        number: int,
        started_at: datetime,
        pgid: int | None = None,
        pgid_start: int | None = None,
        host: str | None = None,
        remote_id: str | None = None,
    ) -> None:
        """Record attempt `number` as running in process group `pgid` (its leader started at
        `pgid_start`) on `host` (None: this machine), sent to a worker as message `remote_id`
        if remote, and its run as running (started at its first attempt); the run's attempt
        count follows it. One transaction: this is on the path of every fire."""
        with self._write() as db:
            db.execute(
                "INSERT INTO attempts (run_id, number, started_at, status, pgid, pgid_start,"
                " host, remote_id) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (run_id, number, _to_us(started_at), pgid, pgid_start, host, remote_id),
            )
            db.execute(
                "UPDATE runs SET attempts = max(attempts, ?), status = 'running',"
                " started_at = coalesce(started_at, ?) WHERE id = ?",
                (number, _to_us(started_at), run_id),
            )

    @_user_errors
    def queue_remote_attempt(
        self, run_id: int, number: int, at: datetime, remote_id: str, queue: str
    ) -> None:
        """Attempt `number` is sent to the workers of `queue` as message `remote_id`: it (and
        its run) stay `queued` until a worker takes it. Recorded before it leaves, so a daemon
        that dies meanwhile can follow it again."""
        with self._write() as db:
            db.execute(
                "INSERT INTO attempts (run_id, number, started_at, status, remote_id)"
                " VALUES (?, ?, ?, 'queued', ?)",
                (run_id, number, _to_us(at), remote_id),
            )
            db.execute(
                "UPDATE runs SET attempts = max(attempts, ?), note = ? WHERE id = ?",
                (number, f"queued for {queue}: no worker has taken it yet", run_id),
            )

    @_user_errors
    def attempt_started_remote(
        self,
        run_id: int,
        number: int,
        at: datetime,
        host: str,
        pgid: int | None,
        pgid_start: int | None,
    ) -> None:
        """A worker took attempt `number`: where, its process group, and since when."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE attempts SET status = 'running', started_at = ?, host = ?, pgid = ?,"
                " pgid_start = ? WHERE run_id = ? AND number = ?",
                (_to_us(at), host, pgid, pgid_start, run_id, number),
            )
            db.execute(
                "UPDATE runs SET status = 'running', note = NULL,"
                " started_at = coalesce(started_at, ?) WHERE id = ?",
                (_to_us(at), run_id),
            )
        if cursor.rowcount != 1:
            raise KeyError(f"no attempt {number} of run {run_id}")

    @_user_errors
    def adopt_runs(self, run_ids: Sequence[int]) -> None:
        """This process drives `run_ids` from now on (a daemon following a dead one's runs)."""
        me = processes.me()
        with self._write() as db:
            db.executemany(
                "UPDATE runs SET pid = ?, pid_start = ?, boot_id = ? WHERE id = ?",
                [(me.pid, me.start, me.boot, run_id) for run_id in run_ids],
            )

    @_user_errors
    def finish_attempt(
        self,
        run_id: int,
        number: int,
        *,
        finished_at: datetime,
        status: str,
        exit_code: int | None,
        cpu_seconds: float | None,
        max_rss_kb: int | None,
    ) -> None:
        end = AttemptEnd(number, finished_at, status, exit_code, cpu_seconds, max_rss_kb)
        with self._write() as db:
            _end_attempt(db, run_id, end)

    @_user_errors
    def start_hook(self, run_id: int, attempt: int, hook: str, started_at: datetime) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO hooks (run_id, attempt, hook, started_at) VALUES (?, ?, ?, ?)",
                (run_id, attempt, hook, _to_us(started_at)),
            )
        return cursor.lastrowid

    @_user_errors
    def finish_hook(self, hook_id: int, finished_at: datetime, exit_code: int | None) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE hooks SET finished_at = ?, exit_code = ? WHERE id = ?",
                (_to_us(finished_at), exit_code, hook_id),
            )
        if cursor.rowcount != 1:
            raise KeyError(f"no hook {hook_id}")

    def add_output(
        self,
        run_id: int,
        attempt: int,
        stream: str,
        at: datetime,
        data: bytes,
        hook_id: int | None = None,
    ) -> None:
        self.add_outputs([(run_id, attempt, stream, at, data, hook_id)])

    @_user_errors
    def add_outputs(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Many chunks in one transaction: (run_id, attempt, stream, at, data[, hook_id])."""
        values = _output_values(rows)
        if not values:
            return
        with self._write() as db:
            db.executemany(_INSERT_OUTPUT, values)

    @_user_errors
    def set_state(self, key: str, value: str) -> None:
        self.set_states({key: value})

    @_user_errors
    def set_states(self, values: dict[str, str]) -> None:
        """Several state keys in one transaction."""
        with self._write() as db:
            db.executemany(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def defer_checkpoints(self) -> None:
        """Let SQLite copy the WAL into the database (a 4-6 ms fdatasync) inside a write only
        past 10,000 pages instead of 1,000: the daemon calls `checkpoint` when nothing is about
        to fire, and the higher mark only bounds the WAL when fires never pause."""
        self.conn.execute("PRAGMA wal_autocheckpoint = 10000")

    @_user_errors
    def checkpoint(self) -> None:
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @_user_errors
    def delete_state(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM state WHERE key = ?", (key,))

    @_user_errors
    def set_paused(self, jobs: Sequence[str], paused: bool, now: datetime) -> None:
        """Pause `jobs` (keeping the first `since`), or resume them: a flow is paused while
        any of its jobs is."""
        with self._write() as db:
            if paused:
                for job in jobs:
                    added = db.execute(
                        "INSERT OR IGNORE INTO paused (job, since) VALUES (?, ?)",
                        (job, _to_us(now)),
                    ).rowcount
                    if added:
                        db.execute(
                            "INSERT INTO pause_log (job, paused_at) VALUES (?, ?)",
                            (job, _to_us(now)),
                        )
            else:
                db.executemany("DELETE FROM paused WHERE job = ?", [(job,) for job in jobs])
                db.executemany(
                    "UPDATE pause_log SET resumed_at = ? WHERE job = ? AND resumed_at IS NULL",
                    [(_to_us(now), job) for job in jobs],
                )

    @_user_errors
    def prune(self, before: datetime) -> int:
        """Delete runs that finished before `before`, with their attempts, hooks and output.

        A finished run without `finished_at` (skipped, missed...) counts as finished when it
        was recorded. Works in batches so that a big prune never holds the write lock long.
        Flow runs left without runs are deleted too. Returns how many runs were deleted.
        """
        limit = _to_us(before)
        deleted = 0
        while True:
            batch = self._prune_batch(limit)
            deleted += batch
            if batch < _PRUNE_BATCH:
                break
        with self._write() as db:  # flow runs that never got a run (a crash between inserts)
            db.execute(
                "DELETE FROM flow_runs WHERE created_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM runs WHERE flow_run_id = flow_runs.id)",
                (limit,),
            )
            db.execute("DELETE FROM daemon_log WHERE coalesce(until, at) < ?", (limit,))
            db.execute("DELETE FROM pause_log WHERE resumed_at < ?", (limit,))
        return deleted

    def _prune_batch(self, limit: int) -> int:
        with self._write() as db:
            doomed = db.execute(
                "SELECT id, flow_run_id FROM runs WHERE finished_at < ?"
                " UNION ALL SELECT id, flow_run_id FROM runs WHERE finished_at IS NULL"
                " AND created_at < ? AND status NOT IN ('queued', 'running', 'retrying')"
                " LIMIT ?",
                (limit, limit, _PRUNE_BATCH),
            ).fetchall()
            if not doomed:
                return 0
            run_ids = json.dumps([row[0] for row in doomed])
            for table, column in (("output", "run_id"), ("hooks", "run_id"),
                                  ("attempts", "run_id"), ("runs", "id")):  # fmt: skip
                db.execute(
                    f"DELETE FROM {table} WHERE {column} IN (SELECT value FROM json_each(?))",
                    (run_ids,),
                )
            db.execute(
                "DELETE FROM flow_runs WHERE id IN (SELECT value FROM json_each(?))"
                " AND NOT EXISTS (SELECT 1 FROM runs WHERE flow_run_id = flow_runs.id)",
                (json.dumps(sorted({row[1] for row in doomed})),),
            )
        return len(doomed)

    @_user_errors
    def unfinished_runs(self, run_id: int | None = None) -> list[Unfinished]:
        """Runs queued, running or retrying (only run `run_id`, if given), oldest first, with
        their owner process, the process groups of their unfinished attempts and the remote ids
        of the remote ones."""
        remote = (
            "(SELECT json_group_array(json_array(number, remote_id)) FROM attempts"
            "  WHERE run_id = runs.id AND finished_at IS NULL AND remote_id IS NOT NULL)"
            if self._hosts
            else "'[]'"
        )
        rows = self.conn.execute(
            f"SELECT {self._run_columns}, pid, pid_start, boot_id,"
            " (SELECT json_group_array(json_array(pgid, pgid_start)) FROM attempts"
            "  WHERE run_id = runs.id AND finished_at IS NULL AND pgid IS NOT NULL),"
            f" {remote} FROM runs WHERE status IN ('queued', 'running', 'retrying')"
            " AND (:id IS NULL OR id = :id) ORDER BY id",
            {"id": run_id},
        ).fetchall()
        w = _RUN_WIDTH
        return [
            Unfinished(
                _run(row),
                row[w],
                row[w + 1],
                row[w + 2],
                tuple((g[0], g[1]) for g in json.loads(row[w + 3])),
                tuple((a[0], a[1]) for a in json.loads(row[w + 4])),
            )  # fmt: skip
            for row in rows
        ]

    @_user_errors
    def mark_lost(self, notes: dict[int, str], now: datetime) -> list[RunRecord]:
        """Unfinished runs among those in `notes` become `lost` (finished now, with their
        note), their unfinished attempts too; returns them."""
        with self._write() as db:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?))"
                    " AND status IN ('queued', 'running', 'retrying')",
                    (json.dumps(list(notes)),),
                )
            ]
            id_list = json.dumps(ids)
            db.executemany(
                "UPDATE runs SET status = 'lost', finished_at = ?, note = ? WHERE id = ?",
                [(_to_us(now), notes[run_id], run_id) for run_id in ids],
            )
            db.execute(
                "UPDATE attempts SET status = 'lost', finished_at = ?"
                " WHERE finished_at IS NULL AND run_id IN (SELECT value FROM json_each(?))",
                (_to_us(now), id_list),
            )
            rows = db.execute(
                f"SELECT {self._run_columns} FROM runs"
                " WHERE id IN (SELECT value FROM json_each(?))"
                " ORDER BY id",
                (id_list,),
            ).fetchall()
        return [_run(row) for row in rows]

    @_user_errors
    def log_daemon(
        self, event: str, at: datetime, until: datetime | None = None, pid: int | None = None
    ) -> None:
        """One line of the daemon's own history: start, stop, or asleep (from `at` to `until`)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO daemon_log (event, at, until, pid) VALUES (?, ?, ?, ?)",
                (event, _to_us(at), None if until is None else _to_us(until), pid),
            )

    # -- reads

    @_user_errors
    def daemon_log(self) -> list[DaemonEvent]:
        """The daemon's starts, stops and noticed sleeps, oldest first (none before m005)."""
        if self._user_version() < DAEMON_LOG_SCHEMA:
            return []
        rows = self.conn.execute("SELECT event, at, until, pid FROM daemon_log ORDER BY id")
        return [DaemonEvent(r[0], _from_us(r[1]), _from_us(r[2]), r[3]) for r in rows]

    @_user_errors
    def pause_log(self, jobs: Sequence[str]) -> list[PauseRecord]:
        """When each of `jobs` was paused and resumed (None: still paused), oldest first."""
        if self._user_version() < DAEMON_LOG_SCHEMA:
            return []
        rows = self.conn.execute(
            "SELECT job, paused_at, resumed_at FROM pause_log"
            " WHERE job IN (SELECT value FROM json_each(?)) ORDER BY paused_at",
            (json.dumps(list(jobs)),),
        )
        return [PauseRecord(r[0], _from_us(r[1]), _from_us(r[2])) for r in rows]

    @_user_errors
    def runs_at(self, job: str, logical_time: datetime) -> list[RunRecord]:
        """Every run of `job` for one logical time, oldest first."""
        return self._runs(
            "WHERE job = ? AND logical_time = ? ORDER BY id", (job, _to_us(logical_time))
        )

    @_user_errors
    def previous_logical_time(self, job: str, before: datetime) -> datetime | None:
        """The latest logical time before `before` at which `job` has a run."""
        row = self.conn.execute(
            "SELECT max(logical_time) FROM runs WHERE job = ? AND logical_time < ?",
            (job, _to_us(before)),
        ).fetchone()
        return _from_us(row[0])

    @_user_errors
    def runs_between(self, jobs: Sequence[str], start: datetime, end: datetime) -> list[RunRecord]:
        """Runs of `jobs` with start <= logical time <= end, oldest first."""
        return self._runs(
            "WHERE job IN (SELECT value FROM json_each(?)) AND logical_time BETWEEN ? AND ?"
            " ORDER BY logical_time, id",
            (json.dumps(list(jobs)), _to_us(start), _to_us(end)),
        )

    @_user_errors
    def last_success(self, job: str) -> RunRecord | None:
        """The successful run of `job` with the latest logical time."""
        found = self._runs(
            "WHERE job = ? AND status = 'success' ORDER BY logical_time DESC, id DESC LIMIT 1",
            (job,),
        )
        return found[0] if found else None

    @_user_errors
    def created_at(self, run_id: int) -> datetime | None:
        """When a run was recorded (queued), for `why`'s "waited for a slot"."""
        row = self.conn.execute("SELECT created_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _from_us(row[0])

    @_user_errors
    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @_user_errors
    def states(self, prefix: str) -> dict[str, str]:
        """Every state key that starts with `prefix`, with its value."""
        rows = self.conn.execute(
            "SELECT key, value FROM state WHERE key >= ? AND key < ?",
            (prefix, prefix + "\U0010ffff"),
        )
        return dict(rows.fetchall())

    @_user_errors
    def paused_jobs(self) -> set[str]:
        # By position: a reader may see a schema before m003, where the column was `flow` (a
        # flow was named after one of its jobs, so its old pauses read as that job's).
        return {row[0] for row in self.conn.execute("SELECT * FROM paused")}

    def _runs(self, where: str, params: Sequence[Any] = ()) -> list[RunRecord]:
        rows = self.conn.execute(f"SELECT {self._run_columns} FROM runs {where}", params).fetchall()
        return [_run(row) for row in rows]

    @_user_errors
    def get_run(self, run_id: int) -> RunRecord | None:
        found = self._runs("WHERE id = ?", (run_id,))
        return found[0] if found else None

    @_user_errors
    def latest_run(self, job: str) -> RunRecord | None:
        found = self._runs("WHERE job = ? ORDER BY id DESC LIMIT 1", (job,))
        return found[0] if found else None

    @_user_errors
    def job_names(self) -> set[str]:
        """Every job with runs in the history (a removed job's too)."""
        return {row[0] for row in self.conn.execute("SELECT DISTINCT job FROM runs")}

    @_user_errors
    def history(
        self,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int | None = 50,
    ) -> list[RunRecord]:
        """Runs newest first (by id); `since` keeps runs recorded at or after that instant.

        A run's recorded time is when `new_run` wrote it, held back from going below an earlier
        run's, so the runs recorded since an instant are exactly those from one id on.
        """
        where: list[str] = []
        params: list[Any] = []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if since is not None:
            # One index probe finds the first such id; the newest-first scans of the (job, id),
            # (status, id) or rowid b-trees then stop there even when few runs match.
            first = self.conn.execute(
                "SELECT id FROM runs INDEXED BY runs_created_at WHERE created_at >= ?"
                " ORDER BY created_at, id LIMIT 1",
                (_to_us(since),),
            ).fetchone()
            if first is None:
                return []
            where.append("id >= ?")
            params.append(first[0])
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        params.append(-1 if limit is None else limit)
        return self._runs(f"{clause}ORDER BY id DESC LIMIT ?", params)

    @_user_errors
    def runs_in_flow_run(self, flow_run_id: int) -> list[RunRecord]:
        return self._runs("WHERE flow_run_id = ? ORDER BY id", (flow_run_id,))

    @_user_errors
    def runs_in_flow_runs(self, flow_run_ids: Sequence[int]) -> list[RunRecord]:
        """The runs of all these flow runs, by id (one query for a whole backfill)."""
        return self._runs(
            "WHERE flow_run_id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(list(flow_run_ids)),),
        )

    @_user_errors
    def active_runs(self) -> list[RunRecord]:
        """Runs queued, running or retrying, oldest first."""
        return self._runs("WHERE status IN ('queued', 'running', 'retrying') ORDER BY id")

    @_user_errors
    def recent_failures(self, limit: int = 5) -> list[RunRecord]:
        """The newest runs that ended failed, timeout, canceled, upstream_failed or lost."""
        # One newest-first index scan per status, merged: an IN list over the (status, id)
        # index would have to sort every failure ever recorded.
        parts = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {self._run_columns} FROM runs WHERE status = '{status}'"
            " ORDER BY id DESC LIMIT :limit)"
            for status in FAILURE_STATUSES
        )
        rows = self.conn.execute(
            f"{parts} ORDER BY id DESC LIMIT :limit", {"limit": limit}
        ).fetchall()
        return [_run(row) for row in rows]

    @_user_errors
    def last_status(self, jobs: Sequence[str]) -> dict[str, str]:
        """Status of each job's newest run; jobs that never ran are left out."""
        rows = self.conn.execute(
            "SELECT j.value, (SELECT status FROM runs WHERE job = j.value"
            " ORDER BY id DESC LIMIT 1) FROM json_each(?) AS j",
            (json.dumps(list(jobs)),),
        )
        return {job: status for job, status in rows if status is not None}

    @_user_errors
    def succeeded_logical_times(self, job: str, start: datetime, end: datetime) -> set[datetime]:
        """Logical times in [start, end] at which `job` has a successful run."""
        rows = self.conn.execute(
            "SELECT DISTINCT logical_time FROM runs WHERE job = ? AND logical_time BETWEEN ? AND ?"
            " AND status = 'success'",
            (job, _to_us(start), _to_us(end)),
        )
        return {_from_us(row[0]) for row in rows}

    @_user_errors
    def attempts(self, run_id: int) -> list[AttemptRecord]:
        hosts = "host, remote_id" if self._hosts else "NULL, NULL"
        rows = self.conn.execute(
            "SELECT run_id, number, started_at, finished_at, status, exit_code, cpu_seconds,"
            f" max_rss_kb, {hosts} FROM attempts WHERE run_id = ? ORDER BY number",
            (run_id,),
        )
        return [AttemptRecord(r[0], r[1], _from_us(r[2]), _from_us(r[3]), *r[4:]) for r in rows]

    @_user_errors
    def hooks(self, run_id: int) -> list[HookRecord]:
        rows = self.conn.execute(
            "SELECT id, run_id, attempt, hook, started_at, finished_at, exit_code FROM hooks"
            " WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [HookRecord(*r[:4], _from_us(r[4]), _from_us(r[5]), r[6]) for r in rows]

    @_user_errors
    def output_count(self, run_id: int, attempt: int) -> int:
        """How many output chunks attempt `attempt` of a run has (hooks' output aside)."""
        row = self.conn.execute(
            "SELECT count(*) FROM output WHERE run_id = ? AND attempt = ? AND hook_id IS NULL",
            (run_id, attempt),
        ).fetchone()
        return int(row[0])

    @_user_errors
    def output(
        self,
        run_id: int,
        attempt: int | None = None,
        stream: str | None = None,
        after_id: int = 0,
    ) -> list[OutputChunk]:
        """Chunks of a run in arrival (id) order; a stream filter keeps marker chunks."""
        where = ["run_id = ?", "id > ?"]
        params: list[Any] = [run_id, after_id]
        if attempt is not None:
            where.append("attempt = ?")
            params.append(attempt)
        if stream is not None:
            if stream not in ("out", "err"):
                raise ValueError(f"unknown output stream {stream!r}")
            where.append("stream IN (?, 'marker')")
            params.append(stream)
        rows = self.conn.execute(
            "SELECT id, run_id, attempt, hook_id, stream, at, data FROM output"
            f" WHERE {' AND '.join(where)} ORDER BY id",
            params,
        )
        return [OutputChunk(*r[:5], _from_us(r[5]), bytes(r[6])) for r in rows]

    # -- trigger requests (`cronflow trigger`, the UI's trigger and clear)

    @_user_errors
    def request_trigger(
        self, job: str, logical_time: datetime, only: bool, trigger: str, now: datetime
    ) -> int:
        """Ask the daemon to run `job`'s flow from `job` (or `job` alone) at `logical_time`."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO trigger_requests (job, logical_time, only, trigger, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (job, _to_us(logical_time), int(only), trigger, _to_us(now)),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_user_errors
    def pending_triggers(self) -> list[TriggerRequest]:
        """Requests no daemon has taken yet, oldest first (empty before schema 5)."""
        if self._user_version() < TRIGGERS_SCHEMA:
            return []
        rows = self.conn.execute(
            f"SELECT {_TRIGGER_COLUMNS} FROM trigger_requests WHERE taken_at IS NULL ORDER BY id"
        ).fetchall()
        return [_trigger(row) for row in rows]

    @_user_errors
    def get_trigger(self, request_id: int) -> TriggerRequest | None:
        if self._user_version() < TRIGGERS_SCHEMA:
            return None
        row = self.conn.execute(
            f"SELECT {_TRIGGER_COLUMNS} FROM trigger_requests WHERE id = ?", (request_id,)
        ).fetchone()
        return None if row is None else _trigger(row)

    @_user_errors
    def take_trigger(
        self, request_id: int, flow: str, jobs: Sequence[str], now: datetime
    ) -> tuple[int, dict[str, int]] | None:
        """Take a pending request: its flow run and queued runs are created in the same
        transaction that marks it taken, so it runs once. None if it was taken already."""
        with self._write() as db:
            row = db.execute(
                "SELECT logical_time, trigger FROM trigger_requests"
                " WHERE id = ? AND taken_at IS NULL",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            created = _insert_flow_run(
                db, flow, row[0], row[1], jobs, "queued", None, None, _to_us(now)
            )
            db.execute(
                "UPDATE trigger_requests SET taken_at = ?, flow_run_id = ? WHERE id = ?",
                (_to_us(now), created[0], request_id),
            )
        return created

    @_user_errors
    def refuse_trigger(self, request_id: int, note: str, now: datetime) -> None:
        """Mark a request taken without a run (the daemon cannot run it), saying why."""
        with self._write() as db:
            db.execute(
                "UPDATE trigger_requests SET taken_at = ?, note = ?"
                " WHERE id = ? AND taken_at IS NULL",
                (_to_us(now), note, request_id),
            )

    @_user_errors
    def data_version(self) -> int:
        """SQLite's `PRAGMA data_version`: changes when another connection commits, so a
        viewer can poll it cheaply (no table read) and reload only after a change."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")


def _insert_flow_run(
    db: sqlite3.Connection,
    flow: str,
    when: int,
    trigger: str,
    jobs: Sequence[str],
    status: str,
    note: str | None,
    done: int | None,
    now: int,
) -> tuple[int, dict[str, int]]:
    """Insert a flow run and one run per job (inside the caller's write transaction)."""
    flow_run_id = db.execute(
        "INSERT INTO flow_runs (flow, logical_time, trigger, created_at) VALUES (?, ?, ?, ?)",
        (flow, when, trigger, now),
    ).lastrowid
    assert flow_run_id is not None
    run_ids = {}
    me = processes.me()
    for job in jobs:
        run_ids[job] = db.execute(
            "INSERT INTO runs (flow_run_id, job, logical_time, trigger, status, note, pid,"
            " pid_start, boot_id, finished_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " max(?, coalesce((SELECT max(created_at) FROM runs), 0)))",
            (flow_run_id, job, when, trigger, status, note, me.pid, me.start, me.boot,
             done, now),
        ).lastrowid  # fmt: skip
    return flow_run_id, run_ids
