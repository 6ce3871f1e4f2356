"""The local Redis Cluster helper: six real redis-server processes, 3 primaries + 3 replicas."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest
import redis
from redis.crc import key_slot

from tests.support.redis_cluster import RedisCluster

pytestmark = pytest.mark.integration

SWAP = """
local first = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], redis.call('GET', KEYS[2]))
redis.call('SET', KEYS[2], first)
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path_factory.mktemp("redis-cluster")) as started:
        yield started


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[redis.RedisCluster]:
    cluster.flushall()
    connected = cluster.client()
    yield connected
    connected.close()


def one_tag_per_primary(cluster: RedisCluster) -> dict[int, str]:
    """A hash tag for each primary's port, found by trying tags until each primary has one."""
    tags: dict[int, str] = {}
    for number in count():
        tag = f"tenant-{number}"
        tags.setdefault(cluster.master_of_key(f"{{{tag}}}"), tag)
        if len(tags) == len(cluster.masters()):
            return tags
    raise AssertionError("unreachable")


def cached_primary(client: redis.RedisCluster, key: str) -> int:
    """The port the client's slot cache would send ``key`` to."""
    return int(client.nodes_manager.get_node_from_slot(key_slot(key.encode())).port)


def test_the_cluster_comes_up_with_three_primaries(
    cluster: RedisCluster, client: redis.RedisCluster
) -> None:
    # Given the cluster the module started
    # When its primaries are read from CLUSTER NODES
    masters = cluster.masters()

    # Then there are three, all on the cluster's own ports, and the client reaches them
    assert len(masters) == 3
    assert {port for _, port in masters} <= set(cluster.ports)
    assert client.ping()


def test_keys_with_different_hash_tags_land_on_different_primaries(
    cluster: RedisCluster, client: redis.RedisCluster
) -> None:
    # Given one hash tag owned by each primary
    tags = one_tag_per_primary(cluster)

    # When a key under each tag is written through the cluster client
    for tag in tags.values():
        client.set(f"{{{tag}}}:delivery", f"stored-under-{tag}")

    # Then each key sits on its own primary and reads back through the client
    assert len(tags) == 3
    for port, tag in tags.items():
        key = f"{{{tag}}}:delivery"
        assert client.get(key) == f"stored-under-{tag}"
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as primary:
            assert primary.get(key) == f"stored-under-{tag}"


def test_a_script_touching_two_keys_of_one_hash_tag_runs(
    cluster: RedisCluster, client: redis.RedisCluster
) -> None:
    # Given two keys that share a hash tag
    first, second = "{dlv_1}:status", "{dlv_1}:attempts"
    client.set(first, "queued")
    client.set(second, "3")

    # When one EVAL reads and writes both
    swapped = client.eval(SWAP, 2, first, second)

    # Then it ran atomically on their one primary
    assert swapped == ["3", "queued"]
    assert (client.get(first), client.get(second)) == ("3", "queued")


def test_a_value_written_before_a_failover_is_readable_after_it(
    cluster: RedisCluster, client: redis.RedisCluster
) -> None:
    # Given a value written through the client to the primary that owns its key
    key = "{dlv_2}:status"
    client.set(key, "sending")
    old_primary = cluster.master_of_key(key)

    # When that primary's replica takes over
    new_primary = cluster.failover(old_primary)

    # Then the same client, sent on by MOVED, still reads the value and can write
    assert new_primary != old_primary
    assert cluster.master_of_key(key) == new_primary
    assert cached_primary(client, key) == old_primary  # its view is stale until told
    assert client.get(key) == "sending"
    assert cached_primary(client, key) == new_primary
    assert client.set(key, "delivered")
    assert client.get(key) == "delivered"
    assert len(cluster.masters()) == 3
