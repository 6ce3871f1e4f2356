"""Fixtures of the reliability tier: the integration tier's real Redis, store and moto SQS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    attempt_queue_url,
    aws,
    queries,
    redis_client,
    settings,
    store,
)
from tests.support.counting_smtp import CountingSmtpServer
from tests.support.handlers import service_logs_to_stdout
from tests.support.redis_server import RedisServer

__all__ = ["attempt_queue_url", "aws", "queries", "redis_client", "settings", "store"]


@pytest.fixture(autouse=True)
def _service_logs_on_stdout() -> None:
    """Whatever an earlier test did to stdout, the service's logs go to the capture of this one."""
    service_logs_to_stdout()


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, AOF with ``appendfsync always``."""
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def counting_smtp() -> Iterator[CountingSmtpServer]:
    """An SMTP server counting what it accepted per Message-ID."""
    with CountingSmtpServer() as server:
        yield server
