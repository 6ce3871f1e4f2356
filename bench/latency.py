"""Benchmark: a login-code request accepted → its message at the SMTP sink, on the local stack.

    python bench/latency.py [--requests N] [--rate R] [--warmup W]
                            [--sink auto|smtp-sink|aiosmtpd] [--no-install] [--json PATH]

Starts the local stack (``python -m scripts.local_stack``, what ``make local``
runs: its own redis-server, moto's SQS, the API on a free port, the scheduled
functions and the attempt worker's pump, all in one process) with a fresh
data directory and ``MAIL_SMTP_ADDR`` pointing at postfix's C ``smtp-sink``
(``bench/_support.py``), which writes each message it accepts to its own file.

Then sends N login-code requests (default 1,000; ``POST
/api/v1/internal/login-code-deliveries``, each with its own Idempotency-Key
and email, smtp mode) at a steady rate of R per second (default 20), open
loop: each request starts at its scheduled time, whether or not the earlier
ones have been answered. W requests before them (default 20) warm the stack
up and are not counted. For each request, "accepted" is the moment its 200
answer arrived; "at the sink" is the moment the sink finished receiving the
message whose Message-ID carries that delivery id (the mtime of its file).
Prints p50 and p99 of the difference.

Why 20 requests/s: it is a steady load well above what a login-code intake
usually sees (72,000 an hour), yet leaves the single-process local stack
mostly idle, so the figure is the pipeline's own latency (intake, SQS, the
worker's receive, render, SMTP), not queueing in an overloaded test machine;
1,000 requests take 50 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    ROOT,
    SmtpSink,
    add_sink_arguments,
    free_port,
    percentile,
    smtp_sink,
    write_json,
)

RESOURCE = "/api/v1/internal/login-code-deliveries"
FROM_EMAIL = "noreply@mail.bench.test"
BANNER_END = "Ctrl-C stops everything."
START_TIMEOUT_S = 120.0
ARRIVAL_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    number: int
    status: int
    delivery_id: str | None
    sent_at: float  # time.time() when the request started
    accepted_at: float  # time.time() when its answer had arrived


class LocalStack:
    """``python -m scripts.local_stack`` as a child process, its output in a log file."""

    def __init__(self, sink: SmtpSink, workdir: Path) -> None:
        self.api_port = free_port()
        self.log_path = workdir / "local-stack.log"
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("MAIL_", "AWS_", "POWERTOOLS_", "LOCAL_"))
        } | {
            "LOCAL_API_PORT": str(self.api_port),
            "LOCAL_DATA_DIR": str(workdir / "data"),
            "MAIL_SMTP_MODE": "smtp",
            "MAIL_SMTP_ADDR": sink.addr,
            "MAIL_SMTP_TLS": "none",
            "MAIL_SMTP_FROM_EMAIL": FROM_EMAIL,
        }
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "scripts.local_stack"],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if BANNER_END in self.log_path.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"the local stack did not start:\n{tail}")

    def stop(self) -> None:
        """SIGTERM: the stack's orderly stop (the work in flight finishes)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def post(port: int, number: int, run: str) -> Answer:
    body = json.dumps(
        {"email": f"latency-{run}-{number}@example.com", "code": "482913", "locale": "en"}
    )
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": f"latency-{run}-{number:06d}",
    }
    sent_at = time.time()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", RESOURCE, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        accepted_at = time.time()
    finally:
        connection.close()
    delivery_id = None
    if response.status == 200:
        delivery_id = str(json.loads(payload)["delivery_id"])
    return Answer(number, response.status, delivery_id, sent_at, accepted_at)


def steady(port: int, count: int, rate: float, run: str) -> list[Answer]:
    """``count`` requests, the i-th started at i / rate seconds (open loop)."""
    interval = 1.0 / rate
    futures: list[Future[Answer]] = []
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="client") as pool:
        started = time.perf_counter()
        for number in range(count):
            delay = started + number * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(post, port, number, run))
    return [future.result() for future in futures]


def wait_for_arrivals(
    sink: SmtpSink, delivery_ids: Sequence[str], timeout: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        arrived = sink.arrivals()
        if all(delivery_id in arrived for delivery_id in delivery_ids):
            return arrived
        if time.monotonic() > deadline:
            return arrived
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--warmup", type=int, default=20, help="requests first, not counted")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_sink_arguments(parser)
    arguments = parser.parse_args()
    run = secrets.token_hex(4)

    with (
        smtp_sink(arguments.sink, dump=True, install=not arguments.no_install) as sink,
        tempfile.TemporaryDirectory(prefix="mail-bench-latency-") as workdir,
    ):
        print(f"SMTP sink: {sink.kind} on {sink.addr}")
        stack = LocalStack(sink, Path(workdir))
        try:
            stack.wait_until_started()
            print(f"local stack started (API on 127.0.0.1:{stack.api_port})")
            if arguments.warmup:
                steady(stack.api_port, arguments.warmup, arguments.rate, f"{run}-warmup")
            answers = steady(stack.api_port, arguments.requests, arguments.rate, run)
            accepted = [answer for answer in answers if answer.delivery_id is not None]
            delivery_ids = [answer.delivery_id for answer in accepted if answer.delivery_id]
            arrived = wait_for_arrivals(sink, delivery_ids, ARRIVAL_TIMEOUT_S)
        finally:
            stack.stop()

    latencies = [
        (arrived[answer.delivery_id] - answer.accepted_at) * 1000
        for answer in accepted
        if answer.delivery_id in arrived
    ]
    from_request = [
        (arrived[answer.delivery_id] - answer.sent_at) * 1000
        for answer in accepted
        if answer.delivery_id in arrived
    ]
    http_ms = [(answer.accepted_at - answer.sent_at) * 1000 for answer in accepted]
    missing = len(accepted) - len(latencies)
    refused = len(answers) - len(accepted)
    print(
        f"requests: {len(answers):,} at {arguments.rate:g}/s (after {arguments.warmup} "
        f"warm-up requests), accepted: {len(accepted):,}, at the sink: {len(latencies):,}"
    )
    if not latencies:
        raise SystemExit("no message reached the sink")
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(f"request → accepted (HTTP): p50 {statistics.median(http_ms):.1f} ms, "
          f"p99 {percentile(http_ms, 0.99):.1f} ms")  # fmt: skip
    print(
        f"request sent → at sink: p50 {statistics.median(from_request):.0f} ms, "
        f"p99 {percentile(from_request, 0.99):.0f} ms"
    )
    print(
        f"accept → at sink: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"(min {min(latencies):.0f} ms, max {max(latencies):.0f} ms)"
    )
    write_json(
        arguments.json,
        {
            "requests": len(answers),
            "rate_per_second": arguments.rate,
            "warmup": arguments.warmup,
            "accepted": len(accepted),
            "refused": refused,
            "missing_at_sink": missing,
            "sink": sink.kind,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "min_ms": round(min(latencies), 1),
            "max_ms": round(max(latencies), 1),
            "from_request_p50_ms": round(statistics.median(from_request), 1),
            "from_request_p99_ms": round(percentile(from_request, 0.99), 1),
            "http_p50_ms": round(statistics.median(http_ms), 2),
            "http_p99_ms": round(percentile(http_ms, 0.99), 2),
        },
    )
    if missing or refused:
        print(f"{refused} requests refused, {missing} messages missing", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
