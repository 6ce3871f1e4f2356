"""Index cleanup against a real Redis: expired records leave the indexes, live ones stay."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import cast

import pytest
import redis

from mailcore.composition import build_index_cleanup
from mailcore.config import Settings
from mailcore.domain.model import Delivery, Envelope, PayloadMode, Source
from mailcore.domain.states import DeliveryStatus
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.lambda_context import FakeLambdaContext
from tests.support.partitions import CONTROL, EVERY_PARTITION, home_keys
from tests.support.redis_backend import RedisBackend
from tests.support.store_invariants import text_keys

# Indexes are named as in partition 0 (which also holds the malformed commands).
KEYS = CONTROL
REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_338_900_000


def delivery(number: int, status: DeliveryStatus = DeliveryStatus.SENT) -> Delivery:
    return Delivery(
        delivery_id=f"d-{number:04d}",
        source=Source.NOTIFICATION,
        status=status,
        payload_mode=PayloadMode.TEMPLATE,
        envelope=Envelope(to=(f"user{number % 3}@example.com",)),
        idempotency_key=f"k-{number}",
        created_at_ms=T0 + number,
        updated_at_ms=T0 + number,
        template_id="order.shipped",
    )


def members(client: redis.Redis) -> dict[str, list[str]]:
    """Every index's members over all partitions, under the index's name in partition 0."""
    merged: dict[str, list[str]] = {}
    for keys in EVERY_PARTITION:
        for key in text_keys(client, f"{keys.prefix}idx:*"):
            name = KEYS.prefix + key.removeprefix(keys.prefix)
            merged.setdefault(name, []).extend(cast(list[str], client.zrange(key, 0, -1)))
    return {name: sorted(found) for name, found in merged.items()}


def expire(client: redis.Redis, delivery_id: str) -> None:
    """The delivery's record gone, as its TTL would have it (its index members stay)."""
    assert client.delete(home_keys(client, delivery_id).delivery(delivery_id)) == 1


def test_members_of_expired_records_are_removed_and_live_ones_kept(
    settings: Settings, store: RedisDeliveryStore, redis_client: redis.Redis
) -> None:
    # Given 600 settled deliveries of which the oldest 450 have expired
    for number in range(600):
        store.accept(delivery(number), None, fingerprint="f", outcome="sent")
    for number in range(450):
        expire(redis_client, f"d-{number:04d}")
    # and an expired malformed record and dead-letter entry among live ones
    for kind, index, record in (
        ("m", KEYS.index_malformed(), KEYS.malformed_command),
        ("x", KEYS.index_dead_letters(), KEYS.dead_letter),
    ):
        redis_client.zadd(index, {f"{kind}-old": 1, f"{kind}-live": 2})
        redis_client.hset(record(f"{kind}-live"), "recorded_at_ms", "2")

    # When cleanup runs
    report = build_index_cleanup(settings).run(lambda: 60_000)

    # Then every index holds exactly the live records
    live = [f"d-{number:04d}" for number in range(450, 600)]
    after = members(redis_client)
    assert after[KEYS.index_created_at()] == live
    assert after[KEYS.index_status("sent")] == live
    assert after[KEYS.index_template("order.shipped")] == live
    recipients = [key for key in after if ":idx:recipient:" in key]
    assert sorted(m for key in recipients for m in after[key]) == live
    assert after[KEYS.index_malformed()] == ["m-live"]
    assert after[KEYS.index_dead_letters()] == ["x-live"]
    assert report.removed == 450 * 6 + 2
    assert report.stopped_because == "done"


def test_cleanup_stops_when_its_time_runs_low(
    settings: Settings, store: RedisDeliveryStore, redis_client: redis.Redis
) -> None:
    for number in range(10):
        store.accept(delivery(number), None, fingerprint="f", outcome="sent")
        expire(redis_client, f"d-{number:04d}")

    report = build_index_cleanup(settings).run(lambda: 1000)

    assert report.stopped_because == "time is up"
    assert report.removed == 0


def test_the_cleanup_handler_runs_with_its_sample_event(
    monkeypatch: pytest.MonkeyPatch,
    redis_server: RedisBackend,
    store: RedisDeliveryStore,
    redis_client: redis.Redis,
) -> None:
    store.accept(delivery(1), None, fingerprint="f", outcome="sent")
    expire(redis_client, "d-0001")
    for name, value in redis_server.environ().items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(importlib.import_module("cleanup"))
    event = json.loads((REPO_ROOT / "events" / "cleanup_scheduled.json").read_text())

    answer = module.handler(event, FakeLambdaContext(timeout_ms=60_000))

    assert answer["removed"] == 6
    assert members(redis_client) == {}
