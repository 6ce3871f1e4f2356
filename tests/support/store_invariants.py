"""Check that the Redis state holds only whole acceptances.

Every delivery has its idempotency record, every index entry and (when
queued) its scheduled first attempt; every idempotency record, index member
and schedule entry points at an existing delivery. A partial write breaks
one of these.
"""

from __future__ import annotations

import json
from typing import cast

import redis

from mailcore.store.keys import RedisKeys
from tests.support.partitions import EVERY_PARTITION


# The test clients decode responses; redis-py's stubs still say bytes | str.
def text_keys(client: redis.Redis, pattern: str = "*") -> list[str]:
    # A set: a cluster client may scan a node twice while its view of the
    # cluster catches up with a failover (as primary and as replica).
    return sorted({cast(str, key) for key in client.scan_iter(match=pattern)})


def text_hash(client: redis.Redis, key: str) -> dict[str, str]:
    return cast(dict[str, str], client.hgetall(key))


def find_partial_state(client: redis.Redis, keys: RedisKeys | None = None) -> list[str]:
    """Problems in one partition (``keys``), or in every partition."""
    if keys is None:
        return [problem for k in EVERY_PARTITION for problem in find_partial_state(client, k)]
    k = keys
    problems: list[str] = []
    delivery_prefix = k.delivery("")
    deliveries = {
        key.removeprefix(delivery_prefix): text_hash(client, key)
        for key in text_keys(client, delivery_prefix + "*")
    }
    for delivery_id, fields in deliveries.items():
        source, key = fields["source"], fields["idempotency_key"]
        record = text_hash(client, k.idempotency(source, key))
        if record.get("delivery_id") != delivery_id:
            problems.append(f"{delivery_id}: idempotency record missing or pointing elsewhere")
        expected_indexes = [
            k.index_created_at(),
            k.index_status(fields["status"]),
            k.index_source(source),
            k.index_idempotency(source, key),
            *(k.index_recipient(address) for address in json.loads(fields["to"])),
        ]
        if fields.get("template_id"):
            expected_indexes.append(k.index_template(fields["template_id"]))
        for index in expected_indexes:
            score = client.zscore(index, delivery_id)
            if score is None or int(score) != int(fields["created_at_ms"]):
                problems.append(f"{delivery_id}: missing from {index}")
        scheduled = client.zscore(k.attempt_schedule(), delivery_id) is not None
        first_attempt = text_hash(client, k.attempt(delivery_id, 1))
        if fields["status"] == "queued":
            if not scheduled or first_attempt.get("status") != "scheduled":
                problems.append(f"{delivery_id}: queued without a scheduled first attempt")
        elif scheduled or first_attempt:
            problems.append(f"{delivery_id}: {fields['status']} but has a scheduled attempt")

    for key in text_keys(client, k.idempotency("", "").removesuffix(":") + "*"):
        if client.hget(key, "delivery_id") not in deliveries:
            problems.append(f"{key}: idempotency record without its delivery")
    delivery_indexes = [
        key for key in text_keys(client, f"{k.prefix}idx:*") if key != k.index_malformed()
    ]
    for key in [k.attempt_schedule(), *delivery_indexes]:
        for member in cast(list[str], client.zrange(key, 0, -1)):
            if member not in deliveries:
                problems.append(f"{key}: member {member} without its delivery")
    for entry_id in cast(list[str], client.zrange(k.index_malformed(), 0, -1)):
        if not client.exists(k.malformed_command(entry_id)):
            problems.append(f"malformed index member {entry_id} without its record")
    return problems


def count_deliveries(client: redis.Redis, keys: RedisKeys | None = None) -> int:
    """Deliveries stored in one partition (``keys``), or in all of them."""
    if keys is None:
        return len(text_keys(client, "mail:{p*}:delivery:*"))
    return len(text_keys(client, keys.delivery("") + "*"))
