"""Attempts on other machines: Celery on Redis carries them, cronflow keeps the rest.

The only module that imports celery and redis. The daemon (or `cronflow run`) stays the
scheduler of record; a worker runs one attempt with the same `runner` as locally.

- An attempt goes out once as a Celery task (JSON only, early ack, prefetch 1) whose message
  is signed with HMAC-SHA256 under a shared secret; a worker refuses what it cannot verify.
- The worker claims the attempt with a lease key (`SET NX`, 30 s) and renews it every 5 s;
  a worker that cannot renew stops its job itself, and a daemon that sees the lease gone
  records the attempt `lost`, so one attempt never runs twice nor runs on unobserved.
- What happens on the worker (started, output, finished) comes back as events on a Redis
  stream read through a consumer group; the daemon acknowledges an event only after SQLite
  has committed it, so a daemon that dies loses nothing and picks the attempt up again. A
  batch the store refuses (locked, disk full) stays held and unacknowledged and is committed
  again at the next turn; past the engine's output deadline its lines are given up (a marker
  stands for them) and a job still running is canceled, never left to run unobserved.
- Cancels and timeouts go through a cancel key that the worker looks at twice a second; its
  runner kills the job's process group — never Celery's revoke, which kills only the pool
  process and orphans the job.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cronflow.errors import CronflowError, Detached, OutputLost
from cronflow.units import format_duration, mask_url

if TYPE_CHECKING:
    from cronflow.clock import Clock
    from cronflow.config import Config
    from cronflow.runner import AttemptResult, Command

try:
    import celery
    import redis
    import redis.asyncio as aioredis
except ImportError as _missing:  # the extra is not installed
    raise CronflowError(
        f"remote execution needs the Celery extra ({_missing.name} is missing):"
        " pip install 'cronflow[celery]'",
        2,
    ) from None

log = logging.getLogger("cronflow")

#: Which attempt a message carries, for the worker's log and `cronflow workers`.
About = dict[str, Any]  # {"job": str, "run_id": int, "attempt": int}

#: Called when a worker takes the attempt: its host, the job's pid (= process group), the
#: pid's start time in ticks, and when it started by the worker's clock.
OnStart = Callable[[str, int | None, int | None, datetime | None], None]

TASK = "cronflow.attempt"
LEASE_SECONDS = 30
HEARTBEAT_SECONDS = 5.0
OUTPUT_EVERY = 0.1  # a worker sends output at most this late (the issue asks <= 250 ms)
GROUP = "daemon"
PREFIX = "cronflow:"
STREAM_MAXLEN = 200_000
#: After asking a worker to cancel, how long to wait for its report beyond the kill grace.
CANCEL_REPORT_SECONDS = 10.0
#: After a lease is seen gone, how long events the worker sent before it may still come.
LATE_EVENTS_SECONDS = 3.0
#: While the store refuses a batch of events, it is committed again this often.
RETRY_SECONDS = 1.0
#: A broker unreachable this long: remote attempts in flight are `lost`.
BROKER_LOST_SECONDS = LEASE_SECONDS


def lease_key(remote_id: str) -> str:
    return f"{PREFIX}lease:{remote_id}"


def cancel_key(remote_id: str) -> str:
    return f"{PREFIX}cancel:{remote_id}"


def worker_key(hostname: str) -> str:
    return f"{PREFIX}worker:{hostname}"


def running_key(hostname: str) -> str:
    return f"{PREFIX}running:{hostname}"


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where the broker is and the secret that signs attempts (env overrides the job file)."""

    broker: str
    secret: bytes

    @property
    def shown(self) -> str:
        return mask_url(self.broker)

    @classmethod
    def from_config(cls, config: Config | None) -> Settings:
        executor = config.executor if config is not None else None
        broker = os.environ.get("CRONFLOW_BROKER_URL") or (executor.broker if executor else None)
        if not broker:
            raise CronflowError(
                "remote execution needs a broker: [executor] broker = \"redis://host:6379/0\","
                " or $CRONFLOW_BROKER_URL",
                2,
            )
        return cls(broker, _secret(executor.secret_file if executor else None))


def _secret(secret_file: str | None) -> bytes:
    text = os.environ.get("CRONFLOW_WORKER_SECRET")
    if not text and secret_file:
        path = Path(secret_file).expanduser()
        try:
            if path.stat().st_mode & 0o077:
                raise CronflowError(
                    f"{path}: others can read the worker secret (mode "
                    f"{path.stat().st_mode & 0o777:04o}); run chmod 600 {path}",
                    2,
                )
            text = path.read_text().strip()
        except OSError as exc:
            raise CronflowError(
                f"{path}: cannot read the worker secret: {exc.strerror}", 2
            ) from None
    if not text:
        raise CronflowError(
            "remote execution needs a shared secret to sign attempts: [executor] secret_file,"
            " or $CRONFLOW_WORKER_SECRET",
            2,
        )
    return text.encode()


def celery_url(url: str) -> str:
    """kombu spells a Unix socket `redis+socket://PATH`; redis-py spells it `unix://PATH`."""
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


def make_app(settings: Settings) -> celery.Celery:
    app = celery.Celery("cronflow", broker=celery_url(settings.broker), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=False,  # early ack: a message is taken once, never redelivered
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # `celery events` and Flower see the attempts
        task_send_sent_event=True,
    )
    return app


# --- the signed attempt message --------------------------------------------------------------


def _canonical(message: dict[str, Any]) -> bytes:
    return json.dumps(message, sort_keys=True, separators=(",", ":")).encode()


def sign(message: dict[str, Any], secret: bytes) -> str:
    return hmac.new(secret, _canonical(message), hashlib.sha256).hexdigest()


def verify(message: object, signature: object, secret: bytes) -> bool:
    if not isinstance(message, dict) or not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(message, secret), signature)


def attempt_message(
    command: Command, remote_id: str, reply: str, queue: str, start_by: float, about: About
) -> dict[str, Any]:
    return {
        "id": remote_id,
        "reply": reply,
        "queue": queue,
        **about,
        "label": f"{about['job']} run {about['run_id']} attempt {about['attempt']}",
        "argv": command.argv,
        "env": command.env,
        "cwd": command.cwd,
        "timeout": command.timeout,
        "kill_grace": command.kill_grace,
        "max_log_bytes": command.max_log_bytes,
        "marker": list(command.marker),
        "start_by": start_by,
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- the daemon's side -----------------------------------------------------------------------


@dataclass
class _Handle:
    """One remote attempt the daemon waits for: its events arrive here."""

    events: asyncio.Queue[tuple[str, dict[str, Any]]]


class RemoteExecutor:
    """Sends attempts to workers and follows them through the event stream.

    One per daemon (or `cronflow run`) process. Its stream name is fixed per state database
    (`token`), so a restarted daemon reads the events its predecessor had not acknowledged.
    """

    def __init__(self, settings: Settings, token: str, clock: Clock) -> None:
        self.settings = settings
        self.stream = f"{PREFIX}events:{token}"
        self.clock = clock
        self.redis = aioredis.Redis.from_url(settings.broker, socket_timeout=10)
        self.app = make_app(settings)
        self.handles: dict[str, _Handle] = {}
        self.reader: asyncio.Task[None] | None = None
        self.last_contact = time.monotonic()
        self._complaint = 0.0  # when the broker's trouble was last logged
        # A stopping daemon leaves attempts that workers run to its successor (a restart or an
        # upgrade kills nothing), instead of cancelling them.
        self.detach = False

    async def start(self) -> None:
        self.reader = asyncio.create_task(self._read_events(), name="remote events")

    async def close(self, forget: bool = False) -> None:
        """Stop reading events; `forget` deletes the stream (a `cronflow run`'s own)."""
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        with contextlib.suppress(Exception):
            if forget:
                await self.redis.delete(self.stream)
            await self.redis.aclose()

    def _complain(self, what: str, exc: Exception) -> None:
        """At most one log line a minute while the broker is in trouble."""
        now = time.monotonic()
        if now - self._complaint >= 60:
            log.error("broker %s %s: %s", self.settings.shown, what, exc)
            self._complaint = now

    # -- events

    async def _read_events(self) -> None:
        """Deliver the stream's events to the attempts waiting for them: first those delivered
        before but never acknowledged (a previous daemon's, or from before a reconnect), then
        new ones as they come."""
        ready = False
        pending_from: str | None = "0"  # None: reading new events
        while True:
            try:
                if not ready:
                    await self._ensure_group()
                    ready = True
                found = await self.redis.xreadgroup(
                    GROUP, "daemon", {self.stream: pending_from or ">"}, count=500, block=1000
                )
                self.last_contact = time.monotonic()
                entries = found[0][1] if found else []
                for entry_id, fields in entries:
                    await self._dispatch(_text(entry_id), fields)
                if pending_from is not None:
                    pending_from = _text(entries[-1][0]) if entries else None
            except (redis.RedisError, OSError) as exc:
                ready = False
                pending_from = "0"  # what was delivered but not acknowledged comes again
                self._complain("unreachable", exc)
                await asyncio.sleep(1.0)

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _dispatch(self, entry_id: str, fields: dict[Any, Any]) -> None:
        try:
            event = json.loads(_text(fields.get(b"e") or fields.get("e")))
            handle = self.handles.get(event["id"]) if isinstance(event, dict) else None
        except (ValueError, KeyError, TypeError):  # not ours: nothing to wait for
            handle = None
        if handle is None:  # an attempt nobody waits for any more (recorded lost): drop it
            await self.ack(entry_id)
            return
        handle.events.put_nowait((entry_id, event))

    async def ack(self, *entry_ids: str) -> None:
        if not entry_ids:
            return
        try:
            await self.redis.xack(self.stream, GROUP, *entry_ids)
        except (redis.RedisError, OSError) as exc:  # delivered again later: output is deduped
            self._complain("refused an acknowledgement", exc)

    # -- one attempt

    async def run(
        self,
        command: Command,
        on_output: Callable[[str, datetime, bytes], None],
        stop: asyncio.Event | None,
        *,
        queue: str,
        queue_timeout: float,
        about: About,
        on_sent: Callable[[str], None],
        on_start: OnStart,
        flush: Callable[[], bool],
    ) -> AttemptResult:
        """Send `command` to a worker of `queue` and follow it to its end. `on_sent` records
        the attempt's remote id before it leaves, so a daemon that dies can follow it again."""
        remote_id = uuid.uuid4().hex
        start_by = time.time() + queue_timeout
        message = attempt_message(command, remote_id, self.stream, queue, start_by, about)
        on_sent(remote_id)
        handle = self._register(remote_id)
        try:
            try:
                await asyncio.wait_for(self._send(message, queue), timeout=15)
            except (Exception, TimeoutError) as exc:  # kombu raises many kinds
                return self._failed(f"cannot send to the broker {self.settings.shown}: {exc}")
            follower = _Follower(self, handle, remote_id, on_output, flush, on_start)
            return await follower.follow(stop, command, queue, queue_timeout, start_by)
        finally:
            self.handles.pop(remote_id, None)

    async def attach(
        self,
        remote_id: str,
        kill_grace: float,
        on_output: Callable[[str, datetime, bytes], None],
        stop: asyncio.Event | None,
        *,
        flush: Callable[[], bool],
        on_start: OnStart,
        stored: int = 0,
    ) -> AttemptResult:
        """Follow an attempt a previous daemon sent (its events wait in the stream);
        `expect` registers it before the event reader starts. `stored` output chunks of it
        are in the store already: the same events, delivered again, are skipped."""
        handle = self.handles.get(remote_id) or self._register(remote_id)
        try:
            follower = _Follower(self, handle, remote_id, on_output, flush, on_start)
            follower.started = True
            follower.seen = stored - 1
            return await follower.follow_started(stop, kill_grace)
        finally:
            self.handles.pop(remote_id, None)

    def expect(self, remote_id: str) -> None:
        """Keep the events of `remote_id` for a coming `attach` (they are not dropped)."""
        self._register(remote_id)

    async def lease_alive(self, remote_id: str) -> bool:
        return bool(await self.redis.exists(lease_key(remote_id)))

    def _register(self, remote_id: str) -> _Handle:
        handle = _Handle(asyncio.Queue())
        self.handles[remote_id] = handle
        return handle

    async def _send(self, message: dict[str, Any], queue: str) -> None:
        signature = sign(message, self.settings.secret)
        await asyncio.to_thread(
            self.app.send_task, TASK, args=[message, signature], queue=queue, retry=False
        )

    async def cancel(self, remote_id: str) -> None:
        """Ask whoever holds (or would take) the attempt to stop it."""
        try:
            await self.redis.set(cancel_key(remote_id), "1", ex=7 * 86400)
        except (redis.RedisError, OSError) as exc:
            self._complain("refused a cancel", exc)

    def _failed(self, error: str, status: str = "failed") -> AttemptResult:
        from cronflow.runner import AttemptResult

        now = self.clock.now()
        return AttemptResult(status, None, now, now, None, None, b"", error)


class _Follower:
    """Turns one attempt's events into the engine's callbacks and an AttemptResult."""

    def __init__(
        self,
        executor: RemoteExecutor,
        handle: _Handle,
        remote_id: str,
        on_output: Callable[[str, datetime, bytes], None],
        flush: Callable[[], bool],
        on_start: OnStart,
    ) -> None:
        self.executor = executor
        self.handle = handle
        self.remote_id = remote_id
        self.on_output = on_output
        self.flush = flush
        self.on_start = on_start
        self.started = False
        self.claimed = False  # a worker holds the lease (it may not have said "started" yet)
        self.host: str | None = None
        self.seen = -1  # highest output sequence number stored (events may come twice)
        self.canceled_at: float | None = None
        # Events applied whose batch the store has not taken yet: not acknowledged, and the
        # attempt's end (its event id and result) held with them.
        self.unacked: list[str] = []
        self.ended: tuple[str, AttemptResult] | None = None

    async def follow(
        self,
        stop: asyncio.Event | None,
        command: Command,
        queue: str,
        queue_timeout: float,
        start_by: float,
    ) -> AttemptResult:
        """Until a worker takes it (or `queue_timeout`), then until it ends."""
        while not self.started and self.ended is None:
            if stop is not None and stop.is_set():
                if self.executor.detach:
                    raise Detached(self.remote_id)
                await self.executor.cancel(self.remote_id)
                return self.executor._failed("canceled before a worker took it", "canceled")
            if time.time() > start_by:
                await self.executor.cancel(self.remote_id)  # a late worker refuses it
                shown = format_duration(queue_timeout)
                return self.executor._failed(
                    f"queued for {queue}: no worker took it within {shown}"
                )
            result = await self._next(stop, HEARTBEAT_SECONDS)
            if result is not None:
                return result
            if not self.started and await self._lease_lost() is None and self.claimed:
                break  # a worker holds it, though its "started" has not come yet
        return await self.follow_started(stop, command.kill_grace)

    async def follow_started(self, stop: asyncio.Event | None, kill_grace: float) -> AttemptResult:
        """While the worker runs it: events, lease checks, cancels."""
        while True:
            if stop is not None and stop.is_set() and self.canceled_at is None:
                if self.executor.detach:
                    raise Detached(self.remote_id)
                await self.executor.cancel(self.remote_id)
                self.canceled_at = time.monotonic()
            if (
                self.canceled_at is not None
                and self.ended is None
                and time.monotonic() - self.canceled_at > kill_grace + CANCEL_REPORT_SECONDS
            ):
                return self.executor._failed("canceled; the worker did not report", "canceled")
            result = await self._next(stop, HEARTBEAT_SECONDS)
            if result is not None:
                return result
            lost = await self._lease_lost()
            if lost:
                # The worker sends its last events before it lets go of the lease: give the
                # reader a moment to bring them, then the attempt counts as lost.
                result = await self._next(None, LATE_EVENTS_SECONDS)
                if result is not None:
                    return result
                await self._drain_pending()
                await self.executor.cancel(self.remote_id)  # a late worker must not take it
                return self.executor._failed(lost, "lost")

    async def _next(self, stop: asyncio.Event | None, timeout: float) -> AttemptResult | None:
        """Handle the events that came within `timeout`; a result if the attempt ended.
        While a batch is held (the store refused it), it is committed again first, and the
        wait is at most RETRY_SECONDS."""
        if self.unacked or self.ended is not None:
            result = await self._commit()
            if result is not None:
                return result
            if self.unacked or self.ended is not None:
                timeout = min(timeout, RETRY_SECONDS)
        waits: list[Awaitable[Any]] = [self.handle.events.get()]
        getter = asyncio.ensure_future(waits[0])
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            done, _ = await asyncio.wait(
                [getter, *([stopper] if stopper else [])],
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if stopper is not None:
                stopper.cancel()
            if not getter.done():
                getter.cancel()
        if getter not in done or getter.cancelled():
            return None
        batch = [getter.result()]
        while not self.handle.events.empty():
            batch.append(self.handle.events.get_nowait())
        return await self._apply(batch)

    async def _apply(self, batch: list[tuple[str, dict[str, Any]]]) -> AttemptResult | None:
        for entry_id, event in batch:
            kind = event["type"]
            if kind == "started":
                if not self.started or self.host is None:
                    self.started = True
                    self.host = event["host"]
                    at = _time(event["at"]) if event.get("at") else None
                    self.on_start(event["host"], event["pid"], event["start"], at)
            elif kind == "output":
                for seq, stream, at, data in event["chunks"]:
                    if seq > self.seen:
                        self.seen = seq
                        self.on_output(stream, _time(at), _unb64(data))
            elif kind in ("finished", "refused"):
                self.ended = (entry_id, self._result(event))
                continue
            self.unacked.append(entry_id)
        return await self._commit()

    async def _commit(self) -> AttemptResult | None:
        """Commit what the events applied so far brought; only then may the broker forget
        them. Refused: they stay held, unacknowledged, for the next turn. The attempt's end
        is returned once committed; its own event is acknowledged once the engine has
        recorded it (the result's `settle`)."""
        try:
            stored = self.flush()
        except OutputLost as exc:
            return await self._give_up(exc)
        if not stored:
            return None
        acked, self.unacked = self.unacked, []
        await self.executor.ack(*acked)
        if self.ended is None:
            return None
        finished, result = self.ended
        return _with_settle(result, lambda: self.executor.ack(finished))

    async def _give_up(self, exc: OutputLost) -> AttemptResult:
        """The store refused the batch past the engine's deadline: its lines are given up (a
        marker stands for them). A job that has not ended is canceled on its worker (no job
        runs on unobserved); either way the attempt ends here, and its events are
        acknowledged once the engine has recorded that end and the marker."""
        ids, self.unacked = self.unacked, []
        if self.ended is not None:
            finished, result = self.ended
            ids.append(finished)
        else:
            await self.executor.cancel(self.remote_id)
            log.error("attempt %s canceled on its worker: %s", self.remote_id, exc.message)
            result = self.executor._failed(
                "stopped on its worker: its output could not be stored", "canceled"
            )
        return _with_settle(result, lambda: self.executor.ack(*ids))

    def _result(self, event: dict[str, Any]) -> AttemptResult:
        from cronflow.runner import AttemptResult

        if event["type"] == "refused":
            return self.executor._failed(f"the worker refused it: {event['reason']}")
        return AttemptResult(
            event["status"],
            event["exit_code"],
            _time(event["started_at"]),
            _time(event["finished_at"]),
            event["cpu_seconds"],
            event["max_rss_kb"],
            _unb64(event["tail"]),
            event.get("error"),
            host=event.get("host") or self.host,
        )

    async def _lease_lost(self) -> str | None:
        """Why the attempt counts as lost now, or None while its worker holds the lease (or
        has reported its end, which waits for the store)."""
        executor = self.executor
        if self.ended is not None:
            return None
        try:
            alive = await executor.lease_alive(self.remote_id)
        except (redis.RedisError, OSError) as exc:
            executor._complain("unreachable", exc)
            if time.monotonic() - executor.last_contact > BROKER_LOST_SECONDS:
                return f"the broker {executor.settings.shown} was unreachable for 30s"
            return None
        executor.last_contact = time.monotonic()
        self.claimed = self.claimed or alive
        if alive or not (self.started or self.claimed):
            return None
        return f"its worker ({self.host or '?'}) stopped renewing its lease"

    async def _drain_pending(self) -> None:
        """Events that raced the lease check still count (a finished job's last output)."""
        while not self.handle.events.empty():
            entry_id, event = self.handle.events.get_nowait()
            if event["type"] == "output":
                await self._apply([(entry_id, event)])
            else:
                await self.executor.ack(entry_id)


def _with_settle(result: AttemptResult, settle: Callable[[], Awaitable[None]]) -> AttemptResult:
    from dataclasses import replace

    return replace(result, settle=settle)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- workers, for `cronflow workers` and `status` --------------------------------------------


def live_workers(config: Config | None) -> list[dict[str, Any]]:
    """The workers that renewed their presence in the last 30 s, with what they run."""
    settings = Settings.from_config(config)
    client = redis.Redis.from_url(settings.broker, socket_timeout=5)
    try:
        found = []
        for key in sorted(client.scan_iter(match=worker_key("*"))):
            raw = client.get(key)
            if raw is None:
                continue
            worker = json.loads(raw)
            running = client.hgetall(running_key(worker["hostname"]))
            worker["running"] = [json.loads(v) for v in running.values()]
            found.append(worker)
        return found
    except (redis.RedisError, OSError) as exc:
        raise CronflowError(f"cannot reach the broker {settings.shown}: {exc}") from None
    finally:
        client.close()


def hostname() -> str:
    return socket.gethostname()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
