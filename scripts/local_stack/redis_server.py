"""A private ``redis-server`` for the local stack, its data kept across runs.

It listens on a free 127.0.0.1 port and keeps an append-only file (AOF,
fsync every second) in its data directory, ``.local/redis`` by default, so
stopping and starting the stack loses nothing: the next run loads the AOF.
It is stopped with ``SHUTDOWN``, which writes and fsyncs the AOF first.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT_S = 30.0  # a large AOF takes a while to load
STOP_TIMEOUT_S = 30.0


class RedisStartError(RuntimeError):
    pass


@dataclass
class LocalRedis:
    """A private redis-server child process and where it keeps its data."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis-server.log"

    def client(self) -> redis.Redis:
        # No retries: after SHUTDOWN the closed connection is the expected answer,
        # and redis-py's default retry would spend seconds reconnecting to nothing.
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """``SHUTDOWN`` (the AOF is flushed and fsynced first); force it if it will not."""
        if self.alive():
            try:
                self.client().shutdown()
            except redis.RedisError as error:
                print(f"redis-server did not take SHUTDOWN ({error}); terminating it", flush=True)
                self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"redis-server stopped; its data stays in {self.data_dir}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_with_parent() -> None:
    """Runs in the child before exec (Linux): SIGTERM it if the stack dies, even by SIGKILL.

    redis-server takes SIGTERM as an orderly shutdown that flushes its AOF, so
    a crashed stack leaves its data behind but no orphaned server.
    """
    pr_set_pdeathsig = 1
    # Best effort: without it, an orphaned server would need stopping by hand.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_redis(data_dir: Path) -> LocalRedis:
    """Start redis-server on a free port over ``data_dir`` and wait until it answers PING.

    Call it before any other thread starts: the child is forked with a
    ``preexec_fn``, and the parent-death signal belongs to the calling thread.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisStartError(
            "redis-server is not installed; run scripts/ensure-redis-server (or make setup)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "redis-server.log"
    # A free port can be taken by someone else before redis-server binds it: try a few.
    for _ in range(3):
        port = free_port()
        command = [
            executable,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--save", "",  # no RDB snapshots ...
            "--appendonly", "yes",  # ... but an AOF, so accepted work survives a restart
            "--appendfsync", "everysec",
            "--logfile", str(log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        # A session of its own: the terminal's Ctrl-C reaches only the stack,
        # which then shuts redis-server down last, after everything that uses it.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=stop_with_parent if sys.platform == "linux" else None,
        )
        local = LocalRedis(process, port, data_dir)
        if wait_for_ping(local):
            return local
        if process.poll() is None:
            process.kill()
            process.wait()
    log_tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RedisStartError(
        f"redis-server did not start; its log ({log_path}) ends with:\n{log_tail}"
    )


def wait_for_ping(local: LocalRedis) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    client = local.client()
    while time.monotonic() < deadline:
        if not local.alive():
            return False  # exited: most likely the port was taken
        try:
            if client.ping():
                return True
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass  # not listening yet, or still loading its AOF
        time.sleep(0.05)
    return False


def check_external_redis(addr: str) -> None:
    """Warn early when MAIL_REDIS_ADDR does not answer: every request would get a 503."""
    from mailcore.config import load_settings
    from mailcore.store.client import build_redis_client

    try:
        build_redis_client(load_settings()).ping()
    except redis.RedisError as error:
        print(f"warning: Redis at {addr} does not answer: {error}", flush=True)
