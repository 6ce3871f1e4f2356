"""Partitions: where a delivery lives, and how claims find their way back to it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

import pytest
from redis.crc import key_slot

from mailcore.contracts.attempt_message import decode_claim, encode_claim
from mailcore.ports import ClaimedAttempt
from mailcore.services.dispatch import Dispatcher
from mailcore.store.keys import RedisKeys, partition_of
from tests.support.fakes import FixedClock


def test_an_idempotency_scope_always_lands_in_the_same_partition() -> None:
    # Given a scope, When its partition is computed twice (as two processes would)
    first = partition_of("notification", "order-1234", 16)
    again = partition_of("notification", "order-1234", 16)

    # Then it is the same, and a single partition is always 0
    assert first == again
    assert partition_of("notification", "order-1234", 1) == 0
    # And the value does not depend on Python's per-process hash salt (CRC-32)
    assert partition_of("auth", "key-1", 16) == 13  # crc32(b"auth\\x00key-1") % 16


def test_scopes_spread_evenly_over_the_partitions() -> None:
    # Given 16,000 scopes over 16 partitions
    counts = Counter(partition_of("notification", f"key-{n}", 16) for n in range(16_000))

    # Then every partition gets its share, within 10 %
    assert set(counts) == set(range(16))
    assert all(900 <= count <= 1100 for count in counts.values())


def test_each_partition_has_its_own_hash_tag() -> None:
    assert RedisKeys.of_partition(0) == RedisKeys()
    assert RedisKeys.of_partition(3).delivery("d1") == "mail:{p3}:delivery:d1"


def test_an_attempt_message_carries_its_partition() -> None:
    # Given a claim made in partition 5
    claim = ClaimedAttempt("d1", 2, "token", partition=5)

    # When it travels through the queue, Then the worker knows where to find it
    assert decode_claim(encode_claim(claim)) == claim
    # And a message without a partition (from before partitions) means partition 0
    assert decode_claim('{"delivery_id":"d1","attempt_no":1,"claim_token":"t"}').partition == 0
    assert "partition" not in encode_claim(ClaimedAttempt("d1", 1, "t"))


class _PartitionStore:
    def __init__(self, partition: int, due: Sequence[str]) -> None:
        self.partition = partition
        self.due = list(due)
        self.bounds: list[int | None] = []

    def due_delivery_ids(self, now: int, limit: int) -> list[str]:
        return self.due[:limit]

    def claim(
        self, ids: Sequence[str], now: int, deadline: int, max_in_flight: int | None = None
    ) -> list[ClaimedAttempt]:
        self.bounds.append(max_in_flight)
        return [ClaimedAttempt(d, 1, "t", self.partition) for d in ids]

    def release(self, claims: Sequence[ClaimedAttempt], now: int) -> int:
        return 0


class _Queue:
    def __init__(self) -> None:
        self.sent: list[ClaimedAttempt] = []

    def send(self, claims: Sequence[ClaimedAttempt]) -> list[ClaimedAttempt]:
        self.sent += claims
        return []


def test_due_work_is_taken_from_every_partition_with_a_share_of_the_bound() -> None:
    # Given four partitions, the first with a backlog, and a bound of 200 claims in flight
    stores = [_PartitionStore(0, [f"a{n}" for n in range(100)])] + [
        _PartitionStore(p, [f"d{p}"]) for p in range(1, 4)
    ]
    queue = _Queue()
    dispatcher = Dispatcher(stores, queue, FixedClock(), timedelta(seconds=45), 200)  # type: ignore[arg-type]

    # When the scheduler asks for 40 due attempts
    result = dispatcher.dispatch_due(40)

    # Then each partition was asked for its share, within its share of the bound
    assert [len(s.bounds) for s in stores] == [1, 1, 1, 1]
    assert all(s.bounds == [50] for s in stores)
    assert result.claimed == 10 + 3
    # And the backlogged partition says there is more, so the scheduler polls again at once
    assert result.saturated
    # And every claim carries the partition it was made in
    assert {c.partition for c in queue.sent} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "delivery_id",
    ["email:{p1}:user/42", "}{", "{", "}", "a}b{c}", "{p0}", "email::", "*?[]", "%2F"],
)
def test_a_producers_delivery_id_cannot_move_its_keys_out_of_the_partition(
    delivery_id: str,
) -> None:
    # Given a delivery id with hash-tag braces and key separators in it
    for partition in (0, 3):
        keys = RedisKeys.of_partition(partition)
        home = key_slot(keys.attempt_schedule().encode())
        # Then every key built from it keeps the partition's hash slot (the tag
        # comes first, so braces after it are plain characters to Redis)
        for key in [
            keys.delivery(delivery_id),
            keys.attempt(delivery_id, 1),
            keys.dead_letter(delivery_id),
            keys.idempotency("notification", delivery_id),
            keys.index_idempotency("notification", delivery_id),
        ]:
            assert key_slot(key.encode()) == home, key
        # And the attempt key of one id is never the attempt key of another
        assert keys.attempt(delivery_id, 1) != keys.attempt(f"{delivery_id}:1", 1)
