"""Benchmark: stream intake and end to end with 1, 4 and 16 partitions on a local Redis Cluster.

    python bench/partitions.py [--commands N] [--deliveries N] [--partitions P [P ...]]
                               [--workers W] [--no-standalone] [--timeout S]
                               [--sink auto|smtp-sink|aiosmtpd] [--no-install] [--json PATH]

Starts one local Redis Cluster (3 primaries, 3 replicas, from redis-server
binaries: ``tests/support/redis_cluster.py``) and, for each partition count
(default 1, 4 and 16), with the service in cluster mode
(``MAIL_REDIS_CLUSTER=true``, ``MAIL_REDIS_PARTITIONS=P``), measures:

- stream intake, as ``bench/stream_intake.py`` does (its ``preload`` and
  ``measure``): N commands preloaded (default 20,000), one poller in this
  process drains them; commands accepted/s;
- end to end, as ``bench/end_to_end.py`` does (its ``preload`` and
  ``deliver``): N commands preloaded (default 5,000), the pipeline (moto's
  SQS, the stream poller, the scheduler and W attempt workers, each in its
  own process) delivers them to the SMTP sink; deliveries/s from "go" to the
  Nth message at the sink, then all must be ``sent`` in Redis. No smtplib
  baseline (``bench/end_to_end.py`` has it).

The cluster is flushed (``FLUSHALL`` on every primary) before each
measurement. For reference, the same two figures come first from one
standalone redis-server with one partition, at the same sizes, so the rows
compare (``--no-standalone`` leaves it out). Prints one table row per
backend and partition count.

The defaults take about 3 minutes on 2 CPUs (most of it the end-to-end runs,
which start eight processes each).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import end_to_end, stream_intake
from bench._support import (
    SmtpSink,
    add_sink_arguments,
    address_of,
    redis_server,
    smtp_sink,
    write_json,
)
from mailcore.config import Settings
from tests.support.redis_backend import ClusterBackend

PARTITIONS = (1, 4, 16)
STANDALONE = "standalone redis-server"
CLUSTER = "local Redis Cluster"
CLUSTER_SHAPE = "3 primaries + 3 replicas"


def measure(
    backend: str,
    partitions: int,
    client: redis.Redis,
    flush: Callable[[], object],
    redis_environ: Mapping[str, str],
    sink: SmtpSink,
    entries: Sequence[dict[str, str]],
    arguments: argparse.Namespace,
) -> dict[str, Any]:
    """Both figures on one backend with these ``MAIL_REDIS_*`` settings: one row."""
    print(f"\n-- {backend}, {partitions} partition{'s' if partitions > 1 else ''} --", flush=True)
    flush()
    load_seconds = stream_intake.preload(client, arguments.commands)
    print(f"preloaded {arguments.commands:,} commands in {load_seconds:.1f}s", flush=True)
    intake = stream_intake.measure(client, redis_environ)
    print(
        f"stream intake: accepted {intake.accepted:,}, malformed {intake.malformed:,}, "
        f"duplicates {intake.duplicates:,} ({intake.scheduled:,} scheduled) in "
        f"{intake.seconds:.2f}s: {intake.rate:,.0f} commands accepted/s",
        flush=True,
    )

    flush()
    end_to_end.preload(client, entries)
    print(f"preloaded {len(entries):,} commands for end to end", flush=True)
    run = end_to_end.deliver(
        client,
        redis_environ["MAIL_REDIS_ADDR"],
        sink,
        entries,
        arguments.workers,
        arguments.timeout,
        extra=redis_environ,
    )
    count = len(entries)
    # Every command accepted by the poller, every delivery sent end to end.
    completed = intake.accepted == arguments.commands and run.stalled is None and not run.not_sent
    row: dict[str, Any] = {
        "backend": backend,
        "partitions": partitions,
        "commands": arguments.commands,
        "accepted": intake.accepted,
        "malformed": intake.malformed,
        "intake_seconds": round(intake.seconds, 3),
        "commands_per_second": round(intake.rate, 1),
        "deliveries": count,
        "e2e_seconds": round(run.seconds, 3),
        "sent_in_redis": count - len(run.not_sent),
        "messages_at_sink": run.at_sink,
        "completed": completed,
    }
    if run.stalled is not None:
        row["stalled"] = run.stalled
        print(
            f"end to end did not finish: {run.stalled['at_sink']:,} of {count:,} deliveries "
            f"reached the sink in {run.seconds:.0f}s",
            file=sys.stderr,
        )
    else:
        row["deliveries_per_second"] = round(count / run.seconds, 1)
        print(
            f"end to end: {count:,} deliveries SMTP-accepted in {run.seconds:.2f}s; "
            f"{count - len(run.not_sent):,} sent in Redis: "
            f"{count / run.seconds:,.0f} deliveries/s",
            flush=True,
        )
    if run.not_sent:
        print(f"{len(run.not_sent):,} deliveries are not sent, e.g. {run.not_sent[:3]}")
    return row


@contextmanager
def local_cluster() -> Iterator[ClusterBackend]:
    """The local cluster, started in a scratch directory and stopped (and removed) on exit."""
    data_dir = Path(tempfile.mkdtemp(prefix="mail-bench-cluster-"))
    backend = ClusterBackend(data_dir, partitions=1)
    try:
        started = time.perf_counter()
        backend.start()
        print(
            f"started a {CLUSTER} ({CLUSTER_SHAPE}) in {time.perf_counter() - started:.1f}s",
            flush=True,
        )
        yield backend
    finally:
        backend.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'backend':24} {'partitions':>10} {'intake commands/s':>18} {'e2e deliveries/s':>17}"
    ]
    for row in rows:
        e2e = row.get("deliveries_per_second")
        lines.append(
            f"{row['backend']:24} {row['partitions']:>10} "
            f"{row['commands_per_second']:>18,.0f} "
            f"{'did not finish' if e2e is None else f'{e2e:,.0f}':>17}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--commands", type=int, default=20_000, help="commands for stream intake (20,000)"
    )
    parser.add_argument(
        "--deliveries", type=int, default=5_000, help="deliveries end to end (5,000)"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        nargs="+",
        default=list(PARTITIONS),
        help="partition counts on the cluster (default: 1 4 16)",
    )
    default_workers = Settings.model_fields["attempt_worker_concurrency"].default
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers,
        help=f"attempt worker processes end to end (default {default_workers})",
    )
    parser.add_argument(
        "--no-standalone",
        action="store_true",
        help="leave out the reference row on one standalone redis-server",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="give up on an end-to-end run after (s)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    add_sink_arguments(parser)
    arguments = parser.parse_args()
    # SIGTERM (a stopped `make bench`) ends like Ctrl-C: every process started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    started = time.perf_counter()
    entries = end_to_end.commands(arguments.deliveries)
    rows: list[dict[str, Any]] = []
    with smtp_sink(arguments.sink, install=not arguments.no_install) as sink:
        print(f"SMTP sink: {sink.kind} on {sink.addr}", flush=True)
        if not arguments.no_standalone:
            with redis_server() as client:
                environ = {"MAIL_REDIS_ADDR": address_of(client)}
                rows.append(
                    measure(
                        STANDALONE, 1, client, client.flushall, environ, sink, entries, arguments
                    )
                )
        with local_cluster() as backend:
            client = backend.client()
            for partitions in arguments.partitions:
                backend.partitions = partitions
                rows.append(
                    measure(
                        CLUSTER,
                        partitions,
                        client,
                        backend.flushall,
                        backend.environ(),
                        sink,
                        entries,
                        arguments,
                    )
                )
            client.close()

    seconds = time.perf_counter() - started
    completed = all(row["completed"] for row in rows)
    print(
        f"\nstream intake: {arguments.commands:,} commands, one poller in this process; "
        f"end to end: {arguments.deliveries:,} deliveries, {arguments.workers} attempt workers, "
        f"{sink.kind} sink"
    )
    for line in table(rows):
        print(line)
    print(f"(all runs: {seconds:.0f}s)")
    write_json(
        arguments.json,
        {
            "commands": arguments.commands,
            "deliveries": arguments.deliveries,
            "workers": arguments.workers,
            "sink": sink.kind,
            "cluster": CLUSTER_SHAPE,
            "completed": completed,
            "seconds": round(seconds, 1),
            "rows": rows,
        },
    )
    if not completed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
