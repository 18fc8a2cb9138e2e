"""Remote execution against the real thing: a Redis server on a Unix socket in a temp folder
(persistence off) and real `cronflow worker` processes, all started here and stopped by pid."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CRONFLOW, wait_until
from tests.e2e.conftest import daemons

__all__ = ["daemons"]

SECRET = "test-secret-0123456789"

pytest.importorskip("celery", reason="the celery extra is not installed")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/remote/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)


@dataclass
class Redis:
    folder: Path
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> Redis:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.ping, what="redis to answer")
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket)).ping())
        except (redis.RedisError, OSError):
            return False

    def client(self):  # noqa: ANN201
        import redis

        return redis.Redis(unix_socket_path=str(self.socket))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt-get)")
    server = Redis(tmp_path / "redis")
    server.folder.mkdir()
    server.start()
    yield server
    server.stop()


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@dataclass
class Cluster:
    """One Redis, the environment that points at it, and the workers started on it."""

    tmp_path: Path
    redis: Redis
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"CRONFLOW_BROKER_URL": self.redis.url, "CRONFLOW_WORKER_SECRET": SECRET}

    def worker(self, name: str, *queues: str, concurrency: int = 1) -> Worker:
        log = self.tmp_path / f"worker-{name}.log"
        args = [a for q in queues for a in ("--queue", q)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*CRONFLOW, "worker", *args, "--hostname", name,
                 "--concurrency", str(concurrency), "--stop-timeout", "5s"],
                stdout=out, stderr=out, env={**os.environ, **self.env},
                start_new_session=True,
            )  # fmt: skip
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        client = self.redis.client()
        wait_until(
            lambda: client.exists(f"cronflow:worker:{name}") or proc.poll() is not None,
            timeout=30,
            what=f"worker {name} to register",
        )
        assert proc.poll() is None, log.read_text()
        wait_until(lambda: "ready" in log.read_text(), timeout=30, what=f"worker {name} ready")
        return worker


@pytest.fixture
def cluster(tmp_path: Path, redis_server: Redis) -> Iterator[Cluster]:
    found = Cluster(tmp_path, redis_server)
    yield found
    for worker in found.workers:
        if worker.proc.poll() is None:
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()


JobFile = Callable[[str], Path]
