"""A stream poller process to kill at any moment.

``python -m tests.support.killable_poller REDIS`` runs the production
poller (its intake, store, stream reader and lease, as ``build_stream_poller``
wires them) until it is killed, with a 1-second lease so that the next one
need not wait the production lease out, 10 entries per batch and a 100 ms
block. A test SIGKILLs it wherever it happens to be (reading, accepting,
trimming, renewing its lease) and checks that nothing was lost or doubled.
It trims the stream after every batch (not once a second), keeping
``MAIL_STREAM_RETENTION`` handled entries, so a kill lands in a trim as often
as in an acceptance. When another poller's lease is still running, it waits
for it, as the next EventBridge tick would.

``REDIS`` is the backend's ``MAIL_REDIS_*`` settings as a JSON object
(``json.dumps(redis_server.environ())``, which also reaches a cluster with
its partitions), or just a standalone server's ``host:port``.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta

from mailcore.composition import STREAM_POLLER_LEASE, build_delivery_store, command_limits
from mailcore.config import Settings
from mailcore.domain.clock import SystemClock
from mailcore.services.stream_intake import StreamIntake, StreamPoller, StreamTrimmer
from mailcore.store.client import build_redis_client
from mailcore.store.command_stream import RedisCommandStream
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from tests.support.polling import RecordingObserver, for_seconds

LEASE_LENGTH = timedelta(seconds=1)
BLOCK = timedelta(milliseconds=100)


def redis_environ(argument: str) -> dict[str, str]:
    """The ``MAIL_REDIS_*`` settings given on the command line: JSON, or an address."""
    if argument.lstrip().startswith("{"):
        environ: dict[str, str] = json.loads(argument)
        return environ
    return {"MAIL_REDIS_ADDR": argument}


def main(argument: str) -> None:
    settings = Settings.from_environ({**redis_environ(argument), "MAIL_STREAM_BATCH_SIZE": "10"})
    client = build_redis_client(settings)
    store = build_delivery_store(settings, client=client)
    intake = StreamIntake(
        store, SystemClock(), settings.redis_command_stream, command_limits(settings)
    )
    stream = RedisCommandStream(
        build_redis_client(settings, decode_responses=False, extra_read_time=BLOCK),
        settings.redis_command_stream,
    )
    poller = StreamPoller(
        intake,
        stream,
        RedisLease(client, RedisKeys().lease(STREAM_POLLER_LEASE), LEASE_LENGTH),
        RecordingObserver(),
        batch_size=settings.stream_batch_size,
        block_ms=int(BLOCK.total_seconds() * 1000),
        trimmer=StreamTrimmer(
            store, stream, settings.redis_command_stream, settings.stream_retention
        ),
        trim_interval_ms=0,
    )
    while True:
        report = poller.run(for_seconds(600))
        if report.lease_acquired:
            sys.exit("the poller ran out of time instead of being killed")
        time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
