"""`cronflow worker`: a Celery worker that runs attempts with cronflow's own runner.

Started through Celery's own API, so `celery inspect`, `celery events` and Flower work against
it. Each attempt runs in a pool process: verified, claimed with a lease, run by `runner` (process
group, timeout TERM -> grace -> KILL, rusage, the head+tail log cap) exactly as on the daemon's
machine, and reported event by event on the stream the message names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from cronflow import remote
from cronflow.clock import Clock
from cronflow.runner import AttemptResult, Command, Stop, adopt_descendants, run_attempt

log = logging.getLogger("cronflow")

#: How often a running attempt looks whether it was canceled.
CANCEL_LOOK_SECONDS = 0.5


def run_worker(
    config_path: Path | None,
    queues: list[str],
    concurrency: int,
    stop_timeout: float,
    hostname: str | None,
) -> None:
    """Run a worker of `queues` until SIGTERM; running attempts get `stop_timeout`."""
    from cronflow.config import load_config

    config = load_config(config_path) if config_path is not None and config_path.exists() else None
    settings = remote.Settings.from_config(config)
    name = hostname or remote.hostname()
    app = remote.make_app(settings)
    _register_task(app, settings, name)
    presence = _Presence(settings, name, queues, stop_timeout)
    presence.start()
    _setup_logging()
    log.info("cronflow worker %s: queues %s, broker %s", name, ",".join(queues), settings.shown)
    # Celery warns about root on every start; running as root is the operator's choice.
    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    try:
        app.worker_main(
            [
                "--quiet",  # no banner: one line per attempt is this worker's log
                "worker",
                f"--queues={','.join(queues)}",
                f"--concurrency={concurrency}",
                f"--hostname=cronflow@{name}",
                "--loglevel=WARNING",
                "--without-mingle",
                "--without-gossip",
                "--prefetch-multiplier=1",
                "-E",
            ]
        )
    finally:
        presence.stop()


def _setup_logging() -> None:
    handler = logging.StreamHandler()
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else (
        "%(asctime)s %(levelname)s %(message)s"
    )
    handler.setFormatter(logging.Formatter(fmt))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _register_task(app: Any, settings: remote.Settings, name: str) -> None:
    @app.task(name=remote.TASK, acks_late=False, ignore_result=True)  # type: ignore[misc]
    def attempt(message: Any, signature: Any) -> None:
        _Attempt(settings, name).handle(message, signature)


class _Presence:
    """The worker's entry in Redis (queues, heartbeat), renewed every 5 s for `workers`;
    on SIGTERM, after `stop_timeout`, it asks this worker's running attempts to stop."""

    def __init__(
        self, settings: remote.Settings, name: str, queues: list[str], stop_timeout: float
    ) -> None:
        self.client = remote.redis.Redis.from_url(settings.broker, socket_timeout=5)
        self.name = name
        self.queues = queues
        self.stop_timeout = stop_timeout
        self.since = remote.now_iso()
        self.done = threading.Event()
        self.stopping_at: float | None = None
        self.thread = threading.Thread(target=self._loop, name="presence", daemon=True)

    def start(self) -> None:
        from celery.signals import worker_ready, worker_shutting_down

        worker_shutting_down.connect(self._shutting_down, weak=False)
        worker_ready.connect(lambda **_: log.info("ready: taking attempts"), weak=False)
        self.thread.start()

    def _shutting_down(self, **_: Any) -> None:
        """Celery's warm shutdown waits for running attempts; after `stop_timeout` they are
        asked to stop (their jobs killed by the runner, and reported `canceled`)."""
        if self.stopping_at is None:
            self.stopping_at = time.monotonic()
            log.info("stopping: running attempts get %gs", self.stop_timeout)

    def stop(self) -> None:
        self.done.set()
        with contextlib.suppress(Exception):
            self.client.delete(remote.worker_key(self.name))

    def _loop(self) -> None:
        while not self.done.wait(remote.HEARTBEAT_SECONDS if self.stopping_at is None else 0.5):
            with contextlib.suppress(remote.redis.RedisError, OSError):
                self._beat()

    def _beat(self) -> None:
        entry = {
            "hostname": self.name,
            "queues": self.queues,
            "since": self.since,
            "heartbeat": remote.now_iso(),
            "pid": os.getpid(),
        }
        self.client.set(remote.worker_key(self.name), json.dumps(entry), ex=remote.LEASE_SECONDS)
        self.client.expire(remote.running_key(self.name), remote.LEASE_SECONDS * 10)
        if self.stopping_at is not None and (
            time.monotonic() - self.stopping_at > self.stop_timeout
        ):
            for remote_id in self.client.hkeys(remote.running_key(self.name)):
                rid = remote_id.decode()
                self.client.set(remote.cancel_key(rid), "1", ex=86400)


class _Attempt:
    """One attempt in a pool process: verify, claim, run, report."""

    def __init__(self, settings: remote.Settings, name: str) -> None:
        self.settings = settings
        self.name = name

    def handle(self, message: Any, signature: Any) -> None:
        if not remote.verify(message, signature, self.settings.secret):
            log.error("refused an attempt message with a missing or wrong signature")
            return
        client = remote.redis.Redis.from_url(self.settings.broker, socket_timeout=10)
        try:
            self._claim_and_run(client, message)
        finally:
            client.close()

    def _claim_and_run(self, client: Any, message: dict[str, Any]) -> None:
        rid = message["id"]
        if time.time() > message["start_by"] or client.exists(remote.cancel_key(rid)):
            reason = "it waited past its queue_timeout, or was canceled"
            _send(client, message, {"type": "refused", "reason": reason})
            log.warning("refused %s (%s): %s", message["label"], rid, reason)
            return
        if not client.set(remote.lease_key(rid), self.name, nx=True, ex=remote.LEASE_SECONDS):
            log.warning("attempt %s is already held by another worker", rid)
            return
        running = json.dumps(
            {
                "remote_id": rid,
                "job": message["job"],
                "run_id": message["run_id"],
                "attempt": message["attempt"],
                "since": remote.now_iso(),
            }
        )
        client.hset(remote.running_key(self.name), rid, running)
        try:
            result = asyncio.run(_Run(self.settings, self.name, message).run())
        finally:
            client.hdel(remote.running_key(self.name), rid)
            client.delete(remote.lease_key(rid))
        took = (result.finished_at - result.started_at).total_seconds()
        detail = f": {result.error}" if result.error else ""
        log.info("%s %s in %.2fs (%s)%s", result.status, message["label"], took, rid, detail)


def _send(client: Any, message: dict[str, Any], event: dict[str, Any]) -> None:
    event["id"] = message["id"]
    client.xadd(
        message["reply"], {"e": json.dumps(event)}, maxlen=remote.STREAM_MAXLEN, approximate=True
    )


class _Run:
    """The attempt on this worker's loop: the runner, output batches, lease, cancel."""

    def __init__(self, settings: remote.Settings, name: str, message: dict[str, Any]) -> None:
        self.settings = settings
        self.name = name
        self.message = message
        self.rid: str = message["id"]
        self.stop = Stop()
        self.pending: list[dict[str, Any]] = []  # events not sent yet, in order
        self.chunks: list[list[Any]] = []
        self.seq = 0
        self.wake = asyncio.Event()
        self.fenced: str | None = None
        self.closing = False
        self.ended = asyncio.Event()  # the job has ended: the guards stop

    async def run(self) -> AttemptResult:
        loop = asyncio.get_running_loop()
        adopt_descendants(loop)
        self.client = remote.aioredis.Redis.from_url(self.settings.broker, socket_timeout=10)
        sender = asyncio.create_task(self._send_loop())
        guards = [
            asyncio.create_task(self._renew_lease()),
            asyncio.create_task(self._watch_cancel()),
        ]
        try:
            result = await run_attempt(
                self._command(), self._output, self.stop, Clock(), on_start=self._started
            )
        finally:
            # The guards end by themselves once `ended` is set: a cancel that arrives during a
            # redis-py command can be swallowed there, and a guard still looping would keep
            # this pool process in asyncio.run, away from its next attempt.
            self.ended.set()
            await asyncio.wait(guards, timeout=remote.HEARTBEAT_SECONDS)
        if self.fenced and result.status == "canceled":
            result = AttemptResult("lost", result.exit_code, result.started_at,
                                   result.finished_at, result.cpu_seconds, result.max_rss_kb,
                                   result.tail, self.fenced)  # fmt: skip
        self._flush_chunks()
        self.pending.append(self._finished(result))
        self.wake.set()
        self.closing = True
        await sender
        await self.client.aclose()
        return result

    def _command(self) -> Command:
        m = self.message
        # The daemon built the attempt's environment; underneath it is this machine's own.
        return Command(
            argv=list(m["argv"]),
            env={**os.environ, **m["env"]},
            cwd=m["cwd"],
            timeout=m["timeout"],
            kill_grace=m["kill_grace"],
            max_log_bytes=m["max_log_bytes"],
            marker=tuple(m["marker"]),
        )

    def _started(self, pid: int | None, start: int | None) -> None:
        # The worker's own clock, like the attempt's end: a duration never mixes two clocks.
        at = remote.now_iso()
        self.pending.append(
            {"type": "started", "host": self.name, "pid": pid, "start": start, "at": at}
        )
        self.wake.set()

    def _output(self, stream: str, at: datetime, data: bytes) -> None:
        self.chunks.append([self.seq, stream, at.isoformat(), remote._b64(data)])
        self.seq += 1
        if len(self.chunks) >= 500:
            self._flush_chunks()
            self.wake.set()

    def _flush_chunks(self) -> None:
        if self.chunks:
            self.pending.append({"type": "output", "chunks": self.chunks})
            self.chunks = []

    def _finished(self, result: AttemptResult) -> dict[str, Any]:
        return {
            "type": "finished",
            "host": self.name,
            "status": result.status,
            "exit_code": result.exit_code,
            "started_at": result.started_at.isoformat(),
            "finished_at": result.finished_at.isoformat(),
            "cpu_seconds": result.cpu_seconds,
            "max_rss_kb": result.max_rss_kb,
            "tail": remote._b64(result.tail),
            "error": result.error,
        }

    async def _send_loop(self) -> None:
        """Send events in order, output at most OUTPUT_EVERY late; keep trying while the broker
        is away (the lease decides whether the attempt still counts)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=remote.OUTPUT_EVERY)
            self.wake.clear()
            self._flush_chunks()
            while self.pending:
                event = {**self.pending[0], "id": self.rid}
                try:
                    await self.client.xadd(
                        self.message["reply"],
                        {"e": json.dumps(event)},
                        maxlen=remote.STREAM_MAXLEN,
                        approximate=True,
                    )
                except (remote.redis.RedisError, OSError):
                    await asyncio.sleep(1.0)
                    if self.closing and self.fenced:
                        return  # nobody will read it: the daemon recorded the attempt lost
                    continue
                self.pending.pop(0)
            if self.closing:
                return

    async def _renew_lease(self) -> None:
        """Renew the lease; if it cannot be renewed for its whole length, or it is gone (the
        daemon or Redis dropped it), stop the job: nobody would record its end."""
        last = time.monotonic()
        key = remote.lease_key(self.rid)
        while not await _ends(self.ended, remote.HEARTBEAT_SECONDS):
            try:
                held = await self.client.set(key, self.name, xx=True, ex=remote.LEASE_SECONDS)
                canceled = await self.client.exists(remote.cancel_key(self.rid))
            except (remote.redis.RedisError, OSError):
                if time.monotonic() - last > remote.LEASE_SECONDS:
                    self._fence("could not renew its lease for 30s (broker unreachable)")
                continue
            last = time.monotonic()
            if not held:
                self._fence("its lease was gone (the broker lost it, or it expired)")
            elif canceled:
                self.stop.set()

    def _fence(self, why: str) -> None:
        if self.fenced is None:
            log.warning("stopping %s: %s", self.message["label"], why)
            self.fenced = why
            self.stop.set()

    async def _watch_cancel(self) -> None:
        """A cancel (daemon SIGTERM, `run` Ctrl-C, this worker's own stop) is a key the daemon
        sets; looking twice a second keeps this simple and cancellable (a pub/sub listener was
        seen to swallow its cancellation and keep a pool process from its next attempt)."""
        key = remote.cancel_key(self.rid)
        while not self.stop.is_set() and not await _ends(self.ended, CANCEL_LOOK_SECONDS):
            with contextlib.suppress(remote.redis.RedisError, OSError):
                if await self.client.exists(key):
                    self.stop.set()


async def _ends(event: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less if `event` is set; True if it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
    return event.is_set()
