"""What the Redis-backed tiers run against: one redis-server, or a local Redis Cluster.

``pytest --redis-cluster`` runs the integration and e2e tiers against a
three-primary cluster (``tests/support/redis_cluster.py``) with the service
in cluster mode and its deliveries spread over ``CLUSTER_PARTITIONS``
partitions; without it they run against one standalone server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, cast

import redis

from tests.support.redis_cluster import RedisCluster

CLUSTER_PARTITIONS = 4


class RedisBackend(Protocol):
    @property
    def addr(self) -> str: ...

    def client(self) -> redis.Redis:
        """A client for test set-up and checks (decoded replies)."""
        ...

    def environ(self) -> dict[str, str]:
        """The service's ``MAIL_REDIS_*`` settings that reach this backend."""
        ...

    def flushall(self) -> None: ...


class ClusterBackend:
    """The local cluster, with the service configured for it and for several partitions."""

    def __init__(self, data_dir: Path, partitions: int = CLUSTER_PARTITIONS) -> None:
        self.cluster = RedisCluster(data_dir)
        self.partitions = partitions

    @property
    def addr(self) -> str:
        return self.cluster.startup_addr

    def client(self) -> redis.Redis:
        # Answers the same commands; typed as the service's stores type it.
        return cast(redis.Redis, self.cluster.client())

    def environ(self) -> dict[str, str]:
        return {
            "MAIL_REDIS_ADDR": self.addr,
            "MAIL_REDIS_CLUSTER": "true",
            "MAIL_REDIS_PARTITIONS": str(self.partitions),
        }

    def flushall(self) -> None:
        self.cluster.flushall()

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()
