"""What the reliability tier's Redis, process and load tests share.

- ``eventually``: poll a condition instead of sleeping a fixed time;
- ``blocked_clients`` / ``kill_clients``: find Redis connections by what they
  are blocked on (``CLIENT LIST``) and cut exactly those (``CLIENT KILL ID``);
- ``freeze_writes`` / ``thaw_writes``: ``CLIENT PAUSE … WRITE``, so a worker's
  next script waits, visibly, where the test wants it to die;
- ``WorkerProcess``: the attempt_worker handler cold-started in its own
  process with one SQS event, to be killed (SIGKILL) mid-invocation;
- ``load_handler`` (``load_intake_handler``) and ``login_code_event``: a
  handler module cold-started in this process, and the API Gateway event of
  one login-code request;
- ``Repeating``: a scheduled function (stream poller, scheduler) run again
  and again on a thread, as EventBridge ticks it, until stopped;
- ``QueueWorker``: an attempt worker on a thread, fed batches from the
  attempt queue as the SQS event source mapping feeds one, until stopped.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailcore.config import Settings
from mailcore.contracts.attempt_message import decode_claim
from mailcore.errors import StoreUnavailable
from mailcore.mail.mime import message_id_for
from mailcore.ports import ScheduleStats
from mailcore.services.attempts import AttemptExecutor, AttemptReport
from tests.support.api_events import api_event
from tests.support.lambda_context import FakeLambdaContext
from tests.support.lambda_runner import function_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SENDER = "noreply@mail.example.com"
SENDER_DOMAIN = SENDER.partition("@")[2]
LOGIN_CODE_PATH = "/api/v1/internal/login-code-deliveries"
Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def eventually[T](probe: Callable[[], T], timeout_s: float, what: str, every: float = 0.02) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every)


def smtp_environment(redis_addr: str, smtp_addr: str, **extra: str) -> dict[str, str]:
    """Settings of a pipeline that sends over plain SMTP to a test server."""
    return {
        "MAIL_REDIS_ADDR": redis_addr,
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": smtp_addr,
        "MAIL_SMTP_TLS": "none",
        "MAIL_SMTP_FROM_EMAIL": SENDER,
        **extra,
    }


def message_id(delivery_id: str) -> str:
    """The Message-ID every attempt of this delivery carries."""
    return message_id_for(delivery_id, SENDER_DOMAIN)


def producer_client(addr: str) -> redis.Redis:
    """The Notification service's side: its own client, no retries of its own."""
    host, _, port = addr.rpartition(":")
    return redis.Redis(
        host=host,
        port=int(port),
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


# -- Redis connections ---------------------------------------------------------------


def blocked_clients(client: redis.Redis, command: str) -> list[str]:
    """Ids of connections blocked (or paused) on ``command``."""
    return [
        str(entry["id"])
        for entry in cast(list[dict[str, Any]], client.client_list())
        if entry.get("cmd") == command and "b" in str(entry.get("flags", ""))
    ]


def kill_clients(client: redis.Redis, ids: list[str]) -> None:
    for client_id in ids:
        client.client_kill_filter(_id=client_id)


def freeze_writes(client: redis.Redis, seconds: int = 60) -> None:
    """Hold every write and every script until ``thaw_writes`` (reads still answer)."""
    client.client_pause(seconds * 1000, all=False)


def thaw_writes(client: redis.Redis) -> None:
    client.client_unpause()


# -- handlers --------------------------------------------------------------------------


class WorkerProcess:
    """``attempt_worker`` cold-started in a fresh process with one SQS event (not waited for)."""

    def __init__(
        self, work_dir: Path, environment: Mapping[str, str], event: dict[str, Any]
    ) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        events_file = work_dir / "worker-events.json"
        self.answers_file = work_dir / "worker-answers.json"
        self.log_file = work_dir / "worker.log"
        events_file.write_text(json.dumps([event]))
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("MAIL_", "POWERTOOLS_"))
        }
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.lambda_runner",
                    "attempt_worker",
                    str(events_file),
                    str(self.answers_file),
                    "60000",
                ],
                env={
                    **inherited,
                    "PYTHONPATH": function_path("attempt_worker"),
                    **environment,
                },
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> int:
        """SIGKILL, as Lambda ends an environment that ran out of time or memory."""
        os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=30)

    def stop_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def load_handler(
    monkeypatch: pytest.MonkeyPatch,
    module_name: str,
    environment: Mapping[str, str],
    timeout_ms: int = 10_000,
) -> Invoke:
    """Cold-start a handler module in this process with these settings (and only these)."""
    for name in Settings.variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(importlib.import_module(module_name))

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = module.handler(event, FakeLambdaContext(timeout_ms=timeout_ms))
        return answer

    return invoke


def load_intake_handler(monkeypatch: pytest.MonkeyPatch, environment: Mapping[str, str]) -> Invoke:
    """The intake_api handler, cold-started in this process."""
    return load_handler(monkeypatch, "intake_api", environment)


def login_code_event(key: str, email: str = "ada@example.com") -> dict[str, Any]:
    return api_event(
        "POST",
        LOGIN_CODE_PATH,
        headers={"Idempotency-Key": key},
        body={"email": email, "code": "482913", "locale": "en"},
    )


# -- scheduled functions on a thread ---------------------------------------------------


class _Report(Protocol):
    stopped_because: str


class Repeating[R: _Report]:
    """Invoke ``run(time_left_ms)`` again and again until ``stop()``, as EventBridge ticks do.

    Each run thinks it has ten minutes; ``stop()`` makes the time run out, so
    the run ends the way it ends near its timeout.
    """

    def __init__(self, name: str, run: Callable[[Callable[[], int]], R]) -> None:
        self.reports: list[R] = []
        self.errors: list[BaseException] = []
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _time_left_ms(self) -> int:
        return 0 if self._stop.is_set() else 600_000

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                report = self._run(self._time_left_ms)
            except BaseException as error:  # surfaced by stop(); a crash fails the test
                self.errors.append(error)
                return
            self.reports.append(report)
            if report.stopped_because != "time is up":
                self._stop.wait(0.05)  # the next tick

    def start(self) -> Repeating[R]:
        self._thread.start()
        return self

    def stop(self) -> list[R]:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"
        assert self.errors == [], self.errors
        return self.reports


@contextmanager
def running[R: _Report](name: str, run: Callable[[Callable[[], int]], R]) -> Iterator[Repeating[R]]:
    repeating = Repeating(name, run).start()
    try:
        yield repeating
    finally:
        repeating.stop()


class SchedulerObserver:
    """A scheduler observer that keeps the store errors the loop survived."""

    def __init__(self) -> None:
        self.store_errors: list[StoreUnavailable] = []

    def recovered(self, recoveries: list[tuple[str, str]]) -> None:
        pass

    def schedule_stats(self, stats: ScheduleStats) -> None:
        pass

    def store_unavailable(self, error: StoreUnavailable) -> None:
        self.store_errors.append(error)


class QueueWorker:
    """An attempt worker on a thread: a batch of up to ten from the queue, each message
    executed and then deleted, the provider closed after the batch, until ``stop()``."""

    def __init__(self, name: str, sqs: Any, queue_url: str, executor: AttemptExecutor) -> None:
        self.reports: list[AttemptReport] = []
        self.errors: list[BaseException] = []
        self._sqs = sqs
        self._queue_url = queue_url
        self._executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                reply = self._sqs.receive_message(
                    QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
                )
                for message in reply.get("Messages", []):
                    self.reports.append(self._executor.execute(decode_claim(message["Body"])))
                    self._sqs.delete_message(
                        QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"]
                    )
                self._executor.close()
        except BaseException as error:  # surfaced by stop(); a crash fails the test
            self.errors.append(error)

    def start(self) -> QueueWorker:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30) -> list[AttemptReport]:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"
        assert self.errors == [], self.errors
        return self.reports
