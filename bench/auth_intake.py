"""Benchmark: the login-code intake handler, in-process, against real Redis.

    python bench/auth_intake.py [--requests N] [--redis host:port] [--json PATH]

Plays Lambda's role: sets the function's environment (smtp mode, no attempt
queue, so acceptance stores the delivery and its first attempt and nothing
goes to SQS), imports ``intake_api`` the way the runtime does (its init builds
the Redis client and scripts), then invokes ``handler`` with API Gateway
events copied from ``events/intake_api_valid.json``, each with its own
Idempotency-Key and email. Prints accepted requests/s on one core (one
process, one request at a time) and p50/p99 latency per request.

The handler's structured logs and EMF metrics are produced as in Lambda but
written to /dev/null during the timed loop, so the terminal is not measured.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import (
    ROOT,
    add_common_arguments,
    address_of,
    percentile,
    redis_server,
    write_json,
)
from tests.support.lambda_context import FakeLambdaContext

WARMUP = 200


def events(count: int, run: str) -> list[dict[str, Any]]:
    template = json.loads((ROOT / "events" / "intake_api_valid.json").read_text())
    made = []
    for number in range(count):
        event = copy.deepcopy(template)
        key = f"bench-{run}-{number:07d}"
        event["headers"]["Idempotency-Key"] = key
        event["multiValueHeaders"]["Idempotency-Key"] = [key]
        event["requestContext"]["requestId"] = f"req-{run}-{number}"
        event["body"] = json.dumps(
            {"email": f"user{number}@example.com", "code": f"{number % 1_000_000:06d}"}
            | {"locale": "de-AT"}
        )
        made.append(event)
    return made


@contextmanager
def stdout_discarded() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null (Powertools' handlers hold sys.stdout itself)."""
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(null)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    add_common_arguments(parser)
    arguments = parser.parse_args()

    with redis_server(arguments.redis) as client:
        client.flushall()
        os.environ.update(
            {
                "MAIL_REDIS_ADDR": address_of(client),
                "MAIL_SMTP_MODE": "smtp",
                "MAIL_SMTP_ADDR": "127.0.0.1:2525",
                "MAIL_SMTP_FROM_EMAIL": "noreply@example.com",
                "POWERTOOLS_SERVICE_NAME": "mail",
                "POWERTOOLS_METRICS_NAMESPACE": "MailService",
            }
        )
        os.environ.pop("MAIL_ATTEMPT_QUEUE_URL", None)
        sys.path.insert(0, str(ROOT / "functions" / "intake_api"))
        started = time.perf_counter()
        module = importlib.import_module("intake_api")
        init_ms = (time.perf_counter() - started) * 1000
        handler = module.handler

        warmup = events(WARMUP, "warmup")
        timed = events(arguments.requests, "timed")
        context = FakeLambdaContext(timeout_ms=10**9)
        latencies: list[float] = []
        accepted = 0
        with stdout_discarded():
            for event in warmup:
                handler(event, context)
            loop_started = time.perf_counter()
            for event in timed:
                started = time.perf_counter()
                response = handler(event, context)
                latencies.append((time.perf_counter() - started) * 1000)
                accepted += response["statusCode"] == 200
            seconds = time.perf_counter() - loop_started
        stored = client.zcard("mail:{p0}:attempt_schedule")

    rate = accepted / seconds
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(f"handler init (in this process, Redis not yet contacted): {init_ms:.0f} ms")
    print(f"requests: {arguments.requests:,}, accepted: {accepted:,}, scheduled: {stored:,}")
    print("handler logs and EMF metrics were produced and discarded (stdout to /dev/null)")
    print(f"auth intake: {rate:,.0f} accepted requests/s on one core")
    print(f"auth intake latency: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    write_json(
        arguments.json,
        {
            "requests": arguments.requests,
            "accepted": accepted,
            "seconds": round(seconds, 3),
            "requests_per_second": round(rate, 1),
            "p50_ms": round(p50, 4),
            "p99_ms": round(p99, 4),
            "logs": "discarded",
        },
    )


if __name__ == "__main__":
    main()
