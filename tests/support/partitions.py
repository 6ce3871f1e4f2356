"""Finding the service's keys when deliveries are spread over partitions.

Tests that look at Redis directly ask here which partition holds a delivery
(``home_keys``) or add a figure up over every partition (``total``), so the
same test reads true with one partition and with several.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import redis

from mailcore.store.keys import RedisKeys

# More than any test configures (the cluster tier uses 4): unused ones are empty.
MAX_PARTITIONS = 16
EVERY_PARTITION = [RedisKeys.of_partition(n) for n in range(MAX_PARTITIONS)]
CONTROL = RedisKeys()  # stream offsets, malformed commands and leases live in partition 0


def home_keys(client: redis.Redis, delivery_id: str) -> RedisKeys:
    """The keys of the partition holding this delivery (partition 0 if none does)."""
    pipe = client.pipeline(transaction=False)
    for keys in EVERY_PARTITION:
        pipe.exists(keys.delivery(delivery_id))
    for keys, found in zip(EVERY_PARTITION, pipe.execute(), strict=True):
        if found:
            return keys
    return CONTROL


def delivery_record(client: redis.Redis, delivery_id: str) -> dict[str, str]:
    """The delivery's hash, wherever it lives (empty if none)."""
    key = home_keys(client, delivery_id).delivery(delivery_id)
    return cast(dict[str, str], client.hgetall(key))


def total(client: redis.Redis, key_of: Callable[[RedisKeys], str]) -> int:
    """ZCARD of one sorted set of every partition, added up (the schedule, claims, an index)."""
    pipe = client.pipeline(transaction=False)
    for keys in EVERY_PARTITION:
        pipe.zcard(key_of(keys))
    return sum(int(count) for count in pipe.execute())


def members(client: redis.Redis, key_of: Callable[[RedisKeys], str]) -> list[str]:
    """Every member of one sorted set of every partition."""
    pipe = client.pipeline(transaction=False)
    for keys in EVERY_PARTITION:
        pipe.zrange(key_of(keys), 0, -1)
    return [cast(str, m) for reply in pipe.execute() for m in reply]
