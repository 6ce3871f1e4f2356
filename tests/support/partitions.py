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


def partition_number(keys: RedisKeys) -> int:
    """The number of the partition these keys belong to (``RedisKeys.of_partition`` reversed)."""
    return int(keys.partition.removeprefix("p"))


def drop_client_connections(client: redis.Redis) -> None:
    """CLIENT KILL every normal connection but this client's, on every node.

    A cluster client sends CLIENT KILL to one node only; the service's
    connections are spread over every primary (one per partition's slot).
    """
    from mailcore.store.client import is_cluster

    if is_cluster(client):
        cast(redis.RedisCluster, client).client_kill_filter(
            _type="normal", skipme=True, target_nodes=redis.RedisCluster.ALL_NODES
        )
    else:
        client.client_kill_filter(_type="normal", skipme=True)


def by_partition(client: redis.Redis, delivery_ids: list[str]) -> dict[int, list[str]]:
    """These deliveries grouped by the partition holding them (in one round of EXISTS)."""
    pipe = client.pipeline(transaction=False)
    for delivery_id in delivery_ids:
        for keys in EVERY_PARTITION:
            pipe.exists(keys.delivery(delivery_id))
    found = pipe.execute()
    grouped: dict[int, list[str]] = {}
    for number, delivery_id in enumerate(delivery_ids):
        row = found[number * MAX_PARTITIONS : (number + 1) * MAX_PARTITIONS]
        home = next((n for n, exists in enumerate(row) if exists), partition_number(CONTROL))
        grouped.setdefault(home, []).append(delivery_id)
    return grouped
