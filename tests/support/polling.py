"""Helpers to run the stream poller in tests: observers and stop conditions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis

from mailcore.errors import StoreUnavailable
from mailcore.services.stream_intake import HandledEntry
from tests.support.commands import STREAM
from tests.support.partitions import CONTROL


class RecordingObserver:
    """A PollObserver that remembers what it was told."""

    def __init__(self) -> None:
        self.handled: list[HandledEntry] = []
        self.store_errors: list[StoreUnavailable] = []

    def entries_handled(self, handled: Sequence[HandledEntry]) -> None:
        self.handled.extend(handled)

    def store_unavailable(self, error: StoreUnavailable) -> None:
        self.store_errors.append(error)

    def by_entry(self) -> dict[str, HandledEntry]:
        return {entry.stream_entry_id: entry for entry in self.handled}


# XINFO STREAM also answers the first and last entries, which need not be
# UTF-8 (a decoding client would fail on them): only the id comes back.
_LAST_GENERATED_ID = """
if redis.call('EXISTS', KEYS[1]) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
"""


def last_entry_id(client: redis.Redis, stream: str = STREAM) -> str:
    """The id of the newest entry added, ``0-0`` for no stream; it may have been trimmed
    since (the poller trims what it handled, keeping ``MAIL_STREAM_RETENTION`` entries)."""
    newest = client.eval(_LAST_GENERATED_ID, 1, stream)
    return newest.decode() if isinstance(newest, bytes) else str(newest)


def until_drained(
    client: redis.Redis, stream: str = STREAM, limit_seconds: float = 60
) -> Callable[[], int]:
    """A ``time_left_ms`` that ends the run once the stored offset reaches the newest entry."""
    target = last_entry_id(client, stream)
    deadline = time.monotonic() + limit_seconds
    offset_key = CONTROL.stream_offset(stream)  # the offset lives in partition 0

    def time_left_ms() -> int:
        if time.monotonic() > deadline or client.get(offset_key) == target:
            return 0
        return 60_000

    return time_left_ms


def for_seconds(seconds: float) -> Callable[[], int]:
    """A ``time_left_ms`` like Lambda's: ``seconds`` plus the poller's 3 s reserve."""
    deadline = time.monotonic() + seconds + 3

    def time_left_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    return time_left_ms
