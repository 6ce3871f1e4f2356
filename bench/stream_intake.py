"""Benchmark: commands accepted per second by one stream poller.

    python bench/stream_intake.py [--commands N] [--redis host:port] [--json PATH]

Preloads ``mail:delivery_commands`` with N commands (default 100,000; every
other one rendered with two small attachments, the rest template mode) with
pipelined XADDs, then runs one poller as ``stream_poller`` builds it
(``build_stream_poller``: lease, offset, batches of MAIL_STREAM_BATCH_SIZE
accepted by ``accept_batch.lua``), with a 100 ms block timeout and no attempt
queue, until the stored offset reaches the last entry. Prints commands
accepted per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import add_common_arguments, address_of, redis_server, write_json
from mailcore.composition import build_stream_poller
from mailcore.config import Settings
from mailcore.errors import StoreUnavailable
from mailcore.services.stream_intake import HandledEntry
from mailcore.store.keys import RedisKeys
from tests.support.commands import STREAM, StreamFields, command
from tests.support.polling import until_drained


class DiscardingObserver:
    """A PollObserver that keeps nothing (the handler's would log and count)."""

    def entries_handled(self, handled: Sequence[HandledEntry]) -> None:
        pass

    def store_unavailable(self, error: StoreUnavailable) -> None:
        pass


def preload(client: redis.Redis, count: int) -> float:
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for number in range(1, count + 1):
        mode = "rendered" if number % 2 else "template"
        fields: StreamFields = command(number, mode=mode)
        pipe.xadd(STREAM, fields)
        if number % 2000 == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def poller_environ(redis_environ: Mapping[str, str]) -> dict[str, str]:
    """The poller's settings: these ``MAIL_REDIS_*`` ones, smtp mode, no attempt queue."""
    return {
        **redis_environ,
        "MAIL_SMTP_MODE": "smtp",
        "MAIL_SMTP_ADDR": "127.0.0.1:2525",
        "MAIL_SMTP_FROM_EMAIL": "noreply@example.com",
        "MAIL_STREAM_BLOCK_TIMEOUT": "100ms",
        "MAIL_REDIS_COMMAND_STREAM": STREAM,
    }


@dataclass(frozen=True, slots=True)
class Intake:
    accepted: int
    malformed: int
    duplicates: int
    scheduled: int  # over every partition
    seconds: float
    batch_size: int

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds


def measure(client: redis.Redis, redis_environ: Mapping[str, str]) -> Intake:
    """One poller built from these Redis settings drains the preloaded stream, timed.

    ``client`` reaches the same Redis (a cluster client for a cluster).
    """
    settings = Settings.from_environ(poller_environ(redis_environ))
    poller = build_stream_poller(settings, DiscardingObserver())
    time_left_ms = until_drained(client, STREAM, limit_seconds=3600)
    started = time.perf_counter()
    report = poller.run(time_left_ms)
    seconds = time.perf_counter() - started
    pipe = client.pipeline(transaction=False)
    for partition in range(settings.redis_partitions):
        pipe.zcard(RedisKeys.of_partition(partition).attempt_schedule())
    scheduled = sum(int(count) for count in pipe.execute())
    return Intake(
        report.accepted,
        report.malformed,
        report.duplicates,
        scheduled,
        seconds,
        settings.stream_batch_size,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=100_000)
    add_common_arguments(parser)
    arguments = parser.parse_args()

    with redis_server(arguments.redis) as client:
        client.flushall()
        load_seconds = preload(client, arguments.commands)
        print(f"preloaded {arguments.commands:,} commands in {load_seconds:.1f}s")
        intake = measure(client, {"MAIL_REDIS_ADDR": address_of(client)})

    rate = intake.rate
    print(
        f"accepted {intake.accepted:,}, malformed {intake.malformed:,}, "
        f"duplicates {intake.duplicates:,} ({intake.scheduled:,} scheduled) "
        f"in {intake.seconds:.2f}s, batch size {intake.batch_size}"
    )
    print(f"stream intake: {rate:,.0f} commands accepted/s")
    write_json(
        arguments.json,
        {
            "commands": arguments.commands,
            "accepted": intake.accepted,
            "malformed": intake.malformed,
            "seconds": round(intake.seconds, 3),
            "batch_size": intake.batch_size,
            "commands_per_second": round(rate, 1),
        },
    )


if __name__ == "__main__":
    main()
