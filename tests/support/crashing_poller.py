"""A stream poller process that dies in the middle of a batch.

``python -m tests.support.crashing_poller REDIS_ENVIRON [WHERE]`` (the
backend's ``MAIL_REDIS_*`` settings, and any other ``MAIL_*`` ones, as a JSON
object: a standalone server's or a cluster's with its partitions) runs the
production poller, its stream trimming included, and ends the process
abruptly (``os._exit``, no cleanup, lease still held) at ``WHERE``, the way a
Lambda that runs out of memory or time would:

- ``before-accept`` (the default): it has read a batch and accepts nothing.
  Exit status 86.
- ``after-accept``: the first step of the batch has been accepted, and
  nothing after it has run: over several partitions, the deliveries are in
  their partitions but the offset has not moved; on one partition, the offset
  moved with them (one script) but nothing was trimmed since. Exit status 87.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from mailcore.composition import STREAM_POLLER_LEASE, build_delivery_store, command_limits
from mailcore.config import Settings
from mailcore.contracts.stream import MalformedCommand
from mailcore.domain.clock import SystemClock
from mailcore.ports import PendingDelivery, StreamBatchResult
from mailcore.services.stream_intake import StreamIntake, StreamPoller, StreamTrimmer
from mailcore.store.client import build_redis_client
from mailcore.store.command_stream import RedisCommandStream
from mailcore.store.keys import RedisKeys
from mailcore.store.lease import RedisLease
from mailcore.store.partitions import PartitionedDeliveryStore
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.polling import RecordingObserver, for_seconds

DIED_BETWEEN_READ_AND_ACCEPT = 86
DIED_AFTER_ACCEPTING = 87
LEASE_LENGTH = timedelta(seconds=1)


def die(status: int) -> Any:
    sys.stdout.flush()
    os._exit(status)


class DyingStore:
    """The production store, dying at the first batch: before it, or once it went in."""

    def __init__(
        self, store: RedisDeliveryStore | PartitionedDeliveryStore, after_accepting: bool
    ) -> None:
        self._store = store
        self._after_accepting = after_accepting

    def read_offset(self, stream: str) -> str:
        return self._store.read_offset(stream)

    def stream_trim_point(self, stream: str, retention: int) -> str | None:
        return self._store.stream_trim_point(stream, retention)

    def accept_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> StreamBatchResult:
        return self.submit_stream_batch(stream, expected_offset, items)()

    def submit_stream_batch(
        self,
        stream: str,
        expected_offset: str,
        items: Sequence[PendingDelivery | MalformedCommand],
    ) -> Callable[[], StreamBatchResult]:
        if not self._after_accepting:
            die(DIED_BETWEEN_READ_AND_ACCEPT)
        if isinstance(self._store, PartitionedDeliveryStore):
            # The partitions' steps run; the control partition's, which moves
            # the offset, never does.
            control: Any = self._store._stores[0]  # the seam to die at
            control.record_and_advance = lambda *args, **kwargs: die(DIED_AFTER_ACCEPTING)
            return self._store.submit_stream_batch(stream, expected_offset, items)
        answer = self._store.submit_stream_batch(stream, expected_offset, items)
        answer()
        die(DIED_AFTER_ACCEPTING)
        raise AssertionError("unreachable")


def main(environ: dict[str, str], where: str) -> None:
    settings = Settings.from_environ(environ)
    client = build_redis_client(settings)
    store = DyingStore(build_delivery_store(settings, client=client), where == "after-accept")
    intake = StreamIntake(
        store, SystemClock(), settings.redis_command_stream, command_limits(settings)
    )
    stream = RedisCommandStream(
        build_redis_client(settings, decode_responses=False), settings.redis_command_stream
    )
    poller = StreamPoller(
        intake,
        stream,
        RedisLease(client, RedisKeys().lease(STREAM_POLLER_LEASE), LEASE_LENGTH),
        RecordingObserver(),
        batch_size=settings.stream_batch_size,
        block_ms=100,
        trimmer=StreamTrimmer(
            store, stream, settings.redis_command_stream, settings.stream_retention
        ),
    )
    poller.run(for_seconds(10))
    sys.exit("the poller returned instead of dying")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "before-accept")
