"""A stream poller process that dies between reading a batch and accepting it.

``python -m tests.support.crashing_poller REDIS_ENVIRON`` (the backend's
``MAIL_REDIS_*`` settings as a JSON object, a standalone server's or a
cluster's with its partitions) reads one batch from the command stream and
then ends the process abruptly (``os._exit``, no cleanup, lease still held),
the way a Lambda that runs out of memory or time would. Exit status 86 says
it died where intended.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from mailcore.composition import STREAM_POLLER_LEASE, build_delivery_store, command_limits
from mailcore.config import Settings
from mailcore.contracts.stream import MalformedCommand
from mailcore.domain.clock import SystemClock
from mailcore.ports import PendingDelivery, StreamAcceptanceStore, StreamBatchResult
from mailcore.services.stream_intake import StreamIntake, StreamPoller
from mailcore.store.client import build_redis_client
from mailcore.store.command_stream import RedisCommandStream
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from tests.support.polling import RecordingObserver, for_seconds

DIED_BETWEEN_READ_AND_ACCEPT = 86
LEASE_LENGTH = timedelta(seconds=1)


class DyingStore:
    """Delegates reads; dies at the first attempt to accept."""

    def __init__(self, store: StreamAcceptanceStore) -> None:
        self._store = store

    def read_offset(self, stream: str) -> str:
        return self._store.read_offset(stream)

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        sys.stdout.flush()
        os._exit(DIED_BETWEEN_READ_AND_ACCEPT)

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        sys.stdout.flush()
        os._exit(DIED_BETWEEN_READ_AND_ACCEPT)


def main(redis_environ: dict[str, str]) -> None:
    settings = Settings.from_environ(redis_environ)
    client = build_redis_client(settings)
    intake = StreamIntake(
        DyingStore(build_delivery_store(settings, client=client)),
        SystemClock(),
        settings.redis_command_stream,
        command_limits(settings),
    )
    poller = StreamPoller(
        intake,
        RedisCommandStream(
            build_redis_client(settings, decode_responses=False),
            settings.redis_command_stream,
        ),
        RedisLease(client, RedisKeys().lease(STREAM_POLLER_LEASE), LEASE_LENGTH),
        RecordingObserver(),
        batch_size=settings.stream_batch_size,
        block_ms=100,
    )
    poller.run(for_seconds(10))
    sys.exit("the poller returned instead of dying")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
