"""Benchmark: the command stream's memory over 1,000,000 commands, trimmed and not.

    python bench/stream_retention.py [--commands N] [--chunk N] [--report-every N]
                                     [--retention N] [--distinct N] [--redis host:port]
                                     [--json PATH]

A producer that never trims its stream (as the Notification service's Go
publisher: ``XADD`` without ``MAXLEN``) adds N commands (default 1,000,000)
in chunks of ``--chunk`` (10,000) with pipelined ``XADD``s, and after each
chunk one stream poller, as ``stream_poller`` builds it
(``build_stream_poller``), handles them: decode, acceptance script, offset,
trim. Every ``--report-every`` commands (100,000) it prints the stream's
length (``XLEN``), its memory (``MEMORY USAGE <stream> SAMPLES 0``), Redis's
``used_memory`` and the number of trim marks. The run is made twice on a
fresh redis-server: with ``MAIL_STREAM_RETENTION`` at ``--retention``
(10,000, the default), and with it above N, so that nothing is trimmed, as
before the poller trimmed. The last line gives the ratio of the two at N.

The commands cycle through ``--distinct`` (10,000) different ones: half
rendered with two small attachments, half template mode, as
``bench/stream_intake.py`` sends them. The first of each becomes a
delivery; the later ones are the same command again (same idempotency key,
same content), which the poller takes as a duplicate through the same
decode and acceptance script. The stream holds N full entries either way,
but Redis holds 10,000 deliveries instead of N (and a 1,000,000-delivery
run would measure deliveries, not the stream): ``used_memory`` then shows
the stream, the offset and the trim marks, which is what this measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._support import add_common_arguments, address_of, redis_server, write_json
from bench.stream_intake import DiscardingObserver, poller_environ
from mailcore.composition import build_stream_poller
from mailcore.config import MAX_STREAM_RETENTION, Settings
from mailcore.services.stream_intake import PollReport
from mailcore.store.keys import RedisKeys
from tests.support.commands import STREAM, StreamFields, command
from tests.support.polling import until_drained

UNTRIMMED = MAX_STREAM_RETENTION  # more than any run handles: nothing is trimmed


@dataclass(frozen=True, slots=True)
class Sample:
    commands: int  # added and handled so far
    length: int  # XLEN
    stream_bytes: int  # MEMORY USAGE of the stream key
    used_memory: int  # INFO memory
    marks: int  # trim marks (a sorted set in partition 0)


@dataclass
class Run:
    retention: int
    samples: list[Sample]
    accepted: int = 0
    duplicates: int = 0
    malformed: int = 0
    trimmed: int = 0
    seconds: float = 0.0

    def add(self, report: PollReport) -> None:
        self.accepted += report.accepted
        self.duplicates += report.duplicates
        self.malformed += report.malformed
        self.trimmed += report.trimmed


def add_chunk(client: redis.Redis, first: int, count: int, distinct: int) -> None:
    pipe = client.pipeline(transaction=False)
    for number in range(first, first + count):
        n = number % distinct
        fields: StreamFields = command(n, mode="rendered" if n % 2 else "template")
        pipe.xadd(STREAM, fields)
        if (number - first) % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def sample(client: redis.Redis, commands: int) -> Sample:
    marks = RedisKeys().stream_trim_marks(STREAM)
    info = client.info("memory")
    return Sample(
        commands=commands,
        length=int(client.xlen(STREAM)),
        stream_bytes=int(client.memory_usage(STREAM, samples=0) or 0),
        used_memory=int(info["used_memory"]),
        marks=int(client.zcard(marks)),
    )


def run(
    client: redis.Redis,
    redis_environ: Mapping[str, str],
    *,
    commands: int,
    chunk: int,
    report_every: int,
    distinct: int,
    retention: int,
) -> Run:
    """One pass over a flushed Redis: add a chunk, let the poller handle it, sample now and then."""
    client.flushall()
    settings = Settings.from_environ(
        {**poller_environ(redis_environ), "MAIL_STREAM_RETENTION": str(retention)}
    )
    poller = build_stream_poller(settings, DiscardingObserver())
    label = "untrimmed" if retention >= commands else f"retention {retention:,}"
    result = Run(retention, [sample(client, 0)])
    started = time.perf_counter()
    added = 0
    while added < commands:
        size = min(chunk, commands - added)
        add_chunk(client, added, size, distinct)
        added += size
        result.add(poller.run(until_drained(client, STREAM, limit_seconds=600)))
        if added % report_every == 0 or added == commands:
            point = sample(client, added)
            result.samples.append(point)
            print(
                f"[{label}] {added:>9,} commands: XLEN {point.length:>9,}, "
                f"stream {point.stream_bytes / 2**20:8.2f} MiB, "
                f"used_memory {point.used_memory / 2**20:8.2f} MiB, "
                f"{point.marks:,} trim marks ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
    result.seconds = time.perf_counter() - started
    handled = result.accepted + result.duplicates + result.malformed
    print(
        f"[{label}] handled {handled:,} ({result.accepted:,} deliveries, "
        f"{result.duplicates:,} repeats, {result.malformed:,} malformed), "
        f"trimmed {result.trimmed:,}, in {result.seconds:.0f}s: "
        f"{handled / result.seconds:,.0f} commands/s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--report-every", type=int, default=100_000)
    parser.add_argument("--retention", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=10_000)
    add_common_arguments(parser)
    arguments = parser.parse_args()
    if arguments.report_every % arguments.chunk:
        parser.error("--report-every must be a multiple of --chunk")
    sizes = {
        "commands": arguments.commands,
        "chunk": arguments.chunk,
        "report_every": arguments.report_every,
        "distinct": arguments.distinct,
    }

    with redis_server(arguments.redis) as client:
        environ = {"MAIL_REDIS_ADDR": address_of(client)}
        trimmed = run(client, environ, retention=arguments.retention, **sizes)
        untrimmed = run(client, environ, retention=UNTRIMMED, **sizes)
        client.flushall()

    last, baseline = trimmed.samples[-1], untrimmed.samples[-1]
    grown, grown_untrimmed = (
        last.used_memory - trimmed.samples[1].used_memory,
        baseline.used_memory - untrimmed.samples[1].used_memory,
    )
    print(
        f"at {last.commands:,} commands: stream {last.stream_bytes / 2**20:.2f} MiB trimmed vs "
        f"{baseline.stream_bytes / 2**20:.2f} MiB untrimmed "
        f"({baseline.stream_bytes / max(last.stream_bytes, 1):,.1f}x); XLEN {last.length:,} vs "
        f"{baseline.length:,}; used_memory {last.used_memory / 2**20:.2f} MiB vs "
        f"{baseline.used_memory / 2**20:.2f} MiB "
        f"({baseline.used_memory / max(last.used_memory, 1):,.1f}x)"
    )
    print(
        f"used_memory growth after the first report: {grown / 2**20:+.2f} MiB trimmed, "
        f"{grown_untrimmed / 2**20:+.2f} MiB untrimmed"
    )
    write_json(
        arguments.json,
        {
            **sizes,
            "retention": arguments.retention,
            "trimmed": asdict(trimmed),
            "untrimmed": asdict(untrimmed),
            "stream_bytes_ratio": round(baseline.stream_bytes / max(last.stream_bytes, 1), 1),
            "used_memory_ratio": round(baseline.used_memory / max(last.used_memory, 1), 2),
        },
    )


if __name__ == "__main__":
    main()
