"""Benchmark: deliveries/s from the command stream to SMTP-accepted, against plain smtplib.

    python bench/end_to_end.py [--deliveries N] [--workers W] [--timeout S]
                               [--sink auto|smtp-sink|aiosmtpd] [--no-install]
                               [--redis host:port] [--json PATH]

Preloads ``mail:delivery_commands`` with N valid commands (default 20,000;
every other one rendered with cc, bcc and two small attachments, the rest
template mode, as ``bench/stream_intake.py`` builds them), then runs the
pipeline with each part in its own process, where AWS would run separate
instances (``bench/_lambda_instance.py``), all against one private
redis-server:

- SQS: moto's server with the attempt queue and its DLQ from template.yaml
  (``bench/_moto_speedups.py`` keeps moto's own bookkeeping from slowing
  down as the queue grows: it would otherwise set the pace);
- one stream poller (its fast path claims each accepted delivery's first
  attempt and sends it to SQS at once) and one scheduler, each invoked on
  its schedule like EventBridge does;
- W attempt workers (default: MAIL_ATTEMPT_WORKER_CONCURRENCY's default, which
  template.yaml makes the event source mapping's MaximumConcurrency), each
  one execution environment of ``attempt_worker`` fed batches from the queue;
- SMTP (``MAIL_SMTP_MODE=smtp``, no TLS) to postfix's C ``smtp-sink`` on a
  local port (``bench/_support.py``), which counts what it accepts.

Every process starts (and imports its handler) before the clock starts; the
time is from the moment they are told to go to the Nth message accepted at
the sink (progress is printed every 10 s). Then Redis must show all N
deliveries ``sent``. A run that gets no message to the sink for 60 s, or
that takes longer than ``--timeout`` (default 480 s), ends as "did not
finish", with where the missing deliveries are (claims, schedule, queue).

In the same run, the baseline: one ``smtplib.SMTP`` connection to the same
sink sends the same N messages (the same MIME bytes the service produces,
built in advance with mailcore's renderer and MIME code, untimed) with no
bookkeeping. Prints both rates and their ratio (end to end ÷ baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Any, cast

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._lambda_instance import function_spec, sqs_spec
from bench._support import (
    ROOT,
    SmtpSink,
    add_common_arguments,
    add_sink_arguments,
    address_of,
    redis_server,
    smtp_sink,
    write_json,
)
from mailcore.composition import build_queries, load_catalog, sender_of
from mailcore.config import Settings
from mailcore.contracts.stream import MalformedCommand, decode_command
from mailcore.domain.states import DeliveryStatus
from mailcore.mail.mime import Sender, build_message, envelope_recipients
from mailcore.ports import DeliveryQueries
from mailcore.rendering.catalog import render_delivery
from mailcore.services.stream_intake import delivery_from_command
from mailcore.store.keys import RedisKeys
from scripts.local_stack.attempt_queue import DUMMY_CREDENTIALS, sqs_client
from scripts.local_stack.sam_template import SamTemplate
from tests.support.commands import STREAM, StreamFields, command

FROM_EMAIL = "noreply@mail.bench.test"
REGION = "us-east-1"
INSTANCE = ROOT / "bench" / "_lambda_instance.py"
STALL_S = 60.0  # no message at the sink for this long: the run has stalled
PROGRESS_S = 10.0


def commands(count: int) -> list[dict[str, str]]:
    return [
        command(number, mode="rendered" if number % 2 else "template")
        for number in range(1, count + 1)
    ]


def preload(client: redis.Redis, entries: Sequence[dict[str, str]]) -> None:
    pipe = client.pipeline(transaction=False)
    for number, fields in enumerate(entries, start=1):
        pipe.xadd(STREAM, cast(StreamFields, fields))
        if number % 2000 == 0:
            pipe.execute()
    pipe.execute()


@dataclass(frozen=True, slots=True)
class Prepared:
    envelope_from: str
    recipients: list[str]
    data: bytes


def prepared_messages(entries: Sequence[dict[str, str]], environ: dict[str, str]) -> list[Prepared]:
    """Each command as the worker would send it: decoded, rendered, MIME, wire bytes."""
    settings = Settings.from_environ(environ)
    catalog = load_catalog(settings)
    sender: Sender = sender_of(settings)
    now = datetime.now(UTC)
    prepared = []
    for number, fields in enumerate(entries, start=1):
        raw = [(name.encode(), value.encode()) for name, value in fields.items()]
        decoded = decode_command(f"{number}-0", raw)
        if isinstance(decoded, MalformedCommand):
            raise SystemExit(f"command {number} is malformed: {decoded.message}")
        delivery, _ = delivery_from_command(decoded, int(now.timestamp() * 1000))
        rendered = render_delivery(catalog, delivery)
        message = build_message(
            delivery, rendered.subject, rendered.text_body, rendered.html_body, sender, now=now
        )
        del message["Bcc"]  # as the provider sends it: Bcc only in the envelope
        prepared.append(
            Prepared(
                sender.email, envelope_recipients(delivery), message.as_bytes(policy=SMTP_POLICY)
            )
        )
    return prepared


# --------------------------------------------------------------------------- the processes


class Instance:
    """One child process of bench/_lambda_instance.py and its ready/go/done protocol."""

    def __init__(self, role: str, spec: str, environment: dict[str, str]) -> None:
        self.role = role
        self.process = subprocess.Popen(
            [sys.executable, str(INSTANCE), "sqs" if role == "sqs" else "function", spec],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.done: dict[str, Any] = {}
        self.reports_done = role == "sqs"  # a function reports only once it went

    def expect(self, word: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(word + " "):
            self.process.kill()
            raise SystemExit(f"{self.role}: expected {word!r}, got {line!r} (see stderr above)")
        details: dict[str, Any] = json.loads(line.split(" ", 1)[1])
        return details

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.reports_done = True

    def close(self) -> None:
        """Close stdin: the signal to stop."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with suppress(BrokenPipeError):
                self.process.stdin.close()

    def finish(self) -> None:
        """After :meth:`close`: read ``done`` and wait for the exit."""
        if self.reports_done:
            try:
                self.done = self.expect("done")
            except SystemExit as error:
                print(error, file=sys.stderr)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def base_environment() -> dict[str, str]:
    """This environment without any MAIL_* or AWS_* setting: the benchmark sets its own."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("MAIL_", "AWS_", "POWERTOOLS_"))
    }


def handler_environment(
    redis_addr: str,
    sink: SmtpSink,
    sqs: dict[str, Any],
    workers: int,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every function's environment; ``extra`` adds (or overrides) settings, e.g.
    ``MAIL_REDIS_CLUSTER`` and ``MAIL_REDIS_PARTITIONS`` for a cluster."""
    environment = base_environment() | {
        "MAIL_REDIS_ADDR": redis_addr,
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": sink.addr,
        "MAIL_SMTP_TLS": "none",
        "MAIL_SMTP_FROM_EMAIL": FROM_EMAIL,
        "MAIL_REDIS_COMMAND_STREAM": STREAM,
        "MAIL_ATTEMPT_QUEUE_URL": sqs["queue_url"],
        "MAIL_ATTEMPT_WORKER_CONCURRENCY": str(workers),
        "AWS_ENDPOINT_URL_SQS": sqs["endpoint"],
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "BENCH_ATTEMPT_QUEUE_ARN": sqs["queue_arn"],
        "POWERTOOLS_SERVICE_NAME": "mail",
        "POWERTOOLS_METRICS_NAMESPACE": "MailService",
        **DUMMY_CREDENTIALS,
    }
    return environment | dict(extra or {})


@dataclass
class Parts:
    sqs: Instance
    functions: list[Instance]  # workers first, then the scheduler, the poller last
    sqs_details: dict[str, Any] = field(default_factory=dict)  # endpoint, queue_url, queue_arn
    environment: dict[str, str] = field(default_factory=dict)  # every function's

    def go(self) -> None:
        for instance in self.functions:
            instance.go()

    def stop(self) -> None:
        """Every function at once (by now all the work is done), then SQS."""
        for group in (self.functions, [self.sqs]):
            for instance in group:
                instance.close()
            for instance in group:
                instance.finish()


@contextmanager
def pipeline(
    redis_addr: str, sink: SmtpSink, workers: int, extra: Mapping[str, str] | None = None
) -> Iterator[Parts]:
    template = SamTemplate.load()
    sqs = Instance(
        "sqs",
        sqs_spec(template),
        base_environment() | {"AWS_REGION": REGION, **DUMMY_CREDENTIALS},
    )
    functions: list[Instance] = []
    parts = Parts(sqs, functions)
    try:
        details = sqs.expect("ready")
        parts.sqs_details = details
        environment = handler_environment(redis_addr, sink, details, workers, extra)
        parts.environment = environment
        roles = ["attempt_worker"] * workers + ["scheduler", "stream_poller"]
        specs = {role: function_spec(template, role) for role in set(roles)}
        functions += [Instance(role, specs[role], environment) for role in roles]
        for instance in functions:
            instance.expect("ready")
        yield parts
    finally:
        parts.stop()


# --------------------------------------------------------------------------- the figures


def unsent(queries: DeliveryQueries, delivery_ids: Sequence[str], timeout: float) -> list[str]:
    """The deliveries not (yet) ``sent`` after waiting up to ``timeout`` seconds."""
    waiting = list(delivery_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        still = []
        for delivery_id in waiting:
            delivery = queries.delivery(delivery_id)
            if delivery is None or delivery.status is not DeliveryStatus.SENT:
                still.append(delivery_id)
        waiting = still
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return waiting


def baseline(sink: SmtpSink, messages: Sequence[Prepared]) -> float:
    """Seconds for one plain smtplib connection to send every message."""
    started = time.perf_counter()
    connection = smtplib.SMTP(sink.host, sink.port, local_hostname="bench.localhost")
    for message in messages:
        connection.sendmail(message.envelope_from, message.recipients, message.data)
    connection.quit()
    return time.perf_counter() - started


def watch(sink: SmtpSink, before: int, count: int, started: float, timeout: float) -> float | None:
    """``time.perf_counter()`` when the sink got ``count`` more messages than ``before``.

    None when no message arrived for STALL_S seconds, or after ``timeout``.
    Prints the progress every PROGRESS_S seconds.
    """
    last_count, last_change = sink.count, time.perf_counter()
    next_report = started + PROGRESS_S
    while True:
        reached = sink.wait_for(before + count, 1.0)
        if reached is not None:
            return reached
        now, at_sink = time.perf_counter(), sink.count
        if at_sink != last_count:
            last_count, last_change = at_sink, now
        if now >= next_report:
            print(f"  {at_sink - before:,} at the sink after {now - started:.0f}s", flush=True)
            next_report += PROGRESS_S
        if now - last_change > STALL_S or now - started > timeout:
            return None


def stall_report(client: redis.Redis, sqs: dict[str, Any], partitions: int = 1) -> dict[str, Any]:
    """Where the deliveries that did not arrive are: Redis's claims and schedule (over every
    partition), the queue."""
    every = [RedisKeys.of_partition(n) for n in range(partitions)]
    now_ms = time.time_ns() // 1_000_000
    queue = (
        sqs_client(sqs["endpoint"], REGION)
        .get_queue_attributes(QueueUrl=sqs["queue_url"], AttributeNames=["All"])
        .get("Attributes", {})
    )
    return {
        "claims": sum(int(client.zcard(keys.claims())) for keys in every),
        "claims_expired": sum(
            int(client.zcount(keys.claims(), "-inf", now_ms - 1)) for keys in every
        ),
        "scheduled": sum(int(client.zcard(keys.attempt_schedule())) for keys in every),
        "queue_visible": int(queue.get("ApproximateNumberOfMessages", 0)),
        "queue_in_flight": int(queue.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


@dataclass(frozen=True, slots=True)
class Delivered:
    """One timed run of the pipeline over the preloaded commands."""

    seconds: float  # from "go" to the last message at the sink (or to giving up)
    at_sink: int  # messages the sink accepted during the run
    not_sent: list[str]  # deliveries not ``sent`` in Redis afterwards
    counters: list[dict[str, Any]]  # what each function reported when it stopped
    stalled: dict[str, Any] | None  # where the rest were, when the run did not finish


def deliver(
    client: redis.Redis,
    redis_addr: str,
    sink: SmtpSink,
    entries: Sequence[dict[str, str]],
    workers: int,
    timeout: float,
    extra: Mapping[str, str] | None = None,
) -> Delivered:
    """Start the pipeline (``extra``: more settings for every function), time it, check Redis.

    ``client`` reaches the same Redis as ``redis_addr`` (a cluster client for a cluster).
    """
    count = len(entries)
    stalled: dict[str, Any] | None = None
    with pipeline(redis_addr, sink, workers, extra) as parts:
        print(
            f"started SQS (moto), {workers} attempt workers, the scheduler "
            "and the stream poller, each in its own process",
            flush=True,
        )
        settings = Settings.from_environ(parts.environment)
        before = sink.count
        started = time.perf_counter()
        parts.go()
        reached = watch(sink, before, count, started, timeout)
        if reached is None:
            seconds = time.perf_counter() - started
            stalled = stall_report(client, parts.sqs_details, settings.redis_partitions)
            stalled["at_sink"] = sink.count - before
        else:
            seconds = reached - started
        delivery_ids = [fields["delivery_id"] for fields in entries]
        not_sent = unsent(
            build_queries(settings, client), delivery_ids, timeout=60 if stalled is None else 0
        )
    return Delivered(
        seconds,
        sink.count - before,
        not_sent,
        [instance.done for instance in parts.functions],
        stalled,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20_000)
    default_workers = Settings.model_fields["attempt_worker_concurrency"].default
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers,
        help="attempt worker processes (default: MAIL_ATTEMPT_WORKER_CONCURRENCY's "
        f"default, {default_workers})",
    )
    parser.add_argument("--timeout", type=float, default=480, help="give up after this long (s)")
    add_common_arguments(parser)
    add_sink_arguments(parser)
    arguments = parser.parse_args()
    count: int = arguments.deliveries
    # SIGTERM (a stopped `make bench`) ends like Ctrl-C: every process started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    with smtp_sink(arguments.sink, install=not arguments.no_install) as sink:
        print(f"SMTP sink: {sink.kind} on {sink.addr}")
        with redis_server(arguments.redis) as client:
            client.flushall()
            prepared_at = time.perf_counter()
            entries = commands(count)
            preload(client, entries)
            environ = {
                "MAIL_REDIS_ADDR": address_of(client),
                "MAIL_SMTP_MODE": "smtp",
                "MAIL_SMTP_ADDR": sink.addr,
                "MAIL_SMTP_FROM_EMAIL": FROM_EMAIL,
            }
            messages = prepared_messages(entries, environ)
            recipients = sum(len(message.recipients) for message in messages)
            print(
                f"preloaded {count:,} commands ({recipients:,} recipients) and built the "
                f"baseline's {count:,} messages in {time.perf_counter() - prepared_at:.0f}s",
                flush=True,
            )

            run = deliver(
                client, address_of(client), sink, entries, arguments.workers, arguments.timeout
            )
            seconds, stalled, not_sent = run.seconds, run.stalled, run.not_sent
            e2e_messages, counters = run.at_sink, run.counters

        sink_before = sink.count
        baseline_seconds = baseline(sink, messages)
        baseline_accepted = sink.count - sink_before
        if sink.wait_for(sink_before + count, 10) is None:
            print(f"the baseline got {baseline_accepted:,} of {count:,} accepted", file=sys.stderr)

    baseline_rate = count / baseline_seconds
    sent = count - len(not_sent)
    figures: dict[str, Any] = {
        "deliveries": count,
        "workers": arguments.workers,
        "sink": sink.kind,
        "completed": stalled is None,
        "seconds": round(seconds, 3),
        "sent_in_redis": sent,
        "messages_at_sink": e2e_messages,
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_messages_per_second": round(baseline_rate, 1),
        "workers_done": counters,
    }
    print(f"baseline (one smtplib connection, no bookkeeping): {baseline_rate:,.0f} messages/s")
    if stalled is not None:
        figures["stalled"] = stalled
        write_json(arguments.json, figures)
        print(
            f"end to end did not finish: {stalled['at_sink']:,} of {count:,} deliveries reached "
            f"the sink in {seconds:.0f}s",
            file=sys.stderr,
        )
        print(
            f"  outstanding claims {stalled['claims']:,} (expired {stalled['claims_expired']:,}), "
            f"scheduled {stalled['scheduled']:,}; attempt queue: {stalled['queue_visible']:,} "
            f"waiting, {stalled['queue_in_flight']:,} in flight",
            file=sys.stderr,
        )
        raise SystemExit(1)

    rate = count / seconds
    ratio = rate / baseline_rate
    print(
        f"end to end: {count:,} deliveries SMTP-accepted in {seconds:.2f}s; "
        f"{sent:,} sent in Redis; {e2e_messages:,} messages at the sink"
    )
    for done in counters:
        print(f"  {done}")
    print(f"end to end: {rate:,.0f} deliveries/s with {arguments.workers} attempt workers")
    print(f"ratio end to end / baseline: {ratio:.2f}x")
    figures |= {"deliveries_per_second": round(rate, 1), "ratio": round(ratio, 2)}
    write_json(arguments.json, figures)
    if not_sent:
        print(f"{len(not_sent):,} deliveries are not sent, e.g. {not_sent[:3]}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
