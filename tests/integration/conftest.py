"""Integration fixtures: a flushed real Redis and the production store over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws

from mailcore.composition import build_delivery_store, build_queries
from mailcore.config import Settings
from mailcore.ports import DeliveryQueries
from mailcore.store.client import build_redis_client
from mailcore.store.partitions import PartitionedDeliveryStore
from mailcore.store.redis_store import RedisDeliveryStore
from tests.support.redis_backend import RedisBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_client(redis_server: RedisBackend) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(redis_server: RedisBackend, redis_client: redis.Redis) -> Settings:
    return Settings.from_environ(
        {**redis_server.environ(), "MAIL_REDIS_OPERATION_TIMEOUT": "300ms"}
    )


@pytest.fixture
def store(settings: Settings) -> RedisDeliveryStore | PartitionedDeliveryStore:
    return build_delivery_store(settings)


@pytest.fixture
def queries(settings: Settings) -> DeliveryQueries:
    """The operator's reads over every partition, to look at what the store wrote."""
    return build_queries(settings, build_redis_client(settings))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's in-process AWS with the attempt queue created; yields the SQS client."""
    for name, value in {
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.client("sqs", region_name="eu-west-1")


@pytest.fixture
def attempt_queue_url(aws: Any) -> str:
    url: str = aws.create_queue(QueueName="mail-attempts")["QueueUrl"]
    return url
