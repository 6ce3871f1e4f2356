"""The local stack as a user runs it (``python -m scripts.local_stack``), for the e2e tests.

A stack is a subprocess on free ports (``LOCAL_API_PORT``, ``LOCAL_SMTP_PORT``)
over a data directory of the test's (``LOCAL_DATA_DIR``), with the retry
ladder, scheduler poll and stream block shortened so the tests are quick.
The tests drive it only from outside: HTTP, ``XADD`` to the Redis it prints,
and the ``.eml`` files its SMTP capture server writes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any, cast

import pytest
import redis

from tests.support.network import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_START_TIMEOUT_S = 60
STACK_STOP_TIMEOUT_S = 30
BANNER_END = "Ctrl-C stops everything."
STREAM = "mail:delivery_commands"
LOGIN_CODE_PATH = "/api/v1/internal/login-code-deliveries"
SENDER_DOMAIN = "mail.localhost.test"  # of the stack's default MAIL_SMTP_FROM_EMAIL
# Fast enough for tests: retries 1 s apart, the scheduler polls every 100 ms.
FAST_SETTINGS = {
    "MAIL_RETRY_SCHEDULE": "1s,1s,1s",
    "MAIL_SCHEDULER_POLL_INTERVAL": "100ms",
    "MAIL_STREAM_BLOCK_TIMEOUT": "200ms",
}
SETTLED = frozenset({"sent", "suppressed", "failed", "dead_letter"})


def clean_environment() -> dict[str, str]:
    """This environment without settings that would steer the stack (service, local, AWS)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MAIL_", "LOCAL_", "AWS_ENDPOINT_URL"))
    }


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass
class LocalStack:
    process: subprocess.Popen[bytes]
    data_dir: Path
    api_port: int
    smtp_port: int
    log_path: Path
    log_file: IO[bytes]
    redis_addr: str = ""
    exit_code: int | None = field(default=None)
    cluster: bool = False  # the stack talks to a Redis Cluster (--redis-cluster)

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Ctrl-C, and the exit code once it has shut down (killed if it will not)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STACK_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self.log_file.closed:
            self.log_file.close()
        self.exit_code = self.process.returncode
        return self.process.returncode

    # ------------------------------------------------------------------ from outside

    def redis(self) -> redis.Redis:
        host, _, port = self.redis_addr.rpartition(":")
        if self.cluster:
            # Answers the same commands (XADD, reads) and follows the slots.
            return cast(
                redis.Redis, redis.RedisCluster(host=host, port=int(port), decode_responses=True)
            )
        return redis.Redis(host=host, port=int(port), decode_responses=True)

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the local stack's URL)
            f"{self.api_url}{path}",
            data=data if data is not None else (b"" if method == "POST" else None),
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                return Answer(
                    answer.status, dict(answer.headers.items()), json.loads(answer.read())
                )
        except urllib.error.HTTPError as error:
            with error:
                return Answer(error.code, dict(error.headers.items()), json.loads(error.read()))

    def send_login_code(
        self, email: str, key: str, code: str = "482913", locale: str = "en"
    ) -> Answer:
        return self.request(
            "POST",
            LOGIN_CODE_PATH,
            {"email": email, "code": code, "locale": locale},
            {"Idempotency-Key": key},
        )

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        answer = self.request("GET", f"/api/v1/internal/deliveries/{delivery_id}")
        assert answer.status == 200, answer
        return dict(answer.body)

    def attempts(self, delivery_id: str) -> list[dict[str, Any]]:
        answer = self.request("GET", f"/api/v1/internal/deliveries/{delivery_id}/attempts")
        assert answer.status == 200, answer
        return list(answer.body["items"])

    def settled(self, delivery_id: str, timeout_s: float = 15) -> dict[str, Any]:
        """The delivery once it reached a terminal status."""

        def terminal() -> dict[str, Any] | None:
            delivery = self.delivery(delivery_id)
            return delivery if delivery["status"] in SETTLED else None

        return wait_for(terminal, timeout_s, f"{delivery_id} to settle\n{self.log()[-3000:]}")

    def mail_for(self, delivery_id: str) -> list[Path]:
        """The captured messages of a delivery (its Message-ID is ``<id@sender domain>``)."""
        return sorted(self.mail_dir.glob(f"*-{delivery_id}@{SENDER_DOMAIN}*.eml"))

    def wait_for_mail(self, delivery_id: str, timeout_s: float) -> Path:
        return wait_for(
            lambda: next(iter(self.mail_for(delivery_id)), None),
            timeout_s,
            f"mail of {delivery_id}\n{self.log()[-3000:]}",
        )


def wait_for[T](probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def read_mail(path: Path) -> EmailMessage:
    message = BytesParser(policy=default_policy).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    assert isinstance(part, EmailMessage)
    return str(part.get_content())


def port_is_closed(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_stack(
    data_dir: Path,
    log_path: Path,
    settings: Mapping[str, str] | None = None,
    *,
    api_port: int | None = None,
    smtp_port: int | None = None,
) -> LocalStack:
    """Start the stack as ``make local`` does and wait for its banner."""
    api_port = api_port or free_port()
    smtp_port = smtp_port or free_port()
    env = clean_environment()
    env.update(
        LOCAL_API_PORT=str(api_port),
        LOCAL_SMTP_PORT=str(smtp_port),
        LOCAL_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
        **FAST_SETTINGS,
    )
    env.update(settings or {})
    # A file, not a pipe: the handlers log every request, and a pipe nobody
    # reads would fill up and stall the stack.
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.local_stack"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    stack = LocalStack(process, data_dir, api_port, smtp_port, log_path, log_file)
    deadline = time.monotonic() + STACK_START_TIMEOUT_S
    while BANNER_END not in stack.log():
        if process.poll() is not None or time.monotonic() > deadline:
            stack.stop()
            pytest.fail(f"the local stack did not start; its output:\n{stack.log()}")
        time.sleep(0.05)
    found = re.findall(r"^  redis +(\S+:\d+)", stack.log(), re.MULTILINE)
    assert found, stack.log()
    stack.redis_addr = found[-1]
    assert f"API       {stack.api_url}" in stack.log()
    return stack
