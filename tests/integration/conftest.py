"""Integration fixtures: a flushed real Redis and the production store over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from mailcore.composition import build_delivery_store
from mailcore.config import Settings
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: RedisServer, redis_client: redis.Redis) -> Settings:
    return Settings.from_environ(
        {"MAIL_REDIS_ADDR": redis_server.addr, "MAIL_REDIS_OPERATION_TIMEOUT": "300ms"}
    )


@pytest.fixture
def store(settings: Settings) -> RedisDeliveryStore:
    return build_delivery_store(settings)
