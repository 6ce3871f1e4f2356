"""The partition count the stored data was written with, checked once per process."""

from __future__ import annotations

import threading

import redis

from mailcore.errors import PartitionCountChanged
from mailcore.store.keys import RedisKeys
from mailcore.store.redis_store import translate_errors


class PartitionLayout:
    """Records ``MAIL_REDIS_PARTITIONS`` with the data, and refuses a different one.

    The first writer stores its count (``SET NX``); every process compares
    its own with it once, before its first acceptance or scheduling round.
    A changed count would send replays to partitions that hold no record of
    them, or leave deliveries in partitions nobody reads any more.
    """

    def __init__(self, client: redis.Redis, partitions: int) -> None:
        self._client = client
        self._partitions = partitions
        self._key = RedisKeys().partition_count()
        self._verified = False
        self._lock = threading.Lock()

    def verify(self) -> None:
        if self._verified:
            return
        with self._lock, translate_errors():
            # SET NX GET (Redis 7): stores ours if none is there, answers what was.
            stored = self._client.set(self._key, str(self._partitions), nx=True, get=True)
        if stored is not None and int(stored) != self._partitions:
            raise PartitionCountChanged(
                f"MAIL_REDIS_PARTITIONS is {self._partitions}, but the data in Redis was "
                f"written with {int(stored)}; see docs/scaling.md before changing it"
            )
        self._verified = True
