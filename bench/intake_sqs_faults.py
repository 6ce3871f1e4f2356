"""Benchmark: how long a login-code POST takes when SQS answers, never answers, or refuses.

    python bench/intake_sqs_faults.py [--requests N] [--redis host:port] [--json PATH]

Plays Lambda's role as ``bench/auth_intake.py`` does (the ``intake_api``
module imported, then ``handler`` invoked with API Gateway events, each
with its own Idempotency-Key), in smtp mode with an attempt queue, so every
accepted login code also takes the fast path (claim, then SQS
SendMessageBatch). The handler is cold-started three times, once per SQS
endpoint (``AWS_ENDPOINT_URL_SQS``):

- ``normal``: moto's SQS server on a local port, with the queue;
- ``silent``: a TCP listener that accepts the connection and never answers;
- ``refused``: a local port where nothing listens.

After two warm-up requests, each request is timed from the call to the
answer; min, median, p90 and max are printed per endpoint, and how much the
median adds to the normal one. Logs and EMF metrics go to /dev/null.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
from bench.auth_intake import events, stdout_discarded
from scripts.local_stack.attempt_queue import LocalSqs
from scripts.local_stack.sam_template import QueueSpec
from tests.support.lambda_context import FakeLambdaContext
from tests.support.network import SilentListener, refused_url

WARMUP = 2
REGION = "eu-west-1"


@contextmanager
def endpoints() -> Iterator[dict[str, tuple[str, str]]]:
    """Each condition's SQS endpoint and attempt queue URL."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    moto = LocalSqs(QueueSpec("Attempts", 30, 3600, None, None), REGION)
    moto.start()
    try:
        with SilentListener() as silent:
            refused = refused_url()
            yield {
                "normal": (moto.endpoint, moto.queue_url),
                "silent": (silent.url, f"{silent.url}/123456789012/attempts"),
                "refused": (refused, f"{refused}/123456789012/attempts"),
            }
    finally:
        with stdout_discarded():
            moto.stop()


def time_requests(endpoint: str, queue_url: str, count: int, run: str) -> list[float]:
    """Cold-start ``intake_api`` against this SQS endpoint; milliseconds per timed request."""
    os.environ["AWS_ENDPOINT_URL_SQS"] = endpoint
    os.environ["MAIL_ATTEMPT_QUEUE_URL"] = queue_url
    module: Any = importlib.reload(importlib.import_module("intake_api"))
    latencies: list[float] = []
    with stdout_discarded():
        for event in events(WARMUP, f"{run}-warmup"):
            module.handler(event, FakeLambdaContext())
        for event in events(count, run):
            started = time.perf_counter()
            answer = module.handler(event, FakeLambdaContext())
            latencies.append((time.perf_counter() - started) * 1000)
            if answer["statusCode"] != 200:
                raise SystemExit(f"{run}: answered {answer['statusCode']}: {answer['body']}")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    add_common_arguments(parser)
    arguments = parser.parse_args()

    figures: dict[str, dict[str, float]] = {}
    with redis_server(arguments.redis) as client, endpoints() as conditions:
        client.flushall()
        os.environ.update(
            {
                "MAIL_REDIS_ADDR": address_of(client),
                "MAIL_SMTP_MODE": "smtp",
                "MAIL_SMTP_ADDR": "127.0.0.1:2525",
                "MAIL_SMTP_FROM_EMAIL": "noreply@example.com",
                "POWERTOOLS_SERVICE_NAME": "mail",
                "POWERTOOLS_METRICS_NAMESPACE": "MailService",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
            }
        )
        sys.path.insert(0, str(ROOT / "functions" / "intake_api"))
        for run, (endpoint, queue_url) in conditions.items():
            latencies = time_requests(endpoint, queue_url, arguments.requests, run)
            figures[run] = {
                "min_ms": round(min(latencies), 1),
                "median_ms": round(statistics.median(latencies), 1),
                "p90_ms": round(percentile(latencies, 0.9), 1),
                "max_ms": round(max(latencies), 1),
            }
        scheduled = sum(
            int(client.zcard(key)) for key in client.scan_iter("mail:*:attempt_schedule")
        )

    normal = figures["normal"]["median_ms"]
    print(f"{arguments.requests} login-code POSTs per SQS endpoint, after {WARMUP} warm-up")
    print(f"{'SQS':8} {'min':>9} {'median':>9} {'p90':>9} {'max':>9} {'median - normal':>16}")
    for run, f in figures.items():
        added = f["median_ms"] - normal
        print(
            f"{run:8} {f['min_ms']:>7.1f}ms {f['median_ms']:>7.1f}ms {f['p90_ms']:>7.1f}ms "
            f"{f['max_ms']:>7.1f}ms {added:>+14.1f}ms"
        )
    print(f"left to the scheduler (due in the schedule): {scheduled}")
    write_json(arguments.json, {"requests": arguments.requests, **figures})


if __name__ == "__main__":
    main()
