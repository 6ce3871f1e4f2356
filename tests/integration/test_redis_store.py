"""The Redis store's atomic acceptance, against a real redis-server.

With partitions (``--redis-cluster``) a delivery and everything its
acceptance writes live in the partition of its idempotency scope: the
checks read that partition (``home_keys``) and add counts up over all.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from datetime import timedelta

import pytest
import redis
from redis.crc import key_slot

from mailcore.composition import build_attempt_stores, build_delivery_store
from mailcore.config import Settings, SmtpMode
from mailcore.contracts.auth import LoginCodeDeliveryRequest
from mailcore.domain.model import Attempt, Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import AttemptStatus, DeliveryStatus
from mailcore.errors import PartitionCountChanged, StoreInvariantBroken, StoreUnavailable
from mailcore.ports import DeliveryQueries
from mailcore.services.auth_intake import AuthIntake
from mailcore.store.client import build_redis_client
from mailcore.store.keys import key_catalog, partition_of
from mailcore.store.partitions import PartitionedDeliveryStore
from mailcore.store.queries import RedisQueries
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.fakes import FixedClock
from tests.support.network import free_port
from tests.support.partitions import CONTROL, EVERY_PARTITION, home_keys, total
from tests.support.store_invariants import count_deliveries, find_partial_state, text_keys

Store = RedisDeliveryStore | PartitionedDeliveryStore
NOW = 1_795_338_900_000
HOUR_MS = 3_600_000


def queued_delivery(delivery_id: str = "dlv_01JD0000000000000000000001") -> Delivery:
    return Delivery(
        delivery_id=delivery_id,
        source=Source.NOTIFICATION,
        status=DeliveryStatus.QUEUED,
        payload_mode=PayloadMode.TEMPLATE,
        envelope=Envelope(
            to=("Ada@Example.com",),
            cc=("bob@example.com",),
            bcc=("audit@example.com",),
            reply_to=("support@example.com",),
        ),
        idempotency_key="order-42-shipped",
        created_at_ms=NOW,
        updated_at_ms=NOW,
        template_id="order.shipped",
        locale="en",
        variables={"order": "42"},
        attempt_count=1,
    )


def first_attempt(delivery: Delivery) -> Attempt:
    return Attempt(delivery.delivery_id, 1, AttemptStatus.SCHEDULED, NOW, NOW)


def snapshot(client: redis.Redis) -> dict[str, bytes | None]:
    return {key: client.dump(key) for key in text_keys(client)}


def test_acceptance_stores_indexes_and_schedules_the_delivery_whole(
    store: Store, redis_client: redis.Redis, queries: DeliveryQueries
) -> None:
    # Given a queued delivery with a full envelope
    delivery = queued_delivery()

    # When it is accepted
    result = store.accept(delivery, first_attempt(delivery), fingerprint="fp-1", outcome="sent")

    # Then it is created and reads back exactly
    assert result.created
    assert queries.delivery(delivery.delivery_id) == delivery
    assert queries.attempts(delivery.delivery_id, 1) == [first_attempt(delivery)]
    # And it is due now in the attempt schedule of its partition
    home = home_keys(redis_client, delivery.delivery_id)
    assert redis_client.zscore(home.attempt_schedule(), delivery.delivery_id) == NOW
    # And every index holds it, scored by creation time (recipients lower-cased)
    for index in [
        home.index_created_at(),
        home.index_status("queued"),
        home.index_source("notification"),
        home.index_template("order.shipped"),
        home.index_idempotency("notification", "order-42-shipped"),
        home.index_recipient("ada@example.com"),
        home.index_recipient("bob@example.com"),
        home.index_recipient("audit@example.com"),
    ]:
        assert redis_client.zscore(index, delivery.delivery_id) == NOW, index
    # A reply-to address is not a recipient, in any partition
    assert not any(
        redis_client.exists(keys.index_recipient("support@example.com")) for keys in EVERY_PARTITION
    )
    assert find_partial_state(redis_client) == []


def test_every_key_of_the_acceptance_lives_in_one_hash_slot(
    store: Store, redis_client: redis.Redis
) -> None:
    delivery = queued_delivery()
    store.accept(delivery, first_attempt(delivery), fingerprint="fp-1", outcome="sent")
    # (The partition count the store records on its first write is a control key, apart.)
    keys = [key for key in text_keys(redis_client) if key != CONTROL.partition_count()]
    slots = {key_slot(key.encode()) for key in keys}
    assert len(keys) >= 10
    home = home_keys(redis_client, delivery.delivery_id)
    assert slots == {key_slot(home.attempt_schedule().encode())}


def test_live_records_carry_no_ttl_and_the_idempotency_key_expires(
    store: Store, redis_client: redis.Redis
) -> None:
    delivery = queued_delivery()
    store.accept(delivery, first_attempt(delivery), fingerprint="fp-1", outcome="sent")

    # Live state must not be evicted under volatile-lru: no TTL at all.
    home = home_keys(redis_client, delivery.delivery_id)
    assert redis_client.pttl(home.delivery(delivery.delivery_id)) == -1
    assert redis_client.pttl(home.attempt(delivery.delivery_id, 1)) == -1
    assert redis_client.pttl(home.attempt_schedule()) == -1
    idempotency_ttl = redis_client.pttl(home.idempotency("notification", "order-42-shipped"))
    assert 168 * HOUR_MS - 60_000 < idempotency_ttl <= 168 * HOUR_MS


def test_a_delivery_born_settled_gets_the_retention_ttl_and_no_attempt(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Given a store configured with a 48h retention
    store = build_delivery_store(settings.model_copy(update={"delivery_ttl": timedelta(hours=48)}))
    suppressed = replace(queued_delivery(), status=DeliveryStatus.SUPPRESSED, attempt_count=0)

    # When a suppressed delivery is accepted
    store.accept(suppressed, None, fingerprint="fp-1", outcome="suppressed")

    # Then it expires after the retention period, and nothing is scheduled
    home = home_keys(redis_client, suppressed.delivery_id)
    ttl = redis_client.pttl(home.delivery(suppressed.delivery_id))
    assert 48 * HOUR_MS - 60_000 < ttl <= 48 * HOUR_MS
    assert total(redis_client, lambda keys: keys.attempt_schedule()) == 0
    assert not any(
        redis_client.exists(keys.attempt(suppressed.delivery_id, 1)) for keys in EVERY_PARTITION
    )
    assert redis_client.zscore(home.index_status("suppressed"), suppressed.delivery_id) == NOW
    assert find_partial_state(redis_client) == []


def test_a_duplicate_key_changes_nothing_and_reports_the_first_delivery(
    store: Store, redis_client: redis.Redis
) -> None:
    first = queued_delivery()
    store.accept(first, first_attempt(first), fingerprint="fp-1", outcome="sent")
    before = snapshot(redis_client)

    # When another delivery arrives with the same idempotency key
    second = queued_delivery("dlv_01JD0000000000000000000002")
    same = store.accept(second, first_attempt(second), fingerprint="fp-1", outcome="sent")
    different = store.accept(second, first_attempt(second), fingerprint="fp-2", outcome="sent")

    # Then both answers point at the first delivery, only the fingerprint check differs
    assert (same.created, same.delivery_id, same.fingerprint_matches) == (
        False,
        first.delivery_id,
        True,
    )
    assert (different.created, different.delivery_id, different.fingerprint_matches) == (
        False,
        first.delivery_id,
        False,
    )
    # And not one byte of state changed
    assert snapshot(redis_client) == before


def test_an_id_collision_is_refused_before_anything_is_written(
    store: Store, redis_client: redis.Redis, settings: Settings
) -> None:
    # Given a stored delivery
    first = queued_delivery()
    store.accept(first, first_attempt(first), fingerprint="fp-1", outcome="sent")
    before = snapshot(redis_client)

    # When another request (another key, in the same partition) brings its id,
    # Then it is refused and nothing is written. (The REST intake and resend
    # make their ids, ULIDs, so only a bug could get here; stream commands,
    # whose ids callers choose, are checked across partitions:
    # test_stream_poller's delivery-id test.)
    partitions = settings.redis_partitions
    home = partition_of(first.source, first.idempotency_key, partitions)
    other_key = next(
        key
        for key in (f"another-key-{n}" for n in range(1000))
        if partition_of(first.source, key, partitions) == home
    )
    clash = replace(first, idempotency_key=other_key)
    with pytest.raises(StoreInvariantBroken):
        store.accept(clash, first_attempt(clash), fingerprint="fp-9", outcome="sent")
    assert snapshot(redis_client) == before


def test_the_script_is_reloaded_after_the_server_forgets_it(
    store: Store, redis_client: redis.Redis
) -> None:
    # Given a server whose script cache was flushed (restart, failover)
    redis_client.script_flush()
    # When the store accepts, Then EVALSHA's NOSCRIPT is handled
    delivery = queued_delivery()
    assert store.accept(delivery, first_attempt(delivery), fingerprint="f", outcome="sent").created


def test_fifty_concurrent_identical_requests_create_exactly_one_delivery(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given fifty callers racing with the same key and body
    intake = AuthIntake(
        build_delivery_store(settings),
        FixedClock(),
        _ThreadSafeIds(),
        SmtpMode.SMTP,
    )
    request = LoginCodeDeliveryRequest(email="ada@example.com", code="482913", locale="en")
    start = threading.Barrier(50)
    answers: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def call() -> None:
        start.wait()
        try:
            accepted = intake.accept_login_code(request, "race-key")
            answers.append((accepted.delivery_id, accepted.replayed))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then all fifty get the same delivery, exactly one of them first-hand
    assert errors == []
    assert len({delivery_id for delivery_id, _ in answers}) == 1
    assert sum(1 for _, replayed in answers if not replayed) == 1
    assert count_deliveries(redis_client) == 1
    assert total(redis_client, lambda keys: keys.attempt_schedule()) == 1
    assert find_partial_state(redis_client) == []


def test_an_unreachable_redis_is_reported_as_unavailable() -> None:
    # Given a store pointed at a port where nothing listens
    settings = Settings.from_environ(
        {"MAIL_REDIS_ADDR": f"127.0.0.1:{free_port()}", "MAIL_REDIS_OPERATION_TIMEOUT": "200ms"}
    )
    store = build_delivery_store(settings)
    delivery = queued_delivery()
    with pytest.raises(StoreUnavailable):
        store.accept(delivery, first_attempt(delivery), fingerprint="f", outcome="sent")
    with pytest.raises(StoreUnavailable):
        RedisQueries(build_redis_client(settings)).delivery(delivery.delivery_id)


class _ThreadSafeIds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._issued = 0

    def new_delivery_id(self) -> str:
        with self._lock:
            self._issued += 1
            return f"dlv_01JD{self._issued:022d}"


def test_every_key_written_is_in_the_documented_catalog(
    store: Store, redis_client: redis.Redis
) -> None:
    # Given acceptances of every kind: queued with a full envelope, and born settled
    delivery = queued_delivery()
    store.accept(delivery, first_attempt(delivery), fingerprint="f", outcome="sent")
    settled = replace(
        queued_delivery("dlv_01JD0000000000000000000003"),
        idempotency_key="other",
        status=DeliveryStatus.SUPPRESSED,
    )
    store.accept(settled, None, fingerprint="f", outcome="suppressed")

    # Then every key in Redis matches a pattern of the key catalog (of its partition)
    patterns = [
        re.compile(re.sub(r"<[a-z_]+>", ".+", re.escape(spec.pattern)) + "$")
        for keys in EVERY_PARTITION
        for spec in key_catalog(keys)
    ]
    for key in text_keys(redis_client):
        assert any(pattern.match(key) for pattern in patterns), key


def test_a_changed_partition_count_is_refused_before_anything_is_written(
    settings: Settings, redis_client: redis.Redis
) -> None:
    # Given a store written by a deployment with this partition count
    written = build_delivery_store(settings)
    delivery = queued_delivery()
    written.accept(delivery, first_attempt(delivery), fingerprint="fp-1", outcome="sent")
    before = snapshot(redis_client)

    # When a deployment configured with another count starts accepting or scheduling
    changed = settings.model_copy(update={"redis_partitions": settings.redis_partitions + 1})
    other = replace(queued_delivery(), delivery_id="dlv-other", idempotency_key="other-key")

    # Then it refuses, naming the setting, and writes nothing
    with pytest.raises(PartitionCountChanged, match="MAIL_REDIS_PARTITIONS"):
        build_delivery_store(changed).accept(
            other, first_attempt(other), fingerprint="fp-2", outcome="sent"
        )
    with pytest.raises(PartitionCountChanged):
        build_attempt_stores(changed)[0].due_delivery_ids(0, 10)
    assert snapshot(redis_client) == before
